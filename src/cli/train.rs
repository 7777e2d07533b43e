//! `copra-lab train` and `copra-lab eval`.

use super::common::{choice, RunArgs};
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::adapter::peft;
use copra_lab::lab::Split;
use copra_lab::train::Method;
use std::path::PathBuf;

/// Arguments of `train`.
#[derive(clap::Args, Debug)]
pub struct TrainArgs {
    /// Method: lora, copra, copra-exp, copra-sine, stochastic-depth[-P], stochastic-depth-matched
    /// (constant p at CopRA's mean participation over the run).
    #[arg(long, default_value = "copra")]
    pub method: String,
    /// Run seed (adapter init, dropout, batch order, CopRA masks).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Retrain even if the run exists in the cache.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `train`.
pub fn run(global: &GlobalArgs, a: TrainArgs) -> Result<()> {
    let cfg = a.run.run_config(Method::parse(&a.method)?, a.seed)?;
    let lab = global.lab()?;
    let env = lab.task_env(&cfg)?;
    let run = lab.ensure_run(&env, &cfg, a.force, &global.progress())?;
    let m = &run.manifest;
    let valid = env.valid()?.evaluate(&run.adapter.deltas())?;
    println!(
        "{} {} seed {} on {}: test accuracy {:.2}% (frozen backbone {:.2}%), test loss {:.4}; validation accuracy {:.2}% ({} images); {} ({:.1} s, {:.0} img/s)\n  run: {}",
        cfg.method.name(),
        if run.reused { "reused" } else { "trained" },
        cfg.seed,
        cfg.task,
        100.0 * m.test.accuracy,
        100.0 * m.frozen_test.accuracy,
        m.test.loss,
        100.0 * valid.accuracy,
        env.data.valid.len(),
        if run.reused { "from cache" } else { "trained now" },
        m.wall_seconds,
        m.images_per_second,
        run.dir.display()
    );
    Ok(())
}

/// Arguments of `eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// PEFT adapter folder or run folder (adapter_config.json + adapter_model.safetensors);
    /// omit to evaluate the frozen backbone.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// Also write the per-example test predictions (example, label, prediction, correct, loss)
    /// of the adapter, or of the frozen backbone without --adapter, to this Parquet file.
    #[arg(long, value_name = "FILE.parquet")]
    pub predictions: Option<PathBuf>,
    /// Which split to score: test, validation (what tuning reads) or train.
    #[arg(long, value_parser = choice::<Split>(), default_value = "test")]
    pub split: Split,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `eval`.
pub fn eval(global: &GlobalArgs, a: EvalArgs) -> Result<()> {
    let cfg = a.run.base_config()?;
    let lab = global.lab()?;
    let env = lab.task_env(&cfg)?;
    let split = a.split.name();
    let scored = env.evaluator(a.split)?;
    let frozen = scored.evaluate(&Default::default())?;
    println!(
        "frozen backbone on {} ({} {split} examples): {split} accuracy {:.2}%, loss {:.4}",
        cfg.task,
        scored.len(),
        100.0 * frozen.accuracy,
        frozen.loss
    );
    if let Some(dir) = &a.adapter {
        let adapter = peft::load_as(dir, lab.backbone.peft_layout())?;
        lab.check_adapter(&adapter, dir)?;
        let deltas = adapter.deltas();
        let m = scored.evaluate(&deltas)?;
        let train = env.train.evaluate(&deltas)?;
        println!(
            "adapter {}: {split} accuracy {:.2}%, loss {:.4}; train accuracy {:.2}%",
            dir.display(),
            100.0 * m.accuracy,
            m.loss,
            100.0 * train.accuracy
        );
    }
    if let Some(path) = &a.predictions {
        let (evaluated, deltas) = match &a.adapter {
            Some(dir) => ("adapter", peft::load_as(dir, lab.backbone.peft_layout())?.deltas()),
            None => ("frozen", Default::default()),
        };
        let (_, examples) = env.test.evaluate_examples(&deltas)?;
        let tag = copra_lab::study::measure::Tag {
            cell: String::new(),
            task: cfg.task.clone(),
            variant: String::new(),
            x: f64::NAN,
            replicate: cfg.seed as i64,
            seeds: String::new(),
        };
        copra_lab::study::items::write_predictions(path, &tag.predictions(evaluated, cfg.data_seed, &examples))?;
        println!("wrote the {} test predictions of the {evaluated} to {}", examples.labels.len(), path.display());
    }
    Ok(())
}
