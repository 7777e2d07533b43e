//! Pretraining the built-in backbone from scratch on the procedural source task
//! (every weight trainable, a throw-away linear head). Reproducible from its seed.

use crate::data;
use crate::lab::images_tensor;
use crate::model::head::loss_and_accuracy;
use crate::model::{Backbone, NoBranch, Numerics, Vit, VitConfig};
use crate::progress::Progress;
use crate::train::optim::{AdamW, AdamWConfig};
use crate::util::rng_for;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::time::Instant;

/// Pretraining hyper-parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// Architecture.
    pub model: VitConfig,
    /// Optimizer steps.
    pub steps: usize,
    /// Images per step (freshly generated every step).
    pub batch_size: usize,
    /// Peak learning rate (linear warm-up, cosine decay).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed of initialisation and data.
    pub seed: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        Self {
            model: VitConfig::tiny(),
            steps: 3000,
            batch_size: 128,
            lr: 1e-3,
            warmup: 200,
            weight_decay: 0.05,
            seed: 0,
        }
    }
}

/// What a pretraining run will cost, estimated from its config before any work.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PretrainCost {
    /// Trainable parameters of the backbone.
    pub parameters: f64,
    /// Peak memory in bytes: weights, gradients and two AdamW moments per parameter, plus
    /// one step's images and activations.
    pub memory_bytes: f64,
    /// Work: parameters × tokens × images seen (multiply-adds, up to a constant).
    pub work: f64,
}

impl PretrainConfig {
    /// The cost of pretraining with this config (in floating point: never overflows).
    pub fn cost(&self) -> PretrainCost {
        let m = &self.model;
        let (h, i, layers) = (m.hidden_size as f64, m.intermediate_size as f64, m.num_hidden_layers as f64);
        let patch = m.patch_size.max(1) as f64;
        let tokens = (m.image_size as f64 / patch).powi(2) + 1.0;
        let channels = m.num_channels as f64;
        let per_block = 4.0 * h * h + 2.0 * h * i + 9.0 * h + i;
        let parameters = layers * per_block + channels * patch * patch * h + (tokens + 3.0) * h;
        let batch = self.batch_size as f64;
        // Saved activations per block: ~ a dozen [tokens, h] tensors plus the attention scores.
        let heads = m.num_attention_heads.max(1) as f64;
        let activations = batch * layers * (12.0 * tokens * h + 2.0 * heads * tokens * tokens + 2.0 * tokens * i);
        let images = batch * channels * (m.image_size as f64).powi(2);
        let memory_bytes = 4.0 * (4.0 * parameters + activations + images);
        let work = parameters * tokens * batch * self.steps as f64;
        PretrainCost { parameters, memory_bytes, work }
    }
}

/// Summary of a pretraining run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PretrainReport {
    /// Held-out source-task accuracy at the end.
    pub source_accuracy: f64,
    /// Held-out source-task loss at the end.
    pub source_loss: f64,
    /// Wall time in seconds.
    pub wall_seconds: f64,
}

/// Pretrains a backbone; returns it with a report.
pub fn pretrain(cfg: &PretrainConfig, progress: &Progress) -> Result<(Backbone, PretrainReport)> {
    cfg.model.validate()?;
    let device = Device::Cpu;
    let mut backbone = Vit::init_random(&cfg.model, cfg.seed, &device)?;
    let mut vars = Vec::new();
    for t in backbone.tensors_mut() {
        let v = Var::from_tensor(t)?;
        *t = v.as_tensor().clone();
        vars.push(v);
    }
    let classes = data::pretrain_num_classes();
    let d = cfg.model.hidden_size;
    let mut head_rng = rng_for(cfg.seed, "pretrain-head");
    let bound = 1.0 / (d as f32).sqrt();
    let w: Vec<f32> = (0..classes * d).map(|_| head_rng.random_range(-bound..bound)).collect();
    let head_w = Var::from_tensor(&Tensor::from_vec(w, (classes, d), &device)?)?;
    let head_b = Var::zeros(classes, candle_core::DType::F32, &device)?;
    vars.push(head_w.clone());
    vars.push(head_b.clone());
    let mut opt = AdamW::new(vars, AdamWConfig { weight_decay: cfg.weight_decay, ..Default::default() })?;
    let (size, ch) = (cfg.model.image_size, cfg.model.num_channels);
    let logits_of = |vit: &Vit, images: &Tensor, numerics: Numerics| -> Result<Tensor> {
        let f = Backbone::new(vit.clone()).features(images, &NoBranch, numerics)?;
        Ok(f.matmul(&head_w.as_tensor().t()?)?.broadcast_add(head_b.as_tensor())?)
    };
    let bar = progress.bar(cfg.steps as u64, "pretrain");
    let started = Instant::now();
    for step in 0..cfg.steps {
        let (set, _) = data::pretrain_set(
            cfg.batch_size,
            size,
            ch,
            cfg.seed.wrapping_mul(1_000_003).wrapping_add(step as u64 + 1),
        )?;
        let images = images_tensor(&set, &device)?;
        let labels = Tensor::from_slice(&set.labels, set.len(), &device)?;
        let logits = logits_of(&backbone, &images, Numerics::Differentiable)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &labels)?;
        let grads = loss.backward()?;
        let lr = if step < cfg.warmup {
            cfg.lr * (step + 1) as f64 / cfg.warmup as f64
        } else {
            crate::train::schedule::cosine_lr(cfg.lr, cfg.lr * 0.01, step - cfg.warmup, cfg.steps - cfg.warmup)
        };
        opt.step(&grads, lr)?;
        bar.inc(1);
        if step % 50 == 0 {
            bar.set_message(format!("loss {:.3}", loss.to_scalar::<f32>()?));
        }
    }
    bar.finish_and_clear();
    // Held-out source accuracy on images no step saw (a distinct seed stream).
    let (held, _) = data::pretrain_set(2000, size, ch, u64::MAX - cfg.seed)?;
    let logits = logits_of(&backbone, &images_tensor(&held, &device)?, Numerics::Fused)?;
    let (source_loss, source_accuracy) =
        loss_and_accuracy(&logits, &Tensor::from_slice(&held.labels, held.len(), &device)?)?;
    for t in backbone.tensors_mut() {
        *t = t.detach().copy()?;
    }
    Ok((
        Backbone::new(backbone),
        PretrainReport { source_accuracy, source_loss, wall_seconds: started.elapsed().as_secs_f64() },
    ))
}
