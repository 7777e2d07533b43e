//! FedAvg / FedIT on the factors: `A = Σ w_k A_k`, `B = Σ w_k B_k` (weights normalised to 1).
//! Needs equal ranks per module unless [`MergeOptions::pad_ranks`]; with
//! [`MergeOptions::align`] LoRA Align re-parameterises the adapters first.

use super::align::{align_factors, AlignReport};
use super::common::{common_factors, weighted_sum};
use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Params};
use super::{output_spec, MergeOptions, MergeOutcome, Merged};
use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::Matrix;
use anyhow::Result;
use std::collections::BTreeMap;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "factor",
    aliases: &["factor-average", "fedavg", "fedit"],
    label: "FedAvg / FedIT",
    params: &[],
    build: |_: &Params| Ok(MergeMethod::new(FactorAverage)),
};

/// Factor averaging (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FactorAverage;

impl MergeOperator for FactorAverage {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn uses_align(&self) -> bool {
        true
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let (adapter, align) = factor_average(input.adapters, &input.weights, &input.shapes, input.opts)?;
        Ok(MergeOutcome { merged: Merged::Adapter(adapter), align })
    }
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

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, MergeOptions};
    use super::*;
    use crate::adapter::TargetModule::*;

    fn fa() -> MergeMethod {
        MergeMethod::new(FactorAverage)
    }

    #[test]
    fn factor_average_of_identical_adapters_is_identity() {
        let a = random_adapter(&[key(0, Query), key(2, Value)], 3, 6, 5, 10);
        let m = merge(&[&a, &a, &a], &[1.0, 2.0, 5.0], &fa(), &MergeOptions::default()).unwrap();
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
        let spec = crate::adapter::LoraSpec { alpha: 1.0, ..unit_spec(1) };
        let mk = |a: Vec<f32>, b: Vec<f32>| Adapter {
            spec: spec.clone(),
            modules: [(key(0, Query), LoraFactors { a: Matrix::from_vec(1, 2, a), b: Matrix::from_vec(2, 1, b) })]
                .into(),
        };
        let x = mk(vec![1.0, 0.0], vec![2.0, 0.0]);
        let y = mk(vec![0.0, 1.0], vec![0.0, 4.0]);
        let m = merge(&[&x, &y], &[], &fa(), &MergeOptions::default()).unwrap();
        let d = &m.deltas()[&key(0, Query)];
        // A = [0.5, 0.5], B = [1; 2] → ΔW = [[0.5, 0.5], [1, 1]], while the delta mean is [[1, 0], [0, 2]].
        assert_eq!(d.data, vec![0.5, 0.5, 1.0, 1.0]);
    }

    #[test]
    fn factor_average_rank_mismatch_and_padding() {
        let a = random_adapter(&[key(0, Query)], 2, 5, 4, 11);
        let b = random_adapter(&[key(0, Query)], 4, 5, 4, 12);
        let err = merge(&[&a, &b], &[], &fa(), &MergeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("pad_ranks"), "{err}");
        let opts = MergeOptions { pad_ranks: true, ..MergeOptions::default() };
        let m = merge(&[&a, &a], &[], &fa(), &opts).unwrap();
        assert!(max_diff(&m.deltas(), &a.deltas()) < 1e-5);
        let m = merge(&[&a, &b], &[1.0, 0.0], &fa(), &opts).unwrap();
        // Weight 0 on b: the padded rank-4 result must still reproduce a's ΔW (scale compensated).
        let ad = m.adapter().unwrap();
        assert_eq!(ad.modules[&key(0, Query)].rank(), 4);
        assert_eq!(ad.spec.rank, 4);
        assert!(max_diff(&m.deltas(), &a.deltas()) < 1e-5);
    }
}
