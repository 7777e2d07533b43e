//! A Vision Transformer with the Hugging Face `ViTModel` architecture (pre-LN,
//! exact GELU, CLS token), written against candle so that a LoRA branch can be
//! added to any linear layer and the forward pass can start at any block.
//!
//! Two numerics paths share one code path: `Numerics::Differentiable` uses
//! composite softmax and layer norm (candle-nn's fused kernels silently drop
//! gradients, see `rust-ecosystem.md` §0.1), `Numerics::Fused` uses the fused
//! kernels for evaluation where no gradient is needed.

use super::config::VitConfig;
use crate::adapter::{ModuleKey, TargetModule};
use crate::linalg::Matrix;
use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor};
use std::collections::BTreeMap;

/// Which softmax / layer-norm kernels a forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// Composite, differentiable ops (training).
    Differentiable,
    /// candle's fused kernels (evaluation only: they have no backward).
    Fused,
}

/// A frozen linear layer: `y = x · Wᵀ + b`.
#[derive(Clone, Debug)]
pub struct LinearWeights {
    /// Weight `[out, in]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
}

/// Weights of one transformer block.
#[derive(Clone, Debug)]
pub struct BlockWeights {
    /// `layernorm_before` weight and bias.
    pub ln_before: (Tensor, Tensor),
    /// `layernorm_after` weight and bias.
    pub ln_after: (Tensor, Tensor),
    /// The six linear layers, indexed by `TargetModule as usize` order of `TargetModule::ALL`.
    pub linears: Vec<LinearWeights>,
}

impl BlockWeights {
    /// The linear layer for `module`.
    pub fn linear(&self, module: TargetModule) -> &LinearWeights {
        &self.linears[module_index(module)]
    }
}

/// Position of a module in `TargetModule::ALL`.
pub fn module_index(module: TargetModule) -> usize {
    TargetModule::ALL.iter().position(|m| *m == module).expect("module in ALL")
}

/// Supplies the LoRA branch output of a module for a flattened input `[rows, in]`.
/// Returning `None` means no branch (the frozen output alone).
pub trait Branch {
    /// The branch output `s·B·A·dropout(x)` as `[rows, out]`, or `None`.
    fn output(&self, key: ModuleKey, x2d: &Tensor) -> Result<Option<Tensor>>;
}

/// No adapter at all: the frozen backbone (or weights that already hold merged deltas).
pub struct NoBranch;

impl Branch for NoBranch {
    fn output(&self, _key: ModuleKey, _x2d: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}

/// The ViT backbone's weights (frozen) and architecture.
#[derive(Clone, Debug)]
pub struct Backbone {
    /// Architecture.
    pub config: VitConfig,
    /// `embeddings.cls_token` `[1, 1, D]`.
    pub cls_token: Tensor,
    /// `embeddings.position_embeddings` `[1, T, D]`.
    pub position_embeddings: Tensor,
    /// Patch projection weight flattened to `[D, C·p·p]` (conv kernel order C, kh, kw).
    pub patch_weight: Tensor,
    /// Patch projection bias `[D]`.
    pub patch_bias: Tensor,
    /// The transformer blocks.
    pub blocks: Vec<BlockWeights>,
    /// Final `layernorm` weight and bias.
    pub final_ln: (Tensor, Tensor),
}

impl Backbone {
    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        self.cls_token.device()
    }

    /// Number of transformer blocks.
    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Patch + position embedding of images `[B, C, H, W]` → hidden states `[B, T, D]`.
    pub fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (b, ch, h, w) = images.dims4()?;
        let p = c.patch_size;
        let (gh, gw) = (h / p, w / p);
        // [B, C, gh, p, gw, p] → [B, gh, gw, C, p, p] → [B·N, C·p·p]
        let patches = images
            .reshape((b, ch, gh, p, gw, p))?
            .permute((0, 2, 4, 1, 3, 5))?
            .contiguous()?
            .reshape((b * gh * gw, ch * p * p))?;
        let tokens = patches.matmul(&self.patch_weight.t()?)?.broadcast_add(&self.patch_bias)?.reshape((
            b,
            gh * gw,
            c.hidden_size,
        ))?;
        let cls = self.cls_token.broadcast_as((b, 1, c.hidden_size))?.contiguous()?;
        let x = Tensor::cat(&[&cls, &tokens], 1)?;
        Ok(x.broadcast_add(&self.position_embeddings)?)
    }

    fn layer_norm(&self, x: &Tensor, ln: &(Tensor, Tensor), numerics: Numerics) -> Result<Tensor> {
        let eps = self.config.layer_norm_eps as f32;
        Ok(match numerics {
            Numerics::Differentiable => candle_nn::ops::layer_norm_slow(x, &ln.0, &ln.1, eps)?,
            Numerics::Fused => candle_nn::ops::layer_norm(&x.contiguous()?, &ln.0, &ln.1, eps)?,
        })
    }

    fn linear(&self, block: usize, module: TargetModule, x: &Tensor, branch: &dyn Branch) -> Result<Tensor> {
        let lw = self.blocks[block].linear(module);
        let dims = x.dims().to_vec();
        let rows: usize = dims[..dims.len() - 1].iter().product();
        let x2d = x.reshape((rows, dims[dims.len() - 1]))?;
        let mut y = super::ops::linear_2d(&x2d, &lw.weight, lw.bias.as_ref())?;
        if let Some(extra) = branch.output(ModuleKey { block, module }, &x2d)? {
            y = (y + extra)?;
        }
        let mut out_dims = dims;
        let last = out_dims.len() - 1;
        out_dims[last] = lw.weight.dim(0)?;
        Ok(y.reshape(out_dims)?)
    }

    /// One transformer block: `h = x + attn(ln(x)); out = h + mlp(ln(h))`.
    pub fn block(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let c = &self.config;
        let bw = &self.blocks[index];
        let (b, t, d) = x.dims3()?;
        let (heads, hd) = (c.num_attention_heads, c.head_dim());
        let normed = self.layer_norm(x, &bw.ln_before, numerics)?;
        let split = |y: Tensor| -> Result<Tensor> { Ok(y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()?) };
        let q = split(self.linear(index, TargetModule::Query, &normed, branch)?)?;
        let k = split(self.linear(index, TargetModule::Key, &normed, branch)?)?;
        let v = split(self.linear(index, TargetModule::Value, &normed, branch)?)?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
        let probs = match numerics {
            Numerics::Differentiable => super::ops::softmax_last_dim(&scores)?,
            Numerics::Fused => candle_nn::ops::softmax_last_dim(&scores)?,
        };
        let ctx = probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
        let attn = self.linear(index, TargetModule::Output, &ctx, branch)?;
        let h = (x + attn)?;
        let normed = self.layer_norm(&h, &bw.ln_after, numerics)?;
        let mid = super::ops::gelu_erf(&self.linear(index, TargetModule::Fc1, &normed, branch)?)?;
        let out = self.linear(index, TargetModule::Fc2, &mid, branch)?;
        Ok((h + out)?)
    }

    /// Runs blocks `start..` on hidden states that entered block `start`, and returns the
    /// final-layer-normed CLS feature `[B, D]` (what `ViTModel`'s `last_hidden_state[:, 0]` holds).
    pub fn forward_from(&self, start: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let mut h = x.clone();
        for i in start..self.num_blocks() {
            h = self.block(i, &h, branch, numerics)?;
        }
        self.cls_feature(&h, numerics)
    }

    /// Final layer norm of the CLS token of encoder output `[B, T, D]` → `[B, D]`.
    pub fn cls_feature(&self, encoded: &Tensor, numerics: Numerics) -> Result<Tensor> {
        let cls = encoded.i((.., 0, ..))?.contiguous()?;
        self.layer_norm(&cls, &self.final_ln, numerics)
    }

    /// Full forward of images to CLS features.
    pub fn features(&self, images: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let x = self.embed(images)?;
        self.forward_from(0, &x, branch, numerics)
    }

    /// A copy whose linear weights hold `W + ΔW` for every module in `deltas`
    /// (merged LoRA: evaluation then costs exactly the frozen model).
    pub fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone> {
        let mut out = self.clone();
        for (key, delta) in deltas {
            let lw = &mut out.blocks[key.block].linears[module_index(key.module)];
            let (o, i) = lw.weight.dims2()?;
            if delta.shape() != (o, i) {
                anyhow::bail!(
                    "adapter module {key} has ΔW of shape {:?} but the backbone's weight is [{o}, {i}]: adapter and backbone do not match",
                    delta.shape()
                );
            }
            let d = Tensor::from_slice(&delta.data, (o, i), self.device())?;
            lw.weight = (&lw.weight + d)?;
        }
        Ok(out)
    }

    /// The frozen hidden state entering every block, and the encoder output, for `images`
    /// (`num_blocks + 1` tensors of `[N, T, D]`), computed in batches of `batch`.
    pub fn frozen_block_inputs(&self, images: &Tensor, batch: usize) -> Result<Vec<Tensor>> {
        let n = images.dim(0)?;
        let mut per_block: Vec<Vec<Tensor>> = vec![Vec::new(); self.num_blocks() + 1];
        let mut start = 0;
        while start < n {
            let len = batch.min(n - start);
            let mut h = self.embed(&images.narrow(0, start, len)?)?;
            per_block[0].push(h.clone());
            for i in 0..self.num_blocks() {
                h = self.block(i, &h, &NoBranch, Numerics::Fused)?;
                per_block[i + 1].push(h.clone());
            }
            start += len;
        }
        per_block.into_iter().map(|parts| Ok(Tensor::cat(&parts, 0)?)).collect()
    }

    /// Random initialisation (truncated-normal-like, std 0.02, as `ViTModel._init_weights`),
    /// used by `pretrain`. Deterministic in `seed`.
    pub fn init_random(config: &VitConfig, seed: u64, device: &Device) -> Result<Backbone> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
        let mut randn = |shape: &[usize]| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng).clamp(-0.04, 0.04)).collect();
            Ok(Tensor::from_vec(data, shape, device)?)
        };
        let d = config.hidden_size;
        let m = config.intermediate_size;
        let cpp = config.num_channels * config.patch_size * config.patch_size;
        let zeros = |n: usize| Tensor::zeros(n, DType::F32, device);
        let ones = |n: usize| Tensor::ones(n, DType::F32, device);
        let mut blocks = Vec::new();
        for _ in 0..config.num_hidden_layers {
            let mut linears = Vec::new();
            for module in TargetModule::ALL {
                let (o, i) = module_shape(config, module);
                let has_bias =
                    config.qkv_bias || !matches!(module, TargetModule::Query | TargetModule::Key | TargetModule::Value);
                linears.push(LinearWeights {
                    weight: randn(&[o, i])?,
                    bias: if has_bias { Some(zeros(o)?) } else { None },
                });
            }
            blocks.push(BlockWeights { ln_before: (ones(d)?, zeros(d)?), ln_after: (ones(d)?, zeros(d)?), linears });
        }
        let _ = m;
        Ok(Backbone {
            config: config.clone(),
            cls_token: randn(&[1, 1, d])?,
            position_embeddings: randn(&[1, config.num_tokens(), d])?,
            patch_weight: randn(&[d, cpp])?,
            patch_bias: zeros(d)?,
            blocks,
            final_ln: (ones(d)?, zeros(d)?),
        })
    }

    /// Every weight tensor, in a fixed order (for training all of them in `pretrain`).
    pub fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        let mut out: Vec<&mut Tensor> =
            vec![&mut self.cls_token, &mut self.position_embeddings, &mut self.patch_weight, &mut self.patch_bias];
        for b in &mut self.blocks {
            out.push(&mut b.ln_before.0);
            out.push(&mut b.ln_before.1);
            out.push(&mut b.ln_after.0);
            out.push(&mut b.ln_after.1);
            for l in &mut b.linears {
                out.push(&mut l.weight);
                if let Some(bias) = &mut l.bias {
                    out.push(bias);
                }
            }
        }
        out.push(&mut self.final_ln.0);
        out.push(&mut self.final_ln.1);
        out
    }
}

/// `[out, in]` of a module's weight under `config`.
pub fn module_shape(config: &VitConfig, module: TargetModule) -> (usize, usize) {
    let d = config.hidden_size;
    let m = config.intermediate_size;
    match module {
        TargetModule::Fc1 => (m, d),
        TargetModule::Fc2 => (d, m),
        _ => (d, d),
    }
}
