//! Analysis specs: the TOML file that names a grid of runs (tasks × variants × sweep × seeds)
//! and the measurements to take on it. Parsing checks every key; errors name the key and its
//! line.

use crate::train::{Method, TrainConfig};
use anyhow::{anyhow, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// A parsed, validated analysis spec.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Report folder name (`reports/<name>`).
    pub name: String,
    /// The question the analysis answers (README heading text).
    pub question: String,
    /// How to scale the grid up (README text).
    pub scale_up: String,
    /// The variant every other one is compared against, paired over seeds.
    pub baseline: String,
    /// Run seeds.
    pub seeds: Vec<u64>,
    /// Task names.
    pub tasks: Vec<String>,
    /// Variants, in spec order.
    pub variants: Vec<Variant>,
    /// The swept training key and its values (one point with an empty key when none).
    pub sweep: Sweep,
    /// What to measure.
    pub measures: Measures,
    /// Report options.
    pub report: ReportOptions,
    /// The spec's text, copied into the report folder.
    pub text: String,
}

/// A named training variant: the base config with some keys overridden.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Name used in tables.
    pub name: String,
    /// The overrides as written (for the README).
    pub overrides: String,
    /// The variant's config before the sweep and the seed are applied.
    pub config: toml::Table,
}

/// One swept training key (for example `steps` or `lr`) and its values.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The `TrainConfig` key (`lora.rank` for nested keys); empty for no sweep.
    pub key: String,
    /// Its values, as numbers (the x axis of the figures).
    pub values: Vec<f64>,
    /// The values as written.
    raw: Vec<toml::Value>,
}

impl Sweep {
    /// Number of sweep points (1 without a sweep).
    pub fn len(&self) -> usize {
        self.values.len().max(1)
    }

    /// True when there is no sweep.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }
}

/// Every-other-block (and other structured) pruning of each run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    /// Structure names: `every-other-even`, `every-other-odd`, `lower-third`, `middle-third`,
    /// `upper-third`.
    pub structures: Vec<String>,
}

/// Merges of k seeds at given weights, in factor and delta space.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// Weight lists: `[1, 1]` is the 1:1 merge of two seeds, `[1, 2]` the 1:2 merge,
    /// `[1, 1, 1]` the 1:1:1 merge of three. Replicate i merges seeds i, i+1, … (cyclically).
    pub weights: Vec<Vec<f64>>,
    /// `factor` (average A and B) and / or `delta` (average ΔW).
    #[serde(default = "both_spaces")]
    pub spaces: Vec<String>,
}

/// Loss and error barriers on the linear path between two seeds.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BarrierSpec {
    /// Points on the path, endpoints included (at least 3).
    #[serde(default = "default_points")]
    pub points: usize,
    /// `factor` and / or `delta`.
    #[serde(default = "both_spaces")]
    pub spaces: Vec<String>,
}

/// Multi-task merging: one adapter per task (same variant and seed), merged by each operator.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskSpec {
    /// Tasks merged (default: the spec's tasks).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Merge operators (`copra-lab multitask --help` lists them).
    pub operators: Vec<String>,
}

/// One client heterogeneity setting of a federated simulation.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HeteroSpec {
    /// Name used in tables.
    pub name: String,
    /// Per-client LoRA ranks, cycled over clients (empty: the config's rank).
    #[serde(default)]
    pub ranks: Vec<usize>,
    /// Per-client number of top blocks adapted, cycled over clients (empty: every block).
    #[serde(default)]
    pub top_blocks: Vec<usize>,
}

/// One-round federated learning with heterogeneous clients.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FederatedSpec {
    /// Clients K.
    pub clients: usize,
    /// Local optimiser steps of each client.
    pub local_steps: usize,
    /// Splits: `iid` or `dirichlet:ALPHA`.
    pub splits: Vec<String>,
    /// Smallest client of a Dirichlet split.
    #[serde(default = "default_min_size")]
    pub min_size: usize,
    /// Client settings.
    pub heterogeneity: Vec<HeteroSpec>,
    /// Server aggregators, each applied to the same uploads.
    pub aggregators: Vec<String>,
}

/// Training-loss curves from each run's log, every `every` steps.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CurvesSpec {
    /// Keep one point every this many steps (the mean of the window).
    pub every: usize,
}

/// The multilinear extension F(p) = E_{S∼Bernoulli(p)}[L(S)] of the training loss over
/// blocks, at the end of training, against the all-on loss L(N).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MultilinearSpec {
    /// Participation rates p in (0, 1).
    pub p: Vec<f64>,
    /// Sampled coalitions per rate.
    pub samples: usize,
}

/// Checkpoints along training (the run is retrained with snapshots): at each fraction of T,
/// the multilinear extension F(p(t)) of the training loss at the schedule's current rate
/// against the all-on loss, and per-block Shapley values of the training-loss game.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrajectorySpec {
    /// Variants to follow (default: all).
    #[serde(default)]
    pub variants: Vec<String>,
    /// Fractions of T in (0, 1] where the adapter is taken.
    pub fractions: Vec<f64>,
    /// Sampled coalitions for F(p(t)).
    pub samples: usize,
    /// Shapley estimator (`copra-lab shapley --help` lists them).
    #[serde(default = "default_estimator")]
    pub estimator: String,
    /// Evaluations per Shapley estimate.
    pub budget: usize,
}

fn default_estimator() -> String {
    "permutation".into()
}

/// What to measure on the grid (single-task accuracy is always measured).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Measures {
    /// Structured pruning of every run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneSpec>,
    /// Merges of seeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merge: Option<MergeSpec>,
    /// Barriers between two seeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub barrier: Option<BarrierSpec>,
    /// Multi-task merging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multitask: Option<MultitaskSpec>,
    /// Federated simulations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federated: Option<FederatedSpec>,
    /// Loss curves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub curves: Option<CurvesSpec>,
    /// The multilinear-extension gap.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub multilinear: Option<MultilinearSpec>,
    /// Checkpoints along training.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trajectory: Option<TrajectorySpec>,
}

/// Report options.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportOptions {
    /// `measure/setting/metric` keys shown in the README's tables and figures (default: every
    /// key of the first measure).
    #[serde(default)]
    pub headline: Vec<String>,
    /// Holm families: `quantity` (default; one per `measure/setting/metric`) or `metric` (one per
    /// `measure/metric`, pooling the settings, for specs whose settings are the question).
    #[serde(default)]
    pub holm: HolmFamily,
}

/// How headline comparisons are grouped for the Holm adjustment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HolmFamily {
    /// One family per `measure/setting/metric`.
    #[default]
    Quantity,
    /// One family per `measure/metric`.
    Metric,
}

fn both_spaces() -> Vec<String> {
    vec!["factor".into(), "delta".into()]
}
fn default_points() -> usize {
    11
}
fn default_min_size() -> usize {
    8
}

/// The file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    name: String,
    question: String,
    #[serde(default)]
    scale_up: String,
    baseline: String,
    seeds: Vec<u64>,
    tasks: Vec<String>,
    #[serde(default)]
    base: toml::Table,
    variant: Vec<toml::Table>,
    sweep: Option<SweepFile>,
    #[serde(default)]
    measure: Measures,
    #[serde(default)]
    report: ReportOptions,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepFile {
    key: String,
    values: Vec<toml::Value>,
}

/// The 1-based line of byte offset `at` in `text`.
fn line_at(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// The line where `key` is first assigned (or its table opens); the first line when not found.
pub fn line_of(text: &str, key: &str) -> usize {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(leaf).is_some_and(|r| r.trim_start().starts_with('='))
                || l.starts_with(&format!("[{key}]"))
                || l.starts_with(&format!("[[{key}]]"))
        })
        .map(|i| i + 1)
        .unwrap_or(1)
}

impl Spec {
    /// Reads and validates the spec at `path`.
    pub fn read(path: &Path) -> Result<Spec> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow!("cannot read analysis spec {}: {e}; check the path", path.display()))?;
        Spec::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Parses and validates a spec's text. Errors are one line: `line N: key: problem; fix`.
    pub fn parse(text: &str) -> Result<Spec> {
        let file: SpecFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_at(text, s.start)).unwrap_or(1);
            anyhow!("line {line}: {}", e.message().replace('\n', " ").trim())
        })?;
        let at = |key: &str, msg: String| anyhow!("line {}: {key}: {msg}", line_of(text, key));
        if file.name.is_empty() || !file.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(at(
                "name",
                format!("'{}' must be a non-empty folder name of letters, digits, - and _", file.name),
            ));
        }
        if file.seeds.is_empty() {
            return Err(at("seeds", "the grid is empty: list at least one seed, e.g. seeds = [1, 2, 3]".into()));
        }
        if has_duplicates(&file.seeds) {
            return Err(at("seeds", "seeds repeat; list each seed once".into()));
        }
        if file.tasks.is_empty() {
            return Err(at("tasks", "the grid is empty: list at least one task, e.g. tasks = [\"lighting\"]".into()));
        }
        if file.variant.is_empty() {
            return Err(at("variant", "the grid is empty: add at least one [[variant]] with a name".into()));
        }
        let sweep = match file.sweep {
            None => Sweep { key: String::new(), values: Vec::new(), raw: Vec::new() },
            Some(s) => {
                if s.values.is_empty() {
                    return Err(at("values", format!("the sweep over '{}' has no values; list at least one", s.key)));
                }
                let values = s
                    .values
                    .iter()
                    .map(|v| match v {
                        toml::Value::Integer(i) => Ok(*i as f64),
                        toml::Value::Float(f) => Ok(*f),
                        other => Err(at("values", format!("sweep values must be numbers, got {other}"))),
                    })
                    .collect::<Result<Vec<f64>>>()?;
                Sweep { key: s.key, values, raw: s.values }
            }
        };
        let mut variants = Vec::new();
        for v in &file.variant {
            let mut table = v.clone();
            let name = match table.remove("name") {
                Some(toml::Value::String(s)) if !s.is_empty() => s,
                _ => return Err(at("variant", "every [[variant]] needs a name = \"...\"".into())),
            };
            if variants.iter().any(|x: &Variant| x.name == name) {
                return Err(at("variant", format!("variant name '{name}' repeats; names must be unique")));
            }
            let overrides = table.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ");
            let mut config = file.base.clone();
            deep_merge(&mut config, table);
            let variant = Variant { name, overrides, config };
            // Check every sweep point and seed builds a valid config now, not mid-run.
            for point in 0..sweep.len() {
                variant_config(&variant, &sweep, point, file.seeds[0]).map_err(|e| {
                    let msg = e.to_string();
                    let key = backticked(&msg).unwrap_or_else(|| first_key(v));
                    at(&key, msg)
                })?;
            }
            variants.push(variant);
        }
        if !variants.iter().any(|v| v.name == file.baseline) {
            let names: Vec<&str> = variants.iter().map(|v| v.name.as_str()).collect();
            return Err(at(
                "baseline",
                format!("'{}' is not a variant; use one of {}", file.baseline, names.join(", ")),
            ));
        }
        check_measures(&file.measure, file.seeds.len(), &|k, m| at(k, m))?;
        if let Some(t) = &file.measure.trajectory {
            if let Some(bad) = t.variants.iter().find(|n| !variants.iter().any(|v| &v.name == *n)) {
                return Err(at("variants", format!("'{bad}' is not a variant of this spec")));
            }
        }
        Ok(Spec {
            name: file.name,
            question: file.question.trim().to_string(),
            scale_up: file.scale_up.trim().to_string(),
            baseline: file.baseline,
            seeds: file.seeds,
            tasks: file.tasks,
            variants,
            sweep,
            measures: file.measure,
            report: file.report,
            text: text.to_string(),
        })
    }

    /// The config of `variant` at sweep point `point` with run seed `seed` on `task`.
    pub fn config(&self, variant: &Variant, point: usize, seed: u64, task: &str) -> Result<TrainConfig> {
        let mut cfg = variant_config(variant, &self.sweep, point, seed)?;
        cfg.task = task.to_string();
        Ok(cfg)
    }

    /// The x value of sweep point `point` (NaN without a sweep).
    pub fn x(&self, point: usize) -> f64 {
        self.sweep.values.get(point).copied().unwrap_or(f64::NAN)
    }
}

/// The first `name` in backticks of a serde message (the offending field).
fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// The first key of a variant table, for error lines.
fn first_key(v: &toml::Table) -> String {
    v.keys().find(|k| *k != "name").cloned().unwrap_or_else(|| "variant".into())
}

fn has_duplicates(xs: &[u64]) -> bool {
    let mut s = xs.to_vec();
    s.sort_unstable();
    s.windows(2).any(|w| w[0] == w[1])
}

/// Merges `over` into `base`, descending into tables.
fn deep_merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => deep_merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Builds the `TrainConfig` of a variant at a sweep point and seed (task left at the default).
fn variant_config(variant: &Variant, sweep: &Sweep, point: usize, seed: u64) -> Result<TrainConfig> {
    // Start from the defaults so that partial nested tables (`lora = { rank = 4 }`) work.
    let mut table = toml::Table::try_from(TrainConfig::default())?;
    deep_merge(&mut table, variant.config.clone());
    if !sweep.is_empty() {
        let mut path: Vec<&str> = sweep.key.split('.').collect();
        let leaf = path.pop().unwrap_or_default();
        let mut t = &mut table;
        for p in path {
            t = t
                .entry(p.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()))
                .as_table_mut()
                .ok_or_else(|| anyhow!("sweep key '{}': '{p}' is not a table", sweep.key))?;
        }
        t.insert(leaf.to_string(), sweep.raw[point].clone());
    }
    if let Some(toml::Value::String(m)) = table.get("method") {
        let method = Method::parse(m)?;
        table.insert("method".into(), toml::Value::try_from(method)?);
    }
    table.insert("seed".into(), toml::Value::Integer(seed as i64));
    let cfg: TrainConfig = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| anyhow!("{}", e.message().replace('\n', " ").trim()))?;
    cfg.validate()?;
    Ok(cfg)
}

/// Checks the measurement options; `at(key, message)` builds the error.
fn check_measures(m: &Measures, seeds: usize, at: &dyn Fn(&str, String) -> anyhow::Error) -> Result<()> {
    if let Some(p) = &m.prune {
        for s in &p.structures {
            crate::study::measure::structure_named(s).map_err(|e| at("structures", e.to_string()))?;
        }
    }
    let spaces_ok = |spaces: &[String], key: &str| -> Result<()> {
        if spaces.is_empty() {
            return Err(at(key, "list at least one space: factor or delta".into()));
        }
        for s in spaces {
            crate::connectivity::interpolate::Space::parse(s).map_err(|e| at(key, e.to_string()))?;
        }
        Ok(())
    };
    if let Some(mg) = &m.merge {
        if mg.weights.is_empty() {
            return Err(at("weights", "list at least one weight list, e.g. weights = [[1, 1]]".into()));
        }
        for w in &mg.weights {
            if w.len() < 2 || w.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return Err(at("weights", format!("{w:?}: a merge needs at least two positive weights")));
            }
            if w.len() > seeds {
                return Err(at("weights", format!("{w:?} merges {} seeds but the grid has {seeds}", w.len())));
            }
        }
        spaces_ok(&mg.spaces, "spaces")?;
    }
    if let Some(b) = &m.barrier {
        if b.points < 3 {
            return Err(at("points", format!("{}: a barrier needs at least 3 points on the path", b.points)));
        }
        if seeds < 2 {
            return Err(at("barrier", "a barrier needs at least two seeds".into()));
        }
        spaces_ok(&b.spaces, "spaces")?;
    }
    if let Some(mt) = &m.multitask {
        if mt.operators.is_empty() {
            return Err(at("operators", "list at least one merge operator, e.g. [\"factor\"]".into()));
        }
        for o in &mt.operators {
            crate::merge::registry::parse(o).map_err(|e| at("operators", e.to_string()))?;
        }
    }
    if let Some(f) = &m.federated {
        if f.clients == 0 || f.local_steps == 0 {
            return Err(at("clients", "clients and local_steps must be at least 1".into()));
        }
        if f.splits.is_empty() || f.heterogeneity.is_empty() || f.aggregators.is_empty() {
            return Err(at("federated", "splits, heterogeneity and aggregators each need at least one entry".into()));
        }
        for s in &f.splits {
            crate::study::measure::split_named(s, f.min_size).map_err(|e| at("splits", e.to_string()))?;
        }
        for o in &f.aggregators {
            crate::merge::registry::parse(o).map_err(|e| at("aggregators", e.to_string()))?;
        }
    }
    if let Some(c) = &m.curves {
        if c.every == 0 {
            return Err(at("every", "must be at least 1".into()));
        }
    }
    if let Some(t) = &m.trajectory {
        if t.fractions.is_empty() || t.fractions.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err(at("fractions", "list fractions of T in (0, 1], e.g. [0.25, 0.5, 1.0]".into()));
        }
        if t.samples == 0 || t.budget == 0 {
            return Err(at("trajectory", "samples and budget must be at least 1".into()));
        }
        crate::shapley::registry::parse(&t.estimator).map_err(|e| at("estimator", e.to_string()))?;
    }
    if let Some(ml) = &m.multilinear {
        if ml.samples == 0 || ml.p.iter().any(|p| !(*p > 0.0 && *p < 1.0)) {
            return Err(at("multilinear", "p values must be in (0, 1) and samples at least 1".into()));
        }
    }
    Ok(())
}
