//! The pre-LN transformer layer that ViT, both CLIP towers and DINOv2 share:
//! `h = x + attn(ln1(x)); out = h + mlp(ln2(h))`, with LoRA on every linear layer; DINOv2
//! scales each branch per channel (layer scale): `h = x + γ₁ ⊙ attn(…); out = h + γ₂ ⊙ mlp(…)`.

use super::attention::attention;
use super::branch::Branch;
use super::encoder::{adapted_linear, layer_norm, module_index, BlockLinears, LinearWeights, Numerics};
use crate::adapter::TargetModule;
use anyhow::Result;
use candle_core::{DType, Tensor};

/// The smallest batch for which [`Rows::FirstToken`] is used: the `gemm` crate computes a
/// product with only a few rows through another kernel, whose sums round differently
/// (measured: 8 rows or fewer differ in the last bit; 15 and more agree bit for bit).
/// Smaller batches run the whole layer, so the features never depend on the path.
pub const FIRST_TOKEN_MIN_BATCH: usize = 64;

/// Which output rows a layer computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rows {
    /// Every token: the hidden state the next layer reads.
    All,
    /// Only the first token (the class token), `[B, 1, D]`: all a last layer has to compute
    /// when the pooled feature reads that token alone. Keys and values still come from every
    /// token; the output projection and the MLP run on one row per example. Only in
    /// evaluation (`Numerics::Fused`); training and batches under [`FIRST_TOKEN_MIN_BATCH`]
    /// compute every row and return `[B, T, D]` (the first token's values are the same).
    FirstToken,
}

/// The weights of one pre-LN block (ViT, DINOv2, either CLIP tower).
#[derive(Clone, Debug)]
pub struct PreLnBlock {
    /// Layer norm before attention (`layernorm_before`, `norm1`, `layer_norm1`): weight and bias.
    pub ln1: (Tensor, Tensor),
    /// Layer norm before the MLP (`layernorm_after`, `norm2`, `layer_norm2`): weight and bias.
    pub ln2: (Tensor, Tensor),
    /// The six linear layers, in `TargetModule::ALL` order.
    pub linears: Vec<LinearWeights>,
    /// DINOv2's per-channel layer scales (`layer_scale1.lambda1`, `layer_scale2.lambda1`,
    /// `[D]`); `None` for the architectures without.
    pub layer_scale: Option<(Tensor, Tensor)>,
}

impl PreLnBlock {
    /// The linear layer for `module`.
    pub fn linear(&self, module: TargetModule) -> &LinearWeights {
        &self.linears[module_index(module)]
    }

    /// This block as layer `index` (its LoRA key) of a forward pass with the given settings.
    pub fn layer<'a>(
        &'a self,
        index: usize,
        eps: f64,
        heads: usize,
        bias: Option<&'a Tensor>,
        activation: &'a dyn Fn(&Tensor) -> Result<Tensor>,
    ) -> PreLnLayer<'a> {
        PreLnLayer {
            index,
            ln1: &self.ln1,
            ln2: &self.ln2,
            linears: &self.linears,
            eps,
            heads,
            bias,
            activation,
            layer_scale: self.layer_scale.as_ref().map(|(first, second)| (first, second)),
        }
    }
}

impl BlockLinears for PreLnBlock {
    fn linears_mut(&mut self) -> &mut [LinearWeights] {
        &mut self.linears
    }
}

/// One pre-LN layer's weights and settings.
pub struct PreLnLayer<'a> {
    /// Global block index (the LoRA branch's key).
    pub index: usize,
    /// Layer norm before attention.
    pub ln1: &'a (Tensor, Tensor),
    /// Layer norm before the MLP.
    pub ln2: &'a (Tensor, Tensor),
    /// The six linear layers, in `TargetModule::ALL` order.
    pub linears: &'a [LinearWeights],
    /// Layer-norm epsilon.
    pub eps: f64,
    /// Attention heads.
    pub heads: usize,
    /// Attention-score bias (a causal or padding mask), `None` for none.
    pub bias: Option<&'a Tensor>,
    /// The MLP activation.
    pub activation: &'a dyn Fn(&Tensor) -> Result<Tensor>,
    /// Per-channel scales `[D]` of the attention and MLP outputs (DINOv2's `layer_scale1`,
    /// `layer_scale2`), applied after the LoRA outputs are added; `None` for none.
    pub layer_scale: Option<(&'a Tensor, &'a Tensor)>,
}

impl PreLnLayer<'_> {
    /// The layer on `x` `[B, T, D]` with `branch`'s LoRA outputs added: `[B, T, D]`, or for
    /// [`Rows::FirstToken`] in evaluation `[B, 1, D]`.
    pub fn forward(&self, x: &Tensor, branch: &dyn Branch, numerics: Numerics, rows: Rows) -> Result<Tensor> {
        let lin =
            |m: TargetModule, x: &Tensor| adapted_linear(&self.linears[module_index(m)], self.index, m, x, branch);
        let normed = layer_norm(x, self.ln1, self.eps, numerics)?;
        let first_only = rows == Rows::FirstToken && numerics == Numerics::Fused && x.dim(0)? >= FIRST_TOKEN_MIN_BATCH;
        let one_query = first_only && self.bias.is_none() && x.device().is_cpu() && x.dtype() == DType::F32;
        // q, k, v in this order: a training branch draws its dropout masks in call order.
        let q = if one_query {
            lin(TargetModule::Query, &normed.narrow(1, 0, 1)?.contiguous()?)?
        } else {
            lin(TargetModule::Query, &normed)?
        };
        let (k, v) = (lin(TargetModule::Key, &normed)?, lin(TargetModule::Value, &normed)?);
        let (ctx, x) = if one_query {
            (first_token_attention(&q, &k, &v, self.heads)?, x.narrow(1, 0, 1)?)
        } else {
            let ctx = attention(q, k, v, self.heads, self.bias, numerics)?;
            if first_only {
                (ctx.narrow(1, 0, 1)?, x.narrow(1, 0, 1)?)
            } else {
                (ctx, x.clone())
            }
        };
        let scaled = |y: Tensor, which: usize| -> Result<Tensor> {
            Ok(match self.layer_scale {
                None => y,
                Some(scales) => y.broadcast_mul(if which == 0 { scales.0 } else { scales.1 })?,
            })
        };
        let h = (x + scaled(lin(TargetModule::Output, &ctx)?, 0)?)?;
        let normed = layer_norm(&h, self.ln2, self.eps, numerics)?;
        let mid = (self.activation)(&lin(TargetModule::Fc1, &normed)?)?;
        Ok((h + scaled(lin(TargetModule::Fc2, &mid)?, 1)?)?)
    }
}

/// Evaluation attention of the first query row alone: `softmax(q₀·Kᵀ/√d)·V` per head, for
/// `q` `[B, 1, D]` and `k`, `v` `[B, T, D]`, as `[B, 1, D]`. The dot products are sequential
/// fused multiply-adds from zero, the order in which the `gemm` crate's kernels accumulate a
/// product (so the values equal the first row of the whole attention bit for bit; tested),
/// and the softmax is the one the whole attention uses.
fn first_token_attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, t, d) = k.dims3()?;
    let hd = d / heads;
    let scale = (1.0 / (hd as f64).sqrt()) as f32;
    let (qv, kv, vv): (Vec<f32>, Vec<f32>, Vec<f32>) =
        (q.flatten_all()?.to_vec1()?, k.flatten_all()?.to_vec1()?, v.flatten_all()?.to_vec1()?);
    let mut scores = vec![0f32; b * heads * t];
    for (bh, row) in scores.chunks_mut(t).enumerate() {
        let (i, h) = (bh / heads, bh % heads);
        let qh = &qv[i * d + h * hd..i * d + (h + 1) * hd];
        for (j, s) in row.iter_mut().enumerate() {
            let kh = &kv[(i * t + j) * d + h * hd..(i * t + j) * d + (h + 1) * hd];
            let dot = qh.iter().zip(kh).fold(0f32, |acc, (a, b)| a.mul_add(*b, acc));
            // As candle's affine: `x·mul + add` with add = 0.
            *s = dot * scale + 0.0;
        }
    }
    let probs = super::encoder::softmax(&Tensor::from_vec(scores, (b, heads, 1, t), k.device())?, Numerics::Fused)?;
    let pv: Vec<f32> = probs.flatten_all()?.to_vec1()?;
    let mut ctx = vec![0f32; b * d];
    for (bh, p) in pv.chunks(t).enumerate() {
        let (i, h) = (bh / heads, bh % heads);
        for c in 0..hd {
            let col = h * hd + c;
            ctx[i * d + col] =
                p.iter().enumerate().fold(0f32, |acc, (j, pj)| pj.mul_add(vv[(i * t + j) * d + col], acc));
        }
    }
    Ok(Tensor::from_vec(ctx, (b, 1, d), k.device())?)
}
