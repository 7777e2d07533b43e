//! Multilinear-extension (Owen) sampling of Shapley values, and sampling of
//! the multilinear extension itself.
//!
//! Owen (1972): `φ_i = ∫₀¹ E_{S∼Bern(q) on N∖i}[v(S∪i) − v(S)] dq`. One
//! *draw* picks `q`, then `S ∼ Bernoulli(q)` on all of `N`, and evaluates
//! `v(S)` and `v(S △ {i})` for every player (`n + 1` coalitions). That gives
//! one marginal per player: `v(S∪i) − v(S)` for `i ∉ S` and `v(S) − v(S∖i)`
//! for `i ∈ S`; in both cases the other players are Bernoulli(q), so it is
//! an unbiased sample of the integrand at `q`.

use std::fmt;

use anyhow::{bail, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::shapley::coalition::{self, Coalition};
use crate::shapley::estimator::{Estimator, ShapleyEstimator};
use crate::shapley::game::{check_players, Game, Memo};
use crate::shapley::registry::{strip_flag, Entry};
use crate::shapley::result::ShapleyEstimate;
use crate::shapley::sampling::{check_sampling_players, check_target, Ledger, RunningStats};

/// Draws (or antithetic pairs) sent to the memo per batch for the
/// stratified and midpoint schemes; the grid scheme batches one round.
pub const OWEN_BATCH: usize = 8;

/// How the `q` of each draw is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OwenQ {
    /// `M` draws, draw `j` at `q_j = (j + U_j)/M` with fresh uniform jitter
    /// `U_j`: unbiased, and stratified over `[0, 1]`. The default.
    #[default]
    Stratified,
    /// `q_j = (j + 0.5)/M`: the midpoint rule, whose bias is `O(1/M²)`.
    Midpoint,
    /// shapiq-compatible: equal weights on `linspace(0, 1, points)`
    /// (endpoints included), draws assigned round-robin. **Biased**: equal
    /// weights on a grid that contains both endpoints is not a quadrature
    /// rule for `∫₀¹` (the trapezoid rule would halve the endpoint weights),
    /// so the error is `O(1/points)` and does not shrink with more draws.
    /// For a 12-player game whose integrand is `P(Bin(11, q) = 5)` the
    /// default 10 points underestimate by about 10%.
    Grid {
        /// Number of grid points, at least 2.
        points: usize,
    },
}

impl OwenQ {
    /// shapiq's default number of grid points.
    pub const DEFAULT_GRID_POINTS: usize = 10;

    /// The grid scheme with [`OwenQ::DEFAULT_GRID_POINTS`] points.
    pub fn grid() -> Self {
        OwenQ::Grid { points: Self::DEFAULT_GRID_POINTS }
    }

    /// Stable name: `stratified`, `midpoint`, `grid` (default points) or `grid_<points>`.
    pub fn name(&self) -> String {
        match self {
            OwenQ::Stratified => "stratified".to_string(),
            OwenQ::Midpoint => "midpoint".to_string(),
            OwenQ::Grid { points } if *points == Self::DEFAULT_GRID_POINTS => "grid".to_string(),
            OwenQ::Grid { points } => format!("grid_{points}"),
        }
    }
}

impl fmt::Display for OwenQ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Owen sampling as a registered estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OwenEstimator {
    /// How each draw's `q` is chosen.
    pub q: OwenQ,
    /// Pair each draw with its complement at `1 − q`.
    pub antithetic: bool,
}

/// Parses a normalised Owen name: `owen` (= `owen-stratified`), `owen-midpoint`,
/// `owen-grid`, `owen-grid-<points>`, each optionally with `-antithetic`.
fn parse_owen(name: &str) -> Option<Estimator> {
    let (base, antithetic) = strip_flag(name, "-antithetic");
    let q = match base {
        "owen" | "owen-stratified" => OwenQ::Stratified,
        "owen-midpoint" => OwenQ::Midpoint,
        "owen-grid" => OwenQ::grid(),
        other => match other.strip_prefix("owen-grid-").map(str::parse::<usize>) {
            Some(Ok(points)) if points >= 2 => OwenQ::Grid { points },
            _ => return None,
        },
    };
    Some(Estimator::new(OwenEstimator { q, antithetic }))
}

/// Registry entry of [`OwenEstimator`].
pub const ENTRY: Entry = Entry {
    names: "owen (= owen-stratified), owen-midpoint, owen-grid[-<points>], each with optional -antithetic",
    about: "multilinear-extension sampling (Owen 1972): q stratified, midpoint, or shapiq's biased grid",
    parse: parse_owen,
    defaults: || {
        let mut all = Vec::new();
        for antithetic in [false, true] {
            for q in [OwenQ::Stratified, OwenQ::Midpoint, OwenQ::grid()] {
                all.push(Estimator::new(OwenEstimator { q, antithetic }));
            }
        }
        all
    },
};

impl ShapleyEstimator for OwenEstimator {
    fn name(&self) -> String {
        format!("owen_{}{}", self.q.name(), if self.antithetic { "_antithetic" } else { "" })
    }

    fn min_budget(&self, n: usize) -> usize {
        owen_min_budget(n, self.q, self.antithetic)
    }

    fn stops_early(&self) -> bool {
        true
    }

    fn estimate(&self, memo: &Memo, budget: usize, seed: u64, target: Option<f64>) -> Result<ShapleyEstimate> {
        owen_sampling(memo, budget, self.q, self.antithetic, seed, target)
    }
}

/// Evaluations one sample needs: `n + 1` per draw, `2(n + 1)` per antithetic pair.
fn per_sample_cost(n: usize, antithetic: bool) -> usize {
    (n + 1) * if antithetic { 2 } else { 1 }
}

/// The number of samples (draws, or antithetic pairs) Owen sampling plans
/// for `budget` on `n` players: `⌊budget / (n+1)⌋` draws, or
/// `⌊budget / (2(n+1))⌋` pairs, rounded down to whole grid rounds for
/// [`OwenQ::Grid`].
pub fn owen_samples(n: usize, budget: usize, q: OwenQ, antithetic: bool) -> usize {
    let m = budget / per_sample_cost(n, antithetic);
    match q {
        OwenQ::Grid { points } if points > 0 => m / points * points,
        _ => m,
    }
}

/// The smallest budget for which Owen sampling plans at least one sample
/// (one grid round for [`OwenQ::Grid`]).
pub fn owen_min_budget(n: usize, q: OwenQ, antithetic: bool) -> usize {
    let rounds = match q {
        OwenQ::Grid { points } => points.max(1),
        _ => 1,
    };
    rounds * per_sample_cost(n, antithetic)
}

/// A random bijection of `0..m` (`t ↦ (a·t + b) mod m` with `gcd(a, m) = 1`),
/// so an early stop keeps a random subset of the strata without storing an
/// `m`-long shuffle.
struct StratumOrder {
    m: u64,
    a: u64,
    b: u64,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl StratumOrder {
    fn new(m: u64, rng: &mut ChaCha8Rng) -> Self {
        let b = rng.random_range(0..m);
        let a = loop {
            let a = rng.random_range(1..m.max(2));
            if gcd(a, m) == 1 {
                break a;
            }
        };
        StratumOrder { m, a, b }
    }

    fn at(&self, t: u64) -> u64 {
        ((self.a as u128 * t as u128 + self.b as u128) % self.m as u128) as u64
    }
}

/// Draws `S ∼ Bernoulli(q)` on players `0..n`.
fn bernoulli_set(n: usize, q: f64, rng: &mut ChaCha8Rng) -> Coalition {
    (0..n).fold(coalition::EMPTY, |c, i| if rng.random::<f64>() < q { coalition::insert(c, i) } else { c })
}

/// Adds `S` and `S △ {i}` for every `i` (`n + 1` coalitions) to `batch`.
fn push_draw(s: Coalition, n: usize, batch: &mut Vec<Coalition>) {
    batch.push(s);
    batch.extend((0..n).map(|i| coalition::toggle(s, i)));
}

/// Adds `scale` × the per-player marginals of a draw to `sample`; `values`
/// are the draw's `n + 1` values in [`push_draw`] order.
fn add_draw_marginals(s: Coalition, values: &[f64], scale: f64, sample: &mut [f64]) {
    let base = values[0];
    for (i, (x, &v)) in sample.iter_mut().zip(&values[1..]).enumerate() {
        let marginal = if coalition::contains(s, i) { base - v } else { v - base };
        *x += scale * marginal;
    }
}

/// Owen (multilinear-extension) sampling estimate through `memo`, spending
/// at most `budget` new distinct evaluations.
///
/// * Plans `M = ⌊budget/(n+1)⌋` draws (`⌊budget/(2(n+1))⌋` antithetic
///   pairs; whole rounds of `points` for the grid, see [`owen_samples`]) up
///   front, since the stratified and midpoint `q`s depend on `M`. Memoised
///   coalitions are free, so a run can use fewer evaluations than the
///   budget; `evaluations` reports what was actually used.
/// * `antithetic`: the draw `S` at `q` is paired with its complement `N∖S`,
///   which is Bernoulli(1 − q); the pair's average is one sample.
/// * Standard errors are the per-player sample standard deviation of the
///   samples over `√M`. For stratified and midpoint `q`s this ignores the
///   variance removed by stratification, so it is conservative.
/// * Strata are visited in a random order, so an early stop (see
///   `target_precision`, same rule as permutation sampling) keeps an
///   unbiased random subset; grid rounds are always completed.
///
/// Errors when the budget cannot pay for one sample (one round for the
/// grid); see [`owen_min_budget`].
pub fn owen_sampling(
    memo: &Memo,
    budget: usize,
    q: OwenQ,
    antithetic: bool,
    seed: u64,
    target_precision: Option<f64>,
) -> Result<ShapleyEstimate> {
    let n = memo.n_players();
    check_sampling_players(n)?;
    check_target(target_precision)?;
    if let OwenQ::Grid { points } = q {
        if points < 2 {
            bail!("an Owen grid needs at least 2 points (0 and 1) but got {points}: use points >= 2, e.g. 10");
        }
    }
    let ledger = Ledger::new(memo, budget);
    let m = owen_samples(n, ledger.budget(), q, antithetic);
    if m == 0 {
        bail!(
            "budget {} is too small for owen_{}{} sampling on {n} players: it needs {} distinct evaluations for one {}; raise the budget to at least that",
            ledger.budget(),
            q.name(),
            if antithetic { "_antithetic" } else { "" },
            owen_min_budget(n, q, antithetic),
            if matches!(q, OwenQ::Grid { .. }) { "round over the grid" } else if antithetic { "antithetic pair" } else { "draw" }
        );
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let order = StratumOrder::new(m as u64, &mut rng);
    let batch_size = match q {
        OwenQ::Grid { points } => points,
        _ => OWEN_BATCH,
    };
    let draws_per_sample = if antithetic { 2 } else { 1 };
    let scale = 1.0 / draws_per_sample as f64;
    let full = coalition::grand(n);

    let mut stats = RunningStats::new(n);
    let mut converged = false;
    let mut sets: Vec<Coalition> = Vec::new();
    let mut batch: Vec<Coalition> = Vec::new();
    let mut sample = vec![0.0; n];
    let mut t = 0usize;
    while t < m {
        let k = batch_size.min(m - t);
        sets.clear();
        batch.clear();
        for draw in t..t + k {
            let qv = match q {
                OwenQ::Stratified => (order.at(draw as u64) as f64 + rng.random::<f64>()) / m as f64,
                OwenQ::Midpoint => (order.at(draw as u64) as f64 + 0.5) / m as f64,
                OwenQ::Grid { points } => (draw % points) as f64 / (points - 1) as f64,
            };
            let s = bernoulli_set(n, qv, &mut rng);
            sets.push(s);
            push_draw(s, n, &mut batch);
            if antithetic {
                let c = s ^ full;
                sets.push(c);
                push_draw(c, n, &mut batch);
            }
        }
        // Cannot be refused (M was sized to the budget), but never overspend.
        let Some(values) = ledger.try_values(&batch)? else {
            break;
        };
        for j in 0..k {
            sample.fill(0.0);
            for d in 0..draws_per_sample {
                let idx = j * draws_per_sample + d;
                let vals = &values[idx * (n + 1)..(idx + 1) * (n + 1)];
                add_draw_marginals(sets[idx], vals, scale, &mut sample);
            }
            stats.push(&sample);
        }
        t += k;
        if stats.reached(target_precision) {
            converged = true;
            break;
        }
    }

    Ok(ShapleyEstimate {
        estimator: format!("owen_{}{}", q.name(), if antithetic { "_antithetic" } else { "" }),
        values: stats.means(),
        std_errors: stats.std_errors(),
        evaluations: ledger.used(),
        samples: stats.count(),
        converged,
    })
}

/// A sampled value of the multilinear extension at one `q`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MlePoint {
    /// The probability `q` each player joins with.
    pub q: f64,
    /// Mean of `v(S)` over the draws `S ∼ Bernoulli(q)`: estimates `F(q)`.
    pub mean: f64,
    /// Standard error of `mean` (NaN with a single draw).
    pub std_error: f64,
}

/// Estimates the multilinear extension `F(q) = E_{S∼Bern(q)}[v(S)]` at each
/// `q` from `draws_per_q` independent draws; the exact counterpart is
/// [`multilinear_extension`](crate::shapley::exact::multilinear_extension).
/// Repeated coalitions are memoised, so each distinct one is evaluated once.
pub fn mle_sampled(game: &dyn Game, qs: &[f64], draws_per_q: usize, seed: u64) -> Result<Vec<MlePoint>> {
    let n = game.n_players();
    check_players(n)?;
    if draws_per_q == 0 {
        bail!("draws_per_q must be at least 1 (2 or more for a standard error)");
    }
    if let Some(q) = qs.iter().find(|q| !(0.0..=1.0).contains(*q)) {
        bail!("q = {q} is not a probability: use 0 <= q <= 1");
    }
    let memo = Memo::unlimited(game);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    qs.iter()
        .map(|&q| {
            let sets: Vec<Coalition> = (0..draws_per_q).map(|_| bernoulli_set(n, q, &mut rng)).collect();
            let values = memo.values(&sets)?;
            let mut stats = RunningStats::new(1);
            for v in values {
                stats.push(&[v]);
            }
            Ok(MlePoint { q, mean: stats.means()[0], std_error: stats.std_errors()[0] })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::exact::{enumerate, exact, multilinear_extension};
    use crate::shapley::synthetic::{AdditiveGame, SaturatingGame, WeightedMajorityGame};

    #[test]
    fn stratum_order_is_a_bijection() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for m in [1u64, 2, 7, 12, 100] {
            let o = StratumOrder::new(m, &mut rng);
            let mut seen: Vec<u64> = (0..m).map(|t| o.at(t)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..m).collect::<Vec<_>>());
        }
    }

    #[test]
    fn draw_marginals_are_unbiased_for_additive_game() {
        // Every draw of an additive game yields exactly the weights.
        let w = vec![0.5, -1.0, 2.0, 0.25];
        let g = AdditiveGame::new(w.clone()).unwrap();
        for q in [OwenQ::Stratified, OwenQ::Midpoint, OwenQ::grid()] {
            for anti in [false, true] {
                let memo = Memo::unlimited(&g);
                let est = owen_sampling(&memo, 400, q, anti, 1, None).unwrap();
                assert_eq!(est.values, w, "{}", est.estimator);
                assert!(est.std_errors.iter().all(|&s| s == 0.0));
            }
        }
    }

    #[test]
    fn sample_counts_follow_the_budget() {
        assert_eq!(owen_samples(12, 130, OwenQ::Stratified, false), 10);
        assert_eq!(owen_samples(12, 130, OwenQ::Midpoint, true), 5);
        assert_eq!(owen_samples(12, 259, OwenQ::grid(), false), 10);
        assert_eq!(owen_samples(12, 129, OwenQ::grid(), false), 0);
        assert_eq!(owen_min_budget(12, OwenQ::Stratified, true), 26);
        assert_eq!(owen_min_budget(12, OwenQ::grid(), false), 130);
        let g = SaturatingGame::random(12, 1).unwrap();
        let memo = Memo::unlimited(&g);
        let est = owen_sampling(&memo, 13 * 37, OwenQ::Stratified, false, 4, None).unwrap();
        assert_eq!(est.samples, 37);
        assert!(est.evaluations <= 13 * 37);
        assert_eq!(est.estimator, "owen_stratified");
        let est = owen_sampling(&memo, 10_000, OwenQ::Grid { points: 5 }, true, 4, None).unwrap();
        assert_eq!(est.estimator, "owen_grid_5_antithetic");
        assert!(owen_sampling(&memo, 10_000, OwenQ::Grid { points: 1 }, false, 4, None).is_err());
    }

    #[test]
    fn grid_bias_matches_the_reference_number() {
        // n = 12, marginal 1 exactly when 5 others are present: integrand
        // P(Bin(11, q) = 5), whose integral is 1/12. The 10-point grid
        // average is about 10% low; midpoints are essentially unbiased.
        let binom = |q: f64| 462.0 * q.powi(5) * (1.0 - q).powi(6);
        let grid: f64 = (0..10).map(|k| binom(k as f64 / 9.0)).sum::<f64>() / 10.0;
        let rel = grid * 12.0 - 1.0;
        assert!((-0.11..-0.09).contains(&rel), "{rel}");
        let mid: f64 = (0..100).map(|j| binom((j as f64 + 0.5) / 100.0)).sum::<f64>() / 100.0;
        assert!((mid * 12.0 - 1.0).abs() < 1e-3);
        // The game really has that integrand.
        let maj = WeightedMajorityGame::symmetric(12, 6).unwrap();
        assert!((exact(&maj).unwrap().shapley[0] - 1.0 / 12.0).abs() < 1e-14);
    }

    #[test]
    fn mle_sampled_agrees_with_exact() {
        let g = SaturatingGame::random(10, 8).unwrap();
        let table = enumerate(&g).unwrap();
        let qs = [0.0, 0.2, 0.5, 0.9, 1.0];
        let pts = mle_sampled(&g, &qs, 400, 17).unwrap();
        assert_eq!(pts.len(), 5);
        for p in &pts {
            let f = multilinear_extension(&table, 10, p.q).unwrap();
            if p.q == 0.0 || p.q == 1.0 {
                assert_eq!((p.mean, p.std_error), (f, 0.0));
            } else {
                assert!((p.mean - f).abs() <= 4.0 * p.std_error, "{p:?} vs {f}");
                assert!(p.std_error > 0.0);
            }
        }
        assert_eq!(pts, mle_sampled(&g, &qs, 400, 17).unwrap());
        assert!(mle_sampled(&g, &[1.2], 10, 0).is_err());
        assert!(mle_sampled(&g, &[0.5], 0, 0).is_err());
    }
}
