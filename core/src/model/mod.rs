//! The ViT encoder of MIMIC and its parts, with timm parameter names so that checkpoints map
//! 1:1 onto fields.
//!
//! Reference: A. Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021,
//! <https://arxiv.org/abs/2010.11929>; timm's `vision_transformer.py` for the layout.

mod attention;
mod block;
mod config;
mod drop_path;
mod patch_embed;
pub mod pos_embed;
mod precision;
mod vit;

pub use attention::{xavier_linear, Attention, AttentionConfig};
pub use block::{Block, BlockConfig, Mlp, MlpConfig};
pub use config::{Pool, VitConfig, PRESETS};
pub use drop_path::{with_drop_path_seed, DropPath};
pub use patch_embed::{PatchEmbed, PatchEmbedConfig};
pub use precision::Precision;
pub use vit::Vit;

/// LayerNorm epsilon of timm and MAE ViTs (burn's default is 1e-5).
pub const LN_EPS: f64 = 1e-6;

/// Forces burn's lazily initialised parameters to take their values now.
///
/// burn creates parameters lazily; a clone of a module taken before first use initialises
/// its own copy with different random values. Models built here are materialised at once,
/// so exports, clones and `valid()` copies of a fresh model all hold the same weights.
pub fn materialize<B: burn::tensor::backend::Backend, M: burn::module::Module<B>>(module: &M) {
    struct Touch;
    impl<B: burn::tensor::backend::Backend> burn::module::ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(
            &mut self,
            param: &burn::module::Param<burn::tensor::Tensor<B, D>>,
        ) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}
