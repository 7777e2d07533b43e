//! Tuning on validation: a spec's `[tune]` section names training keys (for example `lr` and
//! `steps`) with candidate values. Every variant gets the same budget: each candidate (the
//! product of the axes) is trained with the same tuning seeds on every task and sweep point,
//! and scored on the task's VALIDATION split. The candidate with the highest mean validation
//! accuracy (per variant and sweep point, and per task with `per_task = true`; ties go to the
//! first candidate in spec order) becomes that variant's config for every cell of the grid, so
//! the test split is only evaluated at the chosen values.
//!
//! Tuning cells are run by [`run_tuning`] before the grid is laid out; each is one file
//! `tuning/<id>.json` written atomically, so tuning resumes like the grid. A shard runs its
//! own share first and then whatever tuning cells are still missing (the results are
//! deterministic, so two shards that compute the same cell write the same record), so every
//! shard lays out the grid at the same choices. [`resolve`] reads the records and applies the
//! choices to a spec; [`write_tables`] writes `tuning.parquet` and the README section.

use super::cell::{config_json, Envs};
use super::spec::{Spec, Variant};
use super::Shard;
use crate::lab::{Lab, Split, TaskEnvKey};
use crate::progress::Progress;
use crate::report::atomic::write_atomic;
use crate::report::table::{table_row, Table};
use crate::train::TrainConfig;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Keys of `[tune]` that are options, not axes.
const OPTIONS: [&str; 2] = ["seeds", "per_task"];

/// One tuned training key and its candidate values.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    /// The `TrainConfig` key (`lora.rank` for nested keys).
    pub key: String,
    /// The candidate values, in spec order.
    pub values: Vec<toml::Value>,
}

/// A parsed `[tune]` section.
#[derive(Clone, Debug, PartialEq)]
pub struct Tune {
    /// The tuned keys, in spec order.
    pub axes: Vec<Axis>,
    /// Run seeds of the tuning runs (default: the spec's first seed).
    pub seeds: Vec<u64>,
    /// Choose per task as well as per variant (default: one choice per variant over all tasks).
    pub per_task: bool,
}

/// One candidate: a value for every axis, in axis order.
pub type Candidate = Vec<(String, toml::Value)>;

impl Tune {
    /// Parses `[tune]`; `at(key, msg)` builds a one-line error naming the key's line. Keys the
    /// grid sets itself (`seed`, `task`) and the sweep key are refused.
    pub fn parse(
        table: &toml::Table,
        spec_seeds: &[u64],
        sweep_key: &str,
        at: &dyn Fn(&str, String) -> anyhow::Error,
    ) -> Result<Tune> {
        let seeds = match table.get("seeds") {
            None => spec_seeds.iter().take(1).copied().collect(),
            Some(toml::Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|v| match v {
                    toml::Value::Integer(i) if *i >= 0 => Ok(*i as u64),
                    other => Err(at("seeds", format!("tuning seeds must be whole numbers ≥ 0, got {other}"))),
                })
                .collect::<Result<Vec<u64>>>()?,
            Some(_) => return Err(at("seeds", "list at least one tuning seed, e.g. seeds = [101]".into())),
        };
        if (1..seeds.len()).any(|i| seeds[..i].contains(&seeds[i])) {
            return Err(at("seeds", "tuning seeds repeat; list each seed once".into()));
        }
        let per_task = match table.get("per_task") {
            None => false,
            Some(toml::Value::Boolean(b)) => *b,
            Some(other) => return Err(at("per_task", format!("per_task must be true or false, got {other}"))),
        };
        let mut axes = Vec::new();
        flatten(table, "", &mut axes, at)?;
        if axes.is_empty() {
            return Err(at(
                "tune",
                "[tune] names no training key to tune; add one with candidate values, e.g. lr = [1e-3, 2e-3, 4e-3]"
                    .into(),
            ));
        }
        for a in &axes {
            if a.key == "seed" || a.key == "task" {
                return Err(at(&a.key, format!("the grid sets the run's {} itself; tune another key", a.key)));
            }
            if a.key == sweep_key {
                return Err(at(&a.key, format!("`{}` is the swept key; tune another key or drop the sweep", a.key)));
            }
        }
        Ok(Tune { axes, seeds, per_task })
    }

    /// Every candidate, the product of the axes (the last axis varies fastest).
    pub fn candidates(&self) -> Vec<Candidate> {
        let mut out: Vec<Candidate> = vec![Vec::new()];
        for a in &self.axes {
            out = out
                .into_iter()
                .flat_map(|c| {
                    a.values.iter().map(move |v| {
                        let mut c = c.clone();
                        c.push((a.key.clone(), v.clone()));
                        c
                    })
                })
                .collect();
        }
        out
    }
}

/// The axes of `table` (nested tables as dotted keys), each a non-empty list without repeats.
fn flatten(
    table: &toml::Table,
    prefix: &str,
    out: &mut Vec<Axis>,
    at: &dyn Fn(&str, String) -> anyhow::Error,
) -> Result<()> {
    for (k, v) in table {
        if prefix.is_empty() && OPTIONS.contains(&k.as_str()) {
            continue;
        }
        let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
        match v {
            toml::Value::Table(t) => flatten(t, &key, out, at)?,
            toml::Value::Array(values) if !values.is_empty() => {
                if let Some(i) = (1..values.len()).find(|&i| values[..i].contains(&values[i])) {
                    return Err(at(k, format!("candidate {} of `{key}` is listed twice; list each once", values[i])));
                }
                out.push(Axis { key, values: values.clone() });
            }
            _ => return Err(at(k, format!("`{key}` needs a list of candidate values, e.g. {k} = [1e-3, 2e-3]"))),
        }
    }
    Ok(())
}

/// `lr=0.001 steps=250`: a candidate as written.
pub fn label(candidate: &Candidate) -> String {
    candidate.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
}

/// `cfg` with the candidate's keys set (nested keys through their tables), checked.
pub fn with_candidate(cfg: &TrainConfig, candidate: &Candidate) -> Result<TrainConfig> {
    let mut table = toml::Table::try_from(cfg)?;
    for (key, value) in candidate {
        let mut path: Vec<&str> = key.split('.').collect();
        let leaf = path.pop().unwrap_or_default();
        let mut t = &mut table;
        for p in path {
            t = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| anyhow!("tuned key '{key}': '{p}' is not a table"))?;
        }
        t.insert(leaf.to_string(), value.clone());
    }
    let out: TrainConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}", e.message().replace('\n', " ").trim()))?;
    out.validate()?;
    Ok(out)
}

/// One tuning run: a variant at a sweep point with one candidate, one tuning seed, one task.
#[derive(Clone, Debug)]
pub struct TuningCell {
    /// Stable id (readable part plus a hash of the config).
    pub id: String,
    /// Variant name.
    pub variant: String,
    /// Task.
    pub task: String,
    /// Sweep point index.
    pub point: usize,
    /// Index into [`Tune::candidates`].
    pub candidate: usize,
    /// The run.
    pub cfg: TrainConfig,
}

/// Every tuning cell of the spec (empty without `[tune]`), in a fixed order: sweep point,
/// variant, task, candidate, seed. Each variant gets the same candidates and seeds.
pub fn tuning_cells(spec: &Spec) -> Result<Vec<TuningCell>> {
    let Some(tune) = &spec.tune else { return Ok(Vec::new()) };
    let candidates = tune.candidates();
    let mut out = Vec::new();
    for point in 0..spec.sweep.len() {
        for v in &spec.variants {
            for task in &spec.tasks {
                for (ci, c) in candidates.iter().enumerate() {
                    for &seed in &tune.seeds {
                        let cfg = untuned_config(v, point, seed, task)?;
                        let cfg = with_candidate(&cfg, c).with_context(|| format!("[tune] {}", label(c)))?;
                        let json = config_json(&cfg);
                        let hash = &crate::util::hash_str(&format!("tune {json}"))[..10];
                        // The readable part may be shortened; the hash always survives.
                        let readable = crate::runs::sanitize(&format!("tune-{task}-{}-c{ci}-p{point}-s{seed}", v.name));
                        let id = format!("{readable}-{hash}");
                        out.push(TuningCell {
                            id,
                            variant: v.name.clone(),
                            task: task.clone(),
                            point,
                            candidate: ci,
                            cfg,
                        });
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The variant's config at a sweep point before any choice.
fn untuned_config(v: &Variant, point: usize, seed: u64, task: &str) -> Result<TrainConfig> {
    let base = v.points.get(point).ok_or_else(|| anyhow!("internal: no sweep point {point}"))?;
    Ok(TrainConfig { seed, task: task.to_string(), ..base.clone() })
}

table_row! {
    /// One tuning run's validation score: a row of `tuning.parquet` (plus whether its
    /// candidate was chosen) and the content of `tuning/<id>.json`.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct TuningRecord {
        /// Tuning cell id.
        pub id: String,
        /// Variant.
        pub variant: String,
        /// Task.
        pub task: String,
        /// Sweep point index.
        pub point: i64,
        /// Candidate index.
        pub candidate: i64,
        /// The candidate as written (`lr=0.001 steps=250`).
        pub values: String,
        /// Tuning seed.
        pub seed: i64,
        /// Accuracy on the task's validation split.
        pub valid_accuracy: f64,
        /// Mean cross-entropy on the validation split.
        pub valid_loss: f64,
        /// True when this candidate is the one chosen for its variant (and task).
        pub chosen: bool,
    }
}

/// Where the tuning records of the analysis folder `dir` live.
pub fn tuning_dir(dir: &Path) -> PathBuf {
    dir.join("tuning")
}

/// The record of tuning cell `id` in `dir`, if it was written.
fn read_record(dir: &Path, id: &str) -> Option<TuningRecord> {
    let text = std::fs::read_to_string(tuning_dir(dir).join(format!("{id}.json"))).ok()?;
    serde_json::from_str::<TuningRecord>(&text).ok().filter(|r| r.id == id)
}

/// Runs the tuning cells of `spec` that `dir` lacks: this shard's share first, then every one
/// still missing (see the module docs). Returns how many it ran.
pub fn run_tuning(lab: &Lab, spec: &Spec, dir: &Path, shard: Shard, progress: &Progress) -> Result<usize> {
    let all = tuning_cells(spec)?;
    if all.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(tuning_dir(dir)).with_context(|| format!("cannot create {}", tuning_dir(dir).display()))?;
    let missing = |own: bool| -> Vec<&TuningCell> {
        all.iter()
            .enumerate()
            .filter(|(i, c)| (!own || shard.owns(*i)) && read_record(dir, &c.id).is_none())
            .map(|(_, c)| c)
            .collect()
    };
    let mut envs = Envs::default();
    let mine = missing(true);
    run_cells(lab, dir, &mine, &mut envs, progress)?;
    let rest = missing(false);
    run_cells(lab, dir, &rest, &mut envs, progress)?;
    Ok(mine.len() + rest.len())
}

/// Trains (as one grid per task environment) and scores on validation the given cells, writing
/// each record as soon as its grid is scored.
fn run_cells(lab: &Lab, dir: &Path, cells: &[&TuningCell], envs: &mut Envs, progress: &Progress) -> Result<()> {
    let mut by_env: BTreeMap<TaskEnvKey, Vec<&TuningCell>> = BTreeMap::new();
    for c in cells {
        by_env.entry(TaskEnvKey::of(&c.cfg)).or_default().push(c);
    }
    for group in by_env.values() {
        let cfgs: Vec<TrainConfig> = group.iter().map(|c| c.cfg.clone()).collect();
        let env = envs.get(lab, &cfgs[0])?;
        let runs = lab.ensure_runs(env, &cfgs, false, progress)?;
        let valid = env.evaluator(Split::Validation)?;
        for (c, run) in group.iter().zip(&runs) {
            let m = valid.evaluate(&run.adapter.deltas())?;
            let record = TuningRecord {
                id: c.id.clone(),
                variant: c.variant.clone(),
                task: c.task.clone(),
                point: c.point as i64,
                candidate: c.candidate as i64,
                values: String::new(),
                seed: c.cfg.seed as i64,
                valid_accuracy: m.accuracy,
                valid_loss: m.loss,
                chosen: false,
            };
            write_atomic(&tuning_dir(dir).join(format!("{}.json", c.id)), serde_json::to_string(&record)?.as_bytes())?;
        }
    }
    Ok(())
}

/// The chosen candidate per variant, sweep point and (with `per_task`) task.
#[derive(Clone, Debug, PartialEq)]
pub struct Chosen {
    /// Every candidate, in [`Tune::candidates`] order.
    pub candidates: Vec<Candidate>,
    /// Chosen candidate index by (variant, sweep point, task; `""` for every task).
    pub by: BTreeMap<(String, usize, String), usize>,
}

impl Chosen {
    /// The candidate chosen for `variant` at `point` on `task`.
    pub fn candidate(&self, variant: &str, point: usize, task: &str) -> Option<usize> {
        self.by
            .get(&(variant.to_string(), point, task.to_string()))
            .or_else(|| self.by.get(&(variant.to_string(), point, String::new())))
            .copied()
    }

    /// `cfg` (of `variant` at `point` on `cfg.task`) with the chosen values set.
    pub fn apply(&self, variant: &str, point: usize, cfg: TrainConfig) -> Result<TrainConfig> {
        let i = self.candidate(variant, point, &cfg.task).ok_or_else(|| {
            anyhow!("internal: no tuned choice for variant {variant}, sweep point {point}, task {}", cfg.task)
        })?;
        with_candidate(&cfg, &self.candidates[i])
    }
}

/// Chooses on the records (validation only): per variant and sweep point (and task with
/// `per_task`), the candidate with the highest mean validation accuracy over its runs; equal
/// accuracies go to the lower mean validation loss, then to the earlier candidate.
pub fn choose(tune: &Tune, records: &[TuningRecord]) -> Chosen {
    type Sums = BTreeMap<usize, (f64, f64, usize)>;
    let mut sums: BTreeMap<(String, usize, String), Sums> = BTreeMap::new();
    for r in records {
        let task = if tune.per_task { r.task.clone() } else { String::new() };
        let s = sums.entry((r.variant.clone(), r.point as usize, task)).or_default();
        let e = s.entry(r.candidate as usize).or_insert((0.0, 0.0, 0));
        e.0 += r.valid_accuracy;
        e.1 += r.valid_loss;
        e.2 += 1;
    }
    let by = sums
        .into_iter()
        .map(|(key, by_candidate)| {
            let mut best: Option<(usize, f64, f64)> = None;
            for (c, (acc, loss, n)) in by_candidate {
                let (acc, loss) = (acc / n as f64, loss / n as f64);
                if best.is_none_or(|(_, a, l)| acc > a || (acc == a && loss < l)) {
                    best = Some((c, acc, loss));
                }
            }
            (key, best.map(|(c, _, _)| c).unwrap_or(0))
        })
        .collect();
    Chosen { candidates: tune.candidates(), by }
}

/// Every tuning record of `spec` in `dir` (with the candidate labels and chosen flags filled
/// in), or an error naming how many are missing and the fix.
pub fn records(dir: &Path, spec: &Spec) -> Result<(Vec<TuningRecord>, Chosen)> {
    let Some(tune) = &spec.tune else { bail!("internal: the spec has no [tune]") };
    let cells = tuning_cells(spec)?;
    let found: Vec<Option<TuningRecord>> = cells.iter().map(|c| read_record(dir, &c.id)).collect();
    let missing = found.iter().filter(|r| r.is_none()).count();
    if missing > 0 {
        bail!(
            "{missing} of {} tuning cells are not finished in {}; run `copra-lab analyze` on the spec (it runs the tuning first)",
            cells.len(),
            tuning_dir(dir).display()
        );
    }
    let mut records: Vec<TuningRecord> = found.into_iter().flatten().collect();
    let chosen = choose(tune, &records);
    for r in &mut records {
        r.values = label(&chosen.candidates[r.candidate as usize]);
        r.chosen = chosen.candidate(&r.variant, r.point as usize, &r.task) == Some(r.candidate as usize);
    }
    Ok((records, chosen))
}

/// `spec` with the choices of its finished tuning in `dir` applied (unchanged without
/// `[tune]`); errors when tuning cells are missing.
pub fn resolve(dir: &Path, mut spec: Spec) -> Result<Spec> {
    if spec.tune.is_some() {
        let (_, chosen) = records(dir, &spec)?;
        spec.chosen = Some(std::sync::Arc::new(chosen));
    }
    Ok(spec)
}

/// Writes `tuning.parquet` (every candidate's validation accuracy and the chosen flag) and
/// returns the README section listing the chosen values; nothing without `[tune]`.
pub fn write_tables(dir: &Path, spec: &Spec) -> Result<String> {
    let Some(tune) = &spec.tune else { return Ok(String::new()) };
    let (records, chosen) = records(dir, spec)?;
    Table::from_rows(&records).write_parquet(&dir.join("tuning.parquet"))?;
    let mut s = String::new();
    let _ = writeln!(s, "## Tuning on validation\n");
    let _ = writeln!(
        s,
        "Chosen on the validation split only (disjoint from the shots and the test set), {}, with the same budget for every variant: {} candidates ({}) × tuning seeds {:?} × {} task(s){}. The test set is evaluated only at the chosen values. Every candidate's validation accuracy: `tuning.parquet`.\n",
        if tune.per_task { "per variant and task" } else { "per variant (mean over tasks)" },
        chosen.candidates.len(),
        tune.axes.iter().map(|a| format!("`{}`", a.key)).collect::<Vec<_>>().join(", "),
        tune.seeds,
        spec.tasks.len(),
        if spec.sweep.is_empty() { String::new() } else { format!(", at each `{}` value", spec.sweep.key) }
    );
    let _ = writeln!(
        s,
        "| variant | task | {}chosen | mean validation accuracy |",
        if spec.sweep.is_empty() { "" } else { "x | " }
    );
    let _ = writeln!(s, "|---|---|{}---|---|", if spec.sweep.is_empty() { "" } else { "---|" });
    for ((variant, point, task), c) in &chosen.by {
        let runs: Vec<f64> = records
            .iter()
            .filter(|r| {
                r.variant == *variant
                    && r.point as usize == *point
                    && r.candidate as usize == *c
                    && (task.is_empty() || r.task == *task)
            })
            .map(|r| r.valid_accuracy)
            .collect();
        let mean = runs.iter().sum::<f64>() / runs.len().max(1) as f64;
        let x = if spec.sweep.is_empty() { String::new() } else { format!("{} | ", spec.x(*point)) };
        let task = if task.is_empty() { "all" } else { task };
        let _ = writeln!(s, "| `{variant}` | {task} | {x}`{}` | {mean:.4} |", label(&chosen.candidates[*c]));
    }
    s.push('\n');
    Ok(s)
}

/// Parses the spec's `[tune]` table (`None` without one) and checks every candidate on every
/// variant and sweep point now, not mid-run. Errors are one line naming the key's line.
pub fn parse_section(
    text: &str,
    table: Option<&toml::Table>,
    seeds: &[u64],
    sweep_key: &str,
    variants: &[Variant],
) -> Result<Option<Tune>> {
    let Some(table) = table else { return Ok(None) };
    let at = |key: &str, msg: String| anyhow!("line {}: {key}: {msg}", super::spec::line_in(text, "tune", key));
    let tune = Tune::parse(table, seeds, sweep_key, &at)?;
    for c in tune.candidates() {
        for v in variants {
            for cfg in &v.points {
                with_candidate(cfg, &c)
                    .map_err(|e| at(&c[0].0, format!("candidate {} (variant {}): {e}", label(&c), v.name)))?;
            }
        }
    }
    Ok(Some(tune))
}

/// Puts `section` into a report README before its `## Answer` (at the end when it has none).
pub fn insert_section(readme: &mut String, section: &str) {
    if section.is_empty() {
        return;
    }
    match readme.find("\n## Answer") {
        Some(at) => readme.insert_str(at + 1, section),
        None => readme.push_str(section),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{write_idx_images, write_idx_labels};
    use crate::study::{analyze, cells, CellKind};

    /// Two variants tuned over lr × steps on one task; `TASK` is replaced per test.
    const SPEC: &str = r#"
name = "tuned"
question = "Does tuning on validation run?"
baseline = "lora"
seeds = [1, 2]
tasks = ["TASK"]

[base]
steps = 4
shots = 4
test_size = 30
valid_size = 12
batch_size = 8

[[variant]]
name = "lora"
method = "lora"

[[variant]]
name = "copra"
method = "copra"
p0 = 0.1

[tune]
lr = [1e-4, 2e-2]
steps = [2, 4]
seeds = [7]

[measure.multitask]
tasks = ["TASK", "hue"]
operators = ["factor", "task-arithmetic"]
lambda_grid = [0.3, 1.0]
"#;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("copra-tune-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// A learnable 3-class IDX task: class c is a bright band at row 2c..2c+2 of an 8×8 image,
    /// with per-image noise; 30 training and 20 test images per class. `test_shift` relabels
    /// every test image `c → c + shift (mod 3)`.
    fn write_idx_task(dir: &Path, test_shift: u8) {
        std::fs::create_dir_all(dir).unwrap();
        for (prefix, n, shift) in [("train", 90usize, 0u8), ("t10k", 60, test_shift)] {
            let mut px = Vec::new();
            for i in 0..n {
                let c = i % 3;
                for p in 0..64 {
                    let band = (p / 8) / 2 == c;
                    let h = crate::data::mix_seed(&[i as u64, p as u64, (prefix == "t10k") as u64]);
                    let noise = (h % 100) as u8;
                    px.push(if band { 100 + noise } else { 40 + noise });
                }
            }
            let labels: Vec<u8> = (0..n).map(|i| ((i % 3) as u8 + shift) % 3).collect();
            write_idx_images(&dir.join(format!("{prefix}-images-idx3-ubyte")), n, 8, 8, &px, false).unwrap();
            write_idx_labels(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &labels, false).unwrap();
        }
    }

    fn spec_on(task: &str, text: &str) -> Spec {
        Spec::parse(&text.replace("TASK", task)).unwrap()
    }

    #[test]
    fn every_variant_gets_the_same_tuning_budget() {
        let spec = spec_on("lighting", SPEC);
        let tune = spec.tune.as_ref().unwrap();
        assert_eq!(tune.seeds, vec![7]);
        assert_eq!(tune.candidates().len(), 4);
        assert_eq!(label(&tune.candidates()[1]), "lr=0.0001 steps=4");
        let all = tuning_cells(&spec).unwrap();
        assert_eq!(all.len(), 2 * 4);
        let budget = |v: &str| -> Vec<(String, usize, u64)> {
            all.iter().filter(|c| c.variant == v).map(|c| (c.task.clone(), c.candidate, c.cfg.seed)).collect()
        };
        assert_eq!(budget("lora"), budget("copra"));
        for c in &all {
            let cand = &tune.candidates()[c.candidate];
            assert_eq!(
                (c.cfg.lr, c.cfg.steps as i64),
                (cand[0].1.as_float().unwrap(), cand[1].1.as_integer().unwrap())
            );
        }
        // Two tasks, one choice per variant unless per_task: the same budget for both ways.
        let spec2 = spec_on("lighting", &SPEC.replace("tasks = [\"TASK\"]", "tasks = [\"lighting\", \"hue\"]"));
        let cells2 = tuning_cells(&spec2).unwrap();
        assert_eq!(cells2.len(), 2 * 2 * 4);
        assert_eq!(
            cells2.iter().filter(|c| c.variant == "lora").count(),
            cells2.iter().filter(|c| c.variant == "copra").count()
        );
    }

    #[test]
    fn the_cost_guard_counts_the_tuning_runs() {
        let cheap = spec_on("lighting", SPEC);
        crate::study::check_costs(&cheap, false).unwrap();
        // Only a tuning candidate is long: the guard still sees it before any work.
        let long = spec_on("lighting", &SPEC.replace("steps = [2, 4]", "steps = [2, 20000]"));
        let err = crate::study::check_costs(&long, false).unwrap_err().to_string();
        assert!(err.contains("steps"), "{err}");
        crate::study::check_costs(&long, true).unwrap();
    }

    #[test]
    fn bad_tune_sections_get_one_line_errors_with_key_and_line() {
        for (replace, with, needle) in [
            ("seeds = [7]", "seeds = [7, 7]", "repeat"),
            ("lr = [1e-4, 2e-2]", "lr = [1e-4, 1e-4]", "listed twice"),
            ("lr = [1e-4, 2e-2]", "lr = 1e-4", "list of candidate values"),
            ("lr = [1e-4, 2e-2]", "lr = [-1.0, 2e-2]", "candidate lr=-1.0"),
            ("lr = [1e-4, 2e-2]", "seed = [1, 2]", "the grid sets"),
            ("lr = [1e-4, 2e-2]", "lr = [1e-4]\nper_task = 3", "true or false"),
        ] {
            let text = SPEC.replace("TASK", "lighting").replace(replace, with);
            let err = Spec::parse(&text).unwrap_err().to_string();
            assert!(err.starts_with("line ") && err.contains(needle), "{with}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        let swept = SPEC.replace("TASK", "lighting") + "\n[sweep]\nkey = \"lr\"\nvalues = [1e-3]\n";
        let err = Spec::parse(&swept).unwrap_err().to_string();
        assert!(err.contains("swept key"), "{err}");
    }

    fn record(variant: &str, task: &str, candidate: i64, acc: f64) -> TuningRecord {
        TuningRecord {
            id: format!("{variant}-{task}-{candidate}"),
            variant: variant.into(),
            task: task.into(),
            point: 0,
            candidate,
            values: String::new(),
            seed: 7,
            valid_accuracy: acc,
            valid_loss: 1.0,
            chosen: false,
        }
    }

    #[test]
    fn the_choice_follows_mean_validation_accuracy_per_variant_or_task_and_ties_go_first() {
        let mut tune = Tune {
            axes: vec![Axis { key: "lr".into(), values: vec![1e-3.into(), 2e-3.into(), 4e-3.into()] }],
            seeds: vec![1],
            per_task: false,
        };
        let records = vec![
            record("a", "x", 0, 0.5),
            record("a", "y", 0, 0.5),
            record("a", "x", 1, 0.9),
            record("a", "y", 1, 0.2),
            record("a", "x", 2, 0.6),
            record("a", "y", 2, 0.6),
            record("b", "x", 0, 0.4),
            record("b", "y", 0, 0.4),
            record("b", "x", 1, 0.4),
            record("b", "y", 1, 0.4),
            record("b", "x", 2, 0.3),
            record("b", "y", 2, 0.5),
        ];
        let c = choose(&tune, &records);
        // a: means 0.5, 0.55, 0.6 → candidate 2; b: 0.4, 0.4, 0.4 at equal loss → the first.
        assert_eq!((c.candidate("a", 0, "x"), c.candidate("b", 0, "y")), (Some(2), Some(0)));
        // Equal accuracy: the lower validation loss wins.
        let mut lower = records.clone();
        lower.iter_mut().filter(|r| r.variant == "b" && r.candidate == 1).for_each(|r| r.valid_loss = 0.5);
        assert_eq!(choose(&tune, &lower).candidate("b", 0, "y"), Some(1));
        tune.per_task = true;
        let c = choose(&tune, &records);
        assert_eq!((c.candidate("a", 0, "x"), c.candidate("a", 0, "y")), (Some(1), Some(2)));
        assert_eq!(c.candidate("b", 0, "y"), Some(2));
        let cfg = c.apply("a", 0, TrainConfig { task: "x".into(), ..TrainConfig::default() }).unwrap();
        assert_eq!(cfg.lr, 2e-3);
    }

    #[test]
    fn tuning_reads_validation_never_test_labels_and_the_grid_takes_the_choices() {
        let root = scratch("e2e");
        let lab = Lab::open("builtin", &root.join("runs")).unwrap();
        let run = |shift: u8, name: &str| {
            let data = root.join(format!("data-{name}"));
            write_idx_task(&data, shift);
            let task = format!("idx:{}", data.display());
            let spec = spec_on(&task, SPEC);
            let out = root.join(name);
            let s = analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
            assert!(s.report.is_some());
            let (records, chosen) = records(&out, &spec).unwrap();
            (spec, out, records, chosen)
        };
        let (spec, out, recs, chosen) = run(0, "plain");
        let (_, out_perm, recs_perm, chosen_perm) = run(1, "test-permuted");
        for r in &recs {
            eprintln!(
                "tuning {} {}: validation accuracy {:.3}, loss {:.4}{}",
                r.variant,
                r.values,
                r.valid_accuracy,
                r.valid_loss,
                if r.chosen { " (chosen)" } else { "" }
            );
        }
        // Every test label changed, yet the validation scores and the choices are the same bits.
        assert_eq!(recs.len(), 2 * 4);
        let scores = |r: &[TuningRecord]| r.iter().map(|r| (r.valid_accuracy.to_bits(), r.chosen)).collect::<Vec<_>>();
        assert_eq!(scores(&recs), scores(&recs_perm));
        assert_eq!(chosen, chosen_perm);
        // ... while the test accuracies of the grid did change (the permutation was read there).
        let test_acc = |dir: &Path| {
            let m = Table::read_parquet(&dir.join("measurements.parquet")).unwrap();
            let metric = m.column("metric").unwrap().str().unwrap().clone();
            let value = m.column("value").unwrap().f64().unwrap().clone();
            metric
                .iter()
                .zip(value.iter())
                .filter(|(k, _)| *k == Some("test_accuracy"))
                .map(|(_, v)| v.unwrap())
                .collect::<Vec<f64>>()
        };
        assert_ne!(test_acc(&out), test_acc(&out_perm));
        // The grid's runs (test evaluated) are at the chosen values only.
        let resolved = resolve(&out, spec.clone()).unwrap();
        for c in cells(&resolved).unwrap() {
            if let CellKind::Run { cfg } = &c.kind {
                let i = chosen.candidate(&c.variant, 0, &cfg.task).unwrap();
                assert_eq!(with_candidate(cfg, &chosen.candidates[i]).unwrap(), *cfg, "{}", c.id);
            }
        }
        // The report lists the choices and writes every candidate's validation accuracy.
        let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
        assert!(readme.contains("## Tuning on validation") && readme.contains("| `copra` | all |"), "{readme}");
        let t = Table::read_parquet(&out.join("tuning.parquet")).unwrap();
        assert_eq!(t.height(), recs.len());
        let n_chosen = t.column("chosen").unwrap().bool().unwrap().iter().filter(|b| *b == Some(true)).count();
        assert_eq!(n_chosen, 2, "one chosen candidate per variant");
        // The multi-task λ is chosen from the grid on validation and reported.
        let m = Table::read_parquet(&out.join("measurements.parquet")).unwrap();
        let metrics: Vec<String> =
            m.column("metric").unwrap().str().unwrap().iter().map(|v| v.unwrap_or_default().to_string()).collect();
        assert!(metrics.iter().any(|x| x == "chosen_lambda"), "{metrics:?}");
        // A damaged or lost tuning record is redone; a missing one stops the report.
        let first = tuning_dir(&out).join(format!("{}.json", recs[0].id));
        std::fs::remove_file(&first).unwrap();
        assert!(crate::study::report::write_report(&out)
            .unwrap_err()
            .to_string()
            .contains("tuning cells are not finished"));
        analyze(&lab, &spec, &out, Shard::parse("1/2").unwrap(), &Progress::hidden()).unwrap();
        assert!(first.is_file(), "a shard runs the missing tuning cells it does not own");
        let _ = std::fs::remove_dir_all(&root);
    }
}
