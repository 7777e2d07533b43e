//! LoRA Align (CopRA's "LA"): before averaging factors, re-parameterise each adapter `k ≥ 1` as
//! `(B_k P_k, P_k⁻¹ A_k)` with an invertible `r × r` matrix `P_k`, which leaves its own
//! `ΔW_k = s B_k A_k` unchanged but changes the factor average. `P_k` is chosen to minimise the
//! factor-vs-delta gap
//!
//! `f = ‖ (Σ_j w_j B_j P_j)(Σ_j w_j P_j⁻¹ A_j) − Σ_j w_j B_j A_j ‖_F²`   (`P_0 = I`),
//!
//! which for two adapters with equal weights is CopRA's
//! `‖ ((B₁ + B₂P)/2)((A₁ + P⁻¹A₂)/2) − (B₁A₁ + B₂A₂)/2 ‖_F²`. With more adapters each `P_k` is
//! fitted in turn (k = 1, 2, …) with the others fixed, so every adapter is aligned to the
//! first. Each fit starts at `P_k = I` and runs Adam on the entries of `P_k` with the analytic
//! gradient, keeps the best `P_k` seen and never accepts one worse than its start, so the gap
//! never increases.
//!
//! The objective is evaluated without forming any `out × in` matrix: with `B = [B_1 … B_K]`,
//! `A = [A_1; …; A_K]`, `X = [w_j P_j]` (stacked rows), `Y = [w_j P_j⁻¹]` (stacked columns) and
//! `W = blockdiag(w_j I)`, the gap matrix is `B (XY − W) A`, so
//! `f = tr(Dᵀ G_B D G_A)` with `D = XY − W`, `G_B = BᵀB`, `G_A = AAᵀ` (all `Kr × Kr`).

use super::common::common_factors;
use super::{check_adapters, checked_scale, resolve_weights, MergeOptions, WeightRule};
use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::{dot64, inverse64, matmul64, Matrix};
use anyhow::{bail, Result};
use faer::Mat;
use std::collections::BTreeMap;

/// Per-module LoRA Align diagnostics, in `ΔW` units (scale included).
#[derive(Clone, Debug, PartialEq)]
pub struct AlignReport {
    /// `‖ΔW_fusion − ΔW_mixture‖_F` with every `P = I` (the plain factor average).
    pub before: f64,
    /// The same gap after alignment (never larger than `before`).
    pub after: f64,
    /// `‖ΔW_mixture‖_F = ‖Σ w_k ΔW_k‖_F`, to turn the gaps into relative numbers.
    pub mixture_norm: f64,
    /// Mean `|P_ij|` over the fitted `P_k` (`k ≥ 1`), CoTo's "Ave. Magnitude of P" (1/r at `P = I`).
    pub mean_abs_p: f64,
}

/// The `Kr × Kr` algebra runs on faer's `f64` matrices.
type M64 = Mat<f64>;

/// `a · b` (single-threaded faer product).
fn mul(a: &M64, b: &M64) -> M64 {
    matmul64(a.as_ref(), b.as_ref())
}

/// The inverse of `m` (faer's LU).
fn inv(m: &M64) -> Result<M64> {
    inverse64(m.as_ref())
}

/// The alignment problem of one module.
struct Problem {
    k: usize,
    r: usize,
    w: Vec<f64>,
    gb: M64,
    ga: M64,
}

impl Problem {
    fn new(factors: &[LoraFactors], w: &[f64]) -> Self {
        let k = factors.len();
        let r = factors[0].rank();
        let n = k * r;
        let mut gb = M64::zeros(n, n);
        let mut ga = M64::zeros(n, n);
        // G_B[(i,a),(j,b)] = Σ_row B_i[row,a] B_j[row,b]; G_A[(i,a),(j,b)] = Σ_col A_i[a,col] A_j[b,col].
        for i in 0..k {
            for j in i..k {
                let (bi, bj) = (&factors[i].b, &factors[j].b);
                let (ai, aj) = (&factors[i].a, &factors[j].a);
                for a in 0..r {
                    for b in 0..r {
                        let mut sb = 0.0f64;
                        for row in 0..bi.rows {
                            sb += bi.get(row, a) as f64 * bj.get(row, b) as f64;
                        }
                        let ra = &ai.data[a * ai.cols..(a + 1) * ai.cols];
                        let rb = &aj.data[b * aj.cols..(b + 1) * aj.cols];
                        let sa: f64 = ra.iter().zip(rb).map(|(x, y)| *x as f64 * *y as f64).sum();
                        let (p, q) = (i * r + a, j * r + b);
                        gb[(p, q)] = sb;
                        gb[(q, p)] = sb;
                        ga[(p, q)] = sa;
                        ga[(q, p)] = sa;
                    }
                }
            }
        }
        Problem { k, r, w: w.to_vec(), gb, ga }
    }

    /// `D = XY − W` for the given `P_j` and inverses.
    fn d(&self, p: &[M64], pinv: &[M64]) -> M64 {
        let (k, r) = (self.k, self.r);
        let n = k * r;
        let mut d = M64::zeros(n, n);
        for (i, (pi, wi)) in p.iter().zip(&self.w).enumerate() {
            for (j, (pj_inv, wj)) in pinv.iter().zip(&self.w).enumerate() {
                // block (i, j) = w_i w_j P_i P_j⁻¹ − [i = j] w_i I
                let blk = mul(pi, pj_inv);
                for a in 0..r {
                    for b in 0..r {
                        let mut v = wi * wj * blk[(a, b)];
                        if i == j && a == b {
                            v -= wi;
                        }
                        d[(i * r + a, j * r + b)] = v;
                    }
                }
            }
        }
        d
    }

    /// `f = tr(Dᵀ G_B D G_A)`, clamped at 0 against round-off.
    fn objective(&self, d: &M64) -> f64 {
        dot64(mul(&mul(&self.gb, d), &self.ga).as_ref(), d.as_ref()).max(0.0)
    }

    /// Gradient of `f` with respect to `P_k` (the others fixed), given `D` at the current point.
    fn gradient(&self, d: &M64, p: &[M64], pinv: &[M64], k: usize) -> M64 {
        let (kk, r) = (self.k, self.r);
        let n = kk * r;
        // H = half of ∂f/∂D; X (n × r) = stacked w_j P_j; Y (r × n) = side-by-side w_j P_j⁻¹.
        let h = mul(&mul(&self.gb, d), &self.ga);
        let mut x = M64::zeros(n, r);
        let mut y = M64::zeros(r, n);
        for j in 0..kk {
            for a in 0..r {
                for b in 0..r {
                    x[(j * r + a, b)] = self.w[j] * p[j][(a, b)];
                    y[(a, j * r + b)] = self.w[j] * pinv[j][(a, b)];
                }
            }
        }
        let hyt = mul(&h, &y.transpose().to_owned()).submatrix(k * r, 0, r, r).to_owned();
        let xth = mul(&x.transpose().to_owned(), &h).submatrix(0, k * r, r, r).to_owned();
        let pit = pinv[k].transpose().to_owned();
        let second = mul(&mul(&pit, &xth), &pit);
        M64::from_fn(r, r, |i, j| 2.0 * self.w[k] * (hyt[(i, j)] - second[(i, j)]))
    }
}

/// Aligns the factors of one module (all of equal rank, scale folded in, weights normalised).
/// Returns the re-parameterised factors and the report; `scale` converts gaps to `ΔW` units.
pub(crate) fn align_factors(
    factors: &[LoraFactors],
    w: &[f64],
    scale: f64,
    steps: usize,
    lr: f64,
) -> Result<(Vec<LoraFactors>, AlignReport)> {
    if !(lr.is_finite() && lr > 0.0) {
        bail!("LoRA Align learning rate is {lr}; give a positive, finite learning rate");
    }
    let k = factors.len();
    let r = factors[0].rank();
    let prob = Problem::new(factors, w);
    let mut p: Vec<M64> = vec![M64::identity(r, r); k];
    let mut pinv: Vec<M64> = vec![M64::identity(r, r); k];
    let f0 = prob.objective(&prob.d(&p, &pinv));
    let mut f_cur = f0;
    let mixture_norm = {
        // ‖Σ w_k B_k A_k‖² = tr(W G_B W G_A) with W = blockdiag(w_k I).
        let n = k * r;
        let mut wm = M64::zeros(n, n);
        for (j, wj) in w.iter().enumerate() {
            for a in 0..r {
                wm[(j * r + a, j * r + a)] = *wj;
            }
        }
        dot64(mul(&mul(&prob.gb, &wm), &prob.ga).as_ref(), wm.as_ref()).max(0.0).sqrt() * scale.abs()
    };
    for target in 1..k {
        if w[target] == 0.0 {
            continue;
        }
        let (mut best_p, mut best_pinv, mut best_f) = (p[target].clone(), pinv[target].clone(), f_cur);
        let (beta1, beta2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let mut m1 = vec![0.0f64; r * r];
        let mut m2 = vec![0.0f64; r * r];
        for step in 0..=steps {
            let d = prob.d(&p, &pinv);
            let f = prob.objective(&d);
            if !f.is_finite() {
                break;
            }
            if f < best_f {
                (best_p, best_pinv, best_f) = (p[target].clone(), pinv[target].clone(), f);
            }
            if step == steps || f == 0.0 {
                break;
            }
            let g = prob.gradient(&d, &p, &pinv, target);
            if (0..r).any(|i| (0..r).any(|j| !g[(i, j)].is_finite())) {
                break;
            }
            let t = (step + 1) as i32;
            for i in 0..r * r {
                let (row, col) = (i / r, i % r);
                let gi = g[(row, col)];
                m1[i] = beta1 * m1[i] + (1.0 - beta1) * gi;
                m2[i] = beta2 * m2[i] + (1.0 - beta2) * gi * gi;
                let mh = m1[i] / (1.0 - beta1.powi(t));
                let vh = m2[i] / (1.0 - beta2.powi(t));
                p[target][(row, col)] -= lr * mh / (vh.sqrt() + eps);
            }
            match inv(&p[target]) {
                Ok(inv) => pinv[target] = inv,
                Err(_) => break,
            }
        }
        p[target] = best_p;
        pinv[target] = best_pinv;
        f_cur = best_f;
    }
    let aligned = factors
        .iter()
        .enumerate()
        .map(|(j, f)| {
            if j == 0 {
                return f.clone();
            }
            let b = Matrix::from_faer(mul(&f.b.to_faer(), &p[j]).as_ref());
            let a = Matrix::from_faer(mul(&pinv[j], &f.a.to_faer()).as_ref());
            LoraFactors { a, b }
        })
        .collect();
    let mean_abs_p = if k > 1 {
        p[1..].iter().map(|m| (0..r).flat_map(|i| (0..r).map(move |j| m[(i, j)].abs())).sum::<f64>()).sum::<f64>()
            / ((k - 1) * r * r) as f64
    } else {
        f64::NAN
    };
    let report = AlignReport {
        before: f0.sqrt() * scale.abs(),
        after: f_cur.min(f0).sqrt() * scale.abs(),
        mixture_norm,
        mean_abs_p,
    };
    Ok((aligned, report))
}

/// Runs LoRA Align on whole adapters and returns them re-parameterised (each adapter's own `ΔW`
/// is unchanged up to float round-off; adapter 0 is the reference and keeps its factors) with
/// the per-module report. Uses [`MergeOptions::align_steps`], [`MergeOptions::align_lr`] and
/// [`MergeOptions::pad_ranks`]; weights are normalised (empty = equal). Modules an adapter lacks
/// stay absent. With heterogeneous ranks and `pad_ranks`, returned modules carry the padded rank.
pub fn align_adapters(
    adapters: &[&Adapter],
    weights: &[f64],
    opts: &MergeOptions,
) -> Result<(Vec<Adapter>, BTreeMap<ModuleKey, AlignReport>)> {
    let shapes = check_adapters(adapters)?;
    let w = resolve_weights(weights, adapters.len(), WeightRule::Normalised)?;
    let spec = &adapters[0].spec;
    let mut out: Vec<Adapter> =
        adapters.iter().map(|a| Adapter { spec: a.spec.clone(), modules: BTreeMap::new() }).collect();
    let mut reports = BTreeMap::new();
    for (key, &shape) in &shapes {
        let common = common_factors(adapters, key, shape, spec, opts.pad_ranks)?;
        let aligned = if adapters.len() >= 2 {
            let (al, rep) = align_factors(&common.factors, &w, common.scale, opts.align_steps, opts.align_lr)?;
            reports.insert(*key, rep);
            al
        } else {
            common.factors
        };
        for ((ad, f), dst) in adapters.iter().zip(aligned).zip(out.iter_mut()) {
            if !ad.modules.contains_key(key) {
                continue;
            }
            let own = checked_scale(&ad.spec, common.rank)?;
            let b = f.b.scale((common.scale / own) as f32);
            dst.modules.insert(*key, LoraFactors { a: f.a, b });
        }
    }
    for ad in &mut out {
        ad.spec = super::output_spec(&ad.spec, &ad.modules);
    }
    Ok((out, reports))
}

/// The factor-vs-delta gap `‖ΔW_fusion − ΔW_mixture‖_F` per module without alignment
/// (`ΔW_fusion = s (Σ w_k B_k)(Σ w_k A_k)`, `ΔW_mixture = Σ w_k ΔW_k`, weights normalised,
/// empty = equal), computed through `Kr × Kr` Gram matrices. Ranks must match per module unless
/// `pad_ranks`.
pub fn factor_delta_gap(adapters: &[&Adapter], weights: &[f64], pad_ranks: bool) -> Result<BTreeMap<ModuleKey, f64>> {
    let shapes = check_adapters(adapters)?;
    let w = resolve_weights(weights, adapters.len(), WeightRule::Normalised)?;
    let mut out = BTreeMap::new();
    for (key, &shape) in &shapes {
        let common = common_factors(adapters, key, shape, &adapters[0].spec, pad_ranks)?;
        let prob = Problem::new(&common.factors, &w);
        let eye = vec![M64::identity(common.rank, common.rank); adapters.len()];
        out.insert(*key, prob.objective(&prob.d(&eye, &eye)).sqrt() * common.scale.abs());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge_with_report, MergeMethod};
    use super::*;
    use crate::adapter::TargetModule::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn random_factors(r: usize, out: usize, inp: usize, seed: u64) -> LoraFactors {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        LoraFactors { a: rand_matrix(r, inp, &mut rng), b: rand_matrix(out, r, &mut rng) }
    }

    fn dense_gap(fs: &[LoraFactors], w: &[f64]) -> f64 {
        let (out, inp) = (fs[0].b.rows, fs[0].a.cols);
        let r = fs[0].rank();
        let bs: Vec<(f64, &Matrix)> = w.iter().zip(fs).map(|(x, f)| (*x, &f.b)).collect();
        let as_: Vec<(f64, &Matrix)> = w.iter().zip(fs).map(|(x, f)| (*x, &f.a)).collect();
        let fusion =
            super::super::common::weighted_sum(&bs, out, r).matmul(&super::super::common::weighted_sum(&as_, r, inp));
        let prods: Vec<Matrix> = fs.iter().map(|f| f.product()).collect();
        let mix: Vec<(f64, &Matrix)> = w.iter().zip(&prods).map(|(x, m)| (*x, m)).collect();
        fusion.sub(&super::super::common::weighted_sum(&mix, out, inp)).frobenius_norm()
    }

    #[test]
    fn gram_objective_matches_dense_and_gradient_matches_finite_differences() {
        let fs: Vec<LoraFactors> = (0..3).map(|s| random_factors(2, 7, 5, 100 + s)).collect();
        let w = [0.5, 0.3, 0.2];
        let prob = Problem::new(&fs, &w);
        let eye = vec![M64::identity(2, 2); 3];
        let f = prob.objective(&prob.d(&eye, &eye));
        assert!((f.sqrt() - dense_gap(&fs, &w)).abs() < 1e-5);
        // Finite differences at a non-identity point.
        let mut p = eye.clone();
        p[1] = Matrix::from_vec(2, 2, vec![1.2, -0.3, 0.4, 0.9]).to_faer();
        p[2] = Matrix::from_vec(2, 2, vec![0.8, 0.1, -0.2, 1.1]).to_faer();
        let pinv: Vec<M64> = p.iter().map(|m| inv(m).unwrap()).collect();
        for target in [1, 2] {
            let g = prob.gradient(&prob.d(&p, &pinv), &p, &pinv, target);
            for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let h = 1e-6;
                let mut pp = p.clone();
                let mut pm = p.clone();
                pp[target][(i, j)] += h;
                pm[target][(i, j)] -= h;
                let ipp: Vec<M64> = pp.iter().map(|m| inv(m).unwrap()).collect();
                let ipm: Vec<M64> = pm.iter().map(|m| inv(m).unwrap()).collect();
                let fd = (prob.objective(&prob.d(&pp, &ipp)) - prob.objective(&prob.d(&pm, &ipm))) / (2.0 * h);
                let gij = g[(i, j)];
                assert!((fd - gij).abs() < 1e-4 * (1.0 + fd.abs()), "k={target} ({i},{j}): {fd} vs {gij}");
            }
        }
    }

    #[test]
    fn align_never_worsens_and_improves_random_pairs() {
        for seed in 0..5 {
            let fs = vec![random_factors(3, 8, 6, 200 + seed), random_factors(3, 8, 6, 300 + seed)];
            let w = [0.5, 0.5];
            let (al, rep) = align_factors(&fs, &w, 1.0, 300, 0.01).unwrap();
            assert!(rep.after <= rep.before, "seed {seed}: {rep:?}");
            assert!(rep.after < 0.95 * rep.before, "seed {seed}: no strict improvement {rep:?}");
            assert!((rep.before - dense_gap(&fs, &w)).abs() < 1e-4);
            assert!((rep.after - dense_gap(&al, &w)).abs() < 1e-3 * (1.0 + rep.after), "{rep:?}");
            // Each adapter's own product is unchanged.
            for (x, y) in fs.iter().zip(&al) {
                assert!(x.product().sub(&y.product()).frobenius_norm() < 1e-4);
            }
        }
    }

    #[test]
    fn align_recovers_a_hidden_gauge() {
        // Adapter 2 is adapter 1 re-parameterised by R: same ΔW, different factors. The ideal
        // P = R⁻¹ closes the gap completely; the fit must remove most of it.
        let f1 = random_factors(2, 9, 7, 400);
        let rm = Matrix::from_vec(2, 2, vec![2.0, 1.0, -0.5, 0.7]);
        let f2 = LoraFactors { a: rm.inverse().unwrap().matmul(&f1.a), b: f1.b.matmul(&rm) };
        let (_, rep) = align_factors(&[f1, f2], &[0.5, 0.5], 1.0, 300, 0.01).unwrap();
        assert!(rep.before > 0.1 * rep.mixture_norm, "{rep:?}");
        assert!(rep.after < 0.05 * rep.before, "{rep:?}");
    }

    #[test]
    fn factor_average_with_align_reports_consistent_gaps() {
        let keys = [key(0, Query), key(1, Value)];
        let a = random_adapter(&keys, 2, 6, 5, 500);
        let b = random_adapter(&keys, 2, 6, 5, 501);
        let c = random_adapter(&keys[..1], 2, 6, 5, 502);
        let w = [0.5, 0.3, 0.2];
        let gaps = factor_delta_gap(&[&a, &b, &c], &w, false).unwrap();
        let opts = MergeOptions { align: true, ..MergeOptions::default() };
        let out = merge_with_report(&[&a, &b, &c], &w, &MergeMethod::parse("factor").unwrap(), &opts).unwrap();
        let plain =
            merge_with_report(&[&a, &b, &c], &w, &MergeMethod::parse("factor").unwrap(), &MergeOptions::default())
                .unwrap();
        assert!(plain.align.is_empty());
        let mix = super::super::task_arithmetic_deltas(&[&a.deltas(), &b.deltas(), &c.deltas()], &w, 1.0).unwrap();
        let merged = out.merged.deltas();
        let plain = plain.merged.deltas();
        for k in keys {
            let rep = &out.align[&k];
            assert!((rep.before - gaps[&k]).abs() < 1e-5);
            assert!((rep.before - plain[&k].sub(&mix[&k]).frobenius_norm()).abs() < 1e-4);
            assert!((rep.after - merged[&k].sub(&mix[&k]).frobenius_norm()).abs() < 1e-3);
            assert!(rep.after < rep.before, "{k}: {rep:?}");
            assert!((rep.mixture_norm - mix[&k].frobenius_norm()).abs() < 1e-4);
        }
    }

    #[test]
    fn aligned_adapters_keep_their_deltas() {
        let keys = [key(0, Query), key(2, Key)];
        let a = random_adapter(&keys, 2, 6, 5, 600);
        let b = random_adapter(&keys[1..], 2, 6, 5, 601);
        let (al, rep) = align_adapters(&[&a, &b], &[], &MergeOptions::default()).unwrap();
        assert_eq!(al[1].modules.len(), 1);
        assert!(max_diff(&al[0].deltas(), &a.deltas()) < 1e-6);
        assert!(max_diff(&al[1].deltas(), &b.deltas()) < 1e-4);
        assert!(rep[&key(2, Key)].after < rep[&key(2, Key)].before);
        // A module only adapter a has: b's side is zero, so no P can change the gap.
        assert!(rep[&key(0, Query)].after <= rep[&key(0, Query)].before);
        let bad = MergeOptions { align_lr: -1.0, ..MergeOptions::default() };
        assert!(align_adapters(&[&a, &b], &[], &bad).is_err());
    }
}
