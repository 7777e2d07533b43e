//! Command-line interface: argument definitions and dispatch. Each command lives in
//! its own module and only wires arguments to library calls.

mod analyze;
mod bench;
mod common;
mod connectivity;
mod federated;
mod multitask;
mod pretrain;
mod prune;
mod shapley;
mod shapley_bench;
mod tasks;
mod train;

use anyhow::Result;
use clap::{Parser, Subcommand};
use copra_lab::model::Pooling;
use copra_lab::progress::Progress;
use std::path::PathBuf;

/// copra-lab: train LoRA and CopRA adapters on a ViT and measure connectivity,
/// layer Shapley values, merging and pruning.
#[derive(Parser, Debug)]
#[command(name = "copra-lab", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(clap::Args, Debug, Clone)]
pub struct GlobalArgs {
    /// Backbone: `builtin`, or a Hugging Face folder (config.json + model.safetensors) of a
    /// `vit`, `bert`, `clip` or `dinov2` model (BERT and CLIP folders also need tokenizer.json;
    /// see analyses/fetch-assets.sh, docs/clip.md and docs/dinov2.md).
    #[arg(long, global = true, default_value = "builtin")]
    pub backbone: String,
    /// Root of the run cache.
    #[arg(long, global = true, default_value = "runs")]
    pub runs_dir: PathBuf,
    /// Hide progress bars.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Compute device: `cpu`, or `cuda` / `cuda:N` in a build with `--features cuda`.
    #[arg(long, global = true, default_value = "cpu")]
    pub device: String,
    /// Features of a BERT or DINOv2 backbone: the class token or the mean of the other tokens
    /// (default: the folder's own; a BERT folder declares it in 1_Pooling/config.json, DINOv2
    /// uses its class token, pooler_output). Runs and reports of another pooling are kept apart.
    #[arg(long, global = true, value_parser = common::choice::<Pooling>())]
    pub pooling: Option<Pooling>,
}

impl GlobalArgs {
    /// Opens the lab these options name (backbone, run cache, device).
    pub fn lab(&self) -> anyhow::Result<copra_lab::lab::Lab> {
        let device = copra_lab::lab::device_named(&self.device)?;
        let lab = copra_lab::lab::Lab::open_on(&self.backbone, &self.runs_dir, &device)?;
        match self.pooling {
            Some(pooling) => lab.with_pooling(pooling),
            None => Ok(lab),
        }
    }

    /// The progress-bar factory these options ask for.
    pub fn progress(&self) -> Progress {
        if self.quiet {
            Progress::hidden()
        } else {
            Progress::stderr()
        }
    }
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pretrain a backbone from scratch on the built-in source task (writes HF layout).
    Pretrain(pretrain::PretrainArgs),
    /// Train one LoRA / CopRA adapter (reused from the run cache when it exists).
    Train(train::TrainArgs),
    /// Evaluate an adapter folder (or the frozen backbone) on a task.
    Eval(train::EvalArgs),
    /// List the tasks with their sizes; optionally write example images.
    Tasks(tasks::TasksArgs),
    /// Per-layer Shapley values of LoRA and CopRA adapters: exact, permutation and Owen estimates.
    Shapley(shapley::ShapleyArgs),
    /// Shapley estimators against exact values on exported coalition tables, and layer interactions.
    ShapleyBench(shapley_bench::ShapleyBenchArgs),
    /// Linear mode connectivity between seeds: paths, barriers, layer-wise barriers, distances.
    Connectivity(connectivity::ConnectivityArgs),
    /// Write the backbone (default: the built-in one) as a Hugging Face folder.
    ExportBackbone(pretrain::ExportArgs),
    /// Speed benchmarks: training throughput and coalition evaluation rate.
    Bench(bench::BenchArgs),
    /// Federated LoRA vs CopRA: Dirichlet-split clients, local training, server merging per round.
    Federated(federated::FederatedArgs),
    /// Multi-task merging: one adapter per task, merged by every operator, scored on every task.
    Multitask(multitask::MultitaskArgs),
    /// Pruning: structured block / module selections, block-removal curves, magnitude sparsity.
    Prune(prune::PruneArgs),
    /// Run an analysis spec (grid of runs × measurements): resumable, shardable (--shard, Slurm), with a report.
    Analyze(analyze::AnalyzeArgs),
    /// Rebuild an analysis report (tables, figures, README) from its finished cells, without recomputing.
    Report(analyze::ReportArgs),
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    copra_lab::parallel::use_coarse_parallelism();
    match cli.command {
        Command::Pretrain(a) => pretrain::run(&cli.global, a),
        Command::Train(a) => train::run(&cli.global, a),
        Command::Eval(a) => train::eval(&cli.global, a),
        Command::Tasks(a) => tasks::run(&cli.global, a),
        Command::Shapley(a) => shapley::run(&cli.global, a),
        Command::ShapleyBench(a) => shapley_bench::run(a),
        Command::Connectivity(a) => connectivity::run(&cli.global, a),
        Command::Bench(a) => bench::run(&cli.global, a),
        Command::ExportBackbone(a) => pretrain::export(&cli.global, a),
        Command::Federated(a) => federated::run(&cli.global, a),
        Command::Multitask(a) => multitask::run(&cli.global, a),
        Command::Prune(a) => prune::run(&cli.global, a),
        Command::Analyze(a) => analyze::run(&cli.global, a),
        Command::Report(a) => analyze::report(a),
    }
}
