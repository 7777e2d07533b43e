//! Summary statistics over seeds: mean with a Student-t confidence interval, the paired t-test
//! and Holm's adjustment (this file); measures over groups of runs with the delete-one-seed
//! jackknife ([`groups`]); the exact sign-flip test for few replicates ([`sign_flip`]); the
//! crossed seeds × test-items variance of a mean accuracy on a shared test set ([`crossed`]),
//! and its generalisation to measures over groups of runs ([`items`]).
//! The design behind them (what varies, what is a replicate) is in `docs/statistics.md`.

pub mod crossed;
pub mod groups;
pub mod items;
pub mod ols;
pub mod sign_flip;

pub use crossed::{crossed_mean, CrossedMean};
pub use groups::{all_groups, group_jackknife, GroupEstimate};
pub use items::{paired_item_se, seeds_items_mean, SeedsItemsMean};
pub use sign_flip::sign_flip_p;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean of a sample with a two-sided Student-t confidence interval.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MeanCi {
    /// Number of samples.
    pub n: usize,
    /// Sample mean.
    pub mean: f64,
    /// Sample standard deviation (denominator `n − 1`); NaN for `n = 1`.
    pub std: f64,
    /// `t_{(1+level)/2, n−1} · std / √n`; NaN for `n = 1` (no spread can be estimated from one
    /// sample, so the interval is undefined rather than zero-width).
    pub half_width: f64,
    /// `mean − half_width` (NaN for `n = 1`).
    pub lo: f64,
    /// `mean + half_width` (NaN for `n = 1`).
    pub hi: f64,
    /// Confidence level in `(0, 1)`, e.g. 0.95.
    pub level: f64,
}

/// The `p`-quantile of Student's t with `df > 0` degrees of freedom.
pub fn t_quantile(df: f64, p: f64) -> Result<f64> {
    if !(df.is_finite() && df > 0.0) {
        bail!("Student-t degrees of freedom {df} must be positive and finite");
    }
    if !(p > 0.0 && p < 1.0) {
        bail!("quantile probability {p} must be in (0, 1)");
    }
    let dist = StudentsT::new(0.0, 1.0, df).map_err(|e| anyhow::anyhow!("Student-t with df {df}: {e}"))?;
    Ok(dist.inverse_cdf(p))
}

/// Mean with a 95% Student-t confidence interval. See [`mean_ci_level`].
pub fn mean_ci(samples: &[f64]) -> Result<MeanCi> {
    mean_ci_level(samples, 0.95)
}

/// Mean with a two-sided Student-t confidence interval at `level` (e.g. 0.95). Errors on an
/// empty sample, non-finite samples or a level outside `(0, 1)`. With one sample, `std`,
/// `half_width`, `lo` and `hi` are NaN.
pub fn mean_ci_level(samples: &[f64], level: f64) -> Result<MeanCi> {
    if samples.is_empty() {
        bail!("no samples to summarise; pass at least one value (two for a confidence interval)");
    }
    if !(level > 0.0 && level < 1.0) {
        bail!("confidence level {level} must be in (0, 1), e.g. 0.95");
    }
    if let Some(bad) = samples.iter().find(|v| !v.is_finite()) {
        bail!("sample value {bad} is not finite; drop failed runs before summarising");
    }
    let n = samples.len();
    let mean = samples.iter().sum::<f64>() / n as f64;
    if n == 1 {
        return Ok(MeanCi { n, mean, std: f64::NAN, half_width: f64::NAN, lo: f64::NAN, hi: f64::NAN, level });
    }
    let var = samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    let t = t_quantile((n - 1) as f64, 0.5 + level / 2.0)?;
    let half_width = t * std / (n as f64).sqrt();
    Ok(MeanCi { n, mean, std, half_width, lo: mean - half_width, hi: mean + half_width, level })
}

/// A paired comparison of two samples measured on the same units (for example the same seeds):
/// the mean of the differences `b − a`, its Student-t confidence interval and the two-sided
/// p-value of the paired t-test of a zero mean difference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairedTest {
    /// Number of pairs.
    pub n: usize,
    /// Mean of `b − a`, with its interval (NaN bounds for one pair).
    pub diff: MeanCi,
    /// The t statistic `mean / (std / √n)`; ±∞ when every difference is equal and non-zero,
    /// NaN for one pair or when every difference is zero.
    pub t: f64,
    /// Two-sided p-value `2·P(T_{n−1} > |t|)`; 1 when every difference is zero, 0 when they
    /// are all equal and non-zero, NaN for one pair.
    pub p_value: f64,
}

/// The paired t-test of `b − a` over pairs `(a[i], b[i])` at the 95% level. Errors when the
/// lengths differ, there are no pairs or a value is not finite.
pub fn paired_t(a: &[f64], b: &[f64]) -> Result<PairedTest> {
    if a.len() != b.len() {
        bail!("a paired comparison needs equally many values on both sides; got {} and {}", a.len(), b.len());
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| y - x).collect();
    let diff = mean_ci(&d)?;
    let n = d.len();
    if n < 2 {
        return Ok(PairedTest { n, diff, t: f64::NAN, p_value: f64::NAN });
    }
    let se = diff.std / (n as f64).sqrt();
    let (t, p_value) = if se == 0.0 {
        if diff.mean == 0.0 {
            (f64::NAN, 1.0)
        } else {
            (diff.mean.signum() * f64::INFINITY, 0.0)
        }
    } else {
        let t = diff.mean / se;
        let dist = StudentsT::new(0.0, 1.0, (n - 1) as f64)
            .map_err(|e| anyhow::anyhow!("Student-t with df {}: {e}", n - 1))?;
        (t, (2.0 * (1.0 - dist.cdf(t.abs()))).clamp(0.0, 1.0))
    };
    Ok(PairedTest { n, diff, t, p_value })
}

/// Holm–Bonferroni adjusted p-values of a family of tests, in the input order: the k-th
/// smallest p (1-based) becomes `max_{j≤k} min(1, (m − j + 1)·p_(j))`. Rejecting where the
/// adjusted value is below α controls the family-wise error rate at α. NaN entries (tests
/// that could not be made) stay NaN and do not count towards the family size `m`.
pub fn holm(p: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..p.len()).filter(|&i| !p[i].is_nan()).collect();
    order.sort_by(|&i, &j| p[i].total_cmp(&p[j]).then(i.cmp(&j)));
    let m = order.len();
    let mut out = vec![f64::NAN; p.len()];
    let mut running: f64 = 0.0;
    for (k, &i) in order.iter().enumerate() {
        running = running.max(((m - k) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_t_quantiles() {
        assert!((t_quantile(4.0, 0.975).unwrap() - 2.776445).abs() < 1e-6);
        assert!((t_quantile(1.0, 0.975).unwrap() - 12.706205).abs() < 1e-5);
        assert!((t_quantile(9.0, 0.95).unwrap() - 1.833113).abs() < 1e-6);
        assert!(t_quantile(0.0, 0.5).is_err());
        assert!(t_quantile(3.0, 1.0).is_err());
    }

    #[test]
    fn hand_computed_interval() {
        // Samples 1..5: mean 3, sample variance 2.5, std √2.5; half-width = 2.776445·√2.5/√5.
        let ci = mean_ci(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(ci.n, 5);
        assert!((ci.mean - 3.0).abs() < 1e-12);
        assert!((ci.std - 2.5f64.sqrt()).abs() < 1e-12);
        let hw = 2.776445 * (0.5f64).sqrt();
        assert!((ci.half_width - hw).abs() < 1e-6, "{}", ci.half_width);
        assert!((ci.lo - (3.0 - hw)).abs() < 1e-6 && (ci.hi - (3.0 + hw)).abs() < 1e-6);
        // 90% level with df = 4: t = 2.131847.
        let ci90 = mean_ci_level(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.9).unwrap();
        assert!((ci90.half_width - 2.131847 * 0.5f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn degenerate_samples() {
        let one = mean_ci(&[0.7]).unwrap();
        assert_eq!((one.n, one.mean), (1, 0.7));
        assert!(one.std.is_nan() && one.half_width.is_nan() && one.lo.is_nan() && one.hi.is_nan());
        let same = mean_ci(&[2.0, 2.0, 2.0]).unwrap();
        assert_eq!((same.half_width, same.lo, same.hi), (0.0, 2.0, 2.0));
        assert!(mean_ci(&[]).unwrap_err().to_string().contains("no samples"));
        assert!(mean_ci_level(&[1.0, 2.0], 1.0).is_err());
        assert!(mean_ci(&[1.0, f64::INFINITY]).is_err());
    }

    #[test]
    fn paired_t_matches_a_hand_computed_case() {
        // b − a = [1, 3, 2, 4, 5]: mean 3, std √2.5,
        // t = 3 / (√2.5/√5) = 3√2 = 4.242641; two-sided p with df 4 = 0.013236 (scipy.stats.ttest_rel).
        let a = [0.0, 1.0, 2.0, 3.0, 4.0];
        let b = [1.0, 4.0, 4.0, 7.0, 9.0];
        let t = paired_t(&a, &b).unwrap();
        assert_eq!(t.n, 5);
        assert!((t.diff.mean - 3.0).abs() < 1e-12);
        assert!((t.t - 3.0 * 2f64.sqrt()).abs() < 1e-9, "{}", t.t);
        assert!((t.p_value - 0.013236).abs() < 1e-5, "{}", t.p_value);
        // Swapping the sides flips the sign and keeps p.
        let s = paired_t(&b, &a).unwrap();
        assert!((s.t + t.t).abs() < 1e-12 && (s.p_value - t.p_value).abs() < 1e-15);
        // Degenerate cases.
        assert_eq!(paired_t(&[1.0, 2.0], &[1.0, 2.0]).unwrap().p_value, 1.0);
        assert_eq!(paired_t(&[1.0, 2.0], &[2.0, 3.0]).unwrap().p_value, 0.0);
        assert!(paired_t(&[1.0], &[2.0]).unwrap().p_value.is_nan());
        assert!(paired_t(&[1.0], &[2.0, 3.0]).unwrap_err().to_string().contains("equally many"));
    }

    #[test]
    fn holm_adjusts_in_step_down_order() {
        // p = (0.01, 0.04, 0.03, NaN): m = 3; sorted 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 → max(0.06, 0.04).
        let adj = holm(&[0.01, 0.04, 0.03, f64::NAN]);
        assert!((adj[0] - 0.03).abs() < 1e-12);
        assert!((adj[2] - 0.06).abs() < 1e-12);
        assert!((adj[1] - 0.06).abs() < 1e-12);
        assert!(adj[3].is_nan());
        assert_eq!(holm(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }
}
