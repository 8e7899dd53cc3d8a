use crate::backend::{gelu, layer_norm_rows, linear_gelu_rows, linear_rows, Backend};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::tensor::Tensor;

use super::attention::xavier_linear;
use super::{Attention, AttentionConfig, DropPath, Precision, LN_EPS};

/// Configuration of [`Mlp`].
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input and output width.
    pub d_model: usize,
    /// Hidden width (4 x d_model in ViTs).
    pub d_hidden: usize,
}

/// The transformer MLP: `fc2(gelu(fc1(x)))` with the exact (erf) GELU, as timm.
#[derive(Module, Debug)]
pub struct Mlp<B: Backend> {
    /// `d_model -> d_hidden`.
    pub fc1: Linear<B>,
    /// `d_hidden -> d_model`.
    pub fc2: Linear<B>,
    /// Number format of the products (a run-time setting, not saved).
    #[module(skip)]
    pub precision: Precision,
}

impl MlpConfig {
    /// Builds the MLP with MAE's init.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Mlp<B> {
        Mlp {
            fc1: xavier_linear(self.d_model, self.d_hidden, device),
            fc2: xavier_linear(self.d_hidden, self.d_model, device),
            precision: Precision::F32,
        }
    }
}

impl<B: Backend> Mlp<B> {
    /// # Shapes
    /// - x: `[batch, n_tokens, d_model]` -> `[batch, n_tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, n_tokens, d_model] = x.dims();
        self.forward_rows(x.reshape([batch * n_tokens, d_model]))
            .reshape([batch, n_tokens, d_model])
    }

    /// [`Self::forward`] on tokens flattened to rows.
    ///
    /// # Shapes
    /// - rows: `[n_rows, d_model]` -> `[n_rows, d_model]`
    pub(crate) fn forward_rows(&self, rows: Tensor<B, 2>) -> Tensor<B, 2> {
        match (self.precision, &self.fc1.bias, &self.fc2.bias) {
            // Each layer one operation: the product with its bias (and GELU) applied in the
            // same pass (see `crate::backend::Backend::linear_gelu_rows`).
            (Precision::F32, Some(b1), Some(b2)) => linear_rows(
                linear_gelu_rows(rows, self.fc1.weight.val(), b1.val()),
                self.fc2.weight.val(),
                b2.val(),
            ),
            (p, _, _) => p.apply(&self.fc2, gelu(p.apply(&self.fc1, rows))),
        }
    }
}

/// Configuration of [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    /// Token width.
    pub d_model: usize,
    /// Attention heads.
    pub n_heads: usize,
    /// MLP hidden width.
    pub d_hidden: usize,
    /// Stochastic depth rate of this block. Default: 0.0.
    #[config(default = 0.0)]
    pub drop_path: f64,
}

/// A pre-norm transformer block:
/// `x + DropPath(Attn(LN(x)))`, then `x + DropPath(MLP(LN(x)))`, LayerNorm eps 1e-6.
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    /// Norm before attention.
    pub norm1: LayerNorm<B>,
    /// Self-attention.
    pub attn: Attention<B>,
    /// Norm before the MLP.
    pub norm2: LayerNorm<B>,
    /// Feed-forward network.
    pub mlp: Mlp<B>,
    drop_path: DropPath,
}

impl BlockConfig {
    /// Builds the block with MAE's init.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let norm = || {
            LayerNormConfig::new(self.d_model)
                .with_epsilon(LN_EPS)
                .init(device)
        };
        Block {
            norm1: norm(),
            attn: AttentionConfig::new(self.d_model, self.n_heads).init(device),
            norm2: norm(),
            mlp: MlpConfig::new(self.d_model, self.d_hidden).init(device),
            drop_path: DropPath {
                prob: self.drop_path,
            },
        }
    }
}

impl<B: Backend> Block<B> {
    /// Sets the number format of the block's matrix products.
    pub fn set_precision(&mut self, precision: Precision) {
        self.attn.precision = precision;
        self.mlp.precision = precision;
    }

    /// # Shapes
    /// - x: `[batch, n_tokens, d_model]` -> `[batch, n_tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, n_tokens, d_model] = x.dims();

        // NOTE: the block works on tokens flattened to rows. On CPU backends, linear layers,
        // LayerNorm and their backward passes are much faster on 2-D tensors: one large
        // matmul instead of one per image, no summing of per-image weight gradients, and
        // broadcasts over rows instead of strided walks.
        let x = x.reshape([batch * n_tokens, d_model]);
        let branch = |y: Tensor<B, 2>| {
            self.drop_path
                .forward(y.reshape([batch, n_tokens, d_model]))
                .reshape([batch * n_tokens, d_model])
        };

        let x = x.clone() + branch(self.attn.forward_rows(norm_rows(&self.norm1, x), batch));
        let x = x.clone() + branch(self.mlp.forward_rows(norm_rows(&self.norm2, x)));
        x.reshape([batch, n_tokens, d_model])
    }
}

/// A block's LayerNorm (built with [`LN_EPS`]) on rows, as one fused operation
/// ([`layer_norm_rows`]).
fn norm_rows<B: Backend>(norm: &LayerNorm<B>, rows: Tensor<B, 2>) -> Tensor<B, 2> {
    match &norm.beta {
        Some(beta) => layer_norm_rows(rows, norm.gamma.val(), beta.val(), LN_EPS),
        None => norm.forward(rows),
    }
}
