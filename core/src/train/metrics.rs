/// A confusion matrix over `n` classes: `counts[truth][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfusionMatrix {
    /// Row = true class, column = predicted class.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    /// An empty matrix for `n` classes.
    pub fn new(n: usize) -> Self {
        Self {
            counts: vec![vec![0; n]; n],
        }
    }

    /// Records one prediction.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    /// Number of recorded predictions.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// Share of correct predictions (0 when empty).
    pub fn accuracy(&self) -> f64 {
        let correct: u64 = (0..self.counts.len()).map(|i| self.counts[i][i]).sum();
        correct as f64 / self.total().max(1) as f64
    }

    /// Recall of each class; `None` for classes with no samples.
    pub fn per_class_accuracy(&self) -> Vec<Option<f64>> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| {
                let n: u64 = row.iter().sum();
                (n > 0).then(|| row[i] as f64 / n as f64)
            })
            .collect()
    }

    /// Mean of the per-class accuracies over the classes that have samples.
    pub fn mean_class_accuracy(&self) -> f64 {
        let accs: Vec<f64> = self.per_class_accuracy().into_iter().flatten().collect();
        accs.iter().sum::<f64>() / accs.len().max(1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_mean_class_accuracy() {
        let mut m = ConfusionMatrix::new(3);
        for (t, p) in [(0, 0), (0, 0), (0, 1), (1, 1), (2, 0)] {
            m.add(t, p);
        }
        assert_eq!(m.total(), 5);
        assert!((m.accuracy() - 0.6).abs() < 1e-12);
        assert_eq!(
            m.per_class_accuracy(),
            vec![Some(2.0 / 3.0), Some(1.0), Some(0.0)]
        );
        assert!((m.mean_class_accuracy() - (2.0 / 3.0 + 1.0) / 3.0).abs() < 1e-12);
    }
}
