//! Mixup and CutMix for MIMIC fine-tuning, and the soft labels and positive pairs they imply.
//!
//! One λ ~ Beta(α, β) per batch; Mixup or CutMix chosen per batch; the partner of each sample
//! is the reversed batch within its view (timm's convention), which also works for odd batch
//! sizes (the middle sample partners itself). CutMix's λ is corrected to the pasted area.
//! The same functions render the mixing figure and run in the page, so both agree with training.
//!
//! References: H. Zhang et al., "mixup", ICLR 2018; S. Yun et al., "CutMix", ICCV 2019.

use crate::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use rand::Rng;

use crate::{Error, Result};

/// Which mixing a batch gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixKind {
    /// Pixel-wise convex combination `λ x + (1 − λ) x_partner`.
    Mixup,
    /// A box of the partner pasted into the image.
    CutMix,
}

/// A pasted box in pixel coordinates, half-open `[y0, y1) x [x0, x1)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CutBox {
    /// First row.
    pub y0: usize,
    /// One past the last row.
    pub y1: usize,
    /// First column.
    pub x0: usize,
    /// One past the last column.
    pub x1: usize,
}

/// How one batch is mixed: the kind, the effective λ (for CutMix, corrected to the share of
/// the image that stays its own) and the box.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixPlan {
    /// Mixup or CutMix.
    pub kind: MixKind,
    /// Weight of the sample itself in its soft label.
    pub lambda: f64,
    /// The pasted box (CutMix only).
    pub cut: Option<CutBox>,
}

/// Mixing hyper-parameters. Defaults are the paper's (MIMIC §III-B): Beta(2, 2), Mixup or
/// CutMix with probability 0.5 each.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MixConfig {
    /// α of Beta(α, β). Default: 2.0.
    pub alpha: f64,
    /// β of Beta(α, β). Default: 2.0.
    pub beta: f64,
    /// Probability of CutMix rather than Mixup per batch. Default: 0.5.
    pub cutmix_prob: f64,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            alpha: 2.0,
            beta: 2.0,
            cutmix_prob: 0.5,
        }
    }
}

impl MixConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.beta > 0.0) {
            return Err(Error::Config(format!(
                "mixing Beta({}, {}) needs positive parameters",
                self.alpha, self.beta
            )));
        }
        if !(0.0..=1.0).contains(&self.cutmix_prob) {
            return Err(Error::Config(format!(
                "cutmix probability {} not in [0, 1]",
                self.cutmix_prob
            )));
        }
        Ok(())
    }

    /// Draws the plan of one batch of `height` x `width` images.
    pub fn sample(&self, rng: &mut impl Rng, height: usize, width: usize) -> MixPlan {
        let lambda = sample_beta(rng, self.alpha, self.beta);
        if rng.random::<f64>() < self.cutmix_prob {
            cutmix_plan(rng, lambda, height, width)
        } else {
            MixPlan {
                kind: MixKind::Mixup,
                lambda,
                cut: None,
            }
        }
    }
}

/// CutMix for a drawn λ: a box of area ≈ (1 − λ)·H·W centred uniformly at random and clipped
/// to the image (timm's `rand_bbox`), with λ corrected to `1 − box area / (H·W)`.
pub fn cutmix_plan(rng: &mut impl Rng, lambda: f64, height: usize, width: usize) -> MixPlan {
    let ratio = (1.0 - lambda).sqrt();
    let (cut_h, cut_w) = (
        (height as f64 * ratio) as usize,
        (width as f64 * ratio) as usize,
    );
    let (cy, cx) = (rng.random_range(0..height), rng.random_range(0..width));
    let clip = |c: usize, half: usize, n: usize, up: bool| {
        if up {
            (c + half).min(n)
        } else {
            c.saturating_sub(half)
        }
    };
    let cut = CutBox {
        y0: clip(cy, cut_h / 2, height, false),
        y1: clip(cy, cut_h / 2, height, true),
        x0: clip(cx, cut_w / 2, width, false),
        x1: clip(cx, cut_w / 2, width, true),
    };
    let area = ((cut.y1 - cut.y0) * (cut.x1 - cut.x0)) as f64;
    MixPlan {
        kind: MixKind::CutMix,
        lambda: 1.0 - area / (height * width) as f64,
        cut: Some(cut),
    }
}

/// Beta(α, β) from two Gamma draws (Marsaglia–Tsang), so no extra crate is needed.
pub fn sample_beta(rng: &mut impl Rng, alpha: f64, beta: f64) -> f64 {
    let x = sample_gamma(rng, alpha);
    let y = sample_gamma(rng, beta);
    if x + y == 0.0 {
        0.5
    } else {
        x / (x + y)
    }
}

fn sample_gamma(rng: &mut impl Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        // Boost: Gamma(a) = Gamma(a + 1) * U^(1/a).
        let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
        return sample_gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = standard_normal(rng);
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u: f64 = rng.random();
        if u < 1.0 - 0.0331 * x.powi(4) || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

fn standard_normal(rng: &mut impl Rng) -> f64 {
    // Box–Muller.
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// The partner of sample `i` in a view-major batch of `n_views` x `per_view` samples: the
/// reversed order within the same view.
pub fn partner(i: usize, per_view: usize) -> usize {
    let (view, j) = (i / per_view, i % per_view);
    view * per_view + (per_view - 1 - j)
}

/// Mixes a view-major batch of images according to `plan`.
///
/// # Shapes
/// - images: `[n_views * per_view, channels, height, width]`
/// - output: same
pub fn mix_images<B: Backend>(
    images: Tensor<B, 4>,
    plan: &MixPlan,
    n_views: usize,
) -> Tensor<B, 4> {
    let [n, c, h, w] = images.dims();
    assert!(
        n_views > 0 && n % n_views == 0,
        "batch of {n} is not {n_views} equal views"
    );
    let partners = images
        .clone()
        .reshape([n_views, n / n_views, c, h, w])
        .flip([1])
        .reshape([n, c, h, w]);
    match (plan.kind, plan.cut) {
        (MixKind::CutMix, Some(b)) => {
            let mut mask = vec![0f32; h * w];
            for y in b.y0..b.y1 {
                mask[y * w + b.x0..y * w + b.x1].fill(1.0);
            }
            let mask =
                Tensor::<B, 4>::from_data(TensorData::new(mask, [1, 1, h, w]), &images.device());
            let keep = mask.clone().neg().add_scalar(1.0);
            images * keep + partners * mask
        }
        _ => images.mul_scalar(plan.lambda) + partners.mul_scalar(1.0 - plan.lambda),
    }
}

/// The soft labels of a mixed batch: `m_i = λ·y_i + (1 − λ)·y_partner(i)` for view-major
/// targets (one row per sample, each a distribution over classes).
pub fn mix_targets(targets: &[Vec<f32>], lambda: f64, n_views: usize) -> Vec<Vec<f32>> {
    let per_view = targets.len() / n_views.max(1);
    let l = lambda as f32;
    (0..targets.len())
        .map(|i| {
            let p = &targets[partner(i, per_view)];
            targets[i]
                .iter()
                .zip(p)
                .map(|(a, b)| l * a + (1.0 - l) * b)
                .collect()
        })
        .collect()
}

/// Label smoothing of a distribution as timm applies it to one-hot targets before mixing:
/// `(1 − s)·y + s / C`.
pub fn smooth(target: &[f32], smoothing: f32) -> Vec<f32> {
    let off = smoothing / target.len() as f32;
    target
        .iter()
        .map(|&v| (1.0 - smoothing) * v + off)
        .collect()
}

/// Distance between two soft labels for deciding positive pairs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LabelMetric {
    /// Largest absolute difference of any class (L∞). Default.
    Linf,
    /// Sum of absolute differences (L1).
    L1,
}

impl LabelMetric {
    /// Parses `linf` / `max` or `l1`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "linf" | "max" => Ok(Self::Linf),
            "l1" => Ok(Self::L1),
            other => Err(Error::Config(format!(
                "unknown label metric '{other}' (linf or l1)"
            ))),
        }
    }

    /// The distance between two soft labels.
    pub fn distance(self, a: &[f32], b: &[f32]) -> f32 {
        let diffs = a.iter().zip(b).map(|(x, y)| (x - y).abs());
        match self {
            Self::Linf => diffs.fold(0.0, f32::max),
            Self::L1 => diffs.sum(),
        }
    }
}

/// Slack for rounding in label arithmetic, so that a distance meant to equal the threshold
/// (e.g. λ = 0.75 against λ = 0.25: exactly 0.5) counts as within it.
const THRESHOLD_SLACK: f32 = 1e-6;

/// Whether two samples with soft labels `a` and `b` form a positive pair at threshold `t`
/// (inclusive): the rule of the mix-supervised contrastive loss.
pub fn is_positive(a: &[f32], b: &[f32], threshold: f32, metric: LabelMetric) -> bool {
    metric.distance(a, b) <= threshold + THRESHOLD_SLACK
}

/// The positive mask of a batch, row-major `n x n`, with the diagonal false (an anchor is
/// never its own positive).
pub fn positive_mask(labels: &[Vec<f32>], threshold: f32, metric: LabelMetric) -> Vec<bool> {
    let n = labels.len();
    let mut mask = vec![false; n * n];
    for i in 0..n {
        for j in 0..n {
            mask[i * n + j] = i != j && is_positive(&labels[i], &labels[j], threshold, metric);
        }
    }
    mask
}

/// One mixed sample as MIMIC fine-tuning builds it, with what the contrastive loss decides
/// about it: see [`mix_sample`].
#[derive(Debug, Clone)]
pub struct MixedSample<B: Backend> {
    /// The mixed image, `[channels, height, width]`, in the value range of the inputs.
    pub image: Tensor<B, 3>,
    /// Its soft label `λ·y_first + (1 − λ)·y_second`.
    pub label: Vec<f32>,
    /// The distance of that label to the anchor's under the metric.
    pub distance: f32,
    /// Whether it is a positive of the anchor at the threshold (inclusive).
    pub positive: bool,
}

/// Mixes `images[0]` with `images[1]` as its partner by `plan`, gives the soft label, and
/// decides whether the result is a positive of a sample labelled `anchor` under the rule of
/// the mix-supervised contrastive loss.
///
/// This runs the training code itself on a one-view batch of two (where sample 0's partner
/// is sample 1): [`mix_images`], [`mix_targets`] and [`is_positive`]. Figures and the page
/// call it, so what they show is what training does. The image stays on the device (reading
/// it back is synchronous on native backends and asynchronous on the web).
///
/// # Shapes
/// - images: two `[channels, height, width]`
/// - output image: `[channels, height, width]`
pub fn mix_sample<B: Backend>(
    images: [Tensor<B, 3>; 2],
    labels: [&[f32]; 2],
    plan: &MixPlan,
    anchor: &[f32],
    threshold: f32,
    metric: LabelMetric,
) -> MixedSample<B> {
    let [first, second] = images;
    assert_eq!(
        first.dims(),
        second.dims(),
        "both images of a mixed pair need one shape"
    );
    let [c, h, w] = first.dims();
    let batch = Tensor::stack::<4>(vec![first, second], 0); // [2, channels, height, width]
    let image = mix_images(batch, plan, 1)
        .narrow(0, 0, 1)
        .reshape([c, h, w]);

    let targets = [labels[0].to_vec(), labels[1].to_vec()];
    let label = mix_targets(&targets, plan.lambda, 1).swap_remove(0);
    MixedSample {
        image,
        distance: metric.distance(&label, anchor),
        positive: is_positive(&label, anchor, threshold, metric),
        label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;
    use rand::SeedableRng;

    type B = Flex;

    fn one_hot(c: usize, n: usize) -> Vec<f32> {
        (0..n).map(|i| if i == c { 1.0 } else { 0.0 }).collect()
    }

    #[test]
    fn mixup_with_lambda_one_is_the_identity() {
        let x = Tensor::<B, 4>::random([6, 3, 8, 8], Distribution::Default, &Default::default());
        let plan = MixPlan {
            kind: MixKind::Mixup,
            lambda: 1.0,
            cut: None,
        };
        let y = mix_images(x.clone(), &plan, 2);
        y.into_data().assert_eq(&x.into_data(), true);
        let t = vec![one_hot(0, 3), one_hot(1, 3), one_hot(2, 3), one_hot(2, 3)];
        assert_eq!(mix_targets(&t, 1.0, 2), t);
    }

    #[test]
    fn partners_reverse_within_each_view_for_odd_batches() {
        let per_view = 5;
        let p: Vec<usize> = (0..10).map(|i| partner(i, per_view)).collect();
        assert_eq!(p, [4, 3, 2, 1, 0, 9, 8, 7, 6, 5]);
        // Odd batch: the middle sample keeps its own label.
        let t: Vec<Vec<f32>> = (0..10).map(|i| one_hot(i % 5, 5)).collect();
        let m = mix_targets(&t, 0.7, 2);
        assert_eq!(m[2], one_hot(2, 5));
        assert!((m[0][0] - 0.7).abs() < 1e-6 && (m[0][4] - 0.3).abs() < 1e-6);
    }

    #[test]
    fn cutmix_lambda_is_one_minus_box_area() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..200 {
            let lam = rng.random::<f64>();
            let plan = cutmix_plan(&mut rng, lam, 48, 40);
            let b = plan.cut.unwrap();
            assert!(b.y0 <= b.y1 && b.y1 <= 48 && b.x0 <= b.x1 && b.x1 <= 40);
            let area = ((b.y1 - b.y0) * (b.x1 - b.x0)) as f64;
            assert!((plan.lambda - (1.0 - area / (48.0 * 40.0))).abs() < 1e-12);
        }
        // The pixels really come from the partner inside the box and from itself outside.
        let device = Default::default();
        let x = Tensor::<B, 4>::random([4, 1, 6, 6], Distribution::Default, &device);
        let plan = MixPlan {
            kind: MixKind::CutMix,
            lambda: 1.0 - 4.0 / 36.0,
            cut: Some(CutBox {
                y0: 1,
                y1: 3,
                x0: 2,
                x1: 4,
            }),
        };
        let y = mix_images(x.clone(), &plan, 2)
            .into_data()
            .to_vec::<f32>()
            .unwrap();
        let x = x.into_data().to_vec::<f32>().unwrap();
        let at = |v: &[f32], n: usize, r: usize, c: usize| v[n * 36 + r * 6 + c];
        assert_eq!(at(&y, 0, 1, 2), at(&x, 1, 1, 2)); // sample 0's partner in view 0 is 1
        assert_eq!(at(&y, 2, 2, 3), at(&x, 3, 2, 3)); // view 1: 2 <-> 3
        assert_eq!(at(&y, 0, 0, 0), at(&x, 0, 0, 0));
    }

    #[test]
    fn smoothing_then_mixing_gives_the_reference_values() {
        // timm mixup_target: C = 7, smoothing 0.1, λ = 0.7.
        let t = vec![smooth(&one_hot(0, 7), 0.1), smooth(&one_hot(1, 7), 0.1)];
        let m = mix_targets(&t, 0.7, 1);
        let want = [0.644286, 0.284286, 0.014286];
        for (got, want) in [m[0][0], m[0][1], m[0][2]].iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
    }

    #[test]
    fn beta_samples_have_the_right_mean_and_spread() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let n = 20000;
        let v: Vec<f64> = (0..n).map(|_| sample_beta(&mut rng, 2.0, 2.0)).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        // Beta(2, 2): mean 0.5, variance 1/20.
        assert!(
            (mean - 0.5).abs() < 0.01 && (var - 0.05).abs() < 0.004,
            "{mean} {var}"
        );
        assert!(v.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    #[test]
    fn threshold_boundaries_give_the_positives_design_implies() {
        let (a, b) = (one_hot(0, 3), one_hot(1, 3));
        let mix = |l: f32| vec![l, 1.0 - l, 0.0];
        let t = 0.5;
        let pos = |x: &[f32], y: &[f32]| is_positive(x, y, t, LabelMetric::Linf);
        // λ = 0.5: half-half is within 0.5 of both pure classes, and of its twin.
        assert!(pos(&mix(0.5), &a) && pos(&mix(0.5), &b) && pos(&mix(0.5), &mix(0.5)));
        // λ = 0.75: close to a (0.25), far from b (0.75), exactly t from λ = 0.25 (inclusive).
        assert!(pos(&mix(0.75), &a) && !pos(&mix(0.75), &b));
        assert!(pos(&mix(0.75), &mix(0.25)));
        // λ = 0.25 mirrors it.
        assert!(pos(&mix(0.25), &b) && !pos(&mix(0.25), &a));
        // Different pure classes are never positives; under L1, 0.25 + 0.25 is exactly t.
        assert!(!pos(&a, &b));
        assert!(is_positive(&mix(0.75), &a, t, LabelMetric::L1));
        let m = positive_mask(&[a.clone(), a, b], t, LabelMetric::Linf);
        assert_eq!(
            m,
            [false, true, false, true, false, false, false, false, false]
        );
    }

    #[test]
    fn a_mixed_sample_is_the_first_row_of_a_mixed_batch() {
        let device = Default::default();
        let a = Tensor::<B, 3>::random([3, 8, 8], Distribution::Default, &device);
        let b = Tensor::<B, 3>::random([3, 8, 8], Distribution::Default, &device);
        let (ya, yb) = (one_hot(0, 3), one_hot(2, 3));
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let plans = [
            MixPlan {
                kind: MixKind::Mixup,
                lambda: 0.3,
                cut: None,
            },
            cutmix_plan(&mut rng, 0.6, 8, 8),
        ];
        for plan in plans {
            let s = mix_sample(
                [a.clone(), b.clone()],
                [&ya, &yb],
                &plan,
                &ya,
                0.5,
                LabelMetric::Linf,
            );

            // The same as mixing a view-major batch [a, b, b, a] of two views in training.
            let batch = Tensor::stack::<4>(vec![a.clone(), b.clone(), b.clone(), a.clone()], 0);
            let want = mix_images(batch, &plan, 2)
                .narrow(0, 0, 1)
                .reshape([3, 8, 8]);
            s.image.into_data().assert_eq(&want.into_data(), true);
            let targets = [ya.clone(), yb.clone(), yb.clone(), ya.clone()];
            assert_eq!(s.label, mix_targets(&targets, plan.lambda, 2)[0]);

            // Anchor a: the share of b is the L∞ distance, positive up to 0.5.
            let lam = plan.lambda as f32;
            assert!((s.distance - (1.0 - lam)).abs() < 1e-6, "{}", s.distance);
            assert_eq!(s.positive, 1.0 - lam <= 0.5);
        }
    }

    #[test]
    fn a_mixed_sample_decides_as_the_training_mask_does() {
        // The figure's grid and the page's explorer read labels and decisions from
        // `mix_sample`; training reads them from `mix_targets` and `positive_mask`.
        let device = Default::default();
        let image = || Tensor::<B, 3>::random([1, 6, 6], Distribution::Default, &device);
        let (ya, yb) = (one_hot(1, 8), one_hot(5, 8));
        for lambda in [0.0, 0.25, 0.4, 0.5, 0.6, 0.75, 1.0] {
            let plan = MixPlan {
                kind: MixKind::Mixup,
                lambda,
                cut: None,
            };
            let batch = mix_targets(&[ya.clone(), yb.clone()], lambda, 1);
            for anchor in [
                one_hot(1, 8),
                one_hot(5, 8),
                one_hot(0, 8),
                batch[1].clone(),
            ] {
                for metric in [LabelMetric::Linf, LabelMetric::L1] {
                    for t in [0.0, 0.25, 0.5, 0.75, 1.0] {
                        let s =
                            mix_sample([image(), image()], [&ya, &yb], &plan, &anchor, t, metric);
                        assert_eq!(s.label, batch[0]);
                        let mask = positive_mask(&[batch[0].clone(), anchor.clone()], t, metric);
                        assert_eq!(s.positive, mask[1], "λ {lambda}, t {t}, {metric:?}");
                        assert_eq!(s.distance, metric.distance(&batch[0], &anchor));
                    }
                }
            }
        }
    }
}
