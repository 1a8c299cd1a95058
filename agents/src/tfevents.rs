//! TensorBoard event files: the protobuf messages TensorBoard reads for scalars, and
//! TFRecord framing, so a seed directory's `events.out.tfevents.*` opens in TensorBoard
//! (and `tbparse`, `EventAccumulator`) with CleanRL's tag names.
//!
//! A file is a sequence of records; each record is
//! `u64 length (LE) · u32 masked CRC-32C of those 8 bytes · data · u32 masked CRC-32C of
//! data`, where masking is `((crc >> 15) | (crc << 17)) + 0xa282ead8`. The data is an
//! `Event` message; the first event names the file version (`brain.Event:2`), every
//! later one carries a `Summary` of `simple_value` scalars at one step.
//!
//! Only the fields written here are declared (hand-written prost messages with
//! TensorFlow's field numbers, `tensorflow/core/util/event.proto` and
//! `tensorflow/core/framework/summary.proto`); a reader skips the others.

use std::path::{Path, PathBuf};

/// `tensorflow.Event` (the fields used: `wall_time` 1, `step` 2, and of the `what`
/// oneof `file_version` 3 and `summary` 5).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    #[prost(int64, tag = "2")]
    pub step: i64,
    #[prost(string, optional, tag = "3")]
    pub file_version: Option<String>,
    #[prost(message, optional, tag = "5")]
    pub summary: Option<Summary>,
}

/// `tensorflow.Summary`: `repeated Value value = 1`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<SummaryValue>,
}

/// `tensorflow.Summary.Value`: `tag` 1 and, of the `value` oneof, `simple_value` 2.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryValue {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(float, optional, tag = "2")]
    pub simple_value: Option<f32>,
}

/// What the first event of every file says.
pub const FILE_VERSION: &str = "brain.Event:2";

/// TFRecord's masked CRC-32C (Castagnoli).
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// `data` framed as one TFRecord.
pub fn frame(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
    out
}

/// The framed first record of an event file.
pub fn file_version_record(wall_time: f64) -> Vec<u8> {
    let e = Event {
        wall_time,
        file_version: Some(FILE_VERSION.into()),
        ..Default::default()
    };
    frame(&prost::Message::encode_to_vec(&e))
}

/// The framed record of one event holding `scalars` (tag, value) at `step`.
pub fn scalars_record(wall_time: f64, step: u64, scalars: &[(String, f64)]) -> Vec<u8> {
    let e = Event {
        wall_time,
        step: step as i64,
        file_version: None,
        summary: Some(Summary {
            value: scalars
                .iter()
                .map(|(tag, v)| SummaryValue {
                    tag: tag.clone(),
                    simple_value: Some(*v as f32),
                })
                .collect(),
        }),
    };
    frame(&prost::Message::encode_to_vec(&e))
}

/// Seconds since the Unix epoch, what `wall_time` holds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An event file that does not parse: the file, the byte offset of the record, and what
/// is wrong there.
#[derive(Debug, thiserror::Error)]
pub enum EventFileError {
    #[error("reading {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: record at byte {offset}: {what}", .path.display())]
    Bad {
        path: PathBuf,
        offset: usize,
        what: String,
    },
}

/// The data of every record in `bytes`, each checked against both CRCs; a truncated or
/// corrupt record is an error at its offset (`path` only names the source).
pub fn records(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, EventFileError> {
    let bad = |offset: usize, what: String| EventFileError::Bad {
        path: path.to_path_buf(),
        offset,
        what,
    };
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes.len() - at < 12 {
            return Err(bad(at, "ends inside the length header".into()));
        }
        let len_bytes = &bytes[at..at + 8];
        if u32_at(at + 8) != masked_crc32c(len_bytes) {
            return Err(bad(at, "length CRC mismatch".into()));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().unwrap());
        let start = at + 12;
        let end = usize::try_from(len)
            .ok()
            .and_then(|l| start.checked_add(l))
            .filter(|&e| e.checked_add(4).is_some_and(|t| t <= bytes.len()))
            .ok_or_else(|| bad(at, format!("length {len} runs past the end of the file")))?;
        let data = &bytes[start..end];
        if u32_at(end) != masked_crc32c(data) {
            return Err(bad(at, "data CRC mismatch".into()));
        }
        out.push(data.to_vec());
        at = end + 4;
    }
    Ok(out)
}

/// Every event of the file at `path`, in order.
pub fn read_events(path: &Path) -> Result<Vec<Event>, EventFileError> {
    let bytes = std::fs::read(path).map_err(|source| EventFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut offset = 0;
    let mut out = Vec::new();
    for data in records(&bytes, path)? {
        let e = <Event as prost::Message>::decode(data.as_slice()).map_err(|e| {
            EventFileError::Bad {
                path: path.to_path_buf(),
                offset,
                what: format!("not an Event: {e}"),
            }
        })?;
        offset += data.len() + 16;
        out.push(e);
    }
    Ok(out)
}

/// Every scalar of the file at `path` as (step, tag, value), in file order.
pub fn read_scalars(path: &Path) -> Result<Vec<(u64, String, f32)>, EventFileError> {
    Ok(read_events(path)?
        .into_iter()
        .flat_map(|e| {
            let step = e.step as u64;
            e.summary
                .into_iter()
                .flat_map(|s| s.value)
                .filter_map(move |v| v.simple_value.map(|x| (step, v.tag, x)))
        })
        .collect())
}

/// The tag whose value is a wall-clock figure (env steps per second of wall time).
pub const SPS_TAG: &str = "charts/SPS";

/// [`read_scalars`] without [`SPS_TAG`]: what the same config and seed reproduce exactly
/// (an uninterrupted, a resumed and a branched run hold the same).
pub fn reproducible_scalars(path: &Path) -> Result<Vec<(u64, String, f32)>, EventFileError> {
    let mut s = read_scalars(path)?;
    s.retain(|(_, tag, _)| tag != SPS_TAG);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vectors() {
        // The check value of CRC-32C, and RFC 3720 (iSCSI) B.4's 32-byte vectors.
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c::crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        let inc: Vec<u8> = (0..32).collect();
        assert_eq!(crc32c::crc32c(&inc), 0x46dd_794e);
        // TensorFlow's crc32c::Mask of that CRC: ((c >> 15) | (c << 17)) + 0xa282ead8.
        assert_eq!(masked_crc32c(b"123456789"), 0xc78a_b0e5);
    }

    /// The header record TensorBoard's own `EventFileWriter` writes for wall time 1.5
    /// (its `RecordWriter` over `event_pb2.Event(wall_time=1.5, file_version=...)`, bytes dumped).
    #[test]
    fn header_record_matches_tensorboards() {
        let want: [u8; 40] = [
            0x18, 0, 0, 0, 0, 0, 0, 0, 0xa3, 0x7f, 0x4b, 0x22, 0x09, 0, 0, 0, 0, 0, 0, 0xf8, 0x3f,
            0x1a, 0x0d, b'b', b'r', b'a', b'i', b'n', b'.', b'E', b'v', b'e', b'n', b't', b':',
            b'2', 0x2a, 0x28, 0x64, 0x6c,
        ];
        assert_eq!(file_version_record(1.5), want);
    }

    #[test]
    fn scalars_round_trip_and_damage_is_found() {
        let mut file = file_version_record(10.0);
        let tags = [
            ("charts/SPS".to_string(), 123.0),
            ("losses/qf1_loss".into(), 0.25),
        ];
        file.extend(scalars_record(11.0, 42, &tags));
        file.extend(scalars_record(12.0, 43, &tags[..1]));
        let dir = std::env::temp_dir().join(format!("tfevents-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.out.tfevents.test");
        std::fs::write(&path, &file).unwrap();
        let got = read_scalars(&path).unwrap();
        assert_eq!(
            got,
            vec![
                (42, "charts/SPS".into(), 123.0),
                (42, "losses/qf1_loss".into(), 0.25),
                (43, "charts/SPS".into(), 123.0)
            ]
        );
        let events = read_events(&path).unwrap();
        assert_eq!(events[0].file_version.as_deref(), Some(FILE_VERSION));
        assert_eq!(events[1].wall_time, 11.0);
        // A flipped data byte and a cut-off last record are refused at their offsets.
        let mut flipped = file.clone();
        flipped[30] ^= 1;
        let e = records(&flipped, &path).unwrap_err().to_string();
        assert!(e.contains("byte 0") && e.contains("data CRC"), "{e}");
        let cut = &file[..file.len() - 3];
        let e = records(cut, &path).unwrap_err().to_string();
        assert!(e.contains("past the end"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
