//! Small dense row-major `f32` matrices for adapter arithmetic (merging, pruning,
//! interpolation, distances). [`Matrix`] is storage plus element-wise arithmetic and an
//! `f64`-accumulated product (adapter factors are tiny, rank × width, so plain loops are fast
//! and keep analyses independent of the tensor backend). Decompositions (SVD, inverse) come from
//! [`faer`] in `f64`, always single-threaded (`Par::Seq`) so that every result is reproducible
//! bit for bit.
//!
//! Why faer rather than nalgebra: faer's decompositions take their parallelism as an argument,
//! so "single-threaded, hence reproducible" is explicit at each call rather than a global
//! setting; its SVD (bidiagonal divide and conquer) reports non-convergence as an error instead
//! of iterating without bound (nalgebra's `SVD::new`); and it is built for the dense
//! decompositions a larger backbone needs (768 × 768 `ΔW` for ViT-B).

use serde::{Deserialize, Serialize};

/// A dense row-major matrix of `f32`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Matrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row-major values, `rows * cols` long.
    pub data: Vec<f32>,
}

impl Matrix {
    /// A `rows × cols` matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self { rows, cols, data: vec![0.0; rows * cols] }
    }

    /// Wraps row-major data; panics if the length does not match (a programming error).
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), rows * cols, "matrix data length does not match its shape");
        Self { rows, cols, data }
    }

    /// The `n × n` identity.
    pub fn identity(n: usize) -> Self {
        let mut m = Self::zeros(n, n);
        for i in 0..n {
            m.data[i * n + i] = 1.0;
        }
        m
    }

    /// Element at row `i`, column `j`.
    pub fn get(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.cols + j]
    }

    /// Sets the element at row `i`, column `j`.
    pub fn set(&mut self, i: usize, j: usize, v: f32) {
        self.data[i * self.cols + j] = v;
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Matrix product `self · rhs`, accumulated in `f64`.
    pub fn matmul(&self, rhs: &Matrix) -> Matrix {
        assert_eq!(self.cols, rhs.rows, "matmul shape mismatch");
        let mut out = Matrix::zeros(self.rows, rhs.cols);
        for i in 0..self.rows {
            for j in 0..rhs.cols {
                let mut acc = 0.0f64;
                for k in 0..self.cols {
                    acc += self.get(i, k) as f64 * rhs.get(k, j) as f64;
                }
                out.data[i * rhs.cols + j] = acc as f32;
            }
        }
        out
    }

    /// The transpose.
    pub fn transpose(&self) -> Matrix {
        let mut out = Matrix::zeros(self.cols, self.rows);
        for i in 0..self.rows {
            for j in 0..self.cols {
                out.data[j * self.rows + i] = self.get(i, j);
            }
        }
        out
    }

    /// `self * s`.
    pub fn scale(&self, s: f32) -> Matrix {
        Matrix { rows: self.rows, cols: self.cols, data: self.data.iter().map(|v| v * s).collect() }
    }

    /// Element-wise `self + rhs`.
    pub fn add(&self, rhs: &Matrix) -> Matrix {
        self.zip(rhs, |a, b| a + b)
    }

    /// Element-wise `self - rhs`.
    pub fn sub(&self, rhs: &Matrix) -> Matrix {
        self.zip(rhs, |a, b| a - b)
    }

    /// `(1 - t)·self + t·rhs`.
    pub fn lerp(&self, rhs: &Matrix, t: f32) -> Matrix {
        self.zip(rhs, |a, b| (1.0 - t) * a + t * b)
    }

    /// Element-wise combination of two matrices of the same shape.
    pub fn zip(&self, rhs: &Matrix, f: impl Fn(f32, f32) -> f32) -> Matrix {
        assert_eq!(self.shape(), rhs.shape(), "element-wise shape mismatch");
        Matrix {
            rows: self.rows,
            cols: self.cols,
            data: self.data.iter().zip(&rhs.data).map(|(a, b)| f(*a, *b)).collect(),
        }
    }

    /// Frobenius inner product `Σ self_ij · rhs_ij` in `f64`.
    pub fn dot(&self, rhs: &Matrix) -> f64 {
        assert_eq!(self.shape(), rhs.shape(), "dot shape mismatch");
        self.data.iter().zip(&rhs.data).map(|(a, b)| *a as f64 * *b as f64).sum()
    }

    /// Frobenius norm in `f64`.
    pub fn frobenius_norm(&self) -> f64 {
        self.dot(self).sqrt()
    }
}

/// A thin singular value decomposition `M = U · diag(s) · Vᵀ` of an `m × n` matrix, with
/// `k = min(m, n)` components (or fewer for [`svd_of_product`], see there).
#[derive(Clone, Debug, PartialEq)]
pub struct Svd {
    /// Left singular vectors as columns, `[m, k]`, orthonormal (columns for zero singular values
    /// are completed to an orthonormal set).
    pub u: Matrix,
    /// Singular values in descending order, length `k`, computed in `f64`.
    pub s: Vec<f64>,
    /// Right singular vectors as rows, `[k, n]`, orthonormal.
    pub vt: Matrix,
}

impl Svd {
    /// `U · diag(s) · Vᵀ` keeping only the leading `r` components (all of them when `r ≥ k`).
    pub fn reconstruct(&self, r: usize) -> Matrix {
        let k = self.s.len().min(r);
        let (m, n) = (self.u.rows, self.vt.cols);
        let mut out = vec![0.0f64; m * n];
        for c in 0..k {
            let sc = self.s[c];
            for i in 0..m {
                let ui = self.u.get(i, c) as f64 * sc;
                if ui == 0.0 {
                    continue;
                }
                let row = &mut out[i * n..(i + 1) * n];
                for (j, o) in row.iter_mut().enumerate() {
                    *o += ui * self.vt.get(c, j) as f64;
                }
            }
        }
        Matrix::from_vec(m, n, out.into_iter().map(|v| v as f32).collect())
    }

    /// Splits the leading `r` components into LoRA-style factors `(B, A)` with
    /// `B = U_r · diag(√s_r)` (`[m, r]`) and `A = diag(√s_r) · V_rᵀ` (`[r, n]`), so that
    /// `B · A` is the best rank-`r` approximation. When `r` exceeds the number of components
    /// the extra columns of `B` and rows of `A` are zero (the shapes are always `[m, r]`, `[r, n]`).
    pub fn factors(&self, r: usize) -> (Matrix, Matrix) {
        let (m, n) = (self.u.rows, self.vt.cols);
        let k = self.s.len().min(r);
        let mut b = Matrix::zeros(m, r);
        let mut a = Matrix::zeros(r, n);
        for c in 0..k {
            let root = self.s[c].max(0.0).sqrt();
            for i in 0..m {
                b.set(i, c, (self.u.get(i, c) as f64 * root) as f32);
            }
            for j in 0..n {
                a.set(c, j, (self.vt.get(c, j) as f64 * root) as f32);
            }
        }
        (b, a)
    }

    /// The leading `r` components (all of them when `r ≥ k`).
    pub fn truncated(&self, r: usize) -> Svd {
        let r = r.min(self.s.len());
        Svd { u: self.u.resized(self.u.rows, r), s: self.s[..r].to_vec(), vt: self.vt.resized(r, self.vt.cols) }
    }
}

impl Matrix {
    /// Thin SVD (faer's, in `f64`, single-threaded). Rank-deficient and zero matrices are fine.
    /// Errors only when faer's iteration does not converge.
    pub fn svd(&self) -> anyhow::Result<Svd> {
        let svd = svd64(self.to_faer().as_ref())?;
        Ok(Svd { u: Matrix::from_faer(svd.u.as_ref()), s: svd.s, vt: Matrix::from_faer(svd.v.transpose()) })
    }

    /// The leading `min(r, rows, cols)` singular triplets (the thin SVD, truncated).
    pub fn svd_truncated(&self, r: usize) -> anyhow::Result<Svd> {
        Ok(self.svd()?.truncated(r))
    }

    /// The best rank-`r` approximation as LoRA factors `(B [rows, r], A [r, cols])`, splitting
    /// `√s` onto both sides (see [`Svd::factors`]; zero-padded when `r > min(rows, cols)`).
    pub fn low_rank(&self, r: usize) -> anyhow::Result<(Matrix, Matrix)> {
        Ok(self.svd()?.factors(r))
    }

    /// The inverse of a square matrix (faer's LU with partial pivoting, in `f64`). Errors when
    /// the matrix is not square or is (numerically) singular.
    pub fn inverse(&self) -> anyhow::Result<Matrix> {
        if self.rows != self.cols {
            anyhow::bail!("cannot invert a {}x{} matrix: only square matrices have an inverse", self.rows, self.cols);
        }
        Ok(Matrix::from_faer(inverse64(self.to_faer().as_ref())?.as_ref()))
    }

    /// This matrix as a faer `f64` matrix.
    pub fn to_faer(&self) -> faer::Mat<f64> {
        faer::Mat::from_fn(self.rows, self.cols, |i, j| self.get(i, j) as f64)
    }

    /// A faer `f64` matrix rounded to `f32` storage.
    pub fn from_faer(m: faer::MatRef<'_, f64>) -> Matrix {
        let (rows, cols) = m.shape();
        Matrix::from_vec(rows, cols, (0..rows).flat_map(|i| (0..cols).map(move |j| m[(i, j)] as f32)).collect())
    }

    /// Stacks matrices with equal column counts on top of each other (`[A; B; ...]`).
    /// Errors on an empty list or mismatched column counts.
    pub fn vstack(parts: &[&Matrix]) -> anyhow::Result<Matrix> {
        let Some(first) = parts.first() else {
            anyhow::bail!("vstack of an empty list: pass at least one matrix");
        };
        let cols = first.cols;
        if let Some(bad) = parts.iter().find(|p| p.cols != cols) {
            anyhow::bail!("vstack: column counts differ ({} vs {}); all parts need the same width", cols, bad.cols);
        }
        let rows = parts.iter().map(|p| p.rows).sum();
        let data = parts.iter().flat_map(|p| p.data.iter().copied()).collect();
        Ok(Matrix::from_vec(rows, cols, data))
    }

    /// Places matrices with equal row counts side by side (`[A, B, ...]`).
    /// Errors on an empty list or mismatched row counts.
    pub fn hstack(parts: &[&Matrix]) -> anyhow::Result<Matrix> {
        let Some(first) = parts.first() else {
            anyhow::bail!("hstack of an empty list: pass at least one matrix");
        };
        let rows = first.rows;
        if let Some(bad) = parts.iter().find(|p| p.rows != rows) {
            anyhow::bail!("hstack: row counts differ ({} vs {}); all parts need the same height", rows, bad.rows);
        }
        let cols = parts.iter().map(|p| p.cols).sum();
        let mut data = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for p in parts {
                data.extend_from_slice(&p.data[i * p.cols..(i + 1) * p.cols]);
            }
        }
        Ok(Matrix::from_vec(rows, cols, data))
    }

    /// A copy with `rows × cols` shape, keeping the overlapping top-left block and filling the
    /// rest with zeros (used to zero-pad LoRA factors to a larger rank).
    pub fn resized(&self, rows: usize, cols: usize) -> Matrix {
        let mut out = Matrix::zeros(rows, cols);
        for i in 0..rows.min(self.rows) {
            for j in 0..cols.min(self.cols) {
                out.set(i, j, self.get(i, j));
            }
        }
        out
    }

    /// Number of exactly-zero entries.
    pub fn count_zeros(&self) -> usize {
        self.data.iter().filter(|v| **v == 0.0).count()
    }
}

/// A thin SVD in `f64`: `a = u · diag(s) · vᵀ` with `u` `[m, k]`, `v` `[n, k]`, `k = min(m, n)`.
pub struct Svd64 {
    /// Left singular vectors as columns.
    pub u: faer::Mat<f64>,
    /// Singular values, non-negative and in descending order.
    pub s: Vec<f64>,
    /// Right singular vectors as columns.
    pub v: faer::Mat<f64>,
}

/// Thin SVD of an `f64` matrix by faer, single-threaded. Errors when faer does not converge.
pub fn svd64(a: faer::MatRef<'_, f64>) -> anyhow::Result<Svd64> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::svd::{svd, svd_scratch, ComputeSvdVectors};
    let (m, n) = a.shape();
    let k = m.min(n);
    let mut u = faer::Mat::<f64>::zeros(m, k);
    let mut v = faer::Mat::<f64>::zeros(n, k);
    let mut s = faer::diag::Diag::<f64>::zeros(k);
    let par = faer::Par::Seq;
    let thin = ComputeSvdVectors::Thin;
    let mut buf = MemBuffer::new(svd_scratch::<f64>(m, n, thin, thin, par, Default::default()));
    svd(a, s.as_mut(), Some(u.as_mut()), Some(v.as_mut()), par, MemStack::new(&mut buf), Default::default())
        .map_err(|e| anyhow::anyhow!("SVD of a {m}x{n} matrix did not converge ({e:?}); check it for NaN/inf"))?;
    let s = s.column_vector().iter().copied().collect();
    Ok(Svd64 { u, s, v })
}

/// Inverse of a square `f64` matrix by faer's LU with partial pivoting, single-threaded.
/// Errors on non-finite entries and when a pivot is zero or tiny relative to the matrix's
/// largest entry (`≤ 1e-12 · n · max|a_ij|`: a singular or numerically singular matrix).
pub fn inverse64(a: faer::MatRef<'_, f64>) -> anyhow::Result<faer::Mat<f64>> {
    use faer::dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::lu::partial_pivoting::{factor, inverse};
    let (n, cols) = a.shape();
    if n != cols {
        anyhow::bail!("inverse: a {n}x{cols} matrix has no inverse; pass a square matrix");
    }
    let mut scale = 0.0f64;
    for j in 0..n {
        for i in 0..n {
            let v = a[(i, j)];
            if !v.is_finite() {
                anyhow::bail!("inverse: the matrix has non-finite entries; check the inputs for NaN/inf");
            }
            scale = scale.max(v.abs());
        }
    }
    if n > 0 && scale == 0.0 {
        anyhow::bail!("inverse: the matrix is all zeros (singular); it has no inverse");
    }
    let par = faer::Par::Seq;
    let mut lu = a.to_owned();
    let (mut fwd, mut bwd) = (vec![0usize; n], vec![0usize; n]);
    let mut buf = MemBuffer::new(faer::dyn_stack::StackReq::any_of(&[
        factor::lu_in_place_scratch::<usize, f64>(n, n, par, Default::default()),
        inverse::inverse_scratch::<usize, f64>(n, par),
    ]));
    let (_, perm) =
        factor::lu_in_place(lu.as_mut(), &mut fwd, &mut bwd, par, MemStack::new(&mut buf), Default::default());
    let tol = scale * 1e-12 * n as f64;
    if let Some(col) = (0..n).find(|&i| lu[(i, i)].abs() <= tol) {
        anyhow::bail!(
            "inverse: the matrix is singular (pivot {:.3e} in column {col}); it has no inverse",
            lu[(col, col)].abs()
        );
    }
    let mut out = faer::Mat::<f64>::zeros(n, n);
    inverse::inverse(out.as_mut(), lu.as_ref(), lu.as_ref(), perm, par, MemStack::new(&mut buf));
    Ok(out)
}

/// `a · b` in `f64` by faer, single-threaded.
pub fn matmul64(a: faer::MatRef<'_, f64>, b: faer::MatRef<'_, f64>) -> faer::Mat<f64> {
    let mut out = faer::Mat::<f64>::zeros(a.nrows(), b.ncols());
    faer::linalg::matmul::matmul(out.as_mut(), faer::Accum::Replace, a, b, 1.0, faer::Par::Seq);
    out
}

/// Frobenius inner product `Σ a_ij · b_ij` of two equal-shape `f64` matrices.
pub fn dot64(a: faer::MatRef<'_, f64>, b: faer::MatRef<'_, f64>) -> f64 {
    assert_eq!(a.shape(), b.shape(), "dot64 shape mismatch");
    (0..a.ncols()).map(|j| (0..a.nrows()).map(|i| a[(i, j)] * b[(i, j)]).sum::<f64>()).sum()
}

/// Thin SVD of the product `B · A` (`B` is `[m, r]`, `A` is `[r, n]`) without forming the
/// `m × n` product: `B = U_b S_b V_bᵀ`, then the small `C = S_b V_bᵀ A` is decomposed,
/// `C = U_c S_c V_cᵀ`, giving `B·A = (U_b U_c) S_c V_cᵀ` (all in `f64`). Returns
/// `min(m, r, n)` components (the product cannot have more non-zero singular values); fast when
/// `r` is small. Errors when the inner dimensions differ.
pub fn svd_of_product(b: &Matrix, a: &Matrix) -> anyhow::Result<Svd> {
    if b.cols != a.rows {
        anyhow::bail!(
            "svd_of_product: B is {}x{} but A is {}x{}; B's columns must equal A's rows",
            b.rows,
            b.cols,
            a.rows,
            a.cols
        );
    }
    let sb = svd64(b.to_faer().as_ref())?;
    let svt = faer::Mat::<f64>::from_fn(sb.s.len(), b.cols, |i, j| sb.s[i] * sb.v[(j, i)]);
    let c = matmul64(svt.as_ref(), a.to_faer().as_ref());
    let sc = svd64(c.as_ref())?;
    let u = matmul64(sb.u.as_ref(), sc.u.as_ref());
    Ok(Svd { u: Matrix::from_faer(u.as_ref()), s: sc.s, vt: Matrix::from_faer(sc.v.transpose()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(rows: usize, cols: usize, seed: u64) -> Matrix {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        Matrix::from_vec(rows, cols, (0..rows * cols).map(|_| rng.random_range(-1.0f32..1.0)).collect())
    }

    fn max_abs_diff(a: &Matrix, b: &Matrix) -> f32 {
        a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    fn assert_orthonormal_cols(u: &Matrix) {
        let g = u.transpose().matmul(u);
        assert!(max_abs_diff(&g, &Matrix::identity(u.cols)) < 1e-5, "not orthonormal: {g:?}");
    }

    #[test]
    fn svd_of_diagonal_is_sorted_and_exact() {
        let m = Matrix::from_vec(3, 3, vec![1.0, 0.0, 0.0, 0.0, -3.0, 0.0, 0.0, 0.0, 2.0]);
        let svd = m.svd().unwrap();
        assert!((svd.s[0] - 3.0).abs() < 1e-12 && (svd.s[1] - 2.0).abs() < 1e-12 && (svd.s[2] - 1.0).abs() < 1e-12);
        assert!(max_abs_diff(&svd.reconstruct(3), &m) < 1e-6);
    }

    #[test]
    fn svd_reconstructs_and_is_orthonormal_tall_wide_and_deficient() {
        let tall = random(9, 4, 1);
        let wide = random(3, 7, 2);
        // rank 2 matrix of shape 6x5
        let deficient = random(6, 2, 3).matmul(&random(2, 5, 4));
        for m in [&tall, &wide, &deficient, &Matrix::zeros(4, 3)] {
            let svd = m.svd().unwrap();
            let k = m.rows.min(m.cols);
            assert_eq!(svd.u.shape(), (m.rows, k));
            assert_eq!(svd.vt.shape(), (k, m.cols));
            assert!(svd.s.windows(2).all(|w| w[0] >= w[1]));
            assert!(max_abs_diff(&svd.reconstruct(k), m) < 1e-5);
            assert_orthonormal_cols(&svd.u);
            assert_orthonormal_cols(&svd.vt.transpose());
        }
        let s = deficient.svd().unwrap().s;
        assert!(s[2] < 1e-5 && s[1] > 1e-2);
    }

    #[test]
    fn eckart_young_truncation_error() {
        let m = random(8, 6, 5);
        let svd = m.svd().unwrap();
        for r in 0..=6 {
            let (b, a) = m.low_rank(r).unwrap();
            assert_eq!((b.shape(), a.shape()), ((8, r), (r, 6)));
            let err2 = if r == 0 { m.dot(&m) } else { m.sub(&b.matmul(&a)).dot(&m.sub(&b.matmul(&a))) };
            let tail: f64 = svd.s[r..].iter().map(|s| s * s).sum();
            assert!((err2 - tail).abs() < 1e-4, "r={r}: {err2} vs {tail}");
        }
        // Padding beyond the rank keeps the shapes and adds zeros.
        let (b, a) = m.low_rank(9).unwrap();
        assert_eq!((b.shape(), a.shape()), ((8, 9), (9, 6)));
        assert!(max_abs_diff(&b.matmul(&a), &m) < 1e-5);
    }

    #[test]
    fn truncation_keeps_the_leading_triplets() {
        let m = random(7, 5, 10);
        let full = m.svd().unwrap();
        let t = m.svd_truncated(2).unwrap();
        assert_eq!((t.u.shape(), t.vt.shape(), t.s.len()), ((7, 2), (2, 5), 2));
        assert_eq!(t.s, full.s[..2].to_vec());
        assert_eq!(t.reconstruct(2), full.reconstruct(2));
        assert_eq!(m.svd_truncated(9).unwrap(), full);
    }

    #[test]
    fn svd_and_inverse_match_faer_directly() {
        // The wrapper's plumbing (order, transposes, f32 storage) against faer's own API.
        use faer::linalg::solvers::DenseSolveCore;
        let m = random(9, 6, 13);
        let direct = m.to_faer().thin_svd().unwrap();
        let ours = m.svd().unwrap();
        let s_direct: Vec<f64> = direct.S().column_vector().iter().copied().collect();
        assert_eq!(ours.s, s_direct);
        let (u, v) = (direct.U(), direct.V());
        for c in 0..6 {
            for i in 0..9 {
                assert_eq!(ours.u.get(i, c), u[(i, c)] as f32);
            }
            for j in 0..6 {
                assert_eq!(ours.vt.get(c, j), v[(j, c)] as f32);
            }
        }
        let sq = random(6, 6, 14);
        let inv = sq.inverse().unwrap();
        let direct = sq.to_faer().partial_piv_lu().inverse();
        for i in 0..6 {
            for j in 0..6 {
                let d = direct[(i, j)];
                assert!((inv.get(i, j) as f64 - d).abs() <= 1e-6 * (1.0 + d.abs()), "({i},{j})");
            }
        }
    }

    #[test]
    fn svd_of_product_matches_dense() {
        let b = random(10, 3, 6);
        let a = random(3, 7, 7);
        let p = b.matmul(&a);
        let fast = svd_of_product(&b, &a).unwrap();
        let dense = p.svd().unwrap();
        assert_eq!(fast.s.len(), 3);
        for i in 0..3 {
            assert!((fast.s[i] - dense.s[i]).abs() < 1e-5);
        }
        assert!(max_abs_diff(&fast.reconstruct(3), &p) < 1e-5);
        assert_orthonormal_cols(&fast.u);
        assert_orthonormal_cols(&fast.vt.transpose());
        assert!(svd_of_product(&a, &a).is_err());
    }

    #[test]
    fn inverse_of_hand_matrix_and_random() {
        let m = Matrix::from_vec(2, 2, vec![4.0, 7.0, 2.0, 6.0]);
        let inv = m.inverse().unwrap();
        // 1/10 * [[6, -7], [-2, 4]]
        assert!(max_abs_diff(&inv, &Matrix::from_vec(2, 2, vec![0.6, -0.7, -0.2, 0.4])) < 1e-6);
        let r = random(5, 5, 8);
        assert!(max_abs_diff(&r.inverse().unwrap().matmul(&r), &Matrix::identity(5)) < 1e-4);
        // A matrix needing a row swap (zero leading pivot).
        let p = Matrix::from_vec(2, 2, vec![0.0, 1.0, 1.0, 0.0]);
        assert_eq!(p.inverse().unwrap(), p);
    }

    #[test]
    fn inverse_errors() {
        let singular = Matrix::from_vec(2, 2, vec![1.0, 2.0, 2.0, 4.0]);
        assert!(singular.inverse().unwrap_err().to_string().contains("singular"));
        assert!(Matrix::zeros(2, 3).inverse().is_err());
        assert!(Matrix::zeros(2, 2).inverse().is_err());
    }

    #[test]
    fn stacking_and_resizing() {
        let a = Matrix::from_vec(1, 2, vec![1.0, 2.0]);
        let b = Matrix::from_vec(2, 2, vec![3.0, 4.0, 5.0, 6.0]);
        assert_eq!(Matrix::vstack(&[&a, &b]).unwrap().data, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let c = Matrix::from_vec(2, 1, vec![7.0, 8.0]);
        assert_eq!(Matrix::hstack(&[&b, &c]).unwrap().data, vec![3.0, 4.0, 7.0, 5.0, 6.0, 8.0]);
        assert!(Matrix::vstack(&[&a, &c]).is_err());
        assert!(Matrix::hstack(&[]).is_err());
        assert_eq!(a.resized(2, 3).data, vec![1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);
        assert_eq!(b.count_zeros(), 0);
    }
}
