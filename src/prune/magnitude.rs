//! Unstructured magnitude pruning of adapters. `sparsity` is the fraction of entries REMOVED
//! (set to zero); `round(sparsity · n)` entries go, rounding halves away from zero. Entries are
//! removed smallest `|value|` first; equal magnitudes are removed in a fixed order (module key
//! order, then row-major index), so results are deterministic. Entries that are already zero
//! count among the smallest.
//!
//! Two targets:
//! - dense `ΔW` per module ([`prune_deltas`], [`prune_adapter_deltas`]): the low-rank structure
//!   is lost;
//! - the factors `A` and `B` ([`prune_factors`], [`prune_factor_deltas`]): `A` entries and `B`
//!   entries are ranked separately (their magnitudes live on different scales), then
//!   `ΔW = s · B' · A'`.
//!
//! [`Ranking::PerModule`] removes the fraction inside every matrix; [`Ranking::Global`] ranks
//! all matrices of a kind together (all `ΔW`, or all `A` and, separately, all `B`), as
//! `torch.nn.utils.prune.global_unstructured` does.

use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where magnitudes are compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ranking {
    /// Remove the fraction inside every matrix separately.
    #[default]
    PerModule,
    /// Rank all matrices of a kind together and remove the fraction of their total.
    Global,
}

impl crate::choice::Choice for Ranking {
    const WHAT: &'static str = "magnitude ranking";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("per-module", "remove the fraction inside every matrix separately", Ranking::PerModule),
        ("global", "rank all matrices of a kind together and remove the fraction of their total", Ranking::Global),
    ];
}

/// Number of entries removed from `n` at `sparsity`: `round(sparsity · n)`.
pub fn removal_count(n: usize, sparsity: f64) -> usize {
    ((sparsity * n as f64).round() as usize).min(n)
}

fn check_sparsity(sparsity: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&sparsity) {
        bail!("sparsity {sparsity} is outside [0, 1]; it is the fraction of entries removed");
    }
    Ok(())
}

/// Zeroes the `remove` smallest-magnitude entries across `mats` (ties: earlier matrix, then
/// lower row-major index, removed first). Linear time: the `remove`-th smallest magnitude is
/// found by selection, then entries below it and the first ties are zeroed in order.
fn zero_smallest(mats: &mut [&mut Matrix], remove: usize) {
    let total: usize = mats.iter().map(|m| m.data.len()).sum();
    if remove == 0 {
        return;
    }
    if remove >= total {
        for m in mats.iter_mut() {
            m.data.iter_mut().for_each(|v| *v = 0.0);
        }
        return;
    }
    let mut mags: Vec<f32> = mats.iter().flat_map(|m| m.data.iter().map(|v| v.abs())).collect();
    let threshold = *mags.select_nth_unstable_by(remove - 1, |a, b| a.total_cmp(b)).1;
    let below = mags.iter().filter(|v| v.total_cmp(&threshold).is_lt()).count();
    let mut ties_left = remove - below;
    for m in mats.iter_mut() {
        for v in m.data.iter_mut() {
            match v.abs().total_cmp(&threshold) {
                std::cmp::Ordering::Less => *v = 0.0,
                std::cmp::Ordering::Equal if ties_left > 0 => {
                    *v = 0.0;
                    ties_left -= 1;
                }
                _ => {}
            }
        }
    }
}

/// Prunes groups of matrices: each group on its own under [`Ranking::PerModule`], all together
/// under [`Ranking::Global`].
fn prune_all(mats: &mut [&mut Matrix], sparsity: f64, ranking: Ranking) {
    match ranking {
        Ranking::PerModule => {
            for m in mats.iter_mut() {
                let remove = removal_count(m.data.len(), sparsity);
                zero_smallest(&mut [&mut **m], remove);
            }
        }
        Ranking::Global => {
            let total: usize = mats.iter().map(|m| m.data.len()).sum();
            zero_smallest(mats, removal_count(total, sparsity));
        }
    }
}

/// One matrix with its `round(sparsity · n)` smallest-magnitude entries zeroed.
pub fn prune_matrix(m: &Matrix, sparsity: f64) -> Result<Matrix> {
    check_sparsity(sparsity)?;
    let mut out = m.clone();
    let remove = removal_count(out.data.len(), sparsity);
    zero_smallest(&mut [&mut out], remove);
    Ok(out)
}

/// One matrix with only its `keep` largest-magnitude entries left: the other
/// `n − keep` entries are removed by the same selection (and tie rule) as [`prune_matrix`], so
/// among equal magnitudes at the threshold the later ones (row-major) are kept. TIES trims with it.
pub fn keep_largest(m: &Matrix, keep: usize) -> Matrix {
    let mut out = m.clone();
    let remove = out.data.len().saturating_sub(keep);
    zero_smallest(&mut [&mut out], remove);
    out
}

/// Magnitude pruning of dense deltas, per module or globally.
pub fn prune_deltas(
    deltas: &BTreeMap<ModuleKey, Matrix>,
    sparsity: f64,
    ranking: Ranking,
) -> Result<BTreeMap<ModuleKey, Matrix>> {
    check_sparsity(sparsity)?;
    let mut out = deltas.clone();
    let mut mats: Vec<&mut Matrix> = out.values_mut().collect();
    prune_all(&mut mats, sparsity, ranking);
    Ok(out)
}

/// (a) Prunes the dense `ΔW = s·B·A` of every module of `adapter` (scale included).
pub fn prune_adapter_deltas(adapter: &Adapter, sparsity: f64, ranking: Ranking) -> Result<BTreeMap<ModuleKey, Matrix>> {
    let deltas: BTreeMap<ModuleKey, Matrix> = adapter.modules.keys().map(|k| (*k, adapter.delta(k))).collect();
    prune_deltas(&deltas, sparsity, ranking)
}

/// (b) Prunes the factors: `A` entries and `B` entries separately (per matrix, or all `A`s
/// together and all `B`s together under [`Ranking::Global`]). Returns the pruned adapter.
pub fn prune_factors(adapter: &Adapter, sparsity: f64, ranking: Ranking) -> Result<Adapter> {
    check_sparsity(sparsity)?;
    let mut out = adapter.clone();
    let (mut a_mats, mut b_mats): (Vec<&mut Matrix>, Vec<&mut Matrix>) =
        out.modules.values_mut().map(|LoraFactors { a, b }| (a, b)).unzip();
    prune_all(&mut a_mats, sparsity, ranking);
    prune_all(&mut b_mats, sparsity, ranking);
    Ok(out)
}

/// (b) as dense deltas: `ΔW = s · B' · A'` of [`prune_factors`].
pub fn prune_factor_deltas(adapter: &Adapter, sparsity: f64, ranking: Ranking) -> Result<BTreeMap<ModuleKey, Matrix>> {
    let pruned = prune_factors(adapter, sparsity, ranking)?;
    Ok(pruned.modules.keys().map(|k| (*k, pruned.delta(k))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{LoraSpec, Scaling, TargetModule::*};

    fn key(block: usize) -> ModuleKey {
        ModuleKey { block, module: Value }
    }

    fn adapter() -> Adapter {
        // s = 1 (standard scaling, alpha = rank = 2).
        let spec = LoraSpec { rank: 2, alpha: 2.0, scaling: Scaling::Standard, ..LoraSpec::default() };
        let f0 = LoraFactors {
            a: Matrix::from_vec(2, 3, vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]),
            b: Matrix::from_vec(2, 2, vec![0.5, -0.1, 0.2, 0.3]),
        };
        let f1 = LoraFactors {
            a: Matrix::from_vec(2, 3, vec![10.0, 20.0, 30.0, 40.0, 50.0, 60.0]),
            b: Matrix::from_vec(2, 2, vec![7.0, 8.0, 9.0, 10.0]),
        };
        Adapter { spec, modules: [(key(0), f0), (key(1), f1)].into() }
    }

    #[test]
    fn hand_made_matrix_at_half() {
        let m = Matrix::from_vec(2, 3, vec![0.5, -3.0, 0.1, 2.0, -0.4, 1.0]);
        // Three smallest magnitudes: 0.1, -0.4, 0.5.
        assert_eq!(prune_matrix(&m, 0.5).unwrap().data, vec![0.0, -3.0, 0.0, 2.0, 0.0, 1.0]);
        // Ties go in row-major order: remove 2 of four equal magnitudes → the first two.
        let t = Matrix::from_vec(2, 2, vec![1.0, -1.0, 1.0, -1.0]);
        assert_eq!(prune_matrix(&t, 0.5).unwrap().data, vec![0.0, 0.0, 1.0, -1.0]);
    }

    #[test]
    fn zero_and_full_sparsity() {
        let ad = adapter();
        let deltas: BTreeMap<ModuleKey, Matrix> = ad.modules.keys().map(|k| (*k, ad.delta(k))).collect();
        for ranking in [Ranking::PerModule, Ranking::Global] {
            assert_eq!(prune_adapter_deltas(&ad, 0.0, ranking).unwrap(), deltas);
            assert_eq!(prune_factor_deltas(&ad, 0.0, ranking).unwrap(), deltas);
            assert_eq!(prune_factors(&ad, 0.0, ranking).unwrap(), ad);
            for m in prune_adapter_deltas(&ad, 1.0, ranking).unwrap().values() {
                assert_eq!(m.count_zeros(), m.data.len());
            }
            for m in prune_factor_deltas(&ad, 1.0, ranking).unwrap().values() {
                assert_eq!(m.count_zeros(), m.data.len());
            }
        }
    }

    #[test]
    fn removed_fraction_is_rounded_count() {
        let ad = adapter();
        for sparsity in [0.1, 0.25, 0.3, 0.5, 0.7, 0.9] {
            let per = prune_adapter_deltas(&ad, sparsity, Ranking::PerModule).unwrap();
            for m in per.values() {
                assert_eq!(m.count_zeros(), removal_count(m.data.len(), sparsity), "sparsity {sparsity}");
            }
            let global = prune_adapter_deltas(&ad, sparsity, Ranking::Global).unwrap();
            let zeros: usize = global.values().map(|m| m.count_zeros()).sum();
            assert_eq!(zeros, removal_count(12, sparsity));
            let pf = prune_factors(&ad, sparsity, Ranking::PerModule).unwrap();
            for f in pf.modules.values() {
                assert_eq!(f.a.count_zeros(), removal_count(6, sparsity));
                assert_eq!(f.b.count_zeros(), removal_count(4, sparsity));
            }
            let gf = prune_factors(&ad, sparsity, Ranking::Global).unwrap();
            assert_eq!(gf.modules.values().map(|f| f.a.count_zeros()).sum::<usize>(), removal_count(12, sparsity));
            assert_eq!(gf.modules.values().map(|f| f.b.count_zeros()).sum::<usize>(), removal_count(8, sparsity));
        }
        assert_eq!(removal_count(5, 0.5), 3); // 2.5 rounds away from zero
    }

    #[test]
    fn global_ranking_prunes_the_small_module_first() {
        let ad = adapter();
        // Module 0's A entries (|1..6|) are all smaller than module 1's (10..60).
        let gf = prune_factors(&ad, 0.5, Ranking::Global).unwrap();
        assert_eq!(gf.modules[&key(0)].a.count_zeros(), 6);
        assert_eq!(gf.modules[&key(1)].a, ad.modules[&key(1)].a);
        // B: module 0 holds the 4 smallest of 8.
        assert_eq!(gf.modules[&key(0)].b.count_zeros(), 4);
        // Factor pruning per module, by hand: A0 keeps -4, 5, -6; B0 keeps 0.5, 0.3.
        let pf = prune_factors(&ad, 0.5, Ranking::PerModule).unwrap();
        assert_eq!(pf.modules[&key(0)].a.data, vec![0.0, 0.0, 0.0, -4.0, 5.0, -6.0]);
        assert_eq!(pf.modules[&key(0)].b.data, vec![0.5, 0.0, 0.0, 0.3]);
        let d = &prune_factor_deltas(&ad, 0.5, Ranking::PerModule).unwrap()[&key(0)];
        // B'A' = [[0.5·0, ...], ...]: row 0 = 0.5·[0,0,0] + 0·[-4,5,-6] = 0; row 1 = 0.3·[-4,5,-6].
        let expect = [0.0, 0.0, 0.0, -1.2, 1.5, -1.8];
        for (x, y) in d.data.iter().zip(expect) {
            assert!((x - y).abs() < 1e-6, "{:?}", d.data);
        }
    }

    #[test]
    fn selection_matches_a_full_sort_with_many_ties() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        for trial in 0..50 {
            let sizes = [rng.random_range(1..20usize), rng.random_range(1..20usize)];
            let mut mats: Vec<Matrix> = sizes
                .iter()
                .map(|&n| Matrix::from_vec(1, n, (0..n).map(|_| rng.random_range(-3i32..=3) as f32).collect()))
                .collect();
            let total = sizes[0] + sizes[1];
            let remove = rng.random_range(0..=total);
            // Reference: sort (|v|, matrix, index) and zero the first `remove`.
            let mut order: Vec<(f32, usize, usize)> = mats
                .iter()
                .enumerate()
                .flat_map(|(m, mat)| mat.data.iter().enumerate().map(move |(i, v)| (v.abs(), m, i)))
                .collect();
            order.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
            let mut expect = mats.clone();
            for &(_, m, i) in order.iter().take(remove) {
                expect[m].data[i] = 0.0;
            }
            let mut refs: Vec<&mut Matrix> = mats.iter_mut().collect();
            zero_smallest(&mut refs, remove);
            assert_eq!(mats, expect, "trial {trial}");
        }
    }

    #[test]
    fn keep_largest_is_prune_with_the_complement() {
        let m = Matrix::from_vec(1, 5, vec![0.5, -3.0, 2.0, -2.0, 0.1]);
        assert_eq!(keep_largest(&m, 2).data, vec![0.0, -3.0, 0.0, -2.0, 0.0]);
        assert_eq!(keep_largest(&m, 0).data, vec![0.0; 5]);
        assert_eq!(keep_largest(&m, 9), m);
        // Pruning at sparsity 0.6 removes round(0.6 · 5) = 3 entries with the same selection.
        assert_eq!(keep_largest(&m, 2), prune_matrix(&m, 0.6).unwrap());
    }

    #[test]
    fn sparsity_is_checked() {
        let ad = adapter();
        assert!(prune_adapter_deltas(&ad, 1.5, Ranking::Global).unwrap_err().to_string().contains("[0, 1]"));
        assert!(prune_factors(&ad, -0.1, Ranking::PerModule).is_err());
        assert!(prune_matrix(&Matrix::zeros(1, 1), f64::NAN).is_err());
    }
}
