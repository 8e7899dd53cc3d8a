use std::fmt::Write as _;

use crate::backend::Backend;
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};

use super::visit::{Layout, ParamVisitor, VisitParams};
use super::TensorMap;
use crate::model::{pos_embed, Vit, VitConfig};
use crate::{Error, Result};

/// Which differences between a checkpoint and the model are expected. Anything else —
/// a missing key, an unexpected key or a mis-shaped tensor — fails the load.
///
/// Patterns are exact names, or prefixes ending in `*` (`head.*`, `decoder_*`).
#[derive(Debug, Clone, Default)]
pub struct LoadPolicy {
    /// Model parameters that may be absent from the file (they keep their fresh init).
    pub allow_missing: Vec<String>,
    /// File tensors that may be left unused.
    pub allow_unused: Vec<String>,
}

impl LoadPolicy {
    /// Every model parameter must be in the file and every file tensor must be used.
    pub fn strict() -> Self {
        Self::default()
    }

    /// Initialising a classifier from a pre-trained encoder (an MAE release, our MAE
    /// checkpoint, a timm model with another head): the head and `fc_norm` may be missing
    /// (as MAE's fine-tuning asserts), and the encoder's final `norm`, the MAE decoder and
    /// its mask token, a foreign head and our projection head may be left unused.
    pub fn finetune_init() -> Self {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        Self {
            allow_missing: s(&["head.*", "fc_norm.*"]),
            allow_unused: s(&["norm.*", "decoder_*", "mask_token", "head.*", "proj_head.*"]),
        }
    }

    fn matches(patterns: &[String], name: &str) -> bool {
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => p == name,
        })
    }
}

/// What a successful load did.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Number of parameters loaded from the file.
    pub loaded: usize,
    /// Parameters the file lacked, all allowed by the policy (they keep their init).
    pub missing: Vec<String>,
    /// File tensors left unused, all allowed by the policy.
    pub unused: Vec<String>,
    /// Notes on conversions (position-embedding resize, container unwrapping).
    pub notes: Vec<String>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "loaded {} tensors", self.loaded)?;
        if !self.missing.is_empty() {
            write!(
                f,
                "; kept fresh (expected missing): {}",
                self.missing.join(", ")
            )?;
        }
        if !self.unused.is_empty() {
            write!(f, "; ignored (expected unused): {}", self.unused.join(", "))?;
        }
        for note in &self.notes {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

/// Builds a [`Vit`] for `config` and loads `map` into it under `policy`.
///
/// On any unexpected difference the model is dropped and the error lists every offending
/// key, so no half-random model is ever returned. A position embedding saved for another
/// patch grid is resized bicubically (see [`pos_embed::resize_pos_embed`]) and noted.
pub fn load_vit<B: Backend>(
    config: &VitConfig,
    map: TensorMap,
    policy: &LoadPolicy,
    device: &B::Device,
) -> Result<(Vit<B>, LoadReport)> {
    config.validate()?;
    // A configuration far larger than the file (e.g. from a checkpoint's own metadata) could
    // never load: refuse it before its parameters are allocated.
    let (want, have) = (expected_values(config), file_values(&map));
    if want > 2 * have + SIZE_SLACK {
        return Err(Error::WeightMismatch {
            source_name: map.source.clone(),
            details: format!(
                "  the model has {want} parameters but the file holds only {have} values \
                 (img_size {}, patch_size {}, d_model {}, depth {}, {} classes)",
                config.img_size, config.patch_size, config.d_model, config.depth, config.n_classes
            ),
        });
    }
    let mut model = config.init::<B>(device)?;
    let report = load_into(&mut model, map, policy, device)?;
    Ok((model, report))
}

/// Parameters a model may have beyond twice the file's values before [`load_vit`] refuses it
/// unallocated: room for a fresh head and a resized position table.
const SIZE_SLACK: u128 = 1 << 24;

/// The number of parameters of a [`Vit`] built from `c`, computed without building it.
fn expected_values(c: &VitConfig) -> u128 {
    let [img, patch, d, depth, chans, classes] = [
        c.img_size,
        c.patch_size,
        c.d_model,
        c.depth,
        c.in_chans,
        c.n_classes,
    ]
    .map(|v| v as u128);
    let hidden = c.d_hidden() as u128;
    let grid = img / patch.max(1);
    let embed = d * chans * patch * patch + d + d + (1 + grid * grid) * d;
    let block =
        4 * d + (3 * d * d + 3 * d) + (d * d + d) + (hidden * d + hidden) + (d * hidden + d);
    let head = if classes > 0 {
        classes * d + classes
    } else {
        0
    };
    embed + depth * block + 2 * d + head
}

/// The number of values a map holds.
fn file_values(map: &TensorMap) -> u128 {
    map.tensors.values().map(|t| t.data.len() as u128).sum()
}

/// Loads `map` into an existing module under `policy` (see [`load_vit`]).
pub fn load_into<B: Backend, M: VisitParams<B>>(
    module: &mut M,
    mut map: TensorMap,
    policy: &LoadPolicy,
    device: &B::Device,
) -> Result<LoadReport> {
    let mut loader = Loader {
        map: &mut map,
        device,
        loaded: 0,
        missing: vec![],
        misshaped: vec![],
        notes: vec![],
    };
    module.visit_params("", &mut loader);
    let Loader {
        loaded,
        missing,
        misshaped,
        mut notes,
        ..
    } = loader;

    let unused: Vec<(String, Vec<usize>)> = map
        .tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.shape.clone()))
        .collect();
    let bad_missing = missing
        .iter()
        .filter(|(n, _)| !LoadPolicy::matches(&policy.allow_missing, n))
        .map(|(n, s)| format!("missing from the file: {n} {s:?}"));
    let bad_unused = unused
        .iter()
        .filter(|(n, _)| !LoadPolicy::matches(&policy.allow_unused, n))
        .map(|(n, s)| format!("unexpected in the file: {n} {s:?}"));
    let bad_shapes = misshaped.iter().map(|l| format!("wrong shape: {l}"));
    let mut details = String::new();
    for lines in [
        bad_missing.collect::<Vec<_>>(),
        bad_unused.collect(),
        bad_shapes.collect(),
    ] {
        for line in lines.iter().take(MAX_LINES) {
            let _ = writeln!(details, "  {line}");
        }
        if lines.len() > MAX_LINES {
            let _ = writeln!(
                details,
                "  ... and {} more like it",
                lines.len() - MAX_LINES
            );
        }
    }
    if !details.is_empty() {
        return Err(Error::WeightMismatch {
            source_name: map.source.clone(),
            details: details.trim_end().to_string(),
        });
    }

    notes.splice(0..0, map.notes.iter().cloned());
    Ok(LoadReport {
        loaded,
        missing: missing.into_iter().map(|(n, _)| n).collect(),
        unused: unused.into_iter().map(|(n, _)| n).collect(),
        notes,
    })
}

/// Lines listed per kind of mismatch before the rest is summarised.
const MAX_LINES: usize = 16;

struct Loader<'a, B: Backend> {
    map: &'a mut TensorMap,
    device: &'a B::Device,
    loaded: usize,
    missing: Vec<(String, Vec<usize>)>,
    misshaped: Vec<String>,
    notes: Vec<String>,
}

impl<B: Backend> ParamVisitor<B> for Loader<'_, B> {
    fn visit<const D: usize>(
        &mut self,
        name: &str,
        layout: Layout,
        param: &mut Param<Tensor<B, D>>,
    ) {
        let mut want = param.lazy_shape().to_vec();
        if layout == Layout::Transposed {
            want.reverse();
        }
        let Some(mut t) = self.map.take(name) else {
            self.missing.push((name.to_string(), want));
            return;
        };

        if name.ends_with("pos_embed") && t.shape != want {
            if let Some(resized) = resize_grid(&t.shape, &want, &t.data) {
                self.notes
                    .push(format!("resized {name} from {:?} to {want:?}", t.shape));
                t.shape = want.clone();
                t.data = resized;
            }
        }
        if t.shape != want {
            self.misshaped
                .push(format!("{name}: model {want:?}, file {:?}", t.shape));
            return;
        }

        let tensor = Tensor::<B, D>::from_data(TensorData::new(t.data, t.shape), self.device);
        let tensor = match layout {
            Layout::Same => tensor,
            Layout::Transposed => tensor.transpose(),
        };
        let id = param.id;
        *param = param.clone().transform_for_load(tensor, id);
        self.loaded += 1;
    }
}

/// Resizes a `[1, 1 + g², d]` position table to `[1, 1 + h², d]`; `None` if the shapes are
/// not two square grids of the same width.
fn resize_grid(have: &[usize], want: &[usize], data: &[f32]) -> Option<Vec<f32>> {
    let grid = |n: usize| {
        let g = ((n.saturating_sub(1)) as f64).sqrt().round() as usize;
        (g * g + 1 == n).then_some(g)
    };
    match (have, want) {
        ([1, n_have, d], [1, n_want, d2]) if d == d2 => {
            let (g_have, g_want) = (grid(*n_have)?, grid(*n_want)?);
            Some(pos_embed::resize_pos_embed(data, *d, 1, g_have, g_want))
        }
        _ => None,
    }
}

/// Completes a preset's configuration from a checkpoint: the number of classes from
/// `head.weight` (none without a head) and the pooling from which final norm the file has
/// (`fc_norm` means GAP, `norm` alone means cls), as timm lays them out.
///
/// A `head.weight` without dimensions (not a timm head) counts as one class, so that the strict
/// load that follows names its shape instead of the head being silently dropped.
pub fn fit_head(config: VitConfig, map: &TensorMap) -> VitConfig {
    let n_classes = map
        .tensors
        .get("head.weight")
        .map_or(0, |t| t.shape.first().copied().unwrap_or(1));
    let pool = if map.tensors.contains_key("fc_norm.weight") {
        crate::model::Pool::Gap
    } else if map.tensors.contains_key("norm.weight") {
        crate::model::Pool::Cls
    } else {
        config.pool
    };
    config.with_n_classes(n_classes).with_pool(pool)
}

/// Class names stored in a checkpoint's metadata (`mimic.labels`, a JSON list), or
/// `class_0 .. class_{n-1}` when the file has none (e.g. a timm checkpoint).
pub fn labels_of(map: &TensorMap, n_classes: usize) -> Vec<String> {
    map.metadata
        .get(LABELS_KEY)
        .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
        .filter(|l| l.len() == n_classes)
        .unwrap_or_else(|| (0..n_classes).map(|i| format!("class_{i}")).collect())
}

/// Metadata key under which mimic checkpoints store their class names.
pub const LABELS_KEY: &str = "mimic.labels";
/// Metadata key under which mimic checkpoints store their model configuration (JSON).
pub const CONFIG_KEY: &str = "mimic.model";
