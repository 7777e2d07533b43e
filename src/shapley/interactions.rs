//! Exact interaction indices of a game from its full table of `2^n` values:
//! the Möbius transform, pairwise Shapley interaction indices, Banzhaf
//! values, and how much of the game's variance its best order-1 and order-2
//! approximations explain.
//!
//! * **Möbius transform**: `m(T) = Σ_{S ⊆ T} (−1)^{|T|−|S|} v(S)`, so that
//!   `v(S) = Σ_{T ⊆ S} m(T)` (fast subset transform, `O(n·2^n)`).
//! * **Shapley interaction index** of a pair (Grabisch 1997):
//!   `I_ij = Σ_{S ⊆ N∖{i,j}} (n−s−2)! s! / (n−1)! · Δ_ij v(S)` with
//!   `Δ_ij v(S) = v(S∪ij) − v(S∪i) − v(S∪j) + v(S)`; equivalently
//!   `I_ij = Σ_{T ⊇ {i,j}} m(T) / (|T| − 1)`.
//! * **Banzhaf value**: `β_i = 2^{−(n−1)} Σ_{S ⊆ N∖i} (v(S∪i) − v(S))`.
//! * **Variance explained**: under uniformly random coalitions, the Walsh
//!   (Fourier) coefficients `f̂(T) = 2^{−n} Σ_S v(S) (−1)^{|S∖T|...}` are
//!   orthogonal, so the best approximation of order `k` in mean square keeps
//!   the coefficients with `|T| ≤ k`, and its share of the variance is
//!   `Σ_{1≤|T|≤k} f̂(T)² / Σ_{T≠∅} f̂(T)²`.

use anyhow::{bail, Result};

use crate::shapley::coalition;
use crate::shapley::exact::MAX_EXACT_PLAYERS;

/// Errors unless `values` holds `2^n` entries with `n <= 20`.
fn check(values: &[f64], n: usize) -> Result<()> {
    if n > MAX_EXACT_PLAYERS || values.len() != 1usize << n {
        bail!(
            "interaction indices need the full table of 2^n values with n <= {MAX_EXACT_PLAYERS}; got {} values for n = {n}: enumerate the game first",
            values.len()
        );
    }
    Ok(())
}

/// The Möbius transform `m[T]` of the table `values[S] = v(S)`.
pub fn moebius(values: &[f64], n: usize) -> Result<Vec<f64>> {
    check(values, n)?;
    let mut m = values.to_vec();
    for i in 0..n {
        let bit = 1usize << i;
        for s in 0..m.len() {
            if s & bit != 0 {
                m[s] -= m[s ^ bit];
            }
        }
    }
    Ok(m)
}

/// The game back from its Möbius transform: `v(S) = Σ_{T ⊆ S} m(T)`.
pub fn zeta(m: &[f64], n: usize) -> Result<Vec<f64>> {
    check(m, n)?;
    let mut v = m.to_vec();
    for i in 0..n {
        let bit = 1usize << i;
        for s in 0..v.len() {
            if s & bit != 0 {
                v[s] += v[s ^ bit];
            }
        }
    }
    Ok(v)
}

/// Pairwise Shapley interaction indices `I[i][j]` (symmetric, zero diagonal),
/// from the Möbius transform: `I_ij = Σ_{T ⊇ {i,j}} m(T) / (|T| − 1)`.
pub fn shapley_interactions(values: &[f64], n: usize) -> Result<Vec<Vec<f64>>> {
    let m = moebius(values, n)?;
    let mut out = vec![vec![0.0; n]; n];
    for (t, &mt) in m.iter().enumerate() {
        let size = (t as u64).count_ones() as usize;
        if size < 2 || mt == 0.0 {
            continue;
        }
        let share = mt / (size - 1) as f64;
        let members = coalition::to_vec(t as u64);
        for (a, &i) in members.iter().enumerate() {
            for &j in &members[a + 1..] {
                out[i][j] += share;
                out[j][i] += share;
            }
        }
    }
    Ok(out)
}

/// Banzhaf values `β_i = 2^{−(n−1)} Σ_{S ∌ i} (v(S∪i) − v(S))`.
pub fn banzhaf(values: &[f64], n: usize) -> Result<Vec<f64>> {
    check(values, n)?;
    let scale = if n == 0 { 1.0 } else { 0.5f64.powi(n as i32 - 1) };
    Ok((0..n)
        .map(|i| {
            let bit = 1usize << i;
            (0..values.len()).filter(|s| s & bit == 0).map(|s| values[s | bit] - values[s]).sum::<f64>() * scale
        })
        .collect())
}

/// The Walsh–Hadamard coefficients `f̂(T) = 2^{−n} Σ_S v(S) (−1)^{|S ∩ T|}`
/// of the game under uniformly random coalitions.
pub fn walsh(values: &[f64], n: usize) -> Result<Vec<f64>> {
    check(values, n)?;
    let mut f = values.to_vec();
    for i in 0..n {
        let bit = 1usize << i;
        for s in 0..f.len() {
            if s & bit == 0 {
                let (a, b) = (f[s], f[s | bit]);
                f[s] = a + b;
                f[s | bit] = a - b;
            }
        }
    }
    let scale = 1.0 / values.len() as f64;
    Ok(f.into_iter().map(|x| x * scale).collect())
}

/// Share of the variance of `v(S)` over uniformly random coalitions that the
/// best approximation of each order `1..=max_order` explains (1 when the
/// game is constant).
pub fn variance_explained(values: &[f64], n: usize, max_order: usize) -> Result<Vec<f64>> {
    let f = walsh(values, n)?;
    let mut by_order = vec![0.0f64; n + 1];
    for (t, c) in f.iter().enumerate().skip(1) {
        by_order[(t as u64).count_ones() as usize] += c * c;
    }
    let total: f64 = by_order.iter().sum();
    Ok((1..=max_order)
        .map(|k| if total > 0.0 { by_order[1..=k.min(n)].iter().sum::<f64>() / total } else { 1.0 })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::exact::{enumerate, shapley_from_table};
    use crate::shapley::game::FnGame;
    use crate::shapley::synthetic::{AdditiveGame, SaturatingGame, SumOfUnanimityGames};

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-10
    }

    #[test]
    fn moebius_inversion_reproduces_the_game() {
        let g = SaturatingGame::random(9, 3).unwrap();
        let v = enumerate(&g).unwrap();
        let back = zeta(&moebius(&v, 9).unwrap(), 9).unwrap();
        assert!(v.iter().zip(&back).all(|(a, b)| close(*a, *b)));
        // Unanimity game u_T has m(T) = 1 and nothing else.
        let u = FnGame::new(4, "u", |c| (c & 0b0110 == 0b0110) as u8 as f64);
        let m = moebius(&enumerate(&u).unwrap(), 4).unwrap();
        for (t, x) in m.iter().enumerate() {
            assert_eq!(*x, if t == 0b0110 { 1.0 } else { 0.0 }, "T = {t:#b}");
        }
    }

    #[test]
    fn interactions_hand_computed_symmetric_and_dummy() {
        // v = [0,1 ∈ S] + 2·[0,1,2 ⊆ S] on 4 players: I_01 = 1 + 2/2 = 2,
        // I_02 = I_12 = 1, player 3 is a dummy.
        let g = FnGame::new(4, "hand", |c| (c & 0b011 == 0b011) as u8 as f64 + 2.0 * (c & 0b111 == 0b111) as u8 as f64);
        let v = enumerate(&g).unwrap();
        let i = shapley_interactions(&v, 4).unwrap();
        assert!(close(i[0][1], 2.0) && close(i[0][2], 1.0) && close(i[1][2], 1.0));
        for (a, row) in i.iter().enumerate() {
            assert_eq!(row[a], 0.0);
            assert_eq!(row[3], 0.0);
            for (b, other) in i.iter().enumerate() {
                assert_eq!(row[b], other[a]);
            }
        }
        // The definition by discrete second derivatives agrees.
        let sii_direct = |a: usize, b: usize| {
            let mut total = 0.0;
            let (ba, bb) = (1usize << a, 1usize << b);
            for s in (0..16usize).filter(|s| s & (ba | bb) == 0) {
                let k = s.count_ones() as i32;
                let w = (1..=(4 - k - 2)).product::<i32>() as f64 * (1..=k).product::<i32>() as f64 / 6.0;
                total += w * (v[s | ba | bb] - v[s | ba] - v[s | bb] + v[s]);
            }
            total
        };
        assert!(close(sii_direct(0, 1), i[0][1]) && close(sii_direct(1, 2), i[1][2]));
        // Additive games have no interactions and explain all variance at order 1.
        let add = enumerate(&AdditiveGame::new(vec![1.0, -2.0, 0.5, 3.0]).unwrap()).unwrap();
        assert!(shapley_interactions(&add, 4).unwrap().iter().flatten().all(|x| x.abs() < 1e-12));
        assert!(close(variance_explained(&add, 4, 2).unwrap()[0], 1.0));
    }

    #[test]
    fn banzhaf_and_variance_shares() {
        // Banzhaf of u_{01} on 3 players: each of 0, 1 is pivotal in 2 of 4 sets → 1/2.
        let u = FnGame::new(3, "u", |c| (c & 0b011 == 0b011) as u8 as f64);
        let v = enumerate(&u).unwrap();
        assert_eq!(banzhaf(&v, 3).unwrap(), vec![0.5, 0.5, 0.0]);
        // u_{01} = x0 x1: Walsh variance is 3/16, order-1 part 2·(1/4)² = 1/8 → 2/3.
        let share = variance_explained(&v, 3, 2).unwrap();
        assert!(close(share[0], 2.0 / 3.0) && close(share[1], 1.0), "{share:?}");
        // Shapley values equal the Möbius-weighted sums.
        let g = SumOfUnanimityGames::random(8, 15, 4, 2).unwrap();
        let t = enumerate(&g).unwrap();
        let m = moebius(&t, 8).unwrap();
        let phi = shapley_from_table(&t, 8).unwrap();
        for (i, p) in phi.iter().enumerate() {
            let from_m: f64 = (1..256usize).filter(|s| s >> i & 1 == 1).map(|s| m[s] / s.count_ones() as f64).sum();
            assert!(close(*p, from_m));
        }
        assert!(moebius(&[0.0; 5], 2).is_err());
    }
}
