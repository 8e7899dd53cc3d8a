//! The gradients of one fine-tuning step, optionally computed in shards on several threads.
//!
//! On CPU backends much of a step (element-wise kernels, norms, the autodiff bookkeeping) runs
//! on one thread; only the matrix products fan out. Splitting the batch into shards that run
//! their encoder forward and backward passes on threads of their own keeps every core busy.
//! The contrastive loss couples all samples of the batch, so the split is exact rather than an
//! approximation: the shards' pooled features are gathered, the heads and the loss run once on
//! the whole batch, and each shard then back-propagates the loss's gradient with respect to
//! its own features through its own encoder graph. The parameter gradients are the sums over
//! the shards, i.e. those of the unsharded step up to the order of floating-point sums.

use crate::backend::AutodiffBackend;
use burn::module::{AutodiffModule, Module, ModuleMapper, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{ElementConversion, Tensor};

use super::finetune::{MimicLossConfig, MimicModel, MixedBatch, StepLosses};
use crate::mae::{Mae, Masking};
use crate::mix::MixPlan;
use crate::model::{with_drop_path_seed, Vit};

/// The loss terms and parameter gradients of one fine-tuning step.
pub struct StepGradients<B: AutodiffBackend> {
    /// The loss terms (their graph is already consumed; read their values only).
    pub losses: StepLosses<B>,
    /// The gradients of `losses.total` with respect to every trainable parameter.
    pub grads: GradientsParams,
}

/// Loss and gradients of [`super::finetune_loss`] for one batch, with the encoder split into
/// `shards` parts of the batch that run on their own threads (1: no split, the calling thread
/// only). Stochastic depth draws from generators seeded by `seed` (and the shard's index), so
/// the result depends on `seed` and `shards` alone.
///
/// # Shapes
/// - images: `[2B, 3, img_size, img_size]`; targets: 2B rows of n_classes
pub fn finetune_gradients<B: AutodiffBackend>(
    model: &MimicModel<B>,
    images: Tensor<B, 4>,
    targets: &[Vec<f32>],
    plan: Option<&MixPlan>,
    config: &MimicLossConfig,
    shards: usize,
    seed: u64,
) -> StepGradients<B> {
    let batch = MixedBatch::new(images, targets, plan, config);
    let n = targets.len();
    let shards = shards.clamp(1, n.max(1));
    if shards == 1 {
        let features = with_drop_path_seed(seed, || {
            model.encoder.forward_features(batch.images.clone())
        });
        let losses = batch.losses(model, features, config);
        let grads = GradientsParams::from_grads(losses.total.backward(), model);
        return StepGradients { losses, grads };
    }

    // 1. Each shard's encoder forward, on its own copy of the parameters: fresh leaves keep the
    //    shards' autodiff graphs apart, so that their backward passes can run at once.
    let ranges = shard_ranges(n, shards);
    let encoders: Vec<Vit<B>> = ranges
        .iter()
        .map(|_| model.encoder.clone().map(&mut FreshLeaves))
        .collect();
    let features: Vec<Tensor<B, 2>> = on_threads(
        ranges
            .iter()
            .zip(&encoders)
            .enumerate()
            .map(|(i, (range, encoder))| {
                let part = batch.images.clone().narrow(0, range.0, range.1);
                let shard_seed = seed ^ (i as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                move || with_drop_path_seed(shard_seed, || encoder.forward_features(part))
            })
            .collect(),
    );

    // 2. Heads and loss once, on the gathered features cut from the shards' graphs.
    let gathered =
        Tensor::cat(features.iter().map(|f| f.clone().detach()).collect(), 0).require_grad();
    let losses = batch.losses(model, gathered.clone(), config);
    let head_grads = losses.total.backward();
    let feature_grad = gathered
        .grad(&head_grads)
        .expect("the loss depends on the pooled features");
    let mut grads = GradientsParams::from_grads(head_grads, model);

    // 3. Each shard back-propagates its slice of d loss / d features through its encoder.
    let shard_grads: Vec<GradientsParams> = on_threads(
        features
            .into_iter()
            .zip(&encoders)
            .zip(&ranges)
            .map(|((f, encoder), range)| {
                let upstream = Tensor::from_inner(feature_grad.clone().narrow(0, range.0, range.1));
                move || GradientsParams::from_grads((f * upstream).sum().backward(), encoder)
            })
            .collect(),
    );
    for shard in shard_grads {
        grads = add_gradients::<B, _>(model, grads, shard);
    }
    StepGradients { losses, grads }
}

/// The MAE loss of one batch (see [`Mae::forward`]) and its parameter gradients, with the
/// batch split into `shards` parts that run forward and backward on their own threads. Every
/// image has the same number of removed patches, so the loss is the image-weighted mean of
/// the shards' losses and the gradients are the sums of theirs (up to rounding).
///
/// # Shapes
/// - images: `[batch, in_chans, img_size, img_size]`, `masking` of the same batch
pub fn mae_gradients<B: AutodiffBackend>(
    model: &Mae<B>,
    images: Tensor<B, 4>,
    masking: &Masking,
    shards: usize,
) -> (f32, GradientsParams) {
    let n = masking.batch;
    let shards = shards.clamp(1, n.max(1));
    if shards == 1 {
        let loss = model.forward(images, masking).loss;
        let value: f32 = loss.clone().into_scalar().elem();
        return (value, GradientsParams::from_grads(loss.backward(), model));
    }
    let ranges = shard_ranges(n, shards);
    let parts: Vec<(f32, GradientsParams)> = on_threads(
        ranges
            .iter()
            .map(|&(start, len)| {
                let replica = model.clone().map(&mut FreshLeaves);
                let part = images.clone().narrow(0, start, len);
                let masking = masking.rows(start, len);
                let weight = len as f64 / n as f64;
                move || {
                    let loss = replica.forward(part, &masking).loss.mul_scalar(weight);
                    let value: f32 = loss.clone().into_scalar().elem();
                    (
                        value,
                        GradientsParams::from_grads(loss.backward(), &replica),
                    )
                }
            })
            .collect(),
    );
    let mut loss = 0.0;
    let mut grads = GradientsParams::new();
    for (value, part) in parts {
        loss += value;
        grads = add_gradients::<B, _>(model, grads, part);
    }
    (loss, grads)
}

/// Runs each job on a thread of its own, its CPU products kept there
/// ([`crate::backend::on_this_thread`]); their results, in order.
fn on_threads<T: Send, F: FnOnce() -> T + Send>(jobs: Vec<F>) -> Vec<T> {
    std::thread::scope(|scope| {
        let running: Vec<_> = jobs
            .into_iter()
            .map(|job| scope.spawn(|| crate::backend::on_this_thread(job)))
            .collect();
        running
            .into_iter()
            .map(|job| job.join().expect("a shard's thread panicked"))
            .collect()
    })
}

/// `(start, len)` of `shards` contiguous parts of `n` rows, as even as possible.
fn shard_ranges(n: usize, shards: usize) -> Vec<(usize, usize)> {
    let (base, extra) = (n / shards, n % shards);
    let mut start = 0;
    (0..shards)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let range = (start, len);
            start += len;
            range
        })
        .collect()
}

/// Replaces every trainable parameter by a new autodiff leaf with the same value and id.
struct FreshLeaves;

impl<B: AutodiffBackend> ModuleMapper<B> for FreshLeaves {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let (id, tensor, mapper) = param.consume();
        let trainable = tensor.is_require_grad();
        let leaf = tensor.detach();
        let leaf = if trainable { leaf.require_grad() } else { leaf };
        Param::from_mapped_value(id, leaf, mapper)
    }
}

/// `a + b`, parameter by parameter (a parameter in one only is kept as it is).
pub(crate) fn add_gradients<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    a: GradientsParams,
    b: GradientsParams,
) -> GradientsParams {
    struct Add<'a, B: AutodiffBackend> {
        a: GradientsParams,
        b: &'a mut GradientsParams,
        _backend: std::marker::PhantomData<B>,
    }
    impl<B: AutodiffBackend> ModuleVisitor<B> for Add<'_, B> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let Some(b) = self.b.remove::<B::InnerBackend, D>(param.id) else {
                return;
            };
            let sum = match self.a.remove::<B::InnerBackend, D>(param.id) {
                Some(a) => a + b,
                None => b,
            };
            self.a.register(param.id, sum);
        }
    }
    let mut b = b;
    let mut add = Add::<B> {
        a,
        b: &mut b,
        _backend: std::marker::PhantomData,
    };
    module.visit(&mut add);
    add.a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_the_batch_in_order() {
        assert_eq!(shard_ranges(10, 3), vec![(0, 4), (4, 3), (7, 3)]);
        assert_eq!(shard_ranges(4, 4), vec![(0, 1), (1, 1), (2, 1), (3, 1)]);
        assert_eq!(shard_ranges(7, 1), vec![(0, 7)]);
    }
}
