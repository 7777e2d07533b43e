//! What a report infers from the values of one quantity over its replicates: the mean with a
//! 95% interval that matches the design, and the test of a zero mean (for paired differences).
//!
//! A replicate is a group of seeds: one seed for a single run, `k` seeds for a merge or a
//! barrier of `k` runs. Every group of `k` out of the `n` seeds is evaluated, the groups are
//! averaged, and the standard error is the delete-one-seed jackknife on `n − 1` degrees of
//! freedom ([`crate::stats::group_jackknife`]); for single runs that is exactly the paired
//! t-test (older grids took the `n` cyclic groups instead: a balanced design the same jackknife
//! handles). Beside the t-test: the exact sign-flip p-value of single-run differences (`n ≤ 10`),
//! and the smallest p-value an exact sign-flip test on `n` seeds could give at all. A value set
//! whose standard error is zero (every difference equal), that has too few seeds, or whose
//! groups are incomplete is "not testable", with the reason.

use crate::stats::sign_flip::min_sign_flip_p;
use crate::stats::{group_jackknife, sign_flip_p, t_quantile, MeanCi};
use anyhow::{bail, Result};
use std::collections::{BTreeMap, BTreeSet};

/// Values by replicate: the sorted seeds of the group (one seed for a single run) → value.
pub type ByGroup = BTreeMap<Vec<u64>, f64>;

/// Parses the `seeds` column of a measurement (`"1+2"`) into its sorted seeds.
pub fn seeds_of(column: &str) -> Result<Vec<u64>> {
    let mut s = column
        .split('+')
        .map(|p| {
            p.trim().parse::<u64>().map_err(|_| anyhow::anyhow!("seeds column '{column}' is not seeds joined by +"))
        })
        .collect::<Result<Vec<_>>>()?;
    s.sort_unstable();
    Ok(s)
}

/// The single-run sign-flip test enumerates every sign pattern up to this many seeds.
pub const SIGN_FLIP_MAX_SEEDS: usize = 10;

/// The estimate of one quantity (or one paired difference) over its replicates.
#[derive(Clone, Debug, PartialEq)]
pub struct Estimate {
    /// Seeds involved.
    pub n_seeds: usize,
    /// Seeds per group (1 for single runs).
    pub k: usize,
    /// Groups averaged.
    pub groups: usize,
    /// Mean over the groups.
    pub mean: f64,
    /// Standard deviation of the group values (descriptive; the interval comes from `se`).
    pub std: f64,
    /// Standard error of the mean (delete-one-seed jackknife; `s/√n` for single runs).
    pub se: f64,
    /// Degrees of freedom of the t reference, `n − 1`.
    pub df: f64,
    /// Lower end of the 95% interval.
    pub lo: f64,
    /// Upper end of the 95% interval.
    pub hi: f64,
    /// Two-sided p-value of a zero mean (t on `df`); NaN when not testable.
    pub p: f64,
    /// Exact two-sided sign-flip p-value (single runs, `n ≤ 10`); NaN otherwise.
    pub p_sign_flip: f64,
    /// The smallest p-value an exact sign-flip test on `n_seeds` seeds can give: `2/2ⁿ`.
    pub p_floor: f64,
    /// Why no test could be made; `None` when it could.
    pub not_testable: Option<String>,
}

impl Estimate {
    /// The interval as a [`MeanCi`] for the tables and figures (`n` = seeds).
    pub fn mean_ci(&self) -> MeanCi {
        MeanCi {
            n: self.n_seeds,
            mean: self.mean,
            std: self.std,
            half_width: (self.hi - self.lo) / 2.0,
            lo: self.lo,
            hi: self.hi,
            level: 0.95,
        }
    }

    /// How the interval was made, in words for the tables.
    pub fn method(&self) -> &'static str {
        if self.k == 1 {
            "t over seeds"
        } else {
            "seed jackknife over all groups"
        }
    }
}

/// The estimate of the values `by_group` (non-finite values count as missing). Errors when
/// there are no values or the groups mix sizes.
pub fn estimate(by_group: &ByGroup) -> Result<Estimate> {
    let values: Vec<(&Vec<u64>, f64)> = by_group.iter().filter(|(_, v)| v.is_finite()).map(|(g, v)| (g, *v)).collect();
    let Some((first, _)) = values.first() else {
        bail!("no finite values to summarise");
    };
    let k = first.len();
    if values.iter().any(|(g, _)| g.len() != k) {
        bail!("internal: replicates mix groups of {k} seeds with others");
    }
    let seeds: Vec<u64> =
        values.iter().flat_map(|(g, _)| g.iter().copied()).collect::<BTreeSet<_>>().into_iter().collect();
    let n = seeds.len();
    let m = values.len();
    let mean = values.iter().map(|(_, v)| v).sum::<f64>() / m as f64;
    let std = if m > 1 {
        (values.iter().map(|(_, v)| (v - mean) * (v - mean)).sum::<f64>() / (m - 1) as f64).sqrt()
    } else {
        f64::NAN
    };
    let base = Estimate {
        n_seeds: n,
        k,
        groups: m,
        mean,
        std,
        se: f64::NAN,
        df: f64::NAN,
        lo: f64::NAN,
        hi: f64::NAN,
        p: f64::NAN,
        p_sign_flip: f64::NAN,
        p_floor: min_sign_flip_p(n),
        not_testable: None,
    };
    let mut per_seed: BTreeMap<u64, usize> = BTreeMap::new();
    for (g, _) in &values {
        for s in g.iter() {
            *per_seed.entry(*s).or_default() += 1;
        }
    }
    let balanced = per_seed.values().min() == per_seed.values().max();
    if !balanced {
        let why = format!(
            "{m} of the {} groups of {k} out of {n} seeds have a value, unevenly over the seeds",
            binomial(n, k)
        );
        return Ok(Estimate { not_testable: Some(why), ..base });
    }
    if n < k + 1 {
        let why = format!("{n} seed(s): groups of {k} need at least {} for an interval", k + 1);
        return Ok(Estimate { not_testable: Some(why), ..base });
    }
    let index: BTreeMap<u64, usize> = seeds.iter().enumerate().map(|(i, s)| (*s, i)).collect();
    let indexed: Vec<(Vec<usize>, f64)> =
        values.iter().map(|(g, v)| (g.iter().map(|s| index[s]).collect(), *v)).collect();
    let j = group_jackknife(n, &indexed, 0.95)?;
    let p_sign_flip = if k == 1 && n <= SIGN_FLIP_MAX_SEEDS {
        sign_flip_p(&values.iter().map(|(_, v)| *v).collect::<Vec<_>>())?
    } else {
        f64::NAN
    };
    let not_testable =
        (j.se == 0.0 && j.mean != 0.0).then(|| format!("every replicate gives {}: zero spread, no t-test", j.mean));
    let half = if j.se > 0.0 { t_quantile(j.df, 0.975)? * j.se } else { 0.0 };
    Ok(Estimate {
        se: j.se,
        df: j.df,
        lo: mean - half,
        hi: mean + half,
        p: j.p_value,
        p_sign_flip,
        not_testable,
        ..base
    })
}

/// The per-group differences `variant − baseline` over the groups both have finite values on.
pub fn differences(baseline: &ByGroup, variant: &ByGroup) -> ByGroup {
    baseline
        .iter()
        .filter_map(|(g, b)| variant.get(g).map(|v| (g.clone(), v - b)))
        .filter(|(_, d)| d.is_finite())
        .collect()
}

/// The per-group mean over several value sets (tasks, sweep points) of the groups that all of
/// them have: the pooled replicate values of one primary test.
pub fn pooled(sets: &[ByGroup]) -> ByGroup {
    let Some(first) = sets.first() else { return ByGroup::new() };
    first
        .keys()
        .filter(|g| sets.iter().all(|s| s.get(*g).is_some_and(|v| v.is_finite())))
        .map(|g| (g.clone(), sets.iter().map(|s| s[g]).sum::<f64>() / sets.len() as f64))
        .collect()
}

/// `C(n, k)` as a float.
fn binomial(n: usize, k: usize) -> f64 {
    if k > n {
        return 0.0;
    }
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64).round()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::paired_t;

    fn singles(v: &[f64]) -> ByGroup {
        v.iter().enumerate().map(|(i, x)| (vec![i as u64 + 1], *x)).collect()
    }

    #[test]
    fn single_runs_give_the_paired_t_test_and_the_exact_sign_flip() {
        let d = [0.5, 1.5, -0.25, 2.0, 1.0];
        let e = estimate(&singles(&d)).unwrap();
        let t = paired_t(&[0.0; 5], &d).unwrap();
        assert!((e.mean - t.diff.mean).abs() < 1e-12 && (e.lo - t.diff.lo).abs() < 1e-12);
        assert!((e.hi - t.diff.hi).abs() < 1e-12 && (e.p - t.p_value).abs() < 1e-12);
        // Sign flips: |sum| = 4.75; only the all-positive pattern and the one flipping −0.25
        // (sum 5.25) reach it, and their mirror images: 4 of 32.
        assert!((e.p_sign_flip - 4.0 / 32.0).abs() < 1e-12, "{}", e.p_sign_flip);
        assert_eq!((e.k, e.groups, e.n_seeds, e.p_floor), (1, 5, 5, 1.0 / 16.0));
        assert!(e.not_testable.is_none());
    }

    #[test]
    fn equal_non_zero_differences_are_not_testable_not_p_zero() {
        let e = estimate(&singles(&[0.3, 0.3, 0.3])).unwrap();
        assert!(e.not_testable.as_deref().unwrap().contains("zero spread"), "{e:?}");
        assert!(e.p.is_nan());
        // The exact test says what 3 seeds can say at best.
        assert_eq!((e.p_sign_flip, e.p_floor), (0.25, 0.25));
    }

    #[test]
    fn pairs_of_three_seeds_use_the_jackknife_over_all_pairs() {
        // Pure run effects a = (0, 1, 5): pair values a_i + a_j; mean 4; θ₋ₛ is the one pair
        // without s: (6, 5, 1); SE² = 2/3 · Σ(θ₋ₛ − 4)² = 2/3 · 14.
        let by: ByGroup = [(vec![1, 2], 1.0), (vec![1, 3], 5.0), (vec![2, 3], 6.0)].into_iter().collect();
        let e = estimate(&by).unwrap();
        assert!((e.mean - 4.0).abs() < 1e-12);
        assert!((e.se - (2.0 / 3.0 * 14.0f64).sqrt()).abs() < 1e-12, "{}", e.se);
        assert_eq!((e.k, e.df, e.groups), (2, 2.0, 3));
        let half = t_quantile(2.0, 0.975).unwrap() * e.se;
        assert!((e.lo - (4.0 - half)).abs() < 1e-12 && (e.hi - (4.0 + half)).abs() < 1e-12);
        assert!(e.p_sign_flip.is_nan());
        assert_eq!(e.method(), "seed jackknife over all groups");
    }

    #[test]
    fn incomplete_groups_and_too_few_seeds_are_not_testable() {
        let by: ByGroup = [(vec![1, 2], 1.0), (vec![2, 3], 6.0), (vec![1, 3], f64::NAN)].into_iter().collect();
        let e = estimate(&by).unwrap();
        assert!(e.not_testable.as_deref().unwrap().contains("2 of the 3 groups"), "{e:?}");
        // The cyclic pairs of 5 seeds are balanced (each seed in two): the jackknife applies.
        let cyclic: ByGroup =
            (1..=5u64).map(|i| (seeds_of(&format!("{i}+{}", i % 5 + 1)).unwrap(), i as f64)).collect();
        let e = estimate(&cyclic).unwrap();
        assert!(e.not_testable.is_none() && e.groups == 5 && e.se > 0.0, "{e:?}");
        let two: ByGroup = [(vec![1, 2], 1.0)].into_iter().collect();
        assert!(estimate(&two).unwrap().not_testable.unwrap().contains("at least 3"));
        assert!(estimate(&ByGroup::new()).is_err());
        let mixed: ByGroup = [(vec![1], 1.0), (vec![1, 2], 2.0)].into_iter().collect();
        assert!(estimate(&mixed).is_err());
    }

    #[test]
    fn differences_pair_by_group_and_pooling_averages_tasks_per_group() {
        let a: ByGroup = [(vec![1, 2], 1.0), (vec![1, 3], 2.0), (vec![2, 3], 3.0)].into_iter().collect();
        let b: ByGroup = [(vec![1, 2], 2.0), (vec![1, 3], 2.5), (vec![2, 3], f64::NAN)].into_iter().collect();
        let d = differences(&a, &b);
        assert_eq!(d.into_iter().collect::<Vec<_>>(), vec![(vec![1, 2], 1.0), (vec![1, 3], 0.5)]);
        let p = pooled(&[a.clone(), b]);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), vec![(vec![1, 2], 1.5), (vec![1, 3], 2.25)]);
        assert_eq!(seeds_of("3+1").unwrap(), vec![1, 3]);
        assert!(seeds_of("1+x").is_err());
    }
}
