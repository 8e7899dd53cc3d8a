use burn::config::Config;
use burn::module::Module;
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Tensor;

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
        }
    }
}

impl<B: Backend> Attention<B> {
    /// # Shapes
    /// - x: `[batch, n_tokens, d_model]`
    /// - output: `[batch, n_tokens, d_model]`
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, n_tokens, d_model] = x.dims();
        let d_head = d_model / self.n_heads;

        let qkv = self
            .qkv
            .forward(x)
            .reshape([batch, n_tokens, 3, self.n_heads, d_head])
            .permute([2, 0, 3, 1, 4]); // [3, batch, n_heads, n_tokens, d_head]
        let part = |i: usize| qkv.clone().narrow(0, i, 1).squeeze_dim::<4>(0);
        let (q, k, v) = (part(0), part(1), part(2));

        // Fused scaled-dot-product attention; the default scale is d_head^-0.5.
        let out = attention(q, k, v, None, None, AttentionModuleOptions::default());
        let out = out.swap_dims(1, 2).reshape([batch, n_tokens, d_model]);
        self.proj.forward(out)
    }
}
