//! One entry point for every Shapley estimator: the [`ShapleyEstimator`]
//! trait each estimator implements in its own file, the [`Estimator`] handle
//! that names one (parsed through the [registry](crate::shapley::registry)),
//! [`EstimateConfig`] and [`estimate`].

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{Error, Result};

use crate::shapley::game::{Game, Memo};
use crate::shapley::registry;
use crate::shapley::result::ShapleyEstimate;
use crate::shapley::sampling::{check_target, convergence_ratio};

/// One Shapley estimator: its name, the smallest budget it can work with,
/// and the estimate itself. Implementations live one per file and are listed
/// in [`registry::ESTIMATORS`].
///
/// # Example: a new estimator
///
/// A one-permutation estimator: the marginal contributions along a single
/// seeded random order. On an additive game every order gives the exact values,
/// which the example checks against the closed form. A real estimator goes in its
/// own file under `src/shapley/` plus one `Entry` line in [`registry::ESTIMATORS`],
/// which gives it a name for `--estimators` and `shapley-bench`.
///
/// ```
/// use anyhow::Result;
/// use copra_lab::shapley::{coalition, estimate, AdditiveGame, EstimateConfig, Estimator, Memo};
/// use copra_lab::shapley::{ShapleyEstimate, ShapleyEstimator};
/// use rand::{seq::SliceRandom, SeedableRng};
///
/// struct OneOrder;
///
/// impl ShapleyEstimator for OneOrder {
///     fn name(&self) -> String {
///         "one_order".into()
///     }
///     fn min_budget(&self, n: usize) -> usize {
///         n + 1 // the empty coalition and one per prefix
///     }
///     fn estimate(&self, memo: &Memo, _budget: usize, seed: u64, _target: Option<f64>) -> Result<ShapleyEstimate> {
///         let n = memo.n_players();
///         let mut order: Vec<usize> = (0..n).collect();
///         order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
///         // The prefixes of the order, from the empty coalition to the grand one.
///         let mut prefixes = vec![coalition::EMPTY];
///         for &i in &order {
///             prefixes.push(coalition::insert(*prefixes.last().unwrap(), i));
///         }
///         let v = memo.values(&prefixes)?;
///         let mut values = vec![0.0; n];
///         for (k, &i) in order.iter().enumerate() {
///             values[i] = v[k + 1] - v[k];
///         }
///         Ok(ShapleyEstimate {
///             estimator: self.name(),
///             values,
///             std_errors: vec![f64::NAN; n],
///             evaluations: memo.evaluations(),
///             samples: 1,
///             converged: false,
///         })
///     }
/// }
///
/// let game = AdditiveGame::new(vec![0.5, -1.0, 2.0, 0.25])?;
/// let cfg = EstimateConfig::new(Estimator::new(OneOrder), 5, 7);
/// let est = estimate(&game, &cfg)?;
/// assert_eq!(est.values, game.shapley_closed_form());
/// assert_eq!(est.evaluations, 5);
/// # Ok::<(), anyhow::Error>(())
/// ```
pub trait ShapleyEstimator: Send + Sync {
    /// Stable name (lowercase, `_`-separated); parses back to the same estimator.
    fn name(&self) -> String;

    /// The smallest budget that yields an estimate on `n` players from a fresh memo.
    fn min_budget(&self, n: usize) -> usize;

    /// Estimates through `memo`, spending at most `min(budget, memo.remaining())`
    /// new distinct evaluations; every random choice comes from `seed`. With
    /// `target_precision`, an estimator that [stops early](ShapleyEstimator::stops_early)
    /// itself may stop once `max SE / value range` falls below it.
    fn estimate(&self, memo: &Memo, budget: usize, seed: u64, target_precision: Option<f64>)
        -> Result<ShapleyEstimate>;

    /// Whether this is the exact computation (ignores the budget; the ground truth).
    fn is_exact(&self) -> bool {
        false
    }

    /// Whether [`ShapleyEstimator::estimate`] applies the early-stopping rule
    /// itself; otherwise [`estimate_with_memo`] reruns it on doubling budgets.
    fn stops_early(&self) -> bool {
        false
    }
}

/// A named, cheaply clonable handle on a [`ShapleyEstimator`]; equal when the names are.
#[derive(Clone)]
pub struct Estimator(Arc<dyn ShapleyEstimator>);

impl Estimator {
    /// Wraps an estimator.
    pub fn new(e: impl ShapleyEstimator + 'static) -> Self {
        Estimator(Arc::new(e))
    }

    /// The stable name, as in [`ShapleyEstimate::estimator`]; parses back to `self`.
    pub fn name(&self) -> String {
        self.0.name()
    }

    /// Whether this is the exact computation.
    pub fn is_exact(&self) -> bool {
        self.0.is_exact()
    }

    /// The smallest budget that yields an estimate on `n` players from a
    /// fresh memo (`2^n` for exact, saturating at `usize::MAX`).
    pub fn min_budget(&self, n: usize) -> usize {
        self.0.min_budget(n)
    }

    /// The estimator itself.
    pub fn inner(&self) -> &dyn ShapleyEstimator {
        self.0.as_ref()
    }

    /// Every sampling estimator of the registry with its default settings.
    pub fn sampling_estimators() -> Vec<Estimator> {
        registry::ESTIMATORS.iter().flat_map(|entry| (entry.defaults)()).filter(|e| !e.is_exact()).collect()
    }

    /// Parses a comma-separated list of names (empty items are skipped).
    pub fn parse_list(list: &str) -> Result<Vec<Estimator>> {
        list.split(',').filter(|s| !s.trim().is_empty()).map(str::parse).collect()
    }
}

impl PartialEq for Estimator {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name()
    }
}

impl Eq for Estimator {}

impl Hash for Estimator {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state)
    }
}

impl fmt::Debug for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Estimator({})", self.name())
    }
}

impl fmt::Display for Estimator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Estimator {
    type Err = Error;

    /// Parses a name of the registry (case-insensitive, `-` and `_`
    /// interchangeable), e.g. `permutation-antithetic`, `owen-grid-20`, `kernel-paired`.
    fn from_str(s: &str) -> Result<Self> {
        registry::parse(s)
    }
}

/// What to estimate and how much it may cost.
#[derive(Debug, Clone, PartialEq)]
pub struct EstimateConfig {
    /// The estimator.
    pub estimator: Estimator,
    /// Hard cap on new distinct evaluations (ignored by exact).
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
///
/// With a target precision, an estimator that does not stop early itself
/// (the regression family) is run on budgets `B/8, B/4, B/2, B` through
/// the same memo (so earlier coalitions are free) until the rule is met; the
/// reported evaluations are the total.
pub fn estimate_with_memo(memo: &Memo, cfg: &EstimateConfig) -> Result<ShapleyEstimate> {
    check_target(cfg.target_precision)?;
    let e = cfg.estimator.inner();
    let Some(target) = cfg.target_precision.filter(|_| !e.stops_early() && !e.is_exact()) else {
        return e.estimate(memo, cfg.budget, cfg.seed, cfg.target_precision);
    };
    let start = memo.evaluations();
    let cap = cfg.budget.min(memo.remaining());
    let floor = e.min_budget(memo.n_players());
    let mut total = (cap / 8).max(floor).min(cap);
    loop {
        let used = memo.evaluations() - start;
        if total.saturating_sub(used) < floor && total < cap {
            total = (total * 2).min(cap);
            continue;
        }
        let mut est = e.estimate(memo, total.saturating_sub(used), cfg.seed, None)?;
        est.evaluations = memo.evaluations() - start;
        est.converged = convergence_ratio(&est.values, &est.std_errors) < target;
        if est.converged || total >= cap {
            return Ok(est);
        }
        total = (total * 2).min(cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::exact::exact;
    use crate::shapley::metrics::mse;
    use crate::shapley::owen::{OwenEstimator, OwenQ};
    use crate::shapley::synthetic::{AdditiveGame, SaturatingGame, SumOfUnanimityGames, WeightedMajorityGame};

    /// The estimator of a registry name.
    fn named(name: &str) -> Estimator {
        name.parse().unwrap()
    }

    /// The unbiased (or, for the regression family, consistent) estimators
    /// the convergence tests cover.
    fn unbiased() -> Vec<Estimator> {
        Estimator::parse_list("permutation,permutation-antithetic,owen,owen-midpoint,owen-antithetic").unwrap()
    }

    fn owen(q: OwenQ, antithetic: bool) -> Estimator {
        Estimator::new(OwenEstimator { q, antithetic })
    }

    #[test]
    fn names_parse_and_round_trip() {
        let cases = [
            ("exact", "exact"),
            ("permutation", "permutation"),
            ("permutation-antithetic", "permutation_antithetic"),
            ("owen", "owen_stratified"),
            ("owen-midpoint", "owen_midpoint"),
            ("owen-grid", "owen_grid"),
            ("owen-antithetic", "owen_stratified_antithetic"),
            ("Owen_Grid_20_antithetic", "owen_grid_20_antithetic"),
            (" owen_midpoint_antithetic ", "owen_midpoint_antithetic"),
            ("kernel-paired", "kernel_paired"),
            ("leverage_paired", "leverage_paired"),
            ("kadd", "kadd"),
            ("kadd-3-paired", "kadd_3_paired"),
            ("stratified-cv", "stratified_cv"),
            ("stratified-cv-1", "stratified_cv_1"),
        ];
        for (s, name) in cases {
            assert_eq!(named(s).name(), name, "{s}");
        }
        assert!(named("exact").is_exact() && !named("kernel").is_exact());
        let mut all = Estimator::sampling_estimators();
        all.push(named("exact"));
        all.push(owen(OwenQ::Grid { points: 7 }, false));
        for e in all {
            assert_eq!(e.name().parse::<Estimator>().unwrap(), e);
            assert_eq!(e.to_string(), e.name());
        }
        assert_eq!(owen(OwenQ::Stratified, true).name(), "owen_stratified_antithetic");
        for bad in ["", "exact-antithetic", "owen-grid-1", "owen-grid-x", "kernelshap", "kadd-0", "stratified-cv-x"] {
            let err = bad.parse::<Estimator>().unwrap_err().to_string();
            assert!(err.contains("use one of"), "{bad}: {err}");
        }
    }

    #[test]
    fn exact_estimator_ignores_budget_and_reports_zero_error() {
        let g = SumOfUnanimityGames::random(8, 12, 3, 2).unwrap();
        let est = estimate(&g, &EstimateConfig::new(named("exact"), 1, 0)).unwrap();
        assert_eq!(est.evaluations, 256);
        assert_eq!(est.values, exact(&g).unwrap().shapley);
        assert_eq!(est.std_errors, vec![0.0; 8]);
        assert!(est.converged && est.samples == 0 && est.estimator == "exact");
        // Through a caller's memo every coalition is then available.
        let cfg = EstimateConfig::new(named("exact"), 0, 0);
        let memo = Memo::new(&g, cfg.memo_budget());
        estimate_with_memo(&memo, &cfg).unwrap();
        assert_eq!(memo.cached().len(), 256);
        let small = Memo::new(&g, 100);
        assert!(estimate_with_memo(&small, &cfg).is_err());
        let big = AdditiveGame::new(vec![0.0; 21]).unwrap();
        assert!(estimate(&big, &cfg).is_err());
    }

    /// Runs `e` on `game` and returns the estimate.
    fn run(game: &dyn Game, e: &Estimator, budget: usize, seed: u64) -> ShapleyEstimate {
        estimate(game, &EstimateConfig::new(e.clone(), budget, seed)).unwrap()
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
                    let est = run(game, &e, budget, seed);
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
                (0..4u64).map(|seed| mse(&run(&game, &e, budget, seed).values, &truth).unwrap()).sum::<f64>() / 4.0
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
        let grid = run(&game, &owen(OwenQ::grid(), false), budget, 1);
        let strat = run(&game, &owen(OwenQ::Stratified, false), budget, 1);
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
                let result = estimate(&game, &EstimateConfig::new(e.clone(), budget, 7));
                if budget < e.min_budget(12) {
                    let err = result.expect_err("budget below the minimum must fail").to_string();
                    assert!(err.contains("too small") && err.contains("raise the budget"), "{err}");
                } else {
                    let est = result.unwrap();
                    assert!(est.evaluations <= budget, "{e} used {} of {budget}", est.evaluations);
                    assert!(est.samples >= 1 || !e.inner().stops_early(), "{e} at {budget}");
                }
            }
        }
        // A budget larger than the game has coalitions still terminates.
        let est = run(&game, &named("permutation"), 100_000, 3);
        assert!(est.evaluations <= 4096 && est.samples <= 100_000);
    }

    #[test]
    fn same_seed_same_bits_different_seed_different_output() {
        let game = SaturatingGame::random(12, 4).unwrap();
        for e in Estimator::sampling_estimators() {
            let a = run(&game, &e, 1500, 42);
            let b = run(&game, &e, 1500, 42);
            let c = run(&game, &e, 1500, 43);
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
            let cfg = EstimateConfig::new(e.clone(), 5000, 1).with_target_precision(0.01);
            let est = estimate(&game, &cfg).unwrap();
            assert!(est.converged, "{e}");
            if e.inner().stops_early() {
                assert!(est.evaluations < 5000 && est.samples <= 10, "{e}: {est:?}");
            } else {
                // Doubling budgets stop before the cap: the regression family at
                // the first one (exact fit), plain stratified once all 2^10
                // coalitions are in.
                assert!(est.evaluations <= 1024, "{e}: {est:?}");
            }
        }
        // A hard game at a tiny target uses the whole budget instead.
        let hard = SumOfUnanimityGames::random(12, 30, 6, 3).unwrap();
        let cfg = EstimateConfig::new(named("permutation"), 600, 1).with_target_precision(1e-6);
        let est = estimate(&hard, &cfg).unwrap();
        assert!(!est.converged);
        // A moderate target on a noisy game stops early with a small ratio.
        let cfg = EstimateConfig::new(named("owen"), 13 * 5000, 2).with_target_precision(0.05);
        let est = estimate(&hard, &cfg).unwrap();
        assert!(est.converged && est.samples < 5000, "{} samples", est.samples);
        let ratio = crate::shapley::sampling::convergence_ratio(&est.values, &est.std_errors);
        assert!(ratio < 0.05);
        let bad = EstimateConfig::new(named("permutation"), 600, 1).with_target_precision(-1.0);
        assert!(estimate(&hard, &bad).is_err());
    }

    #[test]
    fn adaptive_control_variate_picks_the_fixed_order_of_least_estimated_variance() {
        // A weighted majority game (a step function: low orders fit it poorly) and a
        // saturating one (nearly additive).
        let w = vec![3.0, 9.0, 1.5, 7.0, 4.0, 2.0, 8.0, 5.5, 6.0, 1.0, 2.5, 4.5];
        let majority = WeightedMajorityGame::new(w, 27.5).unwrap();
        let sat = SaturatingGame::random(12, 7).unwrap();
        let games: [&dyn Game; 2] = [&majority, &sat];
        let fixed = Estimator::parse_list("stratified,stratified-cv-1,stratified-cv-2,stratified-cv-3").unwrap();
        let auto = named("stratified-cv-auto");
        for game in games {
            for (budget, seed) in [(256usize, 1u64), (700, 2), (1500, 3)] {
                let a = run(game, &auto, budget, seed);
                let candidates: Vec<ShapleyEstimate> = fixed
                    .iter()
                    .map(|e| run(game, e, budget, seed))
                    .filter(|e| e.std_errors.iter().all(|s| s.is_finite()))
                    .collect();
                let var = |e: &ShapleyEstimate| e.std_errors.iter().map(|s| s * s).sum::<f64>();
                let least = candidates.iter().map(var).fold(f64::INFINITY, f64::min);
                assert!(
                    candidates.iter().any(|c| c.values == a.values),
                    "{budget}: auto is not one of the fixed orders"
                );
                assert!((var(&a) - least).abs() <= 1e-12 * least.max(1e-300), "{budget}: {} vs least {least}", var(&a));
            }
        }
    }

    #[test]
    fn regression_and_stratified_estimators_cover_exact_values_within_their_se() {
        let soum = SumOfUnanimityGames::random(12, 30, 5, 21).unwrap();
        let sat = SaturatingGame::random(12, 22).unwrap();
        let games: [&dyn Game; 2] = [&soum, &sat];
        let family = "kernel,kernel-paired,leverage,leverage-paired,kadd,kadd-paired,stratified,stratified-cv,stratified-cv-auto";
        for e in Estimator::parse_list(family).unwrap() {
            let (mut within2, mut within4, mut total) = (0usize, 0usize, 0usize);
            let mut mse_small = 0.0;
            let mut mse_large = 0.0;
            for game in games {
                let truth = exact(game).unwrap().shapley;
                for seed in 0..6u64 {
                    for (budget, acc) in [(400usize, &mut mse_small), (1600, &mut mse_large)] {
                        let est = run(game, &e, budget, seed);
                        assert!(est.evaluations <= budget, "{e}");
                        *acc += mse(&est.values, &truth).unwrap();
                        for ((v, t), se) in est.values.iter().zip(&truth).zip(&est.std_errors) {
                            total += 1;
                            within2 += ((v - t).abs() <= 2.0 * se + 1e-12) as usize;
                            within4 += ((v - t).abs() <= 4.0 * se + 1e-12) as usize;
                        }
                    }
                }
            }
            let (c2, c4) = (within2 as f64 / total as f64, within4 as f64 / total as f64);
            assert!(c2 >= 0.85 && c4 >= 0.98, "{e}: coverage {c2:.3} at 2 SE, {c4:.3} at 4 SE");
            assert!(mse_large < 0.5 * mse_small, "{e}: MSE {mse_large} at 1600 vs {mse_small} at 400");
        }
    }
}
