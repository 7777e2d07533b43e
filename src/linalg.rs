//! Small dense row-major `f32` matrices for adapter arithmetic (merging, pruning,
//! interpolation, distances). Adapter factors are tiny (rank × width), so plain
//! loops are fast enough and keep analyses independent of the tensor backend.

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
}

impl Matrix {
    /// Thin SVD by one-sided (Hestenes) Jacobi rotations in `f64`. Accurate for the small
    /// matrices of adapter analyses (hundreds of rows/columns); rank-deficient and zero
    /// matrices are fine. Cost grows as `min(m,n)² · max(m,n)` per sweep.
    pub fn svd(&self) -> Svd {
        let data: Vec<f64> = self.data.iter().map(|&v| v as f64).collect();
        jacobi_svd(self.rows, self.cols, &data).into_svd()
    }

    /// The leading `min(r, rows, cols)` singular triplets. Matrices whose smaller side is at most
    /// [`EXACT_SVD_MAX_DIM`] (or where `r` is a large part of it) use the exact [`Matrix::svd`];
    /// larger ones (e.g. 768 × 768 ΔW of ViT-B) use seeded randomized subspace iteration with
    /// Rayleigh–Ritz extraction, iterated until the leading singular values are stable to
    /// ~1e-10 relative (at most 100 iterations). That is deterministic and matches the exact
    /// truncation to float precision unless the spectrum has no gap after `r` at all.
    pub fn svd_truncated(&self, r: usize) -> Svd {
        let (m, n) = self.shape();
        let k = m.min(n);
        let r = r.min(k);
        let l = (r + r.max(10)).min(k);
        if k <= EXACT_SVD_MAX_DIM || 2 * l >= k || r == 0 {
            let full = self.svd();
            return truncate_svd(&full, r);
        }
        randomized_svd(self, r, l)
    }

    /// The best rank-`r` approximation as LoRA factors `(B [rows, r], A [r, cols])`, splitting
    /// `√s` onto both sides (see [`Svd::factors`]; zero-padded when `r > min(rows, cols)`).
    /// Uses [`Matrix::svd_truncated`].
    pub fn low_rank(&self, r: usize) -> (Matrix, Matrix) {
        self.svd_truncated(r).factors(r)
    }

    /// The inverse of a small square matrix by Gauss–Jordan elimination with partial pivoting
    /// in `f64`. Errors when the matrix is not square or is (numerically) singular.
    pub fn inverse(&self) -> anyhow::Result<Matrix> {
        if self.rows != self.cols {
            anyhow::bail!("cannot invert a {}x{} matrix: only square matrices have an inverse", self.rows, self.cols);
        }
        let data: Vec<f64> = self.data.iter().map(|&v| v as f64).collect();
        let inv = inverse_f64(self.rows, &data)?;
        Ok(Matrix::from_vec(self.rows, self.cols, inv.into_iter().map(|v| v as f32).collect()))
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

/// An SVD held in `f64`: `u` is row-major `[m, k]`, `vt` row-major `[k, n]`.
struct Svd64 {
    m: usize,
    n: usize,
    u: Vec<f64>,
    s: Vec<f64>,
    vt: Vec<f64>,
}

impl Svd64 {
    fn into_svd(self) -> Svd {
        let k = self.s.len();
        let to32 = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        Svd { u: Matrix::from_vec(self.m, k, to32(self.u)), s: self.s, vt: Matrix::from_vec(k, self.n, to32(self.vt)) }
    }
}

/// One-sided Jacobi SVD of a row-major `m × n` `f64` matrix (thin, `k = min(m, n)`).
fn jacobi_svd(m: usize, n: usize, data: &[f64]) -> Svd64 {
    if m < n {
        // Decompose the transpose: Mᵀ = U' S V'ᵀ  ⇒  M = V' S U'ᵀ.
        let t: Vec<f64> = (0..n).flat_map(|j| (0..m).map(move |i| (i, j))).map(|(i, j)| data[i * n + j]).collect();
        let st = jacobi_svd(n, m, &t);
        let k = st.s.len();
        let transpose = |x: &[f64], r: usize, c: usize| -> Vec<f64> {
            (0..c).flat_map(|j| (0..r).map(move |i| (i, j))).map(|(i, j)| x[i * c + j]).collect()
        };
        // st.u is [n, k] → vt = st.uᵀ [k, n]; st.vt is [k, m] → u = st.vtᵀ [m, k].
        return Svd64 { m, n, u: transpose(&st.vt, k, m), s: st.s, vt: transpose(&st.u, n, k) };
    }
    // Now m ≥ n: orthogonalise the n columns (stored contiguously) of M · V.
    let mut cols: Vec<Vec<f64>> = (0..n).map(|j| (0..m).map(|i| data[i * n + j]).collect()).collect();
    let mut v: Vec<Vec<f64>> = (0..n).map(|j| (0..n).map(|i| if i == j { 1.0 } else { 0.0 }).collect()).collect();
    let tol = 1e-15;
    for _sweep in 0..80 {
        // Squared column norms, refreshed every sweep and updated exactly after each rotation.
        let mut sq: Vec<f64> = cols.iter().map(|c| dot64(c, c)).collect();
        let mut rotated = false;
        for p in 0..n {
            for q in (p + 1)..n {
                let (alpha, beta) = (sq[p], sq[q]);
                if alpha == 0.0 || beta == 0.0 {
                    continue;
                }
                let gamma = dot64(&cols[p], &cols[q]);
                if gamma.abs() <= tol * (alpha * beta).sqrt() {
                    continue;
                }
                rotated = true;
                let zeta = (beta - alpha) / (2.0 * gamma);
                let t = zeta.signum() / (zeta.abs() + (1.0 + zeta * zeta).sqrt());
                let c = 1.0 / (1.0 + t * t).sqrt();
                let s = c * t;
                rotate_pair(&mut cols, p, q, c, s);
                rotate_pair(&mut v, p, q, c, s);
                sq[p] = (alpha - t * gamma).max(0.0);
                sq[q] = (beta + t * gamma).max(0.0);
            }
        }
        if !rotated {
            break;
        }
    }
    let norms: Vec<f64> = cols.iter().map(|c| dot64(c, c).sqrt()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| norms[j].total_cmp(&norms[i]).then(i.cmp(&j)));
    let smax = norms.iter().cloned().fold(0.0, f64::max);
    let cutoff = smax * (m.max(n) as f64) * 1e-14;
    let mut u_cols: Vec<Vec<f64>> = Vec::with_capacity(n);
    let mut s = Vec::with_capacity(n);
    let mut vt = vec![0.0f64; n * n];
    for (pos, &j) in order.iter().enumerate() {
        let sj = norms[j];
        if sj > cutoff && sj > 0.0 {
            u_cols.push(cols[j].iter().map(|x| x / sj).collect());
            s.push(sj);
        } else {
            u_cols.push(Vec::new()); // completed below
            s.push(0.0);
        }
        vt[pos * n..(pos + 1) * n].copy_from_slice(&v[j]);
    }
    complete_orthonormal(&mut u_cols, m);
    let mut u = vec![0.0f64; m * n];
    for (c, col) in u_cols.iter().enumerate() {
        for i in 0..m {
            u[i * n + c] = col[i];
        }
    }
    Svd64 { m, n, u, s, vt }
}

/// Largest `min(rows, cols)` for which [`Matrix::svd_truncated`] always uses the exact Jacobi SVD.
pub const EXACT_SVD_MAX_DIM: usize = 256;

/// The leading `r` components of an SVD.
fn truncate_svd(full: &Svd, r: usize) -> Svd {
    let r = r.min(full.s.len());
    let u = Matrix::from_vec(
        full.u.rows,
        r,
        (0..full.u.rows).flat_map(|i| (0..r).map(move |c| (i, c))).map(|(i, c)| full.u.get(i, c)).collect(),
    );
    let vt = Matrix::from_vec(r, full.vt.cols, full.vt.data[..r * full.vt.cols].to_vec());
    Svd { u, s: full.s[..r].to_vec(), vt }
}

/// Orthonormalises the `l` columns of a row-major `rows × l` matrix in place (modified
/// Gram–Schmidt, two passes); columns that vanish are replaced by zero columns.
fn orthonormalize_columns(y: &mut [f64], rows: usize, l: usize) {
    for c in 0..l {
        for _pass in 0..2 {
            for prev in 0..c {
                let d: f64 = (0..rows).map(|i| y[i * l + c] * y[i * l + prev]).sum();
                for i in 0..rows {
                    y[i * l + c] -= d * y[i * l + prev];
                }
            }
        }
        let norm = (0..rows).map(|i| y[i * l + c] * y[i * l + c]).sum::<f64>().sqrt();
        let inv = if norm > 1e-300 { 1.0 / norm } else { 0.0 };
        for i in 0..rows {
            y[i * l + c] *= inv;
        }
    }
}

/// Randomized subspace iteration for the top `r` singular triplets with `l ≥ r` probe vectors.
fn randomized_svd(mat: &Matrix, r: usize, l: usize) -> Svd {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let (m, n) = mat.shape();
    let a: Vec<f64> = mat.data.iter().map(|&v| v as f64).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0x5eed_5bd0);
    let omega: Vec<f64> = (0..n * l).map(|_| StandardNormal.sample(&mut rng)).collect();
    // y = A · x for x row-major [n, l] → [m, l].
    let mul_a = |x: &[f64]| {
        let mut y = vec![0.0f64; m * l];
        for i in 0..m {
            let yi = &mut y[i * l..(i + 1) * l];
            for k in 0..n {
                let aik = a[i * n + k];
                if aik != 0.0 {
                    for (o, xv) in yi.iter_mut().zip(&x[k * l..(k + 1) * l]) {
                        *o += aik * xv;
                    }
                }
            }
        }
        y
    };
    // z = Aᵀ · q for q row-major [m, l] → [n, l].
    let mul_at = |q: &[f64]| {
        let mut z = vec![0.0f64; n * l];
        for i in 0..m {
            let qi = &q[i * l..(i + 1) * l];
            for k in 0..n {
                let aik = a[i * n + k];
                if aik != 0.0 {
                    for (o, qv) in z[k * l..(k + 1) * l].iter_mut().zip(qi) {
                        *o += aik * qv;
                    }
                }
            }
        }
        z
    };
    let mut q = mul_a(&omega);
    orthonormalize_columns(&mut q, m, l);
    let mut prev: Option<Vec<f64>> = None;
    let mut best = None;
    for _iter in 0..100 {
        // Rayleigh–Ritz: Bᵀ = Aᵀ Q is [n, l]; its SVD gives the current estimate.
        let bt = mul_at(&q);
        // Bᵀ = U_s S V_sᵀ  ⇒  B = V_s S U_sᵀ and A ≈ Q B = (Q V_s) S U_sᵀ.
        let small = jacobi_svd(n, l, &bt);
        let lead: Vec<f64> = small.s[..r].to_vec();
        let converged = prev
            .as_ref()
            .is_some_and(|p: &Vec<f64>| p.iter().zip(&lead).all(|(x, y)| (x - y).abs() <= 1e-9 * lead[0].max(1e-300)));
        prev = Some(lead);
        best = Some((q.clone(), small));
        if converged {
            break;
        }
        let mut z = bt;
        orthonormalize_columns(&mut z, n, l);
        q = mul_a(&z);
        orthonormalize_columns(&mut q, m, l);
    }
    let (q, small) = best.expect("at least one iteration runs");
    // U = Q · V_s (first r columns); Vᵀ = U_sᵀ (first r rows). small.vt is V_sᵀ, [l, l].
    let mut u = Matrix::zeros(m, r);
    for i in 0..m {
        for c in 0..r {
            let v: f64 = (0..l).map(|j| q[i * l + j] * small.vt[c * l + j]).sum();
            u.set(i, c, v as f32);
        }
    }
    let mut vt = Matrix::zeros(r, n);
    for c in 0..r {
        for k in 0..n {
            vt.set(c, k, small.u[k * l + c] as f32);
        }
    }
    Svd { u, s: small.s[..r].to_vec(), vt }
}

/// Thin SVD of the product `B · A` (`B` is `[m, r]`, `A` is `[r, n]`) without forming the
/// `m × n` product: `B = U_b S_b V_bᵀ`, then the small `C = S_b V_bᵀ A` is decomposed,
/// `C = U_c S_c V_cᵀ`, giving `B·A = (U_b U_c) S_c V_cᵀ`. Returns `min(m, r, n)` components (the
/// product cannot have more non-zero singular values); fast when `r` is small. Errors when the
/// inner dimensions differ.
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
    let sb = b.svd();
    // C = diag(s_b) · V_bᵀ · A
    let mut svt = sb.vt.clone();
    for (c, sv) in sb.s.iter().enumerate() {
        for j in 0..svt.cols {
            let v = svt.get(c, j) as f64 * sv;
            svt.set(c, j, v as f32);
        }
    }
    let c = svt.matmul(a);
    let sc = c.svd();
    let u = sb.u.matmul(&sc.u);
    Ok(Svd { u, s: sc.s, vt: sc.vt })
}

/// Inverse of an `n × n` row-major `f64` matrix by Gauss–Jordan elimination with partial
/// pivoting. Errors when a pivot is zero or tiny relative to the matrix's largest entry
/// (a singular or numerically singular matrix).
pub fn inverse_f64(n: usize, data: &[f64]) -> anyhow::Result<Vec<f64>> {
    if data.len() != n * n {
        anyhow::bail!("inverse: {} values do not form a {}x{} matrix; pass n*n values", data.len(), n, n);
    }
    if data.iter().any(|v| !v.is_finite()) {
        anyhow::bail!("inverse: the matrix has non-finite entries; check the inputs for NaN/inf");
    }
    let scale = data.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    if n > 0 && scale == 0.0 {
        anyhow::bail!("inverse: the matrix is all zeros (singular); it has no inverse");
    }
    let tol = scale * 1e-12 * n as f64;
    let mut a = data.to_vec();
    let mut inv = vec![0.0f64; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for col in 0..n {
        let (piv, pval) =
            (col..n)
                .map(|r| (r, a[r * n + col].abs()))
                .fold((col, -1.0), |best, x| if x.1 > best.1 { x } else { best });
        if pval <= tol {
            anyhow::bail!("inverse: the matrix is singular (pivot {pval:.3e} in column {col}); it has no inverse");
        }
        if piv != col {
            for j in 0..n {
                a.swap(piv * n + j, col * n + j);
                inv.swap(piv * n + j, col * n + j);
            }
        }
        let d = a[col * n + col];
        for j in 0..n {
            a[col * n + j] /= d;
            inv[col * n + j] /= d;
        }
        for r in 0..n {
            if r == col {
                continue;
            }
            let f = a[r * n + col];
            if f == 0.0 {
                continue;
            }
            for j in 0..n {
                a[r * n + j] -= f * a[col * n + j];
                inv[r * n + j] -= f * inv[col * n + j];
            }
        }
    }
    Ok(inv)
}

/// Dot product of two equal-length `f64` slices with four accumulators.
fn dot64(x: &[f64], y: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (cx, cy) = (x.chunks_exact(4), y.chunks_exact(4));
    let (rx, ry) = (cx.remainder(), cy.remainder());
    for (a, b) in cx.zip(cy) {
        acc[0] += a[0] * b[0];
        acc[1] += a[1] * b[1];
        acc[2] += a[2] * b[2];
        acc[3] += a[3] * b[3];
    }
    let tail: f64 = rx.iter().zip(ry).map(|(a, b)| a * b).sum();
    acc[0] + acc[1] + acc[2] + acc[3] + tail
}

/// Applies the Jacobi rotation `(x_p, x_q) ← (c·x_p − s·x_q, s·x_p + c·x_q)` to two vectors.
fn rotate_pair(vecs: &mut [Vec<f64>], p: usize, q: usize, c: f64, s: f64) {
    let (lo, hi) = vecs.split_at_mut(q);
    let (xp, xq) = (&mut lo[p], &mut hi[0]);
    for (a, b) in xp.iter_mut().zip(xq.iter_mut()) {
        let (x, y) = (*a, *b);
        *a = c * x - s * y;
        *b = s * x + c * y;
    }
}

/// Fills the empty vectors in `cols` with unit vectors of length `m` orthogonal to all the
/// others (Gram–Schmidt against the standard basis, twice for stability).
fn complete_orthonormal(cols: &mut [Vec<f64>], m: usize) {
    let mut next_basis = 0usize;
    for idx in 0..cols.len() {
        if !cols[idx].is_empty() {
            continue;
        }
        while next_basis < m {
            let mut cand = vec![0.0f64; m];
            cand[next_basis] = 1.0;
            next_basis += 1;
            for _ in 0..2 {
                for other in cols.iter().filter(|c| !c.is_empty()) {
                    let d: f64 = other.iter().zip(&cand).map(|(a, b)| a * b).sum();
                    for (x, o) in cand.iter_mut().zip(other) {
                        *x -= d * o;
                    }
                }
            }
            let norm = cand.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm > 1e-6 {
                cols[idx] = cand.into_iter().map(|x| x / norm).collect();
                break;
            }
        }
    }
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
        let svd = m.svd();
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
            let svd = m.svd();
            let k = m.rows.min(m.cols);
            assert_eq!(svd.u.shape(), (m.rows, k));
            assert_eq!(svd.vt.shape(), (k, m.cols));
            assert!(svd.s.windows(2).all(|w| w[0] >= w[1]));
            assert!(max_abs_diff(&svd.reconstruct(k), m) < 1e-5);
            assert_orthonormal_cols(&svd.u);
            assert_orthonormal_cols(&svd.vt.transpose());
        }
        let s = deficient.svd().s;
        assert!(s[2] < 1e-5 && s[1] > 1e-2);
    }

    #[test]
    fn eckart_young_truncation_error() {
        let m = random(8, 6, 5);
        let svd = m.svd();
        for r in 0..=6 {
            let (b, a) = m.low_rank(r);
            assert_eq!((b.shape(), a.shape()), ((8, r), (r, 6)));
            let err2 = if r == 0 { m.dot(&m) } else { m.sub(&b.matmul(&a)).dot(&m.sub(&b.matmul(&a))) };
            let tail: f64 = svd.s[r..].iter().map(|s| s * s).sum();
            assert!((err2 - tail).abs() < 1e-4, "r={r}: {err2} vs {tail}");
        }
        // Padding beyond the rank keeps the shapes and adds zeros.
        let (b, a) = m.low_rank(9);
        assert_eq!((b.shape(), a.shape()), ((8, 9), (9, 6)));
        assert!(max_abs_diff(&b.matmul(&a), &m) < 1e-5);
    }

    #[test]
    fn randomized_truncation_matches_exact_on_large_matrix() {
        // 300 x 280 with a decaying spectrum: low-rank part plus small noise.
        let m = random(300, 12, 10).matmul(&random(12, 280, 11)).add(&random(300, 280, 12).scale(0.01));
        let exact = m.svd();
        let fast = m.svd_truncated(4);
        assert_eq!((fast.u.shape(), fast.vt.shape(), fast.s.len()), ((300, 4), (4, 280), 4));
        for i in 0..4 {
            assert!((fast.s[i] - exact.s[i]).abs() < 1e-4 * exact.s[0], "{i}: {} vs {}", fast.s[i], exact.s[i]);
        }
        let err = m.sub(&fast.reconstruct(4));
        let tail: f64 = exact.s[4..].iter().map(|s| s * s).sum();
        assert!((err.dot(&err) - tail).abs() < 1e-3 * tail, "{} vs {tail}", err.dot(&err));
        assert_orthonormal_cols(&fast.u);
        assert_orthonormal_cols(&fast.vt.transpose());
    }

    #[test]
    fn svd_of_product_matches_dense() {
        let b = random(10, 3, 6);
        let a = random(3, 7, 7);
        let p = b.matmul(&a);
        let fast = svd_of_product(&b, &a).unwrap();
        let dense = p.svd();
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
