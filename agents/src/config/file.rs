//! Training configs as users write them: a TOML file plus `key=value` overrides (the
//! CLI's `--set`), read strictly. Every error names the file (or the override), the key
//! and what was expected: unknown keys, wrong types and invalid values alike.

use std::path::Path;

use super::TrainConfig;

/// A config that cannot be read; the message names the file or override, the key and
/// what was expected. Every variant is a usage error.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("reading config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// An override that is not `KEY=VALUE`, or that names a key inside a non-table.
    #[error("--set {set}: {reason}")]
    Set { set: String, reason: String },
    /// The file or the merged config does not deserialize, or a value is out of range.
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, ConfigFileError>;

fn set_error(set: &str, reason: impl Into<String>) -> ConfigFileError {
    ConfigFileError::Set {
        set: set.to_string(),
        reason: reason.into(),
    }
}

/// The dotted key whose line holds byte offset `pos` of a TOML document (table headers
/// above it give the prefix), for naming keys in serde's errors.
fn key_at(text: &str, pos: usize) -> Option<String> {
    let mut table = String::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            table = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if pos < offset + line.len() {
            if t.starts_with('[') {
                return Some(table);
            }
            let key = t.split('=').next()?.trim().trim_matches('"');
            if key.is_empty() {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
        offset += line.len();
    }
    None
}

/// Deserializes `text`, mapping serde/toml errors to "key `k`: message".
fn parse(text: &str) -> std::result::Result<TrainConfig, (Option<String>, String)> {
    toml::from_str::<TrainConfig>(text).map_err(|e| {
        let key = e.span().and_then(|s| key_at(text, s.start));
        (key, e.message().trim().to_string())
    })
}

/// Splits `key=value`; the value is read as a TOML value (number, bool, array, quoted
/// string), else taken as a bare string (`precision=fxp32`).
pub fn parse_set(s: &str) -> Result<(String, toml::Value)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| set_error(s, "expected KEY=VALUE"))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() {
        return Err(set_error(s, "empty key"));
    }
    let value = toml::from_str::<toml::Table>(&format!("v = {v}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(v.to_string()));
    Ok((k.to_string(), value))
}

/// `a."b.c".d` -> [a, b.c, d].
fn split_key(key: &str) -> Vec<String> {
    let (mut parts, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in key.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

fn insert(table: &mut toml::Table, key: &str, value: toml::Value, set: &str) -> Result<()> {
    let mut parts = split_key(key);
    let last = parts.pop().expect("split yields one part");
    let mut t = table;
    for p in &parts {
        let e = t
            .entry(p.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = e
            .as_table_mut()
            .ok_or_else(|| set_error(set, format!("`{p}` is not a table")))?;
    }
    t.insert(last, value);
    Ok(())
}

/// Reads `path` (or the defaults), applies the `key=value` overrides in order, and
/// returns the checked config and the resolved TOML text (what a run directory records).
pub fn load(path: Option<&Path>, sets: &[String]) -> Result<(TrainConfig, String)> {
    let (name, text) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigFileError::Read {
                path: p.display().to_string(),
                source,
            })?;
            (p.display().to_string(), text)
        }
        None => ("<defaults>".to_string(), String::new()),
    };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| {
        ConfigFileError::Invalid(format!("config {name}: {}", e.to_string().trim()))
    })?;
    if let Err((key, msg)) = parse(&text) {
        let key = key.map_or(String::new(), |k| format!("key `{k}`: "));
        return Err(ConfigFileError::Invalid(format!(
            "config {name}: {key}{msg}"
        )));
    }
    let mut applied = Vec::new();
    for s in sets {
        let (k, v) = parse_set(s)?;
        insert(&mut table, &k, v, s)?;
        applied.push((split_key(&k).join("."), s.clone()));
    }
    let merged = toml::to_string(&table)
        .map_err(|e| ConfigFileError::Invalid(format!("config {name} with --set: {e}")))?;
    let cfg = parse(&merged).map_err(|(key, msg)| {
        let culprit = key
            .as_ref()
            .and_then(|k| {
                applied
                    .iter()
                    .rev()
                    .find(|(a, _)| k == a || k.starts_with(&format!("{a}.")))
            })
            .map_or_else(|| "--set".to_string(), |(_, s)| format!("--set {s}"));
        let key = key.map_or(String::new(), |k| format!("key `{k}`: "));
        ConfigFileError::Invalid(format!("config {name}, {culprit}: {key}{msg}"))
    })?;
    cfg.validate()
        .map_err(|e| ConfigFileError::Invalid(format!("config {name}: {e}")))?;
    let resolved = toml::to_string_pretty(&cfg).map_err(|e| {
        ConfigFileError::Invalid(format!(
            "config {name}: cannot write the resolved config: {e}"
        ))
    })?;
    Ok((cfg, resolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("fixar-config-{}-{name}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn unknown_key_and_wrong_type_name_file_key_and_expected_type() {
        let p = write("unknown", "algo = \"td3\"\nbatch_sise = 3\n");
        let e = load(Some(&p), &[]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("batch_sise"),
            "{msg}"
        );
        assert!(matches!(e, ConfigFileError::Invalid(_)), "{e:?}");

        let p = write(
            "type",
            "algo = \"td3\"\n[formats]\nweight = \"ap_fixed<8,2>\"\n\nbatch_size = \"many\"\n",
        );
        let msg = format!("{:#}", load(Some(&p), &[]).unwrap_err());
        assert!(
            msg.contains("key `formats.batch_size`") || msg.contains("batch_size"),
            "{msg}"
        );

        let p = write("type2", "batch_size = \"many\"\n");
        let msg = format!("{:#}", load(Some(&p), &[]).unwrap_err());
        assert!(
            msg.contains("key `batch_size`") && msg.contains("expected"),
            "{msg}"
        );
        assert!(msg.contains("usize") || msg.contains("integer"), "{msg}");
    }

    #[test]
    fn sets_override_the_file_and_bad_sets_are_named() {
        let p = write("sets", "algo = \"ddpg\"\nprecision = \"float32\"\n");
        let (cfg, resolved) = load(
            Some(&p),
            &[
                "precision=fxp32".into(),
                "hidden=[64, 64]".into(),
                "formats.weight=ap_fixed<16,3>".into(),
            ],
        )
        .unwrap();
        assert_eq!(cfg.precision, crate::Preset::Fxp32);
        assert_eq!(cfg.hidden, vec![64, 64]);
        assert!(cfg.formats.all.weight.is_some());
        assert!(resolved.contains("precision = \"fxp32\""), "{resolved}");
        // The resolved text reads back to the same config.
        assert_eq!(toml::from_str::<TrainConfig>(&resolved).unwrap(), cfg);

        let e = load(Some(&p), &["precision=fxp8".into()]).unwrap_err();
        let msg = format!("{e:#}");
        assert!(
            msg.contains("--set precision=fxp8") && msg.contains("precision"),
            "{msg}"
        );
        assert!(matches!(e, ConfigFileError::Invalid(_)), "{e:?}");
        let e = load(Some(&p), &["hidden".into()]).unwrap_err();
        assert_eq!(e.to_string(), "--set hidden: expected KEY=VALUE");
        let msg = format!(
            "{:#}",
            load(Some(&p), &["batch_size=-3".into()]).unwrap_err()
        );
        assert!(msg.contains("batch_size"), "{msg}");
        let msg = format!(
            "{:#}",
            load(
                Some(&p),
                &["formats.layers.\"critic9.fc1\".weight=float32".into()]
            )
            .unwrap_err()
        );
        assert!(msg.contains("critic9"), "{msg}");
    }
}
