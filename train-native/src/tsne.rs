//! A seeded 2-D t-SNE of feature vectors, and two measures of how well a map separates the
//! classes: the leave-one-out k-nearest-neighbour accuracy and the silhouette score.
//!
//! t-SNE: L. van der Maaten, G. Hinton, "Visualizing Data using t-SNE", JMLR 2008; the
//! Barnes–Hut approximation: L. van der Maaten, JMLR 2014 (the `bhtsne` crate). Silhouette:
//! P. Rousseeuw, J. Comput. Appl. Math. 1987.
//!
//! `bhtsne` draws its starting map from an unseeded generator and sums in parallel with rayon;
//! here the start comes from the seed and the fit runs on one thread, so a seed always gives
//! the same points, bit for bit.

use anyhow::{bail, Context, Result};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

/// Spread of the random starting map (van der Maaten's reference code uses 1e-4).
const INIT_STD: f32 = 1e-4;

/// t-SNE settings.
#[derive(Debug, Clone, Serialize)]
pub struct TsneSettings {
    /// The effective number of neighbours each point's Gaussian covers; t-SNE needs more
    /// than 3 x perplexity points. Default: 30 (van der Maaten).
    pub perplexity: f32,
    /// Gradient-descent iterations (the first 250 exaggerate the attractions). Default: 1000.
    pub iterations: usize,
    /// Barnes–Hut accuracy/speed trade-off: 0 would be exact, larger is coarser. Default: 0.5.
    pub theta: f32,
    /// Seed of the starting map.
    pub seed: u64,
}

impl TsneSettings {
    /// Checks the values against each other and against the number of points.
    pub fn validate(&self, n_points: usize) -> Result<()> {
        if !(self.perplexity.is_finite() && self.perplexity >= 1.0) {
            bail!("--perplexity must be at least 1, got {}", self.perplexity);
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            bail!("--theta must be positive, got {}", self.theta);
        }
        if self.iterations == 0 {
            bail!("--iterations must be at least 1");
        }
        if n_points as f32 <= 3.0 * self.perplexity {
            let hint = if n_points >= 4 {
                format!("use --perplexity {} or lower", (n_points - 1) / 3)
            } else {
                "at least 4 points are needed".to_string()
            };
            bail!(
                "t-SNE needs more than 3 x perplexity points: {n_points} points at perplexity {} \
                 (needs more than {}); {hint}",
                self.perplexity,
                3.0 * self.perplexity
            );
        }
        Ok(())
    }
}

/// The 2-D t-SNE map of `n = ids.len()` feature vectors of width `dim`, stored row-major in
/// `features`. `ids` name the points in errors (a non-finite feature names its image).
pub fn tsne_2d(
    features: &[f32],
    dim: usize,
    ids: &[String],
    settings: &TsneSettings,
) -> Result<Vec<[f32; 2]>> {
    assert!(
        dim > 0 && features.len() == ids.len() * dim,
        "{} feature values are not {} rows of {dim}",
        features.len(),
        ids.len()
    );
    check_finite(features, dim, ids)?;
    let rows: Vec<&[f32]> = features.chunks(dim).collect();
    settings.validate(rows.len())?;

    let mut rng = StdRng::seed_from_u64(settings.seed);
    let normal = Normal::new(0.0, INIT_STD).expect("a positive spread");
    let start: Vec<f32> = (0..2 * rows.len())
        .map(|_| normal.sample(&mut rng))
        .collect();

    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .context("cannot start the t-SNE thread")?;
    let flat = pool.install(|| {
        bhtsne::tSNE::<f32, &[f32], 2>::new(&rows)
            .perplexity(settings.perplexity)
            .epochs(settings.iterations)
            .initial_embedding(start)
            .barnes_hut(settings.theta, |a, b| euclidean(a, b))
            .embedding()
    });
    let points: Vec<[f32; 2]> = flat.chunks(2).map(|p| [p[0], p[1]]).collect();
    if points.iter().flatten().any(|v| !v.is_finite()) {
        bail!("t-SNE diverged (non-finite coordinates); try another --perplexity or --seed");
    }
    Ok(points)
}

/// Fails on the first non-finite feature value, naming its image.
pub fn check_finite(features: &[f32], dim: usize, ids: &[String]) -> Result<()> {
    let Some(at) = features.iter().position(|v| !v.is_finite()) else {
        return Ok(());
    };
    bail!(
        "the feature of image {} is not finite ({} at dimension {}); the checkpoint or the \
         image is broken",
        ids[at / dim],
        features[at],
        at % dim
    )
}

fn euclidean(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f32>()
        .sqrt()
}

fn dist2(a: [f32; 2], b: [f32; 2]) -> f64 {
    let (dx, dy) = ((a[0] - b[0]) as f64, (a[1] - b[1]) as f64);
    dx * dx + dy * dy
}

/// How well a 2-D map keeps the classes apart.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Separation {
    /// Share of points whose class is the majority of their k nearest other points (ties go
    /// to the class with the nearest member). Chance is about the largest class's share.
    pub knn_accuracy: f64,
    /// k of the kNN accuracy.
    pub k: usize,
    /// Mean silhouette in [-1, 1]: near 1 for tight, well-apart classes, near 0 for overlapping
    /// ones. `None` with fewer than two classes.
    pub silhouette: Option<f64>,
}

impl Separation {
    /// Both scores of `points` labelled `classes`, with k = `k`.
    pub fn measure(points: &[[f32; 2]], classes: &[usize], k: usize) -> Self {
        Self {
            knn_accuracy: knn_accuracy(points, classes, k),
            k,
            silhouette: silhouette(points, classes),
        }
    }

    /// One line, e.g. `kNN-5 accuracy 81.2 %, silhouette 0.412`.
    pub fn summary(&self) -> String {
        let sil = self
            .silhouette
            .map_or("-".to_string(), |s| format!("{s:.3}"));
        format!(
            "kNN-{} accuracy {:.1} %, silhouette {sil}",
            self.k,
            100.0 * self.knn_accuracy
        )
    }
}

/// Leave-one-out k-nearest-neighbour accuracy (Euclidean) of `points` labelled `classes`.
pub fn knn_accuracy(points: &[[f32; 2]], classes: &[usize], k: usize) -> f64 {
    assert_eq!(points.len(), classes.len(), "one class per point");
    let n = points.len();
    if n < 2 || k == 0 {
        return 0.0;
    }
    let n_classes = classes.iter().max().map_or(0, |m| m + 1);
    let mut correct = 0;
    let mut others: Vec<(f64, usize)> = Vec::with_capacity(n - 1);
    for (i, &p) in points.iter().enumerate() {
        others.clear();
        others.extend((0..n).filter(|&j| j != i).map(|j| (dist2(p, points[j]), j)));
        let k = k.min(others.len());
        // Distance, then index: a total order, so ties resolve the same way every run.
        others.select_nth_unstable_by(k - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let nearest = &mut others[..k];
        nearest.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));

        let mut votes = vec![0usize; n_classes];
        for &(_, j) in nearest.iter() {
            votes[classes[j]] += 1;
        }
        let top = *votes.iter().max().expect("at least one class");
        let vote = nearest
            .iter()
            .map(|&(_, j)| classes[j])
            .find(|&c| votes[c] == top)
            .expect("the top class has a neighbour");
        correct += usize::from(vote == classes[i]);
    }
    correct as f64 / n as f64
}

/// The mean silhouette of `points` labelled `classes` (Euclidean): per point
/// `(b − a) / max(a, b)` with `a` its mean distance to its own class and `b` that to the
/// nearest other class; 0 for a point alone in its class (as scikit-learn). `None` when
/// fewer than two classes occur.
pub fn silhouette(points: &[[f32; 2]], classes: &[usize]) -> Option<f64> {
    assert_eq!(points.len(), classes.len(), "one class per point");
    let n_classes = classes.iter().max().map_or(0, |m| m + 1);
    let mut sizes = vec![0usize; n_classes];
    for &c in classes {
        sizes[c] += 1;
    }
    if sizes.iter().filter(|&&s| s > 0).count() < 2 {
        return None;
    }
    let mut total = 0.0;
    let mut sums = vec![0f64; n_classes];
    for (i, &p) in points.iter().enumerate() {
        sums.fill(0.0);
        for (j, &q) in points.iter().enumerate() {
            if j != i {
                sums[classes[j]] += dist2(p, q).sqrt();
            }
        }
        let own = classes[i];
        if sizes[own] < 2 {
            continue;
        }
        let a = sums[own] / (sizes[own] - 1) as f64;
        let b = (0..n_classes)
            .filter(|&c| c != own && sizes[c] > 0)
            .map(|c| sums[c] / sizes[c] as f64)
            .fold(f64::INFINITY, f64::min);
        let m = a.max(b);
        if m > 0.0 {
            total += (b - a) / m;
        }
    }
    Some(total / points.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two Gaussian blobs of `per` points each in 16 dimensions, 10 standard deviations apart.
    fn blobs(per: usize) -> (Vec<f32>, Vec<usize>, Vec<String>) {
        let mut rng = StdRng::seed_from_u64(5);
        let normal = Normal::new(0.0f32, 1.0).unwrap();
        let mut features = Vec::new();
        let mut classes = Vec::new();
        for c in 0..2 {
            for _ in 0..per {
                features.extend(
                    (0..16).map(|d| {
                        normal.sample(&mut rng) + if d == 0 { 10.0 * c as f32 } else { 0.0 }
                    }),
                );
                classes.push(c);
            }
        }
        let ids = (0..2 * per).map(|i| format!("p{i}")).collect();
        (features, classes, ids)
    }

    fn settings(seed: u64) -> TsneSettings {
        TsneSettings {
            perplexity: 10.0,
            iterations: 500,
            theta: 0.5,
            seed,
        }
    }

    #[test]
    fn a_seed_gives_the_same_map_and_separated_blobs_stay_apart() {
        let (f, classes, ids) = blobs(40);
        let a = tsne_2d(&f, 16, &ids, &settings(1)).unwrap();
        let b = tsne_2d(&f, 16, &ids, &settings(1)).unwrap();
        let bits = |p: &[[f32; 2]]| p.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "same seed, same points");
        let c = tsne_2d(&f, 16, &ids, &settings(2)).unwrap();
        assert_ne!(bits(&a), bits(&c), "the seed is used");

        // Blobs 10 sigma apart: every neighbour is of the own class, the silhouette is high.
        let s = Separation::measure(&a, &classes, 5);
        assert_eq!(s.knn_accuracy, 1.0, "{}", s.summary());
        assert!(s.silhouette.unwrap() > 0.6, "{}", s.summary());
    }

    #[test]
    fn too_few_points_and_non_finite_features_are_errors() {
        let (f, _, ids) = blobs(5);
        let err = tsne_2d(&f, 16, &ids, &settings(0)).unwrap_err().to_string();
        assert!(
            err.contains("10 points at perplexity 10") && err.contains("--perplexity 3"),
            "{err}"
        );
        assert!(tsne_2d(&f[..48], 16, &ids[..3], &settings(0))
            .unwrap_err()
            .to_string()
            .contains("at least 4 points"));

        let mut f = f;
        f[16 * 7 + 3] = f32::NAN;
        let err = tsne_2d(&f, 16, &ids, &settings(0)).unwrap_err().to_string();
        assert!(err.contains("image p7") && err.contains("NaN"), "{err}");
    }

    #[test]
    fn scores_match_hand_computed_values() {
        // Two classes on a line: 0 at x = 0 and 1, class 1 at x = 10 and 11.
        let p = [[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [11.0, 0.0]];
        let c = [0, 0, 1, 1];
        assert_eq!(knn_accuracy(&p, &c, 1), 1.0);
        // k = 3 sees both other-class points for everyone: all wrong.
        assert_eq!(knn_accuracy(&p, &c, 3), 0.0);
        // Point 0: a = 1, b = 10.5 -> 0.9048; point 1: a = 1, b = 9.5 -> 0.8947; symmetric.
        let want = (9.5 / 10.5 + 8.5 / 9.5) / 2.0;
        assert!((silhouette(&p, &c).unwrap() - want).abs() < 1e-12);
        assert_eq!(silhouette(&p, &[0, 0, 0, 0]), None);
        // A singleton class scores 0 for its point.
        let s = silhouette(&p[..3], &[0, 0, 1]).unwrap();
        let want = ((10.0 - 1.0) / 10.0 + (9.0 - 1.0) / 9.0) / 3.0;
        assert!((s - want).abs() < 1e-12, "{s}");
    }
}
