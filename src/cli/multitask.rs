//! `copra-lab multitask`.

use super::common::{parse_methods, parse_seeds, RunArgs};
use super::GlobalArgs;
use anyhow::{bail, Result};
use copra_lab::analysis::multitask::{analyze, MultitaskOptions, Operator, TaskAdapter, TaskInput};
use copra_lab::lab::TaskEnv;
use copra_lab::merge::MergeOptions;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `multitask`.
#[derive(clap::Args, Debug)]
pub struct MultitaskArgs {
    /// Tasks to merge, comma-separated (default: every built-in task, see `copra-lab tasks`).
    #[arg(long)]
    pub tasks: Option<String>,
    /// Run seeds, comma-separated (one adapter per task, method and seed).
    #[arg(long, default_value = "1")]
    pub seeds: String,
    /// Methods to compare, comma-separated.
    #[arg(long, default_value = "lora,copra")]
    pub methods: String,
    /// Merge operators, comma-separated (the help lists the registry's operators).
    #[arg(long, default_value = copra_lab::merge::registry::DEFAULT_COMPARISON, help = operators_help())]
    pub operators: String,
    /// LoRA Align optimiser steps per adapter and module.
    #[arg(long, default_value_t = 300)]
    pub align_steps: usize,
    /// LoRA Align learning rate.
    #[arg(long, default_value_t = 0.01)]
    pub align_lr: f64,
    /// Output folder for tables and figures (a sub-folder named after the tasks is created).
    #[arg(long, default_value = "out/multitask")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `--operators` help: the registry's operators and the `+align` suffix.
fn operators_help() -> String {
    format!(
        "Merge operators, comma-separated: {}; `factor+align` runs LoRA Align first",
        copra_lab::merge::registry::usage()
    )
}

/// Runs `multitask`.
pub fn run(global: &GlobalArgs, a: MultitaskArgs) -> Result<()> {
    let started = Instant::now();
    if a.run.task.is_some() {
        bail!("multitask merges several tasks: list them with --tasks a,b,c instead of --task");
    }
    let seeds = parse_seeds(&a.seeds)?;
    let methods = parse_methods(&a.methods)?;
    let operators = Operator::parse_list(&a.operators)?;
    let all_builtin: Vec<String> = copra_lab::data::builtin_tasks().iter().map(|t| t.name.to_string()).collect();
    let tasks: Vec<String> = match &a.tasks {
        Some(s) => s.split(',').map(str::trim).filter(|t| !t.is_empty()).map(String::from).collect(),
        None => all_builtin.clone(),
    };
    if tasks.len() < 2 {
        bail!("--tasks names {} task(s); multi-task merging needs at least two", tasks.len());
    }
    for t in &tasks {
        copra_lab::data::parse_task(t)?;
    }
    super::common::check_distinct(&tasks, "--tasks")?;
    let trainings = (tasks.len() * seeds.len() * methods.len()) as f64;
    super::common::check_cost("--tasks × --seeds × --methods (trainings)", trainings, 4.0 * 2.0, a.run.yes)?;
    super::common::check_cost("--align-steps", a.align_steps as f64, 300.0, a.run.yes)?;
    super::common::check_output_dir(&a.out)?;
    let lab = global.lab()?;
    let base = a.run.base_config()?;
    let mut envs: Vec<TaskEnv> = Vec::new();
    let mut runs = Vec::new();
    for (ti, task) in tasks.iter().enumerate() {
        let cfg = copra_lab::train::TrainConfig { task: task.clone(), ..base.clone() };
        let env = lab.task_env(&cfg)?;
        let grid: Vec<_> = methods.iter().flat_map(|m| seeds.iter().map(move |&s| (*m, s))).collect();
        let cfgs: Vec<_> =
            grid.iter().map(|&(m, s)| copra_lab::train::TrainConfig { method: m, seed: s, ..cfg.clone() }).collect();
        for (&(m, s), run) in grid.iter().zip(lab.ensure_runs(&env, &cfgs, false, &global.progress())?) {
            println!(
                "{task:<12} {:<6} seed {s}: own test accuracy {:.2}% ({})",
                m.name(),
                100.0 * run.manifest.test.accuracy,
                if run.reused { "cached" } else { "trained" }
            );
            runs.push((m.name(), s, ti, run));
        }
        envs.push(env);
    }
    let inputs: Vec<TaskInput> =
        tasks.iter().zip(&envs).map(|(t, e)| TaskInput { name: t.clone(), test: &e.test }).collect();
    let adapters: Vec<TaskAdapter> = runs
        .iter()
        .map(|(m, s, t, r)| TaskAdapter { method: m.clone(), seed: *s, task: *t, adapter: &r.adapter })
        .collect();
    let opts = MultitaskOptions {
        merge: MergeOptions { align_steps: a.align_steps, align_lr: a.align_lr, ..MergeOptions::default() },
    };
    let analysis_started = Instant::now();
    let (outputs, summaries) = analyze(&inputs, &adapters, &operators, &opts, &global.progress())?;
    let analysis_seconds = analysis_started.elapsed().as_secs_f64();
    let folder =
        if tasks == all_builtin { "all-builtin".to_string() } else { copra_lab::runs::sanitize(&tasks.join("_")) };
    let out_dir = a.out.join(folder);
    outputs.write_all(&out_dir)?;
    println!("{:<8} {:<34} {:>18} {:>22}", "method", "operator", "avg test acc %", "avg normalised acc");
    for s in &summaries {
        let ci = |c: &copra_lab::stats::MeanCi, k: f64, d: usize| {
            if c.n >= 2 {
                format!("{:.*} ± {:.*}", d, k * c.mean, d, k * c.half_width)
            } else {
                format!("{:.*}", d, k * c.mean)
            }
        };
        println!(
            "{:<8} {:<34} {:>18} {:>22}",
            s.method,
            s.operator,
            ci(&s.accuracy, 100.0, 2),
            ci(&s.normalized, 1.0, 3)
        );
    }
    println!(
        "normalised accuracy = merged accuracy / the task's own adapter accuracy, averaged over {} tasks",
        tasks.len()
    );
    println!(
        "analysis {:.1} s; wrote tables and figures to {} in {:.1} s",
        analysis_seconds,
        out_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
