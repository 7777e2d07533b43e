//! FlexLoRA: `ΔW = Σ w_k ΔW_k` (weights normalised to 1), then truncated SVD to rank
//! [`super::MergeOptions::svd_rank`] (default: the largest rank among the adapters for that
//! module), computed from the stacked factors without forming dense matrices.

use super::common::weighted_sum_svd;
use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Params};
use super::{MergeOutcome, Merged};
use anyhow::Result;
use std::collections::BTreeMap;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "delta-svd",
    aliases: &["svd", "flexlora"],
    label: "FlexLoRA",
    params: &[],
    build: |_: &Params| Ok(MergeMethod::new(DeltaSvd)),
};

/// SVD of the weighted delta sum (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeltaSvd;

impl MergeOperator for DeltaSvd {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let adapter = weighted_sum_svd(input.adapters, &input.weights, 1.0, &input.shapes, input.opts.svd_rank)?;
        Ok(MergeOutcome { merged: Merged::Adapter(adapter), align: BTreeMap::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, MergeOptions};
    use super::*;
    use crate::adapter::TargetModule::*;

    #[test]
    fn delta_svd_exact_for_low_rank_sums() {
        let op = MergeMethod::new(DeltaSvd);
        let a = random_adapter(&[key(0, Query), key(3, Value)], 2, 7, 6, 30);
        let m = merge(&[&a, &a], &[0.3, 0.7], &op, &MergeOptions::default()).unwrap();
        assert_eq!(m.adapter().unwrap().modules[&key(0, Query)].rank(), 2);
        assert!(max_diff(&m.deltas(), &a.deltas()) < 1e-5);
        // Two different rank-2 adapters: the sum has rank 4, so rank 4 is exact and rank 2 is
        // the Eckart–Young truncation (error² = tail singular values²).
        let b = random_adapter(&[key(0, Query), key(3, Value)], 2, 7, 6, 31);
        let target = mixture(&[&a, &b], &[0.5, 0.5]);
        let opts4 = MergeOptions { svd_rank: Some(4), ..MergeOptions::default() };
        let m4 = merge(&[&a, &b], &[], &op, &opts4).unwrap();
        assert!(max_diff(&m4.deltas(), &target) < 1e-5);
        let m2 = merge(&[&a, &b], &[], &op, &MergeOptions::default()).unwrap();
        let t = &target[&key(0, Query)];
        let err = m2.deltas()[&key(0, Query)].sub(t);
        let tail: f64 = t.svd().unwrap().s[2..].iter().map(|s| s * s).sum();
        assert!((err.dot(&err) - tail).abs() < 1e-4 * (1.0 + tail));
        let bad = MergeOptions { svd_rank: Some(0), ..MergeOptions::default() };
        assert!(merge(&[&a], &[], &op, &bad).is_err());
    }
}
