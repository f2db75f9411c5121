//! Learning-rate schedules: linear warm-up, then cosine decay to a tenth of the peak.

use crate::config::DitTrainingConfig;

/// Learning rate at `step`: cosine decay from `peak` to 10% of it over `total` steps.
pub(crate) fn cosine_lr(peak: f64, step: usize, total: usize) -> f64 {
    let progress = step as f64 / total.max(1) as f64;
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// Learning rate of stage 2 at `step`: linear warm-up, then constant or cosine decay.
pub fn learning_rate(d: &DitTrainingConfig, step: usize) -> f64 {
    if step < d.warmup_steps {
        return d.learning_rate * (step + 1) as f64 / d.warmup_steps as f64;
    }
    if d.cosine_decay {
        cosine_lr(
            d.learning_rate,
            step - d.warmup_steps,
            d.steps.saturating_sub(d.warmup_steps),
        )
    } else {
        d.learning_rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_schedule_endpoints() {
        assert_eq!(cosine_lr(1.0, 0, 100), 1.0);
        assert!((cosine_lr(1.0, 100, 100) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(1.0, 50, 100) - 0.55).abs() < 1e-12);
    }
}
