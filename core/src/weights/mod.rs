//! Weight files: reading timm / MAE checkpoints (`.safetensors`, PyTorch `.pth`) into a
//! name -> tensor map, loading that map into a model with strict verification, and exporting
//! models to safetensors with timm names.
//!
//! PyTorch files are read with burn-store's pickle reader, which rebuilds tensors and plain
//! containers only: a pickle that references any other Python global is refused, never run.

mod export;
mod load;
mod map;
mod visit;
mod web;

pub use export::{export_safetensors, save_safetensors, write_atomic};
pub use load::{
    fit_head, labels_of, load_into, load_vit, LoadPolicy, LoadReport, CONFIG_KEY, LABELS_KEY,
};
pub use map::{HostTensor, TensorMap};
pub use visit::{
    assign_stable_ids, first_non_finite, join, param_shapes, Layout, ParamVisitor, VisitParams,
};
pub use web::{
    compact_safetensors, fnv1a64, WebDtype, WebManifest, INT8_MIN_VALUES, MANIFEST_FORMAT,
    QUANT_INT8_ROWS, QUANT_KEY, SCALE_SUFFIX,
};
