//! Grid cells: the units of work of an analysis. A spec expands into a fixed, ordered list of
//! cells; each has a stable id (its content hashed in) and produces measurement rows. Run and
//! group cells are shared by every measure of that [`Unit`]; measures of [`Unit::Own`] lay out
//! cells of their own.

use super::measure::{Input, Measure, OwnCell, Rows, Tag, Unit};
use super::spec::{GroupLayout, Spec};
use crate::lab::{Lab, Run, TaskEnv, TaskEnvKey};
use crate::progress::Progress;
use crate::runs::sanitize;
use crate::train::TrainConfig;
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

/// What a cell does.
#[derive(Clone, Debug)]
pub enum CellKind {
    /// Train (or reuse) one run and take every [`Unit::Run`] measure on it.
    Run {
        /// The run.
        cfg: TrainConfig,
    },
    /// Take every [`Unit::Group`] measure of this size on a group of seeds (replicate = the first
    /// seed; the rows' `seeds` column names the group).
    Group {
        /// The runs, in merge order.
        cfgs: Vec<TrainConfig>,
    },
    /// One cell of a [`Unit::Own`] measure.
    Own {
        /// Index of the measure in [`Spec::measures`].
        measure: usize,
        /// The cell as the measure laid it out.
        cell: OwnCell,
    },
}

impl CellKind {
    /// The cached runs the cell reads.
    fn runs(&self) -> &[TrainConfig] {
        match self {
            CellKind::Run { cfg } => std::slice::from_ref(cfg),
            CellKind::Group { cfgs } => cfgs,
            CellKind::Own { cell, .. } => &cell.runs,
        }
    }

    /// Everything that defines the cell's work, canonically (hashed into its id): each config
    /// as JSON with its default-valued fields left out.
    fn what(&self) -> String {
        match self {
            CellKind::Run { cfg } => format!("run {}", config_json(cfg)),
            CellKind::Group { cfgs } => format!("group {}", configs_json(cfgs)),
            CellKind::Own { cell, .. } => cell.what.clone(),
        }
    }

    /// The description ids hashed before they were canonical (the configs' `Debug` forms, with
    /// the fields added after the first ids left out at their defaults); only to find report
    /// folders written then ([`super::store::migrate_legacy`]).
    fn legacy_what(&self) -> String {
        let what = match self {
            CellKind::Run { cfg } => format!("Run {{ cfg: {cfg:?} }}"),
            CellKind::Group { cfgs } => format!("Group {{ cfgs: {cfgs:?} }}"),
            CellKind::Own { cell, .. } => cell.legacy_what.clone(),
        };
        late_fields_at_default().iter().fold(what, |w, late| w.replace(late, ""))
    }
}

/// A config as canonical JSON: keys sorted, fields at their default left out (recursively), so
/// a field added to [`TrainConfig`] later leaves every existing cell id as it is.
pub fn config_json(cfg: &TrainConfig) -> String {
    let value = serde_json::to_value(cfg).unwrap_or_default();
    let default = serde_json::to_value(TrainConfig::default()).unwrap_or_default();
    without_defaults(value, &default).to_string()
}

/// [`config_json`] of each config, as a JSON list.
pub fn configs_json(cfgs: &[TrainConfig]) -> String {
    format!("[{}]", cfgs.iter().map(config_json).collect::<Vec<_>>().join(","))
}

/// `value` with every object field equal to the same field of `default` removed.
fn without_defaults(value: serde_json::Value, default: &serde_json::Value) -> serde_json::Value {
    match (value, default) {
        (serde_json::Value::Object(fields), serde_json::Value::Object(defaults)) => serde_json::Value::Object(
            fields
                .into_iter()
                .filter(|(k, v)| defaults.get(k) != Some(v))
                .map(|(k, v)| {
                    let v = match defaults.get(&k) {
                        Some(d) => without_defaults(v, d),
                        None => v,
                    };
                    (k, v)
                })
                .collect(),
        ),
        (value, _) => value,
    }
}

/// One cell of the grid.
#[derive(Clone, Debug)]
pub struct Cell {
    /// Stable id: readable parts plus a hash of everything that defines the cell.
    pub id: String,
    /// Task (`all` for multi-task cells).
    pub task: String,
    /// Variant name.
    pub variant: String,
    /// Sweep value (NaN without a sweep).
    pub x: f64,
    /// Replicate.
    pub replicate: u64,
    /// The work.
    pub kind: CellKind,
    /// The id the same cell had before ids were canonical (to adopt folders written then).
    pub legacy_id: String,
}

impl Cell {
    #[allow(clippy::too_many_arguments)]
    fn new(
        spec: &Spec,
        measures: &str,
        task: &str,
        variant: &str,
        x: f64,
        replicate: u64,
        kind: CellKind,
        label: &str,
    ) -> Cell {
        // What defines the cell: its work and the measurements taken (absent measures are
        // left out, so adding a measurement kind to copra-lab keeps existing ids).
        let id_of = |what: String| {
            let hash = &crate::util::hash_str(&format!("{what}|{measures}"))[..10];
            let x_part = if x.is_nan() { String::new() } else { format!("-{}{x}", spec.sweep.key.replace('.', "_")) };
            // The readable part may be shortened; the hash always survives, so ids stay unique.
            format!("{}-{hash}", sanitize(&format!("{label}-{task}-{variant}{x_part}-r{replicate}")))
        };
        let (id, legacy_id) = (id_of(kind.what()), id_of(kind.legacy_what()));
        Cell { id, task: task.into(), variant: variant.into(), x, replicate, kind, legacy_id }
    }

    /// The tag its rows carry.
    fn tag(&self, seeds: &[u64]) -> Tag {
        Tag {
            cell: self.id.clone(),
            task: self.task.clone(),
            variant: self.variant.clone(),
            x: self.x,
            replicate: self.replicate as i64,
            seeds: seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join("+"),
        }
    }
}

/// The `Debug` forms of the `TrainConfig` fields that came after the first cell ids, at
/// their defaults (left out of the legacy description).
fn late_fields_at_default() -> [String; 4] {
    let d = crate::train::TrainConfig::default();
    [
        format!(", valid_size: {:?}", d.valid_size),
        format!(", max_length: {:?}", d.max_length),
        format!(", encoders: {:?}", d.encoders),
        format!(", prompt_template: {:?}", d.prompt_template),
    ]
}

/// Every cell of the spec, in a fixed order: run cells, group cells, then each [`Unit::Own`]
/// measure's cells in the order of [`Spec::measures`].
pub fn cells(spec: &Spec) -> Result<Vec<Cell>> {
    let json = spec.measures_json()?;
    // Every size of group any measure asks for: all groups of each size, or (older grids) the
    // cyclic groups of the largest size.
    let mut group_sizes: Vec<usize> = spec.measures.iter().flat_map(|m| m.group_sizes()).collect();
    group_sizes.sort_unstable();
    group_sizes.dedup();
    let n = spec.seeds.len();
    let groups_of: Vec<Vec<usize>> = match (spec.groups, group_sizes.last()) {
        (_, None) => Vec::new(),
        (GroupLayout::All, _) => {
            group_sizes.iter().map(|&k| crate::stats::all_groups(n, k)).collect::<Result<Vec<_>>>()?.concat()
        }
        (GroupLayout::Cyclic, Some(&k)) => (0..n).map(|i| (0..k).map(|j| (i + j) % n).collect()).collect(),
    };
    let single_runs = !spec.measures.iter().any(|m| m.replaces_runs());
    let (mut runs, mut groups) = (Vec::new(), Vec::new());
    for point in 0..spec.sweep.len() {
        let x = spec.x(point);
        for v in spec.variants.iter().filter(|_| single_runs) {
            for &seed in &spec.seeds {
                for task in &spec.tasks {
                    let cfg = spec.config(v, point, seed, task)?;
                    runs.push(Cell::new(spec, &json, task, &v.name, x, seed, CellKind::Run { cfg }, "run"));
                }
            }
            for task in &spec.tasks {
                for g in &groups_of {
                    let cfgs = g
                        .iter()
                        .map(|&i| spec.group_config(v, point, spec.seeds[i], task))
                        .collect::<Result<Vec<_>>>()?;
                    // The replicate of a group is its first seed; its `seeds` column names them all.
                    let first = spec.seeds[g[0]];
                    groups.push(Cell::new(spec, &json, task, &v.name, x, first, CellKind::Group { cfgs }, "group"));
                }
            }
        }
    }
    let mut all = runs;
    all.extend(groups);
    for (measure, m) in spec.measures.iter().enumerate().filter(|(_, m)| m.unit() == Unit::Own) {
        for cell in m.cells(spec)? {
            let (task, variant, label) = (cell.task.clone(), cell.variant.clone(), cell.label.clone());
            let (x, replicate) = (cell.x, cell.replicate);
            let kind = CellKind::Own { measure, cell };
            all.push(Cell::new(spec, &json, &task, &variant, x, replicate, kind, &label));
        }
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = all.iter().find(|c| !seen.insert(c.id.as_str())) {
        anyhow::bail!("internal: two cells share the id {}", dup.id);
    }
    Ok(all)
}

/// What a finished cell wrote.
pub type CellOutput = Rows;

/// Task environments by the settings that define them ([`TaskEnvKey`]), built once per process.
#[derive(Default)]
pub struct Envs {
    envs: HashMap<TaskEnvKey, TaskEnv>,
}

impl Envs {
    /// The environment of `cfg`'s task (after checking `cfg` against the backbone).
    pub fn get(&mut self, lab: &Lab, cfg: &TrainConfig) -> Result<&TaskEnv> {
        lab.check_config(cfg)?;
        let key = TaskEnvKey::of(cfg);
        if !self.envs.contains_key(&key) {
            let env = lab.task_env_of(&key).with_context(|| format!("task {}", cfg.task))?;
            self.envs.insert(key.clone(), env);
        }
        Ok(&self.envs[&key])
    }

    /// The environment of `cfg`'s task, built earlier by [`Envs::get`].
    pub fn built(&self, cfg: &TrainConfig) -> Result<&TaskEnv> {
        self.envs.get(&TaskEnvKey::of(cfg)).ok_or_else(|| anyhow!("internal: task {} was not loaded", cfg.task))
    }
}

/// Trains, as grids ([`Lab::ensure_runs`], one grid per task environment), every cached run
/// the cells ask for that the run cache lacks, so that the cells then find them there.
/// Returns the training wall time of each run it trained, by run folder: the wall time of its
/// grid split equally over the grid's runs (they train in parallel).
pub fn prepare_runs(lab: &Lab, cells: &[&Cell], envs: &mut Envs, progress: &Progress) -> Result<HashMap<PathBuf, f64>> {
    let mut by_env: BTreeMap<TaskEnvKey, Vec<TrainConfig>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for cell in cells {
        for cfg in cell.kind.runs() {
            let dir = lab.run_dir(envs.get(lab, cfg)?, cfg);
            if seen.insert(dir.clone()) && !dir.join("manifest.json").is_file() {
                by_env.entry(TaskEnvKey::of(cfg)).or_default().push(cfg.clone());
            }
        }
    }
    let mut seconds = HashMap::new();
    for cfgs in by_env.values() {
        let started = Instant::now();
        let runs = lab.ensure_runs(envs.get(lab, &cfgs[0])?, cfgs, false, progress)?;
        let trained: Vec<&Run> = runs.iter().filter(|r| !r.reused).collect();
        let share = started.elapsed().as_secs_f64() / trained.len().max(1) as f64;
        seconds.extend(trained.into_iter().map(|r| (r.dir.clone(), share)));
    }
    Ok(seconds)
}

/// The training seconds of `cell`'s runs in `trained` ([`prepare_runs`]), taken out of the map
/// so that each run's training counts once, for the first cell that reads it.
pub fn take_training_seconds(
    lab: &Lab,
    cell: &Cell,
    envs: &mut Envs,
    trained: &mut HashMap<PathBuf, f64>,
) -> Result<f64> {
    let mut total = 0.0;
    for cfg in cell.kind.runs() {
        total += trained.remove(&lab.run_dir(envs.get(lab, cfg)?, cfg)).unwrap_or(0.0);
    }
    Ok(total)
}

/// Checks, before any work, every config the cells train or read against the backbone, and
/// each [`Unit::Own`] cell with its measure ([`super::measure::Measure::check_cell`]).
pub fn check_cells(lab: &Lab, spec: &Spec, cells: &[&Cell]) -> Result<()> {
    for cell in cells {
        let own = match &cell.kind {
            CellKind::Own { measure, cell: own } => Some((*measure, own)),
            _ => None,
        };
        let configs = own.map(|(_, o)| o.configs.as_slice()).unwrap_or_default();
        for cfg in cell.kind.runs().iter().chain(configs) {
            lab.check_config(cfg).with_context(|| format!("cell {}", cell.id))?;
        }
        if let Some((measure, own)) = own {
            let m = spec.measures.get(measure).ok_or_else(|| anyhow!("internal: no measure {measure}"))?;
            m.check_cell(lab, own)?;
        }
    }
    Ok(())
}

fn ensure(lab: &Lab, envs: &mut Envs, cfg: &TrainConfig, progress: &Progress) -> Result<Run> {
    let env = envs.get(lab, cfg)?;
    lab.ensure_run(env, cfg, false, progress)
}

/// Runs one cell (training what the run cache lacks): every measure of the cell's unit, in
/// the order of [`Spec::measures`].
pub fn run_cell(lab: &Lab, spec: &Spec, cell: &Cell, envs: &mut Envs, progress: &Progress) -> Result<CellOutput> {
    let runs = cell.kind.runs().iter().map(|c| ensure(lab, envs, c, progress)).collect::<Result<Vec<_>>>()?;
    let mut out = Rows::default();
    let mut take = |input: &Input<'_>, wanted: &dyn Fn(&dyn Measure) -> bool| -> Result<()> {
        for m in spec.measures.iter().filter(|m| wanted(m.as_ref())) {
            let rows = m.measure(input).with_context(|| format!("measure {}", m.name()))?;
            out.measurements.extend(rows.measurements);
            out.curves.extend(rows.curves);
            out.predictions.extend(rows.predictions);
        }
        Ok(())
    };
    match &cell.kind {
        CellKind::Run { cfg } => {
            let tag = cell.tag(&[cfg.seed]);
            let input = Input::Run { tag: &tag, cfg, run: &runs[0], env: envs.built(cfg)? };
            take(&input, &|m| m.unit() == Unit::Run)?;
        }
        CellKind::Group { cfgs } => {
            let seeds: Vec<u64> = cfgs.iter().map(|c| c.seed).collect();
            let tag = cell.tag(&seeds);
            // A cell of all groups serves its own size; a cyclic cell, every size up to its own.
            let sizes: Vec<usize> = match spec.groups {
                GroupLayout::All => vec![cfgs.len()],
                GroupLayout::Cyclic => (2..=cfgs.len()).collect(),
            };
            let input = Input::Group { tag: &tag, cfgs, runs: &runs, env: envs.built(&cfgs[0])?, sizes: &sizes };
            take(&input, &|m| m.unit() == Unit::Group && m.group_sizes().iter().any(|k| sizes.contains(k)))?;
        }
        CellKind::Own { measure, cell: own } => {
            for cfg in &own.configs {
                envs.get(lab, cfg)?;
            }
            let m = spec.measures.get(*measure).ok_or_else(|| anyhow!("internal: no measure {measure}"))?;
            let seed = own.runs.first().or(own.configs.first()).map(|c| c.seed).unwrap_or(own.replicate);
            let tag = cell.tag(&[seed]);
            let input = Input::Own { tag: &tag, cell: own, runs: &runs, envs, lab };
            let rows = m.measure(&input).with_context(|| format!("measure {}", m.name()))?;
            out.measurements.extend(rows.measurements);
            out.curves.extend(rows.curves);
            out.predictions.extend(rows.predictions);
        }
    }
    Ok(out)
}
