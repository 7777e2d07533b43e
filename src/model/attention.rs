//! Multi-head scaled dot-product attention as one CPU op, forward and backward.
//!
//! The composite attention ([`attention_composite`]) splits `q`, `k`, `v` `[B, T, D]` into
//! heads with three copies, then runs a batched `QKᵀ`, the `1/√d` scale, the bias, the
//! softmax, a batched `PV` and a copy back to `[B, T, D]`: seven passes and seven allocations
//! forward, and about twice that backward. Here each (sequence, head) pair reads its columns
//! of `q`, `k`, `v` in place through the `gemm` crate's strides and writes its columns of the
//! result; the backward pass is one op too.
//!
//! Every step is the composite's, in the same order and with the same kernels: the same
//! `gemm` products, candle's affine `s·c + 0` for the scale, the softmax the numerics name
//! (copra-lab's in training, candle's fused one in evaluation), and in the backward pass the
//! softmax gradient's row sum by candle's own reduction. The values and gradients are
//! therefore those of the composite bit for bit (tested), so runs trained before and after
//! this op are interchangeable in the run cache.

use super::encoder::Numerics;
use super::ops::{contiguous_rows, softmax_row};
use crate::parallel::GEMM_THREADING_MIN_FLOPS;
use anyhow::Result;
use candle_core::cpu::kernels::VecOps;
use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Storage, Tensor};
use gemm::{gemm, Parallelism};
use rayon::prelude::*;
use std::sync::{Arc, Mutex, MutexGuard};

/// Sizes of one attention call: `b` sequences of `t` tokens, width `d = heads · hd`.
#[derive(Clone, Copy, Debug)]
struct Dims {
    b: usize,
    t: usize,
    d: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    /// Offset of (sequence, head)'s first column in a `[B, T, D]` array.
    fn column_offset(&self, pair: usize) -> usize {
        (pair / self.heads) * self.t * self.d + (pair % self.heads) * self.hd
    }

    /// Whether the (sequence, head) pairs are worth spreading over threads: the same
    /// multiply-add threshold the `gemm` crate's own threading uses.
    fn parallel(&self) -> bool {
        self.b * self.heads * self.t * self.t * self.hd >= GEMM_THREADING_MIN_FLOPS
    }
}

/// The additive score bias `[bb, 1, tq, T]` (`bb` 1 or B, `tq` 1 or T) as flat values with
/// the strides that broadcast it over sequences and query rows.
#[derive(Clone, Debug)]
struct ScoreBias {
    values: Vec<f32>,
    sequence_stride: usize,
    row_stride: usize,
}

impl ScoreBias {
    /// The bias of `tensor`, or `None` when its shape is not one this op broadcasts (a
    /// per-head bias, say): the caller then uses the composite attention.
    fn from_tensor(tensor: &Tensor, dims: Dims) -> Result<Option<Self>> {
        let shape = tensor.dims();
        let padded: Vec<usize> =
            std::iter::repeat_n(1, 4usize.saturating_sub(shape.len())).chain(shape.iter().copied()).collect();
        let [bb, h, tq, tk] = padded[..] else { return Ok(None) };
        let fits = (bb == 1 || bb == dims.b) && h == 1 && (tq == 1 || tq == dims.t) && tk == dims.t;
        if !fits || tensor.dtype() != candle_core::DType::F32 {
            return Ok(None);
        }
        let values = tensor.flatten_all()?.to_vec1::<f32>()?;
        let row_stride = if tq == 1 { 0 } else { dims.t };
        let sequence_stride = if bb == 1 { 0 } else { tq * dims.t };
        Ok(Some(Self { values, sequence_stride, row_stride }))
    }

    /// The bias row of query `row` in sequence `sequence` (length T).
    fn row(&self, sequence: usize, row: usize, t: usize) -> &[f32] {
        let start = sequence * self.sequence_stride + row * self.row_stride;
        &self.values[start..start + t]
    }
}

/// A raw pointer that (sequence, head) tasks write through: each writes only its own columns
/// (or its own `T × T` block), so no two tasks touch the same element.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: tasks write disjoint elements (see the type's doc); the buffer outlives them.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` past the start (a method, so closures capture the whole wrapper).
    ///
    /// # Safety
    /// `offset` must be inside the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        self.0.add(offset)
    }
}

/// `dst (m × n) = lhs (m × k) · rhs (k × n)` for strided f32 operands, on the calling thread.
/// Strides are `(row, column)` in elements.
///
/// # Safety
/// Every pointer must address its whole strided matrix; `dst` must not alias the operands.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    (m, n, k): (usize, usize, usize),
    dst: *mut f32,
    dst_strides: (usize, usize),
    lhs: *const f32,
    lhs_strides: (usize, usize),
    rhs: *const f32,
    rhs_strides: (usize, usize),
) {
    gemm(
        m,
        n,
        k,
        dst,
        dst_strides.1 as isize,
        dst_strides.0 as isize,
        false,
        lhs,
        lhs_strides.1 as isize,
        lhs_strides.0 as isize,
        rhs,
        rhs_strides.1 as isize,
        rhs_strides.0 as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        Parallelism::None,
    );
}

/// Runs `task(pair, block)` for every (sequence, head) pair with its own `T × T` block of
/// `blocks`, over threads when `parallel`.
fn for_each_pair(blocks: &mut [f32], tt: usize, parallel: bool, task: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if parallel {
        blocks.par_chunks_mut(tt).enumerate().for_each(|(pair, block)| task(pair, block));
    } else {
        blocks.chunks_mut(tt).enumerate().for_each(|(pair, block)| task(pair, block));
    }
}

/// Candle's fused softmax of one row (`softmax_last_dim` in evaluation), with its own max
/// and sum reductions, so that the values match it bit for bit.
fn candle_softmax_row(row: &mut [f32]) {
    let mut max = f32::NEG_INFINITY;
    // SAFETY: the pointer and length are the row's.
    unsafe { f32::vec_reduce_max(row.as_ptr(), &mut max, row.len()) };
    for v in row.iter_mut() {
        *v = (*v - max).exp();
    }
    let mut sum = 0f32;
    // SAFETY: as above.
    unsafe { f32::vec_reduce_sum(row.as_ptr(), &mut sum, row.len()) };
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// The forward op on `q`, `k`, `v` `[B, T, D]`; in training it keeps the probabilities
/// `[B·H, T, T]` for the backward pass (as the composite's graph does).
struct FusedAttention {
    dims: Dims,
    /// `1/√hd` as candle's affine uses it (rounded to f32).
    scale: f32,
    bias: Option<ScoreBias>,
    numerics: Numerics,
    probs: Mutex<Vec<f32>>,
}

/// The contiguous f32 values of a CPU tensor (`what` names it in the error).
fn values<'a>(storage: &'a Storage, layout: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => Ok(contiguous_rows(cpu, layout, what)?.0),
        _ => candle_core::bail!("copra {what} must be on the CPU"),
    }
}

impl FusedAttention {
    /// The probabilities the training forward pass keeps for the backward pass.
    fn kept_probs(&self) -> candle_core::Result<MutexGuard<'_, Vec<f32>>> {
        self.probs.lock().map_err(|_| candle_core::Error::Msg("copra attention: poisoned lock".into()))
    }

    /// Scores, softmax: the probabilities `[B·H, T, T]`.
    fn probabilities(&self, q: &[f32], k: &[f32]) -> Vec<f32> {
        let Dims { t, d, hd, heads, .. } = self.dims;
        let mut probs = vec![0f32; self.dims.b * heads * t * t];
        for_each_pair(&mut probs, t * t, self.dims.parallel(), |pair, block| {
            let at = self.dims.column_offset(pair);
            // SAFETY: q and k hold [B, T, D]; their (sequence, head) blocks are T × hd at
            // row stride D; `block` is T × T.
            unsafe {
                product((t, t, hd), block.as_mut_ptr(), (t, 1), q[at..].as_ptr(), (d, 1), k[at..].as_ptr(), (1, d))
            };
            let sequence = pair / heads;
            for (row, scores) in block.chunks_mut(t).enumerate() {
                for s in scores.iter_mut() {
                    *s = *s * self.scale + 0.0;
                }
                if let Some(bias) = &self.bias {
                    for (s, b) in scores.iter_mut().zip(bias.row(sequence, row, t)) {
                        *s += b;
                    }
                }
                match self.numerics {
                    Numerics::Differentiable => softmax_row(scores),
                    Numerics::Fused => candle_softmax_row(scores),
                }
            }
        });
        probs
    }

    /// The context `[B, T, D]`: `P·V` per (sequence, head), written into its columns.
    fn context(&self, probs: &[f32], v: &[f32]) -> Vec<f32> {
        let Dims { b, t, d, heads, hd } = self.dims;
        let mut out = vec![0f32; b * t * d];
        let dst = SharedOut(out.as_mut_ptr());
        let task = |pair: usize| {
            let at = self.dims.column_offset(pair);
            let p = &probs[pair * t * t..(pair + 1) * t * t];
            // SAFETY: the pair writes only its T × hd columns of `out` (row stride D).
            unsafe { product((t, hd, t), dst.at(at), (d, 1), p.as_ptr(), (t, 1), v[at..].as_ptr(), (d, 1)) };
        };
        if self.dims.parallel() {
            (0..b * heads).into_par_iter().for_each(task);
        } else {
            (0..b * heads).for_each(task);
        }
        out
    }
}

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "copra-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (q, _) = contiguous_rows(qs, ql, "attention: q")?;
        let (k, _) = contiguous_rows(ks, kl, "attention: k")?;
        let (v, _) = contiguous_rows(vs, vl, "attention: v")?;
        let probs = self.probabilities(q, k);
        let out = self.context(&probs, v);
        if self.numerics == Numerics::Differentiable {
            *self.kept_probs()? = probs;
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let probs = self.kept_probs()?;
        if probs.is_empty() {
            candle_core::bail!("copra attention: backward of an evaluation (fused-numerics) forward");
        }
        let grad = grad.contiguous()?;
        let (gs, gl) = grad.storage_and_layout();
        let (qs, ql) = q.storage_and_layout();
        let (ks, kl) = k.storage_and_layout();
        let (vs, vl) = v.storage_and_layout();
        let g = values(&gs, gl, "attention: gradient")?;
        let (qv, kv, vv) =
            (values(&qs, ql, "attention: q")?, values(&ks, kl, "attention: k")?, values(&vs, vl, "attention: v")?);
        let grads = self.gradients(&probs, (qv, kv, vv), g);
        let shape = q.shape().clone();
        let [dq, dk, dv] = grads.map(|x| Tensor::from_vec(x, shape.clone(), q.device()));
        Ok((Some(dq?), Some(dk?), Some(dv?)))
    }
}

impl FusedAttention {
    /// `(∂q, ∂k, ∂v)` from the kept probabilities and the output gradient `g` `[B, T, D]`,
    /// step for step as candle differentiates the composite: `∂V = Pᵀ·g`, `∂P = g·Vᵀ`,
    /// `∂S = P ⊙ (∂P − Σ_row ∂P⊙P)` scaled by the affine's `c`, `∂Q = ∂S·K`, `∂K = ∂Sᵀ·Q`.
    fn gradients(&self, probs: &[f32], (q, k, v): (&[f32], &[f32], &[f32]), g: &[f32]) -> [Vec<f32>; 3] {
        let Dims { b, t, d, heads, hd } = self.dims;
        let (mut dq, mut dk, mut dv) = (vec![0f32; b * t * d], vec![0f32; b * t * d], vec![0f32; b * t * d]);
        let (dq_out, dk_out, dv_out) =
            (SharedOut(dq.as_mut_ptr()), SharedOut(dk.as_mut_ptr()), SharedOut(dv.as_mut_ptr()));
        let mut scratch = vec![0f32; b * heads * t * t];
        for_each_pair(&mut scratch, t * t, self.dims.parallel(), |pair, ds| {
            let at = self.dims.column_offset(pair);
            let p = &probs[pair * t * t..(pair + 1) * t * t];
            let (g_at, v_at, q_at, k_at) = (g[at..].as_ptr(), v[at..].as_ptr(), q[at..].as_ptr(), k[at..].as_ptr());
            // SAFETY: as in the forward pass; each pair writes only its own columns of
            // ∂q, ∂k, ∂v and its own T × T block `ds`.
            unsafe {
                product((t, hd, t), dv_out.at(at), (d, 1), p.as_ptr(), (1, t), g_at, (d, 1));
                product((t, t, hd), ds.as_mut_ptr(), (t, 1), g_at, (d, 1), v_at, (1, d));
            }
            let mut products = vec![0f32; t];
            for (dp, p) in ds.chunks_mut(t).zip(p.chunks(t)) {
                for ((x, dp), p) in products.iter_mut().zip(dp.iter()).zip(p) {
                    *x = dp * p;
                }
                let mut dot = 0f32;
                // SAFETY: the pointer and length are `products`'.
                unsafe { f32::vec_reduce_sum(products.as_ptr(), &mut dot, t) };
                for (dp, p) in dp.iter_mut().zip(p) {
                    *dp = *p * (*dp - dot);
                    *dp = *dp * self.scale + 0.0;
                }
            }
            // SAFETY: as above.
            unsafe {
                product((t, hd, t), dq_out.at(at), (d, 1), ds.as_ptr(), (t, 1), k_at, (d, 1));
                product((t, hd, t), dk_out.at(at), (d, 1), ds.as_ptr(), (1, t), q_at, (d, 1));
            }
        });
        [dq, dk, dv]
    }
}

/// The composite multi-head attention (candle ops, differentiable through candle's graph):
/// the reference [`attention`] is tested against, and its path for biases the fused op does
/// not broadcast and for non-CPU or non-f32 tensors.
pub fn attention_composite(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    numerics: Numerics,
) -> Result<Tensor> {
    let (b, t, d) = q.dims3()?;
    let hd = d / heads;
    let split = |y: Tensor| -> Result<Tensor> { Ok(y.reshape((b, t, heads, hd))?.transpose(1, 2)?.contiguous()?) };
    let (q, k, v) = (split(q)?, split(k)?, split(v)?);
    let mut scores = (q.matmul(&k.t()?)? * (1.0 / (hd as f64).sqrt()))?;
    if let Some(bias) = bias {
        scores = scores.broadcast_add(bias)?;
    }
    let probs = super::encoder::softmax(&scores, numerics)?;
    Ok(probs.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?)
}

/// Multi-head scaled dot-product attention context `[B, T, D]` of projected `q`, `k`, `v`
/// `[B, T, D]`; `bias` (broadcast to `[B, heads, T, T]`) is added to the scores (the
/// padding mask), `None` attends everywhere. On CPU f32, heads at least 2 wide and a bias of
/// shape `[B or 1, 1, 1 or T, T]` (or none) it is one fused op with its own backward pass, equal to
/// [`attention_composite`] bit for bit; otherwise it is the composite.
pub fn attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: usize,
    bias: Option<&Tensor>,
    numerics: Numerics,
) -> Result<Tensor> {
    let (b, t, d) = q.dims3()?;
    let cpu_f32 = [&q, &k, &v].iter().all(|x| x.device().is_cpu() && x.dtype() == candle_core::DType::F32);
    // A head width of 1 makes `P·V` a matrix-vector product, which the `gemm` crate orients by
    // the destination's strides: candle's contiguous per-head copy and this op's in-place
    // columns then round differently (by one ulp, tested), so such heads use the composite.
    if !cpu_f32 || heads == 0 || d % heads != 0 || d / heads < 2 || k.dims() != q.dims() || v.dims() != q.dims() {
        return attention_composite(q, k, v, heads, bias, numerics);
    }
    let dims = Dims { b, t, d, heads, hd: d / heads };
    let bias = match bias {
        None => None,
        Some(tensor) => match ScoreBias::from_tensor(tensor, dims)? {
            Some(bias) => Some(bias),
            None => return attention_composite(q, k, v, heads, Some(tensor), numerics),
        },
    };
    let scale = (1.0 / (dims.hd as f64).sqrt()) as f32;
    let op = FusedAttention { dims, scale, bias, numerics, probs: Mutex::new(Vec::new()) };
    let (q, k, v) = (q.contiguous()?, k.contiguous()?, v.contiguous()?);
    Ok(match numerics {
        Numerics::Differentiable => q.apply_op3_arc(&k, &v, Arc::new(Box::new(op)))?,
        Numerics::Fused => q.apply_op3_no_bwd(&k, &v, &op)?,
    })
}

#[cfg(test)]
mod tests;
