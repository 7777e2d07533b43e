//! Declarative analyses: a TOML spec names a grid of runs and the measurements to take on
//! it; [`analyze`] runs the cells that are missing (resumable, shardable), and
//! [`report::write_report`] turns the finished cells into Parquet tables, SVG figures and a
//! README with intervals over seeds and paired comparisons. Nothing here knows the CLI.

pub mod cell;
pub mod measure;
pub mod report;
pub mod spec;
pub mod store;

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

    /// The shard Slurm's job-array variables name (`SLURM_ARRAY_TASK_ID` counted from
    /// `SLURM_ARRAY_TASK_MIN`, out of `SLURM_ARRAY_TASK_COUNT`), if they are set.
    pub fn from_slurm(var: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>> {
        let (Some(id), Some(count)) = (var("SLURM_ARRAY_TASK_ID"), var("SLURM_ARRAY_TASK_COUNT")) else {
            return Ok(None);
        };
        let num = |name: &str, v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| anyhow!("{name}='{v}' is not a whole number; unset it or fix the job script"))
        };
        let min = match var("SLURM_ARRAY_TASK_MIN") {
            Some(m) => num("SLURM_ARRAY_TASK_MIN", &m)?,
            None => 0,
        };
        let (id, count) = (num("SLURM_ARRAY_TASK_ID", &id)?, num("SLURM_ARRAY_TASK_COUNT", &count)?);
        if id < min {
            bail!("SLURM_ARRAY_TASK_ID {id} is below SLURM_ARRAY_TASK_MIN {min}");
        }
        Shard::parse(&format!("{}/{count}", id - min)).map(Some)
    }

    /// True when the cell at `index` belongs to this shard.
    pub fn owns(&self, index: usize) -> bool {
        index % self.count == self.index
    }
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
/// the grid is finished. Each cell is written atomically as soon as it finishes.
pub fn analyze(lab: &Lab, spec: &Spec, out: &Path, shard: Shard, progress: &Progress) -> Result<AnalyzeSummary> {
    let all = cells(spec)?;
    std::fs::create_dir_all(out).map_err(|e| anyhow!("cannot create {}: {e}; pick a writable --out", out.display()))?;
    // One backbone per report folder: cells do not carry the backbone in their ids.
    let backbone = format!("{} {}", lab.backbone_name, lab.fingerprint);
    let marker = out.join("backbone.txt");
    if let Ok(found) = std::fs::read_to_string(&marker) {
        if found.trim() != backbone {
            bail!(
                "{} holds cells computed on backbone '{}', not '{}'; pass another --out for this backbone",
                out.display(),
                found.trim(),
                backbone
            );
        }
    } else {
        crate::report::atomic::write_atomic(&marker, format!("{backbone}\n").as_bytes())?;
    }
    crate::report::atomic::write_atomic(&out.join("spec.toml"), spec.text.as_bytes())?;
    let mine: Vec<&Cell> = all.iter().enumerate().filter(|(i, _)| shard.owns(*i)).map(|(_, c)| c).collect();
    let todo: Vec<&Cell> = mine.iter().copied().filter(|c| !store::is_done(out, &c.id)).collect();
    let bar = progress.bar(todo.len() as u64, &format!("analyze {} {}/{}", spec.name, shard.index, shard.count));
    let mut envs = cell::Envs::default();
    cell::prepare_runs(lab, &todo, &mut envs, progress)?;
    let machine = store::machine();
    for c in &todo {
        bar.set_message(c.id.clone());
        let started = Instant::now();
        let output = cell::run_cell(lab, spec, c, &mut envs, &Progress::hidden())
            .map_err(|e| anyhow!("cell {}: {e:#}", c.id))?;
        let record = store::CellRecord {
            id: c.id.clone(),
            wall_seconds: started.elapsed().as_secs_f64(),
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
