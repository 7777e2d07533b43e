//! Declarative analyses: a TOML spec names a grid of runs and the measurements to take on
//! it; [`analyze`] runs the cells that are missing (resumable, shardable), and
//! [`report::write_report`] turns the finished cells into Parquet tables, SVG figures and a
//! README with intervals over seeds and paired comparisons. Nothing here knows the CLI.

pub mod cell;
pub mod inference;
pub mod items;
pub mod matched_fit;
pub mod measure;
pub mod report;
pub mod spec;
pub mod store;
pub mod tune;

pub use cell::{cells, Cell, CellKind};
pub use spec::Spec;

use crate::lab::Lab;
use crate::progress::Progress;
use anyhow::{anyhow, bail, Result};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A deterministic slice of the grid: cells whose index `mod count` equals `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// 0-based shard number.
    pub index: usize,
    /// Number of shards.
    pub count: usize,
}

impl Default for Shard {
    fn default() -> Self {
        Shard { index: 0, count: 1 }
    }
}

impl Shard {
    /// Parses `i/n` (0 ≤ i < n).
    pub fn parse(s: &str) -> Result<Shard> {
        let (i, n) = s.split_once('/').ok_or_else(|| anyhow!("--shard '{s}': use i/n, e.g. 0/4"))?;
        let (index, count) = match (i.trim().parse::<usize>(), n.trim().parse::<usize>()) {
            (Ok(i), Ok(n)) => (i, n),
            _ => bail!("--shard '{s}': i and n in i/n must be whole numbers, e.g. 0/4"),
        };
        if count == 0 || index >= count {
            bail!("--shard {s}: need 0 ≤ i < n (shards are numbered from 0)");
        }
        Ok(Shard { index, count })
    }

    /// The shard Slurm's job-array variables name, if they are set: task `SLURM_ARRAY_TASK_ID`
    /// counted from `SLURM_ARRAY_TASK_MIN` in steps of `SLURM_ARRAY_TASK_STEP` (so
    /// `--array=1-4` and `--array=0-6:2` both give shards 0, 1, 2, 3), out of
    /// `SLURM_ARRAY_TASK_COUNT`. A list with gaps (`--array=0,2,4`) tells no task its rank:
    /// Slurm gives it step 1, so `SLURM_ARRAY_TASK_MAX` lies past `MIN + (COUNT − 1) × STEP`,
    /// and every task refuses it. Errors name the variables, not `--shard`.
    pub fn from_slurm(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT")) else {
            return Ok(None);
        };
        let num = |name: &str, v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| anyhow!("{name}='{v}' is not a whole number; unset it or fix the job script"))
        };
        let opt = |name: &str, default: usize| var(name).map(|v| num(name, &v)).unwrap_or(Ok(default));
        let (min, step) = (opt("SLURM_ARRAY_TASK_MIN", 0)?, opt("SLURM_ARRAY_TASK_STEP", 1)?);
        let (id, count) = (num("SLURM_ARRAY_TASK_ID", &id)?, num("SLURM_ARRAY_TASK_COUNT", &count)?);
        let fix = "pass --shard i/n to choose the shard yourself";
        if step == 0 {
            bail!("SLURM_ARRAY_TASK_STEP is 0; {fix}");
        }
        if id < min || (id - min) % step != 0 {
            bail!("SLURM_ARRAY_TASK_ID {id} is not SLURM_ARRAY_TASK_MIN {min} plus a multiple of SLURM_ARRAY_TASK_STEP {step}; {fix}");
        }
        if let Some(max) = var("SLURM_ARRAY_TASK_MAX").map(|v| num("SLURM_ARRAY_TASK_MAX", &v)).transpose()? {
            let last = min + count.saturating_sub(1) * step;
            if max != last {
                bail!(
                    "SLURM_ARRAY_TASK_MAX {max} is not the last task ({last}) of SLURM_ARRAY_TASK_COUNT {count} tasks from SLURM_ARRAY_TASK_MIN {min} in steps of SLURM_ARRAY_TASK_STEP {step}: --array was a list with gaps, which tells no task its shard; use a range such as --array={min}-{} (stepped ranges such as 0-30:2 work too), or {fix}",
                    min + count.saturating_sub(1)
                );
            }
        }
        let index = (id - min) / step;
        if count == 0 || index >= count {
            bail!(
                "SLURM_ARRAY_TASK_ID {id} is task {} of an array of SLURM_ARRAY_TASK_COUNT {count} (from {min} in steps of {step}); use a contiguous --array such as 0-{}, or {fix}",
                index + 1,
                count.max(1) - 1
            );
        }
        Ok(Some(Shard { index, count }))
    }

    /// True when the cell at `index` belongs to this shard.
    pub fn owns(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}

/// Refuses a spec that asks for far more work than the documented defaults (more than
/// [`crate::util::COST_FACTOR`] times; `yes` overrides), estimated from the grid alone before
/// any work: its cells, steps per run, training steps in all, data sizes and each measure's
/// own work per cell ([`measure::Measure::costs`]).
pub fn check_costs(spec: &Spec, yes: bool) -> Result<()> {
    use crate::util::check_cost;
    let all = cells(spec)?;
    // The claims grid (5 variants × 5 tasks × 5 seeds of 500 steps, its groups and multi-task
    // cells) is the default.
    check_cost("the grid (tasks × variants × sweep values × seeds)", all.len() as f64, 275.0, yes)?;
    let tuning = tune::tuning_cells(spec)?;
    let trainings: Vec<&crate::train::TrainConfig> = all
        .iter()
        .flat_map(|c| match &c.kind {
            CellKind::Run { cfg } => vec![cfg],
            CellKind::Group { .. } => Vec::new(),
            CellKind::Own { cell, .. } => cell.runs.iter().chain(&cell.configs).collect(),
        })
        .chain(tuning.iter().map(|c| &c.cfg))
        .collect();
    let max = |f: fn(&crate::train::TrainConfig) -> usize| trainings.iter().map(|c| f(c)).max().unwrap_or(0) as f64;
    let d = crate::train::TrainConfig::default();
    check_cost("steps (per run)", max(|c| c.steps), d.steps as f64, yes)?;
    check_cost("test_size", max(|c| c.test_size), d.test_size as f64, yes)?;
    check_cost("shots", max(|c| c.shots), d.shots as f64, yes)?;
    let steps: f64 = trainings.iter().map(|c| c.steps as f64).sum();
    check_cost("training steps of the whole grid", steps, 125.0 * d.steps as f64, yes)?;
    for m in &spec.measures {
        for c in m.costs() {
            check_cost(&c.what, c.estimate, c.default, yes)?;
        }
    }
    Ok(())
}

/// One backbone per report folder (cell ids do not carry it): the folder's `backbone.txt`
/// (`NAME FINGERPRINT`) must name the weights' fingerprint `fingerprint`, whatever path they
/// were loaded from. A new folder gets the marker; a folder with cells but no marker is refused
/// (its cells may come from any backbone).
pub fn check_backbone(out: &Path, name: &str, fingerprint: &str) -> Result<()> {
    let marker = out.join("backbone.txt");
    match std::fs::read_to_string(&marker) {
        Ok(found) => {
            let found = found.trim();
            let recorded = found.rsplit_once(' ').map(|(_, fp)| fp).unwrap_or(found);
            if recorded != fingerprint {
                bail!(
                    "{} holds cells computed on backbone '{found}' (weights fingerprint {recorded}), not on {name} (fingerprint {fingerprint}); pass another --out for this backbone",
                    out.display()
                );
            }
            Ok(())
        }
        Err(_) if has_cells(out) => bail!(
            "{} has cells but no backbone.txt, so the backbone they were computed on is unknown; pass another --out, or if they come from {name}, write `{name} {fingerprint}` into {}",
            out.display(),
            marker.display()
        ),
        Err(_) => crate::report::atomic::write_atomic(&marker, format!("{name} {fingerprint}\n").as_bytes()),
    }
}

/// True when `out/cells` holds a cell folder.
fn has_cells(out: &Path) -> bool {
    std::fs::read_dir(out.join("cells"))
        .map(|d| d.flatten().any(|e| !e.file_name().to_string_lossy().starts_with('.')))
        .unwrap_or(false)
}

/// What [`analyze`] did.
#[derive(Clone, Debug)]
pub struct AnalyzeSummary {
    /// Cells of the whole grid.
    pub total: usize,
    /// Cells of this shard.
    pub in_shard: usize,
    /// Cells of this shard found finished.
    pub skipped: usize,
    /// Cells run now.
    pub ran: usize,
    /// Cells of the whole grid still missing afterwards.
    pub missing: usize,
    /// The report, when the grid is complete and it was written.
    pub report: Option<PathBuf>,
}

/// Runs the missing cells of `shard` into `out`, then writes the report when every cell of
/// the grid is finished. Each cell is written atomically as soon as it finishes. A spec with
/// `[tune]` runs its tuning cells first and lays the grid out at the chosen values
/// ([`tune::run_tuning`]).
pub fn analyze(lab: &Lab, spec: &Spec, out: &Path, shard: Shard, progress: &Progress) -> Result<AnalyzeSummary> {
    cells(spec)?;
    std::fs::create_dir_all(out).map_err(|e| anyhow!("cannot create {}: {e}; pick a writable --out", out.display()))?;
    check_backbone(out, &lab.backbone_name, &lab.fingerprint)?;
    crate::report::atomic::write_atomic(&out.join("spec.toml"), spec.text.as_bytes())?;
    tune::run_tuning(lab, spec, out, shard, progress)?;
    let spec = &tune::resolve(out, spec.clone())?;
    let all = cells(spec)?;
    let mine: Vec<&Cell> = all.iter().enumerate().filter(|(i, _)| shard.owns(*i)).map(|(_, c)| c).collect();
    // Cells of this shard finished under their legacy ids are adopted, not recomputed.
    store::migrate_legacy(out, mine.iter().copied())?;
    let todo: Vec<&Cell> = mine.iter().copied().filter(|c| !store::is_done(out, &c.id)).collect();
    let bar = progress.bar(todo.len() as u64, &format!("analyze {} {}/{}", spec.name, shard.index, shard.count));
    let mut envs = cell::Envs::default();
    cell::check_cells(lab, spec, &todo)?;
    let mut trained = cell::prepare_runs(lab, &todo, &mut envs, progress)?;
    let machine = store::machine();
    for c in &todo {
        bar.set_message(c.id.clone());
        let started = Instant::now();
        let output = cell::run_cell(lab, spec, c, &mut envs, &Progress::hidden())
            .map_err(|e| anyhow!("cell {}: {e:#}", c.id))?;
        let training_seconds = cell::take_training_seconds(lab, c, &mut envs, &mut trained)?;
        let record = store::CellRecord {
            id: c.id.clone(),
            wall_seconds: started.elapsed().as_secs_f64() + training_seconds,
            training_seconds: Some(training_seconds),
            machine: machine.clone(),
        };
        store::write_cell(out, &record, &output)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    let missing = all.iter().filter(|c| !store::is_done(out, &c.id)).count();
    let report = if missing == 0 { Some(report::write_report(out)?) } else { None };
    Ok(AnalyzeSummary {
        total: all.len(),
        in_shard: mine.len(),
        skipped: mine.len() - todo.len(),
        ran: todo.len(),
        missing,
        report,
    })
}

#[cfg(test)]
mod tests;
