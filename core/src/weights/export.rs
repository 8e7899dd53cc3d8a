use std::collections::HashMap;
use std::path::Path;

use crate::backend::Backend;
use burn::module::Param;
use burn::tensor::Tensor;
use safetensors::tensor::{Dtype, TensorView};

use super::visit::{Layout, ParamVisitor, VisitParams};
use crate::{Error, Result};

struct Collect(Vec<(String, Vec<usize>, Vec<u8>)>);

impl<B: Backend> ParamVisitor<B> for Collect {
    fn visit<const D: usize>(&mut self, name: &str, layout: Layout, p: &mut Param<Tensor<B, D>>) {
        let mut tensor = p.val();
        if layout == Layout::Transposed {
            tensor = tensor.transpose();
        }
        let data = tensor.into_data().convert::<f32>();
        let shape = data.shape.to_vec();
        let values = data.to_vec::<f32>().expect("converted to f32 above");
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.0.push((name.to_string(), shape, bytes));
    }
}

/// Serialises a module to safetensors bytes with timm names (PyTorch layouts, f32), so the
/// file loads back into timm with `load_state_dict`. `metadata` goes into `__metadata__`.
pub fn export_safetensors<B: Backend, M: VisitParams<B> + Clone>(
    module: &M,
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let mut collect = Collect(Vec::new());
    module.clone().visit_params("", &mut collect);
    let views: Vec<(String, TensorView<'_>)> = collect
        .0
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .expect("shape and byte length come from the same tensor");
            (name.clone(), view)
        })
        .collect();
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    let bytes = safetensors::serialize(views, meta).map_err(|e| Error::WeightFormat {
        path: "<export>".into(),
        reason: format!("cannot serialise: {e}"),
    })?;
    Ok(sorted_header(bytes))
}

/// The same file with its JSON header's keys in sorted order. safetensors writes the metadata
/// from a `HashMap`, whose order changes from one write to the next; sorted, equal weights and
/// metadata always give equal bytes. The header keeps its length (same content, re-padded with
/// spaces), so the data offsets stay valid; anything unexpected returns the input unchanged.
pub(crate) fn sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes
        .first_chunk::<8>()
        .map(|b| u64::from_le_bytes(*b) as usize)
    else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else {
        return bytes;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(header) else {
        return bytes;
    };
    let Ok(mut sorted) = serde_json::to_vec(&sort_keys(value)) else {
        return bytes;
    };
    if sorted.len() > len {
        return bytes;
    }
    sorted.resize(len, b' ');
    let mut out = bytes;
    out[8..8 + len].copy_from_slice(&sorted);
    out
}

/// `value` with the keys of every object in sorted order, whatever map serde_json was built with.
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let sorted: std::collections::BTreeMap<String, serde_json::Value> =
                map.into_iter().map(|(k, v)| (k, sort_keys(v))).collect();
            serde_json::Value::Object(sorted.into_iter().collect())
        }
        other => other,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then
/// renamed over the target, so a crash never leaves a half-written file under that name.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |err| Error::Io {
        path: path.to_path_buf(),
        err,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    {
        // Closed at the end of this block, before the rename.
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// Exports a module with [`export_safetensors`] and writes it atomically to `path`.
pub fn save_safetensors<B: Backend, M: VisitParams<B> + Clone>(
    module: &M,
    metadata: &HashMap<String, String>,
    path: &Path,
) -> Result<()> {
    write_atomic(path, &export_safetensors(module, metadata)?)
}
