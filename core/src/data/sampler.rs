//! Class-balanced sampling: AffectNet's training set is dominated by happy and neutral faces
//! (contempt and disgust have a few thousand each), so training draws every class equally often.

/// Draws sample indices so that each class present is equally likely, and each sample uniformly
/// within its class (with replacement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalancedSampler {
    /// Sample indices of each class that has any; empty classes are left out.
    by_class: Vec<Vec<usize>>,
}

impl BalancedSampler {
    /// From the hard label of every sample (e.g. [`Split::labels`](super::Split::labels)).
    ///
    /// # Panics
    /// If a label is `n_classes` or more.
    pub fn new(classes: &[usize], n_classes: usize) -> Self {
        let mut by_class = vec![Vec::new(); n_classes];
        for (i, &c) in classes.iter().enumerate() {
            assert!(
                c < n_classes,
                "sample {i} has class {c}, but there are {n_classes}"
            );
            by_class[c].push(i);
        }
        by_class.retain(|members| !members.is_empty());
        Self { by_class }
    }

    /// How many classes have samples (and so are drawn).
    pub fn n_classes_present(&self) -> usize {
        self.by_class.len()
    }

    /// `n` sample indices for one epoch; empty when there are no samples.
    pub fn epoch(&self, rng: &mut impl rand::Rng, n: usize) -> Vec<usize> {
        if self.by_class.is_empty() {
            return Vec::new();
        }
        (0..n)
            .map(|_| {
                let members = &self.by_class[rng.random_range(0..self.by_class.len())];
                members[rng.random_range(0..members.len())]
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn classes_are_drawn_equally_and_members_uniformly() {
        // 1000 samples of class 0, 10 of class 2, 100 of class 3, none of class 1.
        let mut labels = vec![0; 1000];
        labels.extend([2; 10]);
        labels.extend([3; 100]);
        let sampler = BalancedSampler::new(&labels, 4);
        assert_eq!(sampler.n_classes_present(), 3);

        let n = 30_000;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let drawn = sampler.epoch(&mut rng, n);
        assert_eq!(drawn.len(), n);

        // Per class: binomial(n, 1/3), sd = sqrt(n * 1/3 * 2/3) ~ 82; allow 5 sd.
        let mut per_class = [0usize; 4];
        let mut per_sample = vec![0usize; labels.len()];
        for &i in &drawn {
            per_class[labels[i]] += 1;
            per_sample[i] += 1;
        }
        assert_eq!(per_class[1], 0);
        for c in [0, 2, 3] {
            assert!(
                per_class[c].abs_diff(n / 3) < 410,
                "class {c}: {per_class:?}"
            );
        }
        // Each of the 10 class-2 samples: binomial(n, 1/30), sd ~ 31; allow 5 sd.
        for (i, &count) in per_sample.iter().enumerate().skip(1000).take(10) {
            assert!(count.abs_diff(n / 30) < 160, "sample {i}: {count}");
        }
    }

    #[test]
    fn no_samples_give_an_empty_epoch() {
        let sampler = BalancedSampler::new(&[], 3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert!(sampler.epoch(&mut rng, 5).is_empty());
    }

    #[test]
    #[should_panic(expected = "sample 1 has class 3, but there are 3")]
    fn labels_beyond_the_class_count_panic() {
        BalancedSampler::new(&[0, 3], 3);
    }
}
