//! Measures over groups of runs (a k-seed merge, a barrier between two seeds): every group of
//! `k` seeds out of `n` is evaluated and averaged (a U-statistic), and its standard error comes
//! from the delete-one-seed jackknife, with Student-t on `n − 1` degrees of freedom.
//!
//! Groups that share a seed are not independent replicates: treating the `n` cyclic groups
//! `(1,2), (2,3), …` as independent under-states the standard error (by 2× for pairs of 3
//! seeds). The jackknife drops every group that contains seed `s`, recomputes the mean `θ₋ₛ`,
//! and takes `SE² = (n−1)/n · Σₛ (θ₋ₛ − θ̄₍.₎)²` with `θ̄₍.₎` the mean of the `θ₋ₛ`. For a
//! paired comparison (method − baseline on the same seeds) pass the per-group differences.
//! With `k = 1` this is exactly the paired t-test's standard error `s/√n`.

use super::t_quantile;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// The most groups [`all_groups`] enumerates.
pub const MAX_GROUPS: usize = 1 << 20;

/// Every group of `k` distinct indices out of `0..n`, each sorted, in lexicographic order:
/// `C(n, k)` groups. Errors when `k` is 0 or above `n`, or when there would be more than
/// [`MAX_GROUPS`].
pub fn all_groups(n: usize, k: usize) -> Result<Vec<Vec<usize>>> {
    if k == 0 || k > n {
        bail!("groups of {k} seeds out of {n}: need 1 ≤ k ≤ n; pass more seeds or a smaller group size");
    }
    let count = binomial(n, k);
    if count > MAX_GROUPS as f64 {
        bail!("{count} groups of {k} seeds out of {n} are too many to evaluate (limit {MAX_GROUPS}); use fewer seeds");
    }
    let mut out = Vec::with_capacity(count as usize);
    let mut g: Vec<usize> = (0..k).collect();
    loop {
        out.push(g.clone());
        // The rightmost index that can still move right.
        let Some(i) = (0..k).rev().find(|&i| g[i] < n - k + i) else { break };
        g[i] += 1;
        for j in i + 1..k {
            g[j] = g[j - 1] + 1;
        }
    }
    Ok(out)
}

/// `C(n, k)` as a float (exact below 2^53).
fn binomial(n: usize, k: usize) -> f64 {
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64).round()
}

/// A mean over every group of `k` seeds out of `n`, with its delete-one-seed jackknife interval
/// and the t-test of a zero mean (for paired differences).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupEstimate {
    /// Seeds (the replicates).
    pub n_seeds: usize,
    /// Seeds per group.
    pub k: usize,
    /// Groups averaged, `C(n, k)`.
    pub groups: usize,
    /// The mean over groups.
    pub mean: f64,
    /// Jackknife standard error of the mean.
    pub se: f64,
    /// Degrees of freedom of the t reference, `n − 1`.
    pub df: f64,
    /// `t_{(1+level)/2, df} · se`.
    pub half_width: f64,
    /// `mean − half_width`.
    pub lo: f64,
    /// `mean + half_width`.
    pub hi: f64,
    /// Confidence level, e.g. 0.95.
    pub level: f64,
    /// `mean / se`; NaN when `se` is 0.
    pub t: f64,
    /// Two-sided p-value of a zero mean, `2·P(T_df > |t|)`; 1 when every group value is 0, NaN
    /// when the test cannot be made (`se` = 0 with a non-zero mean: "not testable").
    pub p_value: f64,
}

/// The mean over every group of seeds with its delete-one-seed jackknife standard error, at
/// confidence `level`. `values` holds one `(group, value)` per group: the groups must form a
/// balanced design, each seed in equally many groups — every `k`-subset of `0..n` once (as
/// [`all_groups`] lists them, in any order; the default) or the `n` cyclic groups of older
/// grids — and `n ≥ k + 1` so that a group survives the deletion of any one seed.
pub fn group_jackknife(n: usize, values: &[(Vec<usize>, f64)], level: f64) -> Result<GroupEstimate> {
    let Some((first, _)) = values.first() else {
        bail!("no group values to summarise; evaluate every group of seeds first");
    };
    let k = first.len();
    if n < k + 1 {
        bail!("the jackknife over groups of {k} seeds needs at least {} seeds, got {n}; add seeds", k + 1);
    }
    if !(level > 0.0 && level < 1.0) {
        bail!("confidence level {level} must be in (0, 1), e.g. 0.95");
    }
    check_complete(n, k, values)?;
    let mean = values.iter().map(|(_, v)| v).sum::<f64>() / values.len() as f64;
    let groups: Vec<&[usize]> = values.iter().map(|(g, _)| g.as_slice()).collect();
    let group_values: Vec<f64> = values.iter().map(|(_, v)| *v).collect();
    let se = jackknife_variance(&leave_one_out(n, &groups), &group_values).sqrt();
    let df = (n - 1) as f64;
    let half_width = t_quantile(df, 0.5 + level / 2.0)? * se;
    let (t, p_value) = if se > 0.0 {
        let t = mean / se;
        let dist = StudentsT::new(0.0, 1.0, df).map_err(|e| anyhow::anyhow!("Student-t with df {df}: {e}"))?;
        (t, (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0))
    } else if mean == 0.0 {
        (f64::NAN, 1.0)
    } else {
        (f64::NAN, f64::NAN)
    };
    Ok(GroupEstimate {
        n_seeds: n,
        k,
        groups: values.len(),
        mean,
        se,
        df,
        half_width,
        lo: mean - half_width,
        hi: mean + half_width,
        level,
        t,
        p_value,
    })
}

/// For each seed `s` of `0..n`, the indices of the groups that do not contain it (the groups
/// the delete-one-seed jackknife keeps when it drops `s`).
pub(crate) fn leave_one_out(n: usize, groups: &[&[usize]]) -> Vec<Vec<usize>> {
    (0..n).map(|s| (0..groups.len()).filter(|&g| !groups[g].contains(&s)).collect()).collect()
}

/// The delete-one-seed jackknife variance of the mean of `values` (one per group):
/// `(n−1)/n · Σₛ (θ₋ₛ − θ̄₍.₎)²`, with `θ₋ₛ` the mean over the groups `kept[s]` and `n` the
/// number of seeds (`kept.len()`). Every `kept[s]` must be non-empty.
pub(crate) fn jackknife_variance(kept: &[Vec<usize>], values: &[f64]) -> f64 {
    let n = kept.len();
    // θ₋ₛ: the mean over the groups without seed s.
    let leave_out: Vec<f64> = kept.iter().map(|k| k.iter().map(|&g| values[g]).sum::<f64>() / k.len() as f64).collect();
    let centre = leave_out.iter().sum::<f64>() / n as f64;
    let ss: f64 = leave_out.iter().map(|t| (t - centre) * (t - centre)).sum();
    (n - 1) as f64 / n as f64 * ss
}

/// Errors unless `values` is a balanced design of distinct `k`-subsets of `0..n` with finite
/// values: every seed in equally many groups (every `k`-subset, as [`all_groups`] lists them,
/// or the cyclic groups `(i, i+1, …)` of older grids), and every seed left out of some group.
pub(crate) fn check_complete(n: usize, k: usize, values: &[(Vec<usize>, f64)]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    let mut per_seed = vec![0usize; n];
    for (g, v) in values {
        let mut sorted = g.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != k || g.len() != k || sorted.iter().any(|&s| s >= n) {
            bail!("group {g:?} is not {k} distinct seeds out of 0..{n}; every group must have the same size");
        }
        if !v.is_finite() {
            bail!("group {g:?} has the value {v}; drop diverged runs before summarising");
        }
        for &s in &sorted {
            per_seed[s] += 1;
        }
        if !seen.insert(sorted) {
            bail!("group {g:?} appears twice; pass each group of seeds once");
        }
    }
    let (lo, hi) = (per_seed.iter().min().copied().unwrap_or(0), per_seed.iter().max().copied().unwrap_or(0));
    if lo == 0 || lo != hi || hi == values.len() {
        bail!(
            "{} of the {} groups of {k} seeds out of {n} were given, with each seed in {lo} to {hi} of them; the jackknife needs a balanced design (every group as all_groups lists them, or the cyclic groups)",
            seen.len(),
            binomial(n, k)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::mean_ci;
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    #[test]
    fn groups_are_every_subset_in_order() {
        assert_eq!(
            all_groups(4, 2).unwrap(),
            vec![vec![0, 1], vec![0, 2], vec![0, 3], vec![1, 2], vec![1, 3], vec![2, 3]]
        );
        assert_eq!(all_groups(3, 3).unwrap(), vec![vec![0, 1, 2]]);
        assert_eq!(all_groups(10, 3).unwrap().len(), 120);
        assert_eq!(all_groups(5, 1).unwrap(), (0..5).map(|i| vec![i]).collect::<Vec<_>>());
        assert!(all_groups(3, 4).is_err() && all_groups(3, 0).is_err());
        assert!(all_groups(60, 30).unwrap_err().to_string().contains("too many"));
    }

    #[test]
    fn single_runs_give_the_paired_t_standard_error() {
        // k = 1: the jackknife SE of a mean is s/√n exactly.
        let x = [0.3, -0.1, 0.7, 0.2, 0.45];
        let values: Vec<(Vec<usize>, f64)> = x.iter().enumerate().map(|(i, &v)| (vec![i], v)).collect();
        let est = group_jackknife(5, &values, 0.95).unwrap();
        let ci = mean_ci(&x).unwrap();
        assert!((est.mean - ci.mean).abs() < 1e-15);
        assert!((est.half_width - ci.half_width).abs() < 1e-12, "{} vs {}", est.half_width, ci.half_width);
    }

    #[test]
    fn hand_computed_pairs_of_three_seeds() {
        // Pairs of 3 seeds with values (01) 1, (02) 2, (12) 6: mean 3. Leaving out seed 0 keeps
        // (12) = 6, seed 1 keeps (02) = 2, seed 2 keeps (01) = 1; their mean is 3, so
        // SE² = 2/3 · (9 + 1 + 4) = 28/3.
        let values = vec![(vec![0, 1], 1.0), (vec![0, 2], 2.0), (vec![1, 2], 6.0)];
        let est = group_jackknife(3, &values, 0.95).unwrap();
        assert_eq!((est.groups, est.k, est.df), (3, 2, 2.0));
        assert!((est.mean - 3.0).abs() < 1e-15);
        assert!((est.se - (28.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((est.half_width - 4.302653 * est.se).abs() < 1e-5);
        // Additive run effects: the U-statistic is 2·mean(a) and the jackknife SE is exactly
        // 2·s(a)/√n, twice the naive t over the three cyclic pair values' spread would suggest
        // for independent pairs.
        let a = [0.5, -1.0, 2.0];
        let values: Vec<(Vec<usize>, f64)> =
            all_groups(3, 2).unwrap().into_iter().map(|g| (g.clone(), a[g[0]] + a[g[1]])).collect();
        let est = group_jackknife(3, &values, 0.95).unwrap();
        let ci = mean_ci(&a).unwrap();
        assert!((est.mean - 2.0 * ci.mean).abs() < 1e-12);
        assert!((est.se - 2.0 * ci.std / 3f64.sqrt()).abs() < 1e-12);
        let naive = mean_ci(&values.iter().map(|(_, v)| *v).collect::<Vec<_>>()).unwrap();
        assert!((est.se / (naive.std / 3f64.sqrt()) - 2.0).abs() < 1e-12);
    }

    #[test]
    fn degenerate_and_bad_inputs() {
        let zeros: Vec<(Vec<usize>, f64)> = all_groups(4, 2).unwrap().into_iter().map(|g| (g, 0.0)).collect();
        assert_eq!(group_jackknife(4, &zeros, 0.95).unwrap().p_value, 1.0);
        let equal: Vec<(Vec<usize>, f64)> = all_groups(4, 2).unwrap().into_iter().map(|g| (g, 0.3)).collect();
        let est = group_jackknife(4, &equal, 0.95).unwrap();
        assert!(est.p_value.is_nan() && est.se == 0.0, "all equal and non-zero is not testable");
        let missing = &zeros[1..];
        assert!(group_jackknife(4, missing, 0.95).unwrap_err().to_string().contains("5 of the 6"));
        let mut twice = zeros.clone();
        twice[1] = (vec![1, 0], 0.0);
        assert!(group_jackknife(4, &twice, 0.95).unwrap_err().to_string().contains("twice"));
        assert!(group_jackknife(2, &[(vec![0, 1], 1.0)], 0.95).unwrap_err().to_string().contains("at least 3"));
        let mut nan = zeros.clone();
        nan[0].1 = f64::NAN;
        assert!(group_jackknife(4, &nan, 0.95).is_err());
        assert!(group_jackknife(4, &[], 0.95).is_err());
    }

    /// Share of `grids` simulated grids whose 95% interval covers the true mean 0, with group
    /// values `Σ_{i∈g} a_i + e_g` (run effects `a_i ~ N(0, 1)`, a group's own term
    /// `e_g ~ N(0, σ_e²)`).
    fn coverage(n: usize, k: usize, sigma_e: f64, grids: usize, seed: u64) -> f64 {
        coverage_of(&all_groups(n, k).unwrap(), n, sigma_e, grids, seed)
    }

    /// [`coverage`] over a given list of groups.
    fn coverage_of(groups: &[Vec<usize>], n: usize, sigma_e: f64, grids: usize, seed: u64) -> f64 {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let unit = Normal::new(0.0, 1.0).unwrap();
        let mut covered = 0;
        for _ in 0..grids {
            let a: Vec<f64> = (0..n).map(|_| unit.sample(&mut rng)).collect();
            let values: Vec<(Vec<usize>, f64)> = groups
                .iter()
                .map(|g| (g.clone(), g.iter().map(|&i| a[i]).sum::<f64>() + sigma_e * unit.sample(&mut rng)))
                .collect();
            let est = group_jackknife(n, &values, 0.95).unwrap();
            covered += usize::from(est.lo <= 0.0 && 0.0 <= est.hi);
        }
        covered as f64 / grids as f64
    }

    #[test]
    fn jackknife_intervals_cover_by_simulation() {
        // 2,000 grids per setting: pairs at n = 3, 5, 10 and triples at n = 5, 10 (triples of 3
        // seeds leave no group once a seed is deleted), with pure run effects and with a group
        // term as large as a run effect. The Monte Carlo SE of a 95% coverage is 0.5 points.
        for (n, k) in [(3, 2), (5, 2), (10, 2), (5, 3), (10, 3)] {
            for sigma_e in [0.0, 1.0] {
                let c = coverage(n, k, sigma_e, 2000, 7 + n as u64 * 10 + k as u64);
                eprintln!("pairs/triples: n {n}, k {k}, σ_e {sigma_e}: coverage {c}");
                assert!((0.93..=0.97).contains(&c), "n {n}, k {k}, σ_e {sigma_e}: coverage {c}");
            }
        }
    }

    #[test]
    fn the_jackknife_over_cyclic_groups_covers_too() {
        // Older grids took the n cyclic groups (i, i+1, …): a balanced design in which every
        // seed is in k groups. The delete-one-seed jackknife over them covers as well.
        for (n, k) in [(5, 2), (10, 2), (10, 3)] {
            let cyclic: Vec<Vec<usize>> = (0..n).map(|i| (0..k).map(|j| (i + j) % n).collect()).collect();
            for sigma_e in [0.0, 1.0] {
                let c = coverage_of(&cyclic, n, sigma_e, 2000, 11 + n as u64 + k as u64);
                eprintln!("cyclic: n {n}, k {k}, σ_e {sigma_e}: coverage {c}");
                assert!((0.93..=0.97).contains(&c), "cyclic n {n}, k {k}, σ_e {sigma_e}: coverage {c}");
            }
        }
        // An unbalanced set (seed 0 in every group) is refused.
        let star = vec![(vec![0, 1], 1.0), (vec![0, 2], 2.0), (vec![0, 3], 3.0)];
        assert!(group_jackknife(4, &star, 0.95).unwrap_err().to_string().contains("balanced"));
    }

    #[test]
    fn cyclic_groups_under_cover() {
        // What the jackknife replaces: the naive t over the n cyclic pairs (1,2), (2,3), …
        // treated as independent covers far less than 95% (the reason for this module).
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let unit = Normal::new(0.0, 1.0).unwrap();
        let (n, grids) = (5, 2000);
        let mut covered = 0;
        for _ in 0..grids {
            let a: Vec<f64> = (0..n).map(|_| unit.sample(&mut rng)).collect();
            let cyclic: Vec<f64> = (0..n).map(|i| a[i] + a[(i + 1) % n]).collect();
            let ci = mean_ci(&cyclic).unwrap();
            covered += usize::from(ci.lo <= 0.0 && 0.0 <= ci.hi);
        }
        let c = covered as f64 / grids as f64;
        eprintln!("naive t over 5 cyclic pairs: coverage {c}");
        assert!(c < 0.9, "naive cyclic coverage {c}");
    }
}
