//! kADD-SHAP (Pelegrina, Duarte & Grabisch 2023): a k-additive game
//! (Möbius coefficients of sets of at most `k` players) fitted by
//! Shapley-kernel weighted least squares under `v̂(∅) = v(∅)` and
//! `v̂(N) = v(N)`, whose Shapley values `Σ_{T∋i} m(T)/|T|` are the estimate.
//! Coalitions as in KernelSHAP (kernel draws, exact border sizes, optional
//! pairing). Standard errors: bootstrap over draws. Exact on k-additive games
//! once the budget covers the coefficients.

use anyhow::Result;

use crate::shapley::estimator::{Estimator, ShapleyEstimator};
use crate::shapley::game::Memo;
use crate::shapley::registry::{strip_flag, Entry};
use crate::shapley::regression::{kernel_mass, regression_min_budget, run_regression, RegressionSpec};
use crate::shapley::result::ShapleyEstimate;

/// kADD-SHAP of a given order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KaddEstimator {
    /// Order `k` of the additive model (2 by default).
    pub order: usize,
    /// Draw `S` and `N ∖ S` together.
    pub paired: bool,
}

/// Parses `kadd`, `kadd-<k>`, each with optional `-paired`.
fn parse_kadd(name: &str) -> Option<Estimator> {
    let (base, paired) = strip_flag(name, "-paired");
    let order = match base {
        "kadd" => 2,
        other => other.strip_prefix("kadd-")?.parse().ok().filter(|&k| k >= 1)?,
    };
    Some(Estimator::new(KaddEstimator { order, paired }))
}

/// Registry entry of [`KaddEstimator`].
pub const ENTRY: Entry = Entry {
    names: "kadd[-<k>][-paired]",
    about: "kADD-SHAP: k-additive (default 2) Möbius model fitted under efficiency, kernel weights",
    parse: parse_kadd,
    defaults: || [false, true].map(|paired| Estimator::new(KaddEstimator { order: 2, paired })).to_vec(),
};

impl ShapleyEstimator for KaddEstimator {
    fn name(&self) -> String {
        let order = if self.order == 2 { String::new() } else { format!("_{}", self.order) };
        format!("kadd{order}{}", if self.paired { "_paired" } else { "" })
    }

    fn min_budget(&self, n: usize) -> usize {
        regression_min_budget(n, self.order)
    }

    fn estimate(&self, memo: &Memo, budget: usize, seed: u64, _target: Option<f64>) -> Result<ShapleyEstimate> {
        let spec = RegressionSpec { order: self.order, sampling: kernel_mass, paired: self.paired };
        run_regression(memo, self.name(), spec, budget, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::estimator::{estimate, EstimateConfig};
    use crate::shapley::exact::exact;
    use crate::shapley::synthetic::SumOfUnanimityGames;

    #[test]
    fn exact_on_a_two_additive_game_once_the_budget_covers_the_coefficients() {
        // Carriers of at most 2 players: the game is 2-additive.
        let g = SumOfUnanimityGames::random(12, 25, 2, 8).unwrap();
        let truth = exact(&g).unwrap().shapley;
        for name in ["kadd", "kadd-paired", "stratified-cv"] {
            for budget in [200usize, 700] {
                let e: Estimator = name.parse().unwrap();
                let est = estimate(&g, &EstimateConfig::new(e, budget, 3)).unwrap();
                assert!(est.evaluations <= budget);
                for (a, b) in est.values.iter().zip(&truth) {
                    assert!((a - b).abs() < 1e-8, "{name} at {budget}: {a} vs {b}");
                }
            }
        }
        // Order 1 (KernelSHAP's model) is not exact on the same game.
        let kernel = estimate(&g, &EstimateConfig::new("kernel".parse().unwrap(), 200, 3)).unwrap();
        assert!(kernel.values.iter().zip(&truth).any(|(a, b)| (a - b).abs() > 1e-6));
        assert_eq!(KaddEstimator { order: 3, paired: true }.name(), "kadd_3_paired");
        assert_eq!(KaddEstimator { order: 2, paired: false }.min_budget(12), 79);
    }
}
