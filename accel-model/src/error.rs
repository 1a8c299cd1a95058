//! Errors that name the field a user has to fix.

/// Why a workload, hardware configuration, preset or sweep was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A field holds a value the model cannot use (zero or negative size, clock, bandwidth...).
    #[error("invalid `{field}` = {value}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
    /// `--hw NAME` names no built-in preset.
    #[error("unknown hardware preset `{0}` (known: {1})")]
    UnknownPreset(String, String),
    /// A preset or sweep names a device that is not in the device table.
    #[error("unknown device `{0}` (known: {1})")]
    UnknownDevice(String, String),
    /// A layer whose operands do not fit the memory that must hold them.
    #[error("`{field}`: {what} needs {needed} words but {memory} holds {capacity}")]
    TooLarge {
        field: String,
        what: String,
        needed: u64,
        memory: String,
        capacity: u64,
    },
    /// A TOML document (preset, device table, user file) that does not parse.
    #[error("while reading {origin}: {message}")]
    Parse { origin: String, message: String },
}

impl ModelError {
    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> Self {
        ModelError::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Checks `value > 0` for a size or count.
pub(crate) fn positive_usize(field: &str, value: usize) -> Result<(), ModelError> {
    if value == 0 {
        return Err(ModelError::invalid(field, value, "must be at least 1"));
    }
    Ok(())
}

/// Checks that a physical quantity (clock, bandwidth, power, energy) is finite and
/// positive, or (with `allow_zero`) not negative.
pub(crate) fn positive_f64(field: &str, value: f64, allow_zero: bool) -> Result<(), ModelError> {
    let ok = value.is_finite() && (value > 0.0 || (allow_zero && value == 0.0));
    if !ok {
        let want = if allow_zero {
            "must be finite and not negative"
        } else {
            "must be finite and greater than zero"
        };
        return Err(ModelError::invalid(field, value, want));
    }
    Ok(())
}
