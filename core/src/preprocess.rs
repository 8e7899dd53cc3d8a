//! From pixels to the normalised tensor the model expects: RGB, bilinear resize to the model's
//! input size (none when the size already matches), ImageNet mean/std, channel-first.

/// ImageNet channel means (timm `IMAGENET_DEFAULT_MEAN`).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet channel standard deviations (timm `IMAGENET_DEFAULT_STD`).
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// An RGB image as f32 values in [0, 1], row-major `[height, width, 3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbF32 {
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// `height * width * 3` values.
    pub data: Vec<f32>,
}

impl RgbF32 {
    /// From 8-bit RGB pixels, row-major `[height, width, 3]`.
    ///
    /// # Panics
    /// If `pixels.len() != height * width * 3`.
    pub fn from_rgb8(pixels: &[u8], height: usize, width: usize) -> Self {
        assert_eq!(
            pixels.len(),
            height * width * 3,
            "pixel buffer does not match the size"
        );
        let data = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        Self {
            height,
            width,
            data,
        }
    }

    /// Bilinear resize with half-pixel centres and edge clamping, as
    /// `torch.nn.functional.interpolate(mode="bilinear", align_corners=False)` without
    /// antialiasing. Returns a copy when the size already matches.
    pub fn resize_bilinear(&self, height: usize, width: usize) -> Self {
        if height == self.height && width == self.width {
            return self.clone();
        }
        let taps = |n_in: usize, n_out: usize| -> Vec<(usize, usize, f32)> {
            let scale = n_in as f32 / n_out as f32;
            (0..n_out)
                .map(|o| {
                    let src = ((o as f32 + 0.5) * scale - 0.5).max(0.0);
                    let i0 = (src.floor() as usize).min(n_in - 1);
                    let i1 = (i0 + 1).min(n_in - 1);
                    (i0, i1, src - i0 as f32)
                })
                .collect()
        };
        let (ty, tx) = (taps(self.height, height), taps(self.width, width));
        let mut data = Vec::with_capacity(height * width * 3);
        let px = |y: usize, x: usize, c: usize| self.data[(y * self.width + x) * 3 + c];
        for &(y0, y1, fy) in &ty {
            for &(x0, x1, fx) in &tx {
                for c in 0..3 {
                    let top = px(y0, x0, c) * (1.0 - fx) + px(y0, x1, c) * fx;
                    let bottom = px(y1, x0, c) * (1.0 - fx) + px(y1, x1, c) * fx;
                    data.push(top * (1.0 - fy) + bottom * fy);
                }
            }
        }
        Self {
            height,
            width,
            data,
        }
    }

    /// ImageNet-normalised channel-first values `[3, height, width]`.
    pub fn to_normalized_chw(&self) -> Vec<f32> {
        let n = self.height * self.width;
        let mut out = vec![0f32; 3 * n];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * n + i] = (px[c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
            }
        }
        out
    }
}

/// Decodes an image file's bytes (PNG, JPEG, BMP, GIF, TIFF, WebP; grey, grey+alpha, RGBA and
/// 16-bit are converted to 8-bit RGB, alpha dropped). `source` names the image in errors.
///
/// The same decoder as the data sets use ([`crate::data::DecodedImage::decode`]), so
/// `predict` sees exactly the pixels training and evaluation see.
#[cfg(feature = "fs")]
pub fn decode(bytes: &[u8], source: &str) -> crate::Result<RgbF32> {
    crate::data::DecodedImage::decode(bytes, source).map(|img| img.to_rgb_f32())
}

/// Reads and decodes an image file (see [`decode`]).
#[cfg(feature = "fs")]
pub fn read_image(path: &std::path::Path) -> crate::Result<RgbF32> {
    let bytes = std::fs::read(path).map_err(|err| crate::Error::Io {
        path: path.to_path_buf(),
        err,
    })?;
    decode(&bytes, &path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_to_same_size_is_identity_and_constant_stays_constant() {
        let img = RgbF32::from_rgb8(&[10, 20, 30].repeat(12), 3, 4);
        assert_eq!(img.resize_bilinear(3, 4), img);
        let r = img.resize_bilinear(7, 5);
        assert!(r.data.chunks(3).all(|p| (p[0] - 10.0 / 255.0).abs() < 1e-6));
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // 1x4 grey ramp -> 1x2: half-pixel centres fall between pixel pairs.
        let px: Vec<u8> = [0u8, 100, 200, 250]
            .iter()
            .flat_map(|&v| [v, v, v])
            .collect();
        let r = RgbF32::from_rgb8(&px, 1, 4).resize_bilinear(1, 2);
        assert!((r.data[0] - 50.0 / 255.0).abs() < 1e-6);
        assert!((r.data[3] - 225.0 / 255.0).abs() < 1e-6);
    }

    #[test]
    fn normalisation_is_channel_first() {
        let img = RgbF32::from_rgb8(&[255, 0, 128, 255, 0, 128], 1, 2);
        let v = img.to_normalized_chw();
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6 && v[0] == v[1]);
        assert!((v[2] - (0.0 - 0.456) / 0.224).abs() < 1e-6);
    }
}
