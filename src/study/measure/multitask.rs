//! Multi-task merging: one adapter per task (same variant and seed) merged by each operator
//! ([`Operator`], `factor+align` included), the result scored on every task with that task's
//! head; rows per task and their average (`task = all`), raw and normalised by each task's own
//! adapter. With `lambda_grid`, every operator with a `lambda` (task arithmetic, TIES) takes
//! the λ of the grid with the highest mean VALIDATION accuracy over the merged tasks (ties: the
//! first), the test split is scored at that λ only, and the choice is a `chosen_lambda` row.

use super::base::{options, Cost, Input, Measure, MeasureInfo, OwnCell, ParseContext, Rows, Unit};
use super::rows::Tag;
use crate::merge::{MergeOptions, Operator};
use crate::study::cell::configs_json;
use crate::study::spec::Spec;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo =
    MeasureInfo { name: "multitask", parse: |v, ctx| Ok(Box::new(Multitask::parse(v, ctx)?)) };

/// `[measure.multitask]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskSpec {
    /// Tasks merged (default: the spec's tasks).
    #[serde(default)]
    pub tasks: Vec<String>,
    /// Merge operators (`copra-lab multitask --help` lists them; `factor+align` included).
    pub operators: Vec<String>,
    /// Candidate λ for the operators that have one, chosen per cell on validation (empty: the
    /// written λ). Left out of the cell ids when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lambda_grid: Vec<f64>,
}

/// Multi-task merging.
#[derive(Clone, Debug)]
pub struct Multitask {
    /// The options as written.
    pub written: MultitaskSpec,
    /// The tasks merged.
    pub tasks: Vec<String>,
    /// The operators, in the written order.
    pub operators: Vec<Operator>,
}

impl Multitask {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Multitask> {
        let written: MultitaskSpec = options(v, ctx)?;
        if written.operators.is_empty() {
            return Err((ctx.at)("operators", "list at least one merge operator, e.g. [\"factor\"]".into()));
        }
        let operators = written
            .operators
            .iter()
            .map(|o| Operator::parse(o).map_err(|e| (ctx.at)("operators", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        if let Some(i) = (1..operators.len()).find(|&i| operators[..i].contains(&operators[i])) {
            return Err((ctx.at)("operators", format!("'{}' is listed twice; list each once", written.operators[i])));
        }
        let key = if written.tasks.is_empty() { "" } else { "tasks" };
        let tasks = if written.tasks.is_empty() { ctx.tasks.to_vec() } else { written.tasks.clone() };
        if let Some(i) = (1..tasks.len()).find(|&i| tasks[..i].contains(&tasks[i])) {
            return Err((ctx.at)(key, format!("task '{}' is listed twice; merge each task once", tasks[i])));
        }
        if tasks.len() < 2 {
            return Err((ctx.at)(key, "multi-task merging needs at least two tasks; list them in tasks".into()));
        }
        let grid = &written.lambda_grid;
        if grid.iter().any(|l| !l.is_finite()) || (1..grid.len()).any(|i| grid[..i].contains(&grid[i])) {
            return Err((ctx.at)(
                "lambda_grid",
                "list distinct finite λ candidates, e.g. lambda_grid = [0.1, 0.3, 0.5, 1.0]".into(),
            ));
        }
        Ok(Multitask { written, tasks, operators })
    }
}

impl Measure for Multitask {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&self.written)?))
    }
    fn unit(&self) -> Unit {
        Unit::Own
    }
    fn cells(&self, spec: &Spec) -> Result<Vec<OwnCell>> {
        let mut out = Vec::new();
        for point in 0..spec.sweep.len() {
            for v in &spec.variants {
                for &seed in &spec.seeds {
                    let cfgs = self.tasks.iter().map(|t| spec.config(v, point, seed, t)).collect::<Result<Vec<_>>>()?;
                    out.push(OwnCell {
                        label: "multitask".into(),
                        task: "all".into(),
                        variant: v.name.clone(),
                        x: spec.x(point),
                        replicate: seed,
                        what: format!("multitask {}", configs_json(&cfgs)),
                        legacy_what: format!("Multitask {{ cfgs: {cfgs:?} }}"),
                        runs: cfgs,
                        configs: Vec::new(),
                        setting: Vec::new(),
                    });
                }
            }
        }
        Ok(out)
    }
    fn costs(&self) -> Vec<Cost> {
        vec![Cost::new("measure.multitask operators", self.operators.len() as f64, 6.0)]
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Own { tag, cell, runs, envs, .. } = input else { bail!("internal: multitask cells are its own") };
        let adapters: Vec<&crate::adapter::Adapter> = runs.iter().map(|r| &r.adapter).collect();
        let (mut rows, mut predictions) = (Vec::new(), Vec::new());
        for (name, op) in self.written.operators.iter().zip(&self.operators) {
            // λ from the grid on validation (never the test split), when the operator has one.
            let mut best: Option<(f64, f64, crate::eval::Deltas)> = None;
            for &lambda in &self.written.lambda_grid {
                let Some(candidate) = op.with_param("lambda", lambda)? else { break };
                let deltas = candidate.merge(&adapters, &MergeOptions::default())?.merged.deltas();
                let mut valid = 0.0;
                for cfg in &cell.runs {
                    valid += envs.built(cfg)?.valid()?.evaluate(&deltas)?.accuracy;
                }
                if best.as_ref().is_none_or(|(_, b, _)| valid > *b) {
                    best = Some((lambda, valid, deltas));
                }
            }
            let deltas = match best {
                Some((lambda, valid, deltas)) => {
                    let t = Tag { task: "all".into(), ..(*tag).clone() };
                    rows.push(t.row(INFO.name, name, "chosen_lambda", lambda));
                    rows.push(t.row(INFO.name, name, "validation_accuracy", valid / cell.runs.len() as f64));
                    deltas
                }
                None => op.merge(&adapters, &MergeOptions::default())?.merged.deltas(),
            };
            let (mut acc, mut norm) = (0.0, 0.0);
            for (cfg, run) in cell.runs.iter().zip(*runs) {
                let (m, examples) = envs.built(cfg)?.test.evaluate_examples(&deltas)?;
                let (a, own) = (m.accuracy, run.manifest.test.accuracy);
                let t = Tag { task: cfg.task.clone(), ..(*tag).clone() };
                predictions.extend(t.predictions(&format!("multitask {name}"), cfg.data_seed, &examples));
                rows.push(t.row(INFO.name, name, "accuracy", a));
                rows.push(t.row(INFO.name, name, "normalized_accuracy", a / own));
                acc += a;
                norm += a / own;
            }
            let n = runs.len() as f64;
            let t = Tag { task: "all".into(), ..(*tag).clone() };
            rows.push(t.row(INFO.name, name, "accuracy", acc / n));
            rows.push(t.row(INFO.name, name, "normalized_accuracy", norm / n));
        }
        Ok(Rows::with_predictions(rows, predictions))
    }
}
