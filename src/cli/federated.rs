//! `copra-lab federated`.

use super::common::{parse_methods, parse_seeds, RunArgs};
use super::GlobalArgs;
use anyhow::{bail, Result};
use copra_lab::analysis::federated::{analyze, FederatedOptions};
use copra_lab::federated::split::SplitMethod;
use copra_lab::merge::{MergeMethod, MergeOptions};
use std::path::PathBuf;
use std::time::Instant;

/// Training shots per class when neither `--shots` nor `--config` is given: 64 × 10 classes
/// = 640 images, about 64 per client with 10 clients.
pub const DEFAULT_FEDERATED_SHOTS: usize = 64;
/// Local optimiser steps per client and round when neither `--steps` nor `--config` is given.
pub const DEFAULT_LOCAL_STEPS: usize = 200;

/// Arguments of `federated`.
#[derive(clap::Args, Debug)]
pub struct FederatedArgs {
    /// Run seeds, comma-separated (each seed: its own split, initialisation and client runs).
    #[arg(long, default_value = "1")]
    pub seeds: String,
    /// Methods to compare, comma-separated.
    #[arg(long, default_value = "lora,copra")]
    pub methods: String,
    /// Number of clients K.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Dirichlet concentration α of the label-skew split (smaller = more skew).
    #[arg(long, default_value_t = 0.5)]
    pub dirichlet_alpha: f64,
    /// Smallest client size the Dirichlet split accepts (it redraws until every client has it).
    #[arg(long, default_value_t = 16)]
    pub min_size: usize,
    /// Split the data IID instead (shuffle and deal evenly).
    #[arg(long)]
    pub iid: bool,
    /// Communication rounds (1 = one-shot merging).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Fraction of clients drawn each round, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub client_fraction: f64,
    /// Server aggregation (the help lists the registry's operators); weights = client sizes.
    #[arg(long, default_value = copra_lab::merge::registry::DEFAULT_AGGREGATOR, help = aggregate_help())]
    pub aggregate: String,
    /// Run LoRA Align before factor averaging (factor, fedex).
    #[arg(long)]
    pub align: bool,
    /// Per-client LoRA ranks, comma-separated, cycled over clients (default: --rank for all).
    #[arg(long)]
    pub client_ranks: Option<String>,
    /// Per-client number of top blocks adapted, comma-separated, cycled over clients
    /// (default: every block).
    #[arg(long)]
    pub client_top_blocks: Option<String>,
    /// Skip evaluating every client's local model after local training (on the global test set,
    /// on its label distribution and on its own training examples).
    #[arg(long)]
    pub no_client_eval: bool,
    /// Output folder for tables and figures (a sub-folder per task is created).
    #[arg(long, default_value = "out/federated")]
    pub out: PathBuf,
    /// Training settings; `--steps` is the number of local steps per client and round
    /// (default 200) and `--shots` defaults to 64 per class here.
    #[command(flatten)]
    pub run: RunArgs,
}

fn parse_usize_list(s: &str, flag: &str) -> Result<Vec<usize>> {
    let v: Vec<usize> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim().parse::<usize>().map_err(|_| {
                anyhow::anyhow!("bad value '{p}' in {flag}: use comma-separated positive integers like 2,4")
            })
        })
        .collect::<Result<_>>()?;
    if v.is_empty() {
        bail!("{flag} is empty: give comma-separated positive integers like 2,4");
    }
    Ok(v)
}

/// `--aggregate` help: the registry's operators.
fn aggregate_help() -> String {
    format!(
        "Server aggregation: {}; weights = client sizes. fedex folds the averaging residual into the frozen \
         weights, so the global model is exactly the weighted mean of the clients' ΔW",
        copra_lab::merge::registry::usage()
    )
}

/// Runs `federated`.
pub fn run(global: &GlobalArgs, a: FederatedArgs) -> Result<()> {
    let started = Instant::now();
    let seeds = parse_seeds(&a.seeds)?;
    let methods = parse_methods(&a.methods)?;
    let mut base = a.run.base_config()?;
    if a.run.config.is_none() {
        if a.run.shots.is_none() {
            base.shots = DEFAULT_FEDERATED_SHOTS;
        }
        if a.run.steps.is_none() {
            base.steps = DEFAULT_LOCAL_STEPS;
        }
    }
    // In floating point: a product of huge flags must not wrap around to a small number.
    let client_steps =
        seeds.len() as f64 * methods.len() as f64 * a.clients as f64 * a.rounds as f64 * base.steps as f64;
    let default_client_steps = (2 * 10 * DEFAULT_LOCAL_STEPS) as f64;
    super::common::check_cost(
        "--seeds × --methods × --clients × --rounds × --steps (local steps)",
        client_steps,
        default_client_steps,
        a.run.yes,
    )?;
    let split = if a.iid {
        SplitMethod::Iid
    } else {
        SplitMethod::Dirichlet { alpha: a.dirichlet_alpha, min_size: a.min_size }
    };
    let opts = FederatedOptions {
        clients: a.clients,
        split,
        rounds: a.rounds,
        client_fraction: a.client_fraction,
        aggregator: MergeMethod::parse(&a.aggregate)?,
        merge: MergeOptions { align: a.align, ..MergeOptions::default() },
        client_ranks: a
            .client_ranks
            .as_deref()
            .map(|s| parse_usize_list(s, "--client-ranks"))
            .transpose()?
            .unwrap_or_default(),
        client_top_blocks: a
            .client_top_blocks
            .as_deref()
            .map(|s| parse_usize_list(s, "--client-top-blocks"))
            .transpose()?
            .unwrap_or_default(),
        evaluate_clients: !a.no_client_eval,
    };
    if a.align && !opts.aggregator.uses_align() {
        bail!("--align only applies to --aggregate factor or fedex; drop --align or aggregate with one of them");
    }
    let out_dir = a.out.join(copra_lab::runs::sanitize(&base.task));
    super::common::check_output_dir(&out_dir)?;
    let lab = global.lab()?;
    opts.validate(lab.backbone.num_blocks())?;
    let env = lab.task_env(&base)?;
    println!(
        "federated on {}: {} training images ({} shots × {} classes) among {} clients, {} round(s) of {} local steps, aggregate {}",
        base.task,
        env.data.train.len(),
        base.shots,
        env.data.num_classes(),
        opts.clients,
        opts.rounds,
        base.steps,
        opts.aggregator
    );
    let (outputs, summaries) = analyze(&lab.backbone, &env, &base, &methods, &seeds, &opts, &global.progress())?;
    outputs.write_all(&out_dir)?;
    let fmt_ci = |c: &copra_lab::stats::MeanCi| {
        if c.n >= 2 {
            format!("{:.2}% ± {:.2}", 100.0 * c.mean, 100.0 * c.half_width)
        } else {
            format!("{:.2}%", 100.0 * c.mean)
        }
    };
    println!(
        "{:<8} {:>8} {:>20} {:>24} {:>24} {:>9}",
        "method", "round", "global test acc", "mean client test acc", "mean client train acc", "wall s"
    );
    for s in &summaries {
        for (r, c) in &s.global {
            let last = *r == opts.rounds;
            let show = |ci: &Option<copra_lab::stats::MeanCi>| {
                if last {
                    ci.as_ref().map(fmt_ci).unwrap_or_else(|| "-".into())
                } else {
                    "-".into()
                }
            };
            let wall = if last { format!("{:.1}", s.wall_seconds) } else { String::new() };
            println!(
                "{:<8} {:>8} {:>20} {:>24} {:>24} {:>9}",
                s.method,
                r,
                fmt_ci(c),
                show(&s.last_client_mean),
                show(&s.last_client_train_mean),
                wall
            );
        }
    }
    println!(
        "round 0 = the common initialisation (B = 0, the frozen backbone); ± = 95% t-interval half-width over seeds"
    );
    println!("wrote tables and figures to {} in {:.1} s", out_dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
