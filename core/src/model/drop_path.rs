use std::cell::RefCell;

use crate::backend::Backend;
use burn::module::Module;
use burn::tensor::{Distribution, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Stochastic depth (G. Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016):
/// drops a residual branch per sample with probability `prob` and scales the kept samples by
/// `1 / (1 - prob)`, as timm's `DropPath`. burn has no DropPath module.
///
/// Like burn's `Dropout`, it acts only when the backend records gradients (training) and is
/// the identity otherwise (`model.valid()`, inference backends).
///
/// The per-sample draws come from the generator installed by [`with_drop_path_seed`] on the
/// calling thread when there is one (training loops use it, so that a step's draws depend on
/// the step alone, also when shards of a batch run on several threads at once), else from
/// the backend's generator.
#[derive(Module, Clone, Debug)]
pub struct DropPath {
    /// Probability of dropping the branch for a sample.
    pub prob: f64,
}

thread_local! {
    static DRAWS: RefCell<Option<StdRng>> = const { RefCell::new(None) };
}

/// Runs `f` with stochastic-depth draws on this thread taken from a generator seeded with
/// `seed`, then restores what was installed before.
pub fn with_drop_path_seed<R>(seed: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<StdRng>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            DRAWS.with(|d| *d.borrow_mut() = previous);
        }
    }
    let previous = DRAWS.with(|d| d.replace(Some(StdRng::seed_from_u64(seed))));
    let _restore = Restore(previous);
    f()
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
        let device = x.device();
        let seeded = DRAWS.with(|d| {
            d.borrow_mut().as_mut().map(|rng| {
                let scale = (1.0 / keep) as f32;
                (0..batch)
                    .map(|_| {
                        if rng.random::<f64>() < keep {
                            scale
                        } else {
                            0.0
                        }
                    })
                    .collect::<Vec<f32>>()
            })
        });
        let mask = match seeded {
            Some(values) => Tensor::<B, 2>::from_data(TensorData::new(values, [batch, 1]), &device),
            None => Tensor::<B, 2>::random([batch, 1], Distribution::Bernoulli(keep), &device)
                .div_scalar(keep),
        };

        // A 2-D broadcast: CPU backends walk it row by row instead of element by element.
        let rows = x.reshape([batch, n_tokens * d_model]) * mask;
        rows.reshape([batch, n_tokens, d_model])
    }
}
