//! Fixed 2-D sin-cos position tables (MAE) and resizing of learned position embeddings to
//! another patch grid.

/// The MAE 2-D sin-cos position table for a `grid_size` x `grid_size` patch grid, row-major
/// over patches, with a leading all-zero row for the cls token when `cls_token` is set.
///
/// As in facebookresearch/mae `get_2d_sincos_pos_embed`: the first half of the channels
/// encodes the patch **column**, the second half the row; within each half the sines come
/// before the cosines; frequencies are `1 / 10000^(2k / (d/2))` computed in f64.
///
/// # Shapes
/// - returns: `(1 + n_patches) * d_model` values (or `n_patches * d_model` without cls),
///   row-major `[tokens, d_model]`.
///
/// # Panics
/// If `d_model` is not a multiple of 4 (the table splits it into 4 equal parts).
pub fn sincos_2d(d_model: usize, grid_size: usize, cls_token: bool) -> Vec<f32> {
    assert!(
        d_model.is_multiple_of(4),
        "sin-cos table needs d_model divisible by 4, got {d_model}"
    );
    let half = d_model / 2;
    let quarter = half / 2;
    let omega: Vec<f64> = (0..quarter)
        .map(|k| 1.0 / 10000f64.powf(k as f64 / quarter as f64))
        .collect();
    let n_rows = grid_size * grid_size + usize::from(cls_token);
    let mut table = vec![0f32; n_rows * d_model];
    let offset = usize::from(cls_token) * d_model;
    for row in 0..grid_size {
        for col in 0..grid_size {
            let out = &mut table[offset + (row * grid_size + col) * d_model..][..d_model];
            for (part, pos) in [(0, col), (1, row)] {
                let dst = &mut out[part * half..][..half];
                for (k, w) in omega.iter().enumerate() {
                    let angle = pos as f64 * w;
                    dst[k] = angle.sin() as f32;
                    dst[quarter + k] = angle.cos() as f32;
                }
            }
        }
    }
    table
}

/// Resizes a position embedding `[n_prefix + old_grid², d]` (row-major) to a new grid,
/// keeping the `n_prefix` leading rows (the cls token) as they are.
///
/// The grid is resized with bicubic interpolation as `torch.nn.functional.interpolate(mode=
/// "bicubic", align_corners=False)` without antialiasing computes it (MAE's
/// `interpolate_pos_embed`), so that checkpoints transfer exactly. Equal sizes return the input.
pub fn resize_pos_embed(
    values: &[f32],
    d_model: usize,
    n_prefix: usize,
    old_grid: usize,
    new_grid: usize,
) -> Vec<f32> {
    assert_eq!(
        values.len(),
        (n_prefix + old_grid * old_grid) * d_model,
        "position embedding length does not match its grid"
    );
    if old_grid == new_grid {
        return values.to_vec();
    }
    let (prefix, grid) = values.split_at(n_prefix * d_model);
    let taps = bicubic_taps(old_grid, new_grid);
    let mut out = prefix.to_vec();
    out.resize((n_prefix + new_grid * new_grid) * d_model, 0.0);
    let dst = &mut out[n_prefix * d_model..];
    for (oy, ty) in taps.iter().enumerate() {
        for (ox, tx) in taps.iter().enumerate() {
            let o = &mut dst[(oy * new_grid + ox) * d_model..][..d_model];
            let mut acc = vec![0f64; d_model];
            for &(iy, wy) in ty {
                for &(ix, wx) in tx {
                    let w = wy * wx;
                    let src = &grid[(iy * old_grid + ix) * d_model..][..d_model];
                    acc.iter_mut()
                        .zip(src)
                        .for_each(|(a, &s)| *a += w * s as f64);
                }
            }
            o.iter_mut().zip(&acc).for_each(|(o, &a)| *o = a as f32);
        }
    }
    out
}

/// For each output index, the four (input index, weight) taps of torch's bicubic kernel
/// (a = -0.75, align_corners=False, indices clamped at the border).
fn bicubic_taps(n_in: usize, n_out: usize) -> Vec<[(usize, f64); 4]> {
    const A: f64 = -0.75;
    let cubic1 = |x: f64| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let cubic2 = |x: f64| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|o| {
            let src = (o as f64 + 0.5) * scale - 0.5;
            let base = src.floor();
            let t = src - base;
            let w = [cubic2(t + 1.0), cubic1(t), cubic1(1.0 - t), cubic2(2.0 - t)];
            let mut taps = [(0usize, 0f64); 4];
            for (k, tap) in taps.iter_mut().enumerate() {
                let idx = (base as i64 - 1 + k as i64).clamp(0, n_in as i64 - 1) as usize;
                *tap = (idx, w[k]);
            }
            taps
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sincos_first_half_encodes_columns() {
        let d = 8;
        let t = sincos_2d(d, 3, true);
        assert_eq!(t.len(), 10 * d);
        assert!(t[..d].iter().all(|&v| v == 0.0), "cls row must be zero");
        // token (row 0, col 1): first half varies with the column, second half is row 0.
        let tok = &t[2 * d..3 * d];
        assert!((tok[0] - 1f32.sin()).abs() < 1e-7);
        assert!((tok[2] - 1f32.cos()).abs() < 1e-7);
        assert_eq!(&tok[4..], &[0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn resize_is_identity_at_equal_size_and_keeps_cls() {
        let v: Vec<f32> = (0..(1 + 16) * 4).map(|i| i as f32 * 0.1).collect();
        assert_eq!(resize_pos_embed(&v, 4, 1, 4, 4), v);
        let r = resize_pos_embed(&v, 4, 1, 4, 2);
        assert_eq!(r.len(), (1 + 4) * 4);
        assert_eq!(&r[..4], &v[..4]);
    }

    #[test]
    fn bicubic_weights_sum_to_one() {
        for (i, o) in [(14, 7), (7, 14), (14, 3), (5, 5)] {
            for taps in bicubic_taps(i, o) {
                let s: f64 = taps.iter().map(|t| t.1).sum();
                assert!((s - 1.0).abs() < 1e-12);
            }
        }
    }
}
