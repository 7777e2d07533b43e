//! Merges on dense deltas: task arithmetic and TIES.

use super::{adapter_deltas, resolve_weights, WeightRule};
use crate::adapter::{Adapter, ModuleKey};
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Checks that every delta map agrees on the shape of shared modules; returns the union's shapes.
fn delta_shapes(deltas: &[&BTreeMap<ModuleKey, Matrix>]) -> Result<BTreeMap<ModuleKey, (usize, usize)>> {
    if deltas.is_empty() {
        bail!("no deltas to merge; pass at least one delta map");
    }
    let mut shapes: BTreeMap<ModuleKey, ((usize, usize), usize)> = BTreeMap::new();
    for (i, map) in deltas.iter().enumerate() {
        for (key, m) in map.iter() {
            match shapes.get(key) {
                Some(&(shape, first)) if shape != m.shape() => bail!(
                    "module {key}: delta {i} is {}x{} but delta {first} is {}x{}; merge deltas of the same base model",
                    m.rows,
                    m.cols,
                    shape.0,
                    shape.1
                ),
                Some(_) => {}
                None => {
                    shapes.insert(*key, (m.shape(), i));
                }
            }
        }
    }
    Ok(shapes.into_iter().map(|(k, (s, _))| (k, s)).collect())
}

/// Task arithmetic on dense deltas: `λ · Σ w_k ΔW_k`, weights as given (empty = 1 each); a module
/// missing from a map counts as zero.
pub fn task_arithmetic_deltas(
    deltas: &[&BTreeMap<ModuleKey, Matrix>],
    weights: &[f64],
    lambda: f64,
) -> Result<BTreeMap<ModuleKey, Matrix>> {
    if !lambda.is_finite() {
        bail!("task-arithmetic lambda is {lambda}; give a finite number");
    }
    let shapes = delta_shapes(deltas)?;
    let w = resolve_weights(weights, deltas.len(), WeightRule::Raw)?;
    Ok(task_arithmetic_core(deltas, &w, lambda, &shapes))
}

/// TIES on dense deltas (Yadav et al. 2023): per module and input, keep the `density` fraction of
/// entries with the largest magnitude (`round(density · n)` entries; equal magnitudes are kept in
/// row-major order), elect each entry's sign as the sign of `Σ w_k τ̂_k` ("total mass"; a zero
/// sum gives 0), then take the weighted mean `Σ w_k τ̂_k / Σ w_k` over the inputs whose trimmed
/// entry is non-zero and has the elected sign, times `λ`. Weights must be positive (empty = 1
/// each); a module missing from a map counts as zero (it never joins the mean).
pub fn ties_deltas(
    deltas: &[&BTreeMap<ModuleKey, Matrix>],
    weights: &[f64],
    density: f64,
    lambda: f64,
) -> Result<BTreeMap<ModuleKey, Matrix>> {
    super::MergeMethod::Ties { density, lambda }.validate()?;
    let shapes = delta_shapes(deltas)?;
    let w = resolve_weights(weights, deltas.len(), WeightRule::Positive)?;
    Ok(ties_core(deltas, &w, density, lambda, &shapes))
}

pub(crate) fn task_arithmetic_impl(
    adapters: &[&Adapter],
    w: &[f64],
    lambda: f64,
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
) -> BTreeMap<ModuleKey, Matrix> {
    let deltas: Vec<BTreeMap<ModuleKey, Matrix>> = adapters.iter().map(|a| adapter_deltas(a)).collect();
    task_arithmetic_core(&deltas.iter().collect::<Vec<_>>(), w, lambda, shapes)
}

pub(crate) fn ties_impl(
    adapters: &[&Adapter],
    w: &[f64],
    density: f64,
    lambda: f64,
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
) -> BTreeMap<ModuleKey, Matrix> {
    let deltas: Vec<BTreeMap<ModuleKey, Matrix>> = adapters.iter().map(|a| adapter_deltas(a)).collect();
    ties_core(&deltas.iter().collect::<Vec<_>>(), w, density, lambda, shapes)
}

fn task_arithmetic_core(
    deltas: &[&BTreeMap<ModuleKey, Matrix>],
    w: &[f64],
    lambda: f64,
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
) -> BTreeMap<ModuleKey, Matrix> {
    shapes
        .iter()
        .map(|(key, &(rows, cols))| {
            let parts: Vec<(f64, &Matrix)> =
                deltas.iter().zip(w).filter_map(|(d, wk)| d.get(key).map(|m| (lambda * wk, m))).collect();
            (*key, super::factor::weighted_sum(&parts, rows, cols))
        })
        .collect()
}

/// Zeroes all but the `keep` largest-magnitude entries (ties: lower row-major index kept first).
/// Linear time: the `keep`-th largest magnitude is found by selection.
pub(crate) fn keep_top_magnitude(values: &[f32], keep: usize) -> Vec<f32> {
    if keep >= values.len() {
        return values.to_vec();
    }
    let mut out = vec![0.0f32; values.len()];
    if keep == 0 {
        return out;
    }
    let mut mags: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    let threshold = *mags.select_nth_unstable_by(keep - 1, |a, b| b.total_cmp(a)).1;
    let above = mags.iter().filter(|v| v.total_cmp(&threshold).is_gt()).count();
    let mut ties_left = keep - above;
    for (o, v) in out.iter_mut().zip(values) {
        match v.abs().total_cmp(&threshold) {
            std::cmp::Ordering::Greater => *o = *v,
            std::cmp::Ordering::Equal if ties_left > 0 => {
                *o = *v;
                ties_left -= 1;
            }
            _ => {}
        }
    }
    out
}

fn ties_core(
    deltas: &[&BTreeMap<ModuleKey, Matrix>],
    w: &[f64],
    density: f64,
    lambda: f64,
    shapes: &BTreeMap<ModuleKey, (usize, usize)>,
) -> BTreeMap<ModuleKey, Matrix> {
    let mut out = BTreeMap::new();
    for (key, &(rows, cols)) in shapes {
        let n = rows * cols;
        let keep = (density * n as f64).round() as usize;
        let trimmed: Vec<(f64, Vec<f32>)> = deltas
            .iter()
            .zip(w)
            .filter_map(|(d, wk)| d.get(key).map(|m| (*wk, keep_top_magnitude(&m.data, keep))))
            .collect();
        let mut merged = vec![0.0f32; n];
        for (idx, o) in merged.iter_mut().enumerate() {
            let mass: f64 = trimmed.iter().map(|(wk, t)| wk * t[idx] as f64).sum();
            if mass == 0.0 {
                continue;
            }
            let (mut num, mut den) = (0.0f64, 0.0f64);
            for (wk, t) in &trimmed {
                let v = t[idx] as f64;
                if v != 0.0 && v.signum() == mass.signum() {
                    num += wk * v;
                    den += wk;
                }
            }
            if den > 0.0 {
                *o = (lambda * num / den) as f32;
            }
        }
        out.insert(*key, Matrix::from_vec(rows, cols, merged));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{adapter_deltas, merge, MergeMethod, MergeOptions, Merged};
    use super::*;
    use crate::adapter::{Adapter, LoraFactors, TargetModule::*};

    /// An adapter whose single module has exactly `ΔW = d` (2×2, rank 2, s = 1).
    fn exact(d: [f32; 4]) -> Adapter {
        Adapter {
            spec: unit_spec(2),
            modules: [(key(0, Query), LoraFactors { a: Matrix::identity(2), b: Matrix::from_vec(2, 2, d.to_vec()) })]
                .into(),
        }
    }

    #[test]
    fn ties_hand_computed_2x2() {
        let t1 = exact([3.0, -1.0, 0.5, 2.0]);
        let t2 = exact([-1.0, -2.0, 1.0, -4.0]);
        let t3 = exact([2.0, 0.2, -3.0, 1.0]);
        // density 0.5 keeps 2 of 4 entries: [[3,0],[0,2]], [[0,-2],[0,-4]], [[2,0],[-3,0]].
        // Elected signs: +, -, -, -. Disjoint means: (3+2)/2, -2, -3, -4.
        let m = MergeMethod::Ties { density: 0.5, lambda: 1.0 };
        let out = merge(&[&t1, &t2, &t3], &[], &m, &MergeOptions::default()).unwrap();
        assert!(matches!(out, Merged::Dense(_)));
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![2.5, -2.0, -3.0, -4.0]);
        // Weights [1, 1, 2] and λ = 0.5: entry (0,0) = 0.5 · (3 + 2·2) / 3.
        let m = MergeMethod::Ties { density: 0.5, lambda: 0.5 };
        let out = merge(&[&t1, &t2, &t3], &[1.0, 1.0, 2.0], &m, &MergeOptions::default()).unwrap();
        let d = &out.deltas()[&key(0, Query)];
        let expect = [0.5 * 7.0 / 3.0, -1.0, -1.5, -2.0];
        for (x, y) in d.data.iter().zip(expect) {
            assert!((x - y).abs() < 1e-6, "{:?}", d.data);
        }
        // density 1 keeps everything: entry (0,0) = mean of the positive values 3 and 2.
        let m = MergeMethod::Ties { density: 1.0, lambda: 1.0 };
        let out = merge(&[&t1, &t2, &t3], &[], &m, &MergeOptions::default()).unwrap();
        // (0,1): -1 -2 +0.2 → −, mean(-1,-2) = -1.5; (1,0): 0.5+1-3 → −, -3; (1,1): 2-4+1 → −, -4.
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![2.5, -1.5, -3.0, -4.0]);
        // density 0 keeps nothing.
        let m = MergeMethod::Ties { density: 0.0, lambda: 1.0 };
        let out = merge(&[&t1, &t2], &[], &m, &MergeOptions::default()).unwrap();
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![0.0; 4]);
    }

    #[test]
    fn trimming_breaks_ties_by_index() {
        assert_eq!(keep_top_magnitude(&[1.0, -1.0, 1.0, 1.0], 2), vec![1.0, -1.0, 0.0, 0.0]);
        assert_eq!(keep_top_magnitude(&[0.5, -3.0, 2.0], 1), vec![0.0, -3.0, 0.0]);
        assert_eq!(keep_top_magnitude(&[0.5, -3.0, 2.0], 0), vec![0.0; 3]);
        assert_eq!(keep_top_magnitude(&[0.5, -3.0, 2.0], 3), vec![0.5, -3.0, 2.0]);
        // Against a full sort on tie-heavy random input.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for _ in 0..50 {
            let n = rng.random_range(1..30usize);
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-2i32..=2) as f32).collect();
            let keep = rng.random_range(0..=n);
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&i, &j| v[j].abs().total_cmp(&v[i].abs()).then(i.cmp(&j)));
            let mut expect = vec![0.0f32; n];
            for &i in order.iter().take(keep) {
                expect[i] = v[i];
            }
            assert_eq!(keep_top_magnitude(&v, keep), expect);
        }
    }

    #[test]
    fn ties_with_missing_module_and_weights_errors() {
        let t1 = exact([1.0, 2.0, 3.0, 4.0]);
        let mut t2 = exact([1.0, 1.0, 1.0, 1.0]);
        t2.modules.clear();
        let m = MergeMethod::Ties { density: 1.0, lambda: 1.0 };
        let out = merge(&[&t1, &t2], &[], &m, &MergeOptions::default()).unwrap();
        assert_eq!(out.deltas()[&key(0, Query)].data, vec![1.0, 2.0, 3.0, 4.0]);
        assert!(merge(&[&t1, &t2], &[1.0, -1.0], &m, &MergeOptions::default()).is_err());
        let bad = MergeMethod::Ties { density: -0.1, lambda: 1.0 };
        assert!(merge(&[&t1], &[], &bad, &MergeOptions::default()).is_err());
    }

    #[test]
    fn task_arithmetic_identity_and_sum() {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 5, 4, 40);
        let m = MergeMethod::TaskArithmetic { lambda: 1.0 };
        let out = merge(&[&a], &[], &m, &MergeOptions::default()).unwrap();
        assert!(max_diff(&out.deltas(), &adapter_deltas(&a)) < 1e-6);
        // Not normalised: a + a with λ = 0.5 is a; weights [2, -1] give a.
        let half = MergeMethod::TaskArithmetic { lambda: 0.5 };
        let out = merge(&[&a, &a], &[], &half, &MergeOptions::default()).unwrap();
        assert!(max_diff(&out.deltas(), &adapter_deltas(&a)) < 1e-6);
        let out = merge(&[&a, &a], &[2.0, -1.0], &m, &MergeOptions::default()).unwrap();
        assert!(max_diff(&out.deltas(), &adapter_deltas(&a)) < 1e-5);
        // Re-factorised output at the adapter's rank is exact for a single adapter.
        let opts = MergeOptions { refactor_rank: Some(2), ..MergeOptions::default() };
        let out = merge(&[&a], &[], &m, &opts).unwrap();
        assert_eq!(out.adapter().unwrap().spec.rank, 2);
        assert!(max_diff(&out.deltas(), &adapter_deltas(&a)) < 1e-5);
        // And TIES at density 1 re-factorised at rank 2 reproduces a single adapter too.
        let t = MergeMethod::Ties { density: 1.0, lambda: 1.0 };
        let out = merge(&[&a], &[], &t, &opts).unwrap();
        assert!(max_diff(&out.deltas(), &adapter_deltas(&a)) < 1e-5);
    }

    #[test]
    fn dense_entry_points_check_shapes() {
        let a = adapter_deltas(&exact([1.0, 2.0, 3.0, 4.0]));
        let mut b = a.clone();
        b.insert(key(0, Query), Matrix::zeros(3, 2));
        assert!(task_arithmetic_deltas(&[&a, &b], &[], 1.0).unwrap_err().to_string().contains("module 0.q"));
        assert!(ties_deltas(&[], &[], 0.5, 1.0).is_err());
        let s = task_arithmetic_deltas(&[&a, &a], &[1.0, 1.0], 1.0).unwrap();
        assert_eq!(s[&key(0, Query)].data, vec![2.0, 4.0, 6.0, 8.0]);
    }
}
