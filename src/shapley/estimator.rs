//! One entry point for every Shapley estimator: [`Estimator`],
//! [`EstimateConfig`], [`estimate`] and the common result [`ShapleyEstimate`].

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Error, Result};

use crate::shapley::coalition::Coalition;
use crate::shapley::exact::{shapley_from_table, MAX_EXACT_PLAYERS};
use crate::shapley::game::{Game, Memo};
use crate::shapley::owen::{owen_min_budget, owen_sampling, OwenQ};
use crate::shapley::permutation::{permutation_min_budget, permutation_sampling};

/// A Shapley estimate with its uncertainty and cost.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapleyEstimate {
    /// Stable estimator name: `exact`, `permutation`, `permutation_antithetic`,
    /// `owen_stratified`, `owen_midpoint`, `owen_grid` (or `owen_grid_<points>`),
    /// the Owen ones optionally with an `_antithetic` suffix.
    pub estimator: String,
    /// Estimated Shapley value of each player.
    pub values: Vec<f64>,
    /// Standard error of each value (0 for exact; NaN with fewer than two samples).
    pub std_errors: Vec<f64>,
    /// New distinct coalitions the game evaluated for this estimate.
    pub evaluations: usize,
    /// Samples used: permutations, Owen draws, or antithetic pairs (0 for exact).
    pub samples: usize,
    /// Whether the target precision was reached before the budget ran out
    /// (always true for exact).
    pub converged: bool,
}

/// Which estimator to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Estimator {
    /// All `2^n` coalitions (`n <= 20`); ignores the budget. The ground truth.
    Exact,
    /// Permutation sampling, optionally with antithetic (reversed) pairs.
    Permutation {
        /// Pair each permutation with its reverse.
        antithetic: bool,
    },
    /// Owen (multilinear-extension) sampling.
    Owen {
        /// How each draw's `q` is chosen.
        q: OwenQ,
        /// Pair each draw with its complement at `1 − q`.
        antithetic: bool,
    },
}

impl Estimator {
    /// The names [`Estimator::from_str`] accepts (`-` and `_` are interchangeable).
    pub const ACCEPTED: &'static str = "exact, permutation, permutation-antithetic, owen (= owen-stratified), owen-midpoint, owen-grid, owen-grid-<points>, each owen one optionally with -antithetic";

    /// The stable name, as in [`ShapleyEstimate::estimator`]; parses back to `self`.
    pub fn name(&self) -> String {
        match self {
            Estimator::Exact => "exact".to_string(),
            Estimator::Permutation { antithetic: false } => "permutation".to_string(),
            Estimator::Permutation { antithetic: true } => "permutation_antithetic".to_string(),
            Estimator::Owen { q, antithetic } => {
                format!("owen_{}{}", q.name(), if *antithetic { "_antithetic" } else { "" })
            }
        }
    }

    /// Whether this is [`Estimator::Exact`].
    pub fn is_exact(&self) -> bool {
        matches!(self, Estimator::Exact)
    }

    /// The smallest budget that yields an estimate on `n` players from a
    /// fresh memo (`2^n` for exact, saturating at `usize::MAX`).
    pub fn min_budget(&self, n: usize) -> usize {
        match self {
            Estimator::Exact => 1usize.checked_shl(n as u32).unwrap_or(usize::MAX),
            Estimator::Permutation { antithetic } => permutation_min_budget(n, *antithetic),
            Estimator::Owen { q, antithetic } => owen_min_budget(n, *q, *antithetic),
        }
    }

    /// Every sampling estimator with default settings, plain then antithetic.
    pub fn sampling_estimators() -> Vec<Estimator> {
        let mut all = Vec::new();
        for antithetic in [false, true] {
            all.push(Estimator::Permutation { antithetic });
            for q in [OwenQ::Stratified, OwenQ::Midpoint, OwenQ::grid()] {
                all.push(Estimator::Owen { q, antithetic });
            }
        }
        all
    }
}

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Estimator {
    type Err = Error;

    /// Parses names such as `exact`, `permutation-antithetic`, `owen`,
    /// `owen-midpoint`, `owen-grid`, `owen-grid-20`, `owen_stratified_antithetic`.
    fn from_str(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('_', "-");
        let (base, antithetic) = match norm.strip_suffix("-antithetic") {
            Some(base) => (base, true),
            None => (norm.as_str(), false),
        };
        let q = match base {
            "exact" if !antithetic => return Ok(Estimator::Exact),
            "permutation" => return Ok(Estimator::Permutation { antithetic }),
            "owen" | "owen-stratified" => OwenQ::Stratified,
            "owen-midpoint" => OwenQ::Midpoint,
            "owen-grid" => OwenQ::grid(),
            other => match other.strip_prefix("owen-grid-").map(str::parse::<usize>) {
                Some(Ok(points)) if points >= 2 => OwenQ::Grid { points },
                _ => bail!("unknown estimator '{s}': use one of {}", Estimator::ACCEPTED),
            },
        };
        Ok(Estimator::Owen { q, antithetic })
    }
}

/// What to estimate and how much it may cost.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimateConfig {
    /// The estimator.
    pub estimator: Estimator,
    /// Hard cap on new distinct evaluations (ignored by [`Estimator::Exact`]).
    pub budget: usize,
    /// Seed of every random choice; the same seed gives bit-identical output.
    pub seed: u64,
    /// Stop early once `max_i SE_i / (max φ − min φ)` falls below this.
    pub target_precision: Option<f64>,
}

impl EstimateConfig {
    /// A config without early stopping.
    pub fn new(estimator: Estimator, budget: usize, seed: u64) -> Self {
        EstimateConfig { estimator, budget, seed, target_precision: None }
    }

    /// The same config with early stopping at `target`.
    pub fn with_target_precision(mut self, target: f64) -> Self {
        self.target_precision = Some(target);
        self
    }

    /// The budget to give a [`Memo`] for [`estimate_with_memo`]: `budget`,
    /// or unlimited for exact.
    pub fn memo_budget(&self) -> usize {
        if self.estimator.is_exact() {
            usize::MAX
        } else {
            self.budget
        }
    }
}

/// Runs the configured estimator on `game` with a fresh memo.
///
/// Sampling estimators spend at most `cfg.budget` distinct evaluations (see
/// the module docs for how budget maps to samples) and error, rather than
/// overspend, when the budget cannot pay for one sample. Exact ignores the
/// budget: it evaluates all `2^n` coalitions (`n <= 20`, else an error) and
/// reports zero standard errors.
pub fn estimate(game: &dyn Game, cfg: &EstimateConfig) -> Result<ShapleyEstimate> {
    let memo = Memo::new(game, cfg.memo_budget());
    estimate_with_memo(&memo, cfg)
}

/// Like [`estimate`], but through a caller's memo, so the caller can read
/// every evaluated coalition afterwards with [`Memo::cached`] (create it
/// with [`EstimateConfig::memo_budget`]). A sampling run spends at most
/// `min(cfg.budget, memo.remaining())` new evaluations; coalitions already
/// in the memo are free. Exact needs the memo to afford every coalition not
/// yet in it.
pub fn estimate_with_memo(memo: &Memo, cfg: &EstimateConfig) -> Result<ShapleyEstimate> {
    match cfg.estimator {
        Estimator::Exact => exact_through_memo(memo),
        Estimator::Permutation { antithetic } => {
            permutation_sampling(memo, cfg.budget, antithetic, cfg.seed, cfg.target_precision)
        }
        Estimator::Owen { q, antithetic } => {
            owen_sampling(memo, cfg.budget, q, antithetic, cfg.seed, cfg.target_precision)
        }
    }
}

fn exact_through_memo(memo: &Memo) -> Result<ShapleyEstimate> {
    let n = memo.n_players();
    if n > MAX_EXACT_PLAYERS {
        bail!(
            "exact Shapley values need all 2^n coalition values and n = {n} exceeds {MAX_EXACT_PLAYERS}: use a sampling estimator (permutation or owen)"
        );
    }
    let before = memo.evaluations();
    let all: Vec<Coalition> = (0..1u64 << n).collect();
    let Some(table) = memo.try_values(&all)? else {
        bail!(
            "the memo's budget ({}) cannot pay for the {} coalitions exact needs: create the memo with EstimateConfig::memo_budget or Memo::unlimited",
            memo.budget(),
            memo.cost(&all)
        );
    };
    Ok(ShapleyEstimate {
        estimator: Estimator::Exact.name(),
        values: shapley_from_table(&table, n)?,
        std_errors: vec![0.0; n],
        evaluations: memo.evaluations() - before,
        samples: 0,
        converged: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::exact::exact;
    use crate::shapley::metrics::mse;
    use crate::shapley::synthetic::{AdditiveGame, SaturatingGame, SumOfUnanimityGames, WeightedMajorityGame};

    /// The five unbiased sampling estimators the convergence tests cover.
    fn unbiased() -> Vec<Estimator> {
        vec![
            Estimator::Permutation { antithetic: false },
            Estimator::Permutation { antithetic: true },
            Estimator::Owen { q: OwenQ::Stratified, antithetic: false },
            Estimator::Owen { q: OwenQ::Midpoint, antithetic: false },
            Estimator::Owen { q: OwenQ::Stratified, antithetic: true },
        ]
    }

    #[test]
    fn names_parse_and_round_trip() {
        let cases = [
            ("exact", Estimator::Exact),
            ("permutation", Estimator::Permutation { antithetic: false }),
            ("permutation-antithetic", Estimator::Permutation { antithetic: true }),
            ("owen", Estimator::Owen { q: OwenQ::Stratified, antithetic: false }),
            ("owen-midpoint", Estimator::Owen { q: OwenQ::Midpoint, antithetic: false }),
            ("owen-grid", Estimator::Owen { q: OwenQ::grid(), antithetic: false }),
            ("owen-antithetic", Estimator::Owen { q: OwenQ::Stratified, antithetic: true }),
            ("Owen_Grid_20_antithetic", Estimator::Owen { q: OwenQ::Grid { points: 20 }, antithetic: true }),
            (" owen_midpoint_antithetic ", Estimator::Owen { q: OwenQ::Midpoint, antithetic: true }),
        ];
        for (s, e) in cases {
            assert_eq!(s.parse::<Estimator>().unwrap(), e, "{s}");
        }
        let mut all = Estimator::sampling_estimators();
        all.push(Estimator::Exact);
        all.push(Estimator::Owen { q: OwenQ::Grid { points: 7 }, antithetic: false });
        for e in all {
            assert_eq!(e.name().parse::<Estimator>().unwrap(), e);
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(Estimator::Owen { q: OwenQ::Stratified, antithetic: true }.name(), "owen_stratified_antithetic");
        for bad in ["", "exact-antithetic", "owen-grid-1", "owen-grid-x", "kernelshap"] {
            let err = bad.parse::<Estimator>().unwrap_err().to_string();
            assert!(err.contains("use one of"), "{bad}: {err}");
        }
    }

    #[test]
    fn exact_estimator_ignores_budget_and_reports_zero_error() {
        let g = SumOfUnanimityGames::random(8, 12, 3, 2).unwrap();
        let est = estimate(&g, &EstimateConfig::new(Estimator::Exact, 1, 0)).unwrap();
        assert_eq!(est.evaluations, 256);
        assert_eq!(est.values, exact(&g).unwrap().shapley);
        assert_eq!(est.std_errors, vec![0.0; 8]);
        assert!(est.converged && est.samples == 0 && est.estimator == "exact");
        // Through a caller's memo every coalition is then available.
        let cfg = EstimateConfig::new(Estimator::Exact, 0, 0);
        let memo = Memo::new(&g, cfg.memo_budget());
        estimate_with_memo(&memo, &cfg).unwrap();
        assert_eq!(memo.cached().len(), 256);
        let small = Memo::new(&g, 100);
        assert!(estimate_with_memo(&small, &cfg).is_err());
        let big = AdditiveGame::new(vec![0.0; 21]).unwrap();
        assert!(estimate(&big, &cfg).is_err());
    }

    /// Runs `e` on `game` and returns the estimate.
    fn run(game: &dyn Game, e: Estimator, budget: usize, seed: u64) -> ShapleyEstimate {
        estimate(game, &EstimateConfig::new(e, budget, seed)).unwrap()
    }

    #[test]
    fn sampling_estimators_agree_with_exact_within_four_standard_errors() {
        let soum = SumOfUnanimityGames::random(12, 30, 5, 21).unwrap();
        let sat = SaturatingGame::random(11, 22).unwrap();
        let games: [&dyn Game; 2] = [&soum, &sat];
        for game in games {
            let truth = exact(game).unwrap().shapley;
            for e in unbiased() {
                for seed in 0..5u64 {
                    let budget = 3000;
                    let est = run(game, e, budget, seed);
                    assert!(est.samples >= 100, "{}: {} samples", e, est.samples);
                    assert!(est.evaluations <= budget);
                    for (i, ((v, t), se)) in est.values.iter().zip(&truth).zip(&est.std_errors).enumerate() {
                        assert!(
                            (v - t).abs() <= 4.0 * se + 1e-12,
                            "{e} on {} seed {seed} player {i}: |{v} - {t}| > 4 * {se}",
                            game.name(),
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn error_shrinks_as_budget_grows() {
        // n = 16 so that even the large budget is far from enumerating the game.
        let game = SumOfUnanimityGames::random(16, 40, 6, 5).unwrap();
        let truth = exact(&game).unwrap().shapley;
        for e in unbiased() {
            let avg_mse = |budget: usize| {
                (0..4u64).map(|seed| mse(&run(&game, e, budget, seed).values, &truth).unwrap()).sum::<f64>() / 4.0
            };
            let (small, large) = (avg_mse(300), avg_mse(6000));
            assert!(large < 0.5 * small, "{e}: MSE {large} at 6000 vs {small} at 300");
        }
    }

    #[test]
    fn grid_variant_is_biased_where_stratified_is_not() {
        let game = WeightedMajorityGame::symmetric(12, 6).unwrap();
        let truth = vec![1.0 / 12.0; 12];
        let budget = 13 * 200_000;
        let grid = run(&game, Estimator::Owen { q: OwenQ::grid(), antithetic: false }, budget, 1);
        let strat = run(&game, Estimator::Owen { q: OwenQ::Stratified, antithetic: false }, budget, 1);
        assert_eq!(grid.samples, 200_000);
        // Only 2^12 coalitions exist, so the huge budget costs CPU, not evaluations.
        assert_eq!(grid.evaluations, 4096);
        // Mean relative error over players: Σ φ̂ / Σ φ − 1, and Σ φ = 1.
        let rel_bias = |v: &[f64]| v.iter().sum::<f64>() - 1.0;
        let gb = rel_bias(&grid.values);
        assert!((-0.13..-0.07).contains(&gb), "grid relative bias {gb}");
        let sb = rel_bias(&strat.values);
        assert!(sb.abs() < 0.03, "stratified relative bias {sb}");
        let (mg, ms) = (mse(&grid.values, &truth).unwrap(), mse(&strat.values, &truth).unwrap());
        assert!(mg > 10.0 * ms, "grid MSE {mg} vs stratified {ms}");
        // The grid estimate is confidently wrong: far outside its own error bars.
        assert!((grid.values[0] - truth[0]).abs() > 4.0 * grid.std_errors[0]);
    }

    #[test]
    fn no_estimator_exceeds_its_budget_and_tiny_budgets_error() {
        let game = SumOfUnanimityGames::random(12, 20, 4, 9).unwrap();
        let budgets = [0usize, 1, 2, 5, 12, 13, 14, 23, 24, 25, 26, 27, 40, 129, 130, 259, 260, 500, 1000, 2000, 5000];
        for e in Estimator::sampling_estimators() {
            for &budget in &budgets {
                let result = estimate(&game, &EstimateConfig::new(e, budget, 7));
                if budget < e.min_budget(12) {
                    let err = result.expect_err("budget below the minimum must fail").to_string();
                    assert!(err.contains("too small") && err.contains("raise the budget"), "{err}");
                } else {
                    let est = result.unwrap();
                    assert!(est.evaluations <= budget, "{e} used {} of {budget}", est.evaluations);
                    assert!(est.samples >= 1);
                }
            }
        }
        // A budget larger than the game has coalitions still terminates.
        let est = run(&game, Estimator::Permutation { antithetic: false }, 100_000, 3);
        assert!(est.evaluations <= 4096 && est.samples <= 100_000);
    }

    #[test]
    fn same_seed_same_bits_different_seed_different_output() {
        let game = SaturatingGame::random(12, 4).unwrap();
        for e in Estimator::sampling_estimators() {
            let a = run(&game, e, 1500, 42);
            let b = run(&game, e, 1500, 42);
            let c = run(&game, e, 1500, 43);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a.values), bits(&b.values), "{e}");
            assert_eq!(bits(&a.std_errors), bits(&b.std_errors), "{e}");
            assert_eq!(a, b);
            assert_ne!(a.values, c.values, "{e}");
        }
    }

    #[test]
    fn early_stopping_stops_before_the_budget_on_an_easy_game() {
        let game = AdditiveGame::new(vec![0.5, 1.0, -0.25, 2.0, 0.75, 0.0, 1.5, -1.0, 0.25, 3.0]).unwrap();
        for e in Estimator::sampling_estimators() {
            let cfg = EstimateConfig::new(e, 5000, 1).with_target_precision(0.01);
            let est = estimate(&game, &cfg).unwrap();
            assert!(est.converged, "{e}");
            assert!(est.evaluations < 5000 && est.samples <= 10, "{e}: {est:?}");
        }
        // A hard game at a tiny target uses the whole budget instead.
        let hard = SumOfUnanimityGames::random(12, 30, 6, 3).unwrap();
        let cfg = EstimateConfig::new(Estimator::Permutation { antithetic: false }, 600, 1).with_target_precision(1e-6);
        let est = estimate(&hard, &cfg).unwrap();
        assert!(!est.converged);
        // A moderate target on a noisy game stops early with a small ratio.
        let cfg = EstimateConfig::new(Estimator::Owen { q: OwenQ::Stratified, antithetic: false }, 13 * 5000, 2)
            .with_target_precision(0.05);
        let est = estimate(&hard, &cfg).unwrap();
        assert!(est.converged && est.samples < 5000, "{} samples", est.samples);
        let ratio = crate::shapley::sampling::convergence_ratio(&est.values, &est.std_errors);
        assert!(ratio < 0.05);
        let bad = EstimateConfig::new(Estimator::Permutation { antithetic: false }, 600, 1).with_target_precision(-1.0);
        assert!(estimate(&hard, &bad).is_err());
    }
}
