//! The pre-LN transformer layer that ViT and both CLIP towers share:
//! `h = x + attn(ln1(x)); out = h + mlp(ln2(h))`, with LoRA on every linear layer.

use super::branch::Branch;
use super::encoder::{adapted_linear, attention, layer_norm, module_index, LinearWeights, Numerics};
use crate::adapter::TargetModule;
use anyhow::Result;
use candle_core::Tensor;

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
    /// token; the output projection and the MLP run on one row per example. Batches under
    /// [`FIRST_TOKEN_MIN_BATCH`] compute every row (the first token's values are the same).
    FirstToken,
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
}

impl PreLnLayer<'_> {
    /// The layer on `x` `[B, T, D]` with `branch`'s LoRA outputs added: `[B, T, D]`, or for
    /// [`Rows::FirstToken`] `[B, 1, D]` (`[B, T, D]` under [`FIRST_TOKEN_MIN_BATCH`]).
    pub fn forward(&self, x: &Tensor, branch: &dyn Branch, numerics: Numerics, rows: Rows) -> Result<Tensor> {
        let lin =
            |m: TargetModule, x: &Tensor| adapted_linear(&self.linears[module_index(m)], self.index, m, x, branch);
        let normed = layer_norm(x, self.ln1, self.eps, numerics)?;
        let (q, k, v) =
            (lin(TargetModule::Query, &normed)?, lin(TargetModule::Key, &normed)?, lin(TargetModule::Value, &normed)?);
        let mut ctx = attention(q, k, v, self.heads, self.bias, numerics)?;
        let mut x = x.clone();
        if rows == Rows::FirstToken && x.dim(0)? >= FIRST_TOKEN_MIN_BATCH {
            ctx = ctx.narrow(1, 0, 1)?;
            x = x.narrow(1, 0, 1)?;
        }
        let h = (x + lin(TargetModule::Output, &ctx)?)?;
        let normed = layer_norm(&h, self.ln2, self.eps, numerics)?;
        let mid = (self.activation)(&lin(TargetModule::Fc1, &normed)?)?;
        Ok((h + lin(TargetModule::Fc2, &mid)?)?)
    }
}
