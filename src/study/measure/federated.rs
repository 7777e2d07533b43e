//! Federated learning with heterogeneous clients. With one round (the default) the clients train
//! once from a common initialisation and every aggregator merges the same uploads
//! ([`aggregation_options`]); with `rounds = R > 1` each aggregator runs its own R-round
//! simulation (the global model of one round starts the next, so aggregators diverge). Rows per
//! aggregator: the global model's test accuracy after the last round, and its clients' mean
//! accuracies in that round (on their own training shots, on the test set, and on the test set
//! weighted to each client's label mix), so that a report can check that clients learn. A spec
//! with this measure trains no single runs: its cells are the simulations.

use super::base::{options, Cost, Input, Measure, MeasureInfo, OwnCell, ParseContext, Rows, Unit};
use crate::adapter::Adapter;
use crate::adapter::LoraSpec;
use crate::analysis::federated::{aggregation_weights, run_federated, ClientRecord, FederatedOptions, FederatedRun};
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
    /// Server aggregators, each applied to the same uploads (one round) or running its own
    /// simulation (several rounds).
    pub aggregators: Vec<String>,
    /// Communication rounds (default 1; left out of the cell ids when 1, so one-round grids keep
    /// theirs).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub rounds: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
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
        if w.rounds == 0 {
            return Err((ctx.at)("rounds", "must be at least 1".into()));
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

    /// The simulation options of split `split`, heterogeneity setting `hetero` and aggregator
    /// `aggregator`.
    fn simulation(&self, split: usize, hetero: usize, aggregator: usize) -> FederatedOptions {
        let h = &self.written.heterogeneity[hetero];
        FederatedOptions {
            clients: self.written.clients,
            split: self.splits[split].clone(),
            rounds: self.written.rounds,
            client_fraction: 1.0,
            aggregator: self.aggregators[aggregator].clone(),
            merge: MergeOptions::default(),
            client_ranks: h.ranks.clone(),
            client_top_blocks: h.top_blocks.clone(),
            evaluate_clients: true,
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
            "measure.federated clients × local_steps × rounds (× aggregators past one round; steps per cell)",
            w.clients as f64
                * w.local_steps as f64
                * w.rounds as f64
                * if w.rounds > 1 { w.aggregators.len() as f64 } else { 1.0 },
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
        let label = format!("{} {}", self.written.splits[s], self.written.heterogeneity[h].name);
        let (mut rows, mut predictions) = (Vec::new(), Vec::new());
        let one_round = self.written.rounds == 1;
        let shared = if one_round {
            Some(run_federated(&lab.backbone, env, cfg, &self.simulation(s, h, 0), || {})?)
        } else {
            None
        };
        for (i, (name, agg)) in self.written.aggregators.iter().zip(&self.aggregators).enumerate() {
            let own;
            let run = match &shared {
                Some(run) => run,
                None => {
                    own = run_federated(&lab.backbone, env, cfg, &self.simulation(s, h, i), || {})?;
                    &own
                }
            };
            let deltas = if one_round {
                let selected = &run.rounds.last().ok_or_else(|| anyhow!("internal: no federated round"))?.selected;
                let weights = aggregation_weights(&run.split, selected);
                let uploads: Vec<&Adapter> = run.last_uploads.iter().map(|(_, a)| a).collect();
                let max_rank = uploads.iter().flat_map(|a| a.modules.values().map(|f| f.rank())).max().unwrap_or(1);
                merge(&uploads, &weights, agg, &aggregation_options(agg, &MergeOptions::default(), max_rank))?.deltas()
            } else {
                run.global.deltas()
            };
            let (m, examples) = env.test.evaluate_examples(&deltas)?;
            let setting = format!("{label} {name}");
            predictions.extend(tag.predictions(&format!("federated {setting}"), cfg.data_seed, &examples));
            rows.push(tag.row(INFO.name, &setting, "accuracy", m.accuracy));
            for (metric, value) in last_round_client_means(run) {
                rows.push(tag.row(INFO.name, &setting, metric, value));
            }
        }
        Ok(Rows::with_predictions(rows, predictions))
    }
}

/// The mean over the last round's clients of their accuracy after local training: on their own
/// training shots, on the test set, and on the test set weighted to their label mix (metrics
/// left out when no client was evaluated on them).
fn last_round_client_means(run: &FederatedRun) -> Vec<(&'static str, f64)> {
    let last = run.rounds.last().map_or(0, |r| r.round);
    let clients: Vec<&ClientRecord> = run.clients.iter().filter(|c| c.round == last).collect();
    let mean = |get: fn(&ClientRecord) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = clients.iter().filter_map(|c| get(c)).collect();
        (!v.is_empty() && v.len() == clients.len()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    [
        ("client_train_accuracy", mean(|c| c.train.as_ref().map(|m| m.accuracy))),
        ("client_test_accuracy", mean(|c| c.test.as_ref().map(|m| m.accuracy))),
        ("client_local_accuracy", mean(|c| c.local_test.as_ref().map(|m| m.accuracy))),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect()
}
