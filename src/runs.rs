//! Run artifacts and the run cache. A run is one (task, method, seed, config) on one
//! backbone; its directory holds the PEFT adapter, `train_log.parquet` and
//! `manifest.json`. The directory name carries a hash of the full config and the
//! backbone's weight fingerprint, so an existing run is reused, never retrained.

use crate::adapter::{peft, Adapter};
use crate::eval::Metrics;
use crate::report::atomic::write_atomic;
use crate::report::atomic_dir::{self, Installed};
use crate::report::table::Table;
use crate::train::{StepRecord, TrainConfig};
use anyhow::{anyhow, bail, Context, Result};
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
    /// Fingerprint of the decoded task data, for `idx:` and `folder:` tasks (part of the
    /// cache key, so replacing the files retrains); absent for built-in tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_fingerprint: Option<String>,
    /// The backbone's Hugging Face `model_type` (`vit`, `bert`): the adapter's PEFT names follow it.
    #[serde(default = "default_model_type")]
    pub model_type: String,
}

fn default_model_type() -> String {
    "vit".to_string()
}

impl Manifest {
    /// Errors, naming the field, when a recorded number is NaN or infinite: JSON would store
    /// it as `null` and the run would read back as corrupt.
    pub fn check_finite(&self) -> Result<()> {
        let fields = [
            ("test loss", self.test.loss),
            ("test accuracy", self.test.accuracy),
            ("train loss", self.train.loss),
            ("train accuracy", self.train.accuracy),
            ("frozen test loss", self.frozen_test.loss),
            ("frozen test accuracy", self.frozen_test.accuracy),
            ("wall time", self.wall_seconds),
            ("throughput", self.images_per_second),
        ];
        if let Some((name, v)) = fields.iter().find(|(_, v)| !v.is_finite()) {
            bail!(
                "the run's {name} is {v}: the adapter's outputs are not finite; lower the learning rate (--lr, now {}) or the LoRA alpha; nothing was saved",
                self.config.lr
            );
        }
        Ok(())
    }
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

/// Errors, before any training, when the run folder `dir` cannot hold a run: it is a file
/// or a broken symbolic link (writing the trained run there would fail only afterwards).
pub fn check_run_slot(dir: &Path) -> Result<()> {
    let Ok(meta) = std::fs::symlink_metadata(dir) else { return Ok(()) };
    if meta.file_type().is_symlink() && !dir.exists() {
        bail!(
            "run folder {} is a broken symbolic link (to {}); remove the link or restore its target",
            dir.display(),
            std::fs::read_link(dir).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into())
        );
    }
    if !dir.is_dir() {
        bail!("run folder {} is a file, not a folder; remove it to train the run", dir.display());
    }
    Ok(())
}

/// Errors when the run read from `dir` is not the run its folder name stands for: its
/// manifest's config, backbone fingerprint, data fingerprint or run format differ from the
/// requested ones (the folder was copied, renamed or edited). Names the first difference.
pub fn check_manifest_matches(
    manifest: &Manifest,
    config: &TrainConfig,
    backbone_fingerprint: &str,
    data_fingerprint: Option<&str>,
    dir: &Path,
) -> Result<()> {
    let advice = "the folder was copied, renamed or edited; delete it to retrain";
    if manifest.run_format != RUN_FORMAT {
        bail!(
            "{} has run format {} but this copra-lab writes {RUN_FORMAT}; {advice}",
            dir.display(),
            manifest.run_format
        );
    }
    if manifest.backbone_fingerprint != backbone_fingerprint {
        bail!(
            "{} was trained on another backbone (fingerprint {}); {advice}",
            dir.display(),
            manifest.backbone_fingerprint
        );
    }
    if manifest.data_fingerprint.as_deref() != data_fingerprint {
        bail!("{} was trained on other task data; {advice}", dir.display());
    }
    let (found, wanted) = (serde_json::to_value(&manifest.config)?, serde_json::to_value(config)?);
    if found != wanted {
        let field =
            |v: &serde_json::Value, k: &str| v.get(k).map(|x| x.to_string()).unwrap_or_else(|| "default".into());
        let keys: std::collections::BTreeSet<&String> =
            found.as_object().into_iter().chain(wanted.as_object()).flat_map(|o| o.keys()).collect();
        let diff = keys
            .into_iter()
            .find(|k| found.get(k.as_str()) != wanted.get(k.as_str()))
            .map(|k| format!("{k} is {} in its manifest, {} requested", field(&found, k), field(&wanted, k)))
            .unwrap_or_else(|| "its config differs".into());
        bail!("{} holds another run ({diff}); {advice}", dir.display());
    }
    Ok(())
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
/// crash never leaves a half-written run that the cache would trust. A failed write removes
/// the temporary directory; a manifest with a non-finite number is refused before writing.
/// The adapter is written under `layout`'s PEFT names (the backbone's [`peft::PeftLayout`]).
///
/// Concurrent writers of one run all succeed: when `dir` already holds a complete run, the
/// first writer's run is kept ([`Installed::KeptExisting`]: read it back with [`read_run`])
/// unless `replace`, in which case the two are exchanged atomically (readers never see a
/// missing or partial run). Stale temporary folders of writers that died (`kill -9`) are
/// removed from the parent folder first.
pub fn write_run(
    dir: &Path,
    adapter: &Adapter,
    log: &[StepRecord],
    manifest: &Manifest,
    layout: peft::PeftLayout,
    replace: bool,
) -> Result<Installed> {
    manifest.check_finite()?;
    let parent = dir.parent().ok_or_else(|| anyhow!("run directory {} has no parent", dir.display()))?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    atomic_dir::clean_stale_temps(parent);
    let tmp = atomic_dir::temp_sibling(dir)?;
    if let Err(e) = fill_run_dir(&tmp, adapter, log, manifest, layout) {
        // Best effort: the original error is what the caller needs to see.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    atomic_dir::install_dir(&tmp, dir, replace, is_complete_run)
}

/// True when `dir` holds a finished run (its manifest is written last).
pub fn is_complete_run(dir: &Path) -> bool {
    dir.join("manifest.json").is_file()
}

/// Writes the run's files into the (temporary) directory `tmp`.
fn fill_run_dir(
    tmp: &Path,
    adapter: &Adapter,
    log: &[StepRecord],
    manifest: &Manifest,
    layout: peft::PeftLayout,
) -> Result<()> {
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    peft::save_as(adapter, tmp, &manifest.backbone, layout)?;
    log_table(log).write_parquet(&tmp.join("train_log.parquet"))?;
    write_atomic(&tmp.join("manifest.json"), serde_json::to_string_pretty(manifest)?.as_bytes())
}

/// Reads a run directory written by `write_run` for a backbone of PEFT layout `layout`.
pub fn read_run(dir: &Path, layout: peft::PeftLayout) -> Result<(Adapter, Manifest)> {
    let m_path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&m_path)
        .with_context(|| format!("cannot read {}: not a copra-lab run directory", m_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
        if e.to_string().contains("null") {
            anyhow!(
                "{} records a non-finite (null) number ({e}): the run diverged; delete {} and retrain with a lower learning rate",
                m_path.display(),
                dir.display()
            )
        } else {
            anyhow!("{} is corrupt ({e}): delete the run directory to retrain", m_path.display())
        }
    })?;
    let adapter = peft::load_as(dir, layout)?;
    Ok((adapter, manifest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::LoraSpec;
    use crate::eval::Metrics;

    fn manifest(loss: f64) -> Manifest {
        let m = Metrics { loss, accuracy: 0.5 };
        Manifest {
            config: TrainConfig::default(),
            backbone: "builtin".into(),
            backbone_fingerprint: "fp".into(),
            crate_version: "0".into(),
            run_format: RUN_FORMAT,
            wall_seconds: 1.0,
            images_per_second: 1.0,
            test: m,
            train: m,
            frozen_test: m,
            trainable_parameters: 0,
            data_fingerprint: None,
            model_type: "vit".into(),
        }
    }

    fn tmp_entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect()
    }

    #[test]
    fn concurrent_writers_of_one_run_all_succeed_and_leave_one_complete_run() {
        // Issue 25: replacing removed the old folder and renamed the new one in, and threads of
        // one process shared one temporary name, so concurrent writers failed.
        let root = std::env::temp_dir().join(format!("copra-runs-race-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dir = root.join("task").join("lora").join("seed1-abc");
        let adapter = Adapter { spec: LoraSpec::default(), modules: Default::default() };
        for replace in [false, true] {
            let barrier = std::sync::Barrier::new(12);
            let outcomes: Vec<Installed> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..12)
                    .map(|_| {
                        s.spawn(|| {
                            barrier.wait();
                            write_run(&dir, &adapter, &[], &manifest(0.3), peft::PeftLayout::VIT, replace).unwrap()
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let new = outcomes.iter().filter(|o| **o == Installed::New).count();
            // The first round starts without a run: exactly one writer installs it.
            assert_eq!(new, if replace { 12 } else { 1 }, "{outcomes:?}");
            assert!(is_complete_run(&dir));
            assert_eq!(tmp_entries(dir.parent().unwrap()), Vec::<String>::new());
        }
        let text = std::fs::read_to_string(dir.join("manifest.json")).unwrap();
        let m: Manifest = serde_json::from_str(&text).unwrap();
        assert_eq!(m.test.loss, 0.3);
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn failed_or_non_finite_writes_leave_nothing_behind() {
        let root = std::env::temp_dir().join(format!("copra-runs-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        let adapter = Adapter { spec: LoraSpec::default(), modules: Default::default() };
        // A NaN in the manifest is refused before anything is written.
        let dir = root.join("run-nan");
        let err =
            write_run(&dir, &adapter, &[], &manifest(f64::NAN), peft::PeftLayout::VIT, false).unwrap_err().to_string();
        assert!(err.contains("test loss is NaN") && err.contains("lower the learning rate"), "{err}");
        assert!(!dir.exists());
        // A file where the run directory goes: the write fails and its temporary folder is removed.
        let blocked = root.join("run-blocked");
        std::fs::write(&blocked, b"x").unwrap();
        let err =
            write_run(&blocked, &adapter, &[], &manifest(0.3), peft::PeftLayout::VIT, false).unwrap_err().to_string();
        assert!(err.contains("run-blocked"), "{err}");
        assert!(tmp_entries(&root).is_empty(), "{:?}", tmp_entries(&root));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
