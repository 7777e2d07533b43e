//! Run artifacts and the run cache. A run is one (task, method, seed, config) on one
//! backbone; its directory holds the PEFT adapter, `train_log.parquet` and
//! `manifest.json`. The directory name carries a hash of the full config and the
//! backbone's weight fingerprint, so an existing run is reused, never retrained.

use crate::adapter::{peft, Adapter};
use crate::eval::Metrics;
use crate::report::atomic::write_atomic;
use crate::report::table::Table;
use crate::train::{StepRecord, TrainConfig};
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Bumped when the meaning of a cached run changes.
pub const RUN_FORMAT: u32 = 1;

/// What `manifest.json` records about a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    /// Full training configuration.
    pub config: TrainConfig,
    /// Backbone name or path.
    pub backbone: String,
    /// Fingerprint of the backbone weights.
    pub backbone_fingerprint: String,
    /// copra-lab version that trained the run.
    pub crate_version: String,
    /// Run format version.
    pub run_format: u32,
    /// Wall time of the training loop, seconds.
    pub wall_seconds: f64,
    /// Training throughput, images per second.
    pub images_per_second: f64,
    /// Test metrics with every adapter on.
    pub test: Metrics,
    /// Training-shot metrics with every adapter on.
    pub train: Metrics,
    /// Test metrics of the frozen backbone with the same head.
    pub frozen_test: Metrics,
    /// Number of trainable parameters.
    pub trainable_parameters: usize,
}

/// The cache key of a run: hash of the canonical config JSON, the backbone fingerprint and the format.
pub fn run_key(config: &TrainConfig, backbone_fingerprint: &str) -> String {
    let json = serde_json::to_string(config).expect("config serialises");
    crate::util::hash_str(&format!("{RUN_FORMAT}|{backbone_fingerprint}|{json}"))
}

/// A file-system-safe version of a task name.
pub fn sanitize(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    s.trim_matches('_').chars().take(60).collect()
}

/// `runs/<task>/<method>/seed<k>-<key>`.
pub fn run_dir(root: &Path, config: &TrainConfig, backbone_fingerprint: &str) -> PathBuf {
    root.join(sanitize(&config.task)).join(config.method.name()).join(format!(
        "seed{}-{}",
        config.seed,
        &run_key(config, backbone_fingerprint)[..12]
    ))
}

/// The training log as a table: step, loss, lr, p, n_active, start_block, mask (active group ids).
pub fn log_table(log: &[StepRecord]) -> Table {
    let mut t = Table::new();
    t.i64_col("step", log.iter().map(|r| r.step as i64).collect())
        .f64_col("loss", log.iter().map(|r| r.loss).collect())
        .f64_col("lr", log.iter().map(|r| r.lr).collect())
        .f64_col("p", log.iter().map(|r| r.p).collect())
        .i64_col("n_active", log.iter().map(|r| r.active_groups.len() as i64).collect())
        .i64_col("start_block", log.iter().map(|r| r.start_block as i64).collect())
        .list_i64_col("mask", log.iter().map(|r| r.active_groups.iter().map(|g| *g as i64).collect()).collect());
    t
}

/// Writes a complete run into `dir` via a temporary sibling directory and one rename, so a
/// crash never leaves a half-written run that the cache would trust.
pub fn write_run(dir: &Path, adapter: &Adapter, log: &[StepRecord], manifest: &Manifest) -> Result<()> {
    let parent = dir.parent().ok_or_else(|| anyhow!("run directory {} has no parent", dir.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        dir.file_name().and_then(|s| s.to_str()).unwrap_or("run"),
        std::process::id()
    ));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    peft::save(adapter, &tmp, &manifest.backbone)?;
    log_table(log).write_parquet(&tmp.join("train_log.parquet"))?;
    write_atomic(&tmp.join("manifest.json"), serde_json::to_string_pretty(manifest)?.as_bytes())?;
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::rename(&tmp, dir).with_context(|| format!("cannot move run into {}", dir.display()))?;
    Ok(())
}

/// Reads a run directory written by `write_run`.
pub fn read_run(dir: &Path) -> Result<(Adapter, Manifest)> {
    let m_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&m_path)
        .with_context(|| format!("cannot read {}: not a copra-lab run directory", m_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{} is corrupt ({e}): delete the run directory to retrain", m_path.display()))?;
    let adapter = peft::load(dir)?;
    Ok((adapter, manifest))
}
