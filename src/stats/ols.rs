//! Ordinary least squares for the matched-fit comparisons: a handful of columns (a method
//! indicator, the endpoint accuracy, one intercept per task), solved by the normal equations
//! with Gaussian elimination and partial pivoting. Hand-written because the regressions are tiny
//! (at most a few dozen columns) and the project has no direct linear-algebra dependency in f64;
//! the standard errors come from the delete-one-seed jackknife ([`jackknife_coefficients`]), not
//! from the OLS formula, since rows that share a seed are not independent.

use super::t_quantile;
use anyhow::{bail, Result};

/// The least-squares coefficients `β` of `y ≈ X β`, `x` given by rows. Errors when the rows
/// are ragged, there are fewer rows than columns, a value is not finite, or the columns are
/// collinear (the design does not identify every coefficient).
pub fn ols(x: &[Vec<f64>], y: &[f64]) -> Result<Vec<f64>> {
    let Some(first) = x.first() else { bail!("no rows to fit; pass at least as many rows as columns") };
    let p = first.len();
    if x.len() != y.len() || x.iter().any(|r| r.len() != p) {
        bail!(
            "the design has {} rows of unequal length or not one per response ({}); pass one row per value",
            x.len(),
            y.len()
        );
    }
    if x.len() < p || p == 0 {
        bail!("{} rows cannot identify {p} coefficients; pass more rows", x.len());
    }
    if x.iter().flatten().chain(y).any(|v| !v.is_finite()) {
        bail!("a value of the regression is not finite; drop failed runs first");
    }
    // Normal equations [XᵀX | Xᵀy], solved in place.
    let mut a = vec![vec![0.0; p + 1]; p];
    for (row, &yi) in x.iter().zip(y) {
        for i in 0..p {
            for j in 0..p {
                a[i][j] += row[i] * row[j];
            }
            a[i][p] += row[i] * yi;
        }
    }
    let scale = (0..p).map(|i| a[i][i].abs()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    for col in 0..p {
        let pivot = (col..p).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs())).unwrap_or(col);
        if a[pivot][col].abs() <= 1e-12 * scale {
            bail!("the regression's columns are collinear (column {col}); the design cannot separate the method from the other terms");
        }
        a.swap(col, pivot);
        let pivot_row = a[col].clone();
        for (_, row) in a.iter_mut().enumerate().filter(|(i, _)| *i != col) {
            let f = row[col] / pivot_row[col];
            for (x, &pv) in row.iter_mut().zip(&pivot_row).skip(col) {
                *x -= f * pv;
            }
        }
    }
    Ok(a.iter().enumerate().map(|(i, row)| row[p] / row[i]).collect())
}

/// One coefficient with its delete-one-seed jackknife interval.
#[derive(Clone, Debug, PartialEq)]
pub struct Coefficient {
    /// The full-data estimate.
    pub estimate: f64,
    /// Jackknife standard error.
    pub se: f64,
    /// Degrees of freedom, seeds − 1.
    pub df: f64,
    /// Lower end of the 95% interval.
    pub lo: f64,
    /// Upper end of the 95% interval.
    pub hi: f64,
    /// Two-sided p-value of a zero coefficient (t on `df`); NaN when `se` is 0.
    pub p: f64,
}

/// The OLS coefficients of `y ≈ X β` with delete-one-seed jackknife standard errors: `seeds[r]`
/// lists the seeds row `r` depends on; deleting seed `s` drops every row that names it and
/// refits. `SE² = (n−1)/n · Σₛ (β₋ₛ − β̄)²`, t on `n − 1` df. Errors when a refit fails (a
/// seed whose deletion leaves the design unidentified) or there are fewer than 3 seeds.
pub fn jackknife_coefficients(x: &[Vec<f64>], y: &[f64], seeds: &[Vec<u64>]) -> Result<Vec<Coefficient>> {
    let full = ols(x, y)?;
    let mut all: Vec<u64> = seeds.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    let n = all.len();
    if n < 3 {
        bail!("{n} seed(s): the jackknife over seeds needs at least 3; add seeds");
    }
    let mut leave_out = Vec::with_capacity(n);
    for s in &all {
        let keep: Vec<usize> = (0..y.len()).filter(|&r| !seeds[r].contains(s)).collect();
        let xs: Vec<Vec<f64>> = keep.iter().map(|&r| x[r].clone()).collect();
        let ys: Vec<f64> = keep.iter().map(|&r| y[r]).collect();
        leave_out.push(ols(&xs, &ys).map_err(|e| anyhow::anyhow!("without seed {s}: {e}"))?);
    }
    let df = (n - 1) as f64;
    let tq = t_quantile(df, 0.975)?;
    let dist = statrs::distribution::StudentsT::new(0.0, 1.0, df).map_err(|e| anyhow::anyhow!("Student-t: {e}"))?;
    Ok((0..full.len())
        .map(|j| {
            let centre = leave_out.iter().map(|b| b[j]).sum::<f64>() / n as f64;
            let ss: f64 = leave_out.iter().map(|b| (b[j] - centre).powi(2)).sum();
            let se = ((n - 1) as f64 / n as f64 * ss).sqrt();
            let p = if se > 0.0 {
                use statrs::distribution::ContinuousCDF;
                (2.0 * (1.0 - dist.cdf((full[j] / se).abs()))).clamp(0.0, 1.0)
            } else {
                f64::NAN
            };
            Coefficient { estimate: full[j], se, df, lo: full[j] - tq * se, hi: full[j] + tq * se, p }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_exact_coefficients_and_the_closed_form_slope() {
        // y = 2 + 3·x exactly.
        let x: Vec<Vec<f64>> = [0.0, 1.0, 2.0, 5.0].iter().map(|&v| vec![1.0, v]).collect();
        let y: Vec<f64> = [0.0, 1.0, 2.0, 5.0].iter().map(|v| 2.0 + 3.0 * v).collect();
        let b = ols(&x, &y).unwrap();
        assert!((b[0] - 2.0).abs() < 1e-12 && (b[1] - 3.0).abs() < 1e-12, "{b:?}");
        // Simple regression: slope = Sxy / Sxx. x = (1, 2, 3), y = (1, 3, 2): Sxy = 1, Sxx = 2.
        let x: Vec<Vec<f64>> = [1.0, 2.0, 3.0].iter().map(|&v| vec![1.0, v]).collect();
        let b = ols(&x, &[1.0, 3.0, 2.0]).unwrap();
        assert!((b[1] - 0.5).abs() < 1e-12 && (b[0] - 1.0).abs() < 1e-12, "{b:?}");
    }

    #[test]
    fn collinear_and_bad_designs_are_refused() {
        let x = vec![vec![1.0, 2.0], vec![2.0, 4.0], vec![3.0, 6.0]];
        assert!(ols(&x, &[1.0, 2.0, 3.0]).unwrap_err().to_string().contains("collinear"));
        assert!(ols(&[vec![1.0, 2.0]], &[1.0]).unwrap_err().to_string().contains("rows"));
        assert!(ols(&[vec![1.0], vec![f64::NAN]], &[1.0, 2.0]).is_err());
        assert!(ols(&[], &[]).is_err());
    }

    #[test]
    fn jackknife_of_an_intercept_is_the_paired_t() {
        // Regressing paired differences on a constant: the coefficient is their mean and the
        // delete-one-seed jackknife gives exactly the paired t interval and p.
        let base = [0.50, 0.62, 0.55, 0.58];
        let var = [0.55, 0.66, 0.61, 0.60];
        let d: Vec<f64> = (0..4).map(|s| var[s] - base[s]).collect();
        let ones: Vec<Vec<f64>> = (0..4).map(|_| vec![1.0]).collect();
        let seeds: Vec<Vec<u64>> = (1..=4).map(|s| vec![s]).collect();
        let c = jackknife_coefficients(&ones, &d, &seeds).unwrap();
        let t = crate::stats::paired_t(&base, &var).unwrap();
        assert!((c[0].estimate - t.diff.mean).abs() < 1e-12);
        assert!((c[0].lo - t.diff.lo).abs() < 1e-12 && (c[0].p - t.p_value).abs() < 1e-12, "{c:?} {t:?}");
        assert!(jackknife_coefficients(&ones[..2], &d[..2], &seeds[..2])
            .unwrap_err()
            .to_string()
            .contains("at least 3"));
    }

    #[test]
    fn a_method_effect_at_matched_endpoint_is_recovered() {
        // y = 0.1·method + 0.5·endpoint + 0.2 (no noise): the method coefficient is 0.1 even
        // though the method's endpoints are lower; a per-seed wobble in the endpoints keeps the
        // design identified after each deletion.
        let (mut x, mut y, mut seeds) = (Vec::new(), Vec::new(), Vec::new());
        for s in 1..=5u64 {
            for (m, e) in [(0.0, 0.8 + 0.01 * s as f64), (1.0, 0.6 + 0.02 * (s % 3) as f64)] {
                x.push(vec![1.0, m, e]);
                y.push(0.2 + 0.1 * m + 0.5 * e);
                seeds.push(vec![s]);
            }
        }
        let c = jackknife_coefficients(&x, &y, &seeds).unwrap();
        assert!((c[1].estimate - 0.1).abs() < 1e-10 && (c[2].estimate - 0.5).abs() < 1e-10, "{c:?}");
        assert!(c[1].se < 1e-9);
    }
}
