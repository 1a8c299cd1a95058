//! What exact evaluation costs: one action of FIXAR's HalfCheetah actor (17-400-300-6,
//! tanh output) through `deploy::ExactPolicy` (golden integer inference, what evaluation
//! runs for a fixed-point actor) against the training forward (`Mlp::infer`, batch 1),
//! for fxp32 and fxp16. Medians of 7 rounds of 500 actions, one thread.
//!
//! `cargo run --release -p fixar-agents --example eval_cost`

use std::time::Instant;

use agents::deploy::ExactPolicy;
use agents::mlp::{Activation, Mlp};
use agents::precision::{PrecisionSpec, Preset};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    tch::set_num_threads(1);
    let (obs_dim, act_dim) = (17usize, 6usize);
    for preset in [Preset::Fxp32, Preset::Fxp16] {
        let out = Activation::Tanh {
            scale: vec![1.0; act_dim],
            offset: vec![0.0; act_dim],
        };
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let spec = PrecisionSpec::preset(preset);
        let mut net = Mlp::new(
            "actor",
            &[obs_dim, 400, 300, act_dim],
            out,
            &spec,
            &mut rng,
            1,
        );
        let policy = ExactPolicy::new(&net).expect("the preset's actor deploys");
        let obs: Vec<Vec<f32>> = (0..500)
            .map(|_| (0..obs_dim).map(|_| rng.gen_range(-3.0..3.0)).collect())
            .collect();
        let mut action = vec![0f32; act_dim];
        let (mut exact, mut forward) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            let t = Instant::now();
            for o in &obs {
                policy.act(o, &mut action);
            }
            exact.push(t.elapsed().as_secs_f64() / obs.len() as f64);
            let t = Instant::now();
            for o in &obs {
                let x = Tensor::from_slice(o).view([1, obs_dim as i64]);
                let y = net.infer(&x);
                let _ = std::hint::black_box(y);
            }
            forward.push(t.elapsed().as_secs_f64() / obs.len() as f64);
        }
        let (e, f) = (median(exact), median(forward));
        println!(
            "{preset}: exact integer inference {:.1} us/action, training forward {:.1} us/action, ratio {:.2}",
            e * 1e6,
            f * 1e6,
            e / f
        );
    }
}
