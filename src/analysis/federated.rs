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
//!   client rank, so the global model is always an adapter.

use super::summary::{ci_columns, ci_series, group_ci, ordered_unique};
use super::Outputs;
use crate::adapter::{Adapter, LoraFactors};
use crate::eval::{Deltas, Metrics};
use crate::federated::split::{label_histogram, split, SplitMethod};
use crate::lab::TaskEnv;
use crate::merge::{merge, refactor, MergeMethod, MergeOptions};
use crate::model::lora::LoraVars;
use crate::model::{Backbone, NoBranch, Numerics};
use crate::progress::Progress;
use crate::report::plot::{Bar, BarGroup, BarPlot, Heatmap, LinePlot};
use crate::report::table::{Columns, Row, Table};
use crate::stats::MeanCi;
use crate::train::{train_adapter, Method, TrainConfig};
use crate::util::{rng_for, Fnv64};
use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::time::Instant;

/// Options of a federated simulation.
#[derive(Clone, Debug)]
pub struct FederatedOptions {
    /// Number of clients K.
    pub clients: usize,
    /// Partition of the training shots among the clients.
    pub split: SplitMethod,
    /// Communication rounds R (1 = one-shot merging).
    pub rounds: usize,
    /// Fraction of the clients drawn each round, in `(0, 1]` (at least one client).
    pub client_fraction: f64,
    /// Server aggregation operator.
    pub aggregator: MergeMethod,
    /// Merge options (LoRA Align, SVD rank, …); `pad_ranks` is always switched on.
    pub merge: MergeOptions,
    /// Per-client LoRA ranks, cycled over clients (empty: the training config's rank).
    pub client_ranks: Vec<usize>,
    /// Per-client number of top blocks adapted, cycled over clients (empty: every block).
    pub client_top_blocks: Vec<usize>,
    /// Evaluate every participating client's local model on the test set.
    pub evaluate_clients: bool,
}

impl Default for FederatedOptions {
    fn default() -> Self {
        Self {
            clients: 10,
            split: SplitMethod::Dirichlet { alpha: 0.5, min_size: 16 },
            rounds: 1,
            client_fraction: 1.0,
            aggregator: MergeMethod::parse(crate::merge::registry::DEFAULT_AGGREGATOR)
                .expect("the default aggregator parses"),
            merge: MergeOptions::default(),
            client_ranks: Vec::new(),
            client_top_blocks: Vec::new(),
            evaluate_clients: true,
        }
    }
}

impl FederatedOptions {
    /// Checks the options against a backbone of `num_blocks` blocks; errors name the option.
    pub fn validate(&self, num_blocks: usize) -> Result<()> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1 (1 = one-shot merging)");
        }
        if !(self.client_fraction > 0.0 && self.client_fraction <= 1.0) {
            bail!("--client-fraction {} must be in (0, 1]", self.client_fraction);
        }
        if self.client_ranks.contains(&0) {
            bail!("--client-ranks contains 0; every rank must be at least 1");
        }
        if let Some(k) = self.client_top_blocks.iter().find(|k| **k == 0 || **k > num_blocks) {
            bail!("--client-top-blocks value {k} is outside 1..={num_blocks} (the backbone's block count)");
        }
        self.aggregator.validate()
    }

    /// The rank of client `c` (`base` when no per-client ranks are set).
    pub fn rank_of(&self, c: usize, base: usize) -> usize {
        if self.client_ranks.is_empty() {
            base
        } else {
            self.client_ranks[c % self.client_ranks.len()]
        }
    }

    /// The lowest block client `c` adapts on a backbone of `num_blocks` blocks.
    pub fn first_block_of(&self, c: usize, num_blocks: usize) -> usize {
        if self.client_top_blocks.is_empty() {
            0
        } else {
            num_blocks - self.client_top_blocks[c % self.client_top_blocks.len()].min(num_blocks)
        }
    }

    /// How many clients take part in each round: `max(1, round(fraction · K))`.
    pub fn clients_per_round(&self) -> usize {
        ((self.client_fraction * self.clients as f64).round() as usize).clamp(1, self.clients.max(1))
    }
}

/// The run seed of client `client` in round `round` of a simulation with run seed `seed`.
pub fn client_seed(seed: u64, round: usize, client: usize) -> u64 {
    let mut h = Fnv64::new();
    h.update(b"federated-client");
    h.update(&seed.to_le_bytes());
    h.update(&(round as u64).to_le_bytes());
    h.update(&(client as u64).to_le_bytes());
    h.finish()
}

/// The seed of the client split of run seed `seed` (independent of the method).
pub fn split_seed(seed: u64) -> u64 {
    let mut h = Fnv64::new();
    h.update(b"federated-split");
    h.update(&seed.to_le_bytes());
    h.finish()
}

/// The clients drawn in `round` (sorted): all of them when `per_round ≥ clients`, otherwise a
/// uniform sample seeded by `(seed, round)`.
pub fn draw_clients(clients: usize, per_round: usize, seed: u64, round: usize) -> Vec<usize> {
    let mut all: Vec<usize> = (0..clients).collect();
    if per_round >= clients {
        return all;
    }
    all.shuffle(&mut rng_for(seed, &format!("federated-round-{round}")));
    let mut out = all[..per_round].to_vec();
    out.sort_unstable();
    out
}

/// Server weights of the participating clients: their example counts (FedAvg); the merge
/// normalises them to sum 1.
pub fn aggregation_weights(split: &[Vec<usize>], selected: &[usize]) -> Vec<f64> {
    selected.iter().map(|&c| split[c].len() as f64).collect()
}

/// The rows `idx` of every per-block tensor (a client's cached frozen activations).
pub fn client_inputs(train_inputs: &[Tensor], idx: &[usize]) -> Result<Vec<Tensor>> {
    let device = train_inputs.first().map(|t| t.device().clone()).context("no cached activations to select from")?;
    let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
    let ids = Tensor::from_vec(ids, idx.len(), &device)?;
    train_inputs.iter().map(|t| Ok(t.index_select(&ids, 0)?)).collect()
}

/// Hidden states entering every block on `model`'s input path, from the embeddings
/// `embedded` (`[N, T, D]`).
fn block_inputs_from(model: &Backbone, embedded: &Tensor) -> Result<Vec<Tensor>> {
    let mut out = vec![embedded.clone()];
    let mut h = embedded.clone();
    for b in 0..model.input_blocks() {
        h = model.block(b, &h, &NoBranch, Numerics::Fused)?;
        out.push(h.clone());
    }
    Ok(out)
}

/// The first `rank` rows of `A` and columns of `B`, zero-padded when `rank` is larger.
fn truncate(f: &LoraFactors, rank: usize) -> LoraFactors {
    LoraFactors { a: f.a.resized(rank, f.a.cols), b: f.b.resized(f.b.rows, rank) }
}

/// The starting adapter of a client of rank `rank` adapting blocks `≥ first_block`: the global
/// factors when the ranks match, the best rank-`rank` approximation of the global `ΔW`
/// otherwise; modules absent from the global adapter, and rows of `A` left zero by the
/// truncation, come from the common initialisation.
pub fn client_start(global: &Adapter, init: &Adapter, rank: usize, first_block: usize) -> Result<Adapter> {
    let mut spec = init.spec.clone();
    spec.rank = rank;
    let mut modules = BTreeMap::new();
    for (key, f0) in init.modules.iter().filter(|(k, _)| k.block >= first_block) {
        let fresh = truncate(f0, rank);
        let f = match global.modules.get(key) {
            Some(g) if g.rank() == rank && global.spec.scale_for(rank) == spec.scale_for(rank) => g.clone(),
            Some(_) => {
                let one: Deltas = [(*key, global.delta(key))].into();
                let mut re =
                    refactor(&one, &spec, rank)?.modules.remove(key).context("internal: refactor lost a module")?;
                for i in 0..rank {
                    let row = i * re.a.cols..(i + 1) * re.a.cols;
                    if re.a.data[row.clone()].iter().all(|v| *v == 0.0) {
                        re.a.data[row.clone()].copy_from_slice(&fresh.a.data[row]);
                    }
                }
                re
            }
            None => fresh,
        };
        modules.insert(*key, f);
    }
    Ok(Adapter { spec, modules })
}

/// Global metrics after one round.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundRecord {
    /// Round (0 = the common initialisation).
    pub round: usize,
    /// Clients that took part.
    pub selected: Vec<usize>,
    /// Test metrics of the global adapter.
    pub test: Metrics,
    /// Wall time of the round (local training, evaluation, aggregation), seconds.
    pub wall_seconds: f64,
}

/// One client's participation in one round.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientRecord {
    /// Round (1-based).
    pub round: usize,
    /// Client index.
    pub client: usize,
    /// Training examples held.
    pub examples: usize,
    /// Normalised server weight.
    pub weight: f64,
    /// LoRA rank.
    pub rank: usize,
    /// Lowest adapted block.
    pub first_block: usize,
    /// Test metrics of the client's local model (when clients are evaluated).
    pub test: Option<Metrics>,
}

/// Everything one federated simulation produced.
pub struct FederatedRun {
    /// Example indices of every client.
    pub split: Vec<Vec<usize>>,
    /// Client × class counts.
    pub histogram: Vec<Vec<usize>>,
    /// Round records, round 0 first.
    pub rounds: Vec<RoundRecord>,
    /// Client records of every round.
    pub clients: Vec<ClientRecord>,
    /// The final global adapter.
    pub global: Adapter,
    /// The uploads of the last round, `(client, adapter)`.
    pub last_uploads: Vec<(usize, Adapter)>,
}

/// Runs one federated simulation with `cfg` (method, seed, local steps, LoRA spec) on `env`.
/// `on_step` is called after every local optimiser step.
pub fn run_federated(
    backbone: &Backbone,
    env: &TaskEnv,
    cfg: &TrainConfig,
    opts: &FederatedOptions,
    mut on_step: impl FnMut(),
) -> Result<FederatedRun> {
    cfg.validate()?;
    let nb = backbone.num_blocks();
    opts.validate(nb)?;
    let labels: Vec<usize> = env.data.train.labels.iter().map(|&l| l as usize).collect();
    let parts = split(&labels, opts.clients, &opts.split, split_seed(cfg.seed))
        .with_context(|| format!("cannot split {} training images among {} clients", labels.len(), opts.clients))?;
    let histogram = label_histogram(&labels, &parts, env.data.num_classes())?;
    let max_rank = (0..opts.clients).map(|c| opts.rank_of(c, cfg.lora.rank)).max().unwrap_or(cfg.lora.rank);
    let mut spec = cfg.lora.clone();
    spec.rank = max_rank;
    let blocks = cfg.encoders.blocks(backbone)?;
    let mut rng = rng_for(cfg.seed, "federated-global-init");
    let init = LoraVars::init(&spec, backbone, &blocks, &mut rng, backbone.device())?.to_adapter()?;
    let mut merge_opts = opts.merge.clone();
    merge_opts.pad_ranks = true;
    if !opts.aggregator.keeps_low_rank() && merge_opts.refactor_rank.is_none() {
        merge_opts.refactor_rank = Some(max_rank);
    }
    let mut global = init.clone();
    let mut rounds = vec![RoundRecord {
        round: 0,
        selected: Vec::new(),
        test: env.test.evaluate(&global.deltas())?,
        wall_seconds: 0.0,
    }];
    let mut clients = Vec::new();
    let mut last_uploads = Vec::new();
    let embedded = &env.train_inputs[0];
    for round in 1..=opts.rounds {
        let started = Instant::now();
        let selected = draw_clients(opts.clients, opts.clients_per_round(), cfg.seed, round);
        let weights = aggregation_weights(&parts, &selected);
        let total: f64 = weights.iter().sum();
        let global_deltas = global.deltas();
        let mut uploads = Vec::new();
        for (&c, &w) in selected.iter().zip(&weights) {
            let rank = opts.rank_of(c, cfg.lora.rank);
            let first_block = opts.first_block_of(c, nb);
            let start = client_start(&global, &init, rank, first_block)?;
            // The global modules below the client's blocks stay frozen in its local model.
            let lower: Deltas =
                global_deltas.iter().filter(|(k, _)| k.block < first_block).map(|(k, v)| (*k, v.clone())).collect();
            let local_bb;
            let inputs;
            let model = if lower.is_empty() {
                inputs = client_inputs(&env.train_inputs, &parts[c])?;
                backbone
            } else {
                local_bb = backbone.with_deltas(&lower)?;
                let emb = client_inputs(std::slice::from_ref(embedded), &parts[c])?.remove(0);
                inputs = block_inputs_from(&local_bb, &emb)?;
                &local_bb
            };
            let y: Vec<u32> = parts[c].iter().map(|&i| env.data.train.labels[i]).collect();
            let mut lora = cfg.lora.clone();
            lora.rank = rank;
            let ccfg = TrainConfig { seed: client_seed(cfg.seed, round, c), lora, ..cfg.clone() };
            let out = train_adapter(model, &env.head, &inputs, &y, &ccfg, Some(&start), |_| on_step())?;
            let test = if opts.evaluate_clients {
                let mut local = lower.clone();
                local.extend(out.adapter.deltas());
                Some(env.test.evaluate(&local)?)
            } else {
                None
            };
            clients.push(ClientRecord {
                round,
                client: c,
                examples: parts[c].len(),
                weight: w / total,
                rank,
                first_block,
                test,
            });
            uploads.push((c, out.adapter));
        }
        let refs: Vec<&Adapter> = uploads.iter().map(|(_, a)| a).collect();
        let merged = merge(&refs, &weights, &opts.aggregator, &merge_opts)
            .with_context(|| format!("aggregation in round {round}"))?;
        global = merged.adapter().cloned().context("internal: the aggregation did not return an adapter")?;
        let test = env.test.evaluate(&global.deltas())?;
        rounds.push(RoundRecord { round, selected, test, wall_seconds: started.elapsed().as_secs_f64() });
        last_uploads = uploads;
    }
    Ok(FederatedRun { split: parts, histogram, rounds, clients, global, last_uploads })
}

/// A per-method summary for the command's printout.
#[derive(Clone, Debug)]
pub struct FederatedSummary {
    /// Method name.
    pub method: String,
    /// Global test accuracy per round (round 0 = initialisation), mean and CI over seeds.
    pub global: Vec<(usize, MeanCi)>,
    /// Mean over clients of the local test accuracy in the last round, mean and CI over seeds.
    pub last_client_mean: Option<MeanCi>,
    /// Total wall time of the method's simulations, seconds.
    pub wall_seconds: f64,
}

/// The global model after one round: a row of `federated_rounds.parquet`.
pub struct RoundRow {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: i64,
    /// Round (0 = the common initialisation).
    pub round: i64,
    /// Clients drawn this round.
    pub clients_selected: i64,
    /// Test loss of the global adapter.
    pub test_loss: f64,
    /// Test accuracy of the global adapter.
    pub test_accuracy: f64,
    /// Wall time of the round, seconds.
    pub wall_seconds: f64,
}

impl Row for RoundRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("method", |r| r.method.clone())
            .col("seed", |r| r.seed)
            .col("round", |r| r.round)
            .col("clients_selected", |r| r.clients_selected)
            .col("test_loss", |r| r.test_loss)
            .col("test_accuracy", |r| r.test_accuracy)
            .col("wall_seconds", |r| r.wall_seconds);
    }
}

/// Training images of one class held by one client: a row of `federated_label_histogram.parquet`.
pub struct HistRow {
    /// Run seed (the split depends on it).
    pub seed: i64,
    /// Client index.
    pub client: i64,
    /// Class index.
    pub class: i64,
    /// Class name.
    pub class_name: String,
    /// Images of the class the client holds.
    pub count: i64,
}

impl Row for HistRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("seed", |r| r.seed)
            .col("client", |r| r.client)
            .col("class", |r| r.class)
            .col("class_name", |r| r.class_name.clone())
            .col("count", |r| r.count);
    }
}

/// One client's local model in one round: a row of `federated_clients.parquet`.
pub struct ClientRow {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: i64,
    /// Round.
    pub round: i64,
    /// Client index.
    pub client: i64,
    /// Training images the client holds.
    pub examples: i64,
    /// The client's aggregation weight.
    pub weight: f64,
    /// The client's LoRA rank.
    pub rank: i64,
    /// The lowest block the client adapts.
    pub first_block: i64,
    /// Test loss of the local model (null when clients are not evaluated).
    pub test_loss: Option<f64>,
    /// Test accuracy of the local model (null when clients are not evaluated).
    pub test_accuracy: Option<f64>,
}

impl Row for ClientRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("method", |r| r.method.clone())
            .col("seed", |r| r.seed)
            .col("round", |r| r.round)
            .col("client", |r| r.client)
            .col("examples", |r| r.examples)
            .col("weight", |r| r.weight)
            .col("rank", |r| r.rank)
            .col("first_block", |r| r.first_block)
            .col("test_loss", |r| r.test_loss)
            .col("test_accuracy", |r| r.test_accuracy);
    }
}

/// One (method, round, metric) over seeds: a row of `federated_summary.parquet`.
pub struct SummaryRow {
    /// Method name.
    pub method: String,
    /// Round.
    pub round: i64,
    /// `global_accuracy` or `mean_client_accuracy`.
    pub metric: String,
    /// The metric over seeds.
    pub ci: MeanCi,
}

impl Row for SummaryRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("method", |r| r.method.clone()).col("round", |r| r.round).col("metric", |r| r.metric.clone());
        ci_columns(cols, |r| &r.ci);
    }
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
    let mut rr: Vec<RoundRow> = Vec::new();
    let mut cr: Vec<ClientRow> = Vec::new();
    let mut hist: Vec<HistRow> = Vec::new();
    let mut first_hist: Option<Vec<Vec<usize>>> = None;
    let mut walls: BTreeMap<String, f64> = BTreeMap::new();
    let steps_per_run = (opts.rounds * opts.clients_per_round() * base.steps) as u64;
    for &seed in seeds {
        for method in methods {
            let cfg = TrainConfig { method: *method, seed, ..base.clone() };
            let bar = progress.bar(steps_per_run, &format!("federated {} seed {seed}", method.name()));
            let started = Instant::now();
            let run = run_federated(backbone, env, &cfg, opts, || bar.inc(1))?;
            bar.finish_and_clear();
            *walls.entry(method.name()).or_default() += started.elapsed().as_secs_f64();
            rr.extend(run.rounds.iter().map(|r| RoundRow {
                method: method.name(),
                seed: seed as i64,
                round: r.round as i64,
                clients_selected: r.selected.len() as i64,
                test_loss: r.test.loss,
                test_accuracy: r.test.accuracy,
                wall_seconds: r.wall_seconds,
            }));
            cr.extend(run.clients.iter().map(|c| ClientRow {
                method: method.name(),
                seed: seed as i64,
                round: c.round as i64,
                client: c.client as i64,
                examples: c.examples as i64,
                weight: c.weight,
                rank: c.rank as i64,
                first_block: c.first_block as i64,
                test_loss: c.test.map(|m| m.loss),
                test_accuracy: c.test.map(|m| m.accuracy),
            }));
            if Some(method) == methods.first() {
                for (c, row) in run.histogram.iter().enumerate() {
                    for (k, &n) in row.iter().enumerate() {
                        hist.push(HistRow {
                            seed: seed as i64,
                            client: c as i64,
                            class: k as i64,
                            class_name: env.data.class_names[k].clone(),
                            count: n as i64,
                        });
                    }
                }
                if first_hist.is_none() {
                    first_hist = Some(run.histogram.clone());
                }
            }
        }
    }
    let names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    let global_ci = group_ci(rr.iter().map(|r| ((r.method.clone(), r.round), r.test_accuracy)))?;
    // Mean client accuracy per (method, seed, round), then over seeds.
    let mut per_seed: BTreeMap<(String, i64, i64), Vec<f64>> = BTreeMap::new();
    for c in &cr {
        if let Some(a) = c.test_accuracy {
            per_seed.entry((c.method.clone(), c.seed, c.round)).or_default().push(a);
        }
    }
    let client_ci =
        group_ci(per_seed.iter().map(|((m, _, r), xs)| ((m.clone(), *r), xs.iter().sum::<f64>() / xs.len() as f64)))?;
    let mut out = Outputs::default();
    out.figures.push(("federated_rounds.svg".into(), rounds_figure(&names, &global_ci, &client_ci, opts)?));
    if opts.evaluate_clients {
        out.figures
            .push(("federated_clients.svg".into(), clients_figure(&names, &cr, &rr, seeds[0], opts.rounds as i64)?));
    }
    if let Some(h) = &first_hist {
        out.figures.push((
            "federated_label_histogram.svg".into(),
            histogram_figure(h, &env.data.class_names, seeds[0], &opts.split)?,
        ));
    }
    let summaries = names
        .iter()
        .map(|m| FederatedSummary {
            method: m.clone(),
            global: global_ci
                .iter()
                .filter(|((mm, _), _)| mm == m)
                .map(|((_, r), c)| (*r as usize, c.clone()))
                .collect(),
            last_client_mean: client_ci.get(&(m.clone(), opts.rounds as i64)).cloned(),
            wall_seconds: walls.get(m).copied().unwrap_or(0.0),
        })
        .collect();
    out.tables.push(("federated_rounds.parquet".into(), Table::from_rows(&rr)));
    out.tables.push(("federated_clients.parquet".into(), Table::from_rows(&cr)));
    out.tables.push(("federated_label_histogram.parquet".into(), Table::from_rows(&hist)));
    let summary: Vec<SummaryRow> = global_ci
        .iter()
        .map(|((m, r), c)| (m, r, "global_accuracy", c))
        .chain(client_ci.iter().map(|((m, r), c)| (m, r, "mean_client_accuracy", c)))
        .map(|(m, r, metric, c)| SummaryRow { method: m.clone(), round: *r, metric: metric.into(), ci: c.clone() })
        .collect();
    out.tables.push(("federated_summary.parquet".into(), Table::from_rows(&summary)));
    Ok((out, summaries))
}

fn split_label(split: &SplitMethod) -> String {
    match split {
        SplitMethod::Iid => "IID split".into(),
        SplitMethod::Dirichlet { alpha, .. } => format!("Dirichlet(α = {alpha}) label skew"),
    }
}

fn rounds_figure(
    methods: &[String],
    global: &BTreeMap<(String, i64), MeanCi>,
    clients: &BTreeMap<(String, i64), MeanCi>,
    opts: &FederatedOptions,
) -> Result<String> {
    let mut series = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let pts: Vec<(f64, MeanCi)> =
            global.iter().filter(|((mm, _), _)| mm == m).map(|((_, r), c)| (*r as f64, c.clone())).collect();
        series.push(ci_series(&format!("{m} global"), &pts, false, Some(i % 10)));
        let pts: Vec<(f64, MeanCi)> =
            clients.iter().filter(|((mm, _), _)| mm == m).map(|((_, r), c)| (*r as f64, c.clone())).collect();
        if !pts.is_empty() {
            series.push(ci_series(&format!("{m} mean client (local model)"), &pts, true, Some(i % 10)));
        }
    }
    let frozen =
        global.iter().find(|((_, r), _)| *r == 0).map(|(_, c)| (c.mean, "frozen backbone (round 0)".to_string()));
    crate::report::plot::line_plot_svg(&LinePlot {
        title: format!(
            "Federated {} ({} clients, {}, {} per round): global test accuracy per round (band = 95% t-CI over seeds)",
            opts.aggregator,
            opts.clients,
            split_label(&opts.split),
            opts.clients_per_round()
        ),
        x_label: "round (0 = common initialisation)".into(),
        y_label: "test accuracy".into(),
        series,
        reference_y: frozen,
        ..Default::default()
    })
}

fn clients_figure(methods: &[String], cr: &[ClientRow], rr: &[RoundRow], seed: u64, round: i64) -> Result<String> {
    let seed = seed as i64;
    let mut groups = Vec::new();
    let ids = ordered_unique(cr.iter().filter(|c| c.seed == seed && c.round == round).map(|c| c.client.to_string()));
    for id in ids {
        let mut bars = Vec::new();
        let mut n = 0;
        for m in methods {
            if let Some(c) =
                cr.iter().find(|c| &c.method == m && c.seed == seed && c.round == round && c.client.to_string() == id)
            {
                n = c.examples;
                if let Some(a) = c.test_accuracy {
                    bars.push(Bar { series: m.clone(), value: a, err: None });
                }
            }
        }
        groups.push(BarGroup { label: format!("{id} (n={n})"), bars });
    }
    let bars = methods
        .iter()
        .filter_map(|m| {
            rr.iter().find(|r| &r.method == m && r.seed == seed && r.round == round).map(|r| Bar {
                series: m.clone(),
                value: r.test_accuracy,
                err: None,
            })
        })
        .collect();
    groups.push(BarGroup { label: "global".into(), bars });
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: format!(
            "Local models of the clients and the merged global model, round {round}, seed {seed}: test accuracy"
        ),
        x_label: "client (training images held); global = the merged adapter".into(),
        y_label: "test accuracy".into(),
        groups,
        ..Default::default()
    })
}

fn histogram_figure(h: &[Vec<usize>], classes: &[String], seed: u64, split: &SplitMethod) -> Result<String> {
    crate::report::plot::heatmap_svg(&Heatmap {
        title: format!("Training images per client and class ({}, seed {seed})", split_label(split)),
        x_label: "class".into(),
        y_label: "client".into(),
        x_ticks: classes.to_vec(),
        y_ticks: (0..h.len()).map(|c| c.to_string()).collect(),
        values: h.iter().map(|r| r.iter().map(|v| *v as f64).collect()).collect(),
        annotate: true,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{ModuleKey, TargetModule};
    use crate::analysis::test_support::tiny_env;
    use crate::linalg::Matrix;

    fn tiny_cfg(method: Method) -> TrainConfig {
        let mut cfg = TrainConfig { method, steps: 3, batch_size: 8, lr: 1e-2, seed: 5, ..TrainConfig::default() };
        cfg.lora.targets = vec![TargetModule::Query, TargetModule::Value];
        cfg
    }

    fn max_diff(a: &Adapter, b: &Adapter) -> f32 {
        assert_eq!(a.keys(), b.keys());
        a.modules
            .iter()
            .flat_map(|(k, f)| {
                let g = &b.modules[k];
                f.a.data
                    .iter()
                    .zip(&g.a.data)
                    .chain(f.b.data.iter().zip(&g.b.data))
                    .map(|(x, y)| (x - y).abs())
                    .collect::<Vec<_>>()
            })
            .fold(0.0, f32::max)
    }

    #[test]
    fn one_client_one_round_factor_average_is_that_client() {
        let (bb, env) = tiny_env(3, 3, 24, 12);
        let opts = FederatedOptions { clients: 1, split: SplitMethod::Iid, ..Default::default() };
        for method in [Method::Lora, Method::Copra] {
            let run = run_federated(&bb, &env, &tiny_cfg(method), &opts, || {}).unwrap();
            assert_eq!(run.split, vec![(0..24).collect::<Vec<_>>()]);
            assert_eq!(run.last_uploads.len(), 1);
            assert!(max_diff(&run.global, &run.last_uploads[0].1) < 1e-6);
            assert_eq!(run.rounds.len(), 2);
            assert_eq!(run.rounds[1].test, run.clients[0].test.unwrap());
            assert_eq!(run.clients[0].weight, 1.0);
        }
    }

    #[test]
    fn aggregation_weights_are_client_sizes() {
        let (bb, env) = tiny_env(2, 3, 30, 12);
        let opts = FederatedOptions {
            clients: 3,
            split: SplitMethod::Dirichlet { alpha: 0.5, min_size: 4 },
            ..Default::default()
        };
        let run = run_federated(&bb, &env, &tiny_cfg(Method::Lora), &opts, || {}).unwrap();
        let sizes: Vec<usize> = run.split.iter().map(Vec::len).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 30);
        assert_eq!(aggregation_weights(&run.split, &[0, 1, 2]), sizes.iter().map(|s| *s as f64).collect::<Vec<_>>());
        for c in &run.clients {
            assert_eq!(c.examples, sizes[c.client]);
            assert!((c.weight - sizes[c.client] as f64 / 30.0).abs() < 1e-12);
        }
        // The global factors are the size-weighted mean of the uploads (FedIT).
        for (key, g) in &run.global.modules {
            let mut a = Matrix::zeros(g.a.rows, g.a.cols);
            for (c, up) in &run.last_uploads {
                a = a.add(&up.modules[key].a.scale(sizes[*c] as f32 / 30.0));
            }
            let diff = a.data.iter().zip(&g.a.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(diff < 1e-5, "{key}: {diff}");
        }
        // The histogram counts every example once.
        let per_client: Vec<usize> = run.histogram.iter().map(|r| r.iter().sum()).collect();
        assert_eq!(per_client, sizes);
    }

    #[test]
    fn heterogeneous_clients_ranks_and_top_blocks() {
        let (bb, env) = tiny_env(3, 3, 24, 12);
        let opts = FederatedOptions {
            clients: 2,
            split: SplitMethod::Iid,
            rounds: 2,
            client_ranks: vec![1, 3],
            client_top_blocks: vec![1, 3],
            aggregator: MergeMethod::parse("stack").unwrap(),
            ..Default::default()
        };
        let run = run_federated(&bb, &env, &tiny_cfg(Method::Copra), &opts, || {}).unwrap();
        assert_eq!(run.rounds.len(), 3);
        let (_, small) = &run.last_uploads[0];
        assert!(small.modules.keys().all(|k| k.block == 2));
        assert!(small.modules.values().all(|f| f.rank() == 1));
        let (_, big) = &run.last_uploads[1];
        assert_eq!(big.blocks(), [0, 1, 2].into());
        assert!(big.modules.values().all(|f| f.rank() == 3));
        // Stacking keeps the union of modules: blocks 0, 1 only from the full client.
        assert_eq!(run.global.blocks(), [0, 1, 2].into());
        assert_eq!(run.global.modules[&ModuleKey { block: 2, module: TargetModule::Query }].rank(), 4);
        assert_eq!(run.clients.iter().map(|c| c.first_block).collect::<Vec<_>>(), vec![2, 0, 2, 0]);
    }

    #[test]
    fn seeds_and_draws_are_deterministic() {
        assert_eq!(client_seed(1, 2, 3), client_seed(1, 2, 3));
        assert_ne!(client_seed(1, 2, 3), client_seed(1, 3, 2));
        assert_eq!(draw_clients(10, 10, 1, 1), (0..10).collect::<Vec<_>>());
        let d = draw_clients(10, 3, 1, 1);
        assert_eq!(d.len(), 3);
        assert_eq!(d, draw_clients(10, 3, 1, 1));
        let opts = FederatedOptions { client_fraction: 0.25, ..Default::default() };
        assert_eq!(opts.clients_per_round(), 3);
        assert!(FederatedOptions { client_top_blocks: vec![13], ..Default::default() }.validate(12).is_err());
        assert!(FederatedOptions { client_fraction: 0.0, ..Default::default() }.validate(12).is_err());
        assert_eq!(FederatedOptions { client_top_blocks: vec![4], ..Default::default() }.first_block_of(7, 12), 8);
    }
}
