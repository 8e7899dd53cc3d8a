//! The fine-tuning losses: soft-target cross-entropy, supervised contrastive (SupCon) and the
//! mix-supervised contrastive loss (MSCL) of MIMIC, which is SupCon with positives decided by
//! the distance of the mixed soft labels.
//!
//! Reference: P. Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, and its
//! code (HobbitLong/SupContrast `losses.py`).

use crate::backend::Backend;
use burn::tensor::activation::log_softmax;
use burn::tensor::{Tensor, TensorData};

use crate::mix::{positive_mask, LabelMetric};

/// Cross-entropy against soft targets, averaged over the batch: `−mean_i Σ_c t_ic log p_ic`.
///
/// # Shapes
/// - logits: `[batch, n_classes]`
/// - targets: `[batch, n_classes]`, rows are distributions
/// - output: `[1]`
pub fn soft_cross_entropy<B: Backend>(logits: Tensor<B, 2>, targets: Tensor<B, 2>) -> Tensor<B, 1> {
    let [batch, _] = logits.dims();
    (log_softmax(logits, 1) * targets)
        .sum()
        .neg()
        .div_scalar(batch as f64)
}

/// The supervised contrastive loss for L2-normalised embeddings and a positive mask.
///
/// For anchor i with positives P(i) (mask row i; the diagonal is ignored):
/// `ℓ_i = −mean_{p∈P(i)} log( exp(z_i·z_p/τ) / Σ_{a≠i} exp(z_i·z_a/τ) )`, and an anchor
/// without positives contributes 0 (as SupContrast does since its fix for that case). The
/// result is the mean over all anchors.
///
/// NOTE: SupContrast also multiplies by τ / τ_base (τ_base = 0.07); with the paper's τ = 0.07
/// that factor is 1, so it is left out.
///
/// # Shapes
/// - z: `[n, d]`, unit rows
/// - positives: `[n, n]`, 1.0 for positive pairs, 0.0 otherwise
/// - output: `[1]`
pub fn supcon_loss<B: Backend>(z: Tensor<B, 2>, positives: Tensor<B, 2>, tau: f64) -> Tensor<B, 1> {
    let [n, _] = z.dims();
    let device = z.device();

    // All pairwise similarities in one matmul.
    let logits = z.clone().matmul(z.transpose()).div_scalar(tau); // [n, n]

    // Log-softmax over the candidates a ≠ i: push the diagonal to -inf-like values first.
    // Subtracting the (detached) row max keeps exp() in range, as SupContrast does.
    let eye = Tensor::<B, 2>::eye(n, &device);
    let logits = logits - eye.clone().mul_scalar(1e9);
    let max = logits.clone().max_dim(1).detach();
    let logits = logits - max;
    let log_denominator = logits.clone().exp().sum_dim(1).log(); // [n, 1]
    let log_prob = logits - log_denominator;

    let positives = positives * eye.neg().add_scalar(1.0);
    let n_pos = positives.clone().sum_dim(1); // [n, 1]
    let sum_pos = (positives * log_prob).sum_dim(1);
    // Anchors without positives: numerator 0, denominator clamped to 1 -> contribution 0.
    let mean_log_prob_pos = sum_pos / n_pos.clamp_min(1.0);
    mean_log_prob_pos.mean().neg()
}

/// MSCL: SupCon whose positives are the pairs whose soft labels `labels` (unsmoothed, one per
/// row of `z`) lie within `threshold` under `metric`.
///
/// # Shapes
/// - z: `[n, d]`, unit rows; `labels`: n rows
/// - output: `[1]`
pub fn mscl_loss<B: Backend>(
    z: Tensor<B, 2>,
    labels: &[Vec<f32>],
    tau: f64,
    threshold: f32,
    metric: LabelMetric,
) -> Tensor<B, 1> {
    let n = labels.len();
    assert_eq!(z.dims()[0], n, "one soft label per embedding");
    let mask: Vec<f32> = positive_mask(labels, threshold, metric)
        .into_iter()
        .map(f32::from)
        .collect();
    let mask = Tensor::from_data(TensorData::new(mask, [n, n]), &z.device());
    supcon_loss(z, mask, tau)
}

/// Rows scaled to unit L2 norm (with a small floor against division by zero).
///
/// # Shapes
/// - x: `[n, d]` -> `[n, d]`
pub fn l2_normalize<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().clamp_min(1e-12);
    x / norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::Distribution;

    type B = Flex;

    fn one_hot(c: usize, n: usize) -> Vec<f32> {
        (0..n).map(|i| if i == c { 1.0 } else { 0.0 }).collect()
    }

    fn value(t: Tensor<B, 1>) -> f32 {
        t.into_scalar()
    }

    fn embeddings(n: usize, d: usize) -> Tensor<B, 2> {
        l2_normalize(Tensor::random(
            [n, d],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        ))
    }

    fn class_mask(classes: &[usize]) -> Tensor<B, 2> {
        let n = classes.len();
        let v: Vec<f32> = (0..n * n)
            .map(|k| f32::from(classes[k / n] == classes[k % n] && k / n != k % n))
            .collect();
        Tensor::from_data(TensorData::new(v, [n, n]), &Default::default())
    }

    #[test]
    fn mscl_equals_supcon_when_nothing_is_mixed() {
        let classes = [0, 1, 2, 1, 0, 1, 2, 1];
        let z = embeddings(8, 16);
        let labels: Vec<Vec<f32>> = classes.iter().map(|&c| one_hot(c, 3)).collect();
        let a = value(mscl_loss(z.clone(), &labels, 0.07, 0.5, LabelMetric::Linf));
        let b = value(supcon_loss(z, class_mask(&classes), 0.07));
        assert_eq!(a, b);
    }

    #[test]
    fn anchor_without_positives_contributes_zero() {
        // Sample 2 is the only one of its class: its row adds 0 but still counts in the mean.
        let classes = [0, 0, 1];
        let z = embeddings(3, 8);
        let full = value(supcon_loss(z.clone(), class_mask(&classes), 0.1));
        let pair = value(supcon_loss(
            z.clone().narrow(0, 0, 2),
            class_mask(&[0, 0]),
            0.1,
        ));
        // Anchors 0 and 1 see an extra negative in the 3-sample batch, so recompute by hand.
        let zv = z.into_data().to_vec::<f32>().unwrap();
        let dot = |i: usize, j: usize| (0..8).map(|k| zv[i * 8 + k] * zv[j * 8 + k]).sum::<f32>();
        let term = |i: usize, p: usize, o: usize| {
            let (sp, so) = (dot(i, p) / 0.1, dot(i, o) / 0.1);
            -(sp - (sp.exp() + so.exp()).ln())
        };
        let want = (term(0, 1, 2) + term(1, 0, 2) + 0.0) / 3.0;
        assert!((full - want).abs() < 1e-4, "{full} vs {want}");
        assert!(
            pair.abs() < 1e-5,
            "two samples, each the other's only candidate: log 1 = 0"
        );
    }

    #[test]
    fn loss_is_invariant_to_permuting_the_batch() {
        let classes = [0usize, 1, 1, 2, 0, 2];
        let z = embeddings(6, 12);
        let labels: Vec<Vec<f32>> = classes.iter().map(|&c| one_hot(c, 3)).collect();
        let a = value(mscl_loss(z.clone(), &labels, 0.07, 0.5, LabelMetric::Linf));
        let perm = [3usize, 0, 5, 1, 4, 2];
        let idx = Tensor::<B, 1, burn::tensor::Int>::from_data(
            TensorData::new(perm.iter().map(|&i| i as i32).collect::<Vec<_>>(), [6]),
            &Default::default(),
        );
        let z2 = z.select(0, idx);
        let labels2: Vec<Vec<f32>> = perm.iter().map(|&i| labels[i].clone()).collect();
        let b = value(mscl_loss(z2, &labels2, 0.07, 0.5, LabelMetric::Linf));
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn soft_cross_entropy_matches_the_definition() {
        let device = Default::default();
        let logits = Tensor::<B, 2>::from_floats([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], &device);
        let t = Tensor::<B, 2>::from_floats([[0.7, 0.3, 0.0], [0.0, 0.0, 1.0]], &device);
        let got = value(soft_cross_entropy(logits, t));
        let lse = |v: [f32; 3]| v.iter().map(|x| x.exp()).sum::<f32>().ln();
        let l0 = lse([1.0, 2.0, 0.5]);
        let l1 = lse([0.0, -1.0, 3.0]);
        let want = (-(0.7 * (1.0 - l0) + 0.3 * (2.0 - l0)) - (3.0 - l1)) / 2.0;
        assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    }
}
