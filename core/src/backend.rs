//! The backend traits of mimic's models: burn's, plus fused operations.
//!
//! [`Backend`] is burn's [`burn::tensor::backend::Backend`] with LayerNorm, softmax, GELU,
//! head split / merge, linear layers (with the bias, or the bias and GELU) and multi-head
//! attention (from the fused q/k/v rows) as single operations, forward and backward. burn's
//! autodiff splits LayerNorm and softmax into a dozen element-wise nodes each (every one a
//! pass over memory and a graph entry), burn-flex evaluates GELU's `erf` with scalar libm
//! calls, and attention written in tensor operations copies q, k, v and the output between
//! layouts; on the CPU these took a large part of a training step. Here:
//!
//! - every backend gets the operations with default bodies written with burn's tensor API, so
//!   GPU backends behave as before (their fusion passes see the same element-wise work);
//! - [`Autodiff`] records each as one node whose backward calls the inner backend's backward
//!   operation, instead of tracing the decomposition;
//! - burn-flex (the CPU backend) runs the row operations as single loops over rows (see
//!   [`flex_kernels`]) and the linear layers and attention as direct strided matrix products
//!   with the surrounding work folded in (`flex_products`).
//!
//! Models, losses and training code take `B: mimic_core::backend::Backend` (or
//! [`AutodiffBackend`]); the concrete backends implement it here: burn-flex and `Autodiff<_>`
//! always, wgpu / WebGPU and CUDA behind the features of the same names.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{unary, Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Tensor, TensorMetadata, TensorPrimitive};

pub mod flex_kernels;
mod flex_products;

pub use flex_kernels::on_this_thread;

/// burn's backend trait plus fused row-wise LayerNorm, softmax and GELU (see the module
/// documentation). Every method has a default body made of burn tensor operations.
pub trait Backend: burn::tensor::backend::Backend {
    /// LayerNorm of each row: `(x - mean) / sqrt(var + eps) * gamma + beta`.
    ///
    /// # Shapes
    /// - x: `[n, d]`, gamma and beta: `[d]` -> `[n, d]`
    fn ln_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), eps)
    }

    /// Gradients of [`Self::ln_rows`] with respect to x, gamma and beta, given the output's
    /// gradient `grad` `[n, d]`.
    fn ln_rows_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        generic::ln_rows_backward::<Self>(x, gamma, grad, eps)
    }

    /// Softmax of each row of `[n, d]`.
    fn softmax_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::softmax(x, 1)
    }

    /// Gradient of [`Self::softmax_rows`] from its output `y` and the output's gradient:
    /// `y * (grad - sum(grad * y))` per row.
    fn softmax_rows_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::softmax_rows_backward::<Self>(y, grad)
    }

    /// Token rows `[batch * n, heads * d_head]` (each image's tokens contiguous) as per-head
    /// matrices `[batch, heads, n, d_head]`. The default is a reshape and a transposed view;
    /// backends may return a contiguous copy.
    fn split_heads(x: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        generic::split_heads::<Self>(x, batch, heads)
    }

    /// The inverse of [`Self::split_heads`]: `[batch, heads, n, d_head]` (any strides) to
    /// rows `[batch * n, heads * d_head]`.
    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        generic::merge_heads::<Self>(x)
    }

    /// The exact (erf) GELU, element-wise.
    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// Gradient of [`Self::gelu_exact`] at `x` given the output's gradient.
    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }

    /// A linear layer on rows: `x · w + b`.
    ///
    /// # Shapes
    /// - x: `[n, d_in]`, w: `[d_in, d_out]`, b: `[d_out]` -> `[n, d_out]`
    fn linear_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::linear(x, w, Some(b))
    }

    /// Gradients of [`Self::linear_rows`] with respect to x, w and b from the output's
    /// gradient `grad` `[n, d_out]`; only those `wanted` are computed.
    fn linear_rows_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        generic::linear_rows_backward::<Self>(x, w, grad, wanted)
    }

    /// [`Self::linear_rows`] followed by the exact GELU. Returns the output and, when
    /// `derivative` is set, GELU's derivative at every pre-activation: all that the backward
    /// pass needs (it multiplies the output's gradient by it), both `[n, d_out]`.
    fn linear_gelu_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        derivative: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        generic::linear_gelu_rows::<Self>(x, w, b, derivative)
    }

    /// Multi-head self-attention read straight from the fused projection's rows:
    /// `softmax(q kᵀ / √d_head) v` for every image and head, heads merged back into rows.
    /// Returns the output rows and the attention probabilities (which the backward pass
    /// needs).
    ///
    /// # Shapes
    /// - qkv: `[batch * n, 3 * width]`: each image's n tokens contiguous; in each row the q,
    ///   k and v thirds, each `heads` runs of `width / heads` channels
    /// - output: `[batch * n, width]`; probabilities: `[batch, heads, n, n]`
    fn attention_rows(
        qkv: FloatTensor<Self>,
        batch: usize,
        heads: usize,
    ) -> [FloatTensor<Self>; 2] {
        generic::attention_rows::<Self>(qkv, batch, heads)
    }

    /// Gradient of [`Self::attention_rows`] with respect to `qkv` (`[batch * n, 3 * width]`),
    /// from its input, its probabilities and the output's gradient `[batch * n, width]`.
    fn attention_rows_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        generic::attention_rows_backward::<Self>(qkv, probs, grad, heads)
    }
}

/// An autodiff backend whose inner backend is a [`Backend`] too: what training code takes.
pub trait AutodiffBackend:
    Backend + burn::tensor::backend::AutodiffBackend<InnerBackend: Backend>
{
}

impl<B> AutodiffBackend for B where
    B: Backend + burn::tensor::backend::AutodiffBackend<InnerBackend: Backend>
{
}

/// [`Backend::ln_rows`] on tensors.
pub fn layer_norm_rows<B: Backend>(
    x: Tensor<B, 2>,
    gamma: Tensor<B, 1>,
    beta: Tensor<B, 1>,
    eps: f64,
) -> Tensor<B, 2> {
    float(B::ln_rows(prim(x), prim(gamma), prim(beta), eps))
}

/// [`Backend::softmax_rows`] on a tensor.
pub fn softmax_rows<B: Backend>(x: Tensor<B, 2>) -> Tensor<B, 2> {
    float(B::softmax_rows(prim(x)))
}

/// [`Backend::split_heads`] on a tensor.
pub fn split_heads<B: Backend>(rows: Tensor<B, 2>, batch: usize, heads: usize) -> Tensor<B, 4> {
    float(B::split_heads(prim(rows), batch, heads))
}

/// [`Backend::merge_heads`] on a tensor.
pub fn merge_heads<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 2> {
    float(B::merge_heads(prim(x)))
}

/// [`Backend::gelu_exact`] on a tensor.
pub fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    float(B::gelu_exact(prim(x)))
}

/// [`Backend::linear_rows`] on tensors.
pub fn linear_rows<B: Backend>(x: Tensor<B, 2>, w: Tensor<B, 2>, b: Tensor<B, 1>) -> Tensor<B, 2> {
    float(B::linear_rows(prim(x), prim(w), prim(b)))
}

/// [`Backend::linear_gelu_rows`] on tensors: `gelu(x · w + b)`.
pub fn linear_gelu_rows<B: Backend>(
    x: Tensor<B, 2>,
    w: Tensor<B, 2>,
    b: Tensor<B, 1>,
) -> Tensor<B, 2> {
    float(B::linear_gelu_rows(prim(x), prim(w), prim(b), false).0)
}

/// [`Backend::attention_rows`] on a tensor: the attention output rows.
pub fn attention_rows<B: Backend>(qkv: Tensor<B, 2>, batch: usize, heads: usize) -> Tensor<B, 2> {
    let [out, _] = B::attention_rows(prim(qkv), batch, heads);
    float(out)
}

fn prim<B: burn::tensor::backend::Backend, const D: usize>(t: Tensor<B, D>) -> FloatTensor<B> {
    t.into_primitive().tensor()
}

fn float<B: burn::tensor::backend::Backend, const D: usize>(p: FloatTensor<B>) -> Tensor<B, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

/// The default bodies, in burn tensor operations (also the fallback of the CPU kernels for
/// float types other than f32).
pub mod generic {
    use super::{float, prim};
    use burn::tensor::ops::FloatTensor;
    use burn::tensor::Tensor;

    /// LayerNorm backward: with `x̂` the normalised rows, `r` their reciprocal standard
    /// deviation and `g = grad * gamma`: `dx = r (g - mean(g) - x̂ mean(g x̂))`,
    /// `dgamma = Σ_rows grad x̂`, `dbeta = Σ_rows grad`.
    pub fn ln_rows_backward<B: burn::tensor::backend::Backend>(
        x: FloatTensor<B>,
        gamma: FloatTensor<B>,
        grad: FloatTensor<B>,
        eps: f64,
    ) -> [FloatTensor<B>; 3] {
        let x: Tensor<B, 2> = float(x);
        let gamma: Tensor<B, 1> = float(gamma);
        let grad: Tensor<B, 2> = float(grad);
        let [_, d] = x.dims();
        let centred = x.clone() - x.mean_dim(1);
        let rstd = centred
            .clone()
            .powi_scalar(2)
            .mean_dim(1)
            .add_scalar(eps)
            .sqrt()
            .recip();
        let xhat = centred * rstd.clone();
        let dbeta = grad.clone().sum_dim(0).reshape([d]);
        let dgamma = (grad.clone() * xhat.clone()).sum_dim(0).reshape([d]);
        let g = grad * gamma.unsqueeze::<2>();
        let dx = (g.clone() - g.clone().mean_dim(1) - xhat.clone() * (g * xhat).mean_dim(1)) * rstd;
        [prim(dx), prim(dgamma), prim(dbeta)]
    }

    /// Rows to heads: a reshape and a transposed view.
    pub fn split_heads<B: burn::tensor::backend::Backend>(
        x: FloatTensor<B>,
        batch: usize,
        heads: usize,
    ) -> FloatTensor<B> {
        let x: Tensor<B, 2> = float(x);
        let [rows, width] = x.dims();
        prim(
            x.reshape([batch, rows / batch, heads, width / heads])
                .swap_dims(1, 2),
        )
    }

    /// Heads to rows: a transposed view and a reshape (which copies).
    pub fn merge_heads<B: burn::tensor::backend::Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
        let x: Tensor<B, 4> = float(x);
        let [batch, heads, n, d_head] = x.dims();
        prim(x.swap_dims(1, 2).reshape([batch * n, heads * d_head]))
    }

    /// The linear layer's backward pass with burn's own operations.
    pub fn linear_rows_backward<B: burn::tensor::backend::Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        grad: FloatTensor<B>,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<B>>; 3] {
        let [want_x, want_w, want_b] = wanted;
        [
            want_x.then(|| B::linear_x_backward(w, grad.clone())),
            want_w.then(|| B::linear_weight_backward(x, grad.clone())),
            want_b.then(|| B::linear_bias_backward(grad)),
        ]
    }

    /// A linear layer and GELU as two operations, the derivative from GELU's backward pass
    /// applied to ones.
    pub fn linear_gelu_rows<B: super::Backend>(
        x: FloatTensor<B>,
        w: FloatTensor<B>,
        b: FloatTensor<B>,
        derivative: bool,
    ) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
        let pre = B::linear_rows(x, w, b);
        let out = B::gelu_exact(pre.clone());
        let derivative = derivative.then(|| {
            let ones = Tensor::<B, 2>::ones_like(&float(pre.clone()));
            B::gelu_exact_backward(pre, prim(ones))
        });
        (out, derivative)
    }

    /// Attention written out in tensor operations: q, k and v as per-head views of the
    /// fused rows, two batched products and a softmax over the last axis.
    pub fn attention_rows<B: burn::tensor::backend::Backend>(
        qkv: FloatTensor<B>,
        batch: usize,
        heads: usize,
    ) -> [FloatTensor<B>; 2] {
        let (q, k, v, rows, width) = split_qkv::<B>(qkv, batch, heads);
        let d_head = width / heads;
        let scores = q
            .matmul(k.swap_dims(2, 3))
            .mul_scalar((d_head as f64).powf(-0.5));
        let probs = burn::tensor::activation::softmax(scores, 3);
        let out = probs
            .clone()
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([rows, width]);
        [prim(out), prim(probs)]
    }

    /// The backward pass of [`attention_rows`]: with `P` the probabilities and `dO` the
    /// output's gradient, `dV = Pᵀ dO`, `dS = P ∘ (dO vᵀ - rowsum(P ∘ dO vᵀ)) / √d_head`,
    /// `dQ = dS k`, `dK = dSᵀ q`, laid out as the fused rows.
    pub fn attention_rows_backward<B: burn::tensor::backend::Backend>(
        qkv: FloatTensor<B>,
        probs: FloatTensor<B>,
        grad: FloatTensor<B>,
        heads: usize,
    ) -> FloatTensor<B> {
        let probs: Tensor<B, 4> = float(probs);
        let [batch, _, n, _] = probs.dims();
        let (q, k, v, rows, width) = split_qkv::<B>(qkv, batch, heads);
        let d_head = width / heads;
        let grad: Tensor<B, 2> = float(grad);
        let d_out = grad.reshape([batch, n, heads, d_head]).swap_dims(1, 2);
        let dv = probs.clone().swap_dims(2, 3).matmul(d_out.clone());
        let dp = d_out.matmul(v.swap_dims(2, 3));
        let dot = (dp.clone() * probs.clone()).sum_dim(3);
        let ds = (probs * (dp - dot)).mul_scalar((d_head as f64).powf(-0.5));
        let dq = ds.clone().matmul(k);
        let dk = ds.swap_dims(2, 3).matmul(q);
        let to_rows = |t: Tensor<B, 4>| t.swap_dims(1, 2).reshape([rows, width]);
        prim(Tensor::cat(vec![to_rows(dq), to_rows(dk), to_rows(dv)], 1))
    }

    /// q, k and v of fused rows as `[batch, heads, n, d_head]` tensors, with the row count
    /// and width.
    #[allow(clippy::type_complexity)]
    fn split_qkv<B: burn::tensor::backend::Backend>(
        qkv: FloatTensor<B>,
        batch: usize,
        heads: usize,
    ) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>, usize, usize) {
        let qkv: Tensor<B, 2> = float(qkv);
        let [rows, three_width] = qkv.dims();
        let width = three_width / 3;
        let part = |i: usize| {
            qkv.clone()
                .narrow(1, i * width, width)
                .reshape([batch, rows / batch, heads, width / heads])
                .swap_dims(1, 2)
        };
        (part(0), part(1), part(2), rows, width)
    }

    /// Softmax backward from the output `y`: `y * (grad - Σ grad y)` per row.
    pub fn softmax_rows_backward<B: burn::tensor::backend::Backend>(
        y: FloatTensor<B>,
        grad: FloatTensor<B>,
    ) -> FloatTensor<B> {
        let y: Tensor<B, 2> = float(y);
        let grad: Tensor<B, 2> = float(grad);
        let dot = (grad.clone() * y.clone()).sum_dim(1);
        prim(y * (grad - dot))
    }
}

impl<B: Backend, C: CheckpointStrategy> Backend for Autodiff<B, C> {
    fn ln_rows(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        /// Keeps x and gamma for the backward pass.
        #[derive(Debug)]
        struct LayerNormRows;

        impl<B: Backend> Backward<B, 3> for LayerNormRows {
            type State = (FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x, gamma, eps) = ops.state;
                let [dx, dgamma, dbeta] = B::ln_rows_backward(x, gamma, grad, eps);
                for (node, g) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, g);
                    }
                }
            }
        }

        let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
        match LayerNormRows.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::ln_rows(
                    x.primitive.clone(),
                    gamma.primitive.clone(),
                    beta.primitive,
                    eps,
                );
                prep.finish((x.primitive, gamma.primitive, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::ln_rows(
                x.primitive,
                gamma.primitive,
                beta.primitive,
                eps,
            )),
        }
    }

    fn softmax_rows(x: FloatTensor<Self>) -> FloatTensor<Self> {
        saved_unary::<B, C>(x, B::softmax_rows, Keep::Output, B::softmax_rows_backward)
    }

    fn split_heads(x: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        /// A permutation: the backward pass is the inverse permutation.
        #[derive(Debug)]
        struct SplitHeads;

        impl<B: Backend> Backward<B, 1> for SplitHeads {
            type State = ();

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                unary::<B, _>(ops.parents, ops.node, grads, |grad| B::merge_heads(grad));
            }
        }

        match SplitHeads
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), B::split_heads(x.primitive, batch, heads)),
            OpsKind::UnTracked(prep) => prep.finish(B::split_heads(x.primitive, batch, heads)),
        }
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        /// A permutation: the backward pass is the inverse permutation.
        #[derive(Debug)]
        struct MergeHeads;

        impl<B: Backend> Backward<B, 1> for MergeHeads {
            type State = (usize, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (batch, heads) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::split_heads(grad, batch, heads)
                });
            }
        }

        let dims = x.primitive.shape();
        let (batch, heads) = (dims[0], dims[1]);
        match MergeHeads
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((batch, heads), B::merge_heads(x.primitive)),
            OpsKind::UnTracked(prep) => prep.finish(B::merge_heads(x.primitive)),
        }
    }

    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        saved_unary::<B, C>(x, B::gelu_exact, Keep::Input, B::gelu_exact_backward)
    }

    fn linear_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let nodes = [x.node.clone(), w.node.clone(), b.node.clone()];
        match LinearNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let out = B::linear_rows(x.primitive.clone(), w.primitive.clone(), b.primitive);
                let state = LinearState {
                    x: x.primitive,
                    w: w.primitive,
                    gelu_derivative: None,
                };
                prep.finish(state, out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::linear_rows(x.primitive, w.primitive, b.primitive))
            }
        }
    }

    fn linear_gelu_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        derivative: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        // The derivative handed back is an untracked by-product (gradients flow through the
        // output).
        let want_derivative = derivative;
        let nodes = [x.node.clone(), w.node.clone(), b.node.clone()];
        match LinearNode.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let (out, derivative) = B::linear_gelu_rows(
                    x.primitive.clone(),
                    w.primitive.clone(),
                    b.primitive,
                    true,
                );
                let given = derivative
                    .clone()
                    .filter(|_| want_derivative)
                    .map(untracked::<B, C>);
                let state = LinearState {
                    x: x.primitive,
                    w: w.primitive,
                    gelu_derivative: derivative,
                };
                (prep.finish(state, out), given)
            }
            OpsKind::UnTracked(prep) => {
                let (out, given) =
                    B::linear_gelu_rows(x.primitive, w.primitive, b.primitive, want_derivative);
                (prep.finish(out), given.map(untracked::<B, C>))
            }
        }
    }

    fn attention_rows(
        qkv: FloatTensor<Self>,
        batch: usize,
        heads: usize,
    ) -> [FloatTensor<Self>; 2] {
        /// Keeps the fused rows and the probabilities.
        #[derive(Debug)]
        struct AttentionRows;

        impl<B: Backend> Backward<B, 1> for AttentionRows {
            type State = (FloatTensor<B>, FloatTensor<B>, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (qkv, probs, heads) = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::attention_rows_backward(qkv, probs, grad, heads)
                });
            }
        }

        match AttentionRows
            .prepare::<C>([qkv.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let [out, probs] = B::attention_rows(qkv.primitive.clone(), batch, heads);
                let state = (qkv.primitive, probs.clone(), heads);
                [prep.finish(state, out), untracked::<B, C>(probs)]
            }
            OpsKind::UnTracked(prep) => {
                let [out, probs] = B::attention_rows(qkv.primitive, batch, heads);
                [prep.finish(out), untracked::<B, C>(probs)]
            }
        }
    }
}

/// The autodiff node of [`Backend::linear_rows`] and [`Backend::linear_gelu_rows`].
#[derive(Debug)]
struct LinearNode;

impl<B: Backend> Backward<B, 3> for LinearNode {
    type State = LinearState<B>;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let grad = grads.consume::<B>(&ops.node);
        let wanted = ops.parents.each_ref().map(Option::is_some);
        let computed = ops.state.grads(grad, wanted);
        for (node, g) in ops.parents.into_iter().zip(computed) {
            if let (Some(node), Some(g)) = (node, g) {
                grads.register::<B>(node.id, g);
            }
        }
    }
}

/// What the backward pass of a linear node keeps: its input and weight, and GELU's
/// derivative when a GELU was applied in the same node.
#[derive(Debug, Clone)]
struct LinearState<B: Backend> {
    x: FloatTensor<B>,
    w: FloatTensor<B>,
    gelu_derivative: Option<FloatTensor<B>>,
}

impl<B: Backend> LinearState<B> {
    /// The gradients of x, w and b (those `wanted`) from the output's gradient.
    fn grads(self, grad: FloatTensor<B>, wanted: [bool; 3]) -> [Option<FloatTensor<B>>; 3] {
        let grad = match self.gelu_derivative {
            Some(derivative) => B::float_mul(grad, derivative),
            None => grad,
        };
        B::linear_rows_backward(self.x, self.w, grad, wanted)
    }
}

/// A tensor of the inner backend as an untracked autodiff leaf: it carries a value that
/// gradients do not flow through (an operation's by-product, such as attention
/// probabilities).
fn untracked<B: Backend, C: CheckpointStrategy>(t: FloatTensor<B>) -> FloatTensor<Autodiff<B, C>> {
    <Autodiff<B, C> as burn::tensor::backend::AutodiffBackend>::from_inner(t)
}

/// Which tensor a one-input operation keeps for its backward pass.
enum Keep {
    Input,
    Output,
}

/// The backward pass of a one-input operation, from the kept tensor and the output's gradient.
type GradOf<B> = fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>;

/// A one-input autodiff node whose backward pass needs one kept tensor (softmax its output,
/// GELU its input).
#[derive(Debug)]
struct SavedUnary;

impl<B: Backend> Backward<B, 1> for SavedUnary {
    type State = (FloatTensor<B>, GradOf<B>);

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let (kept, grad_of) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| grad_of(kept, grad));
    }
}

/// Records `forward(x)` as one [`SavedUnary`] node.
fn saved_unary<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    keep: Keep,
    backward: GradOf<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match SavedUnary
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => match keep {
            Keep::Input => {
                let y = forward(x.primitive.clone());
                prep.finish((x.primitive, backward), y)
            }
            Keep::Output => {
                let y = forward(x.primitive);
                prep.finish((y.clone(), backward), y)
            }
        },
        OpsKind::UnTracked(prep) => prep.finish(forward(x.primitive)),
    }
}

#[cfg(any(feature = "wgpu", feature = "webgpu"))]
impl Backend for burn::backend::Wgpu {}

#[cfg(feature = "cuda")]
impl Backend for burn::backend::Cuda {}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::{activation, Distribution, TensorData};

    type Ad = Autodiff<Flex>;

    /// Largest difference between two tensors, relative to the larger magnitude of `want`.
    fn gap<const D: usize>(got: Tensor<Flex, D>, want: Tensor<Flex, D>) -> f32 {
        let got = got.into_data().to_vec::<f32>().unwrap();
        let want = want.into_data().to_vec::<f32>().unwrap();
        assert_eq!(got.len(), want.len());
        let scale = want.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(&want)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        worst / scale
    }

    fn random<const D: usize>(shape: [usize; D], seed: u64) -> Tensor<Ad, D> {
        <Flex as burn::tensor::backend::Backend>::seed(&Default::default(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 2.0), &Default::default())
    }

    /// Forward output and the gradients of `sum(out * w)` for each input, fused and as burn's
    /// autodiff traces the decomposed operation.
    fn both<const N: usize>(
        inputs: [Tensor<Ad, 2>; N],
        fused: impl Fn(&[Tensor<Ad, 2>]) -> Tensor<Ad, 2>,
        reference: impl Fn(&[Tensor<Ad, 2>]) -> Tensor<Ad, 2>,
        what: &str,
    ) {
        let run = |f: &dyn Fn(&[Tensor<Ad, 2>]) -> Tensor<Ad, 2>| {
            let leaves: Vec<Tensor<Ad, 2>> = inputs
                .iter()
                .map(|t| t.clone().detach().require_grad())
                .collect();
            let out = f(&leaves);
            let w = Tensor::<Ad, 2>::from_data(
                TensorData::new(
                    (0..out.shape().num_elements())
                        .map(|i| ((i * 7919) % 23) as f32 / 11.0 - 1.0)
                        .collect::<Vec<_>>(),
                    out.dims(),
                ),
                &Default::default(),
            );
            let grads = (out.clone() * w).sum().backward();
            let g: Vec<Tensor<Flex, 2>> = leaves.iter().map(|l| l.grad(&grads).unwrap()).collect();
            (out.inner(), g)
        };
        let (out_f, grads_f) = run(&fused);
        let (out_r, grads_r) = run(&reference);
        let e = gap(out_f, out_r);
        assert!(e <= 1e-5, "{what}: forward differs by {e}");
        for (i, (a, b)) in grads_f.into_iter().zip(grads_r).enumerate() {
            let e = gap(a, b);
            assert!(e <= 1e-5, "{what}: gradient of input {i} differs by {e}");
        }
    }

    #[test]
    fn fused_layer_norm_matches_the_traced_decomposition() {
        // gamma and beta ride as [1, d] rows so that `both` handles every input alike.
        let eps = 1e-6;
        both(
            [random([37, 24], 1), random([1, 24], 2), random([1, 24], 3)],
            |t| {
                let [_, d] = t[1].dims();
                layer_norm_rows(
                    t[0].clone(),
                    t[1].clone().reshape([d]),
                    t[2].clone().reshape([d]),
                    eps,
                )
            },
            |t| {
                let centred = t[0].clone() - t[0].clone().mean_dim(1);
                let var = centred.clone().powi_scalar(2).mean_dim(1);
                centred / var.add_scalar(eps).sqrt() * t[1].clone() + t[2].clone()
            },
            "layer norm",
        );
    }

    #[test]
    fn fused_softmax_and_gelu_match_burns_own() {
        both(
            [random([50, 65], 4)],
            |t| softmax_rows(t[0].clone()),
            |t| activation::softmax(t[0].clone(), 1),
            "softmax",
        );
        both(
            [random([40, 128], 5)],
            |t| gelu(t[0].clone()),
            |t| activation::gelu(t[0].clone()),
            "gelu",
        );
    }

    #[test]
    fn fused_linear_layers_match_burns_linear() {
        // The bias rides as a [1, d_out] row, as gamma does above.
        let run = |t: &[Tensor<Ad, 2>], gelu_after: bool| {
            let [_, d_out] = t[2].dims();
            let b = t[2].clone().reshape([d_out]);
            if gelu_after {
                linear_gelu_rows(t[0].clone(), t[1].clone(), b)
            } else {
                linear_rows(t[0].clone(), t[1].clone(), b)
            }
        };
        let reference = |t: &[Tensor<Ad, 2>], gelu_after: bool| {
            let [_, d_out] = t[2].dims();
            let y = burn::tensor::module::linear(
                t[0].clone(),
                t[1].clone(),
                Some(t[2].clone().reshape([d_out])),
            );
            if gelu_after {
                activation::gelu(y)
            } else {
                y
            }
        };
        // The larger size is split over threads where the build has them (its products are
        // over gemm's threshold for threads too).
        for (n, d_in, d_out) in [(45, 24, 40), (300, 64, 512)] {
            for (gelu_after, what) in [(false, "linear"), (true, "linear + gelu")] {
                both(
                    [
                        random([n, d_in], 20),
                        random([d_in, d_out], 21),
                        random([1, d_out], 22),
                    ],
                    |t| run(t, gelu_after),
                    |t| reference(t, gelu_after),
                    what,
                );
            }
        }
    }

    #[test]
    fn fused_attention_matches_the_traced_decomposition() {
        // 3 images of 7 tokens, 4 heads of 6 channels: qkv rows are [21, 3 * 24].
        let (batch, heads) = (3, 4);
        both(
            [random([21, 72], 23)],
            |t| attention_rows(t[0].clone(), batch, heads),
            |t| {
                let part = |i: usize| {
                    t[0].clone()
                        .narrow(1, i * 24, 24)
                        .reshape([batch, 7, heads, 6])
                        .swap_dims(1, 2)
                };
                let scores = part(0)
                    .matmul(part(1).swap_dims(2, 3))
                    .mul_scalar(6f64.powf(-0.5));
                activation::softmax(scores, 3)
                    .matmul(part(2))
                    .swap_dims(1, 2)
                    .reshape([21, 24])
            },
            "attention",
        );
    }

    #[test]
    #[should_panic(expected = "do not split")]
    fn attention_refuses_rows_its_heads_do_not_tile() {
        // Width 10 in 3 heads: the kernel would leave columns unwritten, so it stops.
        let qkv = random::<2>([8, 30], 24).inner();
        let _ = attention_rows(qkv, 2, 3);
    }

    #[test]
    fn head_split_and_merge_move_values_and_gradients_exactly() {
        // 3 images of 5 tokens, 4 heads of 6 channels; merge also reads a transposed view.
        let rows = random::<2>([15, 24], 10).require_grad();
        let heads = split_heads(rows.clone(), 3, 4);
        let want = rows.clone().reshape([3, 5, 4, 6]).swap_dims(1, 2);
        assert_eq!(gap(heads.clone().inner(), want.inner()), 0.0);
        let w = random::<4>([3, 4, 5, 6], 11);
        let grads = (heads.clone() * w.clone()).sum().backward();
        let want_grad = w.clone().swap_dims(1, 2).reshape([15, 24]).inner();
        assert_eq!(gap(rows.grad(&grads).unwrap(), want_grad), 0.0);

        let x = random::<4>([3, 4, 6, 5], 12).require_grad();
        let merged = merge_heads(x.clone().swap_dims(2, 3));
        let want = x.clone().swap_dims(2, 3).swap_dims(1, 2).reshape([15, 24]);
        assert_eq!(gap(merged.clone().inner(), want.inner()), 0.0);
        let w = random::<2>([15, 24], 13);
        let grads = (merged * w.clone()).sum().backward();
        let want_grad = w
            .reshape([3, 5, 4, 6])
            .swap_dims(1, 2)
            .swap_dims(2, 3)
            .inner();
        assert_eq!(gap(x.grad(&grads).unwrap(), want_grad), 0.0);
        // The default bodies (GPU backends) agree with the CPU kernels.
        let r = random::<2>([15, 24], 14).inner();
        let a: Tensor<Flex, 4> = float(generic::split_heads::<Flex>(prim(r.clone()), 3, 4));
        let b: Tensor<Flex, 4> = float(Flex::split_heads(prim(r), 3, 4));
        assert_eq!(gap(b, a.clone()), 0.0);
        let m1: Tensor<Flex, 2> = float(generic::merge_heads::<Flex>(prim(a.clone())));
        let m2: Tensor<Flex, 2> = float(Flex::merge_heads(prim(a)));
        assert_eq!(gap(m2, m1), 0.0);
    }

    /// The CPU kernels of LayerNorm's and a linear layer's backward passes against the
    /// default bodies, on `n` rows of `d` values.
    fn ln_and_linear_backward_match(n: usize, d: usize) {
        let x = random::<2>([n, d], 6).inner();
        let gamma = random::<1>([d], 7).inner();
        let grad = random::<2>([n, d], 8).inner();
        let [dx_a, dg_a, db_a] = generic::ln_rows_backward::<Flex>(
            prim(x.clone()),
            prim(gamma.clone()),
            prim(grad.clone()),
            1e-6,
        );
        let [dx_b, dg_b, db_b] =
            Flex::ln_rows_backward(prim(x), prim(gamma), prim(grad.clone()), 1e-6);
        assert!(
            gap(float::<Flex, 2>(dx_b), float::<Flex, 2>(dx_a)) <= 1e-5,
            "dx"
        );
        assert!(
            gap(float::<Flex, 1>(dg_b), float::<Flex, 1>(dg_a)) <= 1e-5,
            "dgamma"
        );
        assert!(
            gap(float::<Flex, 1>(db_b), float::<Flex, 1>(db_a)) <= 1e-5,
            "dbeta"
        );
        let x = random::<2>([n, 12], 15).inner();
        let w = random::<2>([12, d], 16).inner();
        let g = random::<2>([n, d], 17).inner();
        let a = generic::linear_rows_backward::<Flex>(
            prim(x.clone()),
            prim(w.clone()),
            prim(g.clone()),
            [true; 3],
        );
        let b = Flex::linear_rows_backward(prim(x), prim(w), prim(g), [true, false, true]);
        assert!(b[1].is_none(), "an unwanted gradient was computed");
        for i in [0, 2] {
            let (got, want) = (b[i].clone().unwrap(), a[i].clone().unwrap());
            let e = if i == 0 {
                gap(float::<Flex, 2>(got), float::<Flex, 2>(want))
            } else {
                gap(float::<Flex, 1>(got), float::<Flex, 1>(want))
            };
            assert!(e <= 1e-5, "linear gradient {i}: {e}");
        }
    }

    #[test]
    fn default_bodies_match_the_cpu_kernels() {
        // The bodies GPU backends run, evaluated on the CPU against burn-flex's kernels; the
        // larger sizes are split over threads where the build has them.
        for (n, d) in [(29, 16), (300, 512)] {
            ln_and_linear_backward_match(n, d);
        }
        let grad = random::<2>([29, 16], 8).inner();
        let qkv = random::<2>([10, 36], 18).inner();
        let [out_a, probs_a] = generic::attention_rows::<Flex>(prim(qkv.clone()), 2, 3);
        let [out_b, probs_b] = Flex::attention_rows(prim(qkv.clone()), 2, 3);
        assert!(gap(float::<Flex, 2>(out_b), float::<Flex, 2>(out_a)) <= 1e-5);
        let (probs_a, probs_b) = (float::<Flex, 4>(probs_a), float::<Flex, 4>(probs_b));
        assert!(gap(probs_b.clone(), probs_a.clone()) <= 1e-5);
        let g = random::<2>([10, 12], 19).inner();
        let da = generic::attention_rows_backward::<Flex>(
            prim(qkv.clone()),
            prim(probs_a),
            prim(g.clone()),
            3,
        );
        let db = Flex::attention_rows_backward(prim(qkv), prim(probs_b), prim(g), 3);
        assert!(gap(float::<Flex, 2>(db), float::<Flex, 2>(da)) <= 1e-5);
        let y = activation::softmax(random::<2>([29, 16], 9).inner(), 1);
        let a = generic::softmax_rows_backward::<Flex>(prim(y.clone()), prim(grad.clone()));
        let b = Flex::softmax_rows_backward(prim(y), prim(grad));
        assert!(gap(float::<Flex, 2>(b), float::<Flex, 2>(a)) <= 1e-5);
    }
}
