//! Compact weights for the page: a classifier's tensors re-encoded as f16 (or int8 with one
//! f32 scale per output row) in a safetensors file, and the small JSON manifest beside it that
//! the page reads first. Reading goes through [`TensorMap::from_safetensors_bytes`], which
//! turns both encodings back into f32.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::{Dtype, TensorView};
use serde::{Deserialize, Serialize};

use super::map::TensorMap;
use super::{CONFIG_KEY, LABELS_KEY};
use crate::model::VitConfig;
use crate::{Error, Result};

/// Metadata key naming how a compact file's tensors are encoded.
pub const QUANT_KEY: &str = "mimic.quant";
/// [`QUANT_KEY`] value of a file whose large matrices are int8 with per-row scales.
pub const QUANT_INT8_ROWS: &str = "int8-rows";
/// Name suffix of the f32 per-row scales of an int8 tensor.
pub const SCALE_SUFFIX: &str = ".int8_scale";
/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// How [`compact_safetensors`] encodes the tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebDtype {
    /// Every tensor as IEEE half precision.
    F16,
    /// Matrices (2-D and up, at least [`INT8_MIN_VALUES`] values) as int8 with one symmetric f32
    /// scale per output row; everything else (biases, norms, positions) as f16.
    Int8,
}

/// Tensors smaller than this stay f16 under [`WebDtype::Int8`]: their bytes do not matter and
/// their values (norm gains, biases) are the most sensitive to rounding.
pub const INT8_MIN_VALUES: usize = 1024;

/// What the page needs to know before it downloads the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebManifest {
    /// [`MANIFEST_FORMAT`].
    pub format: u32,
    /// The architecture (the same JSON as the checkpoint's `mimic.model` metadata).
    pub model: VitConfig,
    /// Class names, in logit order.
    pub labels: Vec<String>,
    /// How the weights file is encoded.
    pub dtype: WebDtype,
    /// The weights file, relative to the manifest.
    pub weights: String,
    /// Its size in bytes.
    pub weights_bytes: u64,
    /// FNV-1a 64 of its bytes, hex: the page checks it and uses it as the cache key.
    pub weights_fnv64: String,
    /// The accuracy the training run reported on its test split, when known.
    pub test_accuracy: Option<f64>,
    /// Where that accuracy comes from (data set and split), when known.
    pub test_split: Option<String>,
    /// The checkpoint this was exported from (file name only).
    pub source: String,
}

impl WebManifest {
    /// Parses a manifest, naming `source` in errors.
    pub fn from_json(json: &str, source: &str) -> Result<Self> {
        let manifest: Self = serde_json::from_str(json).map_err(|e| Error::WeightFormat {
            path: source.to_string(),
            reason: format!("not a mimic web manifest: {e}"),
        })?;
        let fail = |reason: String| Error::WeightFormat {
            path: source.to_string(),
            reason,
        };
        if manifest.format != MANIFEST_FORMAT {
            return Err(fail(format!(
                "manifest format {} (this page reads format {MANIFEST_FORMAT})",
                manifest.format
            )));
        }
        manifest
            .model
            .validate()
            .map_err(|e| fail(format!("the model configuration is impossible: {e}")))?;
        if manifest.labels.len() != manifest.model.n_classes {
            return Err(fail(format!(
                "the manifest lists {} class names for a model with {} classes",
                manifest.labels.len(),
                manifest.model.n_classes
            )));
        }
        if let Some(a) = manifest.test_accuracy.filter(|a| !(0.0..=1.0).contains(a)) {
            return Err(fail(format!(
                "test_accuracy {a} is not a fraction in [0, 1]"
            )));
        }
        Ok(manifest)
    }

    /// Checks downloaded weight bytes against the manifest's size and checksum.
    pub fn verify(&self, bytes: &[u8]) -> Result<()> {
        let fnv = format!("{:016x}", fnv1a64(bytes));
        if bytes.len() as u64 != self.weights_bytes || fnv != self.weights_fnv64 {
            return Err(Error::WeightFormat {
                path: self.weights.clone(),
                reason: format!(
                    "got {} bytes with checksum {fnv}; the manifest expects {} bytes with \
                     checksum {} (a stale or damaged download)",
                    bytes.len(),
                    self.weights_bytes,
                    self.weights_fnv64
                ),
            });
        }
        Ok(())
    }
}

/// FNV-1a, 64 bit: a cheap, stable checksum for cache keys and download checks (not a
/// cryptographic hash).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    crate::train::fnv1a(bytes)
}

/// Re-encodes the tensors of `map` whose names pass `keep`, with `dtype`; the file carries the
/// model configuration and labels (`config`, `labels`) as metadata, like a checkpoint.
pub fn compact_safetensors(
    map: &TensorMap,
    keep: impl Fn(&str) -> bool,
    dtype: WebDtype,
    config: &VitConfig,
    labels: &[String],
) -> Result<Vec<u8>> {
    let fail = |reason: String| Error::WeightFormat {
        path: map.source.clone(),
        reason,
    };
    let mut encoded: BTreeMap<String, (Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (name, t) in map.tensors.iter().filter(|(name, _)| keep(name)) {
        if let Some(bad) = t.data.iter().position(|v| !v.is_finite()) {
            return Err(fail(format!(
                "tensor '{name}' holds a non-finite value at index {bad}; refusing to export it"
            )));
        }
        let rows = t.shape.first().copied().unwrap_or(1).max(1);
        if dtype == WebDtype::Int8 && t.shape.len() >= 2 && t.data.len() >= INT8_MIN_VALUES {
            let (values, scales) = quantize_rows(&t.data, rows);
            let bytes = values.iter().map(|&v| v as u8).collect();
            encoded.insert(name.clone(), (Dtype::I8, t.shape.clone(), bytes));
            let scale_bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
            encoded.insert(
                format!("{name}{SCALE_SUFFIX}"),
                (Dtype::F32, vec![rows], scale_bytes),
            );
        } else {
            let bytes = t
                .data
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect();
            encoded.insert(name.clone(), (Dtype::F16, t.shape.clone(), bytes));
        }
    }
    if encoded.is_empty() {
        return Err(fail("no tensors left to export".into()));
    }
    let views = encoded
        .iter()
        .map(|(name, (dt, shape, bytes))| {
            let view = TensorView::new(*dt, shape.clone(), bytes)
                .map_err(|e| fail(format!("tensor '{name}': {e}")))?;
            Ok((name.clone(), view))
        })
        .collect::<Result<Vec<_>>>()?;
    let config_json =
        serde_json::to_string(config).map_err(|e| fail(format!("model configuration: {e}")))?;
    let labels_json =
        serde_json::to_string(labels).map_err(|e| fail(format!("class names: {e}")))?;
    let mut metadata = HashMap::from([
        (CONFIG_KEY.to_string(), config_json),
        (LABELS_KEY.to_string(), labels_json),
    ]);
    if dtype == WebDtype::Int8 {
        metadata.insert(QUANT_KEY.into(), QUANT_INT8_ROWS.into());
    }
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| fail(format!("cannot serialise: {e}")))?;
    Ok(super::export::sorted_header(bytes))
}

/// Symmetric int8 per row: `data` as `rows` equal rows, each scaled so its largest magnitude
/// maps to 127. An all-zero row gets scale 0 (and stays zero).
fn quantize_rows(data: &[f32], rows: usize) -> (Vec<i8>, Vec<f32>) {
    let cols = data.len() / rows;
    let mut values = Vec::with_capacity(data.len());
    let mut scales = Vec::with_capacity(rows);
    for row in data.chunks(cols.max(1)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = max / 127.0;
        scales.push(scale);
        values.extend(row.iter().map(|&v| {
            if scale == 0.0 {
                0
            } else {
                (v / scale).round().clamp(-127.0, 127.0) as i8
            }
        }));
    }
    (values, scales)
}

/// Undoes the int8 encoding in place: every tensor `X` with a companion `X.int8_scale` is
/// multiplied row by row and the companion removed. Called by the safetensors reader when the
/// file's [`QUANT_KEY`] says so.
pub(crate) fn dequantize_rows(map: &mut TensorMap) -> Result<()> {
    let scale_names: Vec<String> = map
        .tensors
        .keys()
        .filter(|n| n.ends_with(SCALE_SUFFIX))
        .cloned()
        .collect();
    for scale_name in scale_names {
        let name = scale_name.trim_end_matches(SCALE_SUFFIX).to_string();
        let scales = map.tensors.remove(&scale_name).expect("listed above");
        let fail = |reason: String| Error::WeightFormat {
            path: map.source.clone(),
            reason: format!("int8 tensor '{name}': {reason}"),
        };
        let Some(t) = map.tensors.get_mut(&name) else {
            return Err(fail(format!("'{scale_name}' has no tensor to scale")));
        };
        let rows = scales.data.len();
        if t.dtype != "I8" || rows == 0 || t.shape.first() != Some(&rows) {
            return Err(fail(format!(
                "{} scales for a {} tensor of shape {:?}",
                rows, t.dtype, t.shape
            )));
        }
        let cols = t.data.len() / rows;
        for (row, &s) in t.data.chunks_mut(cols.max(1)).zip(&scales.data) {
            row.iter_mut().for_each(|v| *v *= s);
        }
        t.dtype = "I8 (dequantised)".into();
    }
    if let Some((name, _)) = map.tensors.iter().find(|(_, t)| t.dtype == "I8") {
        return Err(Error::WeightFormat {
            path: map.source.clone(),
            reason: format!("int8 tensor '{name}' has no '{name}{SCALE_SUFFIX}' scales"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::HostTensor;

    fn toy_map() -> TensorMap {
        let mut map = TensorMap {
            source: "toy".into(),
            ..Default::default()
        };
        let big: Vec<f32> = (0..64 * 32)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        let insert = |map: &mut TensorMap, name: &str, shape: Vec<usize>, data: Vec<f32>| {
            map.tensors.insert(
                name.into(),
                HostTensor {
                    shape,
                    data,
                    dtype: "F32".into(),
                },
            );
        };
        insert(&mut map, "blocks.0.mlp.fc1.weight", vec![64, 32], big);
        insert(&mut map, "norm.weight", vec![4], vec![1.0, 0.5, -0.25, 3.0]);
        insert(&mut map, "proj_head.weight", vec![2, 2], vec![1.0; 4]);
        map
    }

    fn config() -> VitConfig {
        VitConfig::preset("vit_toy_patch8_32").unwrap()
    }

    #[test]
    fn f16_and_int8_round_trip_within_their_precision() {
        let map = toy_map();
        let labels = vec!["a".to_string(), "b".to_string()];
        let keep = |n: &str| !n.starts_with("proj_head.");
        for (dtype, tol) in [(WebDtype::F16, 1e-3), (WebDtype::Int8, 0.5 / 127.0 + 1e-3)] {
            let bytes = compact_safetensors(&map, keep, dtype, &config(), &labels).unwrap();
            let back = TensorMap::from_safetensors_bytes(&bytes, "compact").unwrap();
            let names: Vec<&str> = back.tensors.keys().map(String::as_str).collect();
            assert_eq!(
                names,
                ["blocks.0.mlp.fc1.weight", "norm.weight"],
                "{dtype:?}"
            );
            for (name, t) in &back.tensors {
                let want = &map.tensors[name];
                assert_eq!(t.shape, want.shape);
                // Relative to each row's largest magnitude (int8) or to the value (f16).
                let cols = want.data.len() / want.shape[0];
                for (row_got, row_want) in t.data.chunks(cols).zip(want.data.chunks(cols)) {
                    let max = row_want.iter().fold(0f32, |m, v| m.max(v.abs()));
                    for (g, w) in row_got.iter().zip(row_want) {
                        assert!(
                            (g - w).abs() <= tol * max.max(w.abs()),
                            "{name}: {g} vs {w}"
                        );
                    }
                }
            }
            assert_eq!(back.metadata[LABELS_KEY], r#"["a","b"]"#);
            let int8 = back.metadata.get(QUANT_KEY).map(String::as_str);
            assert_eq!(int8, (dtype == WebDtype::Int8).then_some(QUANT_INT8_ROWS));
        }
        let f16 = compact_safetensors(&map, keep, WebDtype::F16, &config(), &labels).unwrap();
        let int8 = compact_safetensors(&map, keep, WebDtype::Int8, &config(), &labels).unwrap();
        // Half the bytes for the matrix, plus its scales and the header.
        assert!(
            int8.len() < f16.len() * 7 / 10,
            "{} vs {}",
            int8.len(),
            f16.len()
        );
    }

    #[test]
    fn missing_scales_and_non_finite_values_are_errors() {
        let mut map = toy_map();
        let labels = vec!["a".to_string()];
        let bytes =
            compact_safetensors(&map, |_| true, WebDtype::Int8, &config(), &labels).unwrap();
        let mut back = TensorMap::from_safetensors_bytes(&bytes, "x").unwrap();
        // Re-encode without the scales, claiming int8: the reader refuses it.
        back.tensors.clear();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let kept: Vec<(String, TensorView<'_>)> = st
            .tensors()
            .into_iter()
            .filter(|(n, _)| !n.ends_with(SCALE_SUFFIX))
            .collect();
        let meta = HashMap::from([(QUANT_KEY.to_string(), QUANT_INT8_ROWS.to_string())]);
        let stripped = safetensors::serialize(kept, Some(meta)).unwrap();
        let err = TensorMap::from_safetensors_bytes(&stripped, "stripped.safetensors")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("stripped.safetensors") && err.contains("no '"),
            "{err}"
        );

        map.tensors.get_mut("norm.weight").unwrap().data[2] = f32::NAN;
        let err = compact_safetensors(&map, |_| true, WebDtype::F16, &config(), &labels)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("norm.weight") && err.contains("index 2"),
            "{err}"
        );
    }

    #[test]
    fn manifest_checks_format_size_and_checksum() {
        let manifest = WebManifest {
            format: MANIFEST_FORMAT,
            model: VitConfig {
                n_classes: 5,
                ..config()
            },
            labels: (0..5).map(|i| format!("c{i}")).collect(),
            dtype: WebDtype::F16,
            weights: "model.safetensors".into(),
            weights_bytes: 3,
            weights_fnv64: format!("{:016x}", fnv1a64(b"abc")),
            test_accuracy: Some(0.5),
            test_split: Some("ferplus test".into()),
            source: "best.safetensors".into(),
        };
        let json = serde_json::to_string(&manifest).unwrap();
        let back = WebManifest::from_json(&json, "m.json").unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        manifest.verify(b"abc").unwrap();
        let err = manifest.verify(b"abd").unwrap_err().to_string();
        assert!(
            err.contains("model.safetensors") && err.contains("stale"),
            "{err}"
        );
        let future = json.replace("\"format\":1", "\"format\":2");
        let err = WebManifest::from_json(&future, "m.json")
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.json") && err.contains("format 2"), "{err}");
        let err = WebManifest::from_json("{}", "m.json")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.json") && err.contains("not a mimic web manifest"),
            "{err}"
        );

        // Values that cannot describe the weights are refused here, naming the manifest.
        let mut few_labels = manifest.clone();
        few_labels.labels.pop();
        let mut bad_patch = manifest.clone();
        bad_patch.model.patch_size = 7;
        let mut bad_accuracy = manifest.clone();
        bad_accuracy.test_accuracy = Some(2.5);
        for (bad, want) in [
            (few_labels, "4 class names for a model with 5 classes"),
            (bad_patch, "patch size 7 must divide image size 32"),
            (bad_accuracy, "test_accuracy 2.5 is not a fraction"),
        ] {
            let json = serde_json::to_string(&bad).unwrap();
            let err = WebManifest::from_json(&json, "m.json")
                .unwrap_err()
                .to_string();
            assert!(err.contains("m.json") && err.contains(want), "{err}");
        }
    }
}
