use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

/// Stochastic depth (G. Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016):
/// drops a residual branch per sample with probability `prob` and scales the kept samples by
/// `1 / (1 - prob)`, as timm's `DropPath`. burn has no DropPath module.
///
/// Like burn's `Dropout`, it acts only when the backend records gradients (training) and is
/// the identity otherwise (`model.valid()`, inference backends).
#[derive(Module, Clone, Debug)]
pub struct DropPath {
    /// Probability of dropping the branch for a sample.
    pub prob: f64,
}

impl DropPath {
    /// # Shapes
    /// - input: `[batch, n_tokens, d_model]`
    /// - output: same
    pub fn forward<B: Backend>(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        if self.prob == 0.0 || !B::ad_enabled(&x.device()) {
            return x;
        }
        let keep = 1.0 - self.prob;
        let [batch, n_tokens, d_model] = x.dims();
        let mask = Tensor::<B, 2>::random([batch, 1], Distribution::Bernoulli(keep), &x.device());

        // A 2-D broadcast: CPU backends walk it row by row instead of element by element.
        let rows = x.reshape([batch, n_tokens * d_model]) * mask.div_scalar(keep);
        rows.reshape([batch, n_tokens, d_model])
    }
}
