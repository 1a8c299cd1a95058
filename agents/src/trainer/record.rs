//! The four CSV streams of a seed directory (`metrics.csv`, `quant.csv`, `eval.csv`,
//! `episodes.csv`), appended as training goes and truncated back to a checkpoint's
//! marks on resume, so a resumed run's files equal an uninterrupted run's.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{io_err, TrainError};
use crate::layout;

/// The four CSV streams of a seed, appended as training goes.
pub(super) struct Recorder {
    pub(super) files: Vec<(PathBuf, BufWriter<File>)>,
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
            let path = dir.join(name);
            let mut f = BufWriter::new(File::create(&path).map_err(io_err(&path))?);
            writeln!(f, "{header}").map_err(io_err(&path))?;
            files.push((path, f));
        }
        Ok(Recorder { files })
    }

    /// Reopens the streams for appending after truncating them to `marks` bytes.
    pub(super) fn reopen(dir: &Path, marks: &[u64]) -> Result<Self, TrainError> {
        let mut files = Vec::new();
        for (name, &mark) in layout::SEED_CSVS.iter().zip(marks) {
            let path = dir.join(name);
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io_err(&path))?;
            f.set_len(mark).map_err(io_err(&path))?;
            drop(f);
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            files.push((path, BufWriter::new(f)));
        }
        Ok(Recorder { files })
    }

    pub(super) fn line(&mut self, which: usize, line: &str) -> Result<(), TrainError> {
        let (path, f) = &mut self.files[which];
        writeln!(f, "{line}").map_err(io_err(path))
    }

    /// Flushes and returns each file's length: where a resume truncates them to.
    pub(super) fn marks(&mut self) -> Result<Vec<u64>, TrainError> {
        let mut marks = Vec::new();
        for (path, f) in &mut self.files {
            f.flush().map_err(io_err(path))?;
            marks.push(f.get_ref().metadata().map_err(io_err(path))?.len());
        }
        Ok(marks)
    }
}
