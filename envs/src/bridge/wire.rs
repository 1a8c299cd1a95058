//! The wire format between the bridge and its worker (`worker.py` documents the same
//! from the Python side).
//!
//! Frames are little-endian. A request is `u8 op, u32 payload length, payload`: reset
//! (`R`: `u8 has_seed, u64 seed`), step (`S`: the action as float32), reset to a state
//! (`T`: the state as float64), get the state (`G`: empty); bit [`SPIN_FLAG`] of `op`
//! asks the worker to spin on its stdin after answering (the `waiting` module). A
//! response is `u32 body length, body`, the body `u8 status` and then, for status 0, the
//! answer (`u32 n` and n float32 observation elements after `R`/`T`; `f64 reward, u8
//! terminated, u8 truncated` and the observation after `S`; `u32 n` and n float64 state
//! elements after `G`) or, for status 1, Python's exception message in UTF-8.
//! Observations are converted to float32 in the worker (MuJoCo computes in float64);
//! actions are passed unclipped, so Gymnasium's env clips (or MuJoCo clamps controls)
//! exactly as it does in Python. JSON only in the start-up handshake ([`Handshake`]:
//! the spaces, with infinities as the strings `"inf"`/`"-inf"`, and the time limit, or
//! Gymnasium's error).

use serde::Deserialize;

use crate::{BoxSpace, StepOutcome};

/// Bytes asked for per `read` of the worker's answers.
pub(super) const READ_CHUNK: usize = 4096;

/// Request ops.
pub(super) const OP_RESET: u8 = b'R';
pub(super) const OP_STEP: u8 = b'S';
pub(super) const OP_RESET_TO_STATE: u8 = b'T';
pub(super) const OP_STATE: u8 = b'G';
/// Set on an op: the worker spins after answering.
pub(super) const SPIN_FLAG: u8 = 0x80;

/// Answer statuses.
pub(super) const STATUS_OK: u8 = 0;
pub(super) const STATUS_PYTHON_ERROR: u8 = 1;

/// Where the observation starts in the body of a reset answer and of a step answer.
pub(super) const RESET_OBS_AT: usize = 1;
pub(super) const STEP_OBS_AT: usize = 11;
/// A step answer's body holds at least status, reward, flags and the observation's length.
const STEP_ANSWER_MIN: usize = 15;

/// Starts a request in `wbuf`: room for the header, filled by [`finish_request`].
pub(super) fn begin_request(wbuf: &mut Vec<u8>) {
    wbuf.clear();
    wbuf.extend_from_slice(&[0u8; 5]);
}

/// Writes the header of the request in `wbuf` (its payload is in place).
pub(super) fn finish_request(wbuf: &mut [u8], op: u8, spin: bool) {
    let len = (wbuf.len() - 5) as u32;
    wbuf[0] = if spin { op | SPIN_FLAG } else { op };
    wbuf[1..5].copy_from_slice(&len.to_le_bytes());
}

/// Appends the payload of a reset request.
pub(super) fn push_seed(wbuf: &mut Vec<u8>, seed: Option<u64>) {
    wbuf.push(u8::from(seed.is_some()));
    wbuf.extend_from_slice(&seed.unwrap_or(0).to_le_bytes());
}

/// Appends float32 values (an action).
pub(super) fn push_f32s(wbuf: &mut Vec<u8>, values: &[f32]) {
    for v in values {
        wbuf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Appends float64 values (a state).
pub(super) fn push_f64s(wbuf: &mut Vec<u8>, values: &[f64]) {
    for v in values {
        wbuf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Moves the first complete frame of `inbuf[..*inlen]` (`u32 length` + body) into
/// `rbuf` (body only) and true; else false, with room for a read of at least
/// [`READ_CHUNK`] bytes after `*inlen`.
pub(super) fn take_frame(inbuf: &mut Vec<u8>, inlen: &mut usize, rbuf: &mut Vec<u8>) -> bool {
    if let Some(len) = inbuf[..*inlen].get(..4) {
        let total = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
        if *inlen >= 4 + total {
            rbuf.clear();
            rbuf.extend_from_slice(&inbuf[4..4 + total]);
            inbuf.copy_within(4 + total..*inlen, 0);
            *inlen -= 4 + total;
            return true;
        }
    }
    if inbuf.len() - *inlen < READ_CHUNK {
        inbuf.resize(*inlen + READ_CHUNK, 0);
    }
    false
}

/// Copies the float32 observation (`u32 n`, n elements) at `at` in an answer into
/// `obs`; false if it is missing or of another size.
pub(super) fn decode_obs(body: &[u8], at: usize, obs: &mut [f32]) -> bool {
    let n = body
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    let values = n.and_then(|n| body.get(at + 4..at + 4 + 4 * n));
    match values {
        Some(values) if values.len() == 4 * obs.len() => {
            for (o, c) in obs.iter_mut().zip(values.chunks_exact(4)) {
                *o = f32::from_le_bytes(c.try_into().expect("4 bytes"));
            }
            true
        }
        _ => false,
    }
}

/// Reward and flags of a step answer (the observation follows at [`STEP_OBS_AT`]);
/// None if the answer is too short.
pub(super) fn decode_step(body: &[u8]) -> Option<StepOutcome> {
    if body.len() < STEP_ANSWER_MIN {
        return None;
    }
    let reward = f64::from_le_bytes(body[1..9].try_into().expect("8 bytes"));
    Some(StepOutcome {
        reward,
        terminated: body[9] != 0,
        truncated: body[10] != 0,
    })
}

/// The float64 state (`u32 n`, n elements) of a get-state answer; None if malformed.
pub(super) fn decode_state(body: &[u8]) -> Option<Vec<f64>> {
    let body = body.get(1..)?;
    let n = body
        .get(..4)
        .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize);
    n.and_then(|n| body.get(4..4 + 8 * n)).map(|vals| {
        vals.chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Bound {
    Num(f64),
    Text(String),
}

impl Bound {
    fn value(&self) -> Result<f32, HandshakeError> {
        match self {
            Bound::Num(v) => Ok(*v as f32),
            Bound::Text(t) if t == "inf" => Ok(f32::INFINITY),
            Bound::Text(t) if t == "-inf" => Ok(f32::NEG_INFINITY),
            Bound::Text(t) => Err(HandshakeError::Bound { text: t.clone() }),
        }
    }
}

/// A worker's handshake that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Not the JSON object of a handshake (`text`: what the worker sent, lossily decoded).
    #[error("bad handshake from the worker ({source}): {text}")]
    Json {
        text: String,
        #[source]
        source: serde_json::Error,
    },
    /// A space bound that is neither a number nor `"inf"`/`"-inf"`.
    #[error("bad spaces in the handshake: bad bound {text:?}")]
    Bound { text: String },
    /// Low and high bounds of different lengths, or a low bound above its high bound.
    #[error("bad spaces in the handshake: inconsistent Box bounds")]
    InconsistentBounds,
}

/// The worker's first answer.
#[derive(Deserialize)]
pub(super) struct Handshake {
    pub(super) ok: bool,
    #[serde(default)]
    pub(super) unknown_id: bool,
    #[serde(default)]
    pub(super) error: String,
    #[serde(default)]
    obs_low: Vec<Bound>,
    #[serde(default)]
    obs_high: Vec<Bound>,
    #[serde(default)]
    act_low: Vec<Bound>,
    #[serde(default)]
    act_high: Vec<Bound>,
    #[serde(default)]
    pub(super) max_episode_steps: Option<u32>,
}

impl Handshake {
    /// Parses the handshake frame.
    pub(super) fn parse(frame: &[u8]) -> Result<Self, HandshakeError> {
        serde_json::from_slice(frame).map_err(|source| HandshakeError::Json {
            text: String::from_utf8_lossy(frame).into_owned(),
            source,
        })
    }

    /// The observation and action spaces.
    pub(super) fn spaces(&self) -> Result<(BoxSpace, BoxSpace), HandshakeError> {
        Ok((
            space(&self.obs_low, &self.obs_high)?,
            space(&self.act_low, &self.act_high)?,
        ))
    }
}

fn space(low: &[Bound], high: &[Bound]) -> Result<BoxSpace, HandshakeError> {
    let low = low
        .iter()
        .map(Bound::value)
        .collect::<Result<Vec<_>, _>>()?;
    let high = high
        .iter()
        .map(Bound::value)
        .collect::<Result<Vec<_>, _>>()?;
    if low.len() != high.len() || low.iter().zip(&high).any(|(l, h)| l > h) {
        return Err(HandshakeError::InconsistentBounds);
    }
    Ok(BoxSpace { low, high })
}

/// Fuzzing what the worker sends (with the workspace's fuzz driver, `fuzz/`): any byte
/// stream is cut into frames and every frame decoded as each answer and as a handshake,
/// without a panic, a hang or an abort. Long runs: `scripts/fuzz`.
#[cfg(test)]
mod fuzz {
    use super::*;

    const TOKENS: &[&[u8]] = &[
        b"\x00\x00\x00\x00",
        b"\xff\xff\xff\xff",
        b"\x03\x00\x00\x00",
        b"\x00\x00\x80\x7f",
        b"\x00\x00\xc0\x7f",
        b"\x01",
    ];

    /// Frames as `read_frame` takes them from reads of 1 to 7 bytes at a time.
    fn frames(stream: &[u8]) -> Vec<Vec<u8>> {
        let (mut inbuf, mut inlen, mut rbuf) = (Vec::new(), 0usize, Vec::new());
        let mut out = Vec::new();
        let mut pos = 0;
        loop {
            while take_frame(&mut inbuf, &mut inlen, &mut rbuf) {
                out.push(rbuf.clone());
            }
            if pos == stream.len() {
                return out;
            }
            let n = (1 + pos % 7)
                .min(stream.len() - pos)
                .min(inbuf.len() - inlen);
            inbuf[inlen..inlen + n].copy_from_slice(&stream[pos..pos + n]);
            inlen += n;
            pos += n;
        }
    }

    #[test]
    fn worker_answer_frames() {
        let seeds = fuzzkit::corpus("bridge_frames");
        fuzzkit::fuzz("bridge_frames", &seeds, TOKENS, |stream| {
            let frames = frames(stream);
            let complete = !frames.is_empty();
            for body in frames {
                for dim in [0, 1, 3, 11] {
                    let mut obs = vec![0f32; dim];
                    let _ = decode_obs(&body, RESET_OBS_AT, &mut obs);
                    let _ = decode_obs(&body, STEP_OBS_AT, &mut obs);
                }
                let _ = decode_step(&body);
                let _ = decode_state(&body);
            }
            complete
        });
    }

    #[test]
    fn worker_handshakes() {
        let seeds = fuzzkit::corpus("handshake");
        let tokens: &[&[u8]] = &[b"\"inf\"", b"\"-inf\"", b"1e39", b"-1e39", b"[]", b"null"];
        fuzzkit::fuzz("handshake", &seeds, tokens, |bytes| {
            let Ok(h) = Handshake::parse(bytes) else {
                return false;
            };
            if let Ok((obs, act)) = h.spaces() {
                assert_eq!(obs.low.len(), obs.high.len());
                assert_eq!(act.low.len(), act.high.len());
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handshake_that_is_not_json_names_what_was_sent_and_keeps_the_parser_error() {
        let err = Handshake::parse(b"Traceback (most recent call last)")
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(msg.starts_with("bad handshake from the worker ("), "{msg}");
        assert!(
            msg.ends_with("): Traceback (most recent call last)"),
            "{msg}"
        );
        let source = std::error::Error::source(&err).expect("source kept");
        assert!(source.downcast_ref::<serde_json::Error>().is_some());
    }

    #[test]
    fn handshake_spaces_name_a_bad_bound_and_refuse_crossed_bounds() {
        let spaces = |json: &str| Handshake::parse(json.as_bytes()).unwrap().spaces();
        let (obs, act) = spaces(
            r#"{"ok": true, "obs_low": ["-inf", 0], "obs_high": ["inf", 1],
                "act_low": [-1], "act_high": [1]}"#,
        )
        .unwrap();
        assert_eq!(obs.low, [f32::NEG_INFINITY, 0.0]);
        assert_eq!(act.high, [1.0]);
        let err = spaces(r#"{"ok": true, "obs_low": ["nan"], "obs_high": [1]}"#).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"bad spaces in the handshake: bad bound "nan""#
        );
        let err = spaces(r#"{"ok": true, "act_low": [2], "act_high": [1]}"#).unwrap_err();
        assert!(matches!(err, HandshakeError::InconsistentBounds), "{err}");
        let err = spaces(r#"{"ok": true, "obs_low": [0, 0], "obs_high": [1]}"#).unwrap_err();
        assert!(matches!(err, HandshakeError::InconsistentBounds), "{err}");
    }

    /// Frames arrive split over reads, several in one read, and longer than a read.
    #[test]
    fn frames_are_cut_from_the_byte_stream_whatever_the_reads() {
        let frame = |body: &[u8]| {
            let mut f = (body.len() as u32).to_le_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        let big: Vec<u8> = (0..3 * READ_CHUNK + 7).map(|i| (i % 251) as u8).collect();
        let mut stream = frame(b"first");
        stream.extend(frame(&big));
        stream.extend(frame(b""));
        stream.extend(frame(b"last"));
        for read_size in [1, 3, 5, 100, READ_CHUNK, stream.len()] {
            let (mut inbuf, mut inlen, mut rbuf) = (vec![0u8; READ_CHUNK], 0, Vec::new());
            let mut got = Vec::new();
            let mut fed = 0;
            while got.len() < 4 {
                if take_frame(&mut inbuf, &mut inlen, &mut rbuf) {
                    got.push(rbuf.clone());
                    continue;
                }
                assert!(inbuf.len() - inlen >= READ_CHUNK, "room for a read");
                // A read fills at most the room there is.
                let n = read_size.min(stream.len() - fed).min(inbuf.len() - inlen);
                assert!(n > 0, "read size {read_size}: stream ended with {got:?}");
                inbuf[inlen..inlen + n].copy_from_slice(&stream[fed..fed + n]);
                (inlen, fed) = (inlen + n, fed + n);
            }
            assert_eq!(
                got,
                [b"first".to_vec(), big.clone(), vec![], b"last".to_vec()]
            );
            assert_eq!(inlen, 0);
        }
    }
}
