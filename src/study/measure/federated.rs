//! One-round federated learning with heterogeneous clients: the clients train once from a
//! common initialisation, then every aggregator merges the same uploads
//! ([`aggregation_options`]); global test accuracy per aggregator. A spec with this measure
//! trains no single runs: its cells are the simulations.

use super::base::{options, Cost, Input, Measure, MeasureInfo, OwnCell, ParseContext, Rows, Unit};
use crate::adapter::Adapter;
use crate::adapter::LoraSpec;
use crate::analysis::federated::{aggregation_weights, run_federated, FederatedOptions};
use crate::federated::aggregation_options;
use crate::federated::split::SplitMethod;
use crate::lab::Lab;
use crate::merge::{merge, MergeMethod, MergeOptions};
use crate::study::cell::config_json;
use crate::study::spec::Spec;
use crate::train::TrainConfig;
use anyhow::{anyhow, bail, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo =
    MeasureInfo { name: "federated", parse: |v, ctx| Ok(Box::new(Federated::parse(v, ctx)?)) };

/// One client heterogeneity setting, as written.
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

/// `[measure.federated]` as written.
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

fn default_min_size() -> usize {
    8
}

/// One-round federated simulations.
#[derive(Clone, Debug)]
pub struct Federated {
    /// The options as written.
    pub written: FederatedSpec,
    /// The splits, in the written order.
    pub splits: Vec<SplitMethod>,
    /// The aggregators, in the written order.
    pub aggregators: Vec<MergeMethod>,
}

impl Federated {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Federated> {
        let w: FederatedSpec = options(v, ctx)?;
        if w.clients == 0 {
            return Err((ctx.at)("clients", "must be at least 1".into()));
        }
        if w.local_steps == 0 {
            return Err((ctx.at)("local_steps", "must be at least 1".into()));
        }
        for (key, empty) in [
            ("splits", w.splits.is_empty()),
            ("heterogeneity", w.heterogeneity.is_empty()),
            ("aggregators", w.aggregators.is_empty()),
        ] {
            if empty {
                return Err((ctx.at)(key, "needs at least one entry".into()));
            }
        }
        let splits = w
            .splits
            .iter()
            .map(|s| SplitMethod::parse(s, w.min_size).map_err(|e| (ctx.at)("splits", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        let aggregators = w
            .aggregators
            .iter()
            .map(|o| crate::merge::registry::parse(o).map_err(|e| (ctx.at)("aggregators", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        for h in &w.heterogeneity {
            if h.ranks.contains(&0) {
                return Err((ctx.at)("ranks", format!("setting '{}': every client rank must be at least 1", h.name)));
            }
            if h.top_blocks.contains(&0) {
                return Err((ctx.at)(
                    "top_blocks",
                    format!("setting '{}': every client adapts at least 1 block", h.name),
                ));
            }
        }
        for (key, names) in [
            ("splits", w.splits.clone()),
            ("name", w.heterogeneity.iter().map(|h| h.name.clone()).collect()),
            ("aggregators", w.aggregators.clone()),
        ] {
            if let Some(i) = (1..names.len()).find(|&i| names[..i].contains(&names[i])) {
                return Err((ctx.at)(key, format!("'{}' is listed twice; list each once", names[i])));
            }
        }
        Ok(Federated { written: w, splits, aggregators })
    }

    /// The simulation options of split `split` and heterogeneity setting `hetero`.
    fn simulation(&self, split: usize, hetero: usize) -> FederatedOptions {
        let h = &self.written.heterogeneity[hetero];
        FederatedOptions {
            clients: self.written.clients,
            split: self.splits[split].clone(),
            rounds: 1,
            client_fraction: 1.0,
            aggregator: self.aggregators[0].clone(),
            merge: MergeOptions::default(),
            client_ranks: h.ranks.clone(),
            client_top_blocks: h.top_blocks.clone(),
            evaluate_clients: false,
        }
    }
}

impl Measure for Federated {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&self.written)?))
    }
    fn unit(&self) -> Unit {
        Unit::Own
    }
    fn replaces_runs(&self) -> bool {
        true
    }
    fn cells(&self, spec: &Spec) -> Result<Vec<OwnCell>> {
        let mut out = Vec::new();
        for point in 0..spec.sweep.len() {
            for v in &spec.variants {
                for &seed in &spec.seeds {
                    for task in &spec.tasks {
                        for (s, split) in self.written.splits.iter().enumerate() {
                            for (h, hetero) in self.written.heterogeneity.iter().enumerate() {
                                let mut cfg = spec.config(v, point, seed, task)?;
                                cfg.steps = self.written.local_steps;
                                out.push(OwnCell {
                                    label: format!("fed-{}-{}", split.replace(':', ""), hetero.name),
                                    task: task.clone(),
                                    variant: v.name.clone(),
                                    x: spec.x(point),
                                    replicate: seed,
                                    what: format!("federated {split:?} {h} {}", config_json(&cfg)),
                                    legacy_what: format!("Federated {{ split: {split:?}, hetero: {h}, cfg: {cfg:?} }}"),
                                    runs: Vec::new(),
                                    configs: vec![cfg],
                                    setting: vec![s, h],
                                });
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }
    fn costs(&self) -> Vec<Cost> {
        let w = &self.written;
        vec![Cost::new(
            "measure.federated clients × local_steps (steps per cell)",
            w.clients as f64 * w.local_steps as f64,
            4.0 * 100.0,
        )]
    }
    fn check_cell(&self, lab: &Lab, cell: &OwnCell) -> Result<()> {
        let (cfg, h) = (&cell.configs[0], &self.written.heterogeneity[cell.setting[1]]);
        let blocks = lab.backbone.num_blocks();
        if let Some(k) = h.top_blocks.iter().find(|k| **k > blocks) {
            bail!("measure.federated setting '{}': top_blocks {k} is more than the backbone's {blocks} blocks", h.name);
        }
        for &rank in &h.ranks {
            let client = TrainConfig { lora: LoraSpec { rank, ..cfg.lora.clone() }, ..cfg.clone() };
            lab.check_config(&client).map_err(|e| {
                anyhow!("measure.federated setting '{}': client rank {rank} does not fit this backbone: {e}", h.name)
            })?;
        }
        Ok(())
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Own { tag, cell, envs, lab, .. } = input else { bail!("internal: federated cells are its own") };
        let (cfg, s, h) = (&cell.configs[0], cell.setting[0], cell.setting[1]);
        let env = envs.built(cfg)?;
        let run = run_federated(&lab.backbone, env, cfg, &self.simulation(s, h), || {})?;
        let selected = &run.rounds.last().ok_or_else(|| anyhow!("internal: no federated round"))?.selected;
        let weights = aggregation_weights(&run.split, selected);
        let uploads: Vec<&Adapter> = run.last_uploads.iter().map(|(_, a)| a).collect();
        let max_rank = uploads.iter().flat_map(|a| a.modules.values().map(|f| f.rank())).max().unwrap_or(1);
        let label = format!("{} {}", self.written.splits[s], self.written.heterogeneity[h].name);
        let (mut rows, mut predictions) = (Vec::new(), Vec::new());
        for (name, agg) in self.written.aggregators.iter().zip(&self.aggregators) {
            let merged = merge(&uploads, &weights, agg, &aggregation_options(agg, &MergeOptions::default(), max_rank))?;
            let (m, examples) = env.test.evaluate_examples(&merged.deltas())?;
            let setting = format!("{label} {name}");
            predictions.extend(tag.predictions(&format!("federated {setting}"), cfg.data_seed, &examples));
            rows.push(tag.row(INFO.name, &setting, "accuracy", m.accuracy));
        }
        Ok(Rows::with_predictions(rows, predictions))
    }
}
