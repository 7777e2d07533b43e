//! `copra-lab shapley-bench`: estimators against exact values on exported
//! coalition tables, with exact layer interactions.

use anyhow::{bail, Context, Result};
use copra_lab::analysis::shapley_bench::{bench, interactions_outputs, read_coalition_tables, BenchOptions};
use copra_lab::shapley::Estimator;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `shapley-bench`.
#[derive(clap::Args, Debug)]
pub struct ShapleyBenchArgs {
    /// Coalition tables (`shapley_coalitions.parquet` written by `copra-lab shapley`),
    /// comma-separated; each as `LABEL=FILE` or just `FILE` (labelled by its folder).
    #[arg(long, required = true)]
    pub table: String,
    /// Estimators, comma-separated.
    #[arg(long, default_value = "permutation-antithetic,owen-antithetic,kernel-paired,leverage-paired,kadd-paired,stratified-cv,stratified-cv-auto", long_help = super::shapley::estimators_help())]
    pub estimators: String,
    /// Budgets in evaluations, comma-separated.
    #[arg(long, default_value = "256,512,1024,2048")]
    pub budgets: String,
    /// Seeds per budget (0..seeds).
    #[arg(long, default_value_t = 10)]
    pub seeds: u64,
    /// Output folder: shapley_bench.parquet, interaction tables and heatmaps.
    #[arg(long, default_value = "out/shapley-bench")]
    pub out: PathBuf,
    /// Run even when the requested work is far (over 20×) beyond the defaults.
    #[arg(long)]
    pub yes: bool,
}

/// Runs `shapley-bench`.
pub fn run(a: ShapleyBenchArgs) -> Result<()> {
    let budgets: Vec<usize> = a
        .budgets
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse().with_context(|| format!("--budgets item '{s}' is not a whole number")))
        .collect::<Result<_>>()?;
    if budgets.is_empty() || a.seeds == 0 {
        bail!("--budgets and --seeds must name at least one budget and one seed");
    }
    let work = budgets.iter().map(|&b| b as f64).sum::<f64>() * a.seeds as f64;
    super::common::check_cost(
        "--budgets × --seeds (evaluations per game and estimator)",
        work,
        (256 + 512 + 1024 + 2048) as f64 * 10.0,
        a.yes,
    )?;
    let mut games = Vec::new();
    for item in a.table.split(',').filter(|s| !s.trim().is_empty()) {
        let (label, file) = match item.split_once('=') {
            Some((l, f)) => (l.trim().to_string(), PathBuf::from(f.trim())),
            None => {
                let f = PathBuf::from(item.trim());
                let label =
                    f.parent().and_then(|p| p.file_name()).map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
                (label, f)
            }
        };
        games.extend(
            read_coalition_tables(&file, &label).with_context(|| format!("reading --table {}", file.display()))?,
        );
    }
    let opts = BenchOptions { estimators: Estimator::parse_list(&a.estimators)?, budgets, seeds: a.seeds };
    let (table, cells) = bench(&games, &opts)?;
    let mut out = interactions_outputs(&games)?;
    out.tables.push(("shapley_bench.parquet".into(), table));
    out.write_all(&a.out)?;
    // Mean MSE per game × budget × estimator.
    let mut by_game: BTreeMap<&str, Vec<_>> = BTreeMap::new();
    for c in &cells {
        by_game.entry(&c.game).or_default().push(c);
    }
    for (game, cs) in by_game {
        println!("{game}: mean MSE over {} seeds (coverage of ±1.96 SE; ms per estimate)", a.seeds);
        for &budget in &opts.budgets {
            print!("  B={budget:<5}");
            for c in cs.iter().filter(|c| c.budget == budget) {
                print!("  {} {:.2e} ({:.0}%, {:.1} ms)", c.estimator, c.mse, 100.0 * c.coverage, 1e3 * c.seconds);
            }
            println!();
        }
    }
    println!("wrote {}", a.out.display());
    Ok(())
}
