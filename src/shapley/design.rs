//! Coalition designs of the regression and stratified estimators: which
//! coalition sizes to enumerate in full, how many coalitions to draw from the
//! others, and the draws themselves. Sizes are `0..=n`; `∅` and `N` are always
//! part of a design.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::shapley::coalition::{self, Coalition};

/// `C(n, k)` as a float (exact for the sizes used here, `n <= 64`).
pub fn binom(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    let k = k.min(n - k);
    (1..=k).fold(1.0f64, |acc, j| acc * (n - k + j) as f64 / j as f64)
}

/// The Shapley kernel weight of one coalition of size `s`, `0 < s < n`:
/// `(n − 1) / (C(n, s) · s · (n − s))` (Lundberg & Lee 2017).
pub fn kernel_weight(n: usize, s: usize) -> f64 {
    (n - 1) as f64 / (binom(n, s) * s as f64 * (n - s) as f64)
}

/// A uniformly random coalition of exactly `k` of the players `0..n`
/// (partial Fisher–Yates).
pub fn random_subset(n: usize, k: usize, rng: &mut ChaCha8Rng) -> Coalition {
    let mut players: Vec<usize> = (0..n).collect();
    let mut c = coalition::EMPTY;
    for j in 0..k {
        let pick = rng.random_range(j..n);
        players.swap(j, pick);
        c = coalition::insert(c, players[j]);
    }
    c
}

/// Every coalition of exactly `k` of the players `0..n`, in increasing
/// bitmask order (Gosper's hack; `n < 64`).
pub fn subsets_of_size(n: usize, k: usize) -> Vec<Coalition> {
    if k > n {
        return Vec::new();
    }
    if k == 0 {
        return vec![coalition::EMPTY];
    }
    let limit = coalition::grand(n);
    let mut out = Vec::new();
    let mut c: Coalition = (1u64 << k) - 1;
    while c <= limit {
        out.push(c);
        let low = c & c.wrapping_neg();
        let ripple = c + low;
        if ripple == 0 {
            break;
        }
        c = (((ripple ^ c) >> 2) / low) | ripple;
    }
    out
}

/// One coalition of a design with its regression weight; `unit` is the
/// index of the draw it came from (the bootstrap's resampling unit), or
/// `None` for enumerated coalitions and for `∅`, `N`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DesignRow {
    /// The coalition.
    pub coalition: Coalition,
    /// Its weight in the weighted least squares.
    pub weight: f64,
    /// The draw it came from, if sampled.
    pub unit: Option<usize>,
}

/// A sampled regression design: rows (repeats of a coalition are separate
/// rows), the distinct coalitions to evaluate, and the number of draws.
#[derive(Debug, Clone, Default)]
pub struct Design {
    /// Weighted rows, `∅` and `N` first.
    pub rows: Vec<DesignRow>,
    /// Distinct coalitions, in first-appearance order.
    pub coalitions: Vec<Coalition>,
    /// Number of draws (bootstrap units); paired draws count once.
    pub units: usize,
    /// Sizes enumerated in full.
    pub enumerated: Vec<usize>,
}

/// Builds a design for `n` players with at most `budget` distinct coalitions.
///
/// * `target[s]` (`s = 0..=n`, only `1..n` read) is the total regression
///   weight of size `s` (e.g. `C(n,s)·kernel_weight`): every coalition of an
///   enumerated size gets `target[s] / C(n,s)`, and the draws of the other
///   sizes get importance weights whose expectation is the same.
/// * `sampling[s]` is the probability mass of size `s` for the draws
///   (renormalised over the sizes not enumerated; must be symmetric,
///   `sampling[s] = sampling[n−s]`, when `paired`).
/// * Border trick: a size whose expected number of draws would reach its
///   number of coalitions is enumerated instead (with its mirror size `n − s`
///   when `paired`), largest ratio first, while the budget allows.
/// * `paired`: each draw `S` also adds `N ∖ S`.
///
/// Draws stop when the next one would exceed the budget.
pub fn sample_design(
    n: usize,
    budget: usize,
    target: &[f64],
    sampling: &[f64],
    paired: bool,
    rng: &mut ChaCha8Rng,
) -> Design {
    let full = coalition::grand(n);
    let mut design = Design::default();
    let mut seen = HashSet::new();
    for c in [coalition::EMPTY, full] {
        if seen.insert(c) {
            design.coalitions.push(c);
            design.rows.push(DesignRow { coalition: c, weight: 0.0, unit: None });
        }
    }
    let mut left = budget.saturating_sub(design.coalitions.len());
    let mut open: Vec<usize> = (1..n).filter(|&s| sampling[s] > 0.0).collect();
    // Border trick: enumerate sizes whose expected draws reach their size.
    loop {
        let mass: f64 = open.iter().map(|&s| sampling[s]).sum();
        let best = open
            .iter()
            .copied()
            .filter(|&s| s <= n - s || !paired)
            .map(|s| {
                let group: Vec<usize> = if paired && s != n - s { vec![s, n - s] } else { vec![s] };
                let count: f64 = group.iter().map(|&k| binom(n, k)).sum();
                let expected: f64 =
                    group.iter().map(|&k| left as f64 * sampling[k] / mass.max(f64::MIN_POSITIVE)).sum();
                (expected / count, count, group)
            })
            .filter(|(ratio, count, _)| *ratio >= 1.0 && *count <= left as f64)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let Some((_, count, group)) = best else { break };
        for &s in &group {
            let w = target[s] / binom(n, s);
            for c in subsets_of_size(n, s) {
                if seen.insert(c) {
                    design.coalitions.push(c);
                }
                design.rows.push(DesignRow { coalition: c, weight: w, unit: None });
            }
            design.enumerated.push(s);
        }
        open.retain(|s| !group.contains(s));
        left -= count as usize;
    }
    design.enumerated.sort_unstable();
    let mass: f64 = open.iter().map(|&s| sampling[s]).sum();
    if open.is_empty() || mass <= 0.0 {
        return design;
    }
    // Draw sizes by inverse CDF over the open sizes, then a uniform subset.
    let cdf: Vec<f64> = open
        .iter()
        .scan(0.0, |acc, &s| {
            *acc += sampling[s] / mass;
            Some(*acc)
        })
        .collect();
    let mut draws: Vec<Vec<Coalition>> = Vec::new();
    let mut distinct = 0usize;
    let max_draws = 100 * (left + 1);
    while draws.len() < max_draws {
        let u: f64 = rng.random();
        let idx = cdf.iter().position(|&p| u < p).unwrap_or(open.len() - 1);
        let s = random_subset(n, open[idx], rng);
        let members = if paired { vec![s, s ^ full] } else { vec![s] };
        let new: HashSet<Coalition> = members.iter().copied().filter(|c| !seen.contains(c)).collect();
        if distinct + new.len() > left {
            break;
        }
        distinct += new.len();
        for c in &members {
            if seen.insert(*c) {
                design.coalitions.push(*c);
            }
        }
        draws.push(members);
    }
    let m = draws.len() * if paired { 2 } else { 1 };
    for (unit, members) in draws.into_iter().enumerate() {
        for c in members {
            let s = coalition::size(c);
            let weight = target[s] / (m as f64 * sampling[s] / mass);
            design.rows.push(DesignRow { coalition: c, weight, unit: Some(unit) });
        }
    }
    design.units = m / if paired { 2 } else { 1 };
    design
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn binomials_kernel_and_subsets() {
        assert_eq!(binom(12, 0), 1.0);
        assert_eq!(binom(12, 6), 924.0);
        assert_eq!(binom(5, 7), 0.0);
        // Kernel weights of n = 4: (n−1)/(C(4,s) s (4−s)) = 3/(4·3), 3/(6·4), 3/(4·3).
        assert!((kernel_weight(4, 1) - 0.25).abs() < 1e-15);
        assert!((kernel_weight(4, 2) - 0.125).abs() < 1e-15);
        for k in 0..=6 {
            let all = subsets_of_size(6, k);
            assert_eq!(all.len() as f64, binom(6, k));
            assert!(all.iter().all(|&c| coalition::size(c) == k && coalition::within(c, 6)));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..50 {
            let c = random_subset(10, 4, &mut rng);
            assert_eq!(coalition::size(c), 4);
            assert!(coalition::within(c, 10));
        }
    }

    #[test]
    fn design_enumerates_borders_first_and_respects_the_budget() {
        let n = 12;
        let target: Vec<f64> =
            (0..=n).map(|s| if s == 0 || s == n { 0.0 } else { binom(n, s) * kernel_weight(n, s) }).collect();
        for paired in [false, true] {
            for budget in [30usize, 100, 256, 600, 2048, 5000] {
                let mut rng = ChaCha8Rng::seed_from_u64(budget as u64);
                let d = sample_design(n, budget, &target, &target, paired, &mut rng);
                assert!(d.coalitions.len() <= budget.min(4096), "{budget}: {}", d.coalitions.len());
                let unique: HashSet<_> = d.coalitions.iter().collect();
                assert_eq!(unique.len(), d.coalitions.len());
                // Sizes 1 and 11 (24 coalitions) are enumerated once the draws expected
                // there reach their count: at 30 only ~10 would land there, at 100 ~35.
                if budget >= 100 {
                    assert!(d.enumerated.contains(&1) && d.enumerated.contains(&11), "{budget}: {:?}", d.enumerated);
                }
                if budget >= 5000 {
                    assert_eq!(d.enumerated, (1..12).collect::<Vec<_>>());
                }
                // Budgets large enough to draw use almost all of it.
                if budget <= 2048 {
                    assert!(d.coalitions.len() + 2 >= budget, "{budget}: {}", d.coalitions.len());
                }
            }
        }
    }
}
