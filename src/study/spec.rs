//! Analysis specs: the TOML file that names a grid of runs (tasks × variants × sweep × seeds)
//! and the measurements to take on it. Parsing checks every key; errors name the key and its
//! line.

use super::measure::{accuracy::Accuracy, Measure, ParseContext, MEASURES};
use crate::runs::sanitize;
use crate::train::{Method, TrainConfig};
use anyhow::{anyhow, Result};
use serde::Deserialize;
use std::path::Path;
use std::sync::Arc;

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
    /// The groups of seeds merges and barriers are taken on.
    pub groups: GroupLayout,
    /// Which data draw (shots and test items) each run gets.
    pub data_draw: DataDraw,
    /// Task names.
    pub tasks: Vec<String>,
    /// Variants, in spec order.
    pub variants: Vec<Variant>,
    /// The swept training key and its values (one point with an empty key when none).
    pub sweep: Sweep,
    /// What to measure: single-task accuracy first, then the spec's `[measure.*]` tables in
    /// the order of [`MEASURES`].
    pub measures: Vec<Arc<dyn Measure>>,
    /// Report options.
    pub report: ReportOptions,
    /// The spec's text, copied into the report folder.
    pub text: String,
    /// The `[tune]` section: training keys chosen on validation ([`super::tune`]).
    pub tune: Option<super::tune::Tune>,
    /// The tuned choices, once the tuning cells have run ([`super::tune::resolve`]); every
    /// config of the grid takes them ([`Spec::config`]).
    pub chosen: Option<Arc<super::tune::Chosen>>,
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
    /// The variant's training config at each sweep point, built and checked once at parse
    /// time (the seed and task are set per cell).
    pub points: Vec<TrainConfig>,
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

/// Which data draw (training shots and test items) the runs of a grid get.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataDraw {
    /// Each run seed `s` trains and tests on data seed `s`, so a replicate varies the shots and
    /// the test items too (methods stay paired within a draw). The runs of group cells (merges,
    /// barriers) share the fixed draw `data_seed`: they compare runs that differ only in their
    /// training seed, and the test items enter their intervals by the seeds × items procedure.
    #[default]
    Replicate,
    /// Every run uses the one draw `data_seed`.
    Fixed,
}

/// Report options.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportOptions {
    /// `measure/setting/metric` keys shown in the README's tables and figures (default: every
    /// key of the first measure).
    #[serde(default)]
    pub headline: Vec<String>,
    /// The primary comparisons, one per claim (`[[report.primary]]`): Holm adjusts over them
    /// together, and the README's Answer states only what they show. Every other comparison is
    /// exploratory.
    #[serde(default)]
    pub primary: Vec<PrimaryTest>,
    /// `measure/setting/metric` keys also compared at matched fit: regressed on the method and
    /// the endpoint accuracy across tasks and sweep points ([`super::matched_fit`]).
    #[serde(default)]
    pub matched_fit: Vec<String>,
}

/// Which way a claim predicts the variant to differ from the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// The variant's value is predicted above the baseline's.
    Higher,
    /// The variant's value is predicted below the baseline's.
    Lower,
}

/// One primary comparison: a variant against the baseline on one quantity, pooled over tasks
/// (the per-replicate mean over the tasks, so that one test answers one claim).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrimaryTest {
    /// The claim in words, as the Answer states it.
    pub claim: String,
    /// The `measure/setting/metric` compared.
    pub quantity: String,
    /// The variant compared with the baseline.
    pub variant: String,
    /// The variant it is compared against, when not the spec's baseline (for example CopRA
    /// against constant participation at equal mean p: the schedule's shape alone).
    #[serde(default)]
    pub against: Option<String>,
    /// The direction the claim predicts.
    pub expect: Direction,
    /// The tasks pooled (default: every task the quantity is measured on).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// The sweep point compared (default: the mean over every point).
    #[serde(default)]
    pub x: Option<f64>,
}

/// Which groups of seeds the merges and barriers of a grid are taken on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GroupLayout {
    /// Every group of `k` of the `n` seeds (the default): `C(n, k)` evaluations of cached runs.
    #[default]
    All,
    /// The `n` cyclic groups `(i, i+1, …)` of the largest size, each measure reading its first
    /// runs: the layout of grids written before all groups were taken, kept so that their
    /// committed cells can be reported with the seed jackknife. Not for new grids.
    Cyclic,
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
    #[serde(default)]
    groups: GroupLayout,
    #[serde(default)]
    data_draw: DataDraw,
    tasks: Vec<String>,
    #[serde(default)]
    base: toml::Table,
    variant: Vec<toml::Table>,
    sweep: Option<SweepFile>,
    #[serde(default)]
    measure: toml::Table,
    #[serde(default)]
    report: ReportOptions,
    tune: Option<toml::Table>,
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
        crate::util::check_path_kind(path, crate::util::PathKind::File, "analysis spec", "pass a TOML spec file")?;
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
        if let Some(i) = (1..file.tasks.len()).find(|&i| file.tasks[..i].contains(&file.tasks[i])) {
            return Err(at("tasks", format!("task '{}' is listed twice; list each task once", file.tasks[i])));
        }
        // The grid sets these per cell: a value written elsewhere would be silently replaced.
        for (key, from) in [("seed", "seeds = [...]"), ("task", "tasks = [...]")] {
            let in_variant = file.variant.iter().position(|v| v.contains_key(key));
            if file.base.contains_key(key) || in_variant.is_some() {
                let line = match in_variant {
                    Some(i) if !file.base.contains_key(key) => line_in_nth(text, "variant", i, key),
                    _ => line_in(text, "base", key),
                };
                return Err(anyhow!(
                    "line {line}: {key}: the grid sets the run's {key} from `{from}`; remove this {key}"
                ));
            }
            if file.sweep.as_ref().is_some_and(|s| s.key == key) {
                let line = line_in(text, "sweep", "key");
                return Err(anyhow!(
                    "line {line}: key: the grid sets the run's {key} from `{from}`; sweep another key"
                ));
            }
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
                if let Some(i) = (1..values.len()).find(|&i| values[..i].contains(&values[i])) {
                    return Err(at("values", format!("sweep value {} is listed twice; list each once", values[i])));
                }
                Sweep { key: s.key, values, raw: s.values }
            }
        };
        let mut variants = Vec::new();
        for (index, v) in file.variant.iter().enumerate() {
            let mut table = v.clone();
            let name = match table.remove("name") {
                Some(toml::Value::String(s)) if !s.is_empty() => s,
                _ => return Err(at("variant", "every [[variant]] needs a name = \"...\"".into())),
            };
            let line = line_in_nth(text, "variant", index, "name");
            if variants.iter().any(|x: &Variant| x.name == name) {
                return Err(anyhow!("line {line}: name: variant name '{name}' repeats; names must be unique"));
            }
            if let Some(x) = variants.iter().find(|x: &&Variant| sanitize(&x.name) == sanitize(&name)) {
                return Err(anyhow!(
                    "line {line}: name: variant names '{}' and '{name}' are the same in cell ids ('{}'); use names that differ in ASCII letters, digits, - or _",
                    x.name,
                    sanitize(&name)
                ));
            }
            let overrides = table.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ");
            let mut config = file.base.clone();
            deep_merge(&mut config, table);
            let mut variant = Variant { name, overrides, config, points: Vec::new() };
            // Check every sweep point builds a valid config now, not mid-run: first the
            // variant alone (errors name its key, or the base's), then each sweep value.
            let unswept = Sweep { key: String::new(), values: Vec::new(), raw: Vec::new() };
            variant_config(&variant, &unswept, 0, file.seeds[0]).map_err(|e| {
                let msg = e.to_string();
                let key = backticked(&msg)
                    .filter(|k| mentions(&variant.config, k))
                    .or_else(|| named_key(&msg, &variant.config))
                    .unwrap_or_else(|| first_key(v));
                let line = if mentions(v, &key) {
                    line_in_nth(text, "variant", index, &key)
                } else {
                    line_in(text, "base", &key)
                };
                anyhow!("line {line}: {key}: {msg}")
            })?;
            for point in 0..sweep.len() {
                let cfg = variant_config(&variant, &sweep, point, file.seeds[0]).map_err(|e| {
                    let line = line_in(text, "sweep", "values");
                    anyhow!(
                        "line {line}: values: sweep value {} of `{}` (variant {}): {e}",
                        sweep.raw[point],
                        sweep.key,
                        variant.name
                    )
                })?;
                variant.points.push(cfg);
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
        let names: Vec<String> = variants.iter().map(|v| v.name.clone()).collect();
        let measures = parse_measures(text, &file.measure, &file.seeds, &file.tasks, &names)?;
        let known: Vec<&str> = measures.iter().flat_map(|m| m.row_measures()).collect();
        for h in &file.report.headline {
            let parts: Vec<&str> = h.splitn(3, '/').collect();
            if parts.len() != 3 || !known.contains(&parts[0]) {
                let line = line_in(text, "report", "headline");
                return Err(anyhow!(
                    "line {line}: headline: '{h}' is not a measure/setting/metric of this spec; its measures are {} (e.g. \"accuracy//test_accuracy\")",
                    known.join(", ")
                ));
            }
        }
        for q in &file.report.matched_fit {
            let parts: Vec<&str> = q.splitn(3, '/').collect();
            if parts.len() != 3 || !known.contains(&parts[0]) || parts[0] == "accuracy" {
                let line = line_in(text, "report", "matched_fit");
                return Err(anyhow!(
                    "line {line}: matched_fit: '{q}' is not a merge, prune or multitask measure/setting/metric of this spec; its measures are {}",
                    known.join(", ")
                ));
            }
        }
        for (i, p) in file.report.primary.iter().enumerate() {
            let at =
                |key: &str, msg: String| anyhow!("line {}: {key}: {msg}", line_in_nth(text, "report.primary", i, key));
            let parts: Vec<&str> = p.quantity.splitn(3, '/').collect();
            if parts.len() != 3 || !known.contains(&parts[0]) {
                let msg = format!(
                    "'{}' is not a measure/setting/metric of this spec; its measures are {}",
                    p.quantity,
                    known.join(", ")
                );
                return Err(at("quantity", msg));
            }
            let against = p.against.as_ref().unwrap_or(&file.baseline);
            if let Some(a) = p.against.as_ref().filter(|a| !names.contains(a)) {
                return Err(at(
                    "against",
                    format!("'{a}' is not a variant of this spec; use one of {}", names.join(", ")),
                ));
            }
            if &p.variant == against || !names.contains(&p.variant) {
                let msg = format!(
                    "'{}' is not a variant other than the one it is compared against ('{against}'); use one of {}",
                    p.variant,
                    names.join(", ")
                );
                return Err(at("variant", msg));
            }
            if let Some(t) = p.tasks.iter().find(|t| !file.tasks.contains(t) && t.as_str() != "all") {
                return Err(at("tasks", format!("'{t}' is not a task of this spec (or `all` for multi-task rows)")));
            }
            if let Some(x) = p.x {
                if !sweep.values.contains(&x) {
                    return Err(at("x", format!("{x} is not a value of the sweep {:?}", sweep.values)));
                }
            }
            if p.claim.trim().is_empty() {
                return Err(at("claim", "state the claim the test answers, in words".into()));
            }
        }
        let tune = super::tune::parse_section(text, file.tune.as_ref(), &file.seeds, &sweep.key, &variants)?;
        Ok(Spec {
            name: file.name,
            question: file.question.trim().to_string(),
            scale_up: file.scale_up.trim().to_string(),
            baseline: file.baseline,
            seeds: file.seeds,
            groups: file.groups,
            data_draw: file.data_draw,
            tasks: file.tasks,
            variants,
            sweep,
            measures,
            report: file.report,
            text: text.to_string(),
            tune,
            chosen: None,
        })
    }

    /// The config of `variant` at sweep point `point` with run seed `seed` on `task` (with the
    /// tuned choices, once resolved); with [`DataDraw::Replicate`] its data seed is `seed`.
    pub fn config(&self, variant: &Variant, point: usize, seed: u64, task: &str) -> Result<TrainConfig> {
        let cfg = self.group_config(variant, point, seed, task)?;
        let data_seed = if self.data_draw == DataDraw::Replicate { seed } else { cfg.data_seed };
        Ok(TrainConfig { data_seed, ..cfg })
    }

    /// The config of a run of a group cell (merges, barriers): as [`Spec::config`] but always
    /// on the fixed draw `data_seed`, so that a group's runs share their shots and test set.
    pub fn group_config(&self, variant: &Variant, point: usize, seed: u64, task: &str) -> Result<TrainConfig> {
        let base = variant.points.get(point).ok_or_else(|| anyhow!("internal: no sweep point {point}"))?;
        let cfg = TrainConfig { seed, task: task.to_string(), ..base.clone() };
        match &self.chosen {
            Some(chosen) => chosen.apply(&variant.name, point, cfg),
            None => Ok(cfg),
        }
    }

    /// The options of the `[measure.*]` tables as written, as one JSON object in registry
    /// order (`{"prune":{...},"merge":{...}}`): part of every cell id.
    pub fn measures_json(&self) -> Result<String> {
        let mut parts = Vec::new();
        for m in &self.measures {
            if let Some(json) = m.options_json()? {
                parts.push(format!("\"{}\":{json}", m.name()));
            }
        }
        Ok(format!("{{{}}}", parts.join(",")))
    }

    /// The x value of sweep point `point` (NaN without a sweep).
    pub fn x(&self, point: usize) -> f64 {
        self.sweep.values.get(point).copied().unwrap_or(f64::NAN)
    }
}

/// The first `name` in backticks of a serde message (the offending field).
pub(crate) fn backticked(msg: &str) -> Option<String> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(msg[start..start + len].to_string())
}

/// True when `key` is a key of `table` or of a table nested in it.
fn mentions(table: &toml::Table, key: &str) -> bool {
    table.iter().any(|(k, v)| k == key || v.as_table().is_some_and(|t| mentions(t, key)))
}

/// The key of `table` (nested keys included) that `msg` names first as a whole word: the
/// field a range check complains about (`steps must be at least 1`).
fn named_key(msg: &str, table: &toml::Table) -> Option<String> {
    fn keys(table: &toml::Table, out: &mut Vec<String>) {
        for (k, v) in table {
            out.push(k.clone());
            if let Some(t) = v.as_table() {
                keys(t, out);
            }
        }
    }
    let mut all = Vec::new();
    keys(table, &mut all);
    let word = |c: char| c.is_alphanumeric() || c == '_';
    all.into_iter()
        .filter_map(|k| {
            msg.match_indices(k.as_str())
                .find(|(i, _)| {
                    !msg[..*i].chars().next_back().is_some_and(word)
                        && !msg[i + k.len()..].chars().next().is_some_and(word)
                })
                .map(|(i, _)| (i, k))
        })
        .min()
        .map(|(_, k)| k)
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

/// Parses the `[measure.*]` tables with the parsers of [`MEASURES`], in registry order, after
/// the always-taken accuracy. Errors name the key inside its table and that key's line.
fn parse_measures(
    text: &str,
    tables: &toml::Table,
    seeds: &[u64],
    tasks: &[String],
    variants: &[String],
) -> Result<Vec<Arc<dyn Measure>>> {
    if let Some(unknown) = tables.keys().find(|k| !MEASURES.iter().any(|m| m.name == k.as_str())) {
        let known: Vec<&str> = MEASURES.iter().map(|m| m.name).collect();
        return Err(anyhow!(
            "line {}: measure.{unknown}: unknown measure `{unknown}`; use one of {}",
            line_of(text, &format!("measure.{unknown}")),
            known.join(", ")
        ));
    }
    let mut out: Vec<Arc<dyn Measure>> = vec![Arc::new(Accuracy)];
    for info in MEASURES {
        let Some(value) = tables.get(info.name) else { continue };
        let table = format!("measure.{}", info.name);
        let at = |key: &str, msg: String| {
            let name = if key.is_empty() { table.clone() } else { key.to_string() };
            anyhow!("line {}: {name}: {msg}", line_in(text, &table, key))
        };
        let ctx = ParseContext { seeds, tasks, variants, at: &at };
        out.push(Arc::from((info.parse)(value, &ctx)?));
    }
    Ok(out)
}

/// The line of `key` inside the table `table` (e.g. `measure.prune`): the first `key = ` after
/// the table's header (its sub-tables included) and before the next other header; the header's
/// line when the key is not written there; [`line_of`] when the table has no header line.
pub fn line_in(text: &str, table: &str, key: &str) -> usize {
    line_in_nth(text, table, 0, key)
}

/// Like [`line_in`], in the `nth` (0-based) header of `table` (an array of tables such as
/// `[[variant]]`).
pub fn line_in_nth(text: &str, table: &str, nth: usize, key: &str) -> usize {
    let is_header_of = |l: &str| {
        let l = l.trim();
        let name = l.trim_start_matches('[').trim_end_matches(']').trim();
        l.starts_with('[') && (name == table || name.starts_with(&format!("{table}.")))
    };
    let lines: Vec<&str> = text.lines().collect();
    let exact = |l: &str| {
        let l = l.trim();
        l.starts_with('[') && l.trim_start_matches('[').trim_end_matches(']').trim() == table
    };
    let Some(start) = lines.iter().enumerate().filter(|(_, l)| exact(l)).map(|(i, _)| i).nth(nth) else {
        return line_of(text, if key.is_empty() { table } else { key });
    };
    if !key.is_empty() {
        for (i, l) in lines.iter().enumerate().skip(start + 1) {
            let t = l.trim_start();
            if t.starts_with('[') && !is_header_of(t) {
                break;
            }
            if t.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with('=')) {
                return i + 1;
            }
        }
    }
    start + 1
}
