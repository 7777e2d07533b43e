//! One federated simulation: the client split, the clients drawn each round, each client's
//! starting adapter and local training, and the server's merge.

use super::FederatedOptions;
use crate::adapter::{Adapter, LoraFactors};
use crate::eval::{sum_deltas, Deltas, Metrics};
use crate::federated::global::GlobalModel;
use crate::federated::local::label_weighted_metrics;
use crate::federated::split::{label_histogram, split};
use crate::lab::TaskEnv;
use crate::merge::{merge, refactor};
use crate::model::lora::LoraVars;
use crate::model::{Backbone, NoBranch, Numerics};
use crate::train::{train_adapter, TrainConfig};
use crate::util::{rng_for, Fnv64};
use anyhow::{Context, Result};
use candle_core::Tensor;
use rand::seq::SliceRandom;
use std::collections::BTreeMap;
use std::time::Instant;

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
    /// Metrics of the client's local model after local training on the global test set (when
    /// clients are evaluated).
    pub test: Option<Metrics>,
    /// The same evaluation reweighted to the client's label distribution
    /// ([`label_weighted_metrics`]; the split holds no local test data).
    pub local_test: Option<Metrics>,
    /// Metrics of the local model on the client's own training examples.
    pub train: Option<Metrics>,
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
    /// The final global model (adapter, plus the residual folded into the frozen weights when
    /// the aggregator returns one).
    pub global: GlobalModel,
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
    let merge_opts = crate::federated::aggregation_options(&opts.aggregator, &opts.merge, max_rank);
    let mut global = GlobalModel::new(init.clone());
    let mut rounds = vec![RoundRecord {
        round: 0,
        selected: Vec::new(),
        test: env.test.evaluate(&global.deltas())?,
        wall_seconds: 0.0,
    }];
    let mut clients = Vec::new();
    let mut last_uploads = Vec::new();
    let ctx = ClientContext { backbone, env, cfg, opts, parts: &parts, histogram: &histogram, init: &init };
    for round in 1..=opts.rounds {
        let started = Instant::now();
        let selected = draw_clients(opts.clients, opts.clients_per_round(), cfg.seed, round);
        let weights = aggregation_weights(&parts, &selected);
        let total: f64 = weights.iter().sum();
        let mut uploads = Vec::new();
        for (&c, &w) in selected.iter().zip(&weights) {
            let (record, upload) = ctx.train(round, c, w / total, &global, &mut on_step)?;
            clients.push(record);
            uploads.push((c, upload));
        }
        let refs: Vec<&Adapter> = uploads.iter().map(|(_, a)| a).collect();
        let merged = merge(&refs, &weights, &opts.aggregator, &merge_opts)
            .with_context(|| format!("aggregation in round {round}"))?;
        global.absorb(&merged).with_context(|| format!("aggregation in round {round}"))?;
        let test = env.test.evaluate(&global.deltas())?;
        rounds.push(RoundRecord { round, selected, test, wall_seconds: started.elapsed().as_secs_f64() });
        last_uploads = uploads;
    }
    Ok(FederatedRun { split: parts, histogram, rounds, clients, global, last_uploads })
}

/// What every client of one simulation shares.
struct ClientContext<'s> {
    /// The frozen backbone.
    backbone: &'s Backbone,
    /// The task.
    env: &'s TaskEnv,
    /// The simulation's training config (method, run seed, local steps, LoRA spec).
    cfg: &'s TrainConfig,
    /// The federated options.
    opts: &'s FederatedOptions,
    /// Example indices of every client.
    parts: &'s [Vec<usize>],
    /// Client × class counts of the training examples.
    histogram: &'s [Vec<usize>],
    /// The common initialisation.
    init: &'s Adapter,
}

impl ClientContext<'_> {
    /// Trains client `c` in `round` from the global model; returns its record (server weight
    /// `weight`) and its upload.
    fn train(
        &self,
        round: usize,
        c: usize,
        weight: f64,
        global: &GlobalModel,
        on_step: &mut impl FnMut(),
    ) -> Result<(ClientRecord, Adapter)> {
        let (backbone, env, cfg, opts, parts) = (self.backbone, self.env, self.cfg, self.opts, self.parts);
        let rank = opts.rank_of(c, cfg.lora.rank);
        let first_block = opts.first_block_of(c, backbone.num_blocks());
        let start = client_start(&global.adapter, self.init, rank, first_block)?;
        // The folded residual and the global modules below the client's blocks stay frozen in
        // its local model.
        let frozen = global.frozen_for(first_block);
        let local_bb;
        let inputs;
        let model = if frozen.is_empty() {
            inputs = client_inputs(&env.train_inputs, &parts[c])?;
            backbone
        } else {
            local_bb = backbone.with_deltas(&frozen)?;
            let emb = client_inputs(std::slice::from_ref(&env.train_inputs[0]), &parts[c])?.remove(0);
            inputs = block_inputs_from(&local_bb, &emb)?;
            &local_bb
        };
        let y: Vec<u32> = parts[c].iter().map(|&i| env.data.train.labels[i]).collect();
        let mut lora = cfg.lora.clone();
        lora.rank = rank;
        let ccfg = TrainConfig { seed: client_seed(cfg.seed, round, c), lora, ..cfg.clone() };
        let out = train_adapter(model, &env.head, &inputs, &y, &ccfg, Some(&start), |_| on_step())?;
        let (test, local_test, train) = if opts.evaluate_clients {
            let local = sum_deltas(&frozen, &out.adapter.deltas());
            let (test, examples) = env.test.evaluate_examples(&local)?;
            let local_test = label_weighted_metrics(&examples, &self.histogram[c])
                .with_context(|| format!("local test metrics of client {c}"))?;
            let train = env.train.subset(&parts[c])?.evaluate(&local)?;
            (Some(test), Some(local_test), Some(train))
        } else {
            (None, None, None)
        };
        let record = ClientRecord {
            round,
            client: c,
            examples: parts[c].len(),
            weight,
            rank,
            first_block,
            test,
            local_test,
            train,
        };
        Ok((record, out.adapter))
    }
}
