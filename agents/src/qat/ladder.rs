//! The ladder of bit widths the scheduler walks down, and which tensor classes each
//! width applies to.
//!
//! A ladder is strictly decreasing (32, 24, 16, ...): every rung narrows. The main ladder
//! (`--widths`) names the rungs; weights (weight, bias), activations (input,
//! pre-activation, activation) and errors/gradients (error, grad, optimizer state,
//! update) may each have their own ladder of the same length, rung by rung.

use serde::{Deserialize, Serialize};

use super::QatError;
use crate::precision::TensorClass;

type Result<T> = std::result::Result<T, QatError>;

/// The default ladder.
pub const DEFAULT_WIDTHS: [u32; 8] = [32, 24, 16, 12, 10, 8, 6, 4];

/// Narrowest width a derived format may take: a signed format needs the sign bit and at
/// least one magnitude bit.
pub const MIN_WIDTH: u32 = 2;
/// Widest width: the fixed-point datapath (and `quant::exact_linear`) stops at 32 bits.
pub const MAX_WIDTH: u32 = 32;

/// The groups of tensor classes that may follow their own ladder.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassGroup {
    Weights,
    Activations,
    Errors,
}

impl ClassGroup {
    pub fn of(class: TensorClass) -> ClassGroup {
        match class {
            TensorClass::Weight | TensorClass::Bias => ClassGroup::Weights,
            TensorClass::Input | TensorClass::Preact | TensorClass::Activation => {
                ClassGroup::Activations
            }
            TensorClass::Error
            | TensorClass::Grad
            | TensorClass::OptState
            | TensorClass::Update => ClassGroup::Errors,
        }
    }
}

/// One rung: its label width and the width of each class group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rung {
    pub width: u32,
    pub weights: u32,
    pub activations: u32,
    pub errors: u32,
}

impl Rung {
    /// Every class at `width`.
    pub fn uniform(width: u32) -> Self {
        Rung {
            width,
            weights: width,
            activations: width,
            errors: width,
        }
    }

    /// The width this rung gives `class`.
    pub fn width_of(&self, class: TensorClass) -> u32 {
        match ClassGroup::of(class) {
            ClassGroup::Weights => self.weights,
            ClassGroup::Activations => self.activations,
            ClassGroup::Errors => self.errors,
        }
    }

    /// `w16` or `w16 (weights 8, activations 12, errors 16)` when the groups differ.
    pub fn describe(&self) -> String {
        if self.weights == self.width && self.activations == self.width && self.errors == self.width
        {
            format!("w{}", self.width)
        } else {
            format!(
                "w{} (weights {}, activations {}, errors {})",
                self.width, self.weights, self.activations, self.errors
            )
        }
    }
}

/// The validated ladder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ladder {
    pub rungs: Vec<Rung>,
}

impl Ladder {
    /// Builds a ladder from the main widths and optional per-group widths, each already
    /// parsed; `flag` names are used in errors.
    pub fn new(
        widths: &[u32],
        weights: Option<&[u32]>,
        activations: Option<&[u32]>,
        errors: Option<&[u32]>,
    ) -> Result<Ladder> {
        validate("--widths", widths)?;
        let group = |flag: &str, g: Option<&[u32]>| -> Result<Vec<u32>> {
            match g {
                None => Ok(widths.to_vec()),
                Some(g) => {
                    validate(flag, g)?;
                    if g.len() != widths.len() {
                        return Err(QatError::Invalid(format!(
                            "{flag} has {} widths but --widths has {}: the ladders go rung by \
                             rung and need the same length",
                            g.len(),
                            widths.len()
                        )));
                    }
                    Ok(g.to_vec())
                }
            }
        };
        let w = group("--weight-widths", weights)?;
        let a = group("--activation-widths", activations)?;
        let e = group("--error-widths", errors)?;
        let rungs = (0..widths.len())
            .map(|i| Rung {
                width: widths[i],
                weights: w[i],
                activations: a[i],
                errors: e[i],
            })
            .collect();
        Ok(Ladder { rungs })
    }

    /// The default ladder, every class on it.
    pub fn default_ladder() -> Ladder {
        Ladder {
            rungs: DEFAULT_WIDTHS.iter().map(|&w| Rung::uniform(w)).collect(),
        }
    }
}

/// Parses `32,24,16` (spaces allowed). Errors name the flag and the offending item.
pub fn parse_widths(flag: &str, s: &str) -> Result<Vec<u32>> {
    let s = s.trim();
    if s.is_empty() {
        return Err(QatError::Invalid(format!(
            "{flag} is empty: give at least one width, e.g. {flag} 32,16,8"
        )));
    }
    s.split(',')
        .map(|item| {
            let t = item.trim();
            t.parse::<u32>().map_err(|_| {
                QatError::Invalid(format!(
                    "{flag}: `{t}` is not a bit width (expected a whole number in \
                     {MIN_WIDTH}..={MAX_WIDTH}, e.g. {flag} 32,16,8)"
                ))
            })
        })
        .collect()
}

/// Non-empty, every width in `MIN_WIDTH..=MAX_WIDTH`, strictly decreasing.
pub fn validate(flag: &str, widths: &[u32]) -> Result<()> {
    if widths.is_empty() {
        return Err(QatError::Invalid(format!("{flag}: the ladder is empty")));
    }
    if let Some(w) = widths
        .iter()
        .find(|w| !(MIN_WIDTH..=MAX_WIDTH).contains(*w))
    {
        return Err(QatError::Invalid(format!(
            "{flag}: width {w} cannot be taken by the fixed-point formats (signed widths \
             {MIN_WIDTH}..={MAX_WIDTH} bits)"
        )));
    }
    if let Some(i) = (1..widths.len()).find(|&i| widths[i] >= widths[i - 1]) {
        return Err(QatError::Invalid(format!(
            "{flag}: the ladder must be strictly decreasing (each rung narrower than the \
             last), but {} follows {} at position {}; e.g. 32,24,16,8",
            widths[i],
            widths[i - 1],
            i + 1
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2 for a usage error (what `fixar qat` exits with), with the message.
    fn err_of(r: Result<impl std::fmt::Debug>) -> (u8, String) {
        let e = r.unwrap_err();
        let code = if matches!(e, QatError::Invalid(_)) {
            2
        } else {
            1
        };
        (code, e.to_string())
    }

    #[test]
    fn empty_unsorted_and_impossible_ladders_are_config_errors() {
        let (code, msg) = err_of(parse_widths("--widths", " "));
        assert_eq!(code, 2);
        assert!(msg.contains("empty"), "{msg}");
        let (code, msg) = err_of(parse_widths("--widths", "32,abc"));
        assert_eq!(code, 2);
        assert!(msg.contains("`abc`"), "{msg}");
        let (code, msg) = err_of(Ladder::new(&[16, 24], None, None, None));
        assert_eq!(code, 2);
        assert!(
            msg.contains("strictly decreasing") && msg.contains("24 follows 16"),
            "{msg}"
        );
        let (code, msg) = err_of(Ladder::new(&[16, 16], None, None, None));
        assert_eq!(code, 2);
        assert!(msg.contains("strictly decreasing"), "{msg}");
        for bad in [64u32, 33, 1, 0] {
            let (code, msg) = err_of(Ladder::new(&[bad], None, None, None));
            assert_eq!(code, 2);
            assert!(msg.contains(&format!("width {bad} cannot")), "{msg}");
        }
        let (code, msg) = err_of(Ladder::new(&[], None, None, None));
        assert_eq!(code, 2);
        assert!(msg.contains("empty"), "{msg}");
    }

    #[test]
    fn group_ladders_go_rung_by_rung_and_must_match_in_length() {
        let l = Ladder::new(&[32, 16, 8], Some(&[16, 8, 4]), None, Some(&[32, 24, 16])).unwrap();
        assert_eq!(l.rungs[1].width_of(TensorClass::Weight), 8);
        assert_eq!(l.rungs[1].width_of(TensorClass::Bias), 8);
        assert_eq!(l.rungs[1].width_of(TensorClass::Preact), 16);
        assert_eq!(l.rungs[1].width_of(TensorClass::Grad), 24);
        assert_eq!(
            l.rungs[2].describe(),
            "w8 (weights 4, activations 8, errors 16)"
        );
        let (code, msg) = err_of(Ladder::new(&[32, 16], Some(&[16]), None, None));
        assert_eq!(code, 2);
        assert!(msg.contains("--weight-widths has 1 widths"), "{msg}");
        assert_eq!(
            parse_widths("--widths", "32, 24,16").unwrap(),
            vec![32, 24, 16]
        );
        assert_eq!(Ladder::default_ladder().rungs.len(), DEFAULT_WIDTHS.len());
    }
}
