use std::collections::BTreeMap;

use safetensors::{Dtype, SafeTensors};

use crate::{Error, Result};

/// A tensor held on the host as f32 values, with the shape and dtype it had in its file.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Dimensions, outermost first, as stored (PyTorch layout).
    pub shape: Vec<usize>,
    /// Row-major values, converted to f32.
    pub data: Vec<f32>,
    /// The dtype in the file, e.g. `F32`, `F16`, `BF16`.
    pub dtype: String,
}

/// All tensors of a weight file by name, in name order, and where they came from.
#[derive(Debug, Clone, Default)]
pub struct TensorMap {
    /// Tensors by their (prefix-stripped) names.
    pub tensors: BTreeMap<String, HostTensor>,
    /// The file (or label) the tensors came from, for error messages.
    pub source: String,
    /// String metadata stored with the tensors (safetensors `__metadata__`).
    pub metadata: BTreeMap<String, String>,
    /// What was done to the names on reading, e.g. the top-level key that was unwrapped.
    pub notes: Vec<String>,
}

/// The top-level keys under which checkpoints commonly nest their state dict, tried in order
/// (MAE releases use `model`; timm training checkpoints `state_dict`).
const CONTAINER_KEYS: &[&str] = &["model", "state_dict", "module"];

impl TensorMap {
    /// Parses safetensors bytes. `source` names them in errors.
    pub fn from_safetensors_bytes(bytes: &[u8], source: &str) -> Result<Self> {
        let fail = |reason: String| Error::WeightFormat {
            path: source.to_string(),
            reason,
        };
        // The first 8 bytes give the header length; say plainly when the file cannot hold it.
        let Some(len_bytes) = bytes.first_chunk::<8>() else {
            return Err(fail(format!(
                "the file is {} bytes, too short for the 8-byte header length of a safetensors \
                 file",
                bytes.len()
            )));
        };
        let header_len = u64::from_le_bytes(*len_bytes);
        let rest = bytes.len() as u64 - 8;
        if header_len > rest {
            return Err(fail(format!(
                "the header length field says {header_len} bytes but only {rest} follow it \
                 (a truncated file, or not a safetensors file)"
            )));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| fail(format!("{e}")))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| fail(format!("{e}")))?;

        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = decode_le(view.dtype(), view.data()).ok_or_else(|| {
                fail(format!(
                    "tensor '{name}' has unsupported dtype {:?}",
                    view.dtype()
                ))
            })?;
            let dtype = format!("{:?}", view.dtype());
            tensors.insert(
                name,
                HostTensor {
                    shape: view.shape().to_vec(),
                    data,
                    dtype,
                },
            );
        }
        let metadata = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut map = TensorMap {
            tensors,
            source: source.to_string(),
            metadata,
            notes: vec![],
        };
        map.unwrap_container();
        match map.metadata.get(super::web::QUANT_KEY).map(String::as_str) {
            None => {}
            Some(super::web::QUANT_INT8_ROWS) => super::web::dequantize_rows(&mut map)?,
            Some(other) => {
                return Err(fail(format!(
                    "unknown weight encoding '{other}' ({} = {})",
                    super::web::QUANT_KEY,
                    super::web::QUANT_INT8_ROWS
                )))
            }
        }
        Ok(map)
    }

    /// Reads a PyTorch checkpoint file (zip or legacy pickle format).
    ///
    /// A malformed file that makes the pickle reader panic (burn-store 0.21 overflows on some
    /// storage sizes) is an error like any other: the panic is contained and not printed.
    #[cfg(feature = "fs")]
    pub fn read_pytorch(path: &std::path::Path) -> Result<Self> {
        let source = path.display().to_string();
        contain_panics(|| Self::read_pytorch_unguarded(path)).unwrap_or_else(|panic| {
            Err(Error::WeightFormat {
                path: source,
                reason: format!("malformed PyTorch file: the reader failed ({panic})"),
            })
        })
    }

    #[cfg(feature = "fs")]
    fn read_pytorch_unguarded(path: &std::path::Path) -> Result<Self> {
        use burn_store::pytorch::PytorchReader;
        let source = path.display().to_string();
        let fail = |reason: String| Error::WeightFormat {
            path: source.clone(),
            reason,
        };
        let reader = PytorchReader::new(path).map_err(|e| {
            let msg = e.to_string();
            if msg.contains("Unsupported Python type") {
                fail(format!(
                    "refused: the pickle references Python code ({msg}); only tensors and plain \
                     containers are read, nothing in the file is executed"
                ))
            } else {
                fail(msg)
            }
        })?;
        // The reader pads a tensor whose bytes are missing with zeros, and allocates whatever a
        // shape claims: refuse any tensor larger than all the tensor data the file holds.
        let data_bytes = match reader.metadata().total_data_size {
            Some(n) => n as u64,
            None => std::fs::metadata(path).map_or(u64::MAX, |m| m.len()),
        };
        for (name, snap) in reader.tensors() {
            let dims: &[usize] = &snap.shape;
            let needed = dims
                .iter()
                .try_fold(snap.dtype.size() as u64, |n, &d| n.checked_mul(d as u64));
            match needed {
                Some(n) if n <= data_bytes => {}
                _ => {
                    return Err(fail(format!(
                        "tensor '{name}' of shape {dims:?} ({:?}) needs {} bytes but the file \
                         holds only {data_bytes} bytes of tensor data (truncated or inconsistent)",
                        snap.dtype,
                        needed.map_or("more than 2^64".to_string(), |n| n.to_string())
                    )))
                }
            }
        }
        Self::from_snapshots(reader.into_tensors(), &source)
    }

    /// The string metadata of a safetensors file, read from its header alone (no tensor data
    /// is read). PyTorch files carry none, and anything that is not a well-formed safetensors
    /// header gives an empty map: [`Self::read`] reports what is wrong with such a file.
    #[cfg(feature = "fs")]
    pub fn read_metadata(path: &std::path::Path) -> Result<BTreeMap<String, String>> {
        use std::io::Read;
        let io = |err| Error::Io {
            path: path.to_path_buf(),
            err,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
        let mut len = [0u8; 8];
        if file.read_exact(&mut len).is_err() {
            return Ok(BTreeMap::new());
        }
        let header_len = u64::from_le_bytes(len);
        if header_len < 2 || header_len > size - 8 {
            return Ok(BTreeMap::new());
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header).map_err(io)?;
        let metadata = serde_json::from_slice::<serde_json::Value>(&header)
            .ok()
            .and_then(|v| v.get("__metadata__").cloned())
            .and_then(|m| serde_json::from_value::<BTreeMap<String, String>>(m).ok());
        Ok(metadata.unwrap_or_default())
    }

    /// Reads a `.safetensors`, `.pth`, `.pt` or `.bin` file (chosen by content, not by name).
    #[cfg(feature = "fs")]
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|err| Error::Io {
            path: path.to_path_buf(),
            err,
        })?;
        let source = path.display().to_string();
        if bytes.is_empty() {
            return Err(Error::WeightFormat {
                path: source,
                reason: "the file is empty".into(),
            });
        }
        // Safetensors start with an 8-byte little-endian header length and a JSON header; its
        // first byte may well be 0x80 or "PK", so it is recognised first. PyTorch files are zip
        // archives (PK..) or legacy pickles (0x80 protocol byte).
        if !looks_like_safetensors(&bytes) && (bytes.starts_with(b"PK") || bytes[0] == 0x80) {
            Self::read_pytorch(path)
        } else {
            Self::from_safetensors_bytes(&bytes, &source)
        }
    }

    #[cfg(feature = "fs")]
    fn from_snapshots(
        snapshots: std::collections::HashMap<String, burn_store::TensorSnapshot>,
        source: &str,
    ) -> Result<Self> {
        use burn::tensor::DType;
        let mut tensors = BTreeMap::new();
        for (name, snap) in snapshots {
            let fail = |reason: String| Error::WeightFormat {
                path: source.to_string(),
                reason: format!("tensor '{name}': {reason}"),
            };
            let dtype = format!("{:?}", snap.dtype);
            let data = snap.to_data().map_err(|e| fail(format!("{e:?}")))?;
            let data = match data.dtype {
                DType::F32 => data,
                DType::F64 | DType::F16 | DType::BF16 => data.convert::<f32>(),
                // Integer buffers (e.g. BatchNorm counters) are kept as values too.
                DType::I64 | DType::I32 | DType::I16 | DType::I8 | DType::U8 | DType::Bool(_) => {
                    data.convert::<f32>()
                }
                other => return Err(fail(format!("unsupported dtype {other:?}"))),
            };
            let shape = data.shape.to_vec();
            let data = data.to_vec::<f32>().map_err(|e| fail(format!("{e:?}")))?;
            tensors.insert(name, HostTensor { shape, data, dtype });
        }
        let mut map = TensorMap {
            tensors,
            source: source.to_string(),
            metadata: BTreeMap::new(),
            notes: vec![],
        };
        map.unwrap_container();
        Ok(map)
    }

    /// When every tensor sits under one container key (`model.`, `state_dict.`, `module.`)
    /// or such a key holds the model next to other state (optimizer, EMA), keep only that
    /// container and strip its prefix, noting what was dropped.
    fn unwrap_container(&mut self) {
        let looks_like_model =
            |k: &str| k.starts_with("patch_embed.") || k.starts_with("blocks.") || k == "cls_token";
        if self.tensors.keys().any(|k| looks_like_model(k)) {
            return;
        }
        for key in CONTAINER_KEYS {
            let prefix = format!("{key}.");
            if !self.tensors.keys().any(|k| k.starts_with(&prefix)) {
                continue;
            }
            let all = std::mem::take(&mut self.tensors);
            let total = all.len();
            for (name, t) in all {
                if let Some(rest) = name.strip_prefix(&prefix) {
                    self.tensors.insert(rest.to_string(), t);
                }
            }
            let dropped = total - self.tensors.len();
            let mut note = format!(
                "using the {} tensors under top-level key '{key}'",
                self.tensors.len()
            );
            if dropped > 0 {
                note.push_str(&format!(", ignoring {dropped} tensors under other keys"));
            }
            self.notes.push(note);
            return;
        }
    }

    /// Removes and returns a tensor.
    pub fn take(&mut self, name: &str) -> Option<HostTensor> {
        self.tensors.remove(name)
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// True when the map holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Runs `f`, turning a panic inside it into `Err` with the panic's message, which is not
/// printed. For third-party parsers fed untrusted files.
///
/// Installs, once, a panic hook that stays silent while this thread is inside `f` and hands
/// every other panic to the hook that was there before.
#[cfg(feature = "fs")]
fn contain_panics<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    use std::cell::Cell;
    thread_local! {
        static CONTAINED: Cell<bool> = const { Cell::new(false) };
    }
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !CONTAINED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = CONTAINED.with(|c| c.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    CONTAINED.with(|c| c.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into())
    })
}

/// True when `bytes` begin as a safetensors file does: a header length that fits in the file,
/// then the `{` that opens the JSON header.
#[cfg(feature = "fs")]
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    match bytes.first_chunk::<8>() {
        Some(len) => {
            let header_len = u64::from_le_bytes(*len);
            header_len >= 2 && header_len <= bytes.len() as u64 - 8 && bytes[8] == b'{'
        }
        None => false,
    }
}

/// Decodes little-endian float data of a safetensors dtype into f32.
fn decode_le(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    let v = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("chunks of 8")) as f32)
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::I64 => bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("chunks of 8")) as f32)
            .collect(),
        Dtype::I32 => bytes
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        Dtype::U8 => bytes.iter().map(|&b| b as f32).collect(),
        Dtype::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        _ => return None,
    };
    Some(v)
}
