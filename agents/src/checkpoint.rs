//! Checkpoint files: one file per seed holding JSON metadata and raw little-endian
//! tensor bytes, written atomically (temp file, fsync, rename), so a kill never leaves
//! a half-written checkpoint where the last good one was.
//!
//! Layout (version 3): `FIXARCK3`, u64 LE header length, header JSON `{meta, tensors:
//! [{name, kind, shape, offset, len}]}`, the tensor bytes, then a u32 LE CRC-32 of
//! everything before it, so a truncated or altered file is refused by name instead of
//! restoring wrong weights. Version 3 added metadata only (the QAT schedule's affine
//! quantizers and signed min/max observers; readers treat them as absent in older files),
//! so version 2 files (`FIXARCK2`, the same layout) and version 1 files (`FIXARCK1`, no
//! checksum) still read. A fixar that knows only version 2 refuses a version 3 file by
//! name instead of resuming a scheduled run without its quantizers.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

const MAGIC: &[u8; 8] = b"FIXARCK3";
/// Version 2: version 3's layout without its metadata additions.
const MAGIC_V2: &[u8; 8] = b"FIXARCK2";
const MAGIC_V1: &[u8; 8] = b"FIXARCK1";
/// What every version's magic starts with.
const MAGIC_STEM: &[u8; 7] = b"FIXARCK";

/// What can go wrong writing or reading a checkpoint; every message names the file or
/// the field.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("reading checkpoint {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a fixar checkpoint")]
    NotACheckpoint { path: PathBuf },
    #[error("{path}: truncated checkpoint header")]
    TruncatedHeader { path: PathBuf },
    #[error(
        "{path}: checksum mismatch (stored {stored:08x}, computed {computed:08x}): the file is \
         damaged (truncated or altered); resume from an intact copy or start the seed again"
    )]
    Corrupt {
        path: PathBuf,
        stored: u32,
        computed: u32,
    },
    #[error("{path}: checkpoint format version `{version}` is not one this fixar reads (1, 2, 3)")]
    UnsupportedVersion { path: PathBuf, version: String },
    #[error("{path}: bad checkpoint header: {source}")]
    BadHeader {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("checkpoint lacks `{0}`")]
    MissingField(String),
    #[error("checkpoint field `{key}`: {source}")]
    Field {
        key: String,
        source: serde_json::Error,
    },
    #[error("checkpoint lacks tensor `{0}`")]
    MissingTensor(String),
    #[error("checkpoint tensor `{0}` runs past the end of the file")]
    TensorPastEnd(String),
    #[error("checkpoint tensor `{name}`: shape {shape:?} does not fit its {len} bytes")]
    TensorShape {
        name: String,
        shape: Vec<i64>,
        len: u64,
    },
    #[error("unknown tensor kind `{0}` in checkpoint")]
    UnknownKind(String),
    #[error("checkpoints hold f32, f64 and i64 tensors, not {0}")]
    UnsupportedKind(String),
    #[error("checkpoint tensor `{name}`: {source}")]
    Tensor { name: String, source: tch::TchError },
    #[error("rng word position: {0}")]
    RngPosition(std::num::ParseIntError),
    /// The checkpoint is readable but does not fit the agent its config builds.
    #[error("{0}")]
    Mismatch(String),
}

#[derive(Serialize, Deserialize)]
struct Entry {
    name: String,
    kind: String,
    shape: Vec<i64>,
    offset: u64,
    len: u64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    meta: BTreeMap<String, serde_json::Value>,
    tensors: Vec<Entry>,
}

/// Collects metadata and tensors, then writes them in one atomic file.
#[derive(Default)]
pub struct CheckpointWriter {
    meta: BTreeMap<String, serde_json::Value>,
    entries: Vec<Entry>,
    data: Vec<u8>,
}

fn kind_name(k: Kind) -> Result<&'static str, CheckpointError> {
    match k {
        Kind::Float => Ok("f32"),
        Kind::Double => Ok("f64"),
        Kind::Int64 => Ok("i64"),
        other => Err(CheckpointError::UnsupportedKind(format!("{other:?}"))),
    }
}

fn kind_of(name: &str) -> Result<(Kind, usize), CheckpointError> {
    match name {
        "f32" => Ok((Kind::Float, 4)),
        "f64" => Ok((Kind::Double, 8)),
        "i64" => Ok((Kind::Int64, 8)),
        other => Err(CheckpointError::UnknownKind(other.to_string())),
    }
}

impl CheckpointWriter {
    pub fn meta(&mut self, key: &str, value: impl Serialize) -> Result<(), CheckpointError> {
        let v = serde_json::to_value(value).map_err(|source| CheckpointError::Field {
            key: key.to_string(),
            source,
        })?;
        self.meta.insert(key.to_string(), v);
        Ok(())
    }

    pub fn tensor(&mut self, name: &str, t: &Tensor) -> Result<(), CheckpointError> {
        let t = t.detach().contiguous();
        let kind = kind_name(t.kind())?;
        let n = t.numel();
        let bytes = n * t.kind().elt_size_in_bytes();
        let start = self.data.len();
        self.data.resize(start + bytes, 0);
        t.copy_data_u8(&mut self.data[start..], n);
        self.entries.push(Entry {
            name: name.to_string(),
            kind: kind.to_string(),
            shape: t.size(),
            offset: start as u64,
            len: bytes as u64,
        });
        Ok(())
    }

    pub fn f32s(&mut self, name: &str, v: &[f32]) -> Result<(), CheckpointError> {
        self.tensor(name, &Tensor::from_slice(v))
    }

    /// Writes `path` atomically: a temp file next to it, fsync, rename.
    pub fn write_atomic(self, path: &Path) -> std::io::Result<()> {
        let header = Header {
            meta: self.meta,
            tensors: self.entries,
        };
        let json = serde_json::to_vec(&header).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        let written = (|| {
            let mut f = fs::File::create(&tmp)?;
            let len = (json.len() as u64).to_le_bytes();
            let mut crc = crc32fast::Hasher::new();
            for part in [&MAGIC[..], &len, &json, &self.data] {
                crc.update(part);
                f.write_all(part)?;
            }
            f.write_all(&crc.finalize().to_le_bytes())?;
            f.sync_all()
        })();
        if let Err(e) = written {
            // A full disk: the previous checkpoint stays, and no partial file takes space.
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, path)?;
        crate::layout::sync_dir(path);
        Ok(())
    }
}

/// A checkpoint read back.
pub struct CheckpointReader {
    header: Header,
    data: Vec<u8>,
}

impl CheckpointReader {
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let path_buf = || path.to_path_buf();
        let bytes = fs::read(path).map_err(|source| CheckpointError::Read {
            path: path_buf(),
            source,
        })?;
        if bytes.len() < 16 || &bytes[..7] != MAGIC_STEM {
            return Err(CheckpointError::NotACheckpoint { path: path_buf() });
        }
        let bytes = match &bytes[..8] {
            m if m == MAGIC || m == MAGIC_V2 => {
                let body = bytes.len().saturating_sub(4).max(16);
                let stored = match bytes.get(body..) {
                    Some(t) if t.len() == 4 => u32::from_le_bytes(t.try_into().expect("4 bytes")),
                    _ => return Err(CheckpointError::TruncatedHeader { path: path_buf() }),
                };
                let computed = crc32fast::hash(&bytes[..body]);
                if stored != computed {
                    return Err(CheckpointError::Corrupt {
                        path: path_buf(),
                        stored,
                        computed,
                    });
                }
                let mut bytes = bytes;
                bytes.truncate(body);
                bytes
            }
            m if m == MAGIC_V1 => bytes,
            m => {
                return Err(CheckpointError::UnsupportedVersion {
                    path: path_buf(),
                    version: String::from_utf8_lossy(&m[7..]).into_owned(),
                })
            }
        };
        let n = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")) as usize;
        let end = 16usize.checked_add(n).filter(|&e| e <= bytes.len());
        let end = end.ok_or_else(|| CheckpointError::TruncatedHeader { path: path_buf() })?;
        let header: Header = serde_json::from_slice(&bytes[16..end]).map_err(|source| {
            CheckpointError::BadHeader {
                path: path_buf(),
                source,
            }
        })?;
        Ok(CheckpointReader {
            header,
            data: bytes[end..].to_vec(),
        })
    }

    /// Whether the metadata holds `key` (fields newer versions added).
    pub fn has_meta(&self, key: &str) -> bool {
        self.header.meta.contains_key(key)
    }

    pub fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<T, CheckpointError> {
        let v = self
            .header
            .meta
            .get(key)
            .ok_or_else(|| CheckpointError::MissingField(key.to_string()))?;
        serde_json::from_value(v.clone()).map_err(|source| CheckpointError::Field {
            key: key.to_string(),
            source,
        })
    }

    pub fn tensor(&self, name: &str) -> Result<Tensor, CheckpointError> {
        let e = self
            .header
            .tensors
            .iter()
            .find(|e| e.name == name)
            .ok_or_else(|| CheckpointError::MissingTensor(name.to_string()))?;
        let (kind, size) = kind_of(&e.kind)?;
        let end = e.offset.checked_add(e.len);
        if end.is_none_or(|b| b > self.data.len() as u64) {
            return Err(CheckpointError::TensorPastEnd(name.to_string()));
        }
        // libtorch copies numel x element size bytes: the shape must say exactly `len`.
        let numel = e.shape.iter().try_fold(1u64, |n, &d| {
            u64::try_from(d).ok().and_then(|d| n.checked_mul(d))
        });
        if numel.and_then(|n| n.checked_mul(size as u64)) != Some(e.len) {
            return Err(CheckpointError::TensorShape {
                name: name.to_string(),
                shape: e.shape.clone(),
                len: e.len,
            });
        }
        let (a, b) = (e.offset as usize, (e.offset + e.len) as usize);
        Ok(Tensor::from_data_size(&self.data[a..b], &e.shape, kind))
    }

    pub fn f32s(&self, name: &str) -> Result<Vec<f32>, CheckpointError> {
        let t = self.tensor(name)?;
        Vec::<f32>::try_from(t.to_kind(Kind::Float).view([-1])).map_err(|source| {
            CheckpointError::Tensor {
                name: name.to_string(),
                source,
            }
        })
    }
}

/// A ChaCha RNG's exact position, so a restored generator continues the same stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RngState {
    pub seed: [u8; 32],
    pub stream: u64,
    /// The 128-bit word position as a decimal string (JSON numbers are not 128-bit).
    pub word_pos: String,
}

impl RngState {
    pub fn of(rng: &ChaCha8Rng) -> Self {
        RngState {
            seed: rng.get_seed(),
            stream: rng.get_stream(),
            word_pos: rng.get_word_pos().to_string(),
        }
    }

    pub fn restore(&self) -> Result<ChaCha8Rng, CheckpointError> {
        let mut r = ChaCha8Rng::from_seed(self.seed);
        r.set_stream(self.stream);
        let pos: u128 = self
            .word_pos
            .parse()
            .map_err(CheckpointError::RngPosition)?;
        r.set_word_pos(pos);
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn tensors_meta_and_rng_round_trip_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("fixar-ck-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.bin");
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let _: u64 = rng.gen();
        let t = Tensor::from_slice(&[1.5f64, -0.1, 3.0e-300]).view([3, 1]);
        let mut w = CheckpointWriter::default();
        w.tensor("t", &t).unwrap();
        w.f32s("v", &[0.1, 0.2]).unwrap();
        w.meta("rng", RngState::of(&rng)).unwrap();
        w.write_atomic(&path).unwrap();
        assert!(!path.with_extension("tmp").exists());
        let r = CheckpointReader::read(&path).unwrap();
        assert!(r.tensor("t").unwrap().equal(&t));
        assert_eq!(r.f32s("v").unwrap(), vec![0.1f32, 0.2]);
        let mut back = r.meta::<RngState>("rng").unwrap().restore().unwrap();
        assert_eq!(back.gen::<u64>(), rng.gen::<u64>());
        assert!(r.tensor("nope").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn truncated_altered_and_foreign_version_files_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("fixar-ck-bad-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.bin");
        let mut w = CheckpointWriter::default();
        w.meta("seed", 7u64).unwrap();
        w.f32s("v", &[0.5; 64]).unwrap();
        w.write_atomic(&path).unwrap();
        let good = fs::read(&path).unwrap();
        assert!(CheckpointReader::read(&path).is_ok());
        let at = |bytes: &[u8]| {
            fs::write(&path, bytes).unwrap();
            CheckpointReader::read(&path).map(|_| ()).unwrap_err()
        };
        // Every truncation, and a flip of any one bit, is an error naming the file.
        for cut in [
            0,
            7,
            15,
            16,
            40,
            good.len() / 2,
            good.len() - 5,
            good.len() - 1,
        ] {
            let e = at(&good[..cut]);
            assert!(e.to_string().contains("c.bin"), "cut {cut}: {e}");
        }
        for i in (0..good.len()).step_by(7) {
            let mut b = good.clone();
            b[i] ^= 0x10;
            let e = at(&b);
            assert!(e.to_string().contains("c.bin"), "byte {i}: {e}");
        }
        let mut b = good.clone();
        b[good.len() - 100] ^= 1; // inside the tensor bytes: only the checksum sees it
        assert!(matches!(at(&b), CheckpointError::Corrupt { .. }));
        let mut b = good.clone();
        b[7] = b'9';
        let e = at(&b);
        assert!(
            matches!(e, CheckpointError::UnsupportedVersion { .. }),
            "{e}"
        );
        // A version 2 file (the same layout) and a version 1 file (no checksum) still read.
        let mut v2 = good.clone();
        v2[7] = b'2';
        let body = v2.len() - 4;
        let crc = crc32fast::hash(&v2[..body]).to_le_bytes();
        v2[body..].copy_from_slice(&crc);
        fs::write(&path, &v2).unwrap();
        let r = CheckpointReader::read(&path).unwrap();
        assert_eq!(r.meta::<u64>("seed").unwrap(), 7);
        assert!(r.has_meta("seed") && !r.has_meta("net.actor.affine"));
        let mut v1 = good[..good.len() - 4].to_vec();
        v1[7] = b'1';
        fs::write(&path, &v1).unwrap();
        let r = CheckpointReader::read(&path).unwrap();
        assert_eq!(r.meta::<u64>("seed").unwrap(), 7);
        fs::remove_dir_all(&dir).unwrap();
    }
}
