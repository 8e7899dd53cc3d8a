use crate::backend::{
    attention_rows, linear_rows, merge_heads, softmax_rows, split_heads, Backend,
};
use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::Tensor;

use super::Precision;

/// Configuration of [`Attention`].
#[derive(Config, Debug)]
pub struct AttentionConfig {
    /// Token width.
    pub d_model: usize,
    /// Heads; each gets `d_model / n_heads` channels.
    pub n_heads: usize,
}

/// Multi-head self-attention with timm's fused `qkv` projection: the three contiguous thirds
/// of its output are q, k and v, each split into heads of `d_head` contiguous channels, and
/// scores are scaled by `d_head^-0.5`. No attention dropout (burn's MHA defaults to 0.1).
#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    /// Fused q, k, v projection `d_model -> 3 * d_model`.
    pub qkv: Linear<B>,
    /// Output projection.
    pub proj: Linear<B>,
    n_heads: usize,
    /// Number format of the products (a run-time setting, not saved).
    #[module(skip)]
    pub precision: Precision,
}

/// A linear layer with MAE's init: Xavier-uniform weights, zero biases.
pub fn xavier_linear<B: Backend>(d_in: usize, d_out: usize, device: &B::Device) -> Linear<B> {
    LinearConfig::new(d_in, d_out)
        .with_initializer(Initializer::XavierUniform { gain: 1.0 })
        .init(device)
        .no_bias_init(device)
}

trait ZeroBias<B: Backend> {
    fn no_bias_init(self, device: &B::Device) -> Self;
}

impl<B: Backend> ZeroBias<B> for Linear<B> {
    /// burn initialises biases with the weight's initializer; MAE and timm start them at zero.
    fn no_bias_init(mut self, device: &B::Device) -> Self {
        if let Some(bias) = &self.bias {
            let [d_out] = bias.dims();
            self.bias = Some(burn::module::Param::from_tensor(Tensor::zeros(
                [d_out],
                device,
            )));
        }
        self
    }
}

impl AttentionConfig {
    /// Builds the layer with MAE's init.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Attention<B> {
        Attention {
            qkv: xavier_linear(self.d_model, 3 * self.d_model, device),
            proj: xavier_linear(self.d_model, self.d_model, device),
            n_heads: self.n_heads,
            precision: Precision::F32,
        }
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - x: `[batch, n_tokens, d_model]`
    /// - output: `[batch, n_tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, n_tokens, d_model] = x.dims();
        let rows = x.reshape([batch * n_tokens, d_model]);
        self.forward_rows(rows, batch)
            .reshape([batch, n_tokens, d_model])
    }

    /// [`Self::forward`] on tokens flattened to rows, as [`super::Block`] keeps them.
    ///
    /// # Shapes
    /// - rows: `[batch * n_tokens, d_model]`, the tokens of each image contiguous
    /// - output: `[batch * n_tokens, d_model]`
    pub(crate) fn forward_rows(&self, rows: Tensor<B, 2>, batch: usize) -> Tensor<B, 2> {
        match (self.precision, &self.qkv.bias, &self.proj.bias) {
            (Precision::F32, Some(qkv_bias), Some(proj_bias)) => {
                // One product for q, k and v; attention reads the heads out of its rows and
                // writes them back merged (see `crate::backend::Backend::attention_rows`).
                let qkv = linear_rows(rows, self.qkv.weight.val(), qkv_bias.val());
                let out = attention_rows(qkv, batch, self.n_heads);
                linear_rows(out, self.proj.weight.val(), proj_bias.val())
            }
            _ => self.forward_rows_by_parts(rows, batch),
        }
    }

    /// [`Self::forward_rows`] in separate tensor operations, with the products in
    /// [`Self::precision`] (the mixed-precision path).
    fn forward_rows_by_parts(&self, rows: Tensor<B, 2>, batch: usize) -> Tensor<B, 2> {
        let [n_rows, d_model] = rows.dims();
        let n_tokens = n_rows / batch;
        let d_head = d_model / self.n_heads;

        // NOTE: q, k and v come from the matching thirds of the fused `qkv` weight rather than
        // from slices of one fused output: the same numbers, but the backward of a weight slice
        // scatters a [d_model, d_model] gradient instead of a [rows, 3 * d_model] one per part.
        let p = self.precision;
        let weight = self.qkv.weight.val(); // [d_model, 3 * d_model]
        let bias = self.qkv.bias.as_ref().map(|b| b.val());
        let rows = p.round(rows); // one cast feeds the three products
        let part = |i: usize| {
            let w = weight.clone().narrow(1, i * d_model, d_model);
            let b = bias.clone().map(|b| b.narrow(0, i * d_model, d_model));
            // [batch, n_heads, n_tokens, d_head]
            split_heads(p.linear(rows.clone(), w, b), batch, self.n_heads)
        };
        let (q, k, v) = (part(0), part(1), part(2));

        let scores = p
            .matmul(q, k.swap_dims(2, 3))
            .mul_scalar((d_head as f64).powf(-0.5)); // [batch, n_heads, n_tokens, n_tokens]
        let shape = scores.dims();
        let weights = softmax_rows(scores.reshape([batch * self.n_heads * n_tokens, n_tokens]))
            .reshape(shape);
        let out = p.matmul(weights, v); // [batch, n_heads, n_tokens, d_head]

        p.apply(&self.proj, merge_heads(out))
    }
}
