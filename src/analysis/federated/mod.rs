//! Federated LoRA / CopRA: `K` clients hold a label-skewed (Dirichlet) or IID split of a
//! task's training shots; each round a fraction of them trains locally from the global adapter
//! and a server merges the uploads with one of the [`crate::merge`] operators, weighted by the
//! clients' example counts (FedAvg / FedIT factor averaging by default).
//!
//! Conventions (the CopRA paper gives none; these follow copra-method §6.1's proposal):
//! - round 1 starts every client from one common fresh initialisation (same `A`, `B = 0`,
//!   seeded by the run seed only, so LoRA and CopRA start from the same point); CopRA's schedule
//!   restarts for every client and round (`steps` = local steps);
//! - the split, the clients drawn each round and the initialisation depend on the run seed,
//!   never on the method, so both methods see the same clients;
//! - a client's run seed is [`client_seed`]`(seed, round, client)`;
//! - heterogeneous ranks (`client_ranks`, cycled over clients): the common initialisation has
//!   the largest rank and a client of rank `r` takes its first `r` rows of `A`; from round 2 a
//!   client receives the global adapter as is when the ranks match and its best rank-`r`
//!   approximation (truncated SVD of `ΔW`, FlexLoRA / HetLoRA redistribution) otherwise; factor
//!   averaging zero-pads ranks, `stack` and `delta-svd` handle them natively;
//! - block subsets (`client_top_blocks`, cycled): a client with `k` top blocks trains only
//!   blocks `≥ L − k`, keeping the global adapter's lower modules frozen in its local model;
//!   it uploads only its trained modules, and the merge counts a missing module as `ΔW = 0`
//!   (the [`crate::merge`] convention);
//! - dense merges (task arithmetic, TIES) are re-factorised by truncated SVD to the largest
//!   client rank, so the global model is always an adapter;
//! - FedEx-LoRA (`fedex`) returns the averaged factors plus the averaging residual; the global
//!   model ([`GlobalModel`]) adds the residual to its folded residual, clients of the next round
//!   train on the backbone with that residual merged into the frozen weights and start from the
//!   averaged factors, and the global model is evaluated with residual + adapter (exactly the
//!   weighted mean of the clients' `ΔW` in a round where every client adapts every block);
//! - every participating client's local model (after local training) is evaluated on the global
//!   test set, on its own label distribution (the per-class test metrics weighted by its
//!   training class counts: the split holds no local test data) and on its own training
//!   examples (`evaluate_clients`).

mod figures;
mod options;
mod rows;
mod simulation;

pub use crate::federated::global::GlobalModel;
pub use options::FederatedOptions;
pub use rows::{ClientRow, HistRow, RoundCis, RoundRow, SummaryRow};
pub use simulation::{
    aggregation_weights, client_inputs, client_seed, client_start, draw_clients, run_federated, split_seed,
    ClientRecord, FederatedRun, RoundRecord,
};

use super::summary::group_ci;
use super::Outputs;
use crate::lab::TaskEnv;
use crate::model::Backbone;
use crate::progress::Progress;
use crate::report::table::Table;
use crate::stats::MeanCi;
use crate::train::{Method, TrainConfig};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::time::Instant;

/// A per-method summary for the command's printout.
#[derive(Clone, Debug)]
pub struct FederatedSummary {
    /// Method name.
    pub method: String,
    /// Global test accuracy per round (round 0 = initialisation), mean and CI over seeds.
    pub global: Vec<(usize, MeanCi)>,
    /// Mean over clients of the local model's global test accuracy in the last round, mean and
    /// CI over seeds.
    pub last_client_mean: Option<MeanCi>,
    /// Mean over clients of the local model's accuracy on its own training examples in the last
    /// round, mean and CI over seeds.
    pub last_client_train_mean: Option<MeanCi>,
    /// Total wall time of the method's simulations, seconds.
    pub wall_seconds: f64,
}

/// Runs the simulation for every method and seed on one task and collects tables and figures.
/// `base` holds the shared training settings (`steps` = local steps per round).
pub fn analyze(
    backbone: &Backbone,
    env: &TaskEnv,
    base: &TrainConfig,
    methods: &[Method],
    seeds: &[u64],
    opts: &FederatedOptions,
    progress: &Progress,
) -> Result<(Outputs, Vec<FederatedSummary>)> {
    if methods.is_empty() || seeds.is_empty() {
        bail!("federated needs at least one method and one seed (e.g. --methods lora,copra --seeds 1)");
    }
    let sim = simulate_grid(backbone, env, base, methods, seeds, opts, progress)?;
    let names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    let cis = AccuracyCis::of(&sim)?;
    let out = Outputs { tables: tables(&sim, &cis), figures: figures(&names, &sim, &cis, env, seeds[0], opts)? };
    Ok((out, method_summaries(&names, &cis, &sim.walls, opts.rounds)))
}

/// The rows of every simulation of a (seed, method) grid.
struct Simulated {
    /// Global metrics per round.
    rounds: Vec<RoundRow>,
    /// Client participations.
    clients: Vec<ClientRow>,
    /// Client × class counts of every seed's split (from the first method's run).
    histogram: Vec<HistRow>,
    /// The split of the first seed, for the figure.
    first_histogram: Option<Vec<Vec<usize>>>,
    /// Total wall time of each method's simulations, seconds.
    walls: BTreeMap<String, f64>,
}

/// Simulates every method for every seed (seeds outer), with a progress bar per simulation.
fn simulate_grid(
    backbone: &Backbone,
    env: &TaskEnv,
    base: &TrainConfig,
    methods: &[Method],
    seeds: &[u64],
    opts: &FederatedOptions,
    progress: &Progress,
) -> Result<Simulated> {
    let mut sim = Simulated {
        rounds: Vec::new(),
        clients: Vec::new(),
        histogram: Vec::new(),
        first_histogram: None,
        walls: BTreeMap::new(),
    };
    let steps_per_run = (opts.rounds * opts.clients_per_round() * base.steps) as u64;
    for &seed in seeds {
        for method in methods {
            let cfg = TrainConfig { method: *method, seed, ..base.clone() };
            let bar = progress.bar(steps_per_run, &format!("federated {} seed {seed}", method.name()));
            let started = Instant::now();
            let run = run_federated(backbone, env, &cfg, opts, || bar.inc(1))?;
            bar.finish_and_clear();
            *sim.walls.entry(method.name()).or_default() += started.elapsed().as_secs_f64();
            sim.rounds.extend(run.rounds.iter().map(|r| RoundRow::new(&method.name(), seed, r)));
            sim.clients.extend(run.clients.iter().map(|c| ClientRow::new(&method.name(), seed, c)));
            if Some(method) == methods.first() {
                sim.histogram.extend(HistRow::of_split(seed, &run.histogram, &env.data.class_names));
                if sim.first_histogram.is_none() {
                    sim.first_histogram = Some(run.histogram.clone());
                }
            }
        }
    }
    Ok(sim)
}

/// Accuracy over seeds per (method, round).
struct AccuracyCis {
    /// Test accuracy of the global adapter.
    global: RoundCis,
    /// Mean over the evaluated clients of their local models' test accuracy.
    clients: RoundCis,
    /// Mean over the evaluated clients of their local models' accuracy on their label
    /// distributions.
    clients_local: RoundCis,
    /// Mean over the evaluated clients of their local models' accuracy on their training examples.
    clients_train: RoundCis,
}

impl AccuracyCis {
    /// The CIs of a grid's rows: client means are taken per (method, seed, round) first.
    fn of(sim: &Simulated) -> Result<Self> {
        let global = group_ci(sim.rounds.iter().map(|r| ((r.method.clone(), r.round), r.test_accuracy)))?;
        Ok(Self {
            global,
            clients: client_mean_ci(&sim.clients, |c| c.test_accuracy)?,
            clients_local: client_mean_ci(&sim.clients, |c| c.local_test_accuracy)?,
            clients_train: client_mean_ci(&sim.clients, |c| c.train_accuracy)?,
        })
    }

    /// The summary table's `(metric, CIs)` pairs.
    fn metrics(&self) -> [(&'static str, &RoundCis); 4] {
        [
            ("global_accuracy", &self.global),
            ("mean_client_accuracy", &self.clients),
            ("mean_client_local_accuracy", &self.clients_local),
            ("mean_client_train_accuracy", &self.clients_train),
        ]
    }
}

/// `value` averaged over the evaluated clients of each (method, seed, round), then its CI over
/// seeds per (method, round).
fn client_mean_ci(clients: &[ClientRow], value: impl Fn(&ClientRow) -> Option<f64>) -> Result<RoundCis> {
    let mut per_seed: BTreeMap<(String, i64, i64), Vec<f64>> = BTreeMap::new();
    for c in clients {
        if let Some(a) = value(c) {
            per_seed.entry((c.method.clone(), c.seed, c.round)).or_default().push(a);
        }
    }
    group_ci(per_seed.iter().map(|((m, _, r), xs)| ((m.clone(), *r), xs.iter().sum::<f64>() / xs.len() as f64)))
}

/// The figures: accuracy per round, the clients of the last round (when evaluated) and the
/// first seed's label split.
fn figures(
    names: &[String],
    sim: &Simulated,
    cis: &AccuracyCis,
    env: &TaskEnv,
    first_seed: u64,
    opts: &FederatedOptions,
) -> Result<Vec<(String, String)>> {
    let mut figs =
        vec![("federated_rounds.svg".into(), figures::rounds_figure(names, &cis.global, &cis.clients, opts)?)];
    if opts.evaluate_clients {
        figs.push((
            "federated_clients.svg".into(),
            figures::clients_figure(names, &sim.clients, &sim.rounds, first_seed, opts.rounds as i64)?,
        ));
    }
    if let Some(h) = &sim.first_histogram {
        figs.push((
            "federated_label_histogram.svg".into(),
            figures::histogram_figure(h, &env.data.class_names, first_seed, &opts.split)?,
        ));
    }
    Ok(figs)
}

/// The tables: rounds, clients, label histogram and the summary over seeds.
fn tables(sim: &Simulated, cis: &AccuracyCis) -> Vec<(String, Table)> {
    vec![
        ("federated_rounds.parquet".into(), Table::from_rows(&sim.rounds)),
        ("federated_clients.parquet".into(), Table::from_rows(&sim.clients)),
        ("federated_label_histogram.parquet".into(), Table::from_rows(&sim.histogram)),
        ("federated_summary.parquet".into(), Table::from_rows(&SummaryRow::of_cis(&cis.metrics()))),
    ]
}

/// One printout summary per method, in the order given.
fn method_summaries(
    names: &[String],
    cis: &AccuracyCis,
    walls: &BTreeMap<String, f64>,
    rounds: usize,
) -> Vec<FederatedSummary> {
    names
        .iter()
        .map(|m| FederatedSummary {
            method: m.clone(),
            global: cis
                .global
                .iter()
                .filter(|((mm, _), _)| mm == m)
                .map(|((_, r), c)| (*r as usize, c.clone()))
                .collect(),
            last_client_mean: cis.clients.get(&(m.clone(), rounds as i64)).cloned(),
            last_client_train_mean: cis.clients_train.get(&(m.clone(), rounds as i64)).cloned(),
            wall_seconds: walls.get(m).copied().unwrap_or(0.0),
        })
        .collect()
}

#[cfg(test)]
mod tests;
