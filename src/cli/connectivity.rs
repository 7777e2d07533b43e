//! `copra-lab connectivity`.

use super::common::{check_cost, check_output_dir, parse_methods, parse_seeds, RunArgs};
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::analysis::connectivity::{analyze, ConnectivityOptions, SeedRun};
use copra_lab::connectivity::interpolate::Space;
use std::path::PathBuf;
use std::time::Instant;

/// Largest α grid of the main paths.
const MAX_ALPHAS: usize = 1001;
/// Largest α grid of the layer-wise paths.
const MAX_LAYER_ALPHAS: usize = 101;

/// Arguments of `connectivity`.
#[derive(clap::Args, Debug)]
pub struct ConnectivityArgs {
    /// Run seeds, comma-separated; every pair is compared (3 or more also merges all).
    #[arg(long, default_value = "1,2")]
    pub seeds: String,
    /// Methods to compare, comma-separated.
    #[arg(long, default_value = "lora,copra")]
    pub methods: String,
    /// Points on the α grid of the main paths, both endpoints included.
    #[arg(long, default_value_t = 21)]
    pub alphas: usize,
    /// Points on the α grid of the layer-wise paths (5: α = 0, ¼, ½, ¾, 1).
    #[arg(long, default_value_t = 5)]
    pub layer_alphas: usize,
    /// Skip the layer-wise sweeps.
    #[arg(long)]
    pub no_layerwise: bool,
    /// Interpolation spaces, comma-separated: factor, delta.
    #[arg(long, default_value = "factor,delta")]
    pub spaces: String,
    /// Output folder for tables and figures.
    #[arg(long, default_value = "out/connectivity")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `connectivity`.
pub fn run(global: &GlobalArgs, a: ConnectivityArgs) -> Result<()> {
    let started = Instant::now();
    let seeds = parse_seeds(&a.seeds)?;
    if seeds.len() < 2 {
        anyhow::bail!("--seeds needs at least two seeds to form a pair, e.g. --seeds 1,2");
    }
    let methods = parse_methods(&a.methods)?;
    let spaces: Vec<Space> =
        a.spaces.split(',').filter(|s| !s.trim().is_empty()).map(Space::parse).collect::<Result<_>>()?;
    for (flag, n, max) in [("--alphas", a.alphas, MAX_ALPHAS), ("--layer-alphas", a.layer_alphas, MAX_LAYER_ALPHAS)] {
        if !(2..=max).contains(&n) {
            anyhow::bail!("{flag} {n} is out of range: the grid needs both endpoints and at most {max} points");
        }
    }
    let base = a.run.base_config()?;
    let out_dir = a.out.join(copra_lab::runs::sanitize(&base.task));
    check_output_dir(&out_dir)?;
    let lab = global.lab()?;
    let evaluations = |methods: usize, seeds: usize, spaces: usize, alphas: usize, layer_alphas: usize| {
        let layer = if a.no_layerwise { 0 } else { lab.backbone.num_blocks() * layer_alphas };
        (methods * seeds * (seeds - 1) / 2 * spaces * (alphas + layer)) as f64
    };
    check_cost(
        "--seeds, --methods, --spaces and the α grids",
        evaluations(methods.len(), seeds.len(), spaces.len(), a.alphas, a.layer_alphas),
        evaluations(2, 2, 2, 21, 5),
        a.run.yes,
    )?;
    let env = lab.task_env(&base)?;
    let runs = super::common::method_seed_runs(&lab, &env, &a.run, &methods, &seeds, &global.progress())?;
    let inputs: Vec<SeedRun> =
        runs.iter().map(|(m, s, r)| SeedRun { method: m.clone(), seed: *s, adapter: &r.adapter }).collect();
    let opts =
        ConnectivityOptions { alphas: a.alphas, layer_alphas: a.layer_alphas, spaces, layerwise: !a.no_layerwise };
    let (outputs, summaries) = analyze(&env.test, &env.train, &inputs, &opts, &global.progress())?;
    outputs.write_all(&out_dir)?;
    println!(
        "{:<10} {:<7} {:>12} {:>13} {:>12} {:>12} {:>10}",
        "method", "space", "endpoint acc", "midpoint acc", "loss barrier", "err barrier", "merge-all"
    );
    for s in summaries {
        println!(
            "{:<10} {:<7} {:>11.2}% {:>12.2}% {:>12.4} {:>12.4} {:>10}",
            s.method,
            s.space.name(),
            100.0 * s.endpoint_accuracy,
            100.0 * s.midpoint_accuracy,
            s.loss_barrier,
            s.error_barrier,
            s.merge_all_accuracy.map(|x| format!("{:.2}%", 100.0 * x)).unwrap_or_else(|| "-".into())
        );
    }
    println!("barriers: linear-reference convention (Entezari et al. 2022), test split, mean over seed pairs");
    println!("wrote tables and figures to {} in {:.1} s", out_dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
