//! Machinery shared by the sampling estimators: running moments, the
//! convergence rule and the per-run evaluation ledger.

use anyhow::{bail, Result};

use crate::shapley::coalition::{Coalition, MAX_PLAYERS};
use crate::shapley::game::Memo;

/// Samples (permutations, draws or antithetic pairs) an estimator collects
/// before it checks the early-stopping rule for the first time.
pub const MIN_SAMPLES_FOR_STOP: usize = 8;

/// Covert & Lee's convergence ratio `max_i SE_i / (max_i φ_i − min_i φ_i)`.
///
/// It is 0 when every standard error is 0, infinite when the values span no
/// range but some error is positive, and NaN when an error is NaN (fewer
/// than two samples).
pub fn convergence_ratio(values: &[f64], std_errors: &[f64]) -> f64 {
    let max_se =
        std_errors.iter().copied().fold(0.0f64, |a, b| if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) });
    if max_se.is_nan() || max_se == 0.0 {
        return max_se;
    }
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let range = hi - lo;
    if range > 0.0 {
        max_se / range
    } else {
        f64::INFINITY
    }
}

/// Errors unless the optional target precision is a positive finite number.
pub(crate) fn check_target(target: Option<f64>) -> Result<()> {
    if let Some(t) = target {
        if !(t.is_finite() && t > 0.0) {
            bail!("target precision {t} must be a positive number such as 0.01 (or none to use the whole budget)");
        }
    }
    Ok(())
}

/// Errors unless a sampling estimator can run on `n` players.
pub(crate) fn check_sampling_players(n: usize) -> Result<()> {
    if n == 0 || n > MAX_PLAYERS {
        bail!("sampling estimators need 1..={MAX_PLAYERS} players but the game has {n}");
    }
    Ok(())
}

/// Per-player running mean and variance (Welford), one sample = one vector.
#[derive(Debug, Clone)]
pub(crate) struct RunningStats {
    count: usize,
    mean: Vec<f64>,
    m2: Vec<f64>,
}

impl RunningStats {
    pub(crate) fn new(n: usize) -> Self {
        RunningStats { count: 0, mean: vec![0.0; n], m2: vec![0.0; n] }
    }

    pub(crate) fn push(&mut self, sample: &[f64]) {
        self.count += 1;
        let k = self.count as f64;
        for ((m, m2), &x) in self.mean.iter_mut().zip(&mut self.m2).zip(sample) {
            let delta = x - *m;
            *m += delta / k;
            *m2 += delta * (x - *m);
        }
    }

    pub(crate) fn count(&self) -> usize {
        self.count
    }

    pub(crate) fn means(&self) -> Vec<f64> {
        self.mean.clone()
    }

    /// Sample standard deviation / sqrt(count); NaN below two samples.
    pub(crate) fn std_errors(&self) -> Vec<f64> {
        if self.count < 2 {
            return vec![f64::NAN; self.mean.len()];
        }
        let k = self.count as f64;
        self.m2.iter().map(|m2| (m2.max(0.0) / (k - 1.0) / k).sqrt()).collect()
    }

    /// Whether the early-stopping rule is met for `target`.
    pub(crate) fn reached(&self, target: Option<f64>) -> bool {
        match target {
            Some(t) if self.count >= MIN_SAMPLES_FOR_STOP => convergence_ratio(&self.mean, &self.std_errors()) < t,
            _ => false,
        }
    }
}

/// The evaluations one estimator run may spend: at most `budget` new
/// distinct evaluations from the memo's state at the start of the run.
pub(crate) struct Ledger<'m, 'a> {
    memo: &'m Memo<'a>,
    start: usize,
    budget: usize,
}

impl<'m, 'a> Ledger<'m, 'a> {
    /// Budget = `min(budget, memo.remaining())`.
    pub(crate) fn new(memo: &'m Memo<'a>, budget: usize) -> Self {
        Ledger { memo, start: memo.evaluations(), budget: budget.min(memo.remaining()) }
    }

    pub(crate) fn budget(&self) -> usize {
        self.budget
    }

    pub(crate) fn used(&self) -> usize {
        self.memo.evaluations().saturating_sub(self.start)
    }

    /// Values of `batch`, or `None` when it does not fit what is left.
    pub(crate) fn try_values(&self, batch: &[Coalition]) -> Result<Option<Vec<f64>>> {
        let left = self.budget.saturating_sub(self.used());
        self.memo.try_values_capped(batch, left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn running_stats_match_two_pass_formulas() {
        let xs = [[1.0, 5.0], [2.0, 5.0], [4.0, 5.0], [9.0, 5.0]];
        let mut s = RunningStats::new(2);
        assert!(s.std_errors()[0].is_nan());
        for x in &xs {
            s.push(x);
        }
        assert_eq!(s.count(), 4);
        assert!((s.means()[0] - 4.0).abs() < 1e-15);
        // Sample variance of (1, 2, 4, 9) is 38/3; SE = sqrt(38/3/4).
        assert!((s.std_errors()[0] - (38.0f64 / 12.0).sqrt()).abs() < 1e-14);
        assert_eq!(s.std_errors()[1], 0.0);
    }

    #[test]
    fn convergence_ratio_cases() {
        assert_eq!(convergence_ratio(&[0.0, 1.0], &[0.1, 0.05]), 0.1);
        assert_eq!(convergence_ratio(&[0.5, 0.5], &[0.0, 0.0]), 0.0);
        assert_eq!(convergence_ratio(&[0.5, 0.5], &[0.1, 0.0]), f64::INFINITY);
        assert!(convergence_ratio(&[0.0, 1.0], &[f64::NAN, 0.1]).is_nan());
        assert!(check_target(Some(0.0)).is_err());
        assert!(check_target(Some(f64::NAN)).is_err());
        assert!(check_target(Some(0.05)).is_ok() && check_target(None).is_ok());
    }
}
