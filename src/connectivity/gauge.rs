//! Gauge alignment before factor-space interpolation. A LoRA module `(B, A)` and
//! `(B·P, P⁻¹·A)` give the same `ΔW` for every invertible `r × r` matrix `P`, so a straight line
//! between two seeds' factors depends on an arbitrary choice of gauge, much as a line between
//! two networks depends on the order of their neurons. [`align_gauge`] re-parameterises the
//! second adapter, module by module, within a symmetry group, leaving each of its `ΔW`
//! unchanged, so that the factor path starts from the gauge closest to the first adapter:
//!
//! - [`Gauge::Orthogonal`]: `(B·Q, Qᵀ·A)` with `Q` orthogonal, minimising the factor distance
//!   `‖B_b Q − B_a‖² + ‖Qᵀ A_b − A_a‖²`. Closed form (orthogonal Procrustes): with
//!   `M = B_bᵀ B_a + A_b A_aᵀ = U Σ Vᵀ`, `Q = U Vᵀ`.
//! - [`Gauge::SignedPermutation`]: the same distance over permutations with sign flips (the
//!   subgroup Git Re-Basin's weight matching searches for hidden units): the assignment that
//!   maximises `Σ_j |M_{π(j) j}|`, each sign that of its entry; exact enumeration of the `r!`
//!   orders (ranks up to [`MAX_PERMUTATION_RANK`]).
//! - [`Gauge::General`]: `(B·P, P⁻¹·A)` with `P` invertible, fitted by LoRA Align
//!   ([`crate::merge::align_adapters`]), which minimises the gap between the factor path's
//!   midpoint and the delta path's midpoint, `‖½(B_a + B_b P)·½(A_a + P⁻¹A_b) − ½(ΔW_a + ΔW_b)‖`.
//!
//! `B_b` is compared at `a`'s scale (`s_b / s_a` folded in), as the factor path does.

use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::{matmul64, svd64, Matrix};
use crate::merge::{align_adapters, MergeOptions};
use anyhow::{bail, Result};
use faer::Mat;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The largest rank [`Gauge::SignedPermutation`] enumerates (`8! = 40,320` orders).
pub const MAX_PERMUTATION_RANK: usize = 8;

/// A symmetry group of a LoRA module's factors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Gauge {
    /// Orthogonal `Q` (closed form).
    Orthogonal,
    /// Permutations with sign flips.
    SignedPermutation,
    /// Any invertible `P` (LoRA Align's fit).
    General,
}

impl Gauge {
    /// Every gauge, in the order reports list them.
    pub const ALL: [Gauge; 3] = [Gauge::Orthogonal, Gauge::General, Gauge::SignedPermutation];

    /// `orth`, `perm` or `gl`.
    pub fn name(self) -> &'static str {
        match self {
            Gauge::Orthogonal => "orth",
            Gauge::SignedPermutation => "perm",
            Gauge::General => "gl",
        }
    }

    /// Parses a [`Gauge::name`] (case-insensitive).
    pub fn parse(s: &str) -> Result<Gauge> {
        let s = s.trim().to_ascii_lowercase();
        match Gauge::ALL.iter().find(|g| g.name() == s) {
            Some(g) => Ok(*g),
            None => bail!("unknown gauge `{s}`; use orth (orthogonal), gl (invertible) or perm (signed permutation)"),
        }
    }
}

impl fmt::Display for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How far one module of the second adapter was from the first, before and after alignment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GaugeReport {
    /// Factor distance `√(‖B_b − B_a‖² + ‖A_b − A_a‖²)` before alignment (`B_b` at `a`'s scale).
    pub distance_before: f64,
    /// The same distance after alignment.
    pub distance_after: f64,
    /// `‖midpoint of the factor path − midpoint of the delta path‖_F` before alignment (scale
    /// included): what the factor path loses at `α = ½` from the cross term.
    pub midpoint_gap_before: f64,
    /// The same gap after alignment.
    pub midpoint_gap_after: f64,
}

/// `b` re-parameterised within `gauge` towards `a`, module by module, with a report per module
/// both adapters carry. Modules only one adapter has are left as they are; `b` keeps its spec
/// and every `ΔW` (to float round-off). `opts` gives LoRA Align's steps and learning rate for
/// [`Gauge::General`]. Errors when a shared module's ranks differ.
pub fn align_gauge(
    a: &Adapter,
    b: &Adapter,
    gauge: Gauge,
    opts: &MergeOptions,
) -> Result<(Adapter, BTreeMap<ModuleKey, GaugeReport>)> {
    let shared: Vec<ModuleKey> = a.modules.keys().filter(|k| b.modules.contains_key(k)).copied().collect();
    for key in &shared {
        let (ra, rb) = (a.modules[key].rank(), b.modules[key].rank());
        if ra != rb {
            bail!("module {key} has rank {ra} in a and {rb} in b; gauge alignment needs equal ranks");
        }
    }
    let aligned = match gauge {
        Gauge::General => align_adapters(&[a, b], &[], &MergeOptions { pad_ranks: false, ..opts.clone() })?.0.remove(1),
        Gauge::Orthogonal | Gauge::SignedPermutation => {
            let mut out = b.clone();
            for key in &shared {
                let q = rotation(&a.modules[key], &b_at_a_scale(a, b, key), gauge)?;
                let f = &b.modules[key];
                out.modules.insert(*key, LoraFactors { a: q.transpose().matmul(&f.a), b: f.b.matmul(&q) });
            }
            out
        }
    };
    let mut reports = BTreeMap::new();
    for key in shared {
        let report = GaugeReport {
            distance_before: factor_distance(&a.modules[&key], &b_at_a_scale(a, b, &key)),
            distance_after: factor_distance(&a.modules[&key], &b_at_a_scale(a, &aligned, &key)),
            midpoint_gap_before: midpoint_gap(a, b, &key),
            midpoint_gap_after: midpoint_gap(a, &aligned, &key),
        };
        reports.insert(key, report);
    }
    Ok((aligned, reports))
}

/// `b`'s factors of `key` with `B` at `a`'s scale (`s_b / s_a` folded into `B`).
fn b_at_a_scale(a: &Adapter, b: &Adapter, key: &ModuleKey) -> LoraFactors {
    let f = &b.modules[key];
    LoraFactors { a: f.a.clone(), b: f.b.scale((b.scale_of(key) / a.scale_of(key)) as f32) }
}

/// `√(‖B_y − B_x‖² + ‖A_y − A_x‖²)`.
fn factor_distance(x: &LoraFactors, y: &LoraFactors) -> f64 {
    let d =
        |p: &Matrix, q: &Matrix| p.data.iter().zip(&q.data).map(|(u, v)| (*u as f64 - *v as f64).powi(2)).sum::<f64>();
    (d(&x.b, &y.b) + d(&x.a, &y.a)).sqrt()
}

/// `‖s_a·½(B_a + B_b')·½(A_a + A_b) − ½(ΔW_a + ΔW_b)‖_F` (`B_b'` at `a`'s scale).
fn midpoint_gap(a: &Adapter, b: &Adapter, key: &ModuleKey) -> f64 {
    let (fa, fb) = (&a.modules[key], b_at_a_scale(a, b, key));
    let s = a.scale_of(key) as f32;
    let factor_mid = fa.b.lerp(&fb.b, 0.5).matmul(&fa.a.lerp(&fb.a, 0.5)).scale(s);
    let delta_mid = a.delta(key).lerp(&b.delta(key), 0.5);
    factor_mid.sub(&delta_mid).frobenius_norm()
}

/// The `r × r` matrix of `gauge` that brings `y` closest to `x` in factor distance.
fn rotation(x: &LoraFactors, y: &LoraFactors, gauge: Gauge) -> Result<Matrix> {
    let m = cross_gram(x, y);
    match gauge {
        Gauge::Orthogonal => procrustes(&m),
        Gauge::SignedPermutation => signed_permutation(&m),
        Gauge::General => bail!("internal: the general gauge is fitted by LoRA Align, not in closed form"),
    }
}

/// `M = B_yᵀ B_x + A_y A_xᵀ` (`r × r`, in `f64`): `tr(Qᵀ M)` is what an orthogonal `Q` must
/// maximise to minimise `‖B_y Q − B_x‖² + ‖Qᵀ A_y − A_x‖²`.
fn cross_gram(x: &LoraFactors, y: &LoraFactors) -> Mat<f64> {
    let r = x.rank();
    Mat::from_fn(r, r, |i, j| {
        let bb: f64 = (0..x.b.rows).map(|row| y.b.get(row, i) as f64 * x.b.get(row, j) as f64).sum();
        let aa: f64 = (0..x.a.cols).map(|col| y.a.get(i, col) as f64 * x.a.get(j, col) as f64).sum();
        bb + aa
    })
}

/// The orthogonal maximiser of `tr(Qᵀ M)`: `Q = U Vᵀ` from `M = U Σ Vᵀ`.
pub fn procrustes(m: &Mat<f64>) -> Result<Matrix> {
    let svd = svd64(m.as_ref())?;
    let q = matmul64(svd.u.as_ref(), svd.v.transpose());
    Ok(Matrix::from_faer(q.as_ref()))
}

/// The signed permutation maximising `tr(Qᵀ M) = Σ_j σ_j M_{π(j) j}`: the order maximising
/// `Σ_j |M_{π(j) j}|` (every order enumerated), each sign that of its entry.
pub fn signed_permutation(m: &Mat<f64>) -> Result<Matrix> {
    let r = m.nrows();
    if r > MAX_PERMUTATION_RANK {
        bail!(
            "the signed-permutation gauge enumerates all {r}! orders; rank {r} is above {MAX_PERMUTATION_RANK}, use the orthogonal gauge"
        );
    }
    let mut order: Vec<usize> = (0..r).collect();
    let mut best = (f64::NEG_INFINITY, order.clone());
    permute(&mut order, 0, &mut |p| {
        let score: f64 = (0..r).map(|j| m[(p[j], j)].abs()).sum();
        if score > best.0 {
            best = (score, p.to_vec());
        }
    });
    let mut q = Matrix::zeros(r, r);
    for (j, &i) in best.1.iter().enumerate() {
        q.set(i, j, if m[(i, j)] < 0.0 { -1.0 } else { 1.0 });
    }
    Ok(q)
}

/// Calls `visit` on every permutation of `p[k..]` (Heap-style swaps, lexicographic-free).
fn permute(p: &mut Vec<usize>, k: usize, visit: &mut impl FnMut(&[usize])) {
    if k == p.len() {
        visit(p);
        return;
    }
    for i in k..p.len() {
        p.swap(k, i);
        permute(p, k + 1, visit);
        p.swap(k, i);
    }
}

/// The two parts of the factor path's `ΔW(α)` for one module:
/// `ΔW(α) = (1−α)²ΔW_a + α²ΔW_b + α(1−α)·s_a·(B_a A_b + B_b A_a)` (with `B_b` at `a`'s scale).
#[derive(Clone, Debug, PartialEq)]
pub struct FactorPathTerms {
    /// `(1−α)²ΔW_a + α²ΔW_b`: the endpoints' own updates, shrunk.
    pub endpoints: Matrix,
    /// `α(1−α)·s_a·(B_a A_b + B_b A_a)`: what mixing the two seeds' factors adds.
    pub cross: Matrix,
}

/// The factor path's `ΔW(α)` split into [`FactorPathTerms`], for every module both adapters
/// carry (equal ranks); `endpoints + cross` is what
/// [`interpolate`](super::interpolate::interpolate) gives in factor space.
pub fn factor_path_terms(a: &Adapter, b: &Adapter, alpha: f64) -> Result<BTreeMap<ModuleKey, FactorPathTerms>> {
    if !alpha.is_finite() {
        bail!("interpolation α is {alpha}; give a finite number (0 = adapter a, 1 = adapter b)");
    }
    let mut out = BTreeMap::new();
    for (key, fa) in &a.modules {
        if !b.modules.contains_key(key) {
            continue;
        }
        if fa.rank() != b.modules[key].rank() {
            bail!(
                "module {key} has rank {} in a and {} in b; the factor path needs equal ranks",
                fa.rank(),
                b.modules[key].rank()
            );
        }
        let fb = b_at_a_scale(a, b, key);
        let s = a.scale_of(key);
        let (u, v) = ((1.0 - alpha) as f32, alpha as f32);
        let own_a = fa.b.matmul(&fa.a).scale((s * (1.0 - alpha) * (1.0 - alpha)) as f32);
        let own_b = fb.b.matmul(&fb.a).scale((s * alpha * alpha) as f32);
        let cross = fa.b.matmul(&fb.a).add(&fb.b.matmul(&fa.a)).scale(u * v * s as f32);
        out.insert(*key, FactorPathTerms { endpoints: own_a.add(&own_b), cross });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{LoraSpec, TargetModule};
    use crate::connectivity::interpolate::{interpolate, Space};
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};

    fn random(rows: usize, cols: usize, rng: &mut rand_chacha::ChaCha8Rng) -> Matrix {
        let n = Normal::new(0.0f32, 1.0).unwrap();
        Matrix::from_vec(rows, cols, (0..rows * cols).map(|_| n.sample(rng)).collect())
    }

    /// An adapter with two modules of rank `r` (ΔW 6×5 and 4×5) and random factors.
    fn adapter(r: usize, seed: u64) -> Adapter {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut modules = BTreeMap::new();
        for (block, out) in [(0, 6), (1, 4)] {
            let key = ModuleKey { block, module: TargetModule::Query };
            modules.insert(key, LoraFactors { a: random(r, 5, &mut rng), b: random(out, r, &mut rng) });
        }
        Adapter { spec: LoraSpec { rank: r, ..LoraSpec::default() }, modules }
    }

    /// A random orthogonal `r × r` matrix (Q of a random matrix's SVD).
    fn random_orthogonal(r: usize, seed: u64) -> Matrix {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let m = random(r, r, &mut rng).to_faer();
        procrustes(&m).unwrap()
    }

    /// `ad` with every module re-parameterised as `(B·P, P⁻¹·A)`.
    fn transformed(ad: &Adapter, p: &Matrix) -> Adapter {
        let pinv = p.inverse().unwrap();
        let mut out = ad.clone();
        for f in out.modules.values_mut() {
            *f = LoraFactors { a: pinv.matmul(&f.a), b: f.b.matmul(p) };
        }
        out
    }

    fn max_delta_diff(x: &Adapter, y: &Adapter) -> f32 {
        x.modules
            .keys()
            .map(|k| x.delta(k).sub(&y.delta(k)).data.iter().fold(0.0f32, |m, v| m.max(v.abs())))
            .fold(0.0, f32::max)
    }

    #[test]
    fn gauge_names_parse_back() {
        for g in Gauge::ALL {
            assert_eq!(Gauge::parse(g.name()).unwrap(), g);
        }
        assert!(Gauge::parse("rotation").unwrap_err().to_string().contains("orth"));
    }

    #[test]
    fn procrustes_finds_a_known_rotation() {
        // M = R (a rotation by 30°): the maximiser of tr(Qᵀ R) over orthogonal Q is R itself.
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let m = Mat::from_fn(2, 2, |i, j| [[c, -s], [s, c]][i][j]);
        let q = procrustes(&m).unwrap();
        for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            assert!((q.get(i, j) as f64 - m[(i, j)]).abs() < 1e-6, "{i},{j}");
        }
        // Hand-made factors: y = x rotated by R, so aligning y to x applies Rᵀ... and lands on x.
        let x = LoraFactors {
            a: Matrix::from_vec(2, 3, vec![1.0, 0.0, 2.0, 0.0, 1.0, -1.0]),
            b: Matrix::from_vec(2, 2, vec![3.0, 0.0, 0.0, 1.0]),
        };
        let r = Matrix::from_vec(2, 2, vec![c as f32, -s as f32, s as f32, c as f32]);
        let y = LoraFactors { a: r.transpose().matmul(&x.a), b: x.b.matmul(&r) };
        let q = rotation(&x, &y, Gauge::Orthogonal).unwrap();
        // B_y Q = B_x R Q = B_x needs Q = Rᵀ.
        for (i, j) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            assert!((q.get(i, j) - r.get(j, i)).abs() < 1e-6, "{i},{j}");
        }
    }

    #[test]
    fn signed_permutation_on_a_hand_made_case() {
        // M's largest assignment uses (1,0) = −3 and (0,1) = 2: π = (1, 0), signs (−, +).
        let m = Mat::from_fn(2, 2, |i, j| [[1.0, 2.0], [-3.0, 0.5]][i][j]);
        let q = signed_permutation(&m).unwrap();
        assert_eq!(q.data, vec![0.0, 1.0, -1.0, 0.0]);
        let big = Mat::<f64>::zeros(9, 9);
        assert!(signed_permutation(&big).unwrap_err().to_string().contains("orthogonal"));
    }

    #[test]
    fn alignment_keeps_every_delta() {
        let (a, b) = (adapter(3, 1), adapter(3, 2));
        for gauge in Gauge::ALL {
            let opts = MergeOptions { align_steps: 50, ..MergeOptions::default() };
            let (aligned, reports) = align_gauge(&a, &b, gauge, &opts).unwrap();
            assert!(max_delta_diff(&b, &aligned) < 1e-4, "{gauge}: {}", max_delta_diff(&b, &aligned));
            assert_eq!(reports.len(), 2);
            for r in reports.values() {
                match gauge {
                    // Procrustes and the permutation search minimise the factor distance
                    // (the identity is in both groups, so it never grows).
                    Gauge::Orthogonal | Gauge::SignedPermutation => {
                        assert!(r.distance_after <= r.distance_before + 1e-9, "{gauge}: {r:?}")
                    }
                    // LoRA Align minimises the midpoint gap.
                    Gauge::General => assert!(r.midpoint_gap_after <= r.midpoint_gap_before + 1e-9, "{r:?}"),
                }
            }
        }
    }

    #[test]
    fn a_gauge_transformed_copy_aligns_back_to_a_zero_barrier() {
        let a = adapter(3, 5);
        let line = |b: &Adapter| -> f32 {
            // The largest deviation of the factor path's ΔW from ΔW_a over α ∈ {¼, ½, ¾}.
            [0.25, 0.5, 0.75]
                .iter()
                .map(|&t| {
                    let path = interpolate(&a, b, t, Space::Factor).unwrap();
                    path.iter().map(|(k, m)| m.sub(&a.delta(k)).frobenius_norm() as f32).fold(0.0, f32::max)
                })
                .fold(0.0, f32::max)
        };
        // Orthogonal copy: Procrustes recovers it; the factor path is then constant.
        let rotated = transformed(&a, &random_orthogonal(3, 9));
        assert!(line(&rotated) > 0.1, "the rotated copy must have a factor barrier to remove");
        let (back, rep) = align_gauge(&a, &rotated, Gauge::Orthogonal, &MergeOptions::default()).unwrap();
        assert!(line(&back) < 1e-4, "{}", line(&back));
        assert!(rep.values().all(|r| r.distance_after < 1e-4 && r.distance_before > 0.1));
        // Signed-permutation copy: the permutation search recovers it exactly.
        let p = Matrix::from_vec(3, 3, vec![0.0, -1.0, 0.0, 0.0, 0.0, 1.0, -1.0, 0.0, 0.0]);
        let permuted = transformed(&a, &p);
        let (back, _) = align_gauge(&a, &permuted, Gauge::SignedPermutation, &MergeOptions::default()).unwrap();
        assert!(line(&back) < 1e-5, "{}", line(&back));
        // A general invertible P: LoRA Align shrinks the midpoint gap to near zero.
        let general = Matrix::from_vec(3, 3, vec![1.2, 0.3, 0.0, -0.2, 0.9, 0.4, 0.1, 0.0, 1.1]);
        let skewed = transformed(&a, &general);
        let opts = MergeOptions { align_steps: 2000, ..MergeOptions::default() };
        let (_, rep) = align_gauge(&a, &skewed, Gauge::General, &opts).unwrap();
        for r in rep.values() {
            assert!(r.midpoint_gap_after < 0.05 * r.midpoint_gap_before, "{r:?}");
        }
    }

    #[test]
    fn factor_path_terms_sum_to_the_factor_path() {
        let (a, mut b) = (adapter(2, 3), adapter(2, 4));
        b.spec.alpha = 2.5; // another scale, folded into B_b
        for alpha in [0.0, 0.3, 0.5, 1.0, 1.4] {
            let terms = factor_path_terms(&a, &b, alpha).unwrap();
            let path = interpolate(&a, &b, alpha, Space::Factor).unwrap();
            for (key, t) in &terms {
                let diff = t.endpoints.add(&t.cross).sub(&path[key]);
                assert!(diff.frobenius_norm() < 1e-4 * (1.0 + path[key].frobenius_norm()), "α {alpha} {key}");
            }
            if alpha == 0.0 || alpha == 1.0 {
                assert!(terms.values().all(|t| t.cross.frobenius_norm() == 0.0));
            }
        }
        assert!(factor_path_terms(&a, &b, f64::NAN).is_err());
    }
}
