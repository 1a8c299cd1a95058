//! Export from a real (tiny) fixed-point training run: the C target's bench passes on the
//! exported vectors, and the golden integer path agrees with the agent's own forward pass.

mod common;

use std::process::Command;

use common::{fixar, train_tiny_fxp16, Run, Scratch};

#[test]
fn exported_fxp16_actor_matches_the_agent_and_its_c_bench_passes() {
    let dir = Scratch::new("fxp16");
    let run = train_tiny_fxp16(&dir);

    let out = dir.join("c");
    fixar()
        .args(["-q", "export", "--target", "c", "--run"])
        .arg(&run)
        .arg("--out")
        .arg(&out)
        .run_ok();
    Command::new("cc")
        .args(["-std=c99", "-O2", "-o", "tb", "tb.c", "fixar_actor.c"])
        .current_dir(&out)
        .run_ok();
    let tb = Command::new(out.join("tb"))
        .arg("vectors.txt")
        .current_dir(&out)
        .run_ok();
    assert_eq!(tb.stdout.trim(), "256 passed, 0 failed");

    // The golden integer path against the agent's own deterministic action.
    let seed_dir = runs::export::resolve_checkpoint_dir(&run).unwrap();
    let actor = agents::deploy::DeployedActor::load(&seed_dir).unwrap();
    let tables = actor.tanh_tables().unwrap();
    let reader =
        agents::checkpoint::CheckpointReader::read(&seed_dir.join("checkpoint.bin")).unwrap();
    let tcfg: agents::config::TrainConfig = reader.meta("config").unwrap();
    let env = envs::make("Pendulum-v1").unwrap();
    let mut agent =
        agents::trainer::build_agent(&tcfg, env.observation_space(), env.action_space(), 0);
    agents::trainer::load_agent(agent.as_mut(), &reader).unwrap();
    let out_fmt = actor.output_fmt();
    for i in 0..300 {
        let t = i as f32 * 0.05;
        let obs = [t.cos(), t.sin(), (i as f32 * 0.37).sin() * 8.0];
        let raw: Vec<i64> = obs
            .iter()
            .map(|v| quant::from_f64(*v as f64, &actor.input_fmt).unwrap())
            .collect();
        let golden = quant::to_f64(actor.infer_raw(&raw, &tables)[0], &out_fmt);
        // The training forward (exact GEMMs, the `auto` choice at 16 bits) acts exactly
        // as the integer hardware does.
        let mut act = [0f32];
        agent.act(&obs, &mut act);
        assert_eq!(golden, act[0] as f64, "obs {obs:?}");
    }
    // Evaluation ran the exported actor's integer inference.
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["seeds"][0]["eval_arithmetic"], "exact integer");
    assert_eq!(summary["seeds"][0]["gemm"], "exact");
}
