//! The four CSV streams of a seed directory (`metrics.csv`, `quant.csv`, `eval.csv`,
//! `episodes.csv`), appended as training goes and truncated back to a checkpoint's
//! marks on resume, so a resumed run's files equal an uninterrupted run's.
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
use crate::layout;

/// The four CSV streams of a seed, appended as training goes.
pub(super) struct Recorder {
    pub(super) files: Vec<Stream>,
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
        Ok(Recorder { files })
    }

    /// Reopens the streams for appending after truncating them to `marks` bytes, once
    /// every file is checked against its mark and (when the checkpoint has them) its
    /// CRC-32: a damaged file is an error and no file is changed.
    pub(super) fn reopen(
        dir: &Path,
        marks: &[u64],
        crcs: Option<&[u32]>,
    ) -> Result<Self, TrainError> {
        let mut files = Vec::new();
        for (path, mark, crc) in check_all(dir, marks, crcs)? {
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(mark).map_err(io_err(&path))?;
            files.push(Stream {
                path,
                file: BufWriter::new(f),
                crc,
            });
        }
        Ok(Recorder { files })
    }

    /// Starts the streams of a branch in `dir` from the source seed directory `src`: each
    /// source file is checked against its checkpoint mark and CRC-32 (as a resume does),
    /// its first `marks` bytes are copied with `metrics_line` applied to every line of
    /// `metrics.csv` (the header included), and the copies stay open for appending. The
    /// source is only read.
    pub(super) fn branch(
        src: &Path,
        marks: &[u64],
        crcs: Option<&[u32]>,
        dir: &Path,
        metrics_line: &dyn Fn(&str) -> String,
    ) -> Result<Self, TrainError> {
        let mut prefixes = Vec::new();
        for (path, mark, _) in check_all(src, marks, crcs)? {
            let mut bytes = Vec::new();
            File::open(&path)
                .map_err(io_err(&path))?
                .take(mark)
                .read_to_end(&mut bytes)
                .map_err(io_err(&path))?;
            let text = String::from_utf8(bytes)
                .map_err(|_| damaged(&path, "holds bytes that are not UTF-8".into()))?;
            prefixes.push(text);
        }
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
        Ok(Recorder { files })
    }

    pub(super) fn line(&mut self, which: usize, line: &str) -> Result<(), TrainError> {
        self.files[which].write(line)
    }

    /// Flushes and returns each file's length: where a resume truncates them to.
    pub(super) fn marks(&mut self) -> Result<Vec<u64>, TrainError> {
        let mut marks = Vec::new();
        for s in &mut self.files {
            s.file.flush().map_err(io_err(&s.path))?;
            let len = s.file.get_ref().metadata().map_err(io_err(&s.path))?.len();
            marks.push(len);
        }
        Ok(marks)
    }

    /// The CRC-32 of each file's bytes so far (what [`Recorder::reopen`] checks).
    pub(super) fn crcs(&self) -> Vec<u32> {
        self.files
            .iter()
            .map(|s| s.crc.clone().finalize())
            .collect()
    }
}
