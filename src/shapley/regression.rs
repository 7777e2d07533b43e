//! Weighted least squares of a game on a k-additive Möbius basis, the
//! machinery of the regression estimators (KernelSHAP is order 1, kADD-SHAP
//! order 2), with `faer` for the solve and a bootstrap over draws for
//! standard errors.
//!
//! The model is `v̂(S) = Σ_{T ⊆ S, |T| ≤ k} m(T)`; its Shapley values are
//! `φ_i = Σ_{T ∋ i} m(T) / |T|`. The fit minimises `Σ_rows w (v(S) − v̂(S))²`
//! subject to `m(∅) = v(∅)` and `Σ_T m(T) = v(N)` (so `Σφ = v(N) − v(∅)`,
//! efficiency), solved through the KKT system with a full-pivot LU.

use anyhow::{bail, Result};
use faer::Mat;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use std::collections::HashMap;

use crate::shapley::coalition::{self, Coalition};
use crate::shapley::design::{binom, kernel_weight, sample_design, subsets_of_size, DesignRow};
use crate::shapley::game::Memo;
use crate::shapley::result::ShapleyEstimate;
use crate::shapley::sampling::{check_sampling_players, Ledger};

/// Bootstrap replicates behind the regression estimators' standard errors.
pub const BOOTSTRAP_REPS: usize = 30;

/// What a regression estimator fits and how it draws coalitions.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RegressionSpec {
    /// Order of the Möbius model (1 = KernelSHAP, 2 = kADD-SHAP).
    pub order: usize,
    /// Probability mass of drawing size `s` on `n` players (before renormalising).
    pub sampling: fn(usize, usize) -> f64,
    /// Add `N ∖ S` to every draw `S`.
    pub paired: bool,
}

/// Total Shapley-kernel weight of size `s`, `C(n,s)·kernel_weight = (n−1)/(s(n−s))`.
pub(crate) fn kernel_mass(n: usize, s: usize) -> f64 {
    if s == 0 || s >= n {
        0.0
    } else {
        binom(n, s) * kernel_weight(n, s)
    }
}

/// The smallest budget a regression of `order` can use on `n` players:
/// one row per free coefficient plus `∅` and `N`.
pub(crate) fn regression_min_budget(n: usize, order: usize) -> usize {
    MobiusBasis::size(n, order).max(n + 2).min(1usize.checked_shl(n as u32).unwrap_or(usize::MAX))
}

/// Runs a regression estimator: draws a design with the Shapley kernel as
/// the regression weight, evaluates it within the budget, fits the
/// constrained model and bootstraps its standard errors.
pub(crate) fn run_regression(
    memo: &Memo,
    name: String,
    spec: RegressionSpec,
    budget: usize,
    seed: u64,
) -> Result<ShapleyEstimate> {
    let n = memo.n_players();
    check_sampling_players(n)?;
    let ledger = Ledger::new(memo, budget);
    let min = regression_min_budget(n, spec.order);
    if ledger.budget() < min {
        bail!(
            "budget {} is too small for {name} on {n} players: the fit needs {min} distinct evaluations; raise the budget to at least that",
            ledger.budget()
        );
    }
    let target: Vec<f64> = (0..=n).map(|s| kernel_mass(n, s)).collect();
    let sampling: Vec<f64> = (0..=n).map(|s| if s == 0 || s == n { 0.0 } else { (spec.sampling)(n, s) }).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let design = sample_design(n, ledger.budget(), &target, &sampling, spec.paired, &mut rng);
    let Some(values) = ledger.try_values(&design.coalitions)? else {
        bail!("the design of {name} needs more than the budget of {}: raise the budget", ledger.budget());
    };
    let lookup: HashMap<Coalition, f64> = design.coalitions.iter().copied().zip(values).collect();
    let row_values: Vec<f64> = design.rows.iter().map(|r| lookup[&r.coalition]).collect();
    let ends = (lookup[&coalition::EMPTY], lookup[&coalition::grand(n)]);
    let basis = MobiusBasis::new(n, spec.order);
    let (values, std_errors) =
        fit_with_bootstrap(&basis, &design.rows, &row_values, ends, design.units, BOOTSTRAP_REPS, seed)?;
    Ok(ShapleyEstimate {
        estimator: name,
        values,
        std_errors,
        evaluations: ledger.used(),
        samples: design.rows.iter().filter(|r| r.unit.is_some()).count(),
        converged: false,
    })
}

/// The basis sets `T`, `1 <= |T| <= order`, of an `order`-additive model.
#[derive(Debug, Clone, PartialEq)]
pub struct MobiusBasis {
    n: usize,
    sets: Vec<Coalition>,
}

impl MobiusBasis {
    /// The basis of order `order` on `n` players (`order <= n`).
    pub fn new(n: usize, order: usize) -> Self {
        let sets = (1..=order.min(n)).flat_map(|k| subsets_of_size(n, k)).collect();
        MobiusBasis { n, sets }
    }

    /// Number of coefficients, `m(∅)` included: `Σ_{k ≤ order} C(n, k)`.
    pub fn len(&self) -> usize {
        self.sets.len() + 1
    }

    /// Whether the basis holds only `m(∅)`.
    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Number of coefficients of an `order`-additive model on `n` players.
    pub fn size(n: usize, order: usize) -> usize {
        (0..=order.min(n)).map(|k| binom(n, k) as usize).sum()
    }

    /// The basis sets, `m(∅)` excluded.
    pub fn sets(&self) -> &[Coalition] {
        &self.sets
    }

    /// The model's value at `s`: `Σ_{T ⊆ S} m(T)`.
    pub fn predict(&self, coef: &[f64], s: Coalition) -> f64 {
        coef[0]
            + self
                .sets
                .iter()
                .zip(&coef[1..])
                .filter(|(t, _)| coalition::is_subset(**t, s))
                .map(|(_, m)| m)
                .sum::<f64>()
    }

    /// The model's Shapley values, `φ_i = Σ_{T ∋ i} m(T) / |T|`.
    pub fn shapley(&self, coef: &[f64]) -> Vec<f64> {
        let mut phi = vec![0.0; self.n];
        for (t, m) in self.sets.iter().zip(&coef[1..]) {
            let share = m / coalition::size(*t) as f64;
            for i in coalition::members(*t) {
                phi[i] += share;
            }
        }
        phi
    }

    /// Weighted least-squares coefficients (`m(∅)` first) for `rows` with
    /// `values` (one per row); `constrained` pins `m(∅) = v_empty` and
    /// `Σ m = v_full`. Rows of weight 0 are ignored. The KKT system is solved
    /// through its symmetric eigendecomposition, dropping eigenvalues below
    /// [`RELATIVE_CUTOFF`] of the largest: a well-determined fit gets the exact
    /// solution, an under-determined one (a bootstrap draw that leaves out
    /// rows) the minimum-norm one. An LU with a tiny ridge used to do this, and
    /// returned non-finite values when rounding (which differs between GEMM
    /// kernels) ate the ridge.
    pub fn fit(
        &self,
        rows: &[DesignRow],
        values: &[f64],
        v_empty: f64,
        v_full: f64,
        constrained: bool,
    ) -> Result<Vec<f64>> {
        let p = self.len();
        let used: Vec<usize> = (0..rows.len()).filter(|&r| rows[r].weight > 0.0).collect();
        let x = Mat::<f64>::from_fn(used.len(), p, |r, j| {
            let row = rows[used[r]];
            let member = j == 0 || coalition::is_subset(self.sets[j - 1], row.coalition);
            if member {
                row.weight.sqrt()
            } else {
                0.0
            }
        });
        let y = Mat::<f64>::from_fn(used.len(), 1, |r, _| rows[used[r]].weight.sqrt() * values[used[r]]);
        let gram = x.transpose() * x.as_ref();
        let rhs = x.transpose() * y.as_ref();
        // Constraint rows scaled to the Gram matrix's size, so that the
        // eigenvalue cutoff treats both blocks alike (the solution's `m` is
        // unchanged; only the multipliers scale).
        let scale = (0..p).map(|j| gram[(j, j)]).fold(0.0f64, f64::max).max(1e-300);
        let extra = if constrained { 2 } else { 0 };
        let kkt = Mat::<f64>::from_fn(p + extra, p + extra, |i, j| match (i < p, j < p) {
            (true, true) => gram[(i, j)],
            (true, false) => scale * constraint(j - p, i),
            (false, true) => scale * constraint(i - p, j),
            (false, false) => 0.0,
        });
        let b: Vec<f64> = (0..p + extra)
            .map(|i| match i {
                i if i < p => rhs[(i, 0)],
                i if i == p => scale * v_empty,
                _ => scale * v_full,
            })
            .collect();
        let sol = pseudo_solve_symmetric(&kkt, &b)?;
        let coef: Vec<f64> = sol[..p].to_vec();
        if coef.iter().any(|c| !c.is_finite()) {
            bail!("the {p}-coefficient regression is singular on {} rows: raise the budget", used.len());
        }
        Ok(coef)
    }
}

/// Eigenvalues below this share of the largest one count as zero in
/// [`pseudo_solve_symmetric`].
pub const RELATIVE_CUTOFF: f64 = 1e-12;

/// `A⁺ b` for a symmetric (possibly indefinite or singular) `A`, through its
/// eigendecomposition `A = U Λ Uᵀ`: `Σ_k (u_kᵀ b / λ_k) u_k` over the
/// eigenvalues with `|λ_k| > RELATIVE_CUTOFF · max |λ|`. This is the exact
/// solution when `A` is well conditioned and the minimum-norm least-squares
/// solution otherwise.
pub fn pseudo_solve_symmetric(a: &Mat<f64>, b: &[f64]) -> Result<Vec<f64>> {
    let n = a.nrows();
    if a.ncols() != n || b.len() != n {
        bail!("pseudo_solve_symmetric needs a square matrix and a matching right-hand side");
    }
    if a.col_iter().any(|c| c.iter().any(|v| !v.is_finite())) || b.iter().any(|v| !v.is_finite()) {
        bail!("the regression's normal equations hold a non-finite value: check the game's values for NaN");
    }
    let evd = a
        .self_adjoint_eigen(faer::Side::Lower)
        .map_err(|e| anyhow::anyhow!("the regression's eigendecomposition did not converge ({e:?})"))?;
    let (u, lambda) = (evd.U(), evd.S().column_vector());
    let largest = lambda.iter().fold(0.0f64, |m, l| m.max(l.abs()));
    let cutoff = RELATIVE_CUTOFF * largest;
    let mut x = vec![0.0; n];
    for k in 0..n {
        let l = lambda[k];
        if l.abs() <= cutoff {
            continue;
        }
        let coef = (0..n).map(|i| u[(i, k)] * b[i]).sum::<f64>() / l;
        for (i, xi) in x.iter_mut().enumerate() {
            *xi += coef * u[(i, k)];
        }
    }
    Ok(x)
}

/// Row `k` of the constraint matrix at column `j`: `m(∅)` alone, then all ones.
fn constraint(k: usize, j: usize) -> f64 {
    if k == 1 || j == 0 {
        1.0
    } else {
        0.0
    }
}

/// Shapley values of the constrained fit of `rows`, and their bootstrap
/// standard errors: `reps` refits on the draws (rows with a `unit`)
/// resampled with replacement, the enumerated rows kept; the SE is the
/// standard deviation of the refitted values (0 when nothing was drawn).
pub fn fit_with_bootstrap(
    basis: &MobiusBasis,
    rows: &[DesignRow],
    values: &[f64],
    (v_empty, v_full): (f64, f64),
    units: usize,
    reps: usize,
    seed: u64,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let coef = basis.fit(rows, values, v_empty, v_full, true)?;
    let phi = basis.shapley(&coef);
    let n = phi.len();
    if units < 2 || reps < 2 {
        let se = if units == 0 { 0.0 } else { f64::NAN };
        return Ok((phi, vec![se; n]));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xB007_5742);
    let mut sum = vec![0.0; n];
    let mut sum2 = vec![0.0; n];
    let mut counts = vec![0usize; units];
    let mut boot = rows.to_vec();
    for _ in 0..reps {
        counts.fill(0);
        for _ in 0..units {
            counts[rng.random_range(0..units)] += 1;
        }
        for (b, r) in boot.iter_mut().zip(rows) {
            b.weight = r.unit.map_or(r.weight, |u| r.weight * counts[u] as f64);
        }
        let phi_b = basis.shapley(&basis.fit(&boot, values, v_empty, v_full, true)?);
        for i in 0..n {
            sum[i] += phi_b[i];
            sum2[i] += phi_b[i] * phi_b[i];
        }
    }
    let r = reps as f64;
    let se = (0..n).map(|i| ((sum2[i] - sum[i] * sum[i] / r).max(0.0) / (r - 1.0)).sqrt()).collect();
    Ok((phi, se))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::exact::{enumerate, shapley_from_table};
    use crate::shapley::synthetic::SumOfUnanimityGames;

    #[test]
    fn basis_sizes_and_model_shapley_values() {
        assert_eq!(MobiusBasis::size(12, 2), 79);
        assert_eq!(MobiusBasis::new(12, 2).len(), 79);
        assert_eq!(MobiusBasis::new(4, 1).len(), 5);
        // m({0}) = 1, m({0,1}) = 2: φ = (1 + 1, 1, 0).
        let b = MobiusBasis::new(3, 2);
        let mut coef = vec![0.0; b.len()];
        coef[1 + b.sets().iter().position(|&t| t == 0b001).unwrap()] = 1.0;
        coef[1 + b.sets().iter().position(|&t| t == 0b011).unwrap()] = 2.0;
        assert_eq!(b.shapley(&coef), vec![2.0, 1.0, 0.0]);
        assert_eq!(b.predict(&coef, 0b011), 3.0);
        assert_eq!(b.predict(&coef, 0b101), 1.0);
    }

    #[test]
    fn pseudo_solve_matches_hand_cases() {
        // Regular: [[2,1],[1,3]] x = [1,2] gives x = (1/5, 3/5).
        let a = Mat::<f64>::from_fn(2, 2, |i, j| [[2.0, 1.0], [1.0, 3.0]][i][j]);
        let x = pseudo_solve_symmetric(&a, &[1.0, 2.0]).unwrap();
        assert!((x[0] - 0.2).abs() < 1e-14 && (x[1] - 0.6).abs() < 1e-14, "{x:?}");
        // Singular: [[1,1],[1,1]] x = [2,2]; the minimum-norm solution is (1, 1).
        let a = Mat::<f64>::from_fn(2, 2, |_, _| 1.0);
        let x = pseudo_solve_symmetric(&a, &[2.0, 2.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-14 && (x[1] - 1.0).abs() < 1e-14, "{x:?}");
        // Indefinite saddle [[1,1],[1,0]] x = [3,1]: x = (1, 2).
        let a = Mat::<f64>::from_fn(2, 2, |i, j| [[1.0, 1.0], [1.0, 0.0]][i][j]);
        let x = pseudo_solve_symmetric(&a, &[3.0, 1.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-14 && (x[1] - 2.0).abs() < 1e-14, "{x:?}");
        assert!(pseudo_solve_symmetric(&a, &[f64::NAN, 1.0]).is_err());
    }

    #[test]
    fn an_under_determined_fit_is_finite_and_keeps_its_constraints() {
        // 4 players, order 2: 11 coefficients, but only 6 rows (a bootstrap
        // draw that left rows out). The fit must still honour both
        // constraints and interpolate every row it saw.
        let g = SumOfUnanimityGames::random(4, 5, 2, 9).unwrap();
        let table = enumerate(&g).unwrap();
        let seen = [0u64, 15, 1, 6, 9, 12];
        let rows: Vec<DesignRow> = (0..16u64)
            .map(|c| DesignRow { coalition: c, weight: if seen.contains(&c) { 2.0 } else { 0.0 }, unit: None })
            .collect();
        let basis = MobiusBasis::new(4, 2);
        let coef = basis.fit(&rows, &table, table[0], table[15], true).unwrap();
        assert!(coef.iter().all(|c| c.is_finite()));
        assert!((coef[0] - table[0]).abs() < 1e-9);
        assert!((coef.iter().sum::<f64>() - table[15]).abs() < 1e-9);
        for &c in &seen {
            assert!((basis.predict(&coef, c) - table[c as usize]).abs() < 1e-9, "row {c}");
        }
    }

    #[test]
    fn full_table_fit_recovers_a_two_additive_game_exactly() {
        // Unanimity games of at most 2 players: the game is 2-additive.
        let g = SumOfUnanimityGames::random(7, 12, 2, 4).unwrap();
        let table = enumerate(&g).unwrap();
        let rows: Vec<DesignRow> =
            (0..128u64).map(|c| DesignRow { coalition: c, weight: 1.0 + (c % 3) as f64, unit: None }).collect();
        let basis = MobiusBasis::new(7, 2);
        let coef = basis.fit(&rows, &table, table[0], table[127], true).unwrap();
        for c in 0..128u64 {
            assert!((basis.predict(&coef, c) - table[c as usize]).abs() < 1e-9);
        }
        let truth = shapley_from_table(&table, 7).unwrap();
        for (a, b) in basis.shapley(&coef).iter().zip(&truth) {
            assert!((a - b).abs() < 1e-9, "{a} vs {b}");
        }
    }
}
