//! Iso-C, isotropic merging (Marczak et al. 2025, "No Task Left Behind: Isotropic Model Merging
//! with Common and Task-Specific Subspaces"): take the task-arithmetic sum
//! `M = Σ w_k ΔW_k = U Σ Vᵀ` (weights as given, default 1 each) and flatten its spectrum,
//! `ΔW = α · σ̄ · U Vᵀ` with `σ̄` the mean singular value, so that no task's directions dominate.
//!
//! LoRA sums are rank-deficient, and the singular vectors of a zero singular value are arbitrary,
//! so the flattening runs over the numerical rank only: the components with
//! `σ_i > σ_1 · max(m, n) · ε_f32` (the inputs are `f32`); `σ̄` is their mean and the null space
//! stays zero. For a full-rank sum this is the paper's Iso-C.

use super::dense::{all_deltas, finish_dense, weighted_delta_sum};
use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Param, Params};
use super::task_arithmetic::check_lambda;
use super::{MergeOutcome, WeightRule};
use crate::eval::Deltas;
use crate::linalg::{matmul64, svd64, Matrix};
use anyhow::Result;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "iso-c",
    aliases: &["isoc", "iso"],
    label: "isotropic merging",
    params: &[Param { name: "alpha", default: 1.0, help: "scale α of the flattened sum" }],
    build: |p: &Params| IsoC { alpha: p.get("alpha") }.checked(),
};

/// Iso-C with scale `α`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IsoC {
    /// Scale `α` applied to the isotropic sum.
    pub alpha: f64,
}

impl IsoC {
    /// The operator as a [`MergeMethod`], after validation.
    pub fn checked(self) -> Result<MergeMethod> {
        self.validate()?;
        Ok(MergeMethod::new(self))
    }
}

impl MergeOperator for IsoC {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn params(&self) -> Vec<f64> {
        vec![self.alpha]
    }
    fn weight_rule(&self) -> WeightRule {
        WeightRule::Raw
    }
    fn keeps_low_rank(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<()> {
        check_lambda(self.alpha)
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let deltas = all_deltas(input.adapters);
        let refs: Vec<&Deltas> = deltas.iter().collect();
        let sum = weighted_delta_sum(&refs, &input.weights, 1.0, &input.shapes);
        let flat = sum.iter().map(|(k, m)| Ok((*k, isotropic(m, self.alpha)?))).collect::<Result<Deltas>>()?;
        finish_dense(flat, input)
    }
}

/// `α · σ̄ · U_+ V_+ᵀ` over the numerical rank of `m` (see the module documentation).
fn isotropic(m: &Matrix, alpha: f64) -> Result<Matrix> {
    let svd = svd64(m.to_faer().as_ref())?;
    let tol = svd.s.first().copied().unwrap_or(0.0) * m.rows.max(m.cols) as f64 * f32::EPSILON as f64;
    let r = svd.s.iter().take_while(|s| **s > tol).count();
    if r == 0 {
        return Ok(Matrix::zeros(m.rows, m.cols));
    }
    let mean = svd.s[..r].iter().sum::<f64>() / r as f64;
    let u = svd.u.as_ref().subcols(0, r);
    let v = svd.v.as_ref().subcols(0, r);
    let flat = matmul64(u, v.transpose());
    let k = alpha * mean;
    Ok(Matrix::from_faer(faer::Mat::from_fn(m.rows, m.cols, |i, j| k * flat[(i, j)]).as_ref()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, MergeOptions, Merged};
    use super::*;
    use crate::adapter::TargetModule::*;

    fn iso(alpha: f64) -> MergeMethod {
        MergeMethod::new(IsoC { alpha })
    }

    fn close(x: &Matrix, expect: [f32; 4]) {
        assert!(x.data.iter().zip(expect).all(|(a, b)| (a - b).abs() < 1e-6), "{:?} vs {expect:?}", x.data);
    }

    #[test]
    fn iso_c_hand_computed_2x2() {
        // Sum [[0, 3], [1, 0]] = I · diag(3, 1) · [[0, 1], [1, 0]]: σ̄ = 2, U Vᵀ = [[0, 1], [1, 0]].
        let t1 = exact2x2([0.0, 3.0, 0.0, 0.0]);
        let t2 = exact2x2([0.0, 0.0, 1.0, 0.0]);
        let out = merge(&[&t1, &t2], &[], &iso(1.0), &MergeOptions::default()).unwrap();
        assert!(matches!(out, Merged::Dense(_)));
        close(&out.deltas()[&key(0, Query)], [0.0, 2.0, 2.0, 0.0]);
        // Raw weights [2, 1]: sum [[0, 6], [1, 0]], σ̄ = 3.5; α = 0.5 halves it.
        let out = merge(&[&t1, &t2], &[2.0, 1.0], &iso(0.5), &MergeOptions::default()).unwrap();
        close(&out.deltas()[&key(0, Query)], [0.0, 1.75, 1.75, 0.0]);
        // Rank 1: the null space stays empty and a single direction keeps its singular value.
        let out = merge(&[&t1], &[], &iso(1.0), &MergeOptions::default()).unwrap();
        close(&out.deltas()[&key(0, Query)], [0.0, 3.0, 0.0, 0.0]);
        // A zero sum stays zero.
        let neg = exact2x2([0.0, -3.0, 0.0, 0.0]);
        let out = merge(&[&t1, &neg], &[], &iso(1.0), &MergeOptions::default()).unwrap();
        close(&out.deltas()[&key(0, Query)], [0.0; 4]);
        assert!(IsoC { alpha: f64::INFINITY }.checked().is_err());
    }

    #[test]
    fn iso_c_flattens_the_spectrum_of_random_sums() {
        let a = random_adapter(&[key(0, Query)], 2, 7, 6, 70);
        let b = random_adapter(&[key(0, Query)], 2, 7, 6, 71);
        let out = merge(&[&a, &b], &[], &iso(1.0), &MergeOptions::default()).unwrap();
        let sum = mixture(&[&a, &b], &[1.0, 1.0]);
        let s_in = sum[&key(0, Query)].svd().unwrap().s;
        let s_out = out.deltas()[&key(0, Query)].svd().unwrap().s;
        let mean = s_in[..4].iter().sum::<f64>() / 4.0;
        for i in 0..4 {
            assert!((s_out[i] - mean).abs() < 1e-5 * mean, "{s_out:?} vs mean {mean}");
        }
        assert!(s_out[4] < 1e-5 * mean);
    }
}
