use crate::backend::Backend;
use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::activation::relu;
use burn::tensor::{Tensor, TensorData};

use crate::loss::{l2_normalize, mscl_loss, soft_cross_entropy};
use crate::mix::{mix_images, mix_targets, smooth, LabelMetric, MixPlan};
use crate::model::Vit;
use crate::weights::{ParamVisitor, VisitParams};
use crate::{Error, Result};

/// The projection head of the contrastive branch (MIMIC Table III).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProjKind {
    /// The pooled feature itself (then L2-normalised).
    None,
    /// One linear map `d_model -> proj_dim`.
    Linear,
    /// `Linear(d, d) -> ReLU -> Linear(d, proj_dim)`, the paper's choice.
    Dense,
}

impl ProjKind {
    /// Parses `none`, `linear` or `dense`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "linear" => Ok(Self::Linear),
            "dense" => Ok(Self::Dense),
            o => Err(Error::Config(format!(
                "unknown projection head '{o}' (none, linear, dense)"
            ))),
        }
    }
}

/// The projection head: `fc1` alone (linear) or `fc1 -> ReLU -> fc2` (dense); empty for none.
#[derive(Module, Debug)]
pub struct ProjectionHead<B: Backend> {
    /// First layer (`d -> proj_dim` for linear, `d -> d` for dense).
    pub fc1: Option<Linear<B>>,
    /// Second layer of the dense head, `d -> proj_dim`.
    pub fc2: Option<Linear<B>>,
}

impl<B: Backend> ProjectionHead<B> {
    /// Builds a head of `kind` on `d_model`-wide features.
    pub fn new(kind: ProjKind, d_model: usize, proj_dim: usize, device: &B::Device) -> Self {
        let lin = |i, o| crate::model::xavier_linear(i, o, device);
        let head = match kind {
            ProjKind::None => Self {
                fc1: None,
                fc2: None,
            },
            ProjKind::Linear => Self {
                fc1: Some(lin(d_model, proj_dim)),
                fc2: None,
            },
            ProjKind::Dense => Self {
                fc1: Some(lin(d_model, d_model)),
                fc2: Some(lin(d_model, proj_dim)),
            },
        };
        crate::model::materialize(&head);
        head
    }

    /// L2-normalised embeddings `z`.
    ///
    /// # Shapes
    /// - features: `[batch, d_model]` -> `[batch, proj_dim]`
    pub fn forward(&self, features: Tensor<B, 2>) -> Tensor<B, 2> {
        let mut x = features;
        if let Some(fc1) = &self.fc1 {
            x = fc1.forward(x);
        }
        if let Some(fc2) = &self.fc2 {
            x = fc2.forward(relu(x));
        }
        l2_normalize(x)
    }
}

/// The fine-tuning model of MIMIC: the ViT encoder with its classification head, and a
/// projection head on the same pooled feature for the contrastive loss.
#[derive(Module, Debug)]
pub struct MimicModel<B: Backend> {
    /// Encoder + `fc_norm`/`norm` + classification head.
    pub encoder: Vit<B>,
    /// Contrastive projection head.
    pub proj: ProjectionHead<B>,
}

impl<B: Backend> MimicModel<B> {
    /// Class logits and contrastive embeddings of a batch.
    ///
    /// # Shapes
    /// - images: `[batch, 3, img_size, img_size]`
    /// - output: logits `[batch, n_classes]`, z `[batch, proj_dim]` (unit rows)
    pub fn forward(&self, images: Tensor<B, 4>) -> (Tensor<B, 2>, Tensor<B, 2>) {
        let features = self.encoder.forward_features(images);
        let logits = self.encoder.forward_head(features.clone());
        (logits, self.proj.forward(features))
    }
}

impl<B: Backend> VisitParams<B> for ProjectionHead<B> {
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.fc1
            .visit_params(&crate::weights::join(prefix, "fc1"), v);
        self.fc2
            .visit_params(&crate::weights::join(prefix, "fc2"), v);
    }
}

impl<B: Backend> VisitParams<B> for MimicModel<B> {
    /// The encoder keeps its timm names; the projection head lives under `proj_head.`.
    fn visit_params<V: ParamVisitor<B>>(&mut self, prefix: &str, v: &mut V) {
        self.encoder.visit_params(prefix, v);
        self.proj
            .visit_params(&crate::weights::join(prefix, "proj_head"), v);
    }
}

/// The objective of a fine-tuning run (MIMIC Table II).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Cross-entropy only.
    Ce,
    /// Cross-entropy + SupCon with same-class positives.
    Scl,
    /// Cross-entropy + the mix-supervised contrastive loss (MIMIC).
    Mscl,
}

impl LossKind {
    /// Parses `ce`, `scl` or `mscl`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "ce" => Ok(Self::Ce),
            "scl" => Ok(Self::Scl),
            "mscl" => Ok(Self::Mscl),
            o => Err(Error::Config(format!("unknown loss '{o}' (ce, scl, mscl)"))),
        }
    }
}

/// Loss settings. Defaults are the paper's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MimicLossConfig {
    /// The objective. Default: MSCL.
    pub loss: LossKind,
    /// Weight λ_c of the contrastive term. Default: 0.1.
    pub lambda_c: f64,
    /// Temperature τ. Default: 0.07.
    pub tau: f64,
    /// Positive threshold t on the soft-label distance (inclusive). Default: 0.5.
    pub threshold: f32,
    /// Soft-label distance. Default: L∞.
    pub metric: LabelMetric,
    /// Label smoothing of the cross-entropy target only. Default: 0.0.
    pub smoothing: f32,
}

impl Default for MimicLossConfig {
    fn default() -> Self {
        Self {
            loss: LossKind::Mscl,
            lambda_c: 0.1,
            tau: 0.07,
            threshold: 0.5,
            metric: LabelMetric::Linf,
            smoothing: 0.0,
        }
    }
}

impl MimicLossConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.tau <= 0.0 || !self.tau.is_finite() {
            return Err(Error::Config(format!(
                "temperature {} must be positive",
                self.tau
            )));
        }
        if self.lambda_c < 0.0 || !(0.0..1.0).contains(&self.smoothing) {
            return Err(Error::Config(
                "lambda-c must be >= 0 and smoothing in [0, 1)".into(),
            ));
        }
        // Distances between probability vectors lie in [0, 1] (L∞) or [0, 2] (L1); a threshold
        // at or above the top makes every pair a positive.
        let top = match self.metric {
            LabelMetric::Linf => 1.0,
            LabelMetric::L1 => 2.0,
        };
        if !(self.threshold >= 0.0 && self.threshold < top) {
            return Err(Error::Config(format!(
                "threshold {} must be in [0, {top}) for the {:?} label distance (at {top} every \
                 pair would be a positive)",
                self.threshold, self.metric
            )));
        }
        Ok(())
    }
}

/// The loss terms of one step.
pub struct StepLosses<B: Backend> {
    /// `ce + λ_c · contrastive`, to back-propagate.
    pub total: Tensor<B, 1>,
    /// The cross-entropy term.
    pub ce: Tensor<B, 1>,
    /// The contrastive term (absent for CE-only).
    pub contrastive: Option<Tensor<B, 1>>,
    /// Logits of the (mixed) batch, for training accuracy.
    pub logits: Tensor<B, 2>,
}

/// The MIMIC fine-tuning loss of one batch of two views (DESIGN §5).
///
/// `images` holds 2B samples view-major (rows 0..B view 1, B..2B view 2) and `targets` their
/// unmixed, unsmoothed label distributions. With a `plan`, images and labels are mixed
/// (partner = reversed batch within each view); the cross-entropy target is the mix of the
/// smoothed labels, the contrastive positives come from the unsmoothed mixed labels. SCL uses
/// same-class positives on the hard labels.
///
/// # Shapes
/// - images: `[2B, 3, img_size, img_size]`; targets: 2B rows of n_classes
pub fn finetune_loss<B: Backend>(
    model: &MimicModel<B>,
    images: Tensor<B, 4>,
    targets: &[Vec<f32>],
    plan: Option<&MixPlan>,
    config: &MimicLossConfig,
) -> StepLosses<B> {
    let batch = MixedBatch::new(images, targets, plan, config);
    // Both views in one forward pass.
    let features = model.encoder.forward_features(batch.images.clone());
    batch.losses(model, features, config)
}

/// A batch after step 1 of the loss: mixed images, and the label distributions each term
/// needs.
pub(crate) struct MixedBatch<'a, B: Backend> {
    /// The (mixed) images.
    pub images: Tensor<B, 4>,
    /// The unmixed, unsmoothed labels (SCL's hard positives).
    targets: &'a [Vec<f32>],
    /// The mixed, unsmoothed labels (MSCL's positives).
    mixed: Vec<Vec<f32>>,
    /// The mixed, smoothed labels (the cross-entropy target).
    ce_targets: Vec<Vec<f32>>,
}

impl<'a, B: Backend> MixedBatch<'a, B> {
    /// Mixes images and labels by `plan` (or not).
    pub fn new(
        images: Tensor<B, 4>,
        targets: &'a [Vec<f32>],
        plan: Option<&MixPlan>,
        config: &MimicLossConfig,
    ) -> Self {
        let n = targets.len();
        assert_eq!(images.dims()[0], n, "one target per image");
        let smoothed: Vec<Vec<f32>> = targets
            .iter()
            .map(|t| smooth(t, config.smoothing))
            .collect();
        match plan {
            Some(plan) => Self {
                images: mix_images(images, plan, 2),
                targets,
                mixed: mix_targets(targets, plan.lambda, 2),
                ce_targets: mix_targets(&smoothed, plan.lambda, 2),
            },
            None => Self {
                images,
                targets,
                mixed: targets.to_vec(),
                ce_targets: smoothed,
            },
        }
    }

    /// Steps 3-5 of the loss on the pooled features of the mixed images.
    ///
    /// # Shapes
    /// - features: `[2B, d_model]`
    pub fn losses(
        self,
        model: &MimicModel<B>,
        features: Tensor<B, 2>,
        config: &MimicLossConfig,
    ) -> StepLosses<B> {
        let n = self.targets.len();
        let n_classes = self.targets[0].len();
        let device = features.device();
        let logits = model.encoder.forward_head(features.clone());
        let z = model.proj.forward(features);

        // Cross-entropy against the (smoothed) soft labels.
        let flat: Vec<f32> = self.ce_targets.into_iter().flatten().collect();
        let ce_targets = Tensor::<B, 2>::from_data(TensorData::new(flat, [n, n_classes]), &device);
        let ce = soft_cross_entropy(logits.clone(), ce_targets);

        // The contrastive term.
        let contrastive = match config.loss {
            LossKind::Ce => None,
            LossKind::Scl => {
                let hard: Vec<Vec<f32>> = self
                    .targets
                    .iter()
                    .map(|t| one_hot(argmax(t), n_classes))
                    .collect();
                Some(mscl_loss(z, &hard, config.tau, 0.0, LabelMetric::Linf))
            }
            LossKind::Mscl => Some(mscl_loss(
                z,
                &self.mixed,
                config.tau,
                config.threshold,
                config.metric,
            )),
        };

        let total = match &contrastive {
            Some(c) => ce.clone() + c.clone().mul_scalar(config.lambda_c),
            None => ce.clone(),
        };
        StepLosses {
            total,
            ce,
            contrastive,
            logits,
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

fn one_hot(c: usize, n: usize) -> Vec<f32> {
    (0..n).map(|i| f32::from(i == c)).collect()
}
