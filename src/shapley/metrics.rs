//! Comparing estimated Shapley values with exact ones.

use std::cmp::Ordering;

use anyhow::{bail, Result};

/// Errors unless both vectors are non-empty and of equal length.
fn check_pair(estimate: &[f64], exact: &[f64]) -> Result<()> {
    if estimate.len() != exact.len() {
        bail!(
            "cannot compare {} estimated values with {} exact values: pass one value per player in both",
            estimate.len(),
            exact.len()
        );
    }
    if estimate.is_empty() {
        bail!("cannot compare empty value vectors: pass at least one player's values");
    }
    Ok(())
}

/// Errors when a vector to be ranked holds NaN.
fn check_rankable(values: &[f64]) -> Result<()> {
    if values.iter().any(|v| v.is_nan()) {
        bail!("cannot rank values that contain NaN: estimate with at least one sample per player");
    }
    Ok(())
}

/// Mean squared error `(1/n) Σ_i (est_i − exact_i)²`.
pub fn mse(estimate: &[f64], exact: &[f64]) -> Result<f64> {
    check_pair(estimate, exact)?;
    let sum: f64 = estimate.iter().zip(exact).map(|(e, x)| (e - x) * (e - x)).sum();
    Ok(sum / estimate.len() as f64)
}

/// Largest absolute error `max_i |est_i − exact_i|`.
pub fn max_abs_error(estimate: &[f64], exact: &[f64]) -> Result<f64> {
    check_pair(estimate, exact)?;
    Ok(estimate.iter().zip(exact).map(|(e, x)| (e - x).abs()).fold(0.0, f64::max))
}

/// Kendall's τ-b between two rankings of the players by value.
///
/// Compares every pair of players: concordant when both vectors order them
/// the same way, discordant when oppositely, and pairs tied in either vector
/// count as neither. `τ_b = (C − D) / √((P − T_a)(P − T_b))` with `P` the
/// number of pairs and `T_a`, `T_b` the pairs tied in each vector. It depends
/// only on the ranks of the values (not on argsort index arrays). 1 for
/// identical orderings, −1 for reversed ones; NaN when either vector is
/// entirely tied (the rank correlation is undefined).
pub fn kendall_tau(a: &[f64], b: &[f64]) -> Result<f64> {
    check_pair(a, b)?;
    check_rankable(a)?;
    check_rankable(b)?;
    let n = a.len();
    let (mut concordant, mut discordant) = (0i64, 0i64);
    let (mut tied_a, mut tied_b) = (0i64, 0i64);
    for i in 0..n {
        for j in i + 1..n {
            let oa = a[i].total_cmp(&a[j]);
            let ob = b[i].total_cmp(&b[j]);
            // -0.0 and 0.0 compare unequal under total_cmp but are tied values.
            let ta = a[i] == a[j];
            let tb = b[i] == b[j];
            if ta {
                tied_a += 1;
            }
            if tb {
                tied_b += 1;
            }
            if !ta && !tb {
                if oa == ob {
                    concordant += 1;
                } else {
                    discordant += 1;
                }
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as i64;
    let denom = (((pairs - tied_a) * (pairs - tied_b)) as f64).sqrt();
    if denom == 0.0 {
        return Ok(f64::NAN);
    }
    Ok((concordant - discordant) as f64 / denom)
}

/// The indices of the `k` largest values (ties broken toward the lower index).
pub fn top_k(values: &[f64], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&i, &j| values[j].partial_cmp(&values[i]).unwrap_or(Ordering::Equal).then(i.cmp(&j)));
    idx.truncate(k);
    idx
}

/// `|top-k(estimate) ∩ top-k(exact)| / k`, top-k by value in descending
/// order (ties broken toward the lower player index).
pub fn precision_at_k(estimate: &[f64], exact: &[f64], k: usize) -> Result<f64> {
    check_pair(estimate, exact)?;
    check_rankable(estimate)?;
    check_rankable(exact)?;
    if k == 0 || k > estimate.len() {
        bail!("k = {k} is outside 1..={}: choose k between 1 and the number of players", estimate.len());
    }
    let truth = top_k(exact, k);
    let hits = top_k(estimate, k).iter().filter(|i| truth.contains(i)).count();
    Ok(hits as f64 / k as f64)
}

/// Efficiency gap `Σ_i φ_i − (v(N) − v(∅))`; 0 for exact Shapley values.
pub fn efficiency_gap(values: &[f64], v_full: f64, v_empty: f64) -> f64 {
    values.iter().sum::<f64>() - (v_full - v_empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn kendall_tau_identical_reversed_and_ties() {
        let x = [0.3, -1.0, 2.0, 0.5, 1.1];
        assert!(close(kendall_tau(&x, &x).unwrap(), 1.0));
        // A monotone transform keeps the ranking: τ depends on ranks only.
        let y: Vec<f64> = x.iter().map(|v| v * 10.0 + 3.0).collect();
        assert!(close(kendall_tau(&x, &y).unwrap(), 1.0));
        let rev: Vec<f64> = x.iter().map(|v| -v).collect();
        assert!(close(kendall_tau(&x, &rev).unwrap(), -1.0));
        // One discordant pair out of three: (2 − 1)/3.
        assert!(close(kendall_tau(&[1.0, 2.0, 3.0], &[2.0, 1.0, 3.0]).unwrap(), 1.0 / 3.0));
        // Tie in a: pairs = 6, C = 5, D = 0, T_a = 1, T_b = 0 → 5/√(5·6).
        let t = kendall_tau(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!(close(t, 5.0 / 30f64.sqrt()), "{t}");
        // Two ties in b: C = 4, T_b = 2 → 4/√(6·4).
        let t = kendall_tau(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 2.0, 2.0]).unwrap();
        assert!(close(t, 4.0 / 24f64.sqrt()), "{t}");
        // Ranks, not argsort arrays: here τ of the values is −1/3 while τ of
        // the argsorts [1, 3, 2, 0] and [0, 3, 1, 2] would be +1/3.
        let t = kendall_tau(&[0.4, 0.1, 0.3, 0.2], &[0.1, 0.3, 0.4, 0.2]).unwrap();
        assert!(close(t, -1.0 / 3.0), "{t}");
        assert!(kendall_tau(&[1.0, 1.0], &[1.0, 2.0]).unwrap().is_nan());
        assert!(kendall_tau(&[1.0], &[1.0, 2.0]).is_err());
        assert!(kendall_tau(&[f64::NAN, 1.0], &[1.0, 2.0]).is_err());
    }

    #[test]
    fn precision_at_k_hand_computed() {
        let est = [0.5, 0.1, 0.4, 0.3];
        let exact = [0.4, 0.3, 0.1, 0.5];
        // top-2 of est = {0, 2}, of exact = {3, 0}.
        assert!(close(precision_at_k(&est, &exact, 2).unwrap(), 0.5));
        assert!(close(precision_at_k(&est, &exact, 1).unwrap(), 0.0));
        // top-3: {0, 2, 3} vs {3, 0, 1}.
        assert!(close(precision_at_k(&est, &exact, 3).unwrap(), 2.0 / 3.0));
        assert!(close(precision_at_k(&est, &exact, 4).unwrap(), 1.0));
        assert!(close(precision_at_k(&exact, &exact, 2).unwrap(), 1.0));
        // Ties go to the lower index: top-2 of [1, 1, 1] is {0, 1}.
        assert_eq!(top_k(&[1.0, 1.0, 1.0], 2), vec![0, 1]);
        assert!(close(precision_at_k(&[1.0, 1.0, 1.0], &[0.0, 2.0, 1.0], 2).unwrap(), 0.5));
        assert!(precision_at_k(&est, &exact, 0).is_err());
        assert!(precision_at_k(&est, &exact, 5).is_err());
    }

    #[test]
    fn error_metrics_and_efficiency_gap() {
        let est = [1.0, 2.0, 3.0];
        let exact = [1.5, 2.0, 1.0];
        assert!(close(mse(&est, &exact).unwrap(), (0.25 + 0.0 + 4.0) / 3.0));
        assert!(close(max_abs_error(&est, &exact).unwrap(), 2.0));
        assert!(mse(&[], &[]).is_err());
        assert!(max_abs_error(&[1.0], &[]).is_err());
        assert!(close(efficiency_gap(&est, 7.0, 0.5), -0.5));
        assert!(close(efficiency_gap(&[0.25, 0.75], 1.5, 0.5), 0.0));
    }
}
