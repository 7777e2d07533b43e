//! FedEx-LoRA (Singhal et al. 2024): exact aggregation by factor averaging plus a residual.
//! The adapter is the FedAvg of the factors, `B̄ = Σ w_k B_k`, `Ā = Σ w_k A_k` (weights
//! normalised to 1, each adapter's scale folded into its `B`, lower ranks zero-padded), and the
//! averaging error
//!
//! `R = Σ w_k ΔW_k − s · B̄ · Ā`
//!
//! is returned as a dense residual to fold into the frozen weights ([`Merged::Folded`]), so that
//! `R + s · B̄ · Ā` is exactly the weighted mean of the adapters' `ΔW_k`. Heterogeneous ranks are
//! always zero-padded (the residual keeps the result exact whatever the padding); with
//! [`super::MergeOptions::align`] LoRA Align re-parameterises the factors first, which changes
//! only how the mean is split between adapter and residual.

use super::common::weighted_sum;
use super::dense::all_deltas;
use super::factor_average::factor_average;
use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Params};
use super::{MergeOptions, MergeOutcome, Merged};
use crate::linalg::Matrix;
use anyhow::Result;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "fedex",
    aliases: &["fedex-lora"],
    label: "FedEx-LoRA",
    params: &[],
    build: |_: &Params| Ok(MergeMethod::new(FedEx)),
};

/// Factor averaging with the averaging residual (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FedEx;

impl MergeOperator for FedEx {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn uses_align(&self) -> bool {
        true
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let opts = MergeOptions { pad_ranks: true, ..input.opts.clone() };
        let (adapter, align) = factor_average(input.adapters, &input.weights, &input.shapes, &opts)?;
        let deltas = all_deltas(input.adapters);
        let mut residual = std::collections::BTreeMap::new();
        for (key, &(rows, cols)) in &input.shapes {
            let averaged = adapter.delta(key);
            let mut parts: Vec<(f64, &Matrix)> =
                deltas.iter().zip(&input.weights).filter_map(|(d, w)| d.get(key).map(|m| (*w, m))).collect();
            parts.push((-1.0, &averaged));
            residual.insert(*key, weighted_sum(&parts, rows, cols));
        }
        Ok(MergeOutcome { merged: Merged::Folded { adapter, residual }, align })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, merge_with_report, MergeOptions};
    use super::*;
    use crate::adapter::{Adapter, LoraFactors, Scaling, TargetModule::*};

    fn fedex() -> MergeMethod {
        MergeMethod::new(FedEx)
    }

    /// Three adapters with ranks 2, 4, 2, different scale rules, and a module only two have.
    fn heterogeneous() -> [Adapter; 3] {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 6, 5, 40);
        let mut b = random_adapter(&[key(0, Query), key(1, Value)], 4, 6, 5, 41);
        b.spec.scaling = Scaling::Standard;
        b.spec.alpha = 3.0;
        let c = random_adapter(&[key(0, Query)], 2, 6, 5, 42);
        [a, b, c]
    }

    #[test]
    fn fedex_is_exactly_the_weighted_mean_with_mixed_ranks_scales_and_missing_modules() {
        let [a, b, c] = heterogeneous();
        let (ads, raw) = ([&a, &b, &c], [1.0, 2.0, 5.0]);
        let w: Vec<f64> = raw.iter().map(|v| v / 8.0).collect();
        let target = mixture(&ads, &w);
        let m = merge(&ads, &raw, &fedex(), &MergeOptions::default()).unwrap();
        assert!(max_diff(&m.deltas(), &target) < 1e-5, "{}", max_diff(&m.deltas(), &target));
        // The adapter is the zero-padded FedAvg of the factors, and it alone is far from the
        // mean: the residual carries the difference.
        let padded = MergeOptions { pad_ranks: true, ..MergeOptions::default() };
        let fedavg = merge(&ads, &raw, &MergeMethod::parse("factor").unwrap(), &padded).unwrap();
        assert_eq!(m.adapter(), fedavg.adapter());
        assert_eq!(m.adapter().unwrap().modules[&key(0, Query)].rank(), 4);
        assert!(max_diff(&fedavg.deltas(), &target) > 0.1, "{}", max_diff(&fedavg.deltas(), &target));
        let residual = m.residual().unwrap();
        assert_eq!(residual.keys().collect::<Vec<_>>(), target.keys().collect::<Vec<_>>());
        // LoRA Align changes the split between adapter and residual, never the sum.
        let aligned = MergeOptions { align: true, align_steps: 50, ..MergeOptions::default() };
        let out = merge_with_report(&ads, &raw, &fedex(), &aligned).unwrap();
        assert!(!out.align.is_empty());
        assert!(max_diff(&out.merged.deltas(), &target) < 1e-5);
    }

    #[test]
    fn identical_clients_leave_no_residual() {
        let [a, _, _] = heterogeneous();
        let m = merge(&[&a, &a, &a], &[1.0, 2.0, 5.0], &fedex(), &MergeOptions::default()).unwrap();
        let residual = m.residual().unwrap();
        assert_eq!(residual.len(), 2);
        let largest = residual.values().flat_map(|r| r.data.iter()).fold(0.0f32, |x, v| x.max(v.abs()));
        assert!(largest < 1e-6, "{largest}");
        assert!(max_diff(&m.adapter().unwrap().deltas(), &a.deltas()) < 1e-5);
    }

    #[test]
    fn fedex_residual_hand_computed() {
        // Rank 1, s = 1: A1 = [1, 0], B1 = [2; 0]; A2 = [0, 1], B2 = [0; 4]; equal weights.
        // Mean ΔW = [[1, 0], [0, 2]]; B̄Ā = [1; 2]·[0.5, 0.5] = [[0.5, 0.5], [1, 1]], so the
        // residual is [[0.5, −0.5], [−1, 1]].
        let spec = crate::adapter::LoraSpec { alpha: 1.0, ..unit_spec(1) };
        let mk = |a: Vec<f32>, b: Vec<f32>| Adapter {
            spec: spec.clone(),
            modules: [(key(0, Query), LoraFactors { a: Matrix::from_vec(1, 2, a), b: Matrix::from_vec(2, 1, b) })]
                .into(),
        };
        let x = mk(vec![1.0, 0.0], vec![2.0, 0.0]);
        let y = mk(vec![0.0, 1.0], vec![0.0, 4.0]);
        let m = merge(&[&x, &y], &[], &fedex(), &MergeOptions::default()).unwrap();
        assert_eq!(m.residual().unwrap()[&key(0, Query)].data, vec![0.5, -0.5, -1.0, 1.0]);
        assert_eq!(m.deltas()[&key(0, Query)].data, vec![1.0, 0.0, 0.0, 2.0]);
    }
}
