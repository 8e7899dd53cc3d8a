//! The run directory: `config.json`, `metrics.jsonl`, checkpoints (`last`, `best`) and
//! `report.json`; plus checkpoint loading and evaluation shared by `finetune` and `eval`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::tensor::{Tensor, TensorData};
use mimic_core::augment::eval_view;
use mimic_core::backend::Backend;
use mimic_core::data::DecodedImage;
use mimic_core::model::{Vit, VitConfig};
use mimic_core::train::ConfusionMatrix;
use mimic_core::weights::{
    fit_head, labels_of, load_vit, save_safetensors, write_atomic, LoadPolicy, TensorMap,
    VisitParams, CONFIG_KEY, LABELS_KEY,
};
use serde::Serialize;

/// An open run directory.
pub struct RunDir {
    /// Its path.
    pub path: PathBuf,
    metrics: std::fs::File,
}

impl RunDir {
    /// Creates the directory (refusing one that already holds a run) and writes `config.json`.
    pub fn create(path: &Path, config: &impl Serialize) -> Result<Self> {
        if path.join("config.json").exists() {
            if !path.join("report.json").exists() && !path.join("resume.json").exists() {
                bail!(
                    "{} holds an interrupted run that stopped before its first resume point \
                     (config.json but no resume.json): delete the folder to start again, or \
                     choose another --out",
                    path.display()
                );
            }
            bail!(
                "{} already holds a run (config.json exists); choose another --out, or \
                 --resume it if it was interrupted",
                path.display()
            );
        }
        std::fs::create_dir_all(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        write_json(&path.join("config.json"), config)?;
        let metrics_path = path.join("metrics.jsonl");
        let metrics = std::fs::File::create(&metrics_path)
            .with_context(|| format!("cannot create {}", metrics_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            metrics,
        })
    }

    /// Re-opens the directory of an interrupted run for resuming: `metrics.jsonl` is cut back to
    /// `metrics_len` bytes (the lines written after the resume point) and appended to.
    pub fn reopen(path: &Path, metrics_len: u64) -> Result<Self> {
        let metrics_path = path.join("metrics.jsonl");
        let metrics = std::fs::OpenOptions::new()
            .append(true)
            .open(&metrics_path)
            .with_context(|| format!("cannot open {}", metrics_path.display()))?;
        metrics
            .set_len(metrics_len)
            .with_context(|| format!("cannot truncate {}", metrics_path.display()))?;
        Ok(Self {
            path: path.to_path_buf(),
            metrics,
        })
    }

    /// Bytes written to `metrics.jsonl` so far.
    pub fn metrics_len(&self) -> Result<u64> {
        Ok(self
            .metrics
            .metadata()
            .context("cannot read metrics.jsonl")?
            .len())
    }

    /// Appends one JSON line to `metrics.jsonl`.
    pub fn log(&mut self, line: serde_json::Value) -> Result<()> {
        writeln!(self.metrics, "{line}").context("cannot write metrics.jsonl")?;
        self.metrics.flush().context("cannot write metrics.jsonl")
    }

    /// Saves a checkpoint atomically as `<name>.safetensors` with `meta` as its metadata.
    pub fn save<B: Backend, M: VisitParams<B> + Clone>(
        &self,
        name: &str,
        model: &M,
        meta: &HashMap<String, String>,
    ) -> Result<PathBuf> {
        let path = self.path.join(format!("{name}.safetensors"));
        save_safetensors(model, meta, &path)
            .with_context(|| format!("cannot save checkpoint {}", path.display()))?;
        Ok(path)
    }
}

/// The error that stops a run at `step` on a non-finite loss or non-finite weights (`what`),
/// naming the checkpoint that is still good; nothing is saved after it.
pub fn non_finite(what: &str, step: usize, epoch: usize, last_good: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "non-finite {what} at step {step} (epoch {epoch}); stopped without saving. The last \
         good checkpoint is {}",
        last_good.display()
    )
}

/// Writes pretty JSON atomically.
pub fn write_json(path: &Path, value: &impl Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("plain data serialises");
    write_atomic(path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// What a mimic checkpoint records besides its tensors.
pub struct CheckpointMeta {
    /// Model configuration.
    pub model: VitConfig,
    /// Class names.
    pub labels: Vec<String>,
    /// Free-form extras (epoch, accuracy, ...).
    pub extra: HashMap<String, String>,
}

impl CheckpointMeta {
    /// The safetensors metadata: the extras plus the model configuration and class names.
    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = self.extra.clone();
        m.insert(
            CONFIG_KEY.into(),
            serde_json::to_string(&self.model).expect("config serialises"),
        );
        m.insert(
            LABELS_KEY.into(),
            serde_json::to_string(&self.labels).expect("labels serialise"),
        );
        m
    }
}

/// A classifier loaded for inference: the model, its class names and the input size.
pub struct Classifier<B: Backend> {
    /// The encoder with its head.
    pub model: Vit<B>,
    /// Class names.
    pub labels: Vec<String>,
}

/// Loads a classifier from our checkpoint (architecture from its metadata) or from a timm file
/// with `--model`. The projection head of our checkpoints is not needed and is ignored.
pub fn load_classifier<B: Backend>(
    weights: &Path,
    preset: Option<&str>,
    device: &B::Device,
) -> Result<Classifier<B>> {
    let map = TensorMap::read(weights)
        .with_context(|| format!("cannot read weights {}", weights.display()))?;
    let config = checkpoint_config(&map, weights, preset)?;
    if config.n_classes == 0 {
        bail!(
            "{}: the checkpoint has no classification head (head.weight)",
            weights.display()
        );
    }
    let labels = labels_of(&map, config.n_classes);
    let policy = LoadPolicy {
        allow_unused: vec!["proj_head.*".into()],
        ..LoadPolicy::strict()
    };
    let (model, _) = load_vit::<B>(&config, map, &policy, device)
        .with_context(|| format!("cannot load {}", weights.display()))?;
    Ok(Classifier { model, labels })
}

/// Predictions of `model` for `images` (whole image, resized: the `predict` preprocessing),
/// in batches of `batch`, into a confusion matrix against `labels`.
pub fn evaluate<B: Backend>(
    model: &Vit<B>,
    images: &[DecodedImage],
    labels: &[usize],
    batch: usize,
    device: &B::Device,
) -> ConfusionMatrix {
    let n_classes = model.config().n_classes;
    let size = model.config().img_size;
    let mut cm = ConfusionMatrix::new(n_classes);
    for (chunk, truth) in images.chunks(batch.max(1)).zip(labels.chunks(batch.max(1))) {
        let pixels: Vec<f32> = chunk.iter().flat_map(|img| eval_view(img, size)).collect();
        let x = Tensor::<B, 4>::from_data(
            TensorData::new(pixels, [chunk.len(), 3, size, size]),
            device,
        );
        let pred = model.forward(x).argmax(1).into_data();
        let pred: Vec<i64> = pred.convert::<i64>().to_vec().expect("integer predictions");
        for (&t, &p) in truth.iter().zip(&pred) {
            cm.add(t, p as usize);
        }
    }
    cm
}

/// A JSON summary of a confusion matrix with class names.
pub fn metrics_json(cm: &ConfusionMatrix, labels: &[String]) -> serde_json::Value {
    let per_class: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .zip(cm.per_class_accuracy())
        .map(|(l, a)| (l.clone(), serde_json::json!(a)))
        .collect();
    serde_json::json!({
        "images": cm.total(),
        "accuracy": cm.accuracy(),
        "mean_class_accuracy": cm.mean_class_accuracy(),
        "per_class_accuracy": per_class,
        "labels": labels,
        "confusion_matrix": cm.counts,
    })
}

/// The architecture of a checkpoint: from our metadata, or a preset (`--model`) completed by
/// the file's head and final norms.
pub fn checkpoint_config(
    map: &TensorMap,
    weights: &Path,
    preset: Option<&str>,
) -> Result<VitConfig> {
    Ok(match (preset, map.metadata.get(CONFIG_KEY)) {
        (Some(p), _) => fit_head(VitConfig::preset(p)?, map),
        (None, Some(json)) => serde_json::from_str::<VitConfig>(json)
            .with_context(|| format!("{}: bad {CONFIG_KEY} metadata", weights.display()))?,
        (None, None) => bail!(
            "{}: not a mimic checkpoint (no model configuration inside); pass --model <preset>",
            weights.display()
        ),
    })
}

/// Loads only the encoder of a checkpoint, for features: our fine-tuned checkpoints (their
/// head and projection head are left unused), our MAE checkpoints (`encoder.safetensors`, or
/// `full.safetensors` with its decoder left unused) and timm files with `--model`. The pooling is the checkpoint's own (GAP + `fc_norm`
/// for fine-tuned models, cls + `norm` for MAE encoders).
pub fn load_encoder<B: Backend>(
    weights: &Path,
    preset: Option<&str>,
    device: &B::Device,
) -> Result<Vit<B>> {
    let map = TensorMap::read(weights)
        .with_context(|| format!("cannot read weights {}", weights.display()))?;
    let config = checkpoint_config(&map, weights, preset)?;
    let policy = LoadPolicy {
        allow_unused: ["head.*", "proj_head.*", "decoder_*", "mask_token"]
            .map(String::from)
            .to_vec(),
        ..LoadPolicy::strict()
    };
    let (model, _) = load_vit::<B>(&config.with_n_classes(0), map, &policy, device)
        .with_context(|| format!("cannot load {}", weights.display()))?;
    Ok(model)
}

/// An `f32` as a JSON number with its shortest decimal form (`0.4`, where converting through
/// `f64` would write `0.4000000059604645`); reading it back as `f32` gives the same value.
pub fn json_f32(v: f32) -> serde_json::Value {
    v.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// [`json_f32`] of each value.
pub fn json_f32s(values: &[f32]) -> serde_json::Value {
    values.iter().map(|&v| json_f32(v)).collect()
}
