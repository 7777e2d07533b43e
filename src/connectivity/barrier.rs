//! Barrier heights of an interpolation curve `(α, L(α))` for a quantity where higher is worse
//! (a loss, or an error `1 − accuracy`; see [`accuracy_to_error`]).
//!
//! Conventions (anchors §B):
//! - [`Barriers::linear`]: `max_α [L(α) − ((1−α)L(0) + αL(1))]` (Entezari et al. 2022).
//! - [`Barriers::mean`]: `max_α L(α) − (L(0) + L(1))/2` (Frankle et al. 2020; Git Re-Basin).
//! - [`Barriers::worst`]: `max_α L(α) − max(L(0), L(1))` (height above the worse endpoint).
//! - [`Barriers::midpoint_gap`]: `L(0.5) − (L(0) + L(1))/2` (Entezari et al.'s code).
//!
//! Values are the raw maxima, never clamped at 0. Because both endpoints are on the grid, the
//! three max-based barriers are nevertheless `≥ 0` by construction (`linear` and `worst` are 0
//! at an endpoint, and `mean ≥ |L(0) − L(1)|/2`); `midpoint_gap` is negative for a valley.

use anyhow::{bail, Result};

/// Tolerance used to recognise `α = 0`, `α = 1` and `α = 0.5` on the grid.
pub const ALPHA_TOL: f64 = 1e-9;

/// All barrier conventions of one curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Barriers {
    /// `max_α [L(α) − ((1−α)L(0) + αL(1))]` (Entezari et al. 2022).
    pub linear: f64,
    /// The `α` attaining [`Barriers::linear`] (the first one on ties).
    pub linear_alpha: f64,
    /// `max_α L(α) − (L(0) + L(1))/2` (Frankle et al. 2020; Git Re-Basin).
    pub mean: f64,
    /// `max_α L(α) − max(L(0), L(1))`.
    pub worst: f64,
    /// The `α` attaining `max_α L(α)` (the first one on ties).
    pub max_alpha: f64,
    /// `L(0.5) − (L(0) + L(1))/2`.
    pub midpoint_gap: f64,
    /// True when `α = 0.5` is not on the grid and `L(0.5)` was interpolated linearly between
    /// its two neighbours.
    pub midpoint_interpolated: bool,
}

/// Checks a curve: at least 2 finite points, `α` strictly increasing from 0 to 1.
fn validate(curve: &[(f64, f64)]) -> Result<()> {
    if curve.len() < 2 {
        bail!("a barrier needs at least 2 curve points (α = 0 and α = 1); got {}", curve.len());
    }
    if let Some((a, l)) = curve.iter().find(|(a, l)| !a.is_finite() || !l.is_finite()) {
        bail!("curve point (α = {a}, value = {l}) is not finite; drop or re-evaluate it");
    }
    if let Some(w) = curve.windows(2).find(|w| w[1].0 <= w[0].0) {
        bail!(
            "curve α values must be strictly increasing ({} then {}); sort the points and drop duplicates",
            w[0].0,
            w[1].0
        );
    }
    let (first, last) = (curve[0].0, curve[curve.len() - 1].0);
    if first.abs() > ALPHA_TOL || (last - 1.0).abs() > ALPHA_TOL {
        bail!("curve α runs from {first} to {last}; it must start at α = 0 and end at α = 1 (include both endpoints)");
    }
    Ok(())
}

/// All four conventions at once. Errors for fewer than 2 points, non-finite values, unsorted or
/// duplicate `α`, or a grid that does not start at 0 and end at 1.
pub fn barriers(curve: &[(f64, f64)]) -> Result<Barriers> {
    validate(curve)?;
    let l0 = curve[0].1;
    let l1 = curve[curve.len() - 1].1;
    let (mut linear, mut linear_alpha) = (f64::NEG_INFINITY, 0.0);
    let (mut lmax, mut max_alpha) = (f64::NEG_INFINITY, 0.0);
    for &(a, l) in curve {
        let excess = l - ((1.0 - a) * l0 + a * l1);
        if excess > linear {
            (linear, linear_alpha) = (excess, a);
        }
        if l > lmax {
            (lmax, max_alpha) = (l, a);
        }
    }
    let (mid, midpoint_interpolated) = value_at_half(curve);
    Ok(Barriers {
        linear,
        linear_alpha,
        mean: lmax - 0.5 * (l0 + l1),
        worst: lmax - l0.max(l1),
        max_alpha,
        midpoint_gap: mid - 0.5 * (l0 + l1),
        midpoint_interpolated,
    })
}

/// `L(0.5)`: the grid value when `α = 0.5` is on the grid, else the linear interpolation between
/// the neighbouring points (second value `true`). Assumes a validated curve.
fn value_at_half(curve: &[(f64, f64)]) -> (f64, bool) {
    if let Some(&(_, l)) = curve.iter().find(|(a, _)| (a - 0.5).abs() <= ALPHA_TOL) {
        return (l, false);
    }
    let hi = curve.iter().position(|(a, _)| *a > 0.5).unwrap_or(curve.len() - 1);
    let (a0, l0) = curve[hi - 1];
    let (a1, l1) = curve[hi];
    let t = (0.5 - a0) / (a1 - a0);
    ((1.0 - t) * l0 + t * l1, true)
}

/// Entezari et al. 2022 loss barrier (see [`barriers`]).
pub fn barrier_linear(curve: &[(f64, f64)]) -> Result<f64> {
    Ok(barriers(curve)?.linear)
}

/// Frankle et al. 2020 / Git Re-Basin barrier (see [`barriers`]).
pub fn barrier_mean(curve: &[(f64, f64)]) -> Result<f64> {
    Ok(barriers(curve)?.mean)
}

/// Height above the worse endpoint (see [`barriers`]).
pub fn barrier_worst(curve: &[(f64, f64)]) -> Result<f64> {
    Ok(barriers(curve)?.worst)
}

/// `L(0.5) − (L(0) + L(1))/2`, interpolating `L(0.5)` linearly when 0.5 is not on the grid.
pub fn midpoint_gap(curve: &[(f64, f64)]) -> Result<f64> {
    Ok(barriers(curve)?.midpoint_gap)
}

/// Turns an accuracy curve into an error curve (`1 − accuracy`) so higher is worse.
pub fn accuracy_to_error(curve: &[(f64, f64)]) -> Vec<(f64, f64)> {
    curve.iter().map(|&(a, acc)| (a, 1.0 - acc)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(x: f64, y: f64) -> bool {
        (x - y).abs() < 1e-12
    }

    #[test]
    fn flat_curve_has_no_barrier() {
        let b = barriers(&[(0.0, 0.3), (0.5, 0.3), (1.0, 0.3)]).unwrap();
        assert!(close(b.linear, 0.0) && close(b.mean, 0.0) && close(b.worst, 0.0) && close(b.midpoint_gap, 0.0));
    }

    #[test]
    fn linear_curve() {
        // L = 1 + α: on the chord everywhere; max L = 2, endpoint mean 1.5.
        let curve: Vec<(f64, f64)> = (0..=4).map(|i| i as f64 / 4.0).map(|a| (a, 1.0 + a)).collect();
        let b = barriers(&curve).unwrap();
        assert!(close(b.linear, 0.0), "{b:?}");
        assert!(close(b.mean, 0.5));
        assert!(close(b.worst, 0.0));
        assert!(close(b.midpoint_gap, 0.0));
        assert!(close(b.max_alpha, 1.0));
        assert!(!b.midpoint_interpolated);
    }

    #[test]
    fn bump() {
        // L(0) = 1, L(0.25) = 2, L(0.5) = 4, L(0.75) = 2.5, L(1) = 2.
        let b = barriers(&[(0.0, 1.0), (0.25, 2.0), (0.5, 4.0), (0.75, 2.5), (1.0, 2.0)]).unwrap();
        // chord at 0.5 = 1.5 → excess 2.5; at 0.25: 2 − 1.25 = 0.75; at 0.75: 2.5 − 1.75 = 0.75.
        assert!(close(b.linear, 2.5) && close(b.linear_alpha, 0.5));
        assert!(close(b.mean, 4.0 - 1.5));
        assert!(close(b.worst, 4.0 - 2.0));
        assert!(close(b.midpoint_gap, 2.5));
        assert!(close(b.max_alpha, 0.5));
        assert!(close(barrier_linear(&[(0.0, 1.0), (0.5, 4.0), (1.0, 2.0)]).unwrap(), 2.5));
        assert!(close(barrier_mean(&[(0.0, 1.0), (0.5, 4.0), (1.0, 2.0)]).unwrap(), 2.5));
        assert!(close(barrier_worst(&[(0.0, 1.0), (0.5, 4.0), (1.0, 2.0)]).unwrap(), 2.0));
    }

    #[test]
    fn valley_is_reported_raw() {
        // L(0) = 1, L(0.5) = 0.2, L(1) = 0.6: every interior point is below the chord.
        let b = barriers(&[(0.0, 1.0), (0.5, 0.2), (1.0, 0.6)]).unwrap();
        assert!(close(b.linear, 0.0) && close(b.linear_alpha, 0.0)); // attained at α = 0
        assert!(close(b.mean, 1.0 - 0.8)); // = |L(0) − L(1)| / 2
        assert!(close(b.worst, 0.0));
        assert!(close(b.midpoint_gap, 0.2 - 0.8)); // negative, not clamped
    }

    #[test]
    fn midpoint_interpolated_between_neighbours() {
        let b = barriers(&[(0.0, 0.0), (0.4, 1.0), (0.6, 3.0), (1.0, 0.0)]).unwrap();
        assert!(b.midpoint_interpolated);
        assert!(close(b.midpoint_gap, 2.0));
        let two = barriers(&[(0.0, 1.0), (1.0, 3.0)]).unwrap();
        assert!(close(two.midpoint_gap, 0.0) && two.midpoint_interpolated);
    }

    #[test]
    fn accuracy_curves_become_error_curves() {
        let err = accuracy_to_error(&[(0.0, 0.9), (0.5, 0.6), (1.0, 0.8)]);
        let b = barriers(&err).unwrap();
        assert!((b.mean - (0.4 - 0.15)).abs() < 1e-12);
    }

    #[test]
    fn invalid_curves() {
        assert!(barriers(&[(0.0, 1.0)]).unwrap_err().to_string().contains("at least 2"));
        assert!(barriers(&[(0.0, 1.0), (0.5, 1.0)]).unwrap_err().to_string().contains("α = 1"));
        assert!(barriers(&[(0.1, 1.0), (1.0, 1.0)]).is_err());
        assert!(barriers(&[(0.0, 1.0), (0.7, 1.0), (0.3, 1.0), (1.0, 1.0)]).unwrap_err().to_string().contains("sort"));
        assert!(barriers(&[(0.0, 1.0), (0.5, 1.0), (0.5, 1.0), (1.0, 1.0)]).is_err());
        assert!(barriers(&[(0.0, f64::NAN), (1.0, 1.0)]).is_err());
    }
}
