/// Linear warm-up then half-cosine decay, evaluated per iteration (MAE's
/// `adjust_learning_rate`, stepped every iteration rather than per epoch fraction).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CosineSchedule {
    /// Peak learning rate, reached at the end of warm-up.
    pub base_lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Iterations of linear warm-up from 0.
    pub warmup_steps: usize,
    /// Total iterations of the run.
    pub total_steps: usize,
}

impl CosineSchedule {
    /// The learning rate at iteration `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.base_lr * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let t = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.min_lr + (self.base_lr - self.min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warms_up_linearly_then_decays_to_min() {
        let s = CosineSchedule {
            base_lr: 1e-3,
            min_lr: 1e-5,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 5e-4).abs() < 1e-12);
        assert!((s.lr(10) - 1e-3).abs() < 1e-12);
        assert!((s.lr(60) - (1e-5 + (1e-3 - 1e-5) * 0.5)).abs() < 1e-12);
        assert!((s.lr(110) - 1e-5).abs() < 1e-12);
        assert!(s.lr(200) >= 1e-5);
    }
}
