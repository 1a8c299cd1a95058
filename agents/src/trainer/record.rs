//! The four CSV streams of a seed directory (`metrics.csv`, `quant.csv`, `eval.csv`,
//! `episodes.csv`) and its TensorBoard event file (`crate::tfevents`), appended as
//! training goes and truncated back to a checkpoint's marks on resume, so a resumed
//! run's CSVs equal an uninterrupted run's and its event file holds the same scalars
//! (its wall times and `charts/SPS` are the resumed run's).
//!
//! A checkpoint records each file's length and the CRC-32 of its bytes up to there.
//! Resuming first checks every file against both and changes nothing unless all four
//! agree: rows written after the checkpoint (a kill, a half-written last line) are cut
//! away and written again by the resumed run; a file shorter than its mark or altered
//! before it is an error naming the file ([`TrainError::Damaged`]).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::{io_err, TrainError};
use crate::checkpoint::CheckpointReader;
use crate::{layout, tfevents};

/// The four CSV streams of a seed and its event file, appended as training goes.
pub(super) struct Recorder {
    pub(super) files: Vec<Stream>,
    pub(super) events: Option<Stream>,
}

/// One CSV file being appended to, with the CRC-32 of everything written to it.
pub(super) struct Stream {
    path: PathBuf,
    file: BufWriter<File>,
    crc: crc32fast::Hasher,
}

impl Stream {
    /// A new, empty file at `path`.
    fn create(path: PathBuf) -> Result<Self, TrainError> {
        let file = BufWriter::new(File::create(&path).map_err(io_err(&path))?);
        Ok(Stream {
            path,
            file,
            crc: crc32fast::Hasher::new(),
        })
    }

    fn write(&mut self, line: &str) -> Result<(), TrainError> {
        self.crc.update(line.as_bytes());
        self.crc.update(b"\n");
        writeln!(self.file, "{line}").map_err(io_err(&self.path))
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), TrainError> {
        self.crc.update(bytes);
        self.file.write_all(bytes).map_err(io_err(&self.path))
    }

    /// Flushes and returns the file's length.
    fn mark(&mut self) -> Result<u64, TrainError> {
        self.file.flush().map_err(io_err(&self.path))?;
        Ok(self
            .file
            .get_ref()
            .metadata()
            .map_err(io_err(&self.path))?
            .len())
    }

    /// A new event file at `path` holding its file-version record.
    fn create_events(path: PathBuf) -> Result<Self, TrainError> {
        let mut s = Stream::create(path)?;
        s.write_bytes(&tfevents::file_version_record(tfevents::now()))?;
        Ok(s)
    }

    /// `path` cut back to `mark` bytes (checked by `check_prefix`, whose CRC is `crc`)
    /// and opened for appending.
    fn reopen(path: PathBuf, mark: u64, crc: crc32fast::Hasher) -> Result<Self, TrainError> {
        let f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        f.set_len(mark).map_err(io_err(&path))?;
        Ok(Stream {
            path,
            file: BufWriter::new(f),
            crc,
        })
    }
}

/// Where a checkpoint says the event file ends: its length and the CRC-32 of its bytes
/// (checkpoints before event files have none).
#[derive(Clone, Copy, Debug, serde::Serialize, serde::Deserialize)]
pub(super) struct EventsMark {
    pub(super) len: u64,
    pub(super) crc: u32,
}

impl EventsMark {
    /// The mark a checkpoint records (none in checkpoints before event files).
    pub(super) fn of(r: &CheckpointReader) -> Result<Option<Self>, TrainError> {
        match r.has_meta("events_mark") {
            true => Ok(r.meta("events_mark")?),
            false => Ok(None),
        }
    }
}

fn damaged(path: &Path, what: String) -> TrainError {
    TrainError::Damaged {
        path: path.to_path_buf(),
        what,
    }
}

/// The CRC-32 of `path`'s first `mark` bytes; an error naming the file when it is
/// missing, shorter than `mark`, or (with `expected`) different there.
fn check_prefix(
    path: &Path,
    mark: u64,
    expected: Option<u32>,
) -> Result<crc32fast::Hasher, TrainError> {
    let f = File::open(path).map_err(io_err(path))?;
    let len = f.metadata().map_err(io_err(path))?.len();
    if len < mark {
        return Err(damaged(
            path,
            format!(
                "{len} bytes, shorter than the {mark} the checkpoint recorded: rows the \
                 checkpoint counts on were cut off"
            ),
        ));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut left = mark;
    let mut r = f.take(mark);
    let mut last = None;
    while left > 0 {
        let n = r.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Err(damaged(
                path,
                format!("ended early while reading its first {mark} bytes"),
            ));
        }
        crc.update(&buf[..n]);
        last = Some(buf[n - 1]);
        left -= n as u64;
    }
    match expected {
        Some(want) if crc.clone().finalize() != want => Err(damaged(
            path,
            format!(
                "its first {mark} bytes differ from what the checkpoint recorded (CRC-32 \
                 {:08x}, recorded {want:08x}): the file was altered after it was written",
                crc.clone().finalize()
            ),
        )),
        // Without a recorded CRC (older checkpoints) at least the mark must end a row.
        None if last.is_some_and(|b| b != b'\n') => Err(damaged(
            path,
            format!("byte {mark}, where the checkpoint says a row ends, is inside a row"),
        )),
        _ => Ok(crc),
    }
}

/// Every CSV of the seed directory `dir` checked against its checkpoint mark and CRC-32
/// (`check_prefix`): each file's path, mark and CRC of its first `mark` bytes.
fn check_all(
    dir: &Path,
    marks: &[u64],
    crcs: Option<&[u32]>,
) -> Result<Vec<(PathBuf, u64, crc32fast::Hasher)>, TrainError> {
    let n = layout::SEED_CSVS.len();
    if marks.len() != n || crcs.is_some_and(|c| c.len() != n) {
        return Err(damaged(
            &dir.join(layout::CHECKPOINT),
            format!("records {} CSV lengths, expected {n}", marks.len()),
        ));
    }
    let mut checked = Vec::new();
    for (i, (name, &mark)) in layout::SEED_CSVS.iter().zip(marks).enumerate() {
        let path = dir.join(name);
        let crc = check_prefix(&path, mark, crcs.map(|c| c[i]))?;
        checked.push((path, mark, crc));
    }
    Ok(checked)
}

/// The first `mark` bytes of `path` (checked to be there by `check_prefix`).
fn read_prefix(path: &Path, mark: u64) -> Result<Vec<u8>, TrainError> {
    let mut bytes = Vec::new();
    File::open(path)
        .map_err(io_err(path))?
        .take(mark)
        .read_to_end(&mut bytes)
        .map_err(io_err(path))?;
    Ok(bytes)
}

/// Indices into [`layout::SEED_CSVS`].
pub(super) const METRICS: usize = 0;
pub(super) const QUANT: usize = 1;
pub(super) const EVAL: usize = 2;
pub(super) const EPISODES: usize = 3;

impl Recorder {
    pub(super) fn create(dir: &Path, metrics_header: &str) -> Result<Self, TrainError> {
        let headers = [
            metrics_header.to_string(),
            "step,network,layer,class,format,elements,saturated,wrapped,nan,inf,max_abs,ema,p999"
                .into(),
            "step,mean,std,min,max,episodes".into(),
            "step,episode,return,length".into(),
        ];
        let mut files = Vec::new();
        for (name, header) in layout::SEED_CSVS.iter().zip(headers) {
            let mut s = Stream::create(dir.join(name))?;
            s.write(&header)?;
            files.push(s);
        }
        let events = Some(Stream::create_events(dir.join(layout::EVENTS))?);
        Ok(Recorder { files, events })
    }

    /// Reopens the streams for appending after truncating them to `marks` bytes, once
    /// every file is checked against its mark and (when the checkpoint has them) its
    /// CRC-32: a damaged file is an error and no file is changed. The event file is
    /// checked and cut back the same way; a checkpoint from before event files (no
    /// `events`) starts a new one, whose scalars begin at the resumed step.
    pub(super) fn reopen(
        dir: &Path,
        marks: &[u64],
        crcs: Option<&[u32]>,
        events: Option<EventsMark>,
    ) -> Result<Self, TrainError> {
        let checked = check_all(dir, marks, crcs)?;
        let events_path = dir.join(layout::EVENTS);
        let events_crc = match events {
            Some(m) => Some(check_prefix(&events_path, m.len, Some(m.crc))?),
            None => None,
        };
        let mut files = Vec::new();
        for (path, mark, crc) in checked {
            files.push(Stream::reopen(path, mark, crc)?);
        }
        let events = match (events, events_crc) {
            (Some(m), Some(crc)) => Stream::reopen(events_path, m.len, crc)?,
            _ => {
                tracing::warn!(
                    "{}: the checkpoint predates event files; a new one starts here, and \
                     the scalars before this step are in the CSVs only",
                    events_path.display()
                );
                Stream::create_events(events_path)?
            }
        };
        Ok(Recorder {
            files,
            events: Some(events),
        })
    }

    /// One event holding `scalars` at `step` (none: nothing is written).
    pub(super) fn scalars(
        &mut self,
        step: u64,
        scalars: &[(String, f64)],
    ) -> Result<(), TrainError> {
        match &mut self.events {
            Some(s) if !scalars.is_empty() => {
                s.write_bytes(&tfevents::scalars_record(tfevents::now(), step, scalars))
            }
            _ => Ok(()),
        }
    }

    /// Flushes the event file, so a reader (TensorBoard) sees what is written so far.
    pub(super) fn flush_events(&mut self) -> Result<(), TrainError> {
        match &mut self.events {
            Some(s) => s.mark().map(|_| ()),
            None => Ok(()),
        }
    }

    /// Flushes the event file and returns its mark (what `reopen` cuts back to).
    pub(super) fn events_mark(&mut self) -> Result<Option<EventsMark>, TrainError> {
        match &mut self.events {
            Some(s) => Ok(Some(EventsMark {
                len: s.mark()?,
                crc: s.crc.clone().finalize(),
            })),
            None => Ok(None),
        }
    }

    /// Starts the streams of a branch in `dir` from the source seed directory `src`: each
    /// source file is checked against its checkpoint mark and CRC-32 (as a resume does),
    /// its first `marks` bytes are copied with `metrics_line` applied to every line of
    /// `metrics.csv` (the header included), and the copies stay open for appending. The
    /// event file's first `events` bytes are copied as they are (no scalar comes from the
    /// column `metrics_line` changes); a source checkpoint from before event files starts
    /// a new one. The source is only read.
    pub(super) fn branch(
        src: &Path,
        marks: &[u64],
        crcs: Option<&[u32]>,
        events: Option<EventsMark>,
        dir: &Path,
        metrics_line: &dyn Fn(&str) -> String,
    ) -> Result<Self, TrainError> {
        let mut prefixes = Vec::new();
        for (path, mark, _) in check_all(src, marks, crcs)? {
            let bytes = read_prefix(&path, mark)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| damaged(&path, "holds bytes that are not UTF-8".into()))?;
            prefixes.push(text);
        }
        let src_events = src.join(layout::EVENTS);
        let events_prefix = match events {
            Some(m) => {
                check_prefix(&src_events, m.len, Some(m.crc))?;
                Some(read_prefix(&src_events, m.len)?)
            }
            None => None,
        };
        let mut files = Vec::new();
        for (i, (name, text)) in layout::SEED_CSVS.iter().zip(prefixes).enumerate() {
            let mut s = Stream::create(dir.join(name))?;
            for line in text.lines() {
                match i {
                    METRICS => s.write(&metrics_line(line))?,
                    _ => s.write(line)?,
                }
            }
            files.push(s);
        }
        let events = match events_prefix {
            Some(bytes) => {
                let mut s = Stream::create(dir.join(layout::EVENTS))?;
                s.write_bytes(&bytes)?;
                s
            }
            None => {
                tracing::warn!(
                    "{}: the source checkpoint predates event files; the branch's starts \
                     at its first step, the scalars before it are in the CSVs only",
                    src_events.display()
                );
                Stream::create_events(dir.join(layout::EVENTS))?
            }
        };
        Ok(Recorder {
            files,
            events: Some(events),
        })
    }

    /// Gives stream `which` the header `header`, which adds columns at the end: the
    /// rows already written get empty fields there. The file is rewritten atomically.
    pub(super) fn widen(&mut self, which: usize, header: &str) -> Result<(), TrainError> {
        let s = &mut self.files[which];
        s.file.flush().map_err(io_err(&s.path))?;
        let text = std::fs::read_to_string(&s.path).map_err(io_err(&s.path))?;
        let mut lines = text.lines();
        let old = lines.next().unwrap_or("");
        let extra = header
            .matches(',')
            .count()
            .saturating_sub(old.matches(',').count());
        let pad = ",".repeat(extra);
        let mut out = format!("{header}\n");
        for l in lines {
            out.push_str(l);
            out.push_str(&pad);
            out.push('\n');
        }
        layout::write_atomic(&s.path, out.as_bytes())
            .map_err(|e| io_err(&s.path)(std::io::Error::other(e.to_string())))?;
        let f = OpenOptions::new()
            .append(true)
            .open(&s.path)
            .map_err(io_err(&s.path))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(out.as_bytes());
        s.file = BufWriter::new(f);
        s.crc = crc;
        Ok(())
    }

    pub(super) fn line(&mut self, which: usize, line: &str) -> Result<(), TrainError> {
        self.files[which].write(line)
    }

    /// Flushes and returns each CSV's length: where a resume truncates them to.
    pub(super) fn marks(&mut self) -> Result<Vec<u64>, TrainError> {
        self.files.iter_mut().map(Stream::mark).collect()
    }

    /// The CRC-32 of each file's bytes so far (what [`Recorder::reopen`] checks).
    pub(super) fn crcs(&self) -> Vec<u32> {
        self.files
            .iter()
            .map(|s| s.crc.clone().finalize())
            .collect()
    }
}
