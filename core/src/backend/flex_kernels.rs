//! The fused row operations of [`super::Backend`] on burn-flex, the CPU backend: each a single
//! loop over contiguous f32 rows (written so that the compiler vectorises it), where burn's
//! default bodies make a dozen passes. Other float types take the default bodies.
//!
//! Forward LayerNorm and softmax are burn-flex's own fused kernels already; the backward passes
//! and GELU are here. GELU is `x Φ(x)` with the normal CDF `Φ` from Abramowitz & Stegun
//! 7.1.26, evaluated without libm calls (those are scalar and stop vectorisation); its
//! derivative shares the one exponential. `exp` is a range reduction to
//! `[-ln 2 / 2, ln 2 / 2]` and a degree-7 Taylor polynomial (relative error <= 1e-7). GELU and
//! its derivative are within 3e-7 · max(1, |x|) of float64 (tests measure both, and compare
//! with burn's libm-based GELU).

use burn::backend::Flex;
use burn::tensor::ops::FloatTensor;
use burn::tensor::TensorData;
use burn_flex::FlexTensor;
use std::mem::MaybeUninit;

use super::{flex_products, generic, Backend};

/// Calls a loop compiled for AVX2 + FMA when the CPU has them (checked once per call, a
/// cached CPUID read), else the same loop for the build's baseline target.
macro_rules! dispatch {
    ($name:ident($($arg:expr),* $(,)?)) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU supports the features the `avx2` module is compiled for.
                unsafe { avx2::$name($($arg),*) }
            } else {
                loops::$name($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            loops::$name($($arg),*)
        }
    }};
}

impl Backend for Flex {
    fn ln_rows_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> [FloatTensor<Self>; 3] {
        let (x, gamma, grad) = (
            x.to_contiguous(),
            gamma.to_contiguous(),
            grad.to_contiguous(),
        );
        let (Some(xs), Some(gs), Some(dys)) = (
            x.as_slice::<f32>(),
            gamma.as_slice::<f32>(),
            grad.as_slice::<f32>(),
        ) else {
            return generic::ln_rows_backward::<Self>(x, gamma, grad, eps);
        };
        let d = gs.len();
        let n = xs.len() / d;
        let mut dx = vec![0f32; xs.len()];
        let (dgamma, dbeta) = ln_backward(xs, gs, dys, eps as f32, &mut dx);
        [
            tensor(dx, vec![n, d]),
            tensor(dgamma, vec![d]),
            tensor(dbeta, vec![d]),
        ]
    }

    fn softmax_rows_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let (y, grad) = (y.to_contiguous(), grad.to_contiguous());
        let shape = y.layout().shape().clone();
        let (Some(ys), Some(dys)) = (y.as_slice::<f32>(), grad.as_slice::<f32>()) else {
            return generic::softmax_rows_backward::<Self>(y, grad);
        };
        let d = shape[shape.num_dims() - 1];
        let mut dx = vec![0f32; ys.len()];
        dispatch!(softmax_backward_rows(ys, dys, d, &mut dx));
        tensor(dx, shape.to_vec())
    }

    fn split_heads(x: FloatTensor<Self>, batch: usize, heads: usize) -> FloatTensor<Self> {
        let x = x.to_contiguous();
        let shape = x.layout().shape().clone();
        let (rows, width) = (shape[0], shape[1]);
        let (n, d_head) = (rows / batch, width / heads);
        let Some(xs) = x.as_slice::<f32>() else {
            return generic::split_heads::<Self>(x, batch, heads);
        };
        // Each (image, token, head) run of d_head values moves as one block.
        let mut out = vec![0f32; xs.len()];
        for (b, image) in xs.chunks_exact(n * width).enumerate() {
            for (t, row) in image.chunks_exact(width).enumerate() {
                for (h, run) in row.chunks_exact(d_head).enumerate() {
                    let at = ((b * heads + h) * n + t) * d_head;
                    out[at..at + d_head].copy_from_slice(run);
                }
            }
        }
        tensor(out, vec![batch, heads, n, d_head])
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let shape = x.layout().shape().clone();
        let [batch, heads, n, d_head] = [shape[0], shape[1], shape[2], shape[3]];
        if x.dtype() != burn::tensor::DType::F32 {
            return generic::merge_heads::<Self>(x);
        }
        // Read through the strides as they are (a transposed view arrives from the backward
        // pass of `k^T`): one pass, no intermediate contiguous copy.
        let strides = x.layout().strides().to_vec();
        let start = x.layout().start_offset() as isize;
        let src: &[f32] = x.storage();
        let width = heads * d_head;
        let mut out = vec![0f32; batch * n * width];
        for (r, row) in out.chunks_exact_mut(width).enumerate() {
            let (b, t) = (r / n, r % n);
            for (h, run) in row.chunks_exact_mut(d_head).enumerate() {
                let base = start
                    + b as isize * strides[0]
                    + h as isize * strides[1]
                    + t as isize * strides[2];
                if strides[3] == 1 {
                    let base = base as usize;
                    run.copy_from_slice(&src[base..base + d_head]);
                } else {
                    for (i, v) in run.iter_mut().enumerate() {
                        *v = src[(base + i as isize * strides[3]) as usize];
                    }
                }
            }
        }
        tensor(out, vec![batch * n, width])
    }

    fn linear_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        flex_products::linear_rows(x, w, b)
    }

    fn linear_rows_backward(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        wanted: [bool; 3],
    ) -> [Option<FloatTensor<Self>>; 3] {
        match flex_products::linear_rows_backward(x.clone(), w.clone(), grad.clone(), wanted) {
            Some(grads) => grads,
            None => generic::linear_rows_backward::<Self>(x, w, grad, wanted),
        }
    }

    fn linear_gelu_rows(
        x: FloatTensor<Self>,
        w: FloatTensor<Self>,
        b: FloatTensor<Self>,
        derivative: bool,
    ) -> (FloatTensor<Self>, Option<FloatTensor<Self>>) {
        flex_products::linear_gelu_rows(x, w, b, derivative)
    }

    fn attention_rows(
        qkv: FloatTensor<Self>,
        batch: usize,
        heads: usize,
    ) -> [FloatTensor<Self>; 2] {
        flex_products::attention_rows(qkv, batch, heads)
    }

    fn attention_rows_backward(
        qkv: FloatTensor<Self>,
        probs: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        flex_products::attention_rows_backward(qkv, probs, grad, heads)
    }

    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let x = x.to_contiguous();
        let shape = x.layout().shape().clone();
        let Some(xs) = x.as_slice::<f32>() else {
            return <Self as burn::tensor::ops::ActivationOps<Self>>::gelu(x);
        };
        let mut out = vec![0f32; xs.len()];
        dispatch!(gelu_values(xs, &mut out));
        tensor(out, shape.to_vec())
    }

    fn gelu_exact_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        let (x, grad) = (x.to_contiguous(), grad.to_contiguous());
        let shape = x.layout().shape().clone();
        let (Some(xs), Some(dys)) = (x.as_slice::<f32>(), grad.as_slice::<f32>()) else {
            return <Self as burn::tensor::ops::ActivationOps<Self>>::gelu_backward(x, grad);
        };
        let mut out = vec![0f32; xs.len()];
        dispatch!(gelu_grad_values(xs, dys, &mut out));
        tensor(out, shape.to_vec())
    }
}

/// The loops as plain functions, inlined into both the baseline and the AVX2 entry points.
/// Slices are walked with iterators (no bounds checks) so that the compiler vectorises them.
mod loops {
    use std::mem::MaybeUninit;

    use super::{
        cdf_and_density, exp_f32, gelu_f32, gelu_grad_f32, lane_dot, lane_max, lane_sum, mean_rstd,
    };

    #[inline(always)]
    pub fn ln_backward_rows(
        xs: &[f32],
        gamma: &[f32],
        dys: &[f32],
        eps: f32,
        dx: &mut [f32],
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let d = gamma.len();
        let (mut xhat, mut g) = (vec![0f32; d], vec![0f32; d]);
        let rows = xs.chunks_exact(d).zip(dys.chunks_exact(d));
        for ((row, dy), out) in rows.zip(dx.chunks_exact_mut(d)) {
            let (mean, rstd) = mean_rstd(row, eps);
            for (((((h, gi), &x), &dyi), &gm), (dg, db)) in xhat
                .iter_mut()
                .zip(g.iter_mut())
                .zip(row)
                .zip(dy)
                .zip(gamma)
                .zip(dgamma.iter_mut().zip(dbeta.iter_mut()))
            {
                *h = (x - mean) * rstd;
                *gi = dyi * gm;
                *dg += dyi * *h;
                *db += dyi;
            }
            let mean_g = lane_sum(&g) / d as f32;
            let mean_gx = lane_dot(&g, &xhat) / d as f32;
            for ((o, &gi), &h) in out.iter_mut().zip(&g).zip(&xhat) {
                *o = rstd * (gi - mean_g - h * mean_gx);
            }
        }
    }

    #[inline(always)]
    pub fn softmax_backward_rows(ys: &[f32], dys: &[f32], d: usize, dx: &mut [f32]) {
        let rows = ys.chunks_exact(d).zip(dys.chunks_exact(d));
        for ((yr, dyr), out) in rows.zip(dx.chunks_exact_mut(d)) {
            let dot = lane_dot(yr, dyr);
            for ((o, &y), &dy) in out.iter_mut().zip(yr).zip(dyr) {
                *o = y * (dy - dot);
            }
        }
    }

    #[inline(always)]
    pub fn softmax_rows_in_place(xs: &mut [f32], d: usize) {
        for row in xs.chunks_exact_mut(d) {
            let max = lane_max(row);
            for v in row.iter_mut() {
                *v = exp_f32(*v - max);
            }
            let inv = 1.0 / lane_sum(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }

    #[inline(always)]
    pub fn softmax_grad_in_place(ys: &[f32], dys: &mut [f32], d: usize, scale: f32) {
        for (yr, dyr) in ys.chunks_exact(d).zip(dys.chunks_exact_mut(d)) {
            let dot = lane_dot(yr, dyr);
            for (dy, &y) in dyr.iter_mut().zip(yr) {
                *dy = y * (*dy - dot) * scale;
            }
        }
    }

    #[inline(always)]
    pub fn column_sums(xs: &[f32], d: usize, out: &mut [f32]) {
        for row in xs.chunks_exact(d) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
    }

    #[inline(always)]
    pub fn gelu_in_place(xs: &mut [f32]) {
        for x in xs.iter_mut() {
            *x = gelu_f32(*x);
        }
    }

    #[inline(always)]
    pub fn gelu_and_derivative(xs: &mut [f32], out: &mut [MaybeUninit<f32>]) {
        for (x, o) in xs.iter_mut().zip(out.iter_mut()) {
            let (cdf, density) = cdf_and_density(*x);
            o.write(*x * cdf);
            *x = cdf + *x * density;
        }
    }

    #[inline(always)]
    pub fn gelu_values(xs: &[f32], out: &mut [f32]) {
        for (o, &x) in out.iter_mut().zip(xs) {
            *o = gelu_f32(x);
        }
    }

    #[inline(always)]
    pub fn gelu_grad_values(xs: &[f32], dys: &[f32], out: &mut [f32]) {
        for ((o, &x), &dy) in out.iter_mut().zip(xs).zip(dys) {
            *o = dy * gelu_grad_f32(x);
        }
    }
}

/// [`loops`] compiled with AVX2 and FMA enabled (8 lanes and fused multiply-adds).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::mem::MaybeUninit;

    macro_rules! with_avx2 {
        ($(fn $name:ident($($arg:ident: $ty:ty),*);)*) => {$(
            #[target_feature(enable = "avx2,fma")]
            pub unsafe fn $name($($arg: $ty),*) {
                super::loops::$name($($arg),*)
            }
        )*};
    }
    with_avx2! {
        fn ln_backward_rows(
            xs: &[f32], gamma: &[f32], dys: &[f32], eps: f32,
            dx: &mut [f32], dgamma: &mut [f32], dbeta: &mut [f32]
        );
        fn softmax_backward_rows(ys: &[f32], dys: &[f32], d: usize, dx: &mut [f32]);
        fn gelu_values(xs: &[f32], out: &mut [f32]);
        fn gelu_grad_values(xs: &[f32], dys: &[f32], out: &mut [f32]);
        fn softmax_rows_in_place(xs: &mut [f32], d: usize);
        fn softmax_grad_in_place(ys: &[f32], dys: &mut [f32], d: usize, scale: f32);
        fn column_sums(xs: &[f32], d: usize, out: &mut [f32]);
        fn gelu_in_place(xs: &mut [f32]);
        fn gelu_and_derivative(xs: &mut [f32], out: &mut [MaybeUninit<f32>]);
    }
}

std::thread_local! {
    /// Set on threads that run one of several shards of a step (see [`on_this_thread`]).
    static ON_THIS_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `job` with the fused CPU operations kept on the calling thread (no fan-out to the
/// thread pool). For jobs that already run side by side on threads of their own, one per
/// core, as the shards of a training step do: fanning each product out again only adds
/// hand-offs between the same cores.
pub fn on_this_thread<T>(job: impl FnOnce() -> T) -> T {
    /// Restores the flag when the job ends, by return or by panic.
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            ON_THIS_THREAD.with(|flag| flag.set(self.0));
        }
    }
    let _restore = Restore(ON_THIS_THREAD.with(|flag| flag.replace(true)));
    job()
}

/// Whether CPU kernels may hand work to the thread pool here.
#[cfg(feature = "rayon")]
pub(super) fn fan_out() -> bool {
    !ON_THIS_THREAD.with(|flag| flag.get())
}

/// Values per piece when an element-wise loop is split over threads.
#[cfg(feature = "rayon")]
const PIECE: usize = 1 << 16;

/// Whether a loop over `len` values is split over threads.
#[cfg(feature = "rayon")]
fn in_pieces(len: usize) -> bool {
    fan_out() && len >= 2 * PIECE
}

/// Whole rows of `d` values, about [`PIECE`] values.
#[cfg(feature = "rayon")]
fn piece_of_rows(d: usize) -> usize {
    (PIECE / d).max(1) * d
}

/// LayerNorm backward into `dx`; returns the gradients of gamma and beta.
fn ln_backward(
    xs: &[f32],
    gamma: &[f32],
    dys: &[f32],
    eps: f32,
    dx: &mut [f32],
) -> (Vec<f32>, Vec<f32>) {
    let d = gamma.len();
    let piece = |xs: &[f32], dys: &[f32], dx: &mut [f32]| {
        let (mut dgamma, mut dbeta) = (vec![0f32; d], vec![0f32; d]);
        dispatch!(ln_backward_rows(
            xs,
            gamma,
            dys,
            eps,
            dx,
            &mut dgamma,
            &mut dbeta
        ));
        (dgamma, dbeta)
    };
    #[cfg(feature = "rayon")]
    if in_pieces(xs.len()) {
        use rayon::prelude::*;
        let rows = piece_of_rows(d);
        let partial: Vec<(Vec<f32>, Vec<f32>)> = xs
            .par_chunks(rows)
            .zip(dys.par_chunks(rows))
            .zip(dx.par_chunks_mut(rows))
            .map(|((x, dy), dx)| piece(x, dy, dx))
            .collect();
        let (mut dgamma, mut dbeta) = (vec![0f32; d], vec![0f32; d]);
        for (dg, db) in partial {
            dgamma.iter_mut().zip(dg).for_each(|(o, v)| *o += v);
            dbeta.iter_mut().zip(db).for_each(|(o, v)| *o += v);
        }
        return (dgamma, dbeta);
    }
    piece(xs, dys, dx)
}

/// Softmax of each row of `d` values, in place.
pub(super) fn softmax_rows_in_place(xs: &mut [f32], d: usize) {
    dispatch!(softmax_rows_in_place(xs, d))
}

/// Softmax backward in place: each row of `dys` becomes `scale * y * (dy - Σ dy y)`.
pub(super) fn softmax_grad_in_place(ys: &[f32], dys: &mut [f32], d: usize, scale: f32) {
    dispatch!(softmax_grad_in_place(ys, dys, d, scale))
}

/// Adds the sum of the rows of `xs` (rows of `d` values) to `out`.
pub(super) fn column_sums(xs: &[f32], d: usize, out: &mut [f32]) {
    #[cfg(feature = "rayon")]
    if in_pieces(xs.len()) {
        use rayon::prelude::*;
        let partial: Vec<Vec<f32>> = xs
            .par_chunks(piece_of_rows(d))
            .map(|piece| {
                let mut sums = vec![0f32; d];
                dispatch!(column_sums(piece, d, &mut sums));
                sums
            })
            .collect();
        for sums in partial {
            out.iter_mut().zip(sums).for_each(|(o, s)| *o += s);
        }
        return;
    }
    dispatch!(column_sums(xs, d, out))
}

/// GELU of each value of `xs`, in place.
pub(super) fn gelu_in_place(xs: &mut [f32]) {
    #[cfg(feature = "rayon")]
    if in_pieces(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks_mut(PIECE)
            .for_each(|piece| dispatch!(gelu_in_place(piece)));
        return;
    }
    dispatch!(gelu_in_place(xs))
}

/// GELU of each value of `xs` into `out` (written in full), and GELU's derivative at it in
/// place of it.
pub(super) fn gelu_and_derivative(xs: &mut [f32], out: &mut [MaybeUninit<f32>]) {
    assert_eq!(xs.len(), out.len());
    #[cfg(feature = "rayon")]
    if in_pieces(xs.len()) {
        use rayon::prelude::*;
        xs.par_chunks_mut(PIECE)
            .zip(out.par_chunks_mut(PIECE))
            .for_each(|(x, o)| dispatch!(gelu_and_derivative(x, o)));
        return;
    }
    dispatch!(gelu_and_derivative(xs, out))
}

fn tensor(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

/// Mean and reciprocal standard deviation (biased variance, as LayerNorm) of one row.
#[inline(always)]
fn mean_rstd(row: &[f32], eps: f32) -> (f32, f32) {
    let n = row.len() as f32;
    let mean = lane_sum(row) / n;
    let mut acc = [0f32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += (c[j] - mean) * (c[j] - mean);
        }
    }
    let var = (acc.iter().sum::<f32>() + tail) / n;
    (mean, 1.0 / (var + eps).sqrt())
}

/// Independent partial sums: an in-order f32 sum cannot be vectorised (reassociating it
/// changes the result), eight running sums can.
const LANES: usize = 8;

#[inline(always)]
fn lane_sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for j in 0..LANES {
            acc[j] += c[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[inline(always)]
fn lane_max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    // A compare-and-select, not `f32::max` (whose NaN rule costs extra instructions per lane).
    let larger = |m: f32, v: f32| if v > m { v } else { m };
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| larger(m, v));
    for c in chunks {
        for j in 0..LANES {
            acc[j] = larger(acc[j], c[j]);
        }
    }
    acc.iter().fold(tail, |m, &v| larger(m, v))
}

#[inline(always)]
fn lane_dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..LANES {
            acc[j] += x[j] * y[j];
        }
    }
    acc.iter().sum::<f32>() + tail
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;

/// `0.5 x (1 + erf(x / √2))`, that is `x Φ(x)`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    x * cdf_and_density(x).0
}

/// d gelu / dx = `Φ(x) + x φ(x)`.
#[inline(always)]
pub fn gelu_grad_f32(x: f32) -> f32 {
    let (cdf, density) = cdf_and_density(x);
    cdf + x * density
}

/// The standard normal distribution's `Φ(x)` and density `φ(x) = e^(-x²/2) / √(2π)`, sharing
/// one exponential: `Φ` comes from Abramowitz & Stegun 7.1.26, `erfc(a) ≈ t P(t) e^(-a²)`
/// with `a = |x| / √2` (absolute error <= 1.5e-7), as `Φ(x) = erfc(a) / 2` for negative x and
/// `1 - erfc(a) / 2` otherwise. GELU needs Φ to an absolute error (its value is `x Φ(x)`), so
/// no series for relative accuracy near zero is needed.
#[inline(always)]
fn cdf_and_density(x: f32) -> (f32, f32) {
    // 1 / √(2π)
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    let a = x.abs() * FRAC_1_SQRT_2;
    let gauss = exp_f32(-a * a);
    let half_erfc = 0.5 * erfc_tail(a) * gauss;
    let cdf = if x < 0.0 { half_erfc } else { 1.0 - half_erfc };
    (cdf, INV_SQRT_2PI * gauss)
}

/// `t P(t)` of Abramowitz & Stegun 7.1.26 at `a >= 0`: `erfc(a) ≈ t P(t) e^(-a²)`.
#[inline(always)]
fn erfc_tail(a: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    t * (0.254_829_6
        + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))))
}

/// `e^y` without a libm call: `y = k ln 2 + r`, `e^r` by its Taylor polynomial to `r^7 / 7!`
/// on `|r| <= ln 2 / 2`, times `2^k` built in the exponent bits. Inputs are clamped to
/// [-87, 88] (the normal f32 range of the result).
#[inline(always)]
pub fn exp_f32(y: f32) -> f32 {
    let y = y.clamp(-87.0, 88.0);
    // Round to nearest by adding and removing 1.5 * 2^23 (`f32::round` is a libm call on
    // baseline x86-64 and would stop vectorisation).
    const SHIFTER: f32 = 12_582_912.0;
    let k = (y * std::f32::consts::LOG2_E + SHIFTER) - SHIFTER;
    // ln 2 in two parts; k * LN2_HI is exact for the k that occur.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let r = (y - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // Wrapping: k lies in [-126, 128] after the clamp, and a checked add would stop
    // vectorisation in builds with overflow checks.
    p * f32::from_bits(((k as i32).wrapping_add(127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// erf by Simpson's rule on `2/√π e^(-t²)` in f64 (exact to ~1e-12 at this step count).
    fn erf_f64(x: f64) -> f64 {
        let n = 4000;
        let h = x / n as f64;
        let f = |t: f64| (-t * t).exp();
        let mut s = f(0.0) + f(x);
        for i in 1..n {
            s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
        }
        s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
    }

    #[test]
    fn exp_and_gelu_are_within_their_stated_errors() {
        let mut worst_exp = 0f64;
        for i in -8700..=8800 {
            let y = i as f32 * 1e-2;
            let want = (y as f64).exp();
            worst_exp = worst_exp.max(((exp_f32(y) as f64 - want) / want).abs());
        }
        assert!(worst_exp <= 1e-7, "exp relative error {worst_exp}");
        // GELU and its derivative through Φ: absolute errors against float64.
        let (mut worst_gelu, mut worst_grad) = (0f64, 0f64);
        for i in -6000..=6000 {
            let x = i as f32 * 2e-3;
            let xd = x as f64;
            let cdf = 0.5 * (1.0 + erf_f64(xd / std::f64::consts::SQRT_2));
            let density = (-0.5 * xd * xd).exp() / (2.0 * std::f64::consts::PI).sqrt();
            let scale = xd.abs().max(1.0);
            worst_gelu = worst_gelu.max((gelu_f32(x) as f64 - xd * cdf).abs() / scale);
            worst_grad =
                worst_grad.max((gelu_grad_f32(x) as f64 - (cdf + xd * density)).abs() / scale);
        }
        assert!(worst_gelu <= 3e-7, "gelu error {worst_gelu}");
        assert!(worst_grad <= 3e-7, "gelu gradient error {worst_grad}");
        assert_eq!(gelu_f32(0.0), 0.0);
        assert!(gelu_f32(-30.0).abs() < 1e-30);
        assert_eq!(gelu_f32(30.0), 30.0);
    }
}
