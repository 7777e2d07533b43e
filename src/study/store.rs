//! Where an analysis keeps its cells: `DIR/cells/<cell id>/` holds the cell's Parquet parts
//! (`measurements.parquet`, and when it has them `curves.parquet` and the per-example
//! `predictions.parquet`) and `cell.json`. A cell directory appears in one rename, so it either exists complete or
//! not at all; a crash leaves at most a `.tmp-*` directory, which is ignored and replaced.

use super::cell::CellOutput;
use super::measure::{CurvePoint, Measurement, Prediction};
use crate::report::atomic::write_atomic;
use crate::report::table::Table;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What `cell.json` records about a finished cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellRecord {
    /// Cell id.
    pub id: String,
    /// Wall time of the cell in seconds, the training of its runs included: the runs of a
    /// shard are trained as grids before its cells, and each trained run's share of its grid's
    /// wall time counts for the first cell that reads it.
    pub wall_seconds: f64,
    /// The part of `wall_seconds` that trained runs (0 when every run came from the cache;
    /// `None` for cells written before it was recorded, whose wall time lacks the training).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_seconds: Option<f64>,
    /// The machine it ran on (CPU model and cores, or the device).
    pub machine: String,
}

/// The directory of cell `id` under the analysis folder `dir`.
pub fn cell_dir(dir: &Path, id: &str) -> PathBuf {
    dir.join("cells").join(id)
}

/// True when cell `id` has finished: its `cell.json` reads back as this cell's record and its
/// measurements are there. A cell with a missing or unreadable part counts as not finished, so
/// `analyze` redoes it (replacing the folder).
pub fn is_done(dir: &Path, id: &str) -> bool {
    let d = cell_dir(dir, id);
    let record =
        std::fs::read_to_string(d.join("cell.json")).ok().and_then(|t| serde_json::from_str::<CellRecord>(&t).ok());
    record.is_some_and(|r| r.id == id) && d.join("measurements.parquet").is_file()
}

/// Adopts the finished cells of `dir` written under their legacy ids (before cell ids were
/// canonical, see [`super::cell::Cell::legacy_id`]): each is rewritten under its new id (the id
/// inside `cell.json` and the `cell` column of its tables), then the old folder is removed.
/// Only a folder whose legacy id is exactly the one this spec's cell had is adopted, so cells
/// computed under other settings are never taken for these. Returns how many were adopted.
pub fn migrate_legacy<'a>(dir: &Path, cells: impl IntoIterator<Item = &'a super::cell::Cell>) -> Result<usize> {
    let mut adopted = 0;
    for cell in cells.into_iter().filter(|c| c.legacy_id != c.id) {
        if is_done(dir, &cell.id) || !is_done(dir, &cell.legacy_id) {
            continue;
        }
        let (mut record, mut rows, mut curves) = read_cell(dir, &cell.legacy_id)?;
        let mut predictions = read_predictions(dir, &cell.legacy_id)?;
        record.id = cell.id.clone();
        rows.iter_mut().for_each(|r| r.cell = cell.id.clone());
        curves.iter_mut().for_each(|c| c.cell = cell.id.clone());
        predictions.iter_mut().for_each(|p| p.cell = cell.id.clone());
        write_cell(dir, &record, &CellOutput { measurements: rows, curves, predictions })?;
        let old = cell_dir(dir, &cell.legacy_id);
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove {} after adopting it as {}", old.display(), cell.id))?;
        adopted += 1;
    }
    Ok(adopted)
}

/// Writes a finished cell: parts into a temporary sibling, then one rename.
pub fn write_cell(dir: &Path, record: &CellRecord, out: &CellOutput) -> Result<()> {
    let cells = dir.join("cells");
    std::fs::create_dir_all(&cells).with_context(|| format!("cannot create {}", cells.display()))?;
    let tmp = cells.join(format!(".tmp-{}-{}", record.id, std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    let fill = || -> Result<()> {
        std::fs::create_dir_all(&tmp)?;
        Table::from_rows(&out.measurements).write_parquet(&tmp.join("measurements.parquet"))?;
        if !out.curves.is_empty() {
            Table::from_rows(&out.curves).write_parquet(&tmp.join("curves.parquet"))?;
        }
        if !out.predictions.is_empty() {
            Table::from_rows(&out.predictions).write_parquet(&tmp.join("predictions.parquet"))?;
        }
        write_atomic(&tmp.join("cell.json"), serde_json::to_string_pretty(record)?.as_bytes())
    };
    let target = cell_dir(dir, &record.id);
    let result = fill().and_then(|()| {
        if target.exists() {
            std::fs::remove_dir_all(&target)?;
        }
        std::fs::rename(&tmp, &target).with_context(|| format!("cannot move the cell into {}", target.display()))
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Reads a finished cell's per-example predictions (none for a cell that evaluated no model on
/// a test set, or that was written before they were saved). Errors name the file and say to
/// delete the cell's folder: `analyze` then redoes exactly that cell.
pub fn read_predictions(dir: &Path, id: &str) -> Result<Vec<Prediction>> {
    let path = cell_dir(dir, id).join("predictions.parquet");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    Table::read_parquet(&path).and_then(|df| Prediction::from_frame(&df)).map_err(|e| {
        anyhow!("{}: {e:#}; delete {} and rerun analyze to redo that cell", path.display(), cell_dir(dir, id).display())
    })
}

/// Reads a finished cell's record and rows. Errors name the cell's folder and say to delete
/// it: `analyze` then redoes exactly that cell.
pub fn read_cell(dir: &Path, id: &str) -> Result<(CellRecord, Vec<Measurement>, Vec<CurvePoint>)> {
    let d = cell_dir(dir, id);
    let read = || -> Result<(CellRecord, Vec<Measurement>, Vec<CurvePoint>)> {
        let record: CellRecord = serde_json::from_str(&std::fs::read_to_string(d.join("cell.json"))?)?;
        let rows = Measurement::from_frame(&Table::read_parquet(&d.join("measurements.parquet"))?)?;
        let curves = if d.join("curves.parquet").is_file() {
            CurvePoint::from_frame(&Table::read_parquet(&d.join("curves.parquet"))?)?
        } else {
            Vec::new()
        };
        Ok((record, rows, curves))
    };
    read().map_err(|e| {
        anyhow!(
            "cell {} is unreadable ({}); delete that folder and rerun analyze, which redoes this cell",
            d.display(),
            format!("{e:#}").replace('\n', " ")
        )
    })
}

/// A short description of this machine: CPU model and logical cores.
pub fn machine() -> String {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{model}, {cores} cores")
}
