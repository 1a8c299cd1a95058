//! Per-layer formats from observed ranges: FIXAR's dynamic fixed point.
//!
//! For each layer and tensor class the observed `max |x|` over the profiling window
//! gives the integer bits at the rung's width by the numerics rule
//! (`quant::int_bits_for_range`: `I = ceil(log2 max|x|) + 1`), settled to the fewest
//! integer bits whose largest code holds `max|x|` (at an exact power of two the rule
//! leaves `max|x|` one LSB above the largest code, so that case gets one more bit), plus
//! `headroom` bits. The rest of the width is fraction. A derived format therefore always
//! holds the observed maximum without saturating.
//!
//! Two rules keep the ladder honest:
//! - a class that is already fixed point at a width no wider than the rung's keeps its
//!   format (narrowing never widens, and PTQ at the parent's own width is the parent);
//! - a class with no observation (or a zero range) keeps its integer bits and loses
//!   fraction bits; a float class with no observation cannot be narrowed and is an error.
//!
//! Rounding and overflow modes come from the class's current format (`fxp32`: round to
//! nearest even, saturate); a float class gets `AP_RND_CONV, AP_SAT`.

use std::collections::BTreeMap;

use quant::{FxFormat, Overflow, Rounding};

use super::ladder::Rung;
use super::QatError;
use crate::precision::{ClassSpec, LayerFormats, TensorClass};
pub use crate::precision::{FormatTable, RangeTable};

type Result<T> = std::result::Result<T, QatError>;

/// `return Err(QatError::Derive(format!(...)))`.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(QatError::Derive(format!($($arg)*)))
    };
}

/// The signed format of `width` bits whose binary point fits `max_abs` (with `headroom`
/// extra integer bits), with the modes of `template` (or RND_CONV/SAT).
pub fn format_for_range(
    max_abs: f64,
    width: u32,
    headroom: i32,
    template: Option<&FxFormat>,
) -> Result<FxFormat> {
    if !max_abs.is_finite() || max_abs <= 0.0 {
        fail!("cannot size a format for a range of {max_abs}");
    }
    let (rounding, overflow) = template
        .map(|t| (t.rounding, t.overflow))
        .unwrap_or((Rounding::RndConv, Overflow::Sat));
    let fmt = |i: i32| FxFormat::new(true, width, i, rounding, overflow);
    // Start from the numerics rule, then settle on the fewest integer bits that hold
    // max_abs (the rule may clamp, or miss by one at exact powers of two).
    let mut int_bits = quant::int_bits_for_range(max_abs, width, 0);
    while fmt(int_bits)?.max_value() < max_abs {
        int_bits += 1;
    }
    while fmt(int_bits - 1)?.max_value() >= max_abs {
        int_bits -= 1;
    }
    Ok(fmt(int_bits + headroom)?)
}

/// The formats of one layer at `rung`, from its current formats and observed ranges.
/// Only `classes` are narrowed; the others keep their current format.
pub fn derive_layer(
    layer: &str,
    current: &LayerFormats,
    ranges: Option<&BTreeMap<TensorClass, f64>>,
    rung: &Rung,
    headroom: i32,
    classes: &[TensorClass],
) -> Result<LayerFormats> {
    let mut out = *current;
    for &class in classes {
        let width = rung.width_of(class);
        let cur = current.get(class);
        if matches!(cur, Some(f) if f.width <= width) {
            continue;
        }
        let range = ranges.and_then(|r| r.get(&class)).copied();
        let derived = match (range, cur) {
            (Some(r), _) if r.is_nan() || r.is_infinite() => {
                fail!("{layer} {class}: the observed range is {r}; the run diverged")
            }
            (Some(r), cur) if r > 0.0 => format_for_range(r, width, headroom, cur.as_ref())?,
            (_, Some(f)) => FxFormat::new(true, width, f.int_bits, f.rounding, f.overflow)?,
            (_, None) => fail!(
                "{layer} {class}: float with no observed range, so no {width}-bit format can \
                 be derived (profile more steps)"
            ),
        };
        out.set(class, Some(derived));
    }
    Ok(out)
}

/// [`derive_layer`] for every layer of `current`. A layer after the first takes its
/// input from the layer before (only a network's first layer casts its input), so its
/// input format is reported as that layer's activation format.
pub fn derive_formats(
    current: &FormatTable,
    ranges: &RangeTable,
    rung: &Rung,
    headroom: i32,
    classes: &[TensorClass],
) -> Result<FormatTable> {
    let mut out = current
        .iter()
        .map(|(layer, f)| {
            let d = derive_layer(layer, f, ranges.get(layer), rung, headroom, classes)?;
            Ok((layer.clone(), d))
        })
        .collect::<Result<FormatTable>>()?;
    if classes.contains(&TensorClass::Input) {
        let names: Vec<String> = out.keys().cloned().collect();
        for name in names {
            if let Some(prev) = previous_layer(&name) {
                if let Some(a) = out.get(&prev).map(|f| f.get(TensorClass::Activation)) {
                    out.get_mut(&name)
                        .expect("present")
                        .set(TensorClass::Input, a);
                }
            }
        }
    }
    Ok(out)
}

/// `actor.fc2` -> `actor.fc1`; `None` for a first layer or another name.
fn previous_layer(name: &str) -> Option<String> {
    let (net, fc) = name.rsplit_once(".fc")?;
    let i: usize = fc.parse().ok()?;
    (i > 1).then(|| format!("{net}.fc{}", i - 1))
}

/// The JSON form of a format table: layer -> class -> HLS spelling (or `float32`).
pub fn table_spec(t: &FormatTable) -> BTreeMap<String, ClassSpec> {
    t.iter()
        .map(|(k, f)| (k.clone(), ClassSpec::from_formats(f)))
        .collect()
}

/// Back from [`table_spec`].
pub fn table_from_spec(spec: &BTreeMap<String, ClassSpec>) -> FormatTable {
    spec.iter()
        .map(|(k, s)| {
            let mut f = LayerFormats::float();
            s.apply(&mut f);
            (k.clone(), f)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::precision::Preset;

    #[test]
    fn derived_formats_hold_the_observed_max_without_saturating() {
        for width in [4u32, 6, 8, 12, 16, 24, 32] {
            for &m in &[
                1e-4, 0.0031, 0.5, 1.0, 1.5, 2.0, 3.999, 4.0, 100.0, 1024.0, 3e4,
            ] {
                for headroom in [0, 1] {
                    let f = format_for_range(m, width, headroom, None).unwrap();
                    assert_eq!(f.width, width);
                    assert!(f.max_value() >= m, "{f} cannot hold {m}");
                    assert!(f.min_value() <= -m);
                    // Tight: one integer bit fewer (without headroom) would not hold m.
                    if headroom == 0 {
                        let tighter = FxFormat {
                            int_bits: f.int_bits - 1,
                            ..f
                        };
                        assert!(tighter.max_value() < m, "{f} is wider than needed for {m}");
                    } else {
                        let plain = format_for_range(m, width, 0, None).unwrap();
                        assert_eq!(f.int_bits, plain.int_bits + 1);
                    }
                }
            }
        }
        assert!(format_for_range(f64::NAN, 8, 0, None).is_err());
    }

    #[test]
    fn narrowing_keeps_narrow_classes_and_modes_and_refuses_unobserved_floats() {
        let fxp32 = Preset::Fxp32.layer_formats("actor", false);
        let mut ranges = BTreeMap::new();
        ranges.insert(TensorClass::Weight, 0.3);
        ranges.insert(TensorClass::Activation, 40.0);
        let all = TensorClass::ALL;
        // The parent's own width: nothing changes.
        let same = derive_layer(
            "actor.fc1",
            &fxp32,
            Some(&ranges),
            &Rung::uniform(32),
            0,
            &all,
        )
        .unwrap();
        assert_eq!(same, fxp32);
        let f16 = derive_layer(
            "actor.fc1",
            &fxp32,
            Some(&ranges),
            &Rung::uniform(16),
            0,
            &all,
        )
        .unwrap();
        let w = f16.get(TensorClass::Weight).unwrap();
        assert_eq!((w.width, w.int_bits), (16, 0)); // 0.3 < 2^-1: one sign bit, I = 0
        assert_eq!(w.rounding, Rounding::RndConv);
        let a = f16.get(TensorClass::Activation).unwrap();
        assert_eq!((a.width, a.int_bits), (16, 7));
        // Unobserved fixed class: integer bits kept, fraction dropped.
        let e = f16.get(TensorClass::Error).unwrap();
        assert_eq!((e.width, e.int_bits), (16, 4));
        // Only the named classes move.
        let only_w = derive_layer(
            "actor.fc1",
            &fxp32,
            Some(&ranges),
            &Rung::uniform(8),
            0,
            &[TensorClass::Weight],
        )
        .unwrap();
        assert_eq!(
            only_w.get(TensorClass::Activation),
            fxp32.get(TensorClass::Activation)
        );
        assert_eq!(only_w.get(TensorClass::Weight).unwrap().width, 8);
        let float = LayerFormats::float();
        let err = derive_layer(
            "actor.fc2",
            &float,
            Some(&ranges),
            &Rung::uniform(8),
            0,
            &all,
        )
        .unwrap_err();
        assert!(format!("{err}").contains("actor.fc2 input"), "{err}");
        let mut table = FormatTable::new();
        table.insert("actor.fc1".into(), fxp32);
        table.insert("actor.fc2".into(), fxp32);
        let mut rt = RangeTable::new();
        rt.insert("actor.fc1".into(), ranges.clone());
        let d = derive_formats(&table, &rt, &Rung::uniform(16), 0, &all).unwrap();
        // fc2 reads fc1's activations: its input format is theirs.
        assert_eq!(
            d["actor.fc2"].get(TensorClass::Input),
            d["actor.fc1"].get(TensorClass::Activation)
        );
        assert_eq!(d["actor.fc1"], f16);
        assert_eq!(table_from_spec(&table_spec(&d)), d);
    }
}
