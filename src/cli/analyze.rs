//! `copra-lab analyze` and `copra-lab report`.

use super::GlobalArgs;
use anyhow::Result;
use copra_lab::study::{self, report::write_report, Shard, Spec};
use std::path::PathBuf;

/// Arguments of `analyze`.
#[derive(clap::Args, Debug)]
pub struct AnalyzeArgs {
    /// The analysis spec (TOML), e.g. analyses/claims.toml.
    pub spec: PathBuf,
    /// Report folder (default: reports/<name> from the spec).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run only the deterministic slice i/n of the grid (0 ≤ i < n); defaults to Slurm's
    /// SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT when those are set, else the whole grid.
    #[arg(long)]
    pub shard: Option<String>,
    /// Print the grid's cells and exit without running anything.
    #[arg(long)]
    pub list: bool,
    /// Run a grid that asks for more than 20× the default work (cells, steps, evaluations).
    #[arg(long)]
    pub yes: bool,
}

/// Arguments of `report`.
#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// A report folder written by `analyze` (holds spec.toml and cells/).
    pub dir: PathBuf,
}

/// Runs `analyze`.
pub fn run(g: &GlobalArgs, a: AnalyzeArgs) -> Result<()> {
    let spec = Spec::read(&a.spec)?;
    let shard = match &a.shard {
        Some(s) => Shard::parse(s)?,
        None => Shard::from_slurm(|k| std::env::var(k).ok())?.unwrap_or_default(),
    };
    let out = a.out.clone().unwrap_or_else(|| PathBuf::from("reports").join(&spec.name));
    if a.list {
        // Cell ids hash the chosen values of a tuned spec: list them at the finished choices.
        let spec = match study::tune::resolve(&out, spec.clone()) {
            Ok(resolved) => resolved,
            Err(e) => {
                println!("note: {e:#}; the cells below are listed at the spec's untuned values");
                spec
            }
        };
        for (i, c) in study::cells(&spec)?.iter().enumerate() {
            let mark = if study::store::is_done(&out, &c.id) { "done" } else { "todo" };
            println!("{i:5} shard {:3} {mark} {}", i % shard.count, c.id);
        }
        return Ok(());
    }
    study::check_costs(&spec, a.yes)?;
    let lab = g.lab()?;
    let s = study::analyze(&lab, &spec, &out, shard, &g.progress())?;
    println!(
        "{}: shard {}/{}: {} cells ran, {} already finished ({} in this shard, {} in the grid)",
        spec.name, shard.index, shard.count, s.ran, s.skipped, s.in_shard, s.total
    );
    match s.report {
        Some(p) => println!("report: {}", p.display()),
        None => println!(
            "{} cells of the grid are still missing (other shards); when every shard has finished, run `copra-lab report {}`",
            s.missing,
            out.display()
        ),
    }
    Ok(())
}

/// Runs `report`.
pub fn report(a: ReportArgs) -> Result<()> {
    copra_lab::util::check_path_kind(
        &a.dir,
        copra_lab::util::PathKind::Folder,
        "report folder",
        "pass the --out folder of `copra-lab analyze SPEC` (run it first)",
    )?;
    let p = write_report(&a.dir)?;
    println!("report: {}", p.display());
    Ok(())
}
