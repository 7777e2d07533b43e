//! Checkpoints along training (the run is retrained with snapshots): at each fraction of T,
//! the multilinear extension F(p(t)) of the training loss at the schedule's current rate
//! against the all-on loss, and per-block Shapley values (with the estimator's standard
//! errors) of the game v(S) = −(training loss of coalition S).

use super::base::{options, Cost, Input, Measure, MeasureInfo, OwnCell, ParseContext, Rows, Unit};
use super::multilinear::multilinear_loss;
use crate::analysis::layer_game::{GameValue, LayerGame};
use crate::shapley::Estimator;
use crate::study::cell::config_json;
use crate::study::spec::Spec;
use crate::train::Schedule;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo =
    MeasureInfo { name: "trajectory", parse: |v, ctx| Ok(Box::new(Trajectory::parse(v, ctx)?)) };

/// `[measure.trajectory]` as written.
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

/// The `measure` of the per-block Shapley rows.
const SHAPLEY: &str = "trajectory-shapley";

fn default_estimator() -> String {
    "permutation".into()
}

/// Checkpoints along training.
#[derive(Clone, Debug)]
pub struct Trajectory {
    /// The options as written.
    pub written: TrajectorySpec,
    /// The Shapley estimator.
    pub estimator: Estimator,
}

impl Trajectory {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Trajectory> {
        let written: TrajectorySpec = options(v, ctx)?;
        if written.fractions.is_empty() || written.fractions.iter().any(|f| !(*f > 0.0 && *f <= 1.0)) {
            return Err((ctx.at)("fractions", "list fractions of T in (0, 1], e.g. [0.25, 0.5, 1.0]".into()));
        }
        if written.samples == 0 {
            return Err((ctx.at)("samples", "must be at least 1".into()));
        }
        if written.budget == 0 {
            return Err((ctx.at)("budget", "must be at least 1".into()));
        }
        if let Some(bad) = written.variants.iter().find(|n| !ctx.variants.contains(n)) {
            return Err((ctx.at)("variants", format!("'{bad}' is not a variant of this spec")));
        }
        let estimator =
            crate::shapley::registry::parse(&written.estimator).map_err(|e| (ctx.at)("estimator", e.to_string()))?;
        Ok(Trajectory { written, estimator })
    }
}

impl Measure for Trajectory {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&self.written)?))
    }
    fn unit(&self) -> Unit {
        Unit::Own
    }
    fn row_measures(&self) -> Vec<&'static str> {
        vec![INFO.name, SHAPLEY]
    }
    fn cells(&self, spec: &Spec) -> Result<Vec<OwnCell>> {
        let mut out = Vec::new();
        for point in 0..spec.sweep.len() {
            for v in spec
                .variants
                .iter()
                .filter(|v| self.written.variants.is_empty() || self.written.variants.contains(&v.name))
            {
                for &seed in &spec.seeds {
                    for task in &spec.tasks {
                        let cfg = spec.config(v, point, seed, task)?;
                        out.push(OwnCell {
                            label: "trajectory".into(),
                            task: task.clone(),
                            variant: v.name.clone(),
                            x: spec.x(point),
                            replicate: seed,
                            what: format!("trajectory {}", config_json(&cfg)),
                            legacy_what: format!("Trajectory {{ cfg: {cfg:?} }}"),
                            runs: Vec::new(),
                            configs: vec![cfg],
                            setting: Vec::new(),
                        });
                    }
                }
            }
        }
        Ok(out)
    }
    fn costs(&self) -> Vec<Cost> {
        let w = &self.written;
        let n = w.fractions.len() as f64 * (w.samples as f64 + w.budget as f64);
        vec![Cost::new(
            "measure.trajectory fractions × (samples + budget) (evaluations per run)",
            n,
            4.0 * (16.0 + 120.0),
        )]
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Own { tag, cell, envs, lab, .. } = input else { bail!("internal: trajectory cells are its own") };
        let cfg = &cell.configs[0];
        let env = envs.built(cfg)?;
        let at: Vec<usize> = self
            .written
            .fractions
            .iter()
            .map(|f| ((f * cfg.steps as f64).round() as usize).clamp(1, cfg.steps))
            .collect();
        let (_, snapshots) = crate::train::train_adapter_snapshots(
            &lab.backbone,
            &env.head,
            &env.train_inputs,
            &env.data.train.labels,
            cfg,
            &at,
        )?;
        let schedule =
            Schedule { method: cfg.method, p0: cfg.p0, stage1_ratio: cfg.stage1_ratio, total_steps: cfg.steps };
        let train = &env.train;
        let mut rows = Vec::new();
        for (step, adapter) in &snapshots {
            let setting = format!("t={:.2}", *step as f64 / cfg.steps as f64);
            let p = schedule.p(step - 1);
            let deltas = adapter.deltas();
            let all_on = train.evaluate(&deltas)?.loss;
            let f = multilinear_loss(train, &deltas, p, self.written.samples, cfg.seed)?;
            rows.push(tag.row(INFO.name, &setting, "p", p));
            rows.push(tag.row(INFO.name, &setting, "all_on_loss", all_on));
            rows.push(tag.row(INFO.name, &setting, "F", f));
            rows.push(tag.row(INFO.name, &setting, "gap", f - all_on));
            let game = LayerGame::new(train, adapter, cfg.grouping, GameValue::NegLoss, "trajectory")?;
            let est = crate::shapley::estimate(
                &game,
                &crate::shapley::EstimateConfig::new(self.estimator.clone(), self.written.budget, cfg.seed),
            )?;
            for (b, (v, se)) in est.values.iter().zip(&est.std_errors).enumerate() {
                rows.push(tag.row(SHAPLEY, &setting, &format!("block{b:02}"), *v));
                rows.push(tag.row(SHAPLEY, &setting, &format!("block{b:02}_se"), *se));
            }
        }
        Ok(rows.into())
    }
}
