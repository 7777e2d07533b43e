//! Leverage SHAP (Musco & Witter, ICLR 2025): the KernelSHAP regression with
//! coalitions drawn by their leverage scores, which for this problem are
//! proportional to `1 / C(n, |S|)`, i.e. every size equally likely; paired
//! draws and exact border sizes as in KernelSHAP, importance weights
//! `kernel / sampling probability`. Standard errors: bootstrap over draws.

use anyhow::Result;

use crate::shapley::estimator::{Estimator, ShapleyEstimator};
use crate::shapley::game::Memo;
use crate::shapley::registry::{strip_flag, Entry};
use crate::shapley::regression::{regression_min_budget, run_regression, RegressionSpec};
use crate::shapley::result::ShapleyEstimate;

/// Leverage-score sampled KernelSHAP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeverageEstimator {
    /// Draw `S` and `N ∖ S` together (the paper's default).
    pub paired: bool,
}

/// Registry entry of [`LeverageEstimator`].
pub const ENTRY: Entry = Entry {
    names: "leverage[-paired]",
    about: "Leverage SHAP (Musco & Witter 2025): KernelSHAP regression, sizes drawn uniformly (leverage scores)",
    parse: |name| {
        let (base, paired) = strip_flag(name, "-paired");
        (base == "leverage").then(|| Estimator::new(LeverageEstimator { paired }))
    },
    defaults: || [false, true].map(|paired| Estimator::new(LeverageEstimator { paired })).to_vec(),
};

/// Equal mass on every size: leverage scores `∝ 1/C(n, s)` per coalition.
fn uniform_sizes(_n: usize, _s: usize) -> f64 {
    1.0
}

impl ShapleyEstimator for LeverageEstimator {
    fn name(&self) -> String {
        (if self.paired { "leverage_paired" } else { "leverage" }).to_string()
    }

    fn min_budget(&self, n: usize) -> usize {
        regression_min_budget(n, 1)
    }

    fn estimate(&self, memo: &Memo, budget: usize, seed: u64, _target: Option<f64>) -> Result<ShapleyEstimate> {
        let spec = RegressionSpec { order: 1, sampling: uniform_sizes, paired: self.paired };
        run_regression(memo, self.name(), spec, budget, seed)
    }
}
