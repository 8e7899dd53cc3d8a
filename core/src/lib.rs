//! mimic-core: the backend-generic heart of mimic, a Rust implementation of MIMIC
//! (masked-image pre-training of a vanilla ViT, then mix-supervised contrastive fine-tuning for
//! facial expression recognition).
//!
//! Everything here is generic over [`backend::Backend`]: burn's backend trait plus fused
//! LayerNorm, softmax and GELU; the concrete backend (CPU, wgpu, CUDA) is chosen by the
//! binaries. The crate holds no CLI and no
//! I/O policy: file-system readers sit behind the default `fs` feature so the model, the label
//! sets and the preprocessing also build for wasm32.
//!
//! - [`backend`]: the backend traits and the fused row operations (burn-flex kernels).
//! - [`model`]: the ViT encoder with timm parameter names, its presets, sin-cos position tables.
//! - [`weights`]: import of timm / MAE checkpoints with strict key verification, export to
//!   safetensors with timm names.
//! - [`preprocess`]: image to normalised tensor, as the model expects it.
//! - [`mix`]: Mixup / CutMix, soft labels and the positive-pair rule of MSCL.
//! - [`mae`]: masked-autoencoder pre-training (masking, decoder, norm-pix loss).
//! - [`loss`]: soft-target cross-entropy, SupCon and MSCL.
//! - [`train`]: the fine-tuning model and step, layer-decay optimiser, schedule, metrics.
//! - [`data`]: FER data sets, decoding, de-duplication, balanced sampling.
#![warn(missing_docs)]

pub mod augment;
pub mod backend;
pub mod data;
pub mod error;
pub mod loss;
pub mod mae;
pub mod mix;
pub mod model;
pub mod preprocess;
pub mod train;
pub mod weights;

pub use error::{Error, Result};
