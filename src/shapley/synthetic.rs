//! Synthetic games with known Shapley values, used to test the exact
//! computation and the sampling estimators.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::shapley::coalition::{self, Coalition, MAX_PLAYERS};
use crate::shapley::game::{check_coalitions, check_players, Game};

/// Evaluates `value` on a validated batch.
fn evaluate_with(n: usize, coalitions: &[Coalition], value: impl Fn(Coalition) -> f64) -> Result<Vec<f64>> {
    check_coalitions(n, coalitions)?;
    Ok(coalitions.iter().map(|&c| value(c)).collect())
}

/// Sum of `weights[i]` over the members of `c`, in increasing player order.
fn weight_sum(weights: &[f64], c: Coalition) -> f64 {
    coalition::members(c).map(|i| weights[i]).sum()
}

/// Errors unless `carrier` only holds players `0..n` and `n <= 64`.
fn check_carrier(n: usize, carrier: Coalition) -> Result<()> {
    check_players(n)?;
    if !coalition::within(carrier, n) {
        bail!("carrier {carrier:#x} has members outside players 0..{n}: only set bits below {n}");
    }
    Ok(())
}

/// Additive game `v(S) = Σ_{i∈S} w_i`; Shapley value `φ_i = w_i`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdditiveGame {
    /// Per-player weights `w_i`.
    pub weights: Vec<f64>,
}

impl AdditiveGame {
    /// An additive game with the given weights (at most 64 players).
    pub fn new(weights: Vec<f64>) -> Result<Self> {
        check_players(weights.len())?;
        Ok(AdditiveGame { weights })
    }

    /// `v(S)`.
    pub fn value(&self, c: Coalition) -> f64 {
        weight_sum(&self.weights, c)
    }

    /// `φ_i = w_i`.
    pub fn shapley_closed_form(&self) -> Vec<f64> {
        self.weights.clone()
    }
}

impl Game for AdditiveGame {
    fn n_players(&self) -> usize {
        self.weights.len()
    }
    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        evaluate_with(self.weights.len(), coalitions, |c| self.value(c))
    }
    fn name(&self) -> String {
        "additive".to_string()
    }
}

/// Unanimity game `v(S) = 1` when `T ⊆ S`, else 0, for a carrier `T`;
/// Shapley value `φ_i = 1/|T|` for `i ∈ T`, 0 otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct UnanimityGame {
    /// Number of players.
    pub n: usize,
    /// The carrier `T`.
    pub carrier: Coalition,
}

impl UnanimityGame {
    /// The unanimity game of carrier `carrier` on `n` players.
    pub fn new(n: usize, carrier: Coalition) -> Result<Self> {
        check_carrier(n, carrier)?;
        Ok(UnanimityGame { n, carrier })
    }

    /// `v(S)`.
    pub fn value(&self, c: Coalition) -> f64 {
        if coalition::is_subset(self.carrier, c) {
            1.0
        } else {
            0.0
        }
    }

    /// `φ_i = 1/|T|` for `i ∈ T`, else 0 (all zero for an empty carrier, where `v ≡ 1`).
    pub fn shapley_closed_form(&self) -> Vec<f64> {
        let t = coalition::size(self.carrier) as f64;
        (0..self.n).map(|i| if coalition::contains(self.carrier, i) { 1.0 / t } else { 0.0 }).collect()
    }
}

impl Game for UnanimityGame {
    fn n_players(&self) -> usize {
        self.n
    }
    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        evaluate_with(self.n, coalitions, |c| self.value(c))
    }
    fn name(&self) -> String {
        "unanimity".to_string()
    }
}

/// Sum of unanimity games (SOUM) `v(S) = Σ_T c_T [T ⊆ S]`; every game is one
/// (Harsanyi dividends). Shapley value `φ_i = Σ_{T∋i} c_T / |T|`.
#[derive(Debug, Clone, PartialEq)]
pub struct SumOfUnanimityGames {
    /// Number of players.
    pub n: usize,
    /// Terms `(T, c_T)`: carrier and coefficient.
    pub terms: Vec<(Coalition, f64)>,
}

impl SumOfUnanimityGames {
    /// A SOUM with the given terms; carriers must lie within `0..n`.
    pub fn new(n: usize, terms: Vec<(Coalition, f64)>) -> Result<Self> {
        for &(t, _) in &terms {
            check_carrier(n, t)?;
        }
        check_players(n)?;
        Ok(SumOfUnanimityGames { n, terms })
    }

    /// A random SOUM: `n_terms` carriers, each of a size drawn uniformly from
    /// `1..=max_order` with members drawn uniformly without replacement, and
    /// coefficients uniform in `[0, 1)`. Same seed, same game.
    pub fn random(n: usize, n_terms: usize, max_order: usize, seed: u64) -> Result<Self> {
        if n == 0 || n > MAX_PLAYERS {
            bail!("a random SOUM needs 1..={MAX_PLAYERS} players, got {n}");
        }
        if max_order == 0 || max_order > n {
            bail!("max_order {max_order} must lie in 1..={n} (the carrier sizes of a SOUM on {n} players)");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut players: Vec<usize> = (0..n).collect();
        let terms = (0..n_terms)
            .map(|_| {
                let order = rng.random_range(1..=max_order);
                players.shuffle(&mut rng);
                let carrier = players[..order].iter().fold(coalition::EMPTY, |c, &i| coalition::insert(c, i));
                (carrier, rng.random::<f64>())
            })
            .collect();
        Ok(SumOfUnanimityGames { n, terms })
    }

    /// `v(S)`.
    pub fn value(&self, c: Coalition) -> f64 {
        self.terms.iter().filter(|(t, _)| coalition::is_subset(*t, c)).map(|(_, w)| w).sum()
    }

    /// `φ_i = Σ_{T∋i} c_T / |T|` (terms with an empty carrier contribute nothing).
    pub fn shapley_closed_form(&self) -> Vec<f64> {
        let mut phi = vec![0.0; self.n];
        for &(t, w) in &self.terms {
            let share = w / coalition::size(t).max(1) as f64;
            for i in coalition::members(t) {
                phi[i] += share;
            }
        }
        phi
    }
}

impl Game for SumOfUnanimityGames {
    fn n_players(&self) -> usize {
        self.n
    }
    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        evaluate_with(self.n, coalitions, |c| self.value(c))
    }
    fn name(&self) -> String {
        "soum".to_string()
    }
}

/// Weighted majority (voting) game: `v(S) = 1` when `Σ_{i∈S} w_i ≥ quota`, else 0.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightedMajorityGame {
    /// Voting weights.
    pub weights: Vec<f64>,
    /// The quota a coalition's weight must reach to win.
    pub quota: f64,
}

impl WeightedMajorityGame {
    /// A weighted majority game (at most 64 players).
    pub fn new(weights: Vec<f64>, quota: f64) -> Result<Self> {
        check_players(weights.len())?;
        Ok(WeightedMajorityGame { weights, quota })
    }

    /// The symmetric threshold game `v(S) = 1` when `|S| ≥ quota`: all weights 1.
    /// For `n = 12, quota = 6` a player's marginal is 1 exactly when 5 others are present.
    pub fn symmetric(n: usize, quota: usize) -> Result<Self> {
        Self::new(vec![1.0; n], quota as f64)
    }

    /// `v(S)`.
    pub fn value(&self, c: Coalition) -> f64 {
        if weight_sum(&self.weights, c) >= self.quota {
            1.0
        } else {
            0.0
        }
    }

    /// Closed form when all weights are equal (`φ_i = (v(N) − v(∅))/n`, so
    /// `1/n` whenever `0 < quota ≤ n·w`); `None` for unequal weights, whose
    /// values come from exact enumeration.
    pub fn shapley_closed_form(&self) -> Option<Vec<f64>> {
        let n = self.weights.len();
        let first = *self.weights.first()?;
        if self.weights.iter().any(|&w| w != first) {
            return None;
        }
        let share = (self.value(coalition::grand(n)) - self.value(coalition::EMPTY)) / n as f64;
        Some(vec![share; n])
    }
}

impl Game for WeightedMajorityGame {
    fn n_players(&self) -> usize {
        self.weights.len()
    }
    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        evaluate_with(self.weights.len(), coalitions, |c| self.value(c))
    }
    fn name(&self) -> String {
        "weighted_majority".to_string()
    }
}

/// A saturating, accuracy-like game `v(S) = base + (1 − base)(1 − exp(−Σ_{i∈S} w_i))`:
/// starts at `base` (chance or base-model accuracy) and has diminishing
/// returns. No closed form; ground truth comes from exact enumeration.
#[derive(Debug, Clone, PartialEq)]
pub struct SaturatingGame {
    /// Per-player strengths `w_i` (non-negative for a monotone game).
    pub weights: Vec<f64>,
    /// `v(∅)`.
    pub base: f64,
}

impl SaturatingGame {
    /// A saturating game with the given strengths and empty-coalition value.
    pub fn new(weights: Vec<f64>, base: f64) -> Result<Self> {
        check_players(weights.len())?;
        if !base.is_finite() || weights.iter().any(|w| !w.is_finite()) {
            bail!("saturating game weights and base must be finite numbers");
        }
        Ok(SaturatingGame { weights, base })
    }

    /// Random strengths uniform in `[0.05, 0.5)` and base 0.1. Same seed, same game.
    pub fn random(n: usize, seed: u64) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let weights = (0..n).map(|_| rng.random_range(0.05..0.5)).collect();
        Self::new(weights, 0.1)
    }

    /// `v(S)`.
    pub fn value(&self, c: Coalition) -> f64 {
        self.base + (1.0 - self.base) * (1.0 - (-weight_sum(&self.weights, c)).exp())
    }
}

impl Game for SaturatingGame {
    fn n_players(&self) -> usize {
        self.weights.len()
    }
    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        evaluate_with(self.weights.len(), coalitions, |c| self.value(c))
    }
    fn name(&self) -> String {
        "saturating".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::exact::exact;

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "player {i}: {x} vs {y}");
        }
    }

    #[test]
    fn closed_forms_match_exact_enumeration() {
        let add = AdditiveGame::new(vec![0.3, -1.2, 0.0, 2.5, 0.7]).unwrap();
        assert_close(&exact(&add).unwrap().shapley, &add.shapley_closed_form(), 1e-12);

        let una = UnanimityGame::new(7, 0b1010110).unwrap();
        let phi = una.shapley_closed_form();
        assert_close(&phi, &[0.0, 0.25, 0.25, 0.0, 0.25, 0.0, 0.25], 0.0);
        assert_close(&exact(&una).unwrap().shapley, &phi, 1e-12);

        let empty = UnanimityGame::new(3, 0).unwrap();
        assert_close(&exact(&empty).unwrap().shapley, &empty.shapley_closed_form(), 0.0);

        let soum = SumOfUnanimityGames::random(10, 25, 4, 7).unwrap();
        assert_close(&exact(&soum).unwrap().shapley, &soum.shapley_closed_form(), 1e-12);

        let maj = WeightedMajorityGame::symmetric(12, 6).unwrap();
        let phi = maj.shapley_closed_form().unwrap();
        assert_close(&phi, &[1.0 / 12.0; 12], 1e-15);
        assert_close(&exact(&maj).unwrap().shapley, &phi, 1e-12);
        // Unreachable quota: nobody ever wins, all values zero.
        let never = WeightedMajorityGame::symmetric(4, 5).unwrap();
        assert_close(&never.shapley_closed_form().unwrap(), &[0.0; 4], 0.0);
    }

    #[test]
    fn weighted_majority_hand_computed() {
        // Weights (2, 1, 1), quota 3: winning coalitions {0,1}, {0,2}, {0,1,2}.
        // Player 0 is pivotal in 4 of the 6 orders, players 1 and 2 in one each.
        let g = WeightedMajorityGame::new(vec![2.0, 1.0, 1.0], 3.0).unwrap();
        assert_eq!(g.shapley_closed_form(), None);
        assert_close(&exact(&g).unwrap().shapley, &[2.0 / 3.0, 1.0 / 6.0, 1.0 / 6.0], 1e-15);
    }

    #[test]
    fn random_constructors_are_seeded_and_validated() {
        let a = SumOfUnanimityGames::random(12, 30, 5, 1).unwrap();
        assert_eq!(a, SumOfUnanimityGames::random(12, 30, 5, 1).unwrap());
        assert_ne!(a, SumOfUnanimityGames::random(12, 30, 5, 2).unwrap());
        assert!(a.terms.iter().all(|&(t, _)| (1..=5).contains(&coalition::size(t)) && coalition::within(t, 12)));
        assert!(SumOfUnanimityGames::random(12, 3, 13, 1).is_err());
        assert!(SumOfUnanimityGames::random(0, 3, 1, 1).is_err());
        assert!(SumOfUnanimityGames::new(3, vec![(0b1000, 1.0)]).is_err());
        assert!(UnanimityGame::new(3, 0b1000).is_err());
        assert!(AdditiveGame::new(vec![0.0; 65]).is_err());

        let s = SaturatingGame::random(12, 3).unwrap();
        assert_eq!(s, SaturatingGame::random(12, 3).unwrap());
        assert_eq!(s.value(0), 0.1);
        let full = s.value(coalition::grand(12));
        assert!(full > 0.8 && full < 1.0, "{full}");
        assert!(SaturatingGame::new(vec![f64::NAN], 0.0).is_err());
    }

    #[test]
    fn games_reject_out_of_range_coalitions() {
        let g = AdditiveGame::new(vec![1.0, 2.0]).unwrap();
        assert_eq!(g.evaluate(&[0, 1, 2, 3]).unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
        assert!(g.evaluate(&[4]).is_err());
    }
}
