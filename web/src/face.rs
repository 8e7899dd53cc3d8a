//! Faces in a frame: grey conversion, the SeetaFace detector (rustface) on a downscaled copy,
//! and square crops with a margin, ready for the classifier's own preprocessing
//! ([`mimic_core::augment::eval_view`]). Pure Rust with no browser calls, so it is tested
//! natively.

use mimic_core::data::DecodedImage;
use rustface::{Detector, ImageData};

/// The SeetaFace frontal cascade shipped in the rustface crate (copied by build.rs).
static SEETA_MODEL: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/seeta_fd_frontal_v1.0.bin"));

/// Frames are shrunk to at most this many pixels a side before detection: the detector's cost
/// grows with the area and faces in a webcam frame or photo stay well above its 20-pixel window.
pub const DETECT_SIDE: usize = 480;

/// Each side of a detected box is widened by this fraction of the box before cropping: the
/// detector frames eyebrows to mouth, FER crops include the forehead and chin.
pub const CROP_MARGIN: f32 = 0.2;

/// An 8-bit grey image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grey {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl Grey {
    /// Grey from RGBA pixels (canvas `ImageData`), with the sRGB luma weights the image crate
    /// uses when training images are converted (0.2126 R + 0.7152 G + 0.0722 B); alpha is
    /// ignored.
    ///
    /// # Panics
    /// If `rgba` does not hold `width * height * 4` values.
    pub fn from_rgba(rgba: &[u8], width: usize, height: usize) -> Self {
        assert_eq!(rgba.len(), width * height * 4, "RGBA buffer size");
        let pixels = rgba
            .chunks_exact(4)
            .map(|p| {
                let l = 2126 * u32::from(p[0]) + 7152 * u32::from(p[1]) + 722 * u32::from(p[2]);
                (l / 10000) as u8
            })
            .collect();
        Self {
            width,
            height,
            pixels,
        }
    }

    /// This image shrunk by an integer factor (box average) so that neither side exceeds
    /// `max_side`, and the factor used (1 when it already fits).
    pub fn shrink_to(&self, max_side: usize) -> (Grey, usize) {
        let factor = self.width.max(self.height).div_ceil(max_side.max(1)).max(1);
        if factor == 1 {
            return (self.clone(), 1);
        }
        let (w, h) = (self.width / factor, self.height / factor);
        let mut pixels = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                let mut sum = 0u32;
                for dy in 0..factor {
                    let row = (y * factor + dy) * self.width + x * factor;
                    sum += self.pixels[row..row + factor]
                        .iter()
                        .map(|&p| u32::from(p))
                        .sum::<u32>();
                }
                pixels.push((sum / (factor * factor) as u32) as u8);
            }
        }
        (
            Grey {
                width: w,
                height: h,
                pixels,
            },
            factor,
        )
    }
}

/// A detected face in the coordinates of the frame given to [`FaceFinder::find`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaceBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
    /// The detector's score (higher is surer; the threshold is 2.0).
    pub score: f64,
}

/// The face detector, created once (the model takes a moment to parse).
pub struct FaceFinder {
    detector: Box<dyn Detector>,
}

impl FaceFinder {
    /// Parses the embedded SeetaFace model.
    pub fn new() -> Result<Self, String> {
        let model = rustface::read_model(SEETA_MODEL)
            .map_err(|e| format!("the face detector's model does not parse: {e}"))?;
        let mut detector = rustface::create_detector_with_model(model);
        detector.set_min_face_size(20);
        detector.set_score_thresh(2.0);
        detector.set_pyramid_scale_factor(0.8);
        detector.set_slide_window_step(4, 4);
        Ok(Self { detector })
    }

    /// Faces in `frame`, left to right. Frames smaller than the detector's window give none.
    pub fn find(&mut self, frame: &Grey) -> Vec<FaceBox> {
        let (small, factor) = frame.shrink_to(DETECT_SIDE);
        if small.width < 24 || small.height < 24 {
            return Vec::new();
        }
        let image = ImageData::new(&small.pixels, small.width as u32, small.height as u32);
        let f = factor as f32;
        let mut faces: Vec<FaceBox> = self
            .detector
            .detect(&image)
            .iter()
            .map(|info| {
                let b = info.bbox();
                FaceBox {
                    x: b.x() as f32 * f,
                    y: b.y() as f32 * f,
                    width: b.width() as f32 * f,
                    height: b.height() as f32 * f,
                    score: info.score(),
                }
            })
            .collect();
        faces.sort_by(|a, b| a.x.total_cmp(&b.x));
        faces
    }
}

/// The square around `face`, widened by [`CROP_MARGIN`] on each side, cut from `frame`; parts
/// outside the frame repeat its edge pixels. The result is a one-channel [`DecodedImage`], as
/// FER training images are.
pub fn crop_face(frame: &Grey, face: &FaceBox) -> DecodedImage {
    let side = (face.width.max(face.height) * (1.0 + 2.0 * CROP_MARGIN))
        .round()
        .max(1.0) as usize;
    let cx = face.x + face.width / 2.0;
    let cy = face.y + face.height / 2.0;
    let x0 = (cx - side as f32 / 2.0).round() as i64;
    let y0 = (cy - side as f32 / 2.0).round() as i64;
    let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
    let mut pixels = Vec::with_capacity(side * side);
    for dy in 0..side as i64 {
        let row = clamp(y0 + dy, frame.height) * frame.width;
        for dx in 0..side as i64 {
            pixels.push(frame.pixels[row + clamp(x0 + dx, frame.width)]);
        }
    }
    DecodedImage {
        width: side,
        height: side,
        channels: 1,
        pixels,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grey_uses_the_srgb_luma_weights() {
        let g = Grey::from_rgba(
            &[255, 0, 0, 7, 0, 255, 0, 0, 0, 0, 255, 255, 200, 200, 200, 0],
            4,
            1,
        );
        assert_eq!(g.pixels, [54, 182, 18, 200]);
    }

    #[test]
    fn shrinking_averages_blocks_and_reports_the_factor() {
        let g = Grey {
            width: 4,
            height: 2,
            pixels: vec![0, 2, 10, 20, 4, 6, 30, 40],
        };
        let (small, f) = g.shrink_to(2);
        assert_eq!(f, 2);
        assert_eq!(
            (small.width, small.height, small.pixels),
            (2, 1, vec![3, 25])
        );
        assert_eq!(g.shrink_to(4).1, 1);
    }

    #[test]
    fn crops_are_square_with_margin_and_repeat_edges() {
        let frame = Grey {
            width: 10,
            height: 10,
            pixels: (0..100).map(|i| i as u8).collect(),
        };
        let face = FaceBox {
            x: 0.0,
            y: 0.0,
            width: 5.0,
            height: 4.0,
            score: 3.0,
        };
        let crop = crop_face(&frame, &face);
        assert_eq!((crop.width, crop.height, crop.channels), (7, 7, 1));
        // Centre (2.5, 2); the square starts at (-1, -2): the first rows repeat row 0.
        assert_eq!(crop.pixels[..7], [0, 0, 1, 2, 3, 4, 5]);
        assert_eq!(crop.pixels[7..14], crop.pixels[..7]);
        assert_eq!(crop.pixels[14..21], crop.pixels[..7]);
        assert_eq!(crop.pixels[21..28], [10, 10, 11, 12, 13, 14, 15]);
    }

    /// A real photo (scikit-image's astronaut, one frontal face) from the shared test data.
    fn astronaut() -> Option<Grey> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/photos/skimage-data/skimage/data/astronaut.png"
        );
        let Ok(img) = image::open(path) else {
            eprintln!("skipped: {path} is not there");
            return None;
        };
        let rgba = img.to_rgba8();
        let (w, h) = (rgba.width() as usize, rgba.height() as usize);
        Some(Grey::from_rgba(rgba.as_raw(), w, h))
    }

    #[test]
    fn the_detector_finds_the_one_face_of_a_real_photo() {
        let Some(frame) = astronaut() else { return };
        let mut finder = FaceFinder::new().unwrap();
        let faces = finder.find(&frame);
        assert_eq!(faces.len(), 1, "{faces:?}");
        let f = faces[0];
        // The face is in the upper middle of the 512x512 picture, about 100 pixels wide.
        assert!(
            (150.0..260.0).contains(&f.x) && (50.0..150.0).contains(&f.y),
            "{f:?}"
        );
        assert!((60.0..160.0).contains(&f.width), "{f:?}");
        // A blank frame and a tiny one hold no face.
        let blank = Grey {
            width: 200,
            height: 200,
            pixels: vec![128; 40_000],
        };
        assert!(finder.find(&blank).is_empty());
        let tiny = Grey {
            width: 5,
            height: 5,
            pixels: vec![0; 25],
        };
        assert!(finder.find(&tiny).is_empty());
    }
}
