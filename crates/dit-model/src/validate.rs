//! Validation of configs: the error that names a field, and the checks the
//! configs of every module share.

/// A configuration value that the model cannot be built with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid config: `{field}` {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `model.heads`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ConfigError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The same error, with `prefix.` in front of the field name.
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

/// Checks that a size is positive.
pub fn require_positive(field: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(field, "must be positive, got 0"));
    }
    Ok(())
}

/// Checks that `divisor` divides `value`, naming both fields.
pub fn require_divides(
    field: &str,
    divisor: usize,
    what: &str,
    value: usize,
) -> Result<(), ConfigError> {
    require_positive(field, divisor)?;
    if !value.is_multiple_of(divisor) {
        return Err(ConfigError::new(
            field,
            format!("= {divisor} must divide {what} = {value}"),
        ));
    }
    Ok(())
}

/// Checks that a number is finite and in `[low, high]`.
pub fn require_in_range(field: &str, value: f64, low: f64, high: f64) -> Result<(), ConfigError> {
    if !(value.is_finite() && value >= low && value <= high) {
        return Err(ConfigError::new(
            field,
            format!("must be in [{low}, {high}], got {value}"),
        ));
    }
    Ok(())
}
