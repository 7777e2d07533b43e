//! `copra-lab bench`: speed measurements (throughput, not correctness; kept out of tests).

use super::common::RunArgs;
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::adapter::Grouping;
use copra_lab::analysis::layer_game::{GameValue, LayerGame};
use copra_lab::shapley::Game;
use copra_lab::train::trainer::{train_adapter_with, LoopOptions};
use copra_lab::train::{train_grid, Method};
use rand::Rng;
use std::time::Instant;

/// Which benchmark.
#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum BenchKind {
    /// Training throughput (images/s) of lora and of constant participation p = 0.25, 0.5, 1.
    Train,
    /// Coalition evaluations per second: plain forward vs lowest-block start vs prefix walk.
    Coalitions,
    /// Total training throughput (images/s) of a grid of --grid-runs LoRA runs trained
    /// together, against one run alone.
    Grid,
    /// No-grad evaluation throughput (examples/s): the whole test split (--test-size) through
    /// the frozen backbone and the head, the path every measure evaluates with (one untimed
    /// pass, then min(--bench-steps, 10) timed passes).
    Forward,
}

/// Arguments of `bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Benchmark to run.
    #[arg(value_enum)]
    pub kind: BenchKind,
    /// Optimizer steps per training configuration.
    #[arg(long, default_value_t = 100)]
    pub bench_steps: usize,
    /// Random coalitions timed for the per-coalition paths.
    #[arg(long, default_value_t = 64)]
    pub coalitions: usize,
    /// Runs (seeds 1..=K of LoRA) trained together by `bench grid`.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    pub grid_runs: u64,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `bench`.
pub fn run(global: &GlobalArgs, a: BenchArgs) -> Result<()> {
    let base = a.run.base_config()?;
    super::common::check_cost("--bench-steps", a.bench_steps as f64, 100.0, a.run.yes)?;
    super::common::check_cost("--coalitions", a.coalitions as f64, 64.0, a.run.yes)?;
    let lab = global.lab()?;
    let env = lab.task_env(&base)?;
    println!("threads: {} (RAYON_NUM_THREADS), task {}", rayon::current_num_threads(), base.task);
    match a.kind {
        BenchKind::Train => {
            let cases = [
                ("lora", Method::Lora, true),
                ("lora, full forward from the input", Method::Lora, false),
                ("p = 1", Method::StochasticDepth { p: 1.0 }, true),
                ("p = 0.5", Method::StochasticDepth { p: 0.5 }, true),
                ("p = 0.5, full forward from the input", Method::StochasticDepth { p: 0.5 }, false),
                ("p = 0.25", Method::StochasticDepth { p: 0.25 }, true),
                ("copra (whole schedule)", Method::Copra, true),
            ];
            println!("{:<40} {:>10} {:>12}", "configuration", "img/s", "ms/step");
            for (label, method, skip) in cases {
                let cfg = copra_lab::train::TrainConfig { method, steps: a.bench_steps, ..base.clone() };
                let opts = LoopOptions { skip_frozen_prefix: skip };
                let out = train_adapter_with(
                    &lab.backbone,
                    &env.head,
                    &env.train_inputs,
                    &env.data.train.labels,
                    &cfg,
                    None,
                    opts,
                    |_| {},
                )?;
                let images = (cfg.steps * cfg.batch_size.min(env.data.train.len())) as f64;
                println!(
                    "{:<40} {:>10.1} {:>12.2}",
                    label,
                    images / out.wall_seconds,
                    1000.0 * out.wall_seconds / cfg.steps as f64
                );
            }
        }
        BenchKind::Grid => {
            let cfgs: Vec<_> = (1..=a.grid_runs)
                .map(|seed| copra_lab::train::TrainConfig {
                    method: Method::Lora,
                    seed,
                    steps: a.bench_steps,
                    ..base.clone()
                })
                .collect();
            let images = (a.bench_steps * base.batch_size.min(env.data.train.len())) as f64;
            let (bb, head, inputs, labels) = (&lab.backbone, &env.head, &env.train_inputs, &env.data.train.labels);
            let t = Instant::now();
            train_adapter_with(bb, head, inputs, labels, &cfgs[0], None, LoopOptions::default(), |_| {})?;
            let alone = images / t.elapsed().as_secs_f64();
            let t = Instant::now();
            for out in train_grid(bb, head, inputs, labels, &cfgs, |_, _| {}) {
                out?;
            }
            let together = cfgs.len() as f64 * images / t.elapsed().as_secs_f64();
            println!("{:<40} {:>10} {:>8}", "configuration", "img/s", "ratio");
            println!("{:<40} {:>10.1} {:>8.2}", "one run alone", alone, 1.0);
            println!(
                "{:<40} {:>10.1} {:>8.2}",
                format!("grid of {} runs together", cfgs.len()),
                together,
                together / alone
            );
        }
        BenchKind::Forward => {
            // A zero ΔW on block 0's query: the frozen model's outputs, but the evaluator can
            // no longer answer from its cache of frozen activations and runs every block.
            use copra_lab::adapter::fit::ModuleShapes;
            use copra_lab::adapter::{ModuleKey, TargetModule};
            let (rows, cols) = lab.backbone.module_shape(0, TargetModule::Query);
            let key = ModuleKey { block: 0, module: TargetModule::Query };
            let frozen: std::collections::BTreeMap<_, _> = [(key, copra_lab::linalg::Matrix::zeros(rows, cols))].into();
            env.test.evaluate(&frozen)?;
            let passes = a.bench_steps.clamp(1, 10);
            let t = Instant::now();
            for _ in 0..passes {
                env.test.evaluate(&frozen)?;
            }
            let rate = (passes * env.test.len()) as f64 / t.elapsed().as_secs_f64();
            println!("{:<40} {:>14}", "configuration", "examples/s");
            println!("{:<40} {:>14.1}", "frozen forward, no grad", rate);
        }
        BenchKind::Coalitions => {
            let cfg = a.run.run_config(Method::Copra, 1)?;
            let run = lab.ensure_run(&env, &cfg, false, &global.progress())?;
            let game = LayerGame::new(&env.test, &run.adapter, Grouping::Block, GameValue::Accuracy, "copra")?;
            let n = game.n_players();
            let mut rng = copra_lab::util::rng_for(0, "bench-coalitions");
            let sample: Vec<u64> = (0..a.coalitions).map(|_| rng.random_range(0..(1u64 << n))).collect();
            let t = Instant::now();
            let plain: Vec<f64> = sample.iter().map(|s| game.value_plain(*s)).collect::<Result<_>>()?;
            let plain_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let fast = game.evaluate(&sample)?;
            let fast_rate = sample.len() as f64 / t.elapsed().as_secs_f64();
            let t = Instant::now();
            let all = game.enumerate_all()?;
            let walk_rate = all.len() as f64 / t.elapsed().as_secs_f64();
            let agree = sample
                .iter()
                .zip(&plain)
                .zip(&fast)
                .all(|((s, p), f)| (p - f).abs() < 1e-9 && (all[*s as usize] - p).abs() < 1e-9);
            println!("{n} players, {} test images; values agree across paths: {agree}", env.test.len());
            println!("{:<44} {:>14} {:>8}", "path", "coalitions/s", "ratio");
            println!("{:<44} {:>14.1} {:>8.2}", "plain (full forward, adapters merged)", plain_rate, 1.0);
            println!(
                "{:<44} {:>14.1} {:>8.2}",
                "start at lowest active block (parallel)",
                fast_rate,
                fast_rate / plain_rate
            );
            println!(
                "{:<44} {:>14.1} {:>8.2}",
                "prefix walk over all 2^n coalitions",
                walk_rate,
                walk_rate / plain_rate
            );
        }
    }
    Ok(())
}
