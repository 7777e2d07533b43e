//! KernelSHAP (Lundberg & Lee 2017): the Shapley values as the solution of a
//! weighted least-squares problem with the Shapley kernel, coalitions drawn
//! in proportion to the kernel, sizes whose expected draws reach their
//! number of coalitions (1 and n−1 first) enumerated in full, optionally
//! paired (`S` with `N ∖ S`, Covert & Lee 2021). Standard errors: bootstrap
//! over the draws ([`BOOTSTRAP_REPS`](crate::shapley::regression::BOOTSTRAP_REPS)).

use anyhow::Result;

use crate::shapley::estimator::{Estimator, ShapleyEstimator};
use crate::shapley::game::Memo;
use crate::shapley::registry::{strip_flag, Entry};
use crate::shapley::regression::{kernel_mass, regression_min_budget, run_regression, RegressionSpec};
use crate::shapley::result::ShapleyEstimate;

/// KernelSHAP, plain or paired.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KernelEstimator {
    /// Draw `S` and `N ∖ S` together.
    pub paired: bool,
}

/// Registry entry of [`KernelEstimator`].
pub const ENTRY: Entry = Entry {
    names: "kernel[-paired]",
    about: "KernelSHAP: Shapley-kernel regression with exact border sizes; paired adds N∖S to each draw",
    parse: |name| {
        let (base, paired) = strip_flag(name, "-paired");
        (base == "kernel").then(|| Estimator::new(KernelEstimator { paired }))
    },
    defaults: || [false, true].map(|paired| Estimator::new(KernelEstimator { paired })).to_vec(),
};

impl ShapleyEstimator for KernelEstimator {
    fn name(&self) -> String {
        (if self.paired { "kernel_paired" } else { "kernel" }).to_string()
    }

    fn min_budget(&self, n: usize) -> usize {
        regression_min_budget(n, 1)
    }

    fn estimate(&self, memo: &Memo, budget: usize, seed: u64, _target: Option<f64>) -> Result<ShapleyEstimate> {
        let spec = RegressionSpec { order: 1, sampling: kernel_mass, paired: self.paired };
        run_regression(memo, self.name(), spec, budget, seed)
    }
}
