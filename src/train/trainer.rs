//! The LoRA / CopRA training loop on a frozen backbone.
//!
//! Few-shot training sets are small and un-augmented, so the frozen hidden state
//! entering every block is computed once for all training images. A step whose
//! lowest active group sits at block ℓ starts its forward there: blocks below ℓ
//! would compute exactly the cached values, and with no trainable tensor below ℓ
//! the backward pass stops at ℓ by construction.

use super::config::TrainConfig;
use super::divergence;
use super::optim::{AdamW, AdamWConfig};
use super::schedule::{cosine_lr, sample_mask, Schedule};
use crate::adapter::{group_keys, Adapter, ModuleKey};
use crate::model::head::Head;
use crate::model::lora::{LoraVars, TrainingBranch};
use crate::model::{Backbone, Branch, Numerics};
use crate::util::{rng_for, Rng};
use anyhow::Result;
use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use std::collections::BTreeSet;
use std::time::Instant;

/// One optimizer step's record (a row of `train_log.parquet`).
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// Optimizer step, 0-based.
    pub step: usize,
    /// Training loss of the batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f64,
    /// Participation probability p(t).
    pub p: f64,
    /// Active groups (indices into the grouping's group list).
    pub active_groups: Vec<usize>,
    /// Block where the forward pass started.
    pub start_block: usize,
}

/// What a training run produces.
pub struct TrainOutput {
    /// The trained adapter.
    pub adapter: Adapter,
    /// One record per step.
    pub log: Vec<StepRecord>,
    /// Wall time of the loop in seconds.
    pub wall_seconds: f64,
}

/// Performance switches of the training loop (they never change the result).
#[derive(Clone, Copy, Debug)]
pub struct LoopOptions {
    /// Start each step's forward at the lowest active block from the cached frozen inputs
    /// (true, the default), or always at the embeddings (for benchmarks).
    pub skip_frozen_prefix: bool,
}

impl Default for LoopOptions {
    fn default() -> Self {
        Self { skip_frozen_prefix: true }
    }
}

/// What the training loop optimises: the variables, the modules they adapt, and the LoRA
/// branch a step runs with. [`LoraVars`] trains an adapter's factors; a curve between two
/// adapters (`train::curve`) trains its control point.
pub trait Trainable {
    /// The adapted modules (the schedule switches their groups on and off).
    fn keys(&self) -> Vec<ModuleKey>;
    /// The variables the optimizer updates, in a fixed order.
    fn vars(&self) -> Vec<Var>;
    /// The branch of one step over the `active` modules, each active output multiplied by
    /// `active_scale` (1 unless the run rescales, [`crate::train::schedule::Rescale`]), with
    /// input dropout `dropout` drawn from `rng`.
    fn branch<'a>(
        &'a self,
        active: &'a BTreeSet<ModuleKey>,
        active_scale: f64,
        dropout: f64,
        rng: &'a mut Rng,
    ) -> Result<Box<dyn Branch + 'a>>;
}

impl Trainable for LoraVars {
    fn keys(&self) -> Vec<ModuleKey> {
        self.vars.keys().copied().collect()
    }
    fn vars(&self) -> Vec<Var> {
        self.vars.values().flat_map(|(a, b)| [a.clone(), b.clone()]).collect()
    }
    fn branch<'a>(
        &'a self,
        active: &'a BTreeSet<ModuleKey>,
        active_scale: f64,
        dropout: f64,
        rng: &'a mut Rng,
    ) -> Result<Box<dyn Branch + 'a>> {
        Ok(Box::new(TrainingBranch::new(self, active, dropout, rng).with_active_scale(active_scale)))
    }
}

/// Trains an adapter. `train_inputs[ℓ]` holds the frozen hidden states entering block ℓ for
/// every training image (`Backbone::frozen_block_inputs`); `on_step` is called after each step.
pub fn train_adapter(
    backbone: &Backbone,
    head: &Head,
    train_inputs: &[Tensor],
    labels: &[u32],
    cfg: &TrainConfig,
    init: Option<&Adapter>,
    on_step: impl FnMut(&StepRecord),
) -> Result<TrainOutput> {
    train_adapter_with(backbone, head, train_inputs, labels, cfg, init, LoopOptions::default(), on_step)
}

/// `train_adapter` with explicit loop options.
#[allow(clippy::too_many_arguments)]
pub fn train_adapter_with(
    backbone: &Backbone,
    head: &Head,
    train_inputs: &[Tensor],
    labels: &[u32],
    cfg: &TrainConfig,
    init: Option<&Adapter>,
    options: LoopOptions,
    mut on_step: impl FnMut(&StepRecord),
) -> Result<TrainOutput> {
    let lora = lora_vars(backbone, cfg, init)?;
    let (log, wall_seconds) =
        train_loop(backbone, head, train_inputs, labels, cfg, &lora, options, &mut |r: &StepRecord, _: &LoraVars| {
            on_step(r);
            Ok(())
        })?;
    Ok(TrainOutput { adapter: lora.to_adapter()?, log, wall_seconds })
}

/// Trains like [`train_adapter`] and also returns the adapter after each step listed in `at`
/// (1-based step counts: `at = [T]` is the final adapter). The training itself, hence the
/// final adapter, is the same as without snapshots.
pub fn train_adapter_snapshots(
    backbone: &Backbone,
    head: &Head,
    train_inputs: &[Tensor],
    labels: &[u32],
    cfg: &TrainConfig,
    at: &[usize],
) -> Result<(TrainOutput, Vec<(usize, Adapter)>)> {
    let mut snaps = Vec::new();
    let lora = lora_vars(backbone, cfg, None)?;
    let (log, wall_seconds) = train_loop(
        backbone,
        head,
        train_inputs,
        labels,
        cfg,
        &lora,
        LoopOptions::default(),
        &mut |r: &StepRecord, lora: &LoraVars| {
            if at.contains(&(r.step + 1)) {
                snaps.push((r.step + 1, lora.to_adapter()?));
            }
            Ok(())
        },
    )?;
    Ok((TrainOutput { adapter: lora.to_adapter()?, log, wall_seconds }, snaps))
}

/// The trainable factors a run starts from: `init`'s, or fresh ones (seeded by `cfg.seed`).
fn lora_vars(backbone: &Backbone, cfg: &TrainConfig, init: Option<&Adapter>) -> Result<LoraVars> {
    cfg.validate()?;
    let device = backbone.device().clone();
    match init {
        Some(a) => LoraVars::from_adapter(a, &device),
        None => {
            let blocks = cfg.encoders.blocks(backbone)?;
            LoraVars::init(&cfg.lora, backbone, &blocks, &mut rng_for(cfg.seed, "lora-init"), &device)
        }
    }
}

/// The training loop over any [`Trainable`]: batches, the participation schedule, AdamW with
/// the cosine learning rate, divergence checks. `on_step` sees each step's record and the
/// parameters after the step. Returns the log and the loop's wall time in seconds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn train_loop<T: Trainable>(
    backbone: &Backbone,
    head: &Head,
    train_inputs: &[Tensor],
    labels: &[u32],
    cfg: &TrainConfig,
    params: &T,
    options: LoopOptions,
    on_step: &mut dyn FnMut(&StepRecord, &T) -> Result<()>,
) -> Result<(Vec<StepRecord>, f64)> {
    cfg.validate()?;
    let device = backbone.device().clone();
    let keys = params.keys();
    let groups = group_keys(&keys, cfg.grouping, backbone);
    let vars = params.vars();
    let mut opt = AdamW::new(
        vars.clone(),
        AdamWConfig { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weight_decay: cfg.weight_decay },
    )?;
    let schedule = Schedule { method: cfg.method, p0: cfg.p0, stage1_ratio: cfg.stage1_ratio, total_steps: cfg.steps };
    let mut mask_rng = rng_for(cfg.seed, "copra-mask");
    let mut order_rng = rng_for(cfg.seed, "batch-order");
    let mut dropout_rng = rng_for(cfg.seed, "lora-dropout");
    let n = labels.len();
    let batch = cfg.batch_size.min(n);
    let mut order: Vec<u32> = (0..n as u32).collect();
    let mut cursor = n; // forces a shuffle on the first step
    let mut log = Vec::with_capacity(cfg.steps);
    let started = Instant::now();
    for step in 0..cfg.steps {
        let p = schedule.p(step);
        let mask = sample_mask(p, groups.len(), &mut mask_rng);
        let active: BTreeSet<ModuleKey> =
            groups.iter().zip(&mask).filter(|(_, on)| **on).flat_map(|(g, _)| g.iter().copied()).collect();
        // With nothing active the step runs from the embeddings (as it always has, so that
        // runs keep their bits); otherwise from the lowest active block on the input's path.
        let start = if options.skip_frozen_prefix && !active.is_empty() {
            backbone.first_input_block(active.iter().map(|k| k.block))
        } else {
            0
        };
        // Batch indices: reshuffle at each epoch boundary.
        let mut idx = Vec::with_capacity(batch);
        while idx.len() < batch {
            if cursor == n {
                order.shuffle(&mut order_rng);
                cursor = 0;
            }
            idx.push(order[cursor]);
            cursor += 1;
        }
        let idx_t = Tensor::from_slice(&idx, idx.len(), &device)?;
        let x = train_inputs[start].index_select(&idx_t, 0)?;
        let y: Vec<u32> = idx.iter().map(|i| labels[*i as usize]).collect();
        let y = Tensor::from_vec(y, batch, &device)?;
        let active_scale = cfg.rescale.active_scale(p, groups.len());
        let branch = params.branch(&active, active_scale, cfg.lora.dropout, &mut dropout_rng)?;
        let feats = backbone.forward_from(start, &x, branch.as_ref(), Numerics::Differentiable)?;
        let logits = head.classifier(backbone, branch.as_ref(), Numerics::Differentiable)?.logits(&feats)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
        let lr = cosine_lr(cfg.lr, cfg.min_lr, step, cfg.steps);
        let loss_value = loss.to_scalar::<f32>()? as f64;
        divergence::check_loss(step, loss_value, cfg.lr)?;
        let grads = loss.backward()?;
        divergence::check_gradients(step, &grads, &vars, cfg.lr)?;
        opt.step(&grads, lr)?;
        divergence::check_parameters(step, &vars, cfg.lr)?;
        drop(branch);
        let record = StepRecord {
            step,
            loss: loss_value,
            lr,
            p,
            active_groups: mask.iter().enumerate().filter(|(_, on)| **on).map(|(i, _)| i).collect(),
            start_block: start,
        };
        on_step(&record, params)?;
        log.push(record);
    }
    Ok((log, started.elapsed().as_secs_f64()))
}
