//! One training iteration of an actor-critic agent, split into the phases the
//! accelerator runs, each a list of GEMMs and element-wise update passes.

use serde::{Deserialize, Serialize};

use crate::workload::{Algo, MacAccounting, Workload};

/// A phase of one training iteration (plus action inference, which is one too: the
/// environment step that feeds the replay buffer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Actor forward on the current state(s) to choose the action for the environment.
    ActionInference,
    /// Target actor forward on the next states: a' = mu'(s').
    TargetActor,
    /// Target critic(s) forward on (s', a').
    TargetCritic,
    /// Critic(s) forward on (s, a) from the replay batch.
    CriticForward,
    /// Critic(s) backward: input errors (all but the first layer) and weight gradients.
    CriticBackward,
    /// Critic weight update.
    CriticUpdate,
    /// Actor forward on s, then critic 1 forward on (s, mu(s)) for the actor loss.
    ActorForward,
    /// Backward through critic 1 to its action input, then through the actor with its
    /// weight gradients.
    ActorBackward,
    /// Actor weight update.
    ActorUpdate,
    /// Soft (Polyak) update of every target network.
    TargetUpdate,
    /// Off-chip traffic (replay batch, activations spilled past the on-chip activation
    /// memory) not hidden behind the iteration's compute (stall cycles only).
    ReplayFetch,
}

impl Phase {
    pub const ALL: [Phase; 11] = [
        Phase::ActionInference,
        Phase::TargetActor,
        Phase::TargetCritic,
        Phase::CriticForward,
        Phase::CriticBackward,
        Phase::CriticUpdate,
        Phase::ActorForward,
        Phase::ActorBackward,
        Phase::ActorUpdate,
        Phase::TargetUpdate,
        Phase::ReplayFetch,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::ActionInference => "action inference",
            Phase::TargetActor => "target actor",
            Phase::TargetCritic => "target critic",
            Phase::CriticForward => "critic forward",
            Phase::CriticBackward => "critic backward",
            Phase::CriticUpdate => "critic update",
            Phase::ActorForward => "actor forward",
            Phase::ActorBackward => "actor backward",
            Phase::ActorUpdate => "actor update",
            Phase::TargetUpdate => "target update",
            Phase::ReplayFetch => "off-chip stall",
        }
    }
}

/// Which GEMM dimension carries the batch; decides how intra-batch parallelism splits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchAxis {
    /// Forward and input-error GEMMs: the streamed rows are samples.
    M,
    /// Weight-gradient GEMMs: the reduction runs over samples, so split partial
    /// gradients are summed across cores.
    K,
}

/// Where the stationary operand (the one held in the PE registers) comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stationary {
    /// Weights from the weight memory (transposed indexing for input errors).
    Weights,
    /// Errors from the activation/error buffer (weight gradients).
    Buffer,
}

/// Y (m x n) = X (m x k) . S (k x n), with S stationary in the PE array and X streamed
/// one row per cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gemm {
    pub m: usize,
    pub k: usize,
    pub n: usize,
    pub batch_axis: BatchAxis,
    pub stationary: Stationary,
    /// The stationary weights are read through the transposed mapping: an input-error
    /// GEMM uses the forward layer's W (stored for the forward pass, n x k) as W^T, each
    /// stored row going to a PE row instead of a PE column, with no data movement.
    #[serde(default)]
    pub transposed: bool,
}

impl Gemm {
    pub fn macs(&self) -> u64 {
        (self.m * self.k * self.n) as u64
    }
}

/// An element-wise pass over parameters through the weight memory's port (optimizer step
/// or soft target update). The pass runs on the port in the background while `behind`'s
/// weight-gradient GEMMs stream (their stationary operand comes from the error buffer, so
/// they leave the weight port idle); what does not fit in those cycles is exposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParamPass {
    pub params: u64,
    /// Weight-port accesses per weight word: Adam or SGD read and write the weight (2); a
    /// soft target update fused behind the optimizer reads and writes the target (2).
    pub port_ops: u64,
    /// The backward phase whose weight-gradient cycles can hide this pass.
    pub behind: Phase,
    /// Whether the pass reads and writes the optimizer's state (an optimizer step) or not
    /// (a soft target update).
    pub optimizer_state: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Gemm(Gemm),
    Params(ParamPass),
}

/// A phase with its operations and how often it runs per training iteration
/// (1/policy_delay for TD3's delayed actor and target updates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhasePlan {
    pub phase: Phase,
    pub runs_per_iteration: f64,
    pub ops: Vec<Op>,
}

/// A workload split into phases, built once and evaluated against many configurations.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub workload: Workload,
    pub phases: Vec<PhasePlan>,
    /// Bytes of one replay batch: (s, a, r, s', done) per sample, 32-bit words (the
    /// host's transfer over PCIe and, on the card, its fetch from off-chip memory).
    pub replay_bytes: u64,
    /// Words of weights in the (shared) weight memory: all online and target networks,
    /// two FXP16 weights per 32-bit word.
    pub weight_words: u64,
    /// Words of optimizer state (Adam's two moments per online parameter).
    pub optimizer_words: u64,
    /// The largest single layer's weight words, and which layer it is.
    pub largest_layer: (String, u64),
    /// Words one sample's stored activations and errors take in the buffer.
    pub buffer_words_per_sample: u64,
}

fn forward(widths: &[usize], batch: usize, ops: &mut Vec<Op>) {
    for p in widths.windows(2) {
        ops.push(Op::Gemm(Gemm {
            m: batch,
            k: p[0],
            n: p[1],
            batch_axis: BatchAxis::M,
            stationary: Stationary::Weights,
            transposed: false,
        }));
    }
}

/// Backward from the output layer down: input errors for layer l (skipped for the
/// first layer unless `input_errors`), then its weight gradients when `grads` (errors
/// first, so a layer's weights are free for their update once its gradient is done).
fn backward(widths: &[usize], batch: usize, input_errors: bool, grads: bool, ops: &mut Vec<Op>) {
    for l in (0..widths.len() - 1).rev() {
        let (fan_in, fan_out) = (widths[l], widths[l + 1]);
        if l > 0 || input_errors {
            ops.push(Op::Gemm(Gemm {
                m: batch,
                k: fan_out,
                n: fan_in,
                batch_axis: BatchAxis::M,
                stationary: Stationary::Weights,
                transposed: true,
            }));
        }
        if grads {
            ops.push(Op::Gemm(Gemm {
                m: fan_in,
                k: batch,
                n: fan_out,
                batch_axis: BatchAxis::K,
                stationary: Stationary::Buffer,
                transposed: false,
            }));
        }
    }
}

impl Plan {
    /// Splits one training iteration of `w` into phases. The workload is assumed valid
    /// (`Workload::validate`).
    pub fn new(w: &Workload) -> Plan {
        let actor = w.actor_widths();
        let critic = w.critic_widths();
        let b = w.batch;
        let critics = w.critics();
        let delayed = 1.0 / w.policy_delay() as f64;
        let pass = |params: u64, behind: Phase, optimizer_state: bool| {
            Op::Params(ParamPass {
                params,
                port_ops: 2,
                behind,
                optimizer_state,
            })
        };
        let mut phases = Vec::new();
        let mut push = |phase, runs, ops| {
            phases.push(PhasePlan {
                phase,
                runs_per_iteration: runs,
                ops,
            })
        };

        let mut ops = Vec::new();
        forward(&actor, w.inference_batch, &mut ops);
        push(Phase::ActionInference, 1.0, ops);

        let mut ops = Vec::new();
        forward(&actor, b, &mut ops);
        push(Phase::TargetActor, 1.0, ops);

        let mut ops = Vec::new();
        for _ in 0..critics {
            forward(&critic, b, &mut ops);
        }
        push(Phase::TargetCritic, 1.0, ops.clone());
        push(Phase::CriticForward, 1.0, ops);

        let mut ops = Vec::new();
        for _ in 0..critics {
            backward(&critic, b, false, true, &mut ops);
        }
        push(Phase::CriticBackward, 1.0, ops);
        let critic_params = w.critic_params() * critics as u64;
        push(
            Phase::CriticUpdate,
            1.0,
            vec![pass(critic_params, Phase::CriticBackward, true)],
        );

        let mut ops = Vec::new();
        forward(&actor, b, &mut ops);
        forward(&critic, b, &mut ops);
        push(Phase::ActorForward, delayed, ops);

        let mut ops = Vec::new();
        let critic_grads = w.accounting == MacAccounting::Autograd;
        backward(&critic, b, true, critic_grads, &mut ops);
        backward(&actor, b, false, true, &mut ops);
        push(Phase::ActorBackward, delayed, ops);
        push(
            Phase::ActorUpdate,
            delayed,
            vec![pass(w.actor_params(), Phase::ActorBackward, true)],
        );

        // Each target's soft update follows its network's optimizer step on the port.
        push(
            Phase::TargetUpdate,
            delayed,
            vec![
                pass(critic_params, Phase::CriticBackward, false),
                pass(w.actor_params(), Phase::ActorBackward, false),
            ],
        );
        push(Phase::ReplayFetch, 1.0, Vec::new());

        let target_params = w.actor_params() + critic_params;
        let per_word = if w.precision.bits() == 16 { 2 } else { 1 };
        let words = |params: u64| params.div_ceil(per_word);
        let weight_words = 2 * words(target_params);
        let mut largest = (String::new(), 0u64);
        for (net, widths) in [("actor", &actor), ("critic", &critic)] {
            for (l, p) in widths.windows(2).enumerate() {
                let ws = words((p[0] * p[1] + p[1]) as u64);
                if ws > largest.1 {
                    largest = (format!("{net} layer {l} ({}x{})", p[0], p[1]), ws);
                }
            }
        }
        // Activations of every layer of the actor and the critics, plus their errors.
        let acts: usize = actor.iter().sum::<usize>() + critics * critic.iter().sum::<usize>();
        let replay_words = 2 * w.obs_dim + w.act_dim + 2;
        Plan {
            workload: w.clone(),
            phases,
            replay_bytes: (b * replay_words * 4) as u64,
            weight_words,
            optimizer_words: words(target_params) * w.optimizer.state_words_per_param(),
            largest_layer: largest,
            buffer_words_per_sample: words(2 * acts as u64),
        }
    }

    /// MACs of one training iteration (phases weighted by how often they run).
    pub fn training_macs(&self) -> f64 {
        self.phases
            .iter()
            .map(|p| {
                p.runs_per_iteration
                    * p.ops
                        .iter()
                        .map(|o| match o {
                            Op::Gemm(g) => g.macs() as f64,
                            Op::Params(_) => 0.0,
                        })
                        .sum::<f64>()
            })
            .sum()
    }
}

impl Algo {
    pub fn name(self) -> &'static str {
        match self {
            Algo::Ddpg => "DDPG",
            Algo::Td3 => "TD3",
        }
    }
}
