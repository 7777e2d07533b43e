//! Plumbing shared by the operators that work on dense deltas (task arithmetic, TIES, Iso-C):
//! shape checks for delta maps, weighted delta sums and the optional re-factorisation.

use super::operator::MergeInput;
use super::{refactor, MergeOutcome, Merged};
use crate::adapter::{Adapter, ModuleKey};
use crate::eval::Deltas;
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Checks that every delta map agrees on the shape of shared modules; returns the union's shapes.
pub(crate) fn delta_shapes(deltas: &[&Deltas]) -> Result<BTreeMap<ModuleKey, (usize, usize)>> {
    if deltas.is_empty() {
        bail!("no deltas to merge; pass at least one delta map");
    }
    let mut shapes: BTreeMap<ModuleKey, ((usize, usize), usize)> = BTreeMap::new();
    for (i, map) in deltas.iter().enumerate() {
        for (key, m) in map.iter() {
            match shapes.get(key) {
                Some(&(shape, first)) if shape != m.shape() => bail!(
                    "module {key}: delta {i} is {}x{} but delta {first} is {}x{}; merge deltas of the same base model",
                    m.rows,
                    m.cols,
                    shape.0,
                    shape.1
                ),
                Some(_) => {}
                None => {
                    shapes.insert(*key, (m.shape(), i));
                }
            }
        }
    }
    Ok(shapes.into_iter().map(|(k, (s, _))| (k, s)).collect())
}

/// The dense deltas of every adapter.
pub(crate) fn all_deltas(adapters: &[&Adapter]) -> Vec<Deltas> {
    adapters.iter().map(|a| a.deltas()).collect()
}

/// `λ · Σ w_k ΔW_k` per module of `shapes` (a module missing from a map counts as zero).
pub(crate) fn weighted_delta_sum(
    deltas: &[&Deltas],
    w: &[f64],
    lambda: f64,
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
) -> Deltas {
    shapes
        .iter()
        .map(|(key, &(rows, cols))| {
            let parts: Vec<(f64, &Matrix)> =
                deltas.iter().zip(w).filter_map(|(d, wk)| d.get(key).map(|m| (lambda * wk, m))).collect();
            (*key, super::common::weighted_sum(&parts, rows, cols))
        })
        .collect()
}

/// A dense result as the merge outcome: re-factorised by truncated SVD when
/// [`super::MergeOptions::refactor_rank`] is set (under the first adapter's spec), else as is.
pub(crate) fn finish_dense(deltas: Deltas, input: &MergeInput<'_>) -> Result<MergeOutcome> {
    let merged = match input.opts.refactor_rank {
        Some(r) => Merged::Adapter(refactor(&deltas, &input.adapters[0].spec, r)?),
        None => Merged::Dense(deltas),
    };
    Ok(MergeOutcome { merged, align: BTreeMap::new() })
}
