//! Plumbing shared by the low-rank operators: weighted sums of matrices, factors brought to a
//! common rank and scale, and the SVD of a weighted sum of adapters without dense matrices.

use super::{checked_scale, output_spec};
use crate::adapter::{Adapter, LoraFactors, LoraSpec, ModuleKey};
use crate::linalg::{svd_of_product, Matrix};
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// `Σ c_i M_i` accumulated in `f64`; every part must be `rows × cols`.
pub(crate) fn weighted_sum(parts: &[(f64, &Matrix)], rows: usize, cols: usize) -> Matrix {
    let mut acc = vec![0.0f64; rows * cols];
    for (c, m) in parts {
        debug_assert_eq!(m.shape(), (rows, cols));
        for (o, v) in acc.iter_mut().zip(&m.data) {
            *o += c * *v as f64;
        }
    }
    Matrix::from_vec(rows, cols, acc.into_iter().map(|v| v as f32).collect())
}

/// Per-adapter factors of one module brought to a common rank and scale: every entry satisfies
/// `scale · B_k · A_k = ΔW_k` (zero factors for adapters lacking the module).
pub(crate) struct CommonFactors {
    /// The common rank.
    pub rank: usize,
    /// The output scale `spec.scale_for(rank)` under the first adapter's spec.
    pub scale: f64,
    /// One entry per adapter.
    pub factors: Vec<LoraFactors>,
}

/// Brings one module of every adapter to a common rank (the largest; lower ranks are zero-padded
/// when `pad_ranks`, an error otherwise) with each adapter's own scale folded into `B`
/// relative to `spec.scale_for(rank)`.
pub(crate) fn common_factors(
    adapters: &[&Adapter],
    key: &ModuleKey,
    shape: (usize, usize),
    spec: &LoraSpec,
    pad_ranks: bool,
) -> Result<CommonFactors> {
    let ranks: Vec<usize> = adapters.iter().filter_map(|a| a.modules.get(key).map(|f| f.rank())).collect();
    let rank = ranks.iter().copied().max().unwrap_or(0);
    if !pad_ranks && ranks.iter().any(|r| *r != rank) {
        bail!(
            "module {key} has ranks {ranks:?} across adapters; factor averaging needs equal ranks \
             (enable pad_ranks, or use delta-svd / stack)"
        );
    }
    let scale = checked_scale(spec, rank)?;
    let (out, inp) = shape;
    let factors = adapters
        .iter()
        .map(|ad| match ad.modules.get(key) {
            Some(f) => {
                let ratio = ad.scale_of(key) / scale;
                LoraFactors { a: f.a.resized(rank, inp), b: f.b.resized(out, rank).scale(ratio as f32) }
            }
            None => LoraFactors { a: Matrix::zeros(rank, inp), b: Matrix::zeros(out, rank) },
        })
        .collect();
    Ok(CommonFactors { rank, scale, factors })
}

/// `λ · Σ w_k ΔW_k` per module, re-factorised to rank `rank` (default: the largest adapter rank
/// of that module) through the SVD of the stacked factors, without forming dense matrices.
pub(crate) fn weighted_sum_svd(
    adapters: &[&Adapter],
    w: &[f64],
    lambda: f64,
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
    rank: Option<usize>,
) -> Result<Adapter> {
    if rank == Some(0) {
        bail!("SVD target rank is 0; choose a rank of at least 1");
    }
    let spec = &adapters[0].spec;
    let mut modules = BTreeMap::new();
    for key in shapes.keys() {
        let mut b_parts = Vec::new();
        let mut a_parts = Vec::new();
        let mut max_rank = 0;
        for (ad, wk) in adapters.iter().zip(w) {
            if let Some(f) = ad.modules.get(key) {
                b_parts.push(f.b.scale((lambda * wk * ad.scale_of(key)) as f32));
                a_parts.push(&f.a);
                max_rank = max_rank.max(f.rank());
            }
        }
        let r = rank.unwrap_or(max_rank);
        let b_cat = Matrix::hstack(&b_parts.iter().collect::<Vec<_>>())?;
        let a_cat = Matrix::vstack(&a_parts)?;
        let (b, a) = svd_of_product(&b_cat, &a_cat)?.factors(r);
        let scale = checked_scale(spec, r)?;
        modules.insert(*key, LoraFactors { a, b: b.scale((1.0 / scale) as f32) });
    }
    Ok(Adapter { spec: output_spec(spec, &modules), modules })
}
