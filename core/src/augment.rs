//! Training-time augmentation: random resized crop + horizontal flip (+ optional colour
//! jitter), rendered straight from a decoded image into the normalised tensor layout; and the
//! evaluation view, which is exactly what `predict` does to an image.

use rand::Rng;

use crate::data::DecodedImage;
use crate::preprocess::{IMAGENET_MEAN, IMAGENET_STD};
use crate::{Error, Result};

/// Augmentation settings.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Smallest crop area as a share of the image. Default: 0.6 for 48 px faces (torchvision's
    /// 0.08 would cut most of a face away); MAE pre-training uses 0.2.
    pub scale_min: f64,
    /// Largest crop area share. Default: 1.0.
    pub scale_max: f64,
    /// Aspect-ratio range of the crop. Default: 3/4 to 4/3 (torchvision).
    pub ratio: (f64, f64),
    /// Flip horizontally with probability 0.5. Default: true.
    pub hflip: bool,
    /// Colour jitter strength j: brightness, contrast and saturation factors in [1 − j, 1 + j].
    /// Default: 0 (off).
    pub jitter: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            scale_min: 0.6,
            scale_max: 1.0,
            ratio: (0.75, 4.0 / 3.0),
            hflip: true,
            jitter: 0.0,
        }
    }
}

impl AugmentConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let ok_scale =
            0.0 < self.scale_min && self.scale_min <= self.scale_max && self.scale_max <= 1.0;
        let ok_ratio = 0.0 < self.ratio.0 && self.ratio.0 <= self.ratio.1;
        if !ok_scale || !ok_ratio || !(0.0..1.0).contains(&self.jitter) {
            return Err(Error::Config(format!(
                "augmentation: crop scale {}..{} must lie in (0, 1], ratio {:?} be positive and \
                 ordered, jitter {} in [0, 1)",
                self.scale_min, self.scale_max, self.ratio, self.jitter
            )));
        }
        Ok(())
    }
}

/// A crop window in source pixels (fractional), with a flip flag.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crop {
    /// Top edge.
    pub y: f64,
    /// Left edge.
    pub x: f64,
    /// Height.
    pub h: f64,
    /// Width.
    pub w: f64,
    /// Mirror horizontally.
    pub flip: bool,
}

impl Crop {
    /// The whole image, unflipped.
    pub fn full(height: usize, width: usize) -> Self {
        Self {
            y: 0.0,
            x: 0.0,
            h: height as f64,
            w: width as f64,
            flip: false,
        }
    }
}

/// Draws a random resized crop as torchvision's `RandomResizedCrop.get_params`: up to 10
/// tries of an area share and a log-uniform aspect ratio that fit, else a centre crop with
/// the ratio clamped.
pub fn sample_crop(rng: &mut impl Rng, cfg: &AugmentConfig, height: usize, width: usize) -> Crop {
    let (hf, wf) = (height as f64, width as f64);
    let area = hf * wf;
    let (lr0, lr1) = (cfg.ratio.0.ln(), cfg.ratio.1.ln());
    let flip = cfg.hflip && rng.random::<bool>();
    for _ in 0..10 {
        let target = area * rng.random_range(cfg.scale_min..=cfg.scale_max);
        let ratio = if lr1 > lr0 {
            rng.random_range(lr0..lr1).exp()
        } else {
            cfg.ratio.0
        };
        let w = (target * ratio).sqrt().round();
        let h = (target / ratio).sqrt().round();
        if w >= 1.0 && h >= 1.0 && w <= wf && h <= hf {
            let y = rng.random_range(0..=(height - h as usize)) as f64;
            let x = rng.random_range(0..=(width - w as usize)) as f64;
            return Crop { y, x, h, w, flip };
        }
    }
    let in_ratio = wf / hf;
    let (w, h) = if in_ratio < cfg.ratio.0 {
        (wf, (wf / cfg.ratio.0).round())
    } else if in_ratio > cfg.ratio.1 {
        ((hf * cfg.ratio.1).round(), hf)
    } else {
        (wf, hf)
    };
    Crop {
        y: ((hf - h) / 2.0).floor(),
        x: ((wf - w) / 2.0).floor(),
        h,
        w,
        flip,
    }
}

/// Renders `crop` of `img` at `size` x `size` with bilinear sampling (half-pixel centres,
/// edge clamping, no antialias), optional jitter factors `(brightness, contrast, saturation)`,
/// and ImageNet normalisation. Grey images are replicated to three channels.
///
/// Returns `3 * size * size` values, channel-first.
pub fn render(img: &DecodedImage, crop: &Crop, size: usize, jitter: Option<[f32; 3]>) -> Vec<f32> {
    let (ih, iw, ch) = (img.height, img.width, img.channels);
    let axis = |start: f64, len: f64, n_in: usize| -> Vec<(usize, usize, f32)> {
        let scale = len / size as f64;
        (0..size)
            .map(|o| {
                let src = (start + (o as f64 + 0.5) * scale - 0.5).clamp(0.0, (n_in - 1) as f64);
                let i0 = src.floor() as usize;
                let i1 = (i0 + 1).min(n_in - 1);
                (i0, i1, (src - i0 as f64) as f32)
            })
            .collect()
    };
    let ty = axis(crop.y, crop.h, ih);
    let mut tx = axis(crop.x, crop.w, iw);
    if crop.flip {
        tx.reverse();
    }

    let px = |y: usize, x: usize, c: usize| img.pixels[(y * iw + x) * ch + c.min(ch - 1)] as f32;
    let n = size * size;
    let mut rgb = vec![0f32; 3 * n];
    for (oy, &(y0, y1, fy)) in ty.iter().enumerate() {
        for (ox, &(x0, x1, fx)) in tx.iter().enumerate() {
            for c in 0..3 {
                let top = px(y0, x0, c) * (1.0 - fx) + px(y0, x1, c) * fx;
                let bottom = px(y1, x0, c) * (1.0 - fx) + px(y1, x1, c) * fx;
                rgb[c * n + oy * size + ox] = (top * (1.0 - fy) + bottom * fy) / 255.0;
            }
        }
    }

    if let Some([b, c, s]) = jitter {
        apply_jitter(&mut rgb, n, b, c, s);
    }
    for c in 0..3 {
        for v in &mut rgb[c * n..(c + 1) * n] {
            *v = (*v - IMAGENET_MEAN[c]) / IMAGENET_STD[c];
        }
    }
    rgb
}

/// Draws jitter factors, or `None` when jitter is off.
pub fn sample_jitter(rng: &mut impl Rng, strength: f32) -> Option<[f32; 3]> {
    (strength > 0.0).then(|| {
        let mut f = || rng.random_range(1.0 - strength..=1.0 + strength);
        [f(), f(), f()]
    })
}

fn apply_jitter(rgb: &mut [f32], n: usize, brightness: f32, contrast: f32, saturation: f32) {
    let grey = |rgb: &[f32], i: usize| 0.299 * rgb[i] + 0.587 * rgb[n + i] + 0.114 * rgb[2 * n + i];
    rgb.iter_mut()
        .for_each(|v| *v = (*v * brightness).clamp(0.0, 1.0));
    let mean = (0..n).map(|i| grey(rgb, i)).sum::<f32>() / n as f32;
    rgb.iter_mut()
        .for_each(|v| *v = ((*v - mean) * contrast + mean).clamp(0.0, 1.0));
    for i in 0..n {
        let g = grey(rgb, i);
        for c in 0..3 {
            let v = &mut rgb[c * n + i];
            *v = ((*v - g) * saturation + g).clamp(0.0, 1.0);
        }
    }
}

/// The evaluation view: the whole image resized to `size` (no resize when it already has that
/// size) and normalised, identical to `predict`'s preprocessing.
pub fn eval_view(img: &DecodedImage, size: usize) -> Vec<f32> {
    img.to_rgb_f32()
        .resize_bilinear(size, size)
        .to_normalized_chw()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ramp(h: usize, w: usize) -> DecodedImage {
        let pixels = (0..h * w).map(|i| (i * 7 % 256) as u8).collect();
        DecodedImage {
            width: w,
            height: h,
            channels: 1,
            pixels,
        }
    }

    #[test]
    fn full_crop_without_flip_equals_the_eval_view() {
        let img = ramp(48, 48);
        let a = render(&img, &Crop::full(48, 48), 48, None);
        let b = eval_view(&img, 48);
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "{err}");
        let a = render(&img, &Crop::full(48, 48), 32, None);
        let b = eval_view(&img, 32);
        let err = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(err < 1e-5, "resize path: {err}");
    }

    #[test]
    fn flip_mirrors_columns() {
        let img = ramp(8, 8);
        let mut crop = Crop::full(8, 8);
        let a = render(&img, &crop, 8, None);
        crop.flip = true;
        let b = render(&img, &crop, 8, None);
        for y in 0..8 {
            for x in 0..8 {
                assert_eq!(a[y * 8 + x], b[y * 8 + 7 - x]);
            }
        }
    }

    #[test]
    fn crops_stay_inside_and_respect_the_scale() {
        let cfg = AugmentConfig::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..500 {
            let c = sample_crop(&mut rng, &cfg, 48, 40);
            assert!(
                c.y >= 0.0 && c.x >= 0.0 && c.y + c.h <= 48.0 && c.x + c.w <= 40.0,
                "{c:?}"
            );
            let share = c.h * c.w / (48.0 * 40.0);
            assert!(share > 0.5 && share <= 1.05, "{share}");
        }
    }

    #[test]
    fn jitter_keeps_values_in_range() {
        let img = DecodedImage {
            width: 4,
            height: 4,
            channels: 3,
            pixels: (0..48).map(|i| (i * 5) as u8).collect(),
        };
        let v = render(&img, &Crop::full(4, 4), 4, Some([1.4, 0.6, 1.3]));
        for c in 0..3 {
            for &x in &v[c * 16..(c + 1) * 16] {
                let raw = x * IMAGENET_STD[c] + IMAGENET_MEAN[c];
                assert!((-1e-6..=1.0 + 1e-6).contains(&raw));
            }
        }
    }
}
