//! The result every Shapley estimator returns: [`ShapleyEstimate`].

/// A Shapley estimate with its uncertainty and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapleyEstimate {
    /// Stable estimator name, as [`Estimator::name`](crate::shapley::Estimator::name)
    /// gives it (`exact`, `permutation`, `kernel_paired`, `stratified_cv`, ...).
    pub estimator: String,
    /// Estimated Shapley value of each player.
    pub values: Vec<f64>,
    /// Standard error of each value (0 for exact; NaN when the estimator
    /// cannot tell, e.g. with fewer than two samples).
    pub std_errors: Vec<f64>,
    /// New distinct coalitions the game evaluated for this estimate.
    pub evaluations: usize,
    /// Samples used: permutations, Owen draws, antithetic pairs, or sampled
    /// coalitions of the regression estimators (0 for exact).
    pub samples: usize,
    /// Whether the target precision was reached before the budget ran out
    /// (always true for exact).
    pub converged: bool,
}
