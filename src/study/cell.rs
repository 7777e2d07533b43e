//! Grid cells: the units of work of an analysis. A spec expands into a fixed, ordered list of
//! cells; each has a stable id (its content hashed in) and produces measurement rows.

use super::measure::{self, CurvePoint, Measurement, Tag, TaskMember};
use super::spec::Spec;
use crate::lab::{Lab, Run, TaskEnv, TaskEnvKey};
use crate::progress::Progress;
use crate::report::table::Table;
use crate::runs::sanitize;
use crate::train::TrainConfig;
use anyhow::{anyhow, Context, Result};
use std::collections::{BTreeMap, HashMap};

/// What a cell does.
#[derive(Clone, Debug)]
pub enum CellKind {
    /// Train (or reuse) one run: accuracy, pruning, curves, multilinear gap.
    Run {
        /// The run.
        cfg: TrainConfig,
    },
    /// Merges and barriers of a group of seeds (replicate = the first seed).
    Group {
        /// The runs, in merge order.
        cfgs: Vec<TrainConfig>,
    },
    /// Multi-task merging of one adapter per task (same variant and seed).
    Multitask {
        /// One run per task.
        cfgs: Vec<TrainConfig>,
    },
    /// Retrain one run with snapshots and measure along training.
    Trajectory {
        /// The run.
        cfg: TrainConfig,
    },
    /// One federated simulation.
    Federated {
        /// Split name.
        split: String,
        /// Index into the spec's heterogeneity list.
        hetero: usize,
        /// Training settings (steps = local steps).
        cfg: TrainConfig,
    },
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
}

impl Cell {
    fn new(spec: &Spec, task: &str, variant: &str, x: f64, replicate: u64, kind: CellKind, label: &str) -> Cell {
        // What defines the cell: its work and the measurements taken (absent measures are
        // left out, so adding a measurement kind to copra-lab keeps existing ids).
        let measures = serde_json::to_string(&spec.measures).unwrap_or_default();
        // `TrainConfig` fields added after the first ids are left out at their defaults, so
        // existing cells keep the ids of the committed reports.
        let mut what = format!("{kind:?}|{measures}");
        for late in late_fields_at_default() {
            what = what.replace(&late, "");
        }
        let hash = &crate::util::hash_str(&what)[..10];
        let x_part = if x.is_nan() { String::new() } else { format!("-{}{x}", spec.sweep.key.replace('.', "_")) };
        // The readable part may be shortened; the hash always survives, so ids stay unique.
        let id = format!("{}-{hash}", sanitize(&format!("{label}-{task}-{variant}{x_part}-r{replicate}")));
        Cell { id, task: task.into(), variant: variant.into(), x, replicate, kind }
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
/// their defaults (left out of the hashed description).
fn late_fields_at_default() -> [String; 3] {
    let d = crate::train::TrainConfig::default();
    [
        format!(", max_length: {:?}", d.max_length),
        format!(", encoders: {:?}", d.encoders),
        format!(", prompt_template: {:?}", d.prompt_template),
    ]
}

/// Every cell of the spec, in a fixed order: runs, then groups, multi-task and federated cells.
pub fn cells(spec: &Spec) -> Result<Vec<Cell>> {
    let m = &spec.measures;
    let mut out = Vec::new();
    let mut runs = Vec::new();
    let mut groups = Vec::new();
    let mut multi = Vec::new();
    let group_size = m
        .merge
        .as_ref()
        .map(|g| g.weights.iter().map(|w| w.len()).max().unwrap_or(2))
        .unwrap_or(0)
        .max(if m.barrier.is_some() { 2 } else { 0 });
    for point in 0..spec.sweep.len() {
        let x = spec.x(point);
        for v in &spec.variants {
            for (i, &seed) in spec.seeds.iter().enumerate() {
                if m.federated.is_none() {
                    for task in &spec.tasks {
                        let cfg = spec.config(v, point, seed, task)?;
                        runs.push(Cell::new(spec, task, &v.name, x, seed, CellKind::Run { cfg }, "run"));
                        if group_size >= 2 {
                            let cfgs = (0..group_size)
                                .map(|j| spec.config(v, point, spec.seeds[(i + j) % spec.seeds.len()], task))
                                .collect::<Result<Vec<_>>>()?;
                            groups.push(Cell::new(spec, task, &v.name, x, seed, CellKind::Group { cfgs }, "group"));
                        }
                    }
                }
                if let Some(tr) = &m.trajectory {
                    if tr.variants.is_empty() || tr.variants.contains(&v.name) {
                        for task in &spec.tasks {
                            let cfg = spec.config(v, point, seed, task)?;
                            let cell =
                                Cell::new(spec, task, &v.name, x, seed, CellKind::Trajectory { cfg }, "trajectory");
                            multi.push(cell);
                        }
                    }
                }
                if let Some(mt) = &m.multitask {
                    let tasks = if mt.tasks.is_empty() { &spec.tasks } else { &mt.tasks };
                    let cfgs = tasks.iter().map(|t| spec.config(v, point, seed, t)).collect::<Result<Vec<_>>>()?;
                    multi.push(Cell::new(spec, "all", &v.name, x, seed, CellKind::Multitask { cfgs }, "multitask"));
                }
                if let Some(f) = &m.federated {
                    for task in &spec.tasks {
                        for split in &f.splits {
                            for h in 0..f.heterogeneity.len() {
                                let mut cfg = spec.config(v, point, seed, task)?;
                                cfg.steps = f.local_steps;
                                let kind = CellKind::Federated { split: split.clone(), hetero: h, cfg };
                                let label = format!("fed-{}-{}", split.replace(':', ""), f.heterogeneity[h].name);
                                out.push(Cell::new(spec, task, &v.name, x, seed, kind, &label));
                            }
                        }
                    }
                }
            }
        }
    }
    let mut all = runs;
    all.extend(groups);
    all.extend(multi);
    all.extend(out);
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = all.iter().find(|c| !seen.insert(c.id.as_str())) {
        anyhow::bail!("internal: two cells share the id {}", dup.id);
    }
    Ok(all)
}

/// What a finished cell wrote.
pub struct CellOutput {
    /// Measurement rows.
    pub measurements: Vec<Measurement>,
    /// Loss-curve points.
    pub curves: Vec<CurvePoint>,
}

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
    fn built(&self, cfg: &TrainConfig) -> Result<&TaskEnv> {
        self.envs.get(&TaskEnvKey::of(cfg)).ok_or_else(|| anyhow!("internal: task {} was not loaded", cfg.task))
    }
}

/// Trains, as grids ([`Lab::ensure_runs`], one grid per task environment), every cached run
/// the cells ask for that the run cache lacks, so that the cells then find them there.
pub fn prepare_runs(lab: &Lab, cells: &[&Cell], envs: &mut Envs, progress: &Progress) -> Result<()> {
    let mut by_env: BTreeMap<TaskEnvKey, Vec<TrainConfig>> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    for cell in cells {
        let cfgs: &[TrainConfig] = match &cell.kind {
            CellKind::Run { cfg } => std::slice::from_ref(cfg),
            CellKind::Group { cfgs } | CellKind::Multitask { cfgs } => cfgs,
            _ => &[],
        };
        for cfg in cfgs {
            let dir = lab.run_dir(envs.get(lab, cfg)?, cfg);
            if seen.insert(dir.clone()) && !dir.join("manifest.json").is_file() {
                by_env.entry(TaskEnvKey::of(cfg)).or_default().push(cfg.clone());
            }
        }
    }
    for cfgs in by_env.values() {
        lab.ensure_runs(envs.get(lab, &cfgs[0])?, cfgs, false, progress)?;
    }
    Ok(())
}

fn ensure(lab: &Lab, envs: &mut Envs, cfg: &TrainConfig, progress: &Progress) -> Result<Run> {
    let env = envs.get(lab, cfg)?;
    lab.ensure_run(env, cfg, false, progress)
}

/// Runs one cell (training what the run cache lacks).
pub fn run_cell(lab: &Lab, spec: &Spec, cell: &Cell, envs: &mut Envs, progress: &Progress) -> Result<CellOutput> {
    let m = &spec.measures;
    let mut measurements = Vec::new();
    let mut curves = Vec::new();
    match &cell.kind {
        CellKind::Run { cfg } => {
            let run = ensure(lab, envs, cfg, progress)?;
            let env = envs.get(lab, cfg)?;
            let tag = cell.tag(&[cfg.seed]);
            let (test, frozen) = (run.manifest.test, run.manifest.frozen_test);
            measurements.extend(measure::accuracy_rows(&tag, &test, &run.manifest.train, &frozen));
            if let Some(p) = &m.prune {
                measurements.extend(measure::prune_rows(
                    &tag,
                    &env.test,
                    &run.adapter,
                    &p.structures,
                    test.accuracy,
                    frozen.accuracy,
                )?);
            }
            if let Some(ml) = &m.multilinear {
                measurements.extend(measure::multilinear_rows(
                    &tag,
                    &env.train,
                    &run.adapter,
                    &ml.p,
                    ml.samples,
                    cfg.seed,
                )?);
            }
            if let Some(c) = &m.curves {
                curves.extend(curve_points(cell, cfg.seed, &run, c.every)?);
            }
        }
        CellKind::Group { cfgs } => {
            let runs = cfgs.iter().map(|c| ensure(lab, envs, c, progress)).collect::<Result<Vec<_>>>()?;
            let env = envs.get(lab, &cfgs[0])?;
            let seeds: Vec<u64> = cfgs.iter().map(|c| c.seed).collect();
            let tag = cell.tag(&seeds);
            let adapters: Vec<&crate::adapter::Adapter> = runs.iter().map(|r| &r.adapter).collect();
            let endpoints: Vec<f64> = runs.iter().map(|r| r.manifest.test.accuracy).collect();
            let frozen = runs[0].manifest.frozen_test.accuracy;
            if let Some(mg) = &m.merge {
                measurements.extend(measure::merge_rows(
                    &tag,
                    &env.test,
                    &adapters,
                    &endpoints,
                    frozen,
                    &mg.weights,
                    &mg.spaces,
                )?);
            }
            if let Some(b) = &m.barrier {
                let t2 = Tag { seeds: format!("{}+{}", seeds[0], seeds[1]), ..tag.clone() };
                measurements.extend(measure::barrier_rows(
                    &t2,
                    &env.test,
                    adapters[0],
                    adapters[1],
                    b.points,
                    &b.spaces,
                )?);
            }
        }
        CellKind::Multitask { cfgs } => {
            // `ensure` loads every task's environment.
            let runs = cfgs.iter().map(|c| ensure(lab, envs, c, progress)).collect::<Result<Vec<_>>>()?;
            let tag = cell.tag(&[cfgs[0].seed]);
            let members: Vec<TaskMember> = cfgs
                .iter()
                .zip(&runs)
                .map(|(c, r)| {
                    Ok(TaskMember {
                        task: c.task.clone(),
                        test: &envs.built(c)?.test,
                        adapter: &r.adapter,
                        own: r.manifest.test.accuracy,
                    })
                })
                .collect::<Result<_>>()?;
            let ops =
                &m.multitask.as_ref().ok_or_else(|| anyhow!("internal: multitask cell without options"))?.operators;
            measurements.extend(measure::multitask_rows(&tag, &members, ops)?);
        }
        CellKind::Trajectory { cfg } => {
            let tr = m.trajectory.as_ref().ok_or_else(|| anyhow!("internal: trajectory cell without options"))?;
            let env = envs.get(lab, cfg)?;
            let at: Vec<usize> =
                tr.fractions.iter().map(|f| ((f * cfg.steps as f64).round() as usize).clamp(1, cfg.steps)).collect();
            let (_, snaps) = crate::train::train_adapter_snapshots(
                &lab.backbone,
                &env.head,
                &env.train_inputs,
                &env.data.train.labels,
                cfg,
                &at,
            )?;
            let tag = cell.tag(&[cfg.seed]);
            measurements.extend(measure::trajectory_rows(&tag, &env.train, cfg, &snaps, tr)?);
        }
        CellKind::Federated { split, hetero, cfg } => {
            let f = m.federated.as_ref().ok_or_else(|| anyhow!("internal: federated cell without options"))?;
            let h = &f.heterogeneity[*hetero];
            let opts = measure::federated_options(
                f.clients,
                measure::split_named(split, f.min_size)?,
                &h.ranks,
                &h.top_blocks,
                &f.aggregators[0],
            )?;
            let env = envs.get(lab, cfg)?;
            let tag = cell.tag(&[cfg.seed]);
            let label = format!("{split} {}", h.name);
            measurements.extend(measure::federated_rows(&tag, &lab.backbone, env, cfg, &opts, &f.aggregators, &label)?);
        }
    }
    Ok(CellOutput { measurements, curves })
}

/// The run's training loss and p(t), averaged over windows of `every` steps.
fn curve_points(cell: &Cell, seed: u64, run: &Run, every: usize) -> Result<Vec<CurvePoint>> {
    let log = run.dir.join("train_log.parquet");
    let df = Table::read_parquet(&log)?;
    let get = |name: &str| measure::col_f64(&df, name).with_context(|| format!("training log {}", log.display()));
    let (loss, p) = (get("loss")?, get("p")?);
    let mut out = Vec::new();
    for (w, (lw, pw)) in loss.chunks(every).zip(p.chunks(every)).enumerate() {
        out.push(CurvePoint {
            cell: cell.id.clone(),
            task: cell.task.clone(),
            variant: cell.variant.clone(),
            x: cell.x,
            seed: seed as i64,
            step: (w * every + lw.len() - 1) as i64,
            loss: lw.iter().sum::<f64>() / lw.len() as f64,
            p: pw.iter().sum::<f64>() / pw.len() as f64,
        });
    }
    Ok(out)
}
