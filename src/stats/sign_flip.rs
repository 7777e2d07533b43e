//! The exact sign-flip (permutation) test of paired differences: under the null hypothesis
//! that each difference is symmetric about zero, every one of the `2ⁿ` sign patterns is equally
//! likely, so the two-sided p-value is the share of patterns whose mean is at least as far
//! from zero as the observed one. It needs no normality, and it shows what few replicates can
//! say: `n` differences cannot give p below `2/2ⁿ` (0.25 for 3 seeds, 0.0625 for 5).

use anyhow::{bail, Result};

/// The most differences [`sign_flip_p`] enumerates (`2^20` patterns).
pub const MAX_EXACT: usize = 20;

/// The smallest two-sided p-value an exact sign-flip test of `n` non-zero differences can
/// give: `2/2ⁿ` (1 for `n = 0`).
pub fn min_sign_flip_p(n: usize) -> f64 {
    if n == 0 {
        1.0
    } else {
        (2.0f64).powi(1 - n as i32).min(1.0)
    }
}

/// The exact two-sided sign-flip p-value of the differences `d` (all `2ⁿ` sign patterns, a
/// pattern counting when `|Σ ± dᵢ|` reaches the observed `|Σ dᵢ|` up to rounding). Errors on
/// an empty slice, more than [`MAX_EXACT`] values or a non-finite value.
pub fn sign_flip_p(d: &[f64]) -> Result<f64> {
    if d.is_empty() {
        bail!("no differences to test; pass at least one paired difference");
    }
    if d.len() > MAX_EXACT {
        bail!("{} differences are too many to enumerate every sign (limit {MAX_EXACT}); use the t-test", d.len());
    }
    if let Some(bad) = d.iter().find(|v| !v.is_finite()) {
        bail!("difference {bad} is not finite; drop failed runs before testing");
    }
    let observed: f64 = d.iter().sum::<f64>().abs();
    // Sums equal in exact arithmetic may differ in the last bits.
    let tolerance = 1e-12 * d.iter().map(|v| v.abs()).sum::<f64>().max(f64::MIN_POSITIVE);
    let patterns = 1usize << d.len();
    let extreme = (0..patterns)
        .filter(|mask| {
            let s: f64 = d.iter().enumerate().map(|(i, v)| if mask >> i & 1 == 1 { -v } else { *v }).sum();
            s.abs() >= observed - tolerance
        })
        .count();
    Ok(extreme as f64 / patterns as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_p_is_two_over_two_to_the_n() {
        assert_eq!(min_sign_flip_p(3), 0.25);
        assert_eq!(min_sign_flip_p(5), 0.0625);
        assert_eq!(min_sign_flip_p(1), 1.0);
        assert_eq!(min_sign_flip_p(0), 1.0);
        // Three equal non-zero differences reach exactly that bound.
        assert_eq!(sign_flip_p(&[0.4, 0.4, 0.4]).unwrap(), 0.25);
        assert_eq!(sign_flip_p(&[-1.0, -2.0, -3.0, -4.0, -5.0]).unwrap(), 0.0625);
    }

    #[test]
    fn hand_counted_cases() {
        // d = (1, 2, 3): |sum| 6; patterns with |±1 ±2 ±3| ≥ 6: (+,+,+) and (−,−,−): 2/8.
        assert_eq!(sign_flip_p(&[1.0, 2.0, 3.0]).unwrap(), 0.25);
        // d = (1, −2, 3): |sum| 2; sums of the 8 patterns: ±6, ±0, ±2, ±4 → |s| ≥ 2 in 6 of 8.
        assert_eq!(sign_flip_p(&[1.0, -2.0, 3.0]).unwrap(), 0.75);
        // All zero: every pattern ties, p = 1.
        assert_eq!(sign_flip_p(&[0.0, 0.0]).unwrap(), 1.0);
        // Rounding does not break ties: 0.1 + 0.2 vs 0.3.
        assert_eq!(sign_flip_p(&[0.1, 0.2, -0.3]).unwrap(), 1.0);
    }

    #[test]
    fn refuses_what_it_cannot_test() {
        assert!(sign_flip_p(&[]).is_err());
        assert!(sign_flip_p(&[1.0; 21]).unwrap_err().to_string().contains("too many"));
        assert!(sign_flip_p(&[1.0, f64::NAN]).is_err());
    }
}
