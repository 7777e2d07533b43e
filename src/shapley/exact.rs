//! Exact Shapley values and the exact multilinear extension from the full
//! table of `2^n` coalition values.

use anyhow::{bail, Result};
use rayon::prelude::*;

use crate::shapley::coalition::{self, Coalition};
use crate::shapley::estimator::{Estimator, ShapleyEstimator};
use crate::shapley::game::{Game, Memo};
use crate::shapley::registry::Entry;
use crate::shapley::result::ShapleyEstimate;

/// The largest game enumerated exactly (`2^20` ≈ one million coalitions).
pub const MAX_EXACT_PLAYERS: usize = 20;

/// Errors unless `n <= MAX_EXACT_PLAYERS`.
fn check_exact_size(n: usize) -> Result<()> {
    if n > MAX_EXACT_PLAYERS {
        bail!(
            "exact Shapley values need all 2^n coalition values and n = {n} exceeds {MAX_EXACT_PLAYERS}: use a sampling estimator (permutation or owen)"
        );
    }
    Ok(())
}

/// Errors unless `values` is a table of `2^n` values with `n <= 20`.
fn check_table(values: &[f64], n: usize) -> Result<()> {
    check_exact_size(n)?;
    if values.len() != 1usize << n {
        bail!(
            "a value table for {n} players needs 2^{n} = {} entries but has {}: index it by coalition bitmask",
            1usize << n,
            values.len()
        );
    }
    Ok(())
}

/// Evaluates every coalition `0..2^n` of `game` in one batch; `values[S] = v(S)`.
pub fn enumerate(game: &dyn Game) -> Result<Vec<f64>> {
    let n = game.n_players();
    check_exact_size(n)?;
    let all: Vec<Coalition> = (0..1u64 << n).collect();
    let values = game.evaluate(&all)?;
    if values.len() != all.len() {
        bail!(
            "game '{}' returned {} values for {} coalitions: evaluate must return one value per coalition",
            game.name(),
            values.len(),
            all.len()
        );
    }
    if let Some(c) = values.iter().position(|v| !v.is_finite()) {
        bail!("game '{}' returned a non-finite value for coalition {c:#x}: values must be finite numbers", game.name());
    }
    Ok(values)
}

/// The Shapley weight `s!(n−s−1)!/n! = 1/(n·C(n−1, s))` of a coalition of
/// size `s` not containing the player (`s < n`).
pub fn shapley_weight(n: usize, s: usize) -> f64 {
    // C(n−1, s) built as a running product; exact enough for n ≤ 64.
    let binom = (1..=s).fold(1.0f64, |acc, j| acc * (n - 1 - s + j) as f64 / j as f64);
    1.0 / (n as f64 * binom)
}

/// Exact Shapley values from the table `values[S] = v(S)` of `2^n` values:
/// `φ_i = Σ_{S ⊆ N∖i} |S|!(n−|S|−1)!/n! · (v(S∪i) − v(S))`, in `O(n·2^n)`.
/// Marginals are summed per coalition size before weighting.
pub fn shapley_from_table(values: &[f64], n: usize) -> Result<Vec<f64>> {
    check_table(values, n)?;
    let weights: Vec<f64> = (0..n).map(|s| shapley_weight(n, s)).collect();
    Ok((0..n)
        .into_par_iter()
        .map(|i| {
            let bit = coalition::singleton(i);
            let mut by_size = vec![0.0f64; n];
            for s in (0..1u64 << n).filter(|s| s & bit == 0) {
                by_size[coalition::size(s)] += values[(s | bit) as usize] - values[s as usize];
            }
            by_size.iter().zip(&weights).map(|(m, w)| m * w).sum()
        })
        .collect())
}

/// The full value table and exact Shapley values of a game.
#[derive(Debug, Clone, PartialEq)]
pub struct ExactResult {
    /// `values_table[S] = v(S)` for every coalition bitmask `S < 2^n`.
    pub values_table: Vec<f64>,
    /// Exact Shapley value of each player.
    pub shapley: Vec<f64>,
}

/// Evaluates all `2^n` coalitions of `game` (one batch, `n <= 20`) and
/// computes exact Shapley values.
pub fn exact(game: &dyn Game) -> Result<ExactResult> {
    let values_table = enumerate(game)?;
    let shapley = shapley_from_table(&values_table, game.n_players())?;
    Ok(ExactResult { values_table, shapley })
}

/// The multilinear extension `F(q) = Σ_S v(S) q^|S| (1−q)^(n−|S|)` at the
/// diagonal point `(q, …, q)`, computed exactly from the table of `2^n`
/// values: the expected value of a coalition whose players join
/// independently with probability `q`. `F(0) = v(∅)`, `F(1) = v(N)`.
pub fn multilinear_extension(values: &[f64], n: usize, q: f64) -> Result<f64> {
    check_table(values, n)?;
    if !(0.0..=1.0).contains(&q) {
        bail!("q = {q} is not a probability: use 0 <= q <= 1");
    }
    let mut by_size = vec![0.0f64; n + 1];
    for (s, v) in values.iter().enumerate() {
        by_size[(s as u64).count_ones() as usize] += v;
    }
    Ok(by_size.iter().enumerate().map(|(k, sum)| sum * q.powi(k as i32) * (1.0 - q).powi((n - k) as i32)).sum())
}

/// The exact computation as an estimator: evaluates all `2^n` coalitions
/// through the memo (`n <= 20`), ignores the budget, reports zero errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExactEstimator;

/// Registry entry of [`ExactEstimator`].
pub const ENTRY: Entry = Entry {
    names: "exact",
    about: "all 2^n coalitions (n <= 20); the ground truth, ignores the budget",
    parse: |name| (name == "exact").then(|| Estimator::new(ExactEstimator)),
    defaults: || vec![Estimator::new(ExactEstimator)],
};

impl ShapleyEstimator for ExactEstimator {
    fn name(&self) -> String {
        "exact".to_string()
    }

    fn min_budget(&self, n: usize) -> usize {
        1usize.checked_shl(n as u32).unwrap_or(usize::MAX)
    }

    fn is_exact(&self) -> bool {
        true
    }

    fn estimate(&self, memo: &Memo, _budget: usize, _seed: u64, _target: Option<f64>) -> Result<ShapleyEstimate> {
        let n = memo.n_players();
        check_exact_size(n)?;
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
            estimator: self.name(),
            values: shapley_from_table(&table, n)?,
            std_errors: vec![0.0; n],
            evaluations: memo.evaluations() - before,
            samples: 0,
            converged: true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::coalition::grand;
    use crate::shapley::game::{FnGame, TableGame};
    use crate::shapley::synthetic::{AdditiveGame, SaturatingGame, SumOfUnanimityGames, WeightedMajorityGame};

    fn efficiency_holds(game: &dyn Game) {
        let r = exact(game).unwrap();
        let n = game.n_players();
        let total: f64 = r.shapley.iter().sum();
        let gap = total - (r.values_table[grand(n) as usize] - r.values_table[0]);
        assert!(gap.abs() < 1e-12, "{}: efficiency gap {gap}", game.name());
    }

    #[test]
    fn efficiency() {
        efficiency_holds(&SumOfUnanimityGames::random(11, 40, 6, 3).unwrap());
        efficiency_holds(&SaturatingGame::random(12, 5).unwrap());
        efficiency_holds(&WeightedMajorityGame::new(vec![3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0], 12.0).unwrap());
        efficiency_holds(&AdditiveGame::new(vec![1.0, -2.0, 0.25]).unwrap());
    }

    #[test]
    fn symmetry_and_null_player() {
        // Players 1 and 4 have equal weight, player 2 has none: in the
        // saturating game 1 and 4 are interchangeable and 2 is a null player.
        let g = SaturatingGame::new(vec![0.3, 0.45, 0.0, 0.1, 0.45, 0.7], 0.2).unwrap();
        let phi = exact(&g).unwrap().shapley;
        assert!((phi[1] - phi[4]).abs() < 1e-14, "{phi:?}");
        assert_eq!(phi[2], 0.0);
        assert!(phi[5] > phi[4] && phi[4] > phi[0] && phi[0] > phi[3]);

        // A player that never changes v in a non-additive game.
        let f = FnGame::new(5, "null3", |c| {
            let c = c & !0b1000;
            (c.count_ones() as f64).sqrt() + if c & 0b11 == 0b11 { 1.0 } else { 0.0 }
        });
        let phi = exact(&f).unwrap().shapley;
        assert_eq!(phi[3], 0.0);
        assert!((phi[0] - phi[1]).abs() < 1e-14 && (phi[2] - phi[4]).abs() < 1e-14);
    }

    #[test]
    fn additivity() {
        let a = SumOfUnanimityGames::random(9, 20, 5, 11).unwrap();
        let b = SaturatingGame::random(9, 12).unwrap();
        let ta = enumerate(&a).unwrap();
        let tb = enumerate(&b).unwrap();
        let sum: Vec<f64> = ta.iter().zip(&tb).map(|(x, y)| x + y).collect();
        let phi_sum = exact(&TableGame::new(9, sum).unwrap()).unwrap().shapley;
        let pa = shapley_from_table(&ta, 9).unwrap();
        let pb = shapley_from_table(&tb, 9).unwrap();
        for i in 0..9 {
            assert!((phi_sum[i] - pa[i] - pb[i]).abs() < 1e-12);
        }
    }

    #[test]
    fn weights_sum_to_one_over_coalitions() {
        // Σ_s C(n−1, s) w(n, s) = 1 and w(n, 0) = 1/n.
        for n in [1usize, 2, 5, 12, 20] {
            let mut total = 0.0;
            let mut binom = 1.0f64;
            for s in 0..n {
                total += binom * shapley_weight(n, s);
                binom = binom * (n - 1 - s) as f64 / (s + 1) as f64;
            }
            assert!((total - 1.0).abs() < 1e-12, "n = {n}: {total}");
            assert!((shapley_weight(n, 0) - 1.0 / n as f64).abs() < 1e-15);
        }
        assert!((shapley_weight(3, 1) - 1.0 / 6.0).abs() < 1e-15);
    }

    #[test]
    fn multilinear_extension_endpoints_and_additive_line() {
        let g = SaturatingGame::random(10, 4).unwrap();
        let t = enumerate(&g).unwrap();
        assert_eq!(multilinear_extension(&t, 10, 0.0).unwrap(), t[0]);
        assert_eq!(multilinear_extension(&t, 10, 1.0).unwrap(), t[grand(10) as usize]);

        let w = vec![0.5, -1.0, 2.0, 0.25, 3.0];
        let add = AdditiveGame::new(w.clone()).unwrap();
        let ta = enumerate(&add).unwrap();
        for q in [0.0, 0.1, 0.37, 0.5, 0.9, 1.0] {
            let f = multilinear_extension(&ta, 5, q).unwrap();
            let expect = q * w.iter().sum::<f64>();
            assert!((f - expect).abs() < 1e-12, "q = {q}: {f} vs {expect}");
        }
        // Symmetric threshold game: F(q) = P(Bin(n, q) ≥ k).
        let maj = WeightedMajorityGame::symmetric(4, 2).unwrap();
        let tm = enumerate(&maj).unwrap();
        let q: f64 = 0.3;
        let expect = 1.0 - (1.0 - q).powi(4) - 4.0 * q * (1.0 - q).powi(3);
        assert!((multilinear_extension(&tm, 4, q).unwrap() - expect).abs() < 1e-14);
    }

    #[test]
    fn errors_instead_of_panics() {
        let big = AdditiveGame::new(vec![1.0; 21]).unwrap();
        let err = exact(&big).unwrap_err().to_string();
        assert!(err.contains("n = 21") && err.contains("sampling"), "{err}");
        assert!(shapley_from_table(&[0.0; 7], 3).is_err());
        assert!(multilinear_extension(&[0.0; 8], 3, 1.5).is_err());
        assert!(multilinear_extension(&[0.0; 8], 3, f64::NAN).is_err());
        assert!(multilinear_extension(&[0.0; 4], 3, 0.5).is_err());
        let zero = FnGame::new(0, "empty", |_| 2.0);
        let r = exact(&zero).unwrap();
        assert_eq!((r.values_table, r.shapley), (vec![2.0], vec![]));
    }
}
