//! The mixing explorer's computation: two grey images mixed by the training code itself
//! ([`mimic_core::mix::mix_sample`]), its soft label, and whether it is a positive of an
//! anchor class. Nothing of the mixing is re-implemented here.

use burn::tensor::{Tensor, TensorData};
use mimic_core::backend::Backend;
use mimic_core::mix::{cutmix_plan, mix_sample, CutBox, LabelMetric, MixKind, MixPlan};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// What the explorer asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MixRequest {
    /// The two images, `side * side` grey values each.
    pub images: [Vec<u8>; 2],
    /// Side of the images, in pixels.
    pub side: usize,
    /// Their classes.
    pub classes: [usize; 2],
    /// Classes in all.
    pub n_classes: usize,
    /// Mixup or CutMix.
    pub kind: MixKind,
    /// The requested λ, the weight of the first image (CutMix corrects it to the box area).
    pub lambda: f64,
    /// Seed of CutMix's box centre, so that the box only grows and shrinks with λ.
    pub box_seed: u64,
    /// The anchor's class.
    pub anchor: usize,
    /// The positive threshold t (inclusive).
    pub threshold: f32,
    /// How soft labels are compared.
    pub metric: LabelMetric,
}

/// What the explorer shows.
#[derive(Debug, Clone, PartialEq)]
pub struct MixResult {
    /// The mixed image, `side * side` grey values in [0, 1].
    pub pixels: Vec<f32>,
    /// The effective λ (CutMix: the share of the first image left visible).
    pub lambda: f64,
    /// CutMix's box.
    pub cut: Option<CutBox>,
    /// The soft label `λ·e(a) + (1 − λ)·e(b)`.
    pub label: Vec<f32>,
    /// Its distance to the anchor's one-hot label.
    pub distance: f32,
    /// Whether it is a positive of the anchor.
    pub positive: bool,
    /// The anchor class, threshold and metric this was decided with (the controls may have
    /// moved on while it was computed).
    pub anchor: usize,
    /// See `anchor`.
    pub threshold: f32,
    /// See `anchor`.
    pub metric: LabelMetric,
}

/// A one-hot label.
pub fn one_hot(class: usize, n_classes: usize) -> Vec<f32> {
    (0..n_classes)
        .map(|c| if c == class { 1.0 } else { 0.0 })
        .collect()
}

/// Runs [`mix_sample`] on the request and reads the image back asynchronously (the only
/// read-back the web allows).
pub async fn mix_pair<B: Backend>(
    req: &MixRequest,
    device: &B::Device,
) -> Result<MixResult, String> {
    let side = req.side;
    for img in &req.images {
        if img.len() != side * side {
            return Err(format!(
                "an image of {} values is not {side}x{side}",
                img.len()
            ));
        }
    }
    if req
        .classes
        .iter()
        .chain([&req.anchor])
        .any(|&c| c >= req.n_classes)
    {
        return Err(format!(
            "a class is not one of the {} classes",
            req.n_classes
        ));
    }
    let tensor = |img: &[u8]| {
        let values: Vec<f32> = img.iter().map(|&p| f32::from(p) / 255.0).collect();
        Tensor::<B, 3>::from_data(TensorData::new(values, [1, side, side]), device)
    };
    let lambda = req.lambda.clamp(0.0, 1.0);
    let plan = match req.kind {
        MixKind::Mixup => MixPlan {
            kind: MixKind::Mixup,
            lambda,
            cut: None,
        },
        MixKind::CutMix => {
            cutmix_plan(&mut StdRng::seed_from_u64(req.box_seed), lambda, side, side)
        }
    };
    let labels = req.classes.map(|c| one_hot(c, req.n_classes));
    let anchor = one_hot(req.anchor, req.n_classes);

    let mixed = mix_sample(
        [tensor(&req.images[0]), tensor(&req.images[1])],
        [&labels[0], &labels[1]],
        &plan,
        &anchor,
        req.threshold,
        req.metric,
    );
    let pixels = crate::engine::read_back(mixed.image).await?;
    Ok(MixResult {
        pixels,
        lambda: plan.lambda,
        cut: plan.cut,
        label: mixed.label,
        distance: mixed.distance,
        positive: mixed.positive,
        anchor: req.anchor,
        threshold: req.threshold,
        metric: req.metric,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tests::ready;
    use mimic_core::mix::is_positive;

    type B = burn::backend::Flex;

    fn request(kind: MixKind, lambda: f64) -> MixRequest {
        MixRequest {
            images: [vec![200; 16], vec![40; 16]],
            side: 4,
            classes: [1, 3],
            n_classes: 8,
            kind,
            lambda,
            box_seed: 7,
            anchor: 1,
            threshold: 0.5,
            metric: LabelMetric::Linf,
        }
    }

    #[test]
    fn mixup_gives_the_convex_label_and_image() {
        for lambda in [0.0, 0.3, 0.5, 0.8, 1.0] {
            let r = ready(mix_pair::<B>(
                &request(MixKind::Mixup, lambda),
                &Default::default(),
            ))
            .unwrap();
            let l = lambda as f32;
            let want: Vec<f32> = (0..8)
                .map(|c| l * one_hot(1, 8)[c] + (1.0 - l) * one_hot(3, 8)[c])
                .collect();
            assert_eq!(r.label, want);
            let pixel = (l * 200.0 + (1.0 - l) * 40.0) / 255.0;
            assert!(
                r.pixels.iter().all(|p| (p - pixel).abs() < 1e-5),
                "{:?}",
                r.pixels
            );
            // The decision is the training rule's, for the anchor's one-hot label.
            let rule = is_positive(&r.label, &one_hot(1, 8), 0.5, LabelMetric::Linf);
            assert_eq!(r.positive, rule);
            assert_eq!(r.positive, 1.0 - l <= 0.5);
        }
    }

    #[test]
    fn cutmix_pastes_a_box_sized_by_lambda() {
        let small = ready(mix_pair::<B>(
            &request(MixKind::CutMix, 0.9),
            &Default::default(),
        ))
        .unwrap();
        let large = ready(mix_pair::<B>(
            &request(MixKind::CutMix, 0.2),
            &Default::default(),
        ))
        .unwrap();
        let pasted = |r: &MixResult| r.pixels.iter().filter(|&&p| p < 0.5).count();
        assert!(pasted(&small) < pasted(&large), "{small:?} {large:?}");
        for r in [small, large] {
            let b = r.cut.unwrap();
            let area = (b.y1 - b.y0) * (b.x1 - b.x0);
            assert_eq!(pasted(&r), area);
            assert!((r.lambda - (1.0 - area as f64 / 16.0)).abs() < 1e-12);
            assert!((r.label[1] - r.lambda as f32).abs() < 1e-6);
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut req = request(MixKind::Mixup, 0.5);
        req.anchor = 8;
        assert!(ready(mix_pair::<B>(&req, &Default::default())).is_err());
        req.anchor = 0;
        req.images[0].pop();
        assert!(ready(mix_pair::<B>(&req, &Default::default())).is_err());
    }
}
