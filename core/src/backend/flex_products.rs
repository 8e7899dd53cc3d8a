//! The matrix-product operations of [`super::Backend`] on burn-flex: linear layers and
//! multi-head self-attention, written against the `gemm` crate (burn-flex's own matrix
//! product) with the work around the products folded in.
//!
//! - A linear layer starts its output as the bias rows and lets the product accumulate onto
//!   them (no separate broadcast add); with GELU, one pass over the product writes the output
//!   and, for training, GELU's derivative in place of the product. Its backward pass is two
//!   strided products (no transposed copies) and a column sum.
//! - Attention reads q, k and v of every (image, head) straight out of the fused projection's
//!   rows through strides and writes its output straight into merged rows: no head split or
//!   merge copies. The score scale rides in the product's multiplier, the softmax runs in
//!   place, and the (image, head) pairs run in parallel. The backward pass writes dq, dk and
//!   dv into one buffer laid out as the fused rows, so the projection's backward pass is one
//!   product.
//!
//! f32 tensors, contiguous or not, take these paths; other float types take the default
//! bodies.

use burn_flex::FlexTensor;
use gemm::Parallelism;

#[cfg(feature = "rayon")]
use super::flex_kernels::fan_out;
use super::flex_kernels::{
    column_sums, gelu_and_derivative, gelu_in_place, softmax_grad_in_place, softmax_rows_in_place,
};
use super::generic;
use burn::backend::Flex;
use burn::tensor::TensorData;

/// A matrix operand: its first element and its row and column strides, in elements.
#[derive(Clone, Copy)]
struct Mat {
    ptr: *const f32,
    rs: isize,
    cs: isize,
}

impl Mat {
    /// A row-major matrix with `row_stride` elements between rows, starting at `at`.
    fn rows(data: &[f32], at: usize, row_stride: usize) -> Mat {
        Mat {
            ptr: data[at..].as_ptr(),
            rs: row_stride as isize,
            cs: 1,
        }
    }

    /// The transpose of this matrix (no data moves).
    fn t(self) -> Mat {
        Mat {
            ptr: self.ptr,
            rs: self.cs,
            cs: self.rs,
        }
    }
}

/// An output pointer that tasks writing disjoint parts of one buffer share.
#[derive(Clone, Copy)]
struct Out(*mut f32);

// SAFETY: every task that holds an `Out` writes a region no other task touches.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The element `offset` places further. (A method, so that closures capture the whole
    /// `Out` and not its raw pointer field.)
    ///
    /// # Safety
    /// `offset` must lie within the buffer.
    unsafe fn at(self, offset: usize) -> *mut f32 {
        // SAFETY: forwarded from the caller.
        unsafe { self.0.add(offset) }
    }
}

/// Products of at least this many multiply-adds are split over threads by gemm itself
/// (burn-flex's threshold).
const PARALLEL_MACS: usize = 192 * 192 * 192;

fn parallelism(m: usize, n: usize, k: usize) -> Parallelism {
    #[cfg(feature = "rayon")]
    if fan_out() && m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MACS {
        return Parallelism::Rayon(0);
    }
    let _ = (m, n, k, PARALLEL_MACS);
    Parallelism::None
}

/// `dst = scale * lhs · rhs` (or `dst += scale * lhs · rhs` when `accumulate`) for an
/// `m × k` times `k × n` product; `dst` is row-major with `dst_rs` elements between rows.
///
/// # Safety
/// The operands must describe memory that is valid for their extents, and `dst` an
/// `m × n` region with row stride `dst_rs` that nothing else reads or writes meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: Mat,
    rhs: Mat,
    scale: f32,
    parallelism: Parallelism,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Runs `task(i)` for every `i < count`, in parallel where the build has threads.
fn for_each_task(count: usize, task: impl Fn(usize) + Sync + Send) {
    #[cfg(feature = "rayon")]
    if fan_out() {
        use rayon::prelude::*;
        (0..count).into_par_iter().for_each(task);
        return;
    }
    (0..count).for_each(task);
}

/// A buffer of `len` values written by `fill` through the pointer it is given, without being
/// zeroed first (large zeroed allocations cost a pass over memory of their own).
///
/// # Safety
/// `fill` must write all `len` values.
unsafe fn written_by(len: usize, fill: impl FnOnce(*mut f32)) -> Vec<f32> {
    let mut values = Vec::with_capacity(len);
    fill(values.as_mut_ptr());
    // SAFETY: the caller's `fill` initialised all `len` values.
    unsafe { values.set_len(len) };
    values
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// The values of a float tensor as contiguous f32, or `None` for other float types.
fn values(t: &FlexTensor) -> Option<FlexTensor> {
    let t = t.to_contiguous();
    t.as_slice::<f32>().is_some().then_some(t)
}

fn f32s(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("checked by `values`")
}

/// `[n, d_in, d_out]` of a linear layer's input `[n, d_in]` and weight `[d_in, d_out]`, with
/// the other operands' shapes checked against them (`grad_or_bias`: the bias `[d_out]` or the
/// output's gradient `[n, d_out]`). The kernels address memory by these sizes, so a mismatch
/// must stop here.
fn linear_sizes(x: &FlexTensor, w: &FlexTensor, grad_or_bias: &FlexTensor) -> [usize; 3] {
    let (xs, ws, gs) = (
        x.layout().shape(),
        w.layout().shape(),
        grad_or_bias.layout().shape(),
    );
    assert!(
        xs.num_dims() == 2 && ws.num_dims() == 2 && xs[1] == ws[0],
        "linear_rows: input {xs:?} and weight {ws:?} do not fit"
    );
    let [n, d_in, d_out] = [xs[0], xs[1], ws[1]];
    let fits = match gs.num_dims() {
        1 => gs[0] == d_out,
        2 => gs[0] == n && gs[1] == d_out,
        _ => false,
    };
    assert!(
        fits,
        "linear_rows: {gs:?} does not fit output [{n}, {d_out}]"
    );
    [n, d_in, d_out]
}

/// `x · w + b` (`[n, d_in]`, `[d_in, d_out]`, `[d_out]`) into a new `[n, d_out]` buffer:
/// the bias rows first, the product added onto them.
fn linear_values(x: &[f32], w: &[f32], b: &[f32], [n, d_in, d_out]: [usize; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(n * d_out);
    for _ in 0..n {
        out.extend_from_slice(b);
    }
    // SAFETY: x is [n, d_in], w [d_in, d_out] and out [n, d_out], all row-major and owned.
    unsafe {
        product(
            n,
            d_out,
            d_in,
            out.as_mut_ptr(),
            d_out,
            true,
            Mat::rows(x, 0, d_in),
            Mat::rows(w, 0, d_out),
            1.0,
            parallelism(n, d_out, d_in),
        );
    }
    out
}

/// burn-flex's own linear layer (for float types other than f32).
fn burn_linear(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
    <Flex as burn::tensor::ops::ModuleOps<Flex>>::linear(x, w, Some(b))
}

pub(super) fn linear_rows(x: FlexTensor, w: FlexTensor, b: FlexTensor) -> FlexTensor {
    let (Some(xc), Some(wc), Some(bc)) = (values(&x), values(&w), values(&b)) else {
        return burn_linear(x, w, b);
    };
    let sizes = linear_sizes(&xc, &wc, &bc);
    let out = linear_values(f32s(&xc), f32s(&wc), f32s(&bc), sizes);
    tensor(out, vec![sizes[0], sizes[2]])
}

pub(super) fn linear_gelu_rows(
    x: FlexTensor,
    w: FlexTensor,
    b: FlexTensor,
    derivative: bool,
) -> (FlexTensor, Option<FlexTensor>) {
    let (Some(xc), Some(wc), Some(bc)) = (values(&x), values(&w), values(&b)) else {
        return generic::linear_gelu_rows::<Flex>(x, w, b, derivative);
    };
    // The product's buffer becomes the output, or (when the derivative is wanted) the
    // derivative, with the output in a second buffer: one pass either way.
    let sizes = linear_sizes(&xc, &wc, &bc);
    let mut pre = linear_values(f32s(&xc), f32s(&wc), f32s(&bc), sizes);
    let (n, d_out) = (sizes[0], sizes[2]);
    let shape = vec![n, d_out];
    if derivative {
        let mut out = Vec::with_capacity(pre.len());
        gelu_and_derivative(&mut pre, &mut out.spare_capacity_mut()[..n * d_out]);
        // SAFETY: `gelu_and_derivative` wrote every value of `out`.
        unsafe { out.set_len(n * d_out) };
        (tensor(out, shape.clone()), Some(tensor(pre, shape)))
    } else {
        gelu_in_place(&mut pre);
        (tensor(pre, shape), None)
    }
}

pub(super) fn linear_rows_backward(
    x: FlexTensor,
    w: FlexTensor,
    grad: FlexTensor,
    wanted: [bool; 3],
) -> Option<[Option<FlexTensor>; 3]> {
    let (xc, wc, gc) = (values(&x)?, values(&w)?, values(&grad)?);
    let (xs, ws, gs) = (f32s(&xc), f32s(&wc), f32s(&gc));
    let [n, d_in, d_out] = linear_sizes(&xc, &wc, &gc);
    let [want_x, want_w, want_b] = wanted;
    // SAFETY (both products): the operands lie in their buffers, and a product that does not
    // accumulate writes all of its destination.
    let dx = want_x.then(|| {
        // dx = grad · wᵀ: grad is [n, d_out], w [d_in, d_out] read transposed, dx [n, d_in].
        let dx = unsafe {
            written_by(n * d_in, |dx| {
                product(
                    n,
                    d_in,
                    d_out,
                    dx,
                    d_in,
                    false,
                    Mat::rows(gs, 0, d_out),
                    Mat::rows(ws, 0, d_out).t(),
                    1.0,
                    parallelism(n, d_in, d_out),
                )
            })
        };
        tensor(dx, vec![n, d_in])
    });
    let dw = want_w.then(|| {
        // dw = xᵀ · grad: x is [n, d_in] read transposed, grad [n, d_out], dw [d_in, d_out].
        let dw = unsafe {
            written_by(d_in * d_out, |dw| {
                product(
                    d_in,
                    d_out,
                    n,
                    dw,
                    d_out,
                    false,
                    Mat::rows(xs, 0, d_in).t(),
                    Mat::rows(gs, 0, d_out),
                    1.0,
                    parallelism(d_in, d_out, n),
                )
            })
        };
        tensor(dw, vec![d_in, d_out])
    });
    let db = want_b.then(|| {
        let mut db = vec![0f32; d_out];
        column_sums(gs, d_out, &mut db);
        tensor(db, vec![d_out])
    });
    Some([dx, dw, db])
}

/// The sizes of one attention call.
#[derive(Clone, Copy)]
struct Heads {
    /// Tokens per image.
    n: usize,
    heads: usize,
    /// Channels per head.
    d_head: usize,
    /// Width of q (and of k, v and the output): heads * d_head.
    width: usize,
    scale: f32,
}

impl Heads {
    /// The sizes of fused rows `qkv` (`[batch * n, 3 * width]`), checked: the kernels address
    /// memory by them, so rows or columns they would not tile must stop here.
    fn new(qkv: &FlexTensor, batch: usize, heads: usize) -> Heads {
        let shape = qkv.layout().shape();
        assert!(
            shape.num_dims() == 2,
            "attention_rows: qkv must be rows, got {shape:?}"
        );
        let (rows, three_width) = (shape[0], shape[1]);
        assert!(
            batch > 0 && rows % batch == 0 && heads > 0 && three_width % (3 * heads) == 0,
            "attention_rows: {rows} x {three_width} qkv rows do not split into {batch} images \
             and 3 x {heads} heads"
        );
        let width = three_width / 3;
        let d_head = width / heads;
        Heads {
            n: rows / batch,
            heads,
            d_head,
            width,
            scale: (d_head as f32).powf(-0.5),
        }
    }

    /// Where (image, head) `task`'s q starts in the fused rows; k and v follow at `width` and
    /// `2 * width` further. The same offset with row stride `width` addresses the output.
    fn offsets(&self, task: usize) -> (usize, usize) {
        let (image, head) = (task / self.heads, task % self.heads);
        let first_row = image * self.n;
        let column = head * self.d_head;
        (
            first_row * 3 * self.width + column,
            first_row * self.width + column,
        )
    }
}

pub(super) fn attention_rows(qkv: FlexTensor, batch: usize, heads: usize) -> [FlexTensor; 2] {
    let Some(qkv_c) = values(&qkv) else {
        return generic::attention_rows::<Flex>(qkv, batch, heads);
    };
    let src = f32s(&qkv_c);
    let h = Heads::new(&qkv_c, batch, heads);
    let (n, dh, w) = (h.n, h.d_head, h.width);
    let rows = batch * n;
    let (out_len, probs_len) = (rows * w, batch * heads * n * n);
    let mut out = Vec::with_capacity(out_len);
    let mut probs = Vec::with_capacity(probs_len);
    let (out_ptr, probs_ptr) = (Out(out.as_mut_ptr()), Out(probs.as_mut_ptr()));
    for_each_task(batch * heads, |task| {
        let (at_in, at_out) = h.offsets(task);
        let q = Mat::rows(src, at_in, 3 * w);
        let k = Mat::rows(src, at_in + w, 3 * w);
        let v = Mat::rows(src, at_in + 2 * w, 3 * w);
        // SAFETY: task `task` alone writes its n x n block of probs and its n rows x d_head
        // columns of out (its image's rows, its head's columns); q, k and v lie in src.
        unsafe {
            let p = probs_ptr.at(task * n * n);
            product(n, n, dh, p, n, false, q, k.t(), h.scale, Parallelism::None);
            softmax_rows_in_place(std::slice::from_raw_parts_mut(p, n * n), n);
            let p = Mat {
                ptr: p,
                rs: n as isize,
                cs: 1,
            };
            let o = out_ptr.at(at_out);
            product(n, dh, n, o, w, false, p, v, 1.0, Parallelism::None);
        }
    });
    // SAFETY: the tasks wrote every value of both (the blocks and column runs of all
    // (image, head) pairs tile them); products that do not accumulate write all they cover.
    unsafe {
        out.set_len(out_len);
        probs.set_len(probs_len);
    }
    [
        tensor(out, vec![rows, w]),
        tensor(probs, vec![batch, heads, n, n]),
    ]
}

pub(super) fn attention_rows_backward(
    qkv: FlexTensor,
    probs: FlexTensor,
    grad: FlexTensor,
    heads: usize,
) -> FlexTensor {
    let (Some(qkv_c), Some(probs_c), Some(grad_c)) = (values(&qkv), values(&probs), values(&grad))
    else {
        return generic::attention_rows_backward::<Flex>(qkv, probs, grad, heads);
    };
    let (src, ps, gs) = (f32s(&qkv_c), f32s(&probs_c), f32s(&grad_c));
    let batch = probs_c.layout().shape()[0];
    let h = Heads::new(&qkv_c, batch, heads);
    let (n, dh, w) = (h.n, h.d_head, h.width);
    let (rows, three_width) = (batch * n, 3 * w);
    assert!(
        probs_c.layout().shape().to_vec() == [batch, heads, n, n]
            && grad_c.layout().shape().to_vec() == [rows, w],
        "attention_rows_backward: probabilities {:?} or gradient {:?} do not fit qkv rows \
         [{rows}, {three_width}]",
        probs_c.layout().shape(),
        grad_c.layout().shape()
    );
    let mut dqkv = Vec::with_capacity(rows * three_width);
    let d_ptr = Out(dqkv.as_mut_ptr());
    for_each_task(batch * heads, |task| {
        let (at_in, at_out) = h.offsets(task);
        let q = Mat::rows(src, at_in, 3 * w);
        let k = Mat::rows(src, at_in + w, 3 * w);
        let v = Mat::rows(src, at_in + 2 * w, 3 * w);
        let p_vals = &ps[task * n * n..(task + 1) * n * n];
        let p = Mat::rows(p_vals, 0, n);
        let d_out = Mat::rows(gs, at_out, w);
        let none = Parallelism::None;
        // SAFETY: task `task` alone writes its image's rows of its head's q, k and v
        // columns of dqkv; every operand lies in its buffer; products that do not accumulate
        // write all they cover.
        unsafe {
            let dq = d_ptr.at(at_in);
            let (dk, dv) = (dq.add(w), dq.add(2 * w));
            // dv = pᵀ · d_out
            product(n, dh, n, dv, 3 * w, false, p.t(), d_out, 1.0, none);
            // dp = d_out · vᵀ, then ds = scale * p ∘ (dp - rowsum(p ∘ dp))
            let mut ds = written_by(n * n, |ds| {
                product(n, n, dh, ds, n, false, d_out, v.t(), 1.0, none)
            });
            softmax_grad_in_place(p_vals, &mut ds, n, h.scale);
            let ds = Mat::rows(&ds, 0, n);
            // dq = ds · k, dk = dsᵀ · q
            product(n, dh, n, dq, 3 * w, false, ds, k, 1.0, none);
            product(n, dh, n, dk, 3 * w, false, ds.t(), q, 1.0, none);
        }
    });
    // SAFETY: the dq, dk and dv column runs of all (image, head) pairs tile dqkv.
    unsafe { dqkv.set_len(rows * three_width) };
    tensor(dqkv, vec![rows, three_width])
}
