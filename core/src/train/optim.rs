use std::collections::BTreeMap;

use crate::backend::{AutodiffBackend, Backend};
use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamW, AdamWConfig, GradientsParams, Optimizer};
use burn::record::{BinBytesRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;

use crate::weights::{Layout, ParamVisitor, VisitParams};
use crate::{Error, Result};

/// Adam (L2 penalty added to the gradient, the paper's choice) or AdamW (decoupled decay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimKind {
    /// Adam with coupled weight decay.
    Adam,
    /// AdamW with decoupled weight decay.
    AdamW,
}

/// Optimiser settings. Defaults are the MIMIC paper's fine-tuning recipe for ViT-B/16.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimizerConfig {
    /// Adam or AdamW. Default: Adam (paper).
    pub kind: OptimKind,
    /// Weight decay of matrices (none on 1-D parameters, position embedding, cls token).
    /// Default: 5e-4 (paper).
    pub weight_decay: f64,
    /// Adam β1. Default: 0.9.
    pub beta1: f32,
    /// Adam β2. Default: 0.999.
    pub beta2: f32,
    /// Adam ε, set explicitly because burn's default (1e-5) differs from PyTorch's (1e-8).
    /// Default: 1e-8.
    pub eps: f32,
    /// Layer-wise lr decay (MAE / BEiT): block k gets decay^(L − k). Default: 0.65 (paper).
    pub layer_decay: f64,
    /// Per-parameter gradient norm clip (burn clips each tensor separately); none by default.
    pub clip_grad: Option<f32>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            kind: OptimKind::Adam,
            weight_decay: 5e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            layer_decay: 0.65,
            clip_grad: None,
        }
    }
}

impl OptimizerConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !(self.layer_decay > 0.0 && self.layer_decay <= 1.0) {
            return bad(format!("layer decay {} not in (0, 1]", self.layer_decay));
        }
        if self.weight_decay < 0.0 || !self.weight_decay.is_finite() {
            return bad(format!("weight decay {} must be >= 0", self.weight_decay));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad(format!(
                "betas ({}, {}) must be in [0, 1)",
                self.beta1, self.beta2
            ));
        }
        if self.eps <= 0.0 || self.clip_grad.is_some_and(|c| c <= 0.0) {
            return bad("eps and clip-grad must be positive".into());
        }
        Ok(())
    }
}

/// Parameters that share a learning-rate scale and a weight-decay setting.
#[derive(Debug, Clone)]
pub struct ParamGroup {
    /// Layer id (0 = embeddings, k + 1 = block k, depth + 1 = norms and heads).
    pub layer: usize,
    /// Whether weight decay applies.
    pub weight_decay: bool,
    /// Multiplier of the scheduled learning rate: `layer_decay^(depth + 1 − layer)`.
    pub lr_scale: f64,
    /// The parameters.
    pub ids: Vec<ParamId>,
    /// Their names, for reports.
    pub names: Vec<String>,
}

/// The layer id of a parameter by its timm name, as MAE's `get_layer_id_for_vit`:
/// embeddings (cls, pos, patch) are 0, block k is k + 1, everything after the blocks
/// (norms, heads, projection head) is depth + 1.
pub fn layer_id(name: &str, depth: usize) -> usize {
    if name == "cls_token" || name == "pos_embed" || name.starts_with("patch_embed.") {
        return 0;
    }
    if let Some(rest) = name.strip_prefix("blocks.") {
        if let Some(k) = rest.split('.').next().and_then(|k| k.parse::<usize>().ok()) {
            return k + 1;
        }
    }
    depth + 1
}

/// Splits a module's parameters into groups by layer id and weight decay. Parameters that do
/// not train (fixed position tables) are left out.
pub fn layer_decay_groups<B: Backend, M: VisitParams<B>>(
    module: &mut M,
    depth: usize,
    layer_decay: f64,
) -> Vec<ParamGroup> {
    struct Collect(Vec<(String, ParamId, usize, bool)>);
    impl<B: Backend> ParamVisitor<B> for Collect {
        fn visit<const D: usize>(&mut self, name: &str, _: Layout, p: &mut Param<Tensor<B, D>>) {
            let trainable = p.val().is_require_grad();
            self.0.push((name.to_string(), p.id, D, trainable));
        }
    }
    let mut c = Collect(Vec::new());
    module.visit_params("", &mut c);

    let mut groups: BTreeMap<(usize, bool), ParamGroup> = BTreeMap::new();
    for (name, id, rank, trainable) in c.0 {
        if !trainable {
            continue;
        }
        let layer = layer_id(&name, depth);
        // No decay on biases, norm gains (all 1-D), the position / cls embeddings and the MAE
        // mask token.
        let decay = rank > 1 && !matches!(name.as_str(), "pos_embed" | "cls_token" | "mask_token");
        let g = groups.entry((layer, decay)).or_insert_with(|| ParamGroup {
            layer,
            weight_decay: decay,
            lr_scale: layer_decay.powi((depth + 1 - layer) as i32),
            ids: vec![],
            names: vec![],
        });
        g.ids.push(id);
        g.names.push(name);
    }
    groups.into_values().collect()
}

enum Inner<M: AutodiffModule<B>, B: AutodiffBackend> {
    Adam(OptimizerAdaptor<Adam, M, B>),
    AdamW(OptimizerAdaptor<AdamW, M, B>),
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Inner<M, B> {
    fn step(&mut self, lr: f64, module: M, grads: GradientsParams) -> M {
        match self {
            Inner::Adam(o) => o.step(lr, module, grads),
            Inner::AdamW(o) => o.step(lr, module, grads),
        }
    }

    /// The moment estimates and step counts, serialised at full precision.
    fn state_bytes(&self) -> Vec<u8> {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bytes = match self {
            Inner::Adam(o) => Recorder::<B>::record(&recorder, o.to_record(), ()),
            Inner::AdamW(o) => Recorder::<B>::record(&recorder, o.to_record(), ()),
        };
        bytes.expect("in-memory records always serialise")
    }

    fn load_state_bytes(self, bytes: Vec<u8>, device: &B::Device) -> Result<Self> {
        let recorder = BinBytesRecorder::<FullPrecisionSettings>::default();
        let bad = |e: burn::record::RecorderError| {
            Error::Config(format!("optimiser state does not fit this optimiser: {e}"))
        };
        Ok(match self {
            Inner::Adam(o) => {
                Inner::Adam(o.load_record(recorder.load(bytes, device).map_err(bad)?))
            }
            Inner::AdamW(o) => {
                Inner::AdamW(o.load_record(recorder.load(bytes, device).map_err(bad)?))
            }
        })
    }
}

/// Magic bytes of [`GroupedOptimizer::state_bytes`].
const STATE_MAGIC: &[u8; 8] = b"MIMICOPT";

/// FNV-1a, 64 bits: checksums of saved optimiser state and stable parameter ids.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// An optimiser that applies a per-group learning-rate scale and weight decay: one inner
/// optimiser with decay and one without, each stepped once per group with that group's
/// gradients only. Each parameter belongs to exactly one group, so its moment estimates live
/// in one inner optimiser.
pub struct GroupedOptimizer<M: AutodiffModule<B>, B: AutodiffBackend> {
    decayed: Inner<M, B>,
    plain: Inner<M, B>,
    groups: Vec<ParamGroup>,
}

impl<M: AutodiffModule<B> + VisitParams<B>, B: AutodiffBackend> GroupedOptimizer<M, B> {
    /// Builds the optimiser for `module` (a ViT with `depth` blocks, plus heads).
    pub fn new(config: &OptimizerConfig, module: &mut M, depth: usize) -> Result<Self> {
        config.validate()?;
        let clip = config.clip_grad.map(GradientClippingConfig::Norm);
        let make = |wd: f64| match config.kind {
            OptimKind::Adam => Inner::Adam(
                AdamConfig::new()
                    .with_beta_1(config.beta1)
                    .with_beta_2(config.beta2)
                    .with_epsilon(config.eps)
                    .with_weight_decay((wd > 0.0).then(|| WeightDecayConfig::new(wd as f32)))
                    .with_grad_clipping(clip.clone())
                    .init(),
            ),
            OptimKind::AdamW => Inner::AdamW(
                AdamWConfig::new()
                    .with_beta_1(config.beta1)
                    .with_beta_2(config.beta2)
                    .with_epsilon(config.eps)
                    .with_weight_decay(wd as f32)
                    .with_grad_clipping(clip.clone())
                    .init(),
            ),
        };
        Ok(Self {
            decayed: make(config.weight_decay),
            plain: make(0.0),
            groups: layer_decay_groups(module, depth, config.layer_decay),
        })
    }

    /// The parameter groups.
    pub fn groups(&self) -> &[ParamGroup] {
        &self.groups
    }

    /// The whole optimiser state (both inner optimisers' moments and step counts) as bytes,
    /// with a header and checksum. Parameters are keyed by their ids, so the module must use
    /// [`crate::weights::assign_stable_ids`] for the state to load in another process.
    pub fn state_bytes(&self) -> Vec<u8> {
        let (a, b) = (self.decayed.state_bytes(), self.plain.state_bytes());
        let mut out = STATE_MAGIC.to_vec();
        for part in [&a, &b] {
            out.extend((part.len() as u64).to_le_bytes());
            out.extend(fnv1a(part).to_le_bytes());
            out.extend_from_slice(part);
        }
        out
    }

    /// Restores a state written by [`Self::state_bytes`]. A truncated, corrupted or foreign
    /// file is an error, never a panic.
    pub fn load_state_bytes(self, bytes: &[u8], device: &B::Device) -> Result<Self> {
        let corrupt = |why: &str| Error::Config(format!("optimiser state: {why}"));
        let rest = bytes
            .strip_prefix(STATE_MAGIC.as_slice())
            .ok_or_else(|| corrupt("not a mimic optimiser state (bad magic bytes)"))?;
        let mut parts = Vec::new();
        let mut rest = rest;
        for _ in 0..2 {
            if rest.len() < 16 {
                return Err(corrupt("truncated"));
            }
            let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
            let sum = u64::from_le_bytes(rest[8..16].try_into().expect("8 bytes"));
            let body = rest
                .get(16..16usize.saturating_add(len))
                .ok_or_else(|| corrupt("truncated"))?;
            if fnv1a(body) != sum {
                return Err(corrupt("checksum mismatch (the file is corrupted)"));
            }
            parts.push(body.to_vec());
            rest = &rest[16 + len..];
        }
        if !rest.is_empty() {
            return Err(corrupt("trailing bytes"));
        }
        let plain = parts.pop().expect("two parts");
        let decayed = parts.pop().expect("two parts");
        Ok(Self {
            decayed: self.decayed.load_state_bytes(decayed, device)?,
            plain: self.plain.load_state_bytes(plain, device)?,
            groups: self.groups,
        })
    }

    /// One update: every group is stepped at `lr * lr_scale` with its own gradients.
    pub fn step(&mut self, lr: f64, module: M, grads: B::Gradients) -> M {
        let grads = GradientsParams::from_grads(grads, &module);
        self.step_params(lr, module, grads)
    }

    /// [`Self::step`] with gradients already gathered per parameter (as
    /// [`super::finetune_gradients`] returns them).
    pub fn step_params(&mut self, lr: f64, mut module: M, mut grads: GradientsParams) -> M {
        for group in &self.groups {
            let g = take_params::<B, M>(&module, &mut grads, &group.ids);
            if g.is_empty() {
                continue;
            }
            let inner = if group.weight_decay {
                &mut self.decayed
            } else {
                &mut self.plain
            };
            module = inner.step(lr * group.lr_scale, module, g);
        }
        module
    }
}

/// Moves the gradients of `ids` out of `grads`.
fn take_params<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    ids: &[ParamId],
) -> GradientsParams {
    struct Take<'a, B> {
        from: &'a mut GradientsParams,
        to: GradientsParams,
        ids: &'a [ParamId],
        _backend: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> burn::module::ModuleVisitor<B> for Take<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            if self.ids.contains(&param.id) {
                if let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id) {
                    self.to.register(param.id, g);
                }
            }
        }
    }
    let mut take = Take::<B> {
        from: grads,
        to: GradientsParams::new(),
        ids,
        _backend: std::marker::PhantomData,
    };
    module.visit(&mut take);
    take.to
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_ids_follow_mae() {
        assert_eq!(layer_id("cls_token", 12), 0);
        assert_eq!(layer_id("patch_embed.proj.weight", 12), 0);
        assert_eq!(layer_id("blocks.0.attn.qkv.weight", 12), 1);
        assert_eq!(layer_id("blocks.11.mlp.fc2.bias", 12), 12);
        assert_eq!(layer_id("fc_norm.weight", 12), 13);
        assert_eq!(layer_id("head.weight", 12), 13);
        assert_eq!(layer_id("proj_head.fc1.weight", 12), 13);
    }
}
