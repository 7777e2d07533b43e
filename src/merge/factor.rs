//! Merges that keep a low-rank form: factor averaging (FedAvg / FedIT, optional LoRA Align),
//! SVD of the weighted delta sum (FlexLoRA) and rank stacking (FLoRA).

use super::align::{align_factors, AlignReport};
use super::{checked_scale, output_spec, MergeOptions};
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

/// FedAvg of the factors (weights already normalised), with optional LoRA Align first.
pub(crate) fn factor_average(
    adapters: &[&Adapter],
    w: &[f64],
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
    opts: &MergeOptions,
) -> Result<(Adapter, BTreeMap<ModuleKey, AlignReport>)> {
    let spec = &adapters[0].spec;
    let mut modules = BTreeMap::new();
    let mut reports = BTreeMap::new();
    for (key, &(out, inp)) in shapes {
        let mut common = common_factors(adapters, key, (out, inp), spec, opts.pad_ranks)?;
        if opts.align && adapters.len() >= 2 {
            let (aligned, report) = align_factors(&common.factors, w, common.scale, opts.align_steps, opts.align_lr)?;
            common.factors = aligned;
            reports.insert(*key, report);
        }
        let r = common.rank;
        let a_parts: Vec<(f64, &Matrix)> = w.iter().zip(&common.factors).map(|(wk, f)| (*wk, &f.a)).collect();
        let b_parts: Vec<(f64, &Matrix)> = w.iter().zip(&common.factors).map(|(wk, f)| (*wk, &f.b)).collect();
        modules.insert(*key, LoraFactors { a: weighted_sum(&a_parts, r, inp), b: weighted_sum(&b_parts, out, r) });
    }
    Ok((Adapter { spec: output_spec(spec, &modules), modules }, reports))
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

/// FlexLoRA: SVD of the weighted delta sum (weights already normalised).
pub(crate) fn delta_svd(
    adapters: &[&Adapter],
    w: &[f64],
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
    rank: Option<usize>,
) -> Result<Adapter> {
    weighted_sum_svd(adapters, w, 1.0, shapes, rank)
}

/// FLoRA: stack the factors along the rank so that the merged `ΔW` is exactly `Σ w_k ΔW_k`.
pub(crate) fn stack(adapters: &[&Adapter], w: &[f64], shapes: &BTreeMap<ModuleKey, (usize, usize)>) -> Result<Adapter> {
    let spec = &adapters[0].spec;
    let mut modules = BTreeMap::new();
    for key in shapes.keys() {
        let present: Vec<(&Adapter, f64)> =
            adapters.iter().zip(w).filter(|(ad, _)| ad.modules.contains_key(key)).map(|(ad, wk)| (*ad, *wk)).collect();
        let total_rank: usize = present.iter().map(|(ad, _)| ad.modules[key].rank()).sum();
        let scale = checked_scale(spec, total_rank)?;
        let b_parts: Vec<Matrix> =
            present.iter().map(|(ad, wk)| ad.modules[key].b.scale((wk * ad.scale_of(key) / scale) as f32)).collect();
        let a_parts: Vec<&Matrix> = present.iter().map(|(ad, _)| &ad.modules[key].a).collect();
        modules.insert(
            *key,
            LoraFactors { a: Matrix::vstack(&a_parts)?, b: Matrix::hstack(&b_parts.iter().collect::<Vec<_>>())? },
        );
    }
    Ok(Adapter { spec: output_spec(spec, &modules), modules })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{adapter_deltas, merge, MergeMethod, MergeOptions};
    use crate::adapter::{Scaling, TargetModule::*};
    use crate::linalg::Matrix;
    use std::collections::BTreeMap;

    fn weighted_delta_sum(ads: &[&crate::adapter::Adapter], w: &[f64]) -> BTreeMap<crate::adapter::ModuleKey, Matrix> {
        let mut out: BTreeMap<_, Matrix> = BTreeMap::new();
        for (ad, wk) in ads.iter().zip(w) {
            for (k, d) in adapter_deltas(ad) {
                let d = d.scale(*wk as f32);
                let e = out.entry(k).or_insert_with(|| Matrix::zeros(d.rows, d.cols));
                *e = e.add(&d);
            }
        }
        out
    }

    #[test]
    fn factor_average_of_identical_adapters_is_identity() {
        let a = random_adapter(&[key(0, Query), key(2, Value)], 3, 6, 5, 10);
        let m = merge(&[&a, &a, &a], &[1.0, 2.0, 5.0], &MergeMethod::FactorAverage, &MergeOptions::default()).unwrap();
        let ad = m.adapter().unwrap();
        assert_eq!(ad.spec, a.spec);
        for (k, f) in &ad.modules {
            assert!(f.a.sub(&a.modules[k].a).frobenius_norm() < 1e-6);
            assert!(f.b.sub(&a.modules[k].b).frobenius_norm() < 1e-6);
        }
    }

    #[test]
    fn factor_average_hand_computed() {
        // Rank 1, s = 1: A1 = [1, 0], B1 = [2; 0]; A2 = [0, 1], B2 = [0; 4]; equal weights.
        let spec = unit_spec(1);
        let spec = crate::adapter::LoraSpec { alpha: 1.0, ..spec };
        let mk = |a: Vec<f32>, b: Vec<f32>| crate::adapter::Adapter {
            spec: spec.clone(),
            modules: [(
                key(0, Query),
                crate::adapter::LoraFactors { a: Matrix::from_vec(1, 2, a), b: Matrix::from_vec(2, 1, b) },
            )]
            .into(),
        };
        let x = mk(vec![1.0, 0.0], vec![2.0, 0.0]);
        let y = mk(vec![0.0, 1.0], vec![0.0, 4.0]);
        let m = merge(&[&x, &y], &[], &MergeMethod::FactorAverage, &MergeOptions::default()).unwrap();
        let d = &m.deltas()[&key(0, Query)];
        // A = [0.5, 0.5], B = [1; 2] → ΔW = [[0.5, 0.5], [1, 1]], while the delta mean is [[1, 0], [0, 2]].
        assert_eq!(d.data, vec![0.5, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn factor_average_rank_mismatch_and_padding() {
        let a = random_adapter(&[key(0, Query)], 2, 5, 4, 11);
        let b = random_adapter(&[key(0, Query)], 4, 5, 4, 12);
        let err = merge(&[&a, &b], &[], &MergeMethod::FactorAverage, &MergeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("pad_ranks"), "{err}");
        let opts = MergeOptions { pad_ranks: true, ..MergeOptions::default() };
        let m = merge(&[&a, &a], &[], &MergeMethod::FactorAverage, &opts).unwrap();
        assert!(max_diff(&m.deltas(), &adapter_deltas(&a)) < 1e-5);
        let m = merge(&[&a, &b], &[1.0, 0.0], &MergeMethod::FactorAverage, &opts).unwrap();
        // Weight 0 on b: the padded rank-4 result must still reproduce a's ΔW (scale compensated).
        let ad = m.adapter().unwrap();
        assert_eq!(ad.modules[&key(0, Query)].rank(), 4);
        assert_eq!(ad.spec.rank, 4);
        assert!(max_diff(&m.deltas(), &adapter_deltas(&a)) < 1e-5);
    }

    #[test]
    fn stack_is_exact_with_mixed_ranks_specs_and_missing_modules() {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 6, 5, 20);
        let mut b = random_adapter(&[key(0, Query)], 3, 6, 5, 21);
        b.spec.scaling = Scaling::Standard;
        b.spec.alpha = 4.0;
        let w = [0.25, 0.75];
        let m = merge(&[&a, &b], &w, &MergeMethod::Stack, &MergeOptions::default()).unwrap();
        let ad = m.adapter().unwrap();
        assert_eq!(ad.modules[&key(0, Query)].rank(), 5);
        assert_eq!(ad.modules[&key(1, Value)].rank(), 2);
        assert_eq!(ad.spec.rank, 5);
        assert!(max_diff(&m.deltas(), &weighted_delta_sum(&[&a, &b], &w)) < 1e-5);
        // Weights are normalised: [1, 3] gives the same result.
        let m2 = merge(&[&a, &b], &[1.0, 3.0], &MergeMethod::Stack, &MergeOptions::default()).unwrap();
        assert!(max_diff(&m.deltas(), &m2.deltas()) < 1e-6);
    }

    #[test]
    fn delta_svd_exact_for_low_rank_sums() {
        let a = random_adapter(&[key(0, Query), key(3, Value)], 2, 7, 6, 30);
        let m = merge(&[&a, &a], &[0.3, 0.7], &MergeMethod::DeltaSvd, &MergeOptions::default()).unwrap();
        assert_eq!(m.adapter().unwrap().modules[&key(0, Query)].rank(), 2);
        assert!(max_diff(&m.deltas(), &adapter_deltas(&a)) < 1e-5);
        // Two different rank-2 adapters: the sum has rank 4, so rank 4 is exact and rank 2 is
        // the Eckart–Young truncation (error² = tail singular values²).
        let b = random_adapter(&[key(0, Query), key(3, Value)], 2, 7, 6, 31);
        let target = weighted_delta_sum(&[&a, &b], &[0.5, 0.5]);
        let opts4 = MergeOptions { svd_rank: Some(4), ..MergeOptions::default() };
        let m4 = merge(&[&a, &b], &[], &MergeMethod::DeltaSvd, &opts4).unwrap();
        assert!(max_diff(&m4.deltas(), &target) < 1e-5);
        let m2 = merge(&[&a, &b], &[], &MergeMethod::DeltaSvd, &MergeOptions::default()).unwrap();
        let t = &target[&key(0, Query)];
        let err = m2.deltas()[&key(0, Query)].sub(t);
        let tail: f64 = t.svd().s[2..].iter().map(|s| s * s).sum();
        assert!((err.dot(&err) - tail).abs() < 1e-4 * (1.0 + tail));
        let bad = MergeOptions { svd_rank: Some(0), ..MergeOptions::default() };
        assert!(merge(&[&a], &[], &MergeMethod::DeltaSvd, &bad).is_err());
    }
}
