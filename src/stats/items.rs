//! The mean of a per-item score over every group of `k` seeds out of `n` (single runs when
//! `k = 1`) and the `I` items of one shared test set, with an interval that includes both the
//! seed-level and the test-item component: the seeds × items generalisation of
//! [`super::crossed`] to measures over groups of runs ([`super::groups`]).
//!
//! With `y[g][i]` the score of group `g` on item `i` (1/0 for correct/wrong, or the paired
//! difference of two methods' scores on the same group and item) and `θ` the grand mean, three
//! quadratic estimates combine:
//! - `J_S`: the delete-one-seed jackknife variance of `θ` from the group means `ȳ_g.`;
//! - `J_I = s²(ȳ_.i)/I`: the delete-one-item (exact) variance from the item means;
//! - `O = (mean_i J_S(i) − J_S)/(I − 1)`, with `J_S(i)` the jackknife on item `i` alone: the
//!   seed × item interaction that both `J_S` and `J_I` contain once.
//!
//! `Var(θ) = (J_S − O)₊ + J_I`: the seed part (the jackknife of the seed effects alone, set to
//! zero when negative) and the test-item part (item effects plus the seed × item interaction
//! they carry, at its true scale). `O` is unbiased for what the interaction adds to `J_S`
//! (the jackknife is a quadratic form, and items are independent), but for `k ≥ 2` it is on
//! the jackknife's inflated scale of a group's own term, so it is never subtracted from `J_I`
//! (doing so and truncating over-covered: 99.7% for pairs of 3 seeds). For `k = 1`, `J_S`,
//! `J_I` and `O` are exactly the ANOVA mean squares over `S·I` (`MS_S`, `MS_I`, `MS_E`), so
//! the result equals [`super::crossed_mean`] whenever the latter's item component is
//! positive. The t reference takes Satterthwaite's degrees of freedom from the three estimates
//! (`n − 1`, `I − 1` and `(n − 1)(I − 1)` each), the seed part's counted even when it was
//! set to zero.

use super::groups::{check_complete, jackknife_variance, leave_one_out};
use super::t_quantile;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// A mean over groups of seeds × test items with an interval that includes both sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedsItemsMean {
    /// Seeds `n` (the replicates).
    pub n_seeds: usize,
    /// Seeds per group (1 for single runs).
    pub k: usize,
    /// Groups averaged, `C(n, k)`.
    pub groups: usize,
    /// Test items `I`.
    pub items: usize,
    /// The grand mean.
    pub mean: f64,
    /// The seed part of `Var(mean)`, `(J_S − O)₊`.
    pub seed_var: f64,
    /// The test-item part of `Var(mean)` (item effects and the seed × item interaction),
    /// `J_I`.
    pub item_var: f64,
    /// `√(seed_var + item_var)`.
    pub se: f64,
    /// Satterthwaite degrees of freedom (at least 1).
    pub df: f64,
    /// `t_{(1+level)/2, df} · se`.
    pub half_width: f64,
    /// `mean − half_width`.
    pub lo: f64,
    /// `mean + half_width`.
    pub hi: f64,
    /// Confidence level.
    pub level: f64,
}

impl SeedsItemsMean {
    /// The shares of `se²` from seeds and from test items (NaN each when `se` is 0).
    pub fn shares(&self) -> (f64, f64) {
        let total = self.se * self.se;
        if total > 0.0 {
            (self.seed_var / total, self.item_var / total)
        } else {
            (f64::NAN, f64::NAN)
        }
    }
}

/// The seeds × items mean of `values`: one `(group, scores)` per group, the groups every
/// `k`-subset of `0..n` exactly once (as [`super::all_groups`] lists them, in any order), the
/// scores one per test item in the same item order for every group. Needs `n ≥ k + 1` and at
/// least 2 items.
pub fn seeds_items_mean(n: usize, values: &[(Vec<usize>, Vec<f64>)], level: f64) -> Result<SeedsItemsMean> {
    let Some((first, first_scores)) = values.first() else {
        bail!("no group scores to summarise; evaluate every group of seeds first");
    };
    let (k, items) = (first.len(), first_scores.len());
    if n < k + 1 {
        bail!("the seeds × items interval over groups of {k} seeds needs at least {} seeds, got {n}; add seeds", k + 1);
    }
    if items < 2 {
        bail!("a seeds × items interval needs at least 2 test items, got {items}");
    }
    if values.iter().any(|(_, y)| y.len() != items) {
        bail!("every group must be scored on the same {items} test items; the score lists have different lengths");
    }
    if !(level > 0.0 && level < 1.0) {
        bail!("confidence level {level} must be in (0, 1), e.g. 0.95");
    }
    let nf = items as f64;
    let group_means: Vec<f64> = values.iter().map(|(_, y)| y.iter().sum::<f64>() / nf).collect();
    let tagged: Vec<(Vec<usize>, f64)> = values.iter().zip(&group_means).map(|((g, _), m)| (g.clone(), *m)).collect();
    check_complete(n, k, &tagged)?;
    if values.iter().flat_map(|(_, y)| y).any(|v| !v.is_finite()) {
        bail!("a score is not finite; drop failed runs before summarising");
    }
    let groups: Vec<&[usize]> = values.iter().map(|(g, _)| g.as_slice()).collect();
    let kept = leave_one_out(n, &groups);
    let gf = values.len() as f64;
    let mean = group_means.iter().sum::<f64>() / gf;
    let j_seed = jackknife_variance(&kept, &group_means);
    let item_means: Vec<f64> = (0..items).map(|i| values.iter().map(|(_, y)| y[i]).sum::<f64>() / gf).collect();
    let j_item = item_means.iter().map(|m| (m - mean).powi(2)).sum::<f64>() / (nf - 1.0) / nf;
    let mut column = vec![0.0; values.len()];
    let mut per_item = 0.0;
    for i in 0..items {
        column.iter_mut().zip(values).for_each(|(c, (_, y))| *c = y[i]);
        per_item += jackknife_variance(&kept, &column);
    }
    let interaction = (per_item / nf - j_seed) / (nf - 1.0);
    let seed_var = (j_seed - interaction).max(0.0);
    let item_var = j_item;
    // Satterthwaite over every estimate the variance is formed from, the seed part's included
    // when it was set to zero (its zero is an estimate, not a known value: counting only J_I
    // then gave df ≈ I and 92.5% coverage for paired differences of 3 seeds).
    let (df_seed, df_item) = ((n - 1) as f64, nf - 1.0);
    let terms = [(j_item, df_item), (j_seed, df_seed), (interaction, df_seed * df_item)];
    let total: f64 = seed_var + item_var;
    let se = total.sqrt();
    let denom: f64 = terms.iter().map(|(j, df)| j * j / df).sum();
    let df = if denom > 0.0 { (total * total / denom).max(1.0) } else { df_seed };
    let half_width = t_quantile(df, 0.5 + level / 2.0)? * se;
    Ok(SeedsItemsMean {
        n_seeds: n,
        k,
        groups: values.len(),
        items,
        mean,
        seed_var,
        item_var,
        se,
        df,
        half_width,
        lo: mean - half_width,
        hi: mean + half_width,
        level,
    })
}

/// The test-item standard error of the accuracy difference `b − a` of two classifiers scored
/// on the same `n` items (`correct` flags): `√((d − Δ²)/n)`, with `d` the share of items on
/// which they disagree and `Δ` the accuracy difference (the plug-in binomial formula; the
/// unbiased sample version has `n − 1`).
pub fn paired_item_se(a: &[bool], b: &[bool]) -> Result<f64> {
    if a.len() != b.len() || a.is_empty() {
        bail!("a paired item SE needs both classifiers scored on the same items; got {} and {}", a.len(), b.len());
    }
    let n = a.len() as f64;
    let d = a.iter().zip(b).filter(|(x, y)| x != y).count() as f64 / n;
    let delta = (b.iter().filter(|x| **x).count() as f64 - a.iter().filter(|x| **x).count() as f64) / n;
    Ok(((d - delta * delta) / n).max(0.0).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{all_groups, crossed_mean, mean_ci};
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};

    fn singles(y: &[Vec<f64>]) -> Vec<(Vec<usize>, Vec<f64>)> {
        y.iter().enumerate().map(|(s, r)| (vec![s], r.clone())).collect()
    }

    #[test]
    fn single_runs_equal_the_crossed_anova() {
        // k = 1: J_S, J_I and O are MS_S, MS_I and MS_E over S·I, so the interval is
        // crossed_mean's, on a table where all three components are positive.
        let y = vec![
            vec![1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0],
            vec![1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
            vec![0.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0],
            vec![1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 1.0],
        ];
        let c = crossed_mean(&y, 0.95).unwrap();
        let s = seeds_items_mean(4, &singles(&y), 0.95).unwrap();
        assert!(c.seed_var > 0.0 && c.item_var > 0.0, "the example exercises every component");
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * (1.0 + a.abs());
        assert!(close(s.mean, c.mean) && close(s.se, c.se) && close(s.df, c.df), "{s:?} vs {c:?}");
        assert!(close(s.lo, c.lo) && close(s.hi, c.hi));
        // The components scale: crossed's σ² are per-observation, these are of the mean; the
        // item part carries the interaction.
        assert!(close(s.seed_var, c.seed_var / 4.0));
        assert!(close(s.item_var, c.item_var / 7.0 + c.residual_var / 28.0));
        let (a, b) = s.shares();
        assert!(close(a + b, 1.0));
        // The 2 × 2 table of crossed.rs by hand: SE 0.25, df 1.
        let t = seeds_items_mean(2, &singles(&[vec![1.0, 0.0], vec![1.0, 1.0]]), 0.95).unwrap();
        assert!((t.se - 0.25).abs() < 1e-15 && (t.df - 1.0).abs() < 1e-12, "{t:?}");
    }

    #[test]
    fn hand_computed_pairs_of_three_seeds() {
        // Pairs of 3 seeds on 2 items: (01) [1, 0], (02) [1, 1], (12) [0, 0].
        // Group means 0.5, 1, 0, mean 0.5; leaving out seed 0 keeps (12) = 0, seed 1 keeps
        // (02) = 1, seed 2 keeps (01) = 0.5: J_S = 2/3·(0.25 + 0.25 + 0) = 1/3.
        // Item means 2/3, 1/3: J_I = ((1/6)² + (1/6)²)/1/2 = 1/36.
        // Item 0 alone: θ₋ₛ = 0, 1, 1 → J_S(0) = 2/3·(4/9 + 1/9 + 1/9) = 4/9; item 1: 0, 1, 0 → 4/9.
        // O = (4/9 − 1/3)/1 = 1/9; seed part 1/3 − 1/9 = 2/9; item part 1/36; SE² = 1/4.
        let values = vec![(vec![0, 1], vec![1.0, 0.0]), (vec![0, 2], vec![1.0, 1.0]), (vec![1, 2], vec![0.0, 0.0])];
        let s = seeds_items_mean(3, &values, 0.95).unwrap();
        assert_eq!((s.groups, s.k, s.items), (3, 2, 2));
        assert!((s.mean - 0.5).abs() < 1e-15);
        assert!((s.seed_var - 2.0 / 9.0).abs() < 1e-12 && (s.item_var - 1.0 / 36.0).abs() < 1e-12, "{s:?}");
        assert!((s.se - 0.5).abs() < 1e-12);
        // Satterthwaite on J_S (df 2), −O (df 2) and J_I (df 1):
        // (1/4)² / ((1/3)²/2 + (1/9)²/2 + (1/36)²/1) = (1/16)/(81/1296) = 1.
        assert!((s.df - 1.0).abs() < 1e-9, "{}", s.df);
    }

    #[test]
    fn paired_item_se_by_hand_and_as_the_item_component() {
        // a = 11001, b = 10111: they disagree on items 2, 3, 4 (d = 0.6); accuracies 0.6 and
        // 0.8 (Δ = 0.2): SE = √((0.6 − 0.04)/5) = √0.112.
        let a = [true, true, false, false, true];
        let b = [true, false, true, true, true];
        let se = paired_item_se(&a, &b).unwrap();
        assert!((se - 0.112f64.sqrt()).abs() < 1e-15, "{se}");
        assert!((paired_item_se(&b, &a).unwrap() - se).abs() < 1e-15);
        assert_eq!(paired_item_se(&a, &a).unwrap(), 0.0);
        assert!(paired_item_se(&a, &b[..4]).is_err());
        // Two seeds that both predict exactly so: no seed part and no interaction; the item
        // part of the paired difference is the same formula with the unbiased n − 1.
        let d: Vec<f64> = a.iter().zip(&b).map(|(x, y)| f64::from(u8::from(*y)) - f64::from(u8::from(*x))).collect();
        let s = seeds_items_mean(2, &singles(&[d.clone(), d]), 0.95).unwrap();
        assert!((s.mean - 0.2).abs() < 1e-15 && s.seed_var == 0.0);
        assert!((s.se - se * (5.0f64 / 4.0).sqrt()).abs() < 1e-12, "{} vs {se}", s.se);
        assert!((s.df - 4.0).abs() < 1e-9);
    }

    #[test]
    fn refuses_bad_tables() {
        let pairs = |y: Vec<Vec<f64>>| -> Vec<(Vec<usize>, Vec<f64>)> {
            all_groups(3, 2).unwrap().into_iter().zip(y).collect()
        };
        assert!(seeds_items_mean(3, &[], 0.95).unwrap_err().to_string().contains("no group"));
        let short = pairs(vec![vec![1.0, 0.0], vec![1.0], vec![0.0, 1.0]]);
        assert!(seeds_items_mean(3, &short, 0.95).unwrap_err().to_string().contains("same 2 test items"));
        let one_item = pairs(vec![vec![1.0], vec![1.0], vec![0.0]]);
        assert!(seeds_items_mean(3, &one_item, 0.95).unwrap_err().to_string().contains("2 test items"));
        let missing = pairs(vec![vec![1.0, 0.0], vec![1.0, 1.0]]);
        assert!(seeds_items_mean(3, &missing, 0.95).unwrap_err().to_string().contains("2 of the 3"));
        let nan = pairs(vec![vec![1.0, f64::NAN], vec![1.0, 1.0], vec![0.0, 0.0]]);
        assert!(seeds_items_mean(3, &nan, 0.95).is_err());
        assert!(seeds_items_mean(2, &[(vec![0, 1], vec![1.0, 0.0])], 0.95)
            .unwrap_err()
            .to_string()
            .contains("at least 3"));
    }

    /// The simulated world: seed skill `a_s ~ N(0, 0.03²)`, a seed × item effect
    /// `c_si ~ N(0, 0.1²)`, item difficulty `b_i ~ N(0, 0.2²)`; a group `g` answers item `i`
    /// correctly with probability `clamp(base + mean_{s∈g}(a_s + c_si) + b_i)`.
    struct World {
        skill: Normal<f64>,
        inter: Normal<f64>,
        difficulty: Normal<f64>,
    }

    fn world() -> World {
        World {
            skill: Normal::new(0.0, 0.03).unwrap(),
            inter: Normal::new(0.0, 0.1).unwrap(),
            difficulty: Normal::new(0.0, 0.2).unwrap(),
        }
    }

    fn prob(base: f64, mean_seed: f64, item: f64) -> f64 {
        (base + mean_seed + item).clamp(0.0, 1.0)
    }

    /// The true mean accuracy of a `k`-group at `base` with an extra item effect
    /// `N(0, gain_sd²)` (expectation over every effect), by a large fixed draw.
    fn truth(w: &World, k: usize, base: f64, gain_sd: f64) -> f64 {
        let gain = Normal::new(0.0, gain_sd).unwrap();
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let m = 400_000;
        (0..m)
            .map(|_| {
                let s = (0..k).map(|_| w.skill.sample(&mut r) + w.inter.sample(&mut r)).sum::<f64>() / k as f64;
                prob(base, s, w.difficulty.sample(&mut r) + gain.sample(&mut r))
            })
            .sum::<f64>()
            / m as f64
    }

    /// Coverage of the true mean over `grids` simulated grids of `n` seeds, all groups of `k`,
    /// `items` shared items. With `paired`, the score is the difference of a variant (base
    /// 0.72, its own seed effects, an item-specific gain `N(0, 0.05²)`) and a baseline (base
    /// 0.7) answering from one shared uniform per group and item (positively correlated).
    fn coverage(n: usize, k: usize, items: usize, paired: bool, grids: usize, seed: u64) -> f64 {
        let w = world();
        let gain = Normal::new(0.0, 0.05).unwrap();
        let target = truth(&w, k, 0.72, 0.05) - truth(&w, k, 0.7, 0.0);
        let target = if paired { target } else { truth(&w, k, 0.7, 0.0) };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let groups = all_groups(n, k).unwrap();
        let mut covered = 0;
        for _ in 0..grids {
            let b: Vec<f64> = (0..items).map(|_| w.difficulty.sample(&mut rng)).collect();
            let u: Vec<f64> = (0..items).map(|_| gain.sample(&mut rng)).collect();
            // Seed effects (skill plus interaction) per item, for the baseline and the variant.
            let mut effects = || -> Vec<Vec<f64>> {
                (0..n)
                    .map(|_| {
                        let a = w.skill.sample(&mut rng);
                        (0..items).map(|_| a + w.inter.sample(&mut rng)).collect()
                    })
                    .collect()
            };
            let (base_fx, var_fx) = (effects(), effects());
            let values: Vec<(Vec<usize>, Vec<f64>)> = groups
                .iter()
                .map(|g| {
                    let scores = (0..items)
                        .map(|i| {
                            let mean_of = |fx: &[Vec<f64>]| g.iter().map(|&s| fx[s][i]).sum::<f64>() / k as f64;
                            let draw: f64 = rng.random();
                            let base = f64::from(u8::from(draw < prob(0.7, mean_of(&base_fx), b[i])));
                            if paired {
                                f64::from(u8::from(draw < prob(0.72, mean_of(&var_fx), b[i] + u[i]))) - base
                            } else {
                                base
                            }
                        })
                        .collect();
                    (g.clone(), scores)
                })
                .collect();
            let est = seeds_items_mean(n, &values, 0.95).unwrap();
            covered += usize::from(est.lo <= target && target <= est.hi);
        }
        covered as f64 / grids as f64
    }

    #[test]
    fn seeds_items_intervals_cover_by_simulation() {
        // 2,000 grids per setting (Monte Carlo SE of a 95% coverage: 0.5 points) on a shared
        // test set of 100 items: single runs, pairs and triples at n = 3, 5, 10 seeds (triples
        // from 5: the jackknife needs n ≥ k + 1), for the accuracy and for a paired difference.
        // The true mean for the difference includes the item-specific gain's clamp effects;
        // it is the expectation over seeds, items and answers, as the interval claims.
        // Single runs and 10 seeds cover 93–97%; groups of fewer seeds are conservative (up to
        // 99%: the seed part's degrees of freedom count the jackknife's whole mean square, of
        // which a group's own noise, removed by O, is a large share), never below 93%.
        let mut failed = Vec::new();
        for paired in [false, true] {
            for (n, k) in [(3, 1), (5, 1), (10, 1), (3, 2), (5, 2), (10, 2), (5, 3), (10, 3)] {
                let c = coverage(n, k, 100, paired, 2000, 100 + 10 * n as u64 + k as u64 + u64::from(paired));
                eprintln!("seeds × items: n {n}, k {k}, paired {paired}: coverage {c}");
                let top = if k == 1 || n == 10 { 0.97 } else { 0.995 };
                if !(0.93..=top).contains(&c) {
                    failed.push(format!("n {n}, k {k}, paired {paired}: coverage {c}"));
                }
            }
        }
        assert!(failed.is_empty(), "{failed:?}");
    }

    #[test]
    fn per_replicate_draws_cover_with_the_seed_level_t() {
        // data_draw = "replicate": every seed has its own test set (and its own shots, whose
        // effect d_s ~ N(0, 0.03²) adds to the seed's), so the per-seed accuracies are
        // independent replicates of everything random and the plain t over seeds covers.
        let w = world();
        let shots = Normal::new(0.0, 0.03).unwrap();
        let truth = {
            let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(1);
            let m = 400_000;
            (0..m)
                .map(|_| {
                    let s = w.skill.sample(&mut r) + shots.sample(&mut r) + w.inter.sample(&mut r);
                    prob(0.7, s, w.difficulty.sample(&mut r))
                })
                .sum::<f64>()
                / m as f64
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for n in [3, 5, 10] {
            let grids = 2000;
            let mut covered = 0;
            for _ in 0..grids {
                let acc: Vec<f64> = (0..n)
                    .map(|_| {
                        let a = w.skill.sample(&mut rng) + shots.sample(&mut rng);
                        let correct = (0..100)
                            .filter(|_| {
                                let p = prob(0.7, a + w.inter.sample(&mut rng), w.difficulty.sample(&mut rng));
                                rng.random::<f64>() < p
                            })
                            .count();
                        correct as f64 / 100.0
                    })
                    .collect();
                let ci = mean_ci(&acc).unwrap();
                covered += usize::from(ci.lo <= truth && truth <= ci.hi);
            }
            let c = covered as f64 / grids as f64;
            eprintln!("per-replicate draws: n {n}: seed-level t coverage {c}");
            assert!((0.93..=0.97).contains(&c), "n {n}: coverage {c}");
        }
    }
}
