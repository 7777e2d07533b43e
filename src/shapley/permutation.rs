//! Monte Carlo permutation sampling (Castro, Gómez & Tejada 2009).
//!
//! A uniformly random order `π` of the players is walked along its prefix
//! chain `∅ ⊂ {π₁} ⊂ {π₁, π₂} ⊂ … ⊂ N`; the marginal of `π_k` is
//! `v(prefix_k) − v(prefix_{k−1})`, an unbiased sample of every player's
//! Shapley value at once. One permutation touches `n + 1` coalitions; `∅`
//! and `N` are shared by all of them, so after the first permutation each
//! further one needs at most `n − 1` new evaluations (fewer when the memo
//! already holds some prefixes, which is common for small and large ones).

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::shapley::coalition::{self, Coalition};
use crate::shapley::estimator::{Estimator, ShapleyEstimator};
use crate::shapley::game::Memo;
use crate::shapley::registry::{strip_flag, Entry};
use crate::shapley::result::ShapleyEstimate;
use crate::shapley::sampling::{check_sampling_players, check_target, Ledger, RunningStats};

/// Samples (permutations, or antithetic pairs) sent to the memo per batch,
/// so the game can evaluate their coalitions together.
pub const PERMUTATION_BATCH: usize = 8;

/// The smallest budget that buys one sample on `n` players from a fresh
/// memo: `n + 1` for a permutation, `2n` for an antithetic pair (the
/// reversed permutation's `n − 1` proper prefixes are all new).
pub fn permutation_min_budget(n: usize, antithetic: bool) -> usize {
    if antithetic {
        (2 * n).max(n + 1)
    } else {
        n + 1
    }
}

/// Permutation sampling as a registered estimator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PermutationEstimator {
    /// Pair each permutation with its reverse.
    pub antithetic: bool,
}

/// Registry entry of [`PermutationEstimator`].
pub const ENTRY: Entry = Entry {
    names: "permutation[-antithetic]",
    about: "random orders, marginals along the prefix chain (Castro et al. 2009); antithetic pairs each order with its reverse",
    parse: |name| {
        let (base, antithetic) = strip_flag(name, "-antithetic");
        (base == "permutation").then(|| Estimator::new(PermutationEstimator { antithetic }))
    },
    defaults: || [false, true].map(|antithetic| Estimator::new(PermutationEstimator { antithetic })).to_vec(),
};

impl ShapleyEstimator for PermutationEstimator {
    fn name(&self) -> String {
        (if self.antithetic { "permutation_antithetic" } else { "permutation" }).to_string()
    }

    fn min_budget(&self, n: usize) -> usize {
        permutation_min_budget(n, self.antithetic)
    }

    fn stops_early(&self) -> bool {
        true
    }

    fn estimate(&self, memo: &Memo, budget: usize, seed: u64, target: Option<f64>) -> Result<ShapleyEstimate> {
        permutation_sampling(memo, budget, self.antithetic, seed, target)
    }
}

/// Adds the prefix chain of `order` to `batch` (`n + 1` coalitions).
fn push_chain(order: &[usize], batch: &mut Vec<Coalition>) {
    let mut c = coalition::EMPTY;
    batch.push(c);
    for &i in order {
        c = coalition::insert(c, i);
        batch.push(c);
    }
}

/// Adds the marginals of `order` (chain values `chain`) to `sample`.
fn add_marginals(order: &[usize], chain: &[f64], scale: f64, sample: &mut [f64]) {
    for (k, &i) in order.iter().enumerate() {
        sample[i] += scale * (chain[k + 1] - chain[k]);
    }
}

/// Permutation-sampling Shapley estimate through `memo`, spending at most
/// `budget` new distinct evaluations (and never more than the memo has left).
///
/// * `antithetic`: each permutation is paired with its reverse and the
///   pair's average marginal vector is one sample; standard errors treat
///   pairs as the i.i.d. units.
/// * Permutations are drawn [`PERMUTATION_BATCH`] samples at a time and
///   drawn until the next batch no longer fits the budget; the largest
///   leading part of that last batch that fits is still used. Because
///   memoised coalitions are free, the number of samples is also capped at
///   `budget`, so a small game whose coalitions are all memoised stops.
/// * `target_precision`: after each batch (from [`MIN_SAMPLES_FOR_STOP`]
///   samples on) stop once `max_i SE_i / (max φ − min φ) < target`; then
///   `converged` is true.
///
/// Errors when not even one sample fits (see [`permutation_min_budget`]).
///
/// [`MIN_SAMPLES_FOR_STOP`]: crate::shapley::MIN_SAMPLES_FOR_STOP
pub fn permutation_sampling(
    memo: &Memo,
    budget: usize,
    antithetic: bool,
    seed: u64,
    target_precision: Option<f64>,
) -> Result<ShapleyEstimate> {
    let n = memo.n_players();
    check_sampling_players(n)?;
    check_target(target_precision)?;
    let ledger = Ledger::new(memo, budget);
    let max_samples = ledger.budget();
    let orders_per_sample = if antithetic { 2 } else { 1 };
    let per_sample = orders_per_sample * (n + 1);
    let scale = 1.0 / orders_per_sample as f64;

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut stats = RunningStats::new(n);
    let mut converged = false;
    let mut order: Vec<usize> = (0..n).collect();
    let mut orders: Vec<Vec<usize>> = Vec::new();
    let mut batch: Vec<Coalition> = Vec::new();
    let mut sample = vec![0.0; n];

    while stats.count() < max_samples {
        let k = PERMUTATION_BATCH.min(max_samples - stats.count());
        orders.clear();
        batch.clear();
        for _ in 0..k {
            order.shuffle(&mut rng);
            orders.push(order.clone());
            push_chain(&order, &mut batch);
            if antithetic {
                let reversed: Vec<usize> = order.iter().rev().copied().collect();
                push_chain(&reversed, &mut batch);
                orders.push(reversed);
            }
        }
        // Use the largest leading part of the batch that fits the budget.
        let mut take = k;
        let values = loop {
            if take == 0 {
                break None;
            }
            if let Some(v) = ledger.try_values(&batch[..take * per_sample])? {
                break Some(v);
            }
            take -= 1;
        };
        let Some(values) = values else {
            break;
        };
        for s in 0..take {
            sample.fill(0.0);
            for o in 0..orders_per_sample {
                let idx = s * orders_per_sample + o;
                let chain = &values[idx * (n + 1)..(idx + 1) * (n + 1)];
                add_marginals(&orders[idx], chain, scale, &mut sample);
            }
            stats.push(&sample);
        }
        if take < k {
            break;
        }
        if stats.reached(target_precision) {
            converged = true;
            break;
        }
    }

    if stats.count() == 0 {
        bail!(
            "budget {} is too small for {} on {n} players: one sample needs {} distinct evaluations; raise the budget to at least that",
            ledger.budget(),
            if antithetic {
                "antithetic permutation sampling"
            } else {
                "permutation sampling"
            },
            permutation_min_budget(n, antithetic)
        );
    }
    Ok(ShapleyEstimate {
        estimator: if antithetic { "permutation_antithetic" } else { "permutation" }.to_string(),
        values: stats.means(),
        std_errors: stats.std_errors(),
        evaluations: ledger.used(),
        samples: stats.count(),
        converged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::game::FnGame;
    use crate::shapley::synthetic::AdditiveGame;

    #[test]
    fn exact_on_additive_game_after_one_permutation() {
        // Dyadic weights: every sum and difference is exact in f64.
        let w = vec![1.0, -2.5, 0.25, 4.0, 0.0, 3.5, -0.75, 2.0, 1.5, 0.5];
        let g = AdditiveGame::new(w.clone()).unwrap();
        let memo = Memo::new(&g, 11);
        let est = permutation_sampling(&memo, 11, false, 3, None).unwrap();
        assert_eq!(est.samples, 1);
        assert_eq!(est.evaluations, 11);
        assert_eq!(est.values, w);
        assert!(est.std_errors.iter().all(|s| s.is_nan()));

        let memo = Memo::new(&g, 500);
        let est = permutation_sampling(&memo, 500, true, 3, None).unwrap();
        assert_eq!(est.values, w);
        assert!(est.std_errors.iter().all(|&s| s == 0.0));
        assert!(est.evaluations <= 500);
    }

    #[test]
    fn antithetic_pair_is_a_permutation_and_its_reverse() {
        // v(S) = [0 ∈ S and 1 ∈ S]: the player added second of {0, 1} gets 1.
        // In a permutation and its reverse each of 0 and 1 comes second once,
        // so every antithetic pair gives exactly (1/2, 1/2, 0).
        let g = FnGame::new(3, "and01", |c| (c & 0b11 == 0b11) as u8 as f64);
        let memo = Memo::new(&g, 8);
        let est = permutation_sampling(&memo, 8, true, 9, None).unwrap();
        assert_eq!(est.values, vec![0.5, 0.5, 0.0]);
        assert!(est.evaluations <= 8);
        assert_eq!(permutation_min_budget(3, true), 6);
        assert_eq!(permutation_min_budget(1, true), 2);
    }

    #[test]
    fn permutations_are_sent_to_the_game_in_batches() {
        let g = crate::shapley::synthetic::SaturatingGame::random(12, 1).unwrap();
        let memo = Memo::new(&g, 1000);
        let est = permutation_sampling(&memo, 1000, false, 5, None).unwrap();
        assert!(est.samples > 80);
        // One game call per batch of PERMUTATION_BATCH permutations (plus
        // the shrunken last batch), not one per permutation or coalition.
        assert!(memo.game_calls() <= est.samples / PERMUTATION_BATCH + 2);
        assert_eq!(memo.evaluations(), est.evaluations);
        assert!(est.evaluations > 1000 - 11, "budget left unused: {}", est.evaluations);
    }

    #[test]
    fn memo_budget_and_run_budget_both_bind() {
        let g = AdditiveGame::new(vec![1.0; 12]).unwrap();
        let memo = Memo::new(&g, 40);
        let est = permutation_sampling(&memo, 1000, false, 1, None).unwrap();
        assert!(est.evaluations <= 40 && memo.evaluations() <= 40);
        // A second run on the same memo gets only what the memo has left.
        let before = memo.evaluations();
        let second = permutation_sampling(&memo, 1000, false, 2, None);
        assert!(memo.evaluations() <= 40);
        if let Ok(e) = second {
            assert_eq!(e.evaluations, memo.evaluations() - before);
        }
    }
}
