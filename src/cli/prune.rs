//! `copra-lab prune`.

use super::common::{check_cost, check_output_dir, choice, parse_methods, parse_seeds, RunArgs};
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::adapter::Grouping;
use copra_lab::analysis::game_cache;
use copra_lab::analysis::layer_game::GameValue;
use copra_lab::analysis::prune::{analyze, PruneInput, PruneOptions, RemovalOrder};
use copra_lab::prune::magnitude::Ranking;
use std::path::PathBuf;
use std::time::Instant;

/// Default number of random block-removal orders.
const DEFAULT_RANDOM_ORDERS: usize = 10;
/// Default coalition budget of the sampled Shapley values.
const DEFAULT_SHAPLEY_BUDGET: usize = 4096;

/// Arguments of `prune`.
#[derive(clap::Args, Debug)]
pub struct PruneArgs {
    /// Run seeds, comma-separated (each is trained or reused from the run cache).
    #[arg(long, default_value = "1")]
    pub seeds: String,
    /// Methods to compare, comma-separated.
    #[arg(long, default_value = "lora,copra")]
    pub methods: String,
    /// Sparsities of the magnitude pruning: fractions of entries REMOVED, comma-separated.
    #[arg(long, default_value = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")]
    pub sparsities: String,
    /// Rank magnitudes inside every matrix (per-module) or across all matrices (global).
    #[arg(long, value_parser = choice::<Ranking>(), default_value = "per-module")]
    pub ranking: Ranking,
    /// Random block-removal orders (same orders for every method and seed).
    #[arg(long, default_value_t = DEFAULT_RANDOM_ORDERS)]
    pub random_orders: usize,
    /// Seed of the random removal orders.
    #[arg(long, default_value_t = 0)]
    pub order_seed: u64,
    /// Block-removal orders, comma-separated: shapley, norm, leave-one-out, random. Without
    /// shapley the 2^n coalition enumeration is skipped (unless the run folder caches it).
    #[arg(long, default_value = "shapley,norm,leave-one-out,random")]
    pub orders: String,
    /// Coalition budget of the sampled Shapley values used with more than 20 blocks.
    #[arg(long, default_value_t = DEFAULT_SHAPLEY_BUDGET)]
    pub shapley_budget: usize,
    /// Output folder for tables and figures (a sub-folder per task is created).
    #[arg(long, default_value = "out/prune")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Parses comma-separated sparsities such as `0.1,0.5`.
fn parse_sparsities(s: &str) -> Result<Vec<f64>> {
    let v: Vec<f64> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim().parse::<f64>().map_err(|_| {
                anyhow::anyhow!("bad sparsity '{p}' in --sparsities: use fractions in [0, 1] like 0.1,0.5")
            })
        })
        .collect::<Result<_>>()?;
    Ok(v)
}

/// Runs `prune`.
pub fn run(global: &GlobalArgs, a: PruneArgs) -> Result<()> {
    let started = Instant::now();
    let seeds = parse_seeds(&a.seeds)?;
    let methods = parse_methods(&a.methods)?;
    let opts = PruneOptions {
        sparsities: parse_sparsities(&a.sparsities)?,
        ranking: a.ranking,
        random_orders: a.random_orders,
        order_seed: a.order_seed,
        shapley_budget: a.shapley_budget,
        orders: a.orders.split(',').filter(|o| !o.trim().is_empty()).map(RemovalOrder::parse).collect::<Result<_>>()?,
    };
    opts.validate()?;
    // Work far beyond the defaults needs --yes, estimated before any work.
    check_cost("--random-orders", opts.random_orders as f64, DEFAULT_RANDOM_ORDERS as f64, a.run.yes)?;
    check_cost("--sparsities", opts.sparsities.len() as f64, 10.0, a.run.yes)?;
    check_cost("--shapley-budget", opts.shapley_budget as f64, DEFAULT_SHAPLEY_BUDGET as f64, a.run.yes)?;
    let base = a.run.base_config()?;
    let out_dir = a.out.join(copra_lab::runs::sanitize(&base.task));
    check_output_dir(&out_dir)?;
    let lab = global.lab()?;
    let env = lab.task_env(&base)?;
    let runs = super::common::method_seed_runs(&lab, &env, &a.run, &methods, &seeds, &global.progress())?;
    let analysis_started = Instant::now();
    let mut inputs = Vec::new();
    for (m, s, r) in &runs {
        let want = opts.orders.contains(&RemovalOrder::Shapley);
        let table =
            game_cache::run_table(&env.test, r, Grouping::Block, GameValue::Accuracy, &format!("{m} seed {s}"), want)?;
        inputs.push(PruneInput { method: m.clone(), seed: *s, adapter: &r.adapter, table });
    }
    let (outputs, summaries) = analyze(&env.test, &inputs, &opts, &global.progress())?;
    let analysis_seconds = analysis_started.elapsed().as_secs_f64();
    outputs.write_all(&out_dir)?;
    let pct = |c: &copra_lab::stats::MeanCi| {
        if c.n >= 2 {
            format!("{:.1}±{:.1}", 100.0 * c.mean, 100.0 * c.half_width)
        } else {
            format!("{:.1}", 100.0 * c.mean)
        }
    };
    if let Some(first) = summaries.first() {
        print!("{:<24}", "test accuracy %");
        for s in &summaries {
            print!(" {:>14}", s.method);
        }
        println!();
        for (name, _) in &first.structured {
            print!("{:<24}", name);
            for s in &summaries {
                let v = s.structured.iter().find(|(n, _)| n == name).map(|(_, c)| pct(c)).unwrap_or_else(|| "-".into());
                print!(" {v:>14}");
            }
            println!();
        }
        for (order, _) in &first.removal_area {
            print!("{:<24}", format!("removal {order}"));
            for s in &summaries {
                let v = s
                    .removal_area
                    .iter()
                    .find(|(o, _)| o == order)
                    .map(|(_, x)| format!("{:.1}", 100.0 * x))
                    .unwrap_or_else(|| "-".into());
                print!(" {v:>14}");
            }
            println!();
        }
        for (target, sp, _) in
            first.unstructured.iter().filter(|(_, sp, _)| [0.5, 0.9].iter().any(|x| (sp - x).abs() < 1e-9))
        {
            print!("{:<24}", format!("{target} sparsity {sp}"));
            for s in &summaries {
                let v = s
                    .unstructured
                    .iter()
                    .find(|(t, x, _)| t == target && (x - sp).abs() < 1e-9)
                    .map(|(_, _, c)| pct(c))
                    .unwrap_or_else(|| "-".into());
                print!(" {v:>14}");
            }
            println!();
        }
        println!(
            "removal rows: mean accuracy along the block-removal curve (blocks kept n..0); frozen backbone {:.1}%",
            100.0 * first.frozen_accuracy
        );
    }
    println!(
        "analysis {:.1} s; wrote tables and figures to {} in {:.1} s",
        analysis_seconds,
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
