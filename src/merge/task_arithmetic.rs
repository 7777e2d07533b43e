//! Task arithmetic (Ilharco et al. 2023): `ΔW = λ · Σ w_k ΔW_k` with the weights as given (not
//! normalised; default 1 each). With [`super::MergeOptions::refactor_rank`] the sum is
//! re-factorised from the stacked factors without forming dense matrices.

use super::common::weighted_sum_svd;
use super::dense::{delta_shapes, weighted_delta_sum};
use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Param, Params};
use super::{resolve_weights, MergeOutcome, Merged, WeightRule};
use crate::eval::Deltas;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "task-arithmetic",
    aliases: &["ta"],
    label: "task arithmetic",
    params: &[Param { name: "lambda", default: 1.0, help: "global scale λ of the weighted sum" }],
    build: |p: &Params| TaskArithmetic { lambda: p.get("lambda") }.checked(),
};

/// Task arithmetic with scale `λ`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskArithmetic {
    /// Global scale `λ` applied to the weighted sum.
    pub lambda: f64,
}

impl TaskArithmetic {
    /// The operator as a [`MergeMethod`], after validation.
    pub fn checked(self) -> Result<MergeMethod> {
        self.validate()?;
        Ok(MergeMethod::new(self))
    }
}

impl MergeOperator for TaskArithmetic {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn params(&self) -> Vec<f64> {
        vec![self.lambda]
    }
    fn weight_rule(&self) -> WeightRule {
        WeightRule::Raw
    }
    fn keeps_low_rank(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<()> {
        check_lambda(self.lambda)
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let merged = match input.opts.refactor_rank {
            Some(r) => {
                Merged::Adapter(weighted_sum_svd(input.adapters, &input.weights, self.lambda, &input.shapes, Some(r))?)
            }
            None => {
                let deltas = super::dense::all_deltas(input.adapters);
                let refs: Vec<&Deltas> = deltas.iter().collect();
                Merged::Dense(weighted_delta_sum(&refs, &input.weights, self.lambda, &input.shapes))
            }
        };
        Ok(MergeOutcome { merged, align: BTreeMap::new() })
    }
}

/// Checks that a merge scale `λ` is finite.
pub(crate) fn check_lambda(lambda: f64) -> Result<()> {
    if !lambda.is_finite() {
        bail!("merge lambda is {lambda}; give a finite number");
    }
    Ok(())
}

/// Task arithmetic on dense deltas: `λ · Σ w_k ΔW_k`, weights as given (empty = 1 each); a module
/// missing from a map counts as zero.
pub fn task_arithmetic_deltas(deltas: &[&Deltas], weights: &[f64], lambda: f64) -> Result<Deltas> {
    check_lambda(lambda)?;
    let shapes = delta_shapes(deltas)?;
    let w = resolve_weights(weights, deltas.len(), WeightRule::Raw)?;
    Ok(weighted_delta_sum(deltas, &w, lambda, &shapes))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, MergeOptions};
    use super::*;
    use crate::adapter::TargetModule::*;
    use crate::linalg::Matrix;

    #[test]
    fn task_arithmetic_identity_and_sum() {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 5, 4, 40);
        let m = MergeMethod::new(TaskArithmetic { lambda: 1.0 });
        let out = merge(&[&a], &[], &m, &MergeOptions::default()).unwrap();
        assert!(max_diff(&out.deltas(), &a.deltas()) < 1e-6);
        // Not normalised: a + a with λ = 0.5 is a; weights [2, -1] give a.
        let half = MergeMethod::new(TaskArithmetic { lambda: 0.5 });
        let out = merge(&[&a, &a], &[], &half, &MergeOptions::default()).unwrap();
        assert!(max_diff(&out.deltas(), &a.deltas()) < 1e-6);
        let out = merge(&[&a, &a], &[2.0, -1.0], &m, &MergeOptions::default()).unwrap();
        assert!(max_diff(&out.deltas(), &a.deltas()) < 1e-5);
        // Re-factorised output at the adapter's rank is exact for a single adapter.
        let opts = MergeOptions { refactor_rank: Some(2), ..MergeOptions::default() };
        let out = merge(&[&a], &[], &m, &opts).unwrap();
        assert_eq!(out.adapter().unwrap().spec.rank, 2);
        assert!(max_diff(&out.deltas(), &a.deltas()) < 1e-5);
        assert!(TaskArithmetic { lambda: f64::NAN }.checked().is_err());
    }

    #[test]
    fn dense_entry_point_checks_shapes() {
        let a: Deltas = [(key(0, Query), Matrix::from_vec(2, 2, vec![1.0, 2.0, 3.0, 4.0]))].into();
        let mut b = a.clone();
        b.insert(key(0, Query), Matrix::zeros(3, 2));
        assert!(task_arithmetic_deltas(&[&a, &b], &[], 1.0).unwrap_err().to_string().contains("module 0.q"));
        assert!(task_arithmetic_deltas(&[], &[], 1.0).is_err());
        let s = task_arithmetic_deltas(&[&a, &a], &[1.0, 1.0], 1.0).unwrap();
        assert_eq!(s[&key(0, Query)].data, vec![2.0, 4.0, 6.0, 8.0]);
    }
}
