//! `copra-lab shapley`.

use super::common::{check_cost, check_output_dir, choice, parse_methods, RunArgs};
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::adapter::Grouping;
use copra_lab::analysis::game_cache;
use copra_lab::analysis::layer_game::GameValue;
use copra_lab::analysis::shapley::{analyze, ShapleyInput, ShapleyOptions};
use copra_lab::shapley::Estimator;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `shapley`.
#[derive(clap::Args, Debug)]
pub struct ShapleyArgs {
    /// Evaluation budget of each sampling estimator: the number of distinct coalitions
    /// v(S) it may evaluate (memoised repeats are free). Equal for every estimator.
    #[arg(long, visible_alias = "samples", default_value_t = 512)]
    pub budget: usize,
    /// Methods to compare, comma-separated.
    #[arg(long, default_value = "lora,copra")]
    pub methods: String,
    /// Run seed of the adapters to value.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Players: one per block (12 by default) or one per adapted module.
    #[arg(long, value_parser = choice::<Grouping>(), default_value = "block")]
    pub players: Grouping,
    /// Estimators reported per player, comma-separated.
    #[arg(long, default_value = "permutation,owen", long_help = estimators_help())]
    pub estimators: String,
    /// Seed of the estimators.
    #[arg(long, default_value_t = 0)]
    pub estimator_seed: u64,
    /// v(S): test accuracy or negative test loss.
    #[arg(long, value_parser = choice::<GameValue>(), default_value = "accuracy")]
    pub value: GameValue,
    /// Repetitions per budget in the convergence study (n ≤ 20 only).
    #[arg(long, default_value_t = 10)]
    pub repetitions: usize,
    /// Stop a sampling estimator early once max SE / value range falls below this.
    #[arg(long, allow_negative_numbers = true)]
    pub target_precision: Option<f64>,
    /// Output folder for tables and figures.
    #[arg(long, default_value = "out/shapley")]
    pub out: PathBuf,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The `--estimators` long help, from the estimator registry.
pub fn estimators_help() -> String {
    format!(
        "Estimators reported per player, comma-separated. Known estimators:\n{}",
        copra_lab::shapley::registry::help()
    )
}

/// Runs `shapley`.
pub fn run(global: &GlobalArgs, a: ShapleyArgs) -> Result<()> {
    let started = Instant::now();
    let methods = parse_methods(&a.methods)?;
    let estimators = Estimator::parse_list(&a.estimators)?;
    if estimators.iter().any(|e| e.is_exact()) {
        anyhow::bail!(
            "--estimators lists 'exact': exact values are computed automatically when there are at most 20 players"
        );
    }
    if a.budget == 0 || a.repetitions == 0 {
        anyhow::bail!(
            "--budget (--samples) and --repetitions must be at least 1 (got {} and {})",
            a.budget,
            a.repetitions
        );
    }
    if let Some(t) = a.target_precision.filter(|t| !(t.is_finite() && *t > 0.0)) {
        anyhow::bail!("--target-precision must be a positive number, got {t}");
    }
    check_cost("--budget × --methods", a.budget.saturating_mul(methods.len()) as f64, 512.0 * 2.0, a.run.yes)?;
    check_cost("--repetitions", a.repetitions as f64, 10.0, a.run.yes)?;
    let base = a.run.base_config()?;
    let out_dir = a.out.join(copra_lab::runs::sanitize(&base.task));
    check_output_dir(&out_dir)?;
    let lab = global.lab()?;
    let keys: Vec<copra_lab::adapter::ModuleKey> = base
        .encoders
        .blocks(&lab.backbone)?
        .into_iter()
        .flat_map(|block| base.lora.targets.iter().map(move |&module| copra_lab::adapter::ModuleKey { block, module }))
        .collect();
    let players = copra_lab::adapter::group_keys(&keys, a.players, &lab.backbone).len();
    if players > copra_lab::shapley::coalition::MAX_PLAYERS {
        anyhow::bail!(
            "{players} players exceed the {} a coalition bitmask holds; use --players block or fewer --targets",
            copra_lab::shapley::coalition::MAX_PLAYERS
        );
    }
    // A budget below what an estimator needs for one sample is refused before any training.
    if let Some(e) = estimators.iter().find(|e| e.min_budget(players) > a.budget) {
        anyhow::bail!(
            "--budget {} is below the {} coalitions estimator '{}' needs for one sample of {players} players; use --budget {} or more",
            a.budget,
            e.min_budget(players),
            e.name(),
            e.min_budget(players)
        );
    }
    let env = lab.task_env(&base)?;
    let cfgs = methods.iter().map(|m| a.run.run_config(*m, a.seed)).collect::<Result<Vec<_>>>()?;
    let trained = lab.ensure_runs(&env, &cfgs, false, &global.progress())?;
    let runs: Vec<_> = methods.iter().map(|m| m.name()).zip(trained).collect();
    // Exact tables come from (and go to) the run folder's cache, which `prune` shares.
    let tables = runs
        .iter()
        .map(|(name, run)| game_cache::run_table(&env.test, run, a.players, a.value, name, true))
        .collect::<Result<Vec<_>>>()?;
    let inputs: Vec<ShapleyInput> = runs
        .iter()
        .zip(tables)
        .map(|((name, run), table)| ShapleyInput {
            method: name.clone(),
            task: base.task.clone(),
            run_seed: a.seed,
            adapter: &run.adapter,
            table,
        })
        .collect();
    let opts = ShapleyOptions {
        budget: a.budget,
        estimators,
        seed: a.estimator_seed,
        grouping: a.players,
        value: a.value,
        repetitions: a.repetitions,
        top_k: 3,
        target_precision: a.target_precision,
    };
    let (outputs, summaries) = analyze(&env.test, &inputs, &opts)?;
    outputs.write_all(&out_dir)?;
    for s in &summaries {
        let cost = if s.model_evaluations == 0 && s.exact.is_some() {
            "all coalitions from the enumerated table".to_string()
        } else {
            format!("{} coalitions evaluated with the model in {:.1} s", s.model_evaluations, s.eval_seconds)
        };
        println!("{}: v(∅) = {:.4}, v(N) = {:.4}; {cost}", s.method, s.v_empty, s.v_full);
        print!("  {:<24}", "player");
        for p in &s.players {
            print!(" {p:>7}");
        }
        println!();
        if let Some(ex) = &s.exact {
            print!("  {:<24}", "exact");
            for v in ex {
                print!(" {v:>7.4}");
            }
            println!();
        }
        for e in &s.estimates {
            print!("  {:<24}", format!("{} ({} ev)", e.estimator, e.evaluations));
            for v in &e.values {
                print!(" {v:>7.4}");
            }
            if let Some(ex) = &s.exact {
                print!("   max |err| {:.4}", copra_lab::shapley::max_abs_error(&e.values, ex)?);
            }
            println!();
        }
    }
    println!("wrote tables and figures to {} in {:.1} s", out_dir.display(), started.elapsed().as_secs_f64());
    Ok(())
}
