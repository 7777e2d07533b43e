//! TIES merging (Yadav et al. 2023) on dense deltas: per module and input, trim to the
//! `density` fraction of entries with the largest magnitude, elect each entry's sign by total
//! mass, then take the weighted mean over the inputs that agree with it, times `λ`.
//!
//! Trimming is the magnitude selection of [`crate::prune::magnitude`]: `round(density · n)`
//! entries are kept and the rest removed smallest `|value|` first, equal magnitudes removed in
//! row-major order (so among equal magnitudes at the threshold the later entries are kept).

use super::dense::{all_deltas, delta_shapes, finish_dense};
use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Param, Params};
use super::task_arithmetic::check_lambda;
use super::{resolve_weights, MergeOutcome, WeightRule};
use crate::adapter::ModuleKey;
use crate::eval::Deltas;
use crate::linalg::Matrix;
use crate::prune::magnitude::keep_largest;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Default TIES density (fraction of entries kept per module per adapter), as in the TIES paper.
pub const DEFAULT_TIES_DENSITY: f64 = 0.2;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "ties",
    aliases: &[],
    label: "TIES",
    params: &[
        Param { name: "density", default: DEFAULT_TIES_DENSITY, help: "fraction of entries kept per module and input" },
        Param { name: "lambda", default: 1.0, help: "global scale λ of the merged delta" },
    ],
    build: |p: &Params| Ties { density: p.get("density"), lambda: p.get("lambda") }.checked(),
};

/// TIES with its trimming density and scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ties {
    /// Fraction of entries kept per module per adapter, in `[0, 1]`.
    pub density: f64,
    /// Global scale `λ` applied to the merged delta.
    pub lambda: f64,
}

impl Ties {
    /// The operator as a [`MergeMethod`], after validation.
    pub fn checked(self) -> Result<MergeMethod> {
        self.validate()?;
        Ok(MergeMethod::new(self))
    }
}

impl MergeOperator for Ties {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn params(&self) -> Vec<f64> {
        vec![self.density, self.lambda]
    }
    fn weight_rule(&self) -> WeightRule {
        WeightRule::Positive
    }
    fn keeps_low_rank(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<()> {
        check_lambda(self.lambda)?;
        if !(0.0..=1.0).contains(&self.density) {
            bail!("TIES density {} is outside [0, 1]; it is the fraction of entries kept", self.density);
        }
        Ok(())
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let deltas = all_deltas(input.adapters);
        let refs: Vec<&Deltas> = deltas.iter().collect();
        finish_dense(ties_core(&refs, &input.weights, self, &input.shapes), input)
    }
}

/// TIES on dense deltas (see the module documentation): the elected sign of an entry is the
/// sign of `Σ w_k τ̂_k` (a zero sum gives 0), the merged entry `λ · Σ w_k τ̂_k / Σ w_k` over the
/// inputs whose trimmed entry is non-zero and has the elected sign. Weights must be positive
/// (empty = 1 each); a module missing from a map counts as zero (it never joins the mean).
pub fn ties_deltas(deltas: &[&Deltas], weights: &[f64], density: f64, lambda: f64) -> Result<Deltas> {
    let ties = Ties { density, lambda };
    ties.validate()?;
    let shapes = delta_shapes(deltas)?;
    let w = resolve_weights(weights, deltas.len(), WeightRule::Positive)?;
    Ok(ties_core(deltas, &w, &ties, &shapes))
}

fn ties_core(deltas: &[&Deltas], w: &[f64], ties: &Ties, shapes: &BTreeMap<ModuleKey, (usize, usize)>) -> Deltas {
    let mut out = BTreeMap::new();
    for (key, &(rows, cols)) in shapes {
        let n = rows * cols;
        let keep = (ties.density * n as f64).round() as usize;
        let trimmed: Vec<(f64, Matrix)> =
            deltas.iter().zip(w).filter_map(|(d, wk)| d.get(key).map(|m| (*wk, keep_largest(m, keep)))).collect();
        let mut merged = vec![0.0f32; n];
        for (idx, o) in merged.iter_mut().enumerate() {
            let mass: f64 = trimmed.iter().map(|(wk, t)| wk * t.data[idx] as f64).sum();
            if mass == 0.0 {
                continue;
            }
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (wk, t) in &trimmed {
                let v = t.data[idx] as f64;
                if v != 0.0 && v.signum() == mass.signum() {
                    num += wk * v;
                    den += wk;
                }
            }
            if den > 0.0 {
                *o = (ties.lambda * num / den) as f32;
            }
        }
        out.insert(*key, Matrix::from_vec(rows, cols, merged));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, MergeOptions, Merged};
    use super::*;
    use crate::adapter::TargetModule::*;

    fn ties(density: f64, lambda: f64) -> MergeMethod {
        MergeMethod::new(Ties { density, lambda })
    }

    #[test]
    fn ties_hand_computed_2x2() {
        let t1 = exact2x2([3.0, -1.0, 0.5, 2.0]);
        let t2 = exact2x2([-1.0, -2.0, 1.0, -4.0]);
        let t3 = exact2x2([2.0, 0.2, -3.0, 1.0]);
        // density 0.5 keeps 2 of 4 entries: [[3,0],[0,2]], [[0,-2],[0,-4]], [[2,0],[-3,0]].
        // Elected signs: +, -, -, -. Disjoint means: (3+2)/2, -2, -3, -4.
        let out = merge(&[&t1, &t2, &t3], &[], &ties(0.5, 1.0), &MergeOptions::default()).unwrap();
        assert!(matches!(out, Merged::Dense(_)));
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![2.5, -2.0, -3.0, -4.0]);
        // Weights [1, 1, 2] and λ = 0.5: entry (0,0) = 0.5 · (3 + 2·2) / 3.
        let out = merge(&[&t1, &t2, &t3], &[1.0, 1.0, 2.0], &ties(0.5, 0.5), &MergeOptions::default()).unwrap();
        let d = &out.deltas()[&key(0, Query)];
        let expect = [0.5 * 7.0 / 3.0, -1.0, -1.5, -2.0];
        for (x, y) in d.data.iter().zip(expect) {
            assert!((x - y).abs() < 1e-6, "{:?}", d.data);
        }
        // density 1 keeps everything: entry (0,0) = mean of the positive values 3 and 2.
        let out = merge(&[&t1, &t2, &t3], &[], &ties(1.0, 1.0), &MergeOptions::default()).unwrap();
        // (0,1): -1 -2 +0.2 → −, mean(-1,-2) = -1.5; (1,0): 0.5+1-3 → −, -3; (1,1): 2-4+1 → −, -4.
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![2.5, -1.5, -3.0, -4.0]);
        // density 0 keeps nothing.
        let out = merge(&[&t1, &t2], &[], &ties(0.0, 1.0), &MergeOptions::default()).unwrap();
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![0.0; 4]);
    }

    #[test]
    fn trimming_keeps_the_later_of_equal_magnitudes() {
        // Magnitudes all 1: keeping 2 of 4 removes the first two (prune's tie rule).
        let t1 = exact2x2([1.0, -1.0, 1.0, 1.0]);
        let out = ties_deltas(&[&t1.deltas()], &[], 0.5, 1.0).unwrap();
        assert_eq!(out[&key(0, Query)].data, vec![0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn ties_with_missing_module_and_weights_errors() {
        let t1 = exact2x2([1.0, 2.0, 3.0, 4.0]);
        let mut t2 = exact2x2([1.0, 1.0, 1.0, 1.0]);
        t2.modules.clear();
        let m = ties(1.0, 1.0);
        let out = merge(&[&t1, &t2], &[], &m, &MergeOptions::default()).unwrap();
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![1.0, 2.0, 3.0, 4.0]);
        assert!(merge(&[&t1, &t2], &[1.0, -1.0], &m, &MergeOptions::default()).is_err());
        assert!(merge(&[&t1], &[], &ties(-0.1, 1.0), &MergeOptions::default()).is_err());
        assert!(ties_deltas(&[], &[], 0.5, 1.0).is_err());
    }

    #[test]
    fn refactored_ties_at_full_density_reproduces_a_single_adapter() {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 5, 4, 40);
        let opts = MergeOptions { refactor_rank: Some(2), ..MergeOptions::default() };
        let out = merge(&[&a], &[], &ties(1.0, 1.0), &opts).unwrap();
        assert!(max_diff(&out.deltas(), &a.deltas()) < 1e-5);
    }
}
