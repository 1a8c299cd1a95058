//! DDPG and TD3 whose networks train in fixed point, following the accelerator's
//! datapath (`../shared/design/numerics.md`, "Fixed-point training").
//!
//! What this crate is for: training deterministic actor-critic agents with every
//! forward, backward and optimizer value cast into a fixed-point format (emulated on
//! libtorch through `quant`), in float32 for reference, or quantization-aware with a
//! float master copy. Not for: environments (`envs`), formats and casts themselves
//! (`quant`), flags, plots, markdown and the CLI (`runs`).
//!
//! ```no_run
//! use agents::{config::TrainConfig, trainer::Trainer};
//! let cfg = TrainConfig { total_timesteps: 20_000, learning_starts: 1_000, ..Default::default() };
//! let mut t = Trainer::new(cfg, 0, std::path::Path::new("runs/td3-seed0")).unwrap();
//! let result = t.run(None, &mut |_| {}).unwrap().unwrap();
//! println!("final eval return {}", result.final_eval_return);
//! ```
//!
//! # Modules
//! - [`precision`]: tensor classes, per-layer formats, presets (`float32`, `fxp32`,
//!   `fxp16`), the config's `[formats]` overrides, `Gemm` (fast/exact), `TrainMode`
//!   (fixed/qat).
//! - [`mlp`]: the network, explicit forward/backward with a cast at every point; one
//!   module per numeric path (tensor fixed point, fused slice kernels, QAT autograd).
//! - [`optim`]: Adam and SGD/momentum in fixed point, stepping a parameter view the
//!   network lends (`params`), so `optim` never sees `mlp`; the slice kernels
//!   (`fused`) know neither.
//! - [`ddpg`], [`td3`]: the algorithms, one file each; [`dpg`]: what they share.
//! - [`replay`], [`noise`]: replay buffer, exploration noise.
//! - [`trainer`]: the loop, evaluation, metrics files, checkpoints, resume.
//! - [`qat`]: the QAT ladder (strategies, rungs, format derivation, the verdict).
//! - [`schedule`]: FIXAR's in-training QAT schedule (`[schedule]`: FXP32 until a delay,
//!   then activations through affine or `ap_fixed` quantizers from the frozen ranges).
//! - [`export`]: the actor's integer codes and formats for hardware.
//! - [`layout`]: every file name of a run directory.
//! - [`pipeline`]: the `fixar pipeline` file (train, QAT, accelerator stages).
//! - [`sweep`]: a sweep's grid of trials with stable ids, shards, each trial's config,
//!   and collecting finished trials from shard directories into per-group summaries.
//! - [`deploy`]: the actor as integer hardware runs it (golden integer inference, tanh
//!   tables, test vectors) and its C99 and HLS C++ code generators.
//!
//! # The datapath (per layer, batch of B)
//! forward: `x` (network input cast to `Input`; else the previous layer's activations),
//! `z = cast_Preact(x W + b)` (products exact, sum exact in `exact` mode, f32 in `fast`
//! mode), `a = cast_Activation(act(z))`. backward: `dz = cast_Error(da * act'(z))`,
//! `gW = cast_Grad(x^T dz)`, `gb = cast_Grad(sum_rows dz)`, `dx = cast_Error(dz W^T)`.
//! update: see below; `W = cast_Weight(W - u)`. Loss gradients enter the backward
//! already cast into the output layer's `Error` format; TD targets are cast into the
//! critic output's `Preact` format. Soft target updates are `cast_Weight(t + tau (w - t))`
//! in the target's formats. Every cast counts elements, saturations, wraps, NaN and Inf
//! per layer and class (`Layer::stats()`), and feeds range observers every
//! `range_every`-th update (`Layer::ranges()`: max |x|, EMA of max, 99.9th percentile).
//! Hyperparameter constants (beta, lr, tau, gamma, 2/B) are applied at the storage
//! float's precision; the result is then cast, so each class sees one rounding.
//!
//! **Presets** ([`precision::Preset`]): `float32` (no casts); `fxp32`, FIXAR's starting
//! point: 32-bit signed, round-to-nearest-even, saturate, with *fixed default* binary
//! points (Q16.16 inputs, pre-activations and activations; Q8.24 weights, biases,
//! gradients and optimizer state; Q4.28 errors; Q-4.36 updates) chosen from the ranges
//! TD3/DDPG reach on Pendulum and MuJoCo (a TD3 Pendulum run saturates only about 1 error
//! in 10^7 and no activation); observed ranges drive narrower formats later (QAT ladder);
//! `fxp16`, the same at 16 bits with stochastic rounding on weights and biases. Config
//! `[formats]` overrides any class, network or layer.
//!
//! Storage is f32, or f64 when a format is wider than 24 bits (fxp32): f64 holds every
//! 32-bit code exactly. `fast` GEMMs run in f32 on the grid values (f32 shadows of W),
//! `exact` GEMMs through `quant::tensor::exact_linear`, equal to `quant::golden_gemm`
//! (tested). [`mlp::fast_exact_mismatch`] measures per layer how often fast and exact
//! casts differ (`fixar bench td3` prints it).
//!
//! # Adam and SGD in fixed point
//! Adam keeps m and **s = sqrt(v)** instead of v, both cast into the `OptState` format:
//! `m = cast(b1 m + (1 - b1) g)`, `s = cast(sqrt(b2 s^2 + (1 - b2) g^2))`,
//! `u = cast_Update((lr / bc1) m / (s / sqrt(bc2) + eps))` with `bc_i = 1 - b_i^t`,
//! where `eps` is at least one LSB of the `OptState` format (a smaller eps is not
//! representable beside s, and a state s that rounds to 0 under an m of one LSB would
//! otherwise give a step thousands of times `lr`).
//! Why s: v has the magnitude of g^2 (1e-12 for g = 1e-6), which underflows any format
//! that also holds m; s has the magnitude of g, so one format fits both. In exact
//! arithmetic it is the same algorithm. **Square root and division** are computed in
//! the storage float (f64 for 32-bit formats, f32 up to 24 bits) on the grid values of
//! s, g and m, and the result is rounded once into the state/update format with that
//! format's rounding and overflow: what an HLS `sqrt`/divider core of at least the
//! target's precision followed by an assignment gives. f64's 53-bit results are far
//! below one LSB of a 32-bit target, so only the final cast rounds (except a double
//! rounding exactly at a tie, probability about 2^-21 per element). SGD:
//! `buf = cast_OptState(mu buf + g)`, `u = cast_Update(lr buf)` (mu = 0: `u = cast(lr g)`).
//! All-float networks (and QAT) take a fused path over the flat parameter tensor.
//!
//! # Modes
//! - Pure fixed point ([`precision::TrainMode::Fixed`], default): explicit backward,
//!   no float master copy; everything under `tch::no_grad`.
//! - QAT ([`precision::TrainMode::Qat`]): float master weights; the forward casts
//!   input, weights, biases, pre-activations and activations with
//!   `quant::tensor::fake_quant_ste` and libtorch autograd computes the backward (the
//!   straight-through estimator: identity inside the range, zero where saturated);
//!   optimizer in float.
//!
//! # What other code may do with a trainer
//! Read anything (`Trainer::{config, agent, formats, ranges, evals, result}`; layer
//! names `actor.fc1`..`actor.fc3`, `critic1.fc2`, `critic2_target.fc3` are stable) and
//! change it only through its verbs (`trainer/control.rs`): `set_formats` (recasts the
//! stored weights), `reset_range_observers`, `set_range_every`, `train_steps`,
//! `set_mode`, `set_learning_rate`, `project_actor_pow2`, `evaluate`, `checkpoint`.
//! The QAT ladder ([`qat`]) and the deployed actor ([`deploy`]) are built on these;
//! run-directory names are in [`layout`]. Layers and networks are read-only outside
//! this crate (`Layer::{name, in_dim, out_dim, activation, formats, stats, ranges,
//! weight}`, `Mlp::{name, layers}`).
//!
//! # Determinism
//! One RNG stream for init, one for the loop (exploration, replay sampling, target
//! smoothing noise), one `StochasticSource` per network, all ChaCha8 seeded from the
//! run seed; env episodes reset with seeds derived from it. On CPU with one libtorch
//! thread, the same config and seed give byte-identical metrics files, and a run
//! resumed from a checkpoint equals an uninterrupted one (both tested).

mod cast;
pub mod checkpoint;
pub mod config;
pub mod ddpg;
pub mod deploy;
pub mod dpg;
pub mod export;
mod fused;
pub mod layout;
pub mod learned_point;
pub mod mlp;
pub mod noise;
pub mod optim;
mod params;
pub mod pipeline;
pub mod pow2;
pub mod precision;
pub mod qat;
pub mod replay;
pub mod schedule;
pub mod stats;
pub mod sweep;
pub mod td3;
pub mod tfevents;
pub mod trainer;
pub mod weights;

pub use dpg::Agent;
pub use precision::{Gemm, LayerFormats, PrecisionSpec, Preset, TensorClass, TrainMode};
