//! `copra-lab connectivity`.

use super::common::{check_cost, check_output_dir, parse_methods, parse_seeds, RunArgs};
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::analysis::connectivity::curves::CurveTraining;
use copra_lab::analysis::connectivity::space::PathSpace;
use copra_lab::analysis::connectivity::{analyze, ConnectivityOptions, SeedRun};
use copra_lab::train::curve::CurveKind;
use copra_lab::train::{Method, TrainConfig};
use std::collections::BTreeMap;
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
    /// Straight paths, comma-separated: factor, delta, factor-aligned-orth (orthogonal
    /// Procrustes), factor-aligned-gl (invertible, LoRA Align's fit), factor-aligned-perm
    /// (signed permutations).
    #[arg(long, default_value = "factor,delta,factor-aligned-orth,factor-aligned-gl,factor-aligned-perm")]
    pub spaces: String,
    /// Learned curves per seed pair, comma-separated or repeated: bezier, polychain; `none`
    /// for lines only.
    #[arg(long, default_value = "bezier", value_delimiter = ',')]
    pub curve: Vec<String>,
    /// Optimizer steps of each curve's control point (default: the runs' --steps).
    #[arg(long)]
    pub curve_steps: Option<usize>,
    /// Train every curve with this method's schedule (copra drops blocks' adapters while the
    /// curve trains) instead of the endpoints' own method.
    #[arg(long)]
    pub curve_method: Option<String>,
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
    let spaces: Vec<PathSpace> =
        a.spaces.split(',').filter(|s| !s.trim().is_empty()).map(PathSpace::parse).collect::<Result<_>>()?;
    let names: Vec<String> = spaces.iter().map(|s| s.name().to_string()).collect();
    super::common::check_distinct(&names, "--spaces")?;
    let kinds = parse_curves(&a.curve)?;
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
        evaluations(methods.len(), seeds.len(), spaces.len() + kinds.len(), a.alphas, a.layer_alphas),
        evaluations(2, 2, PathSpace::LINES.len() + 1, 21, 5),
        a.run.yes,
    )?;
    let curve_steps = a.curve_steps.unwrap_or(base.steps);
    if curve_steps == 0 {
        anyhow::bail!("--curve-steps 0 trains nothing; give at least 1 step or --curve none");
    }
    check_cost(
        "--curve, --curve-steps and --seeds (curve training steps)",
        (methods.len() * seeds.len() * (seeds.len() - 1) / 2 * kinds.len() * curve_steps) as f64,
        (2 * base.steps) as f64,
        a.run.yes,
    )?;
    let curve_method = a.curve_method.as_deref().map(Method::parse).transpose()?;
    let env = lab.task_env(&base)?;
    let runs = super::common::method_seed_runs(&lab, &env, &a.run, &methods, &seeds, &global.progress())?;
    let inputs: Vec<SeedRun> =
        runs.iter().map(|(m, s, r)| SeedRun { method: m.clone(), seed: *s, adapter: &r.adapter }).collect();
    let opts =
        ConnectivityOptions { alphas: a.alphas, layer_alphas: a.layer_alphas, spaces, layerwise: !a.no_layerwise };
    let curves = if kinds.is_empty() {
        None
    } else {
        let configs = methods
            .iter()
            .map(|m| {
                let cfg = a.run.run_config(curve_method.unwrap_or(*m), 0)?;
                Ok((m.name(), TrainConfig { steps: curve_steps, ..cfg }))
            })
            .collect::<Result<BTreeMap<String, TrainConfig>>>()?;
        Some(CurveTraining {
            kinds,
            head: &env.head,
            train_inputs: &env.train_inputs,
            labels: &env.data.train.labels,
            configs,
        })
    };
    let (outputs, summaries, seed_level) =
        analyze(&env.test, &env.train, &inputs, &opts, curves.as_ref(), &global.progress())?;
    outputs.write_all(&out_dir)?;
    println!(
        "{:<10} {:<20} {:>12} {:>13} {:>12} {:>12} {:>10}",
        "method", "space", "endpoint acc", "midpoint acc", "loss barrier", "err barrier", "merge-all"
    );
    for s in summaries {
        println!(
            "{:<10} {:<20} {:>11.2}% {:>12.2}% {:>12.4} {:>12.4} {:>10}",
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
    println!();
    println!(
        "{:<10} {:<20} {:<15} {:>6} {:>10} {:>22} {:>8}",
        "method", "path", "statistic", "pairs", "mean", "jackknife 95% CI", "p"
    );
    for r in seed_level.iter().filter(|r| r.quantity.name() == "error") {
        println!(
            "{:<10} {:<20} {:<15} {:>6} {:>10.4} {:>22} {:>8.4}",
            r.method,
            r.space.name(),
            r.statistic,
            r.n_pairs,
            r.mean,
            format!("[{:.4}, {:.4}]", r.ci95_lo, r.ci95_hi),
            r.p_value
        );
    }
    println!("seed-level summary: test-error barriers (linear ref.); intervals need 3+ seeds");
    println!("wrote tables and figures to {} in {:.1} s", out_dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// The curve shapes of `--curve` (`none` or nothing: no curves), each at most once.
fn parse_curves(list: &[String]) -> Result<Vec<CurveKind>> {
    let mut kinds = Vec::new();
    for s in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("none")) {
        let k = CurveKind::parse(s)?;
        if kinds.contains(&k) {
            anyhow::bail!("--curve lists '{s}' twice; give each curve once");
        }
        kinds.push(k);
    }
    Ok(kinds)
}
