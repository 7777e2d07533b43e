//! Interpolation between two adapters and their distances, in two spaces:
//!
//! - [`Space::Factor`]: the trained parameters. `A(α) = (1−α)A_a + αA_b`, `B(α)` likewise and
//!   `ΔW(α) = s_a · B(α) · A(α)`, which is quadratic in `α`. When `b`'s scale differs from `a`'s
//!   (another alpha, scaling rule), `B_b` is first multiplied by `s_b / s_a` so that `α = 1`
//!   gives exactly `ΔW_b`. Needs equal ranks per module.
//! - [`Space::Delta`]: the weight updates, `ΔW(α) = (1−α)ΔW_a + αΔW_b` (linear in `α`).
//!
//! A module present in only one adapter counts as zero (zero factors / zero `ΔW`) in the other;
//! in factor space that gives `(1−α)²ΔW_a` (or `α²ΔW_b`). Every result carries the union of the
//! two adapters' modules. `α` may be any finite number (values outside `[0, 1]` extrapolate).

use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// Where adapters are interpolated and compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    /// The factors `A` and `B` (what training updates).
    Factor,
    /// The weight update `ΔW = s·B·A`.
    Delta,
}

impl Space {
    /// Both spaces, factor first.
    pub const ALL: [Space; 2] = [Space::Factor, Space::Delta];

    /// `factor` or `delta`.
    pub fn name(self) -> &'static str {
        match self {
            Space::Factor => "factor",
            Space::Delta => "delta",
        }
    }

    /// Parses `factor` or `delta` (case-insensitive).
    pub fn parse(s: &str) -> Result<Space> {
        match s.trim().to_ascii_lowercase().as_str() {
            "factor" => Ok(Space::Factor),
            "delta" => Ok(Space::Delta),
            other => bail!("unknown interpolation space `{other}`; use `factor` or `delta`"),
        }
    }
}

impl fmt::Display for Space {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Space {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        Space::parse(s)
    }
}

/// The `[out, in]` shape of every module in the union of two adapters; errors on disagreement
/// or inconsistent factors.
fn union_shapes(a: &Adapter, b: &Adapter) -> Result<BTreeMap<ModuleKey, (usize, usize)>> {
    let mut shapes = BTreeMap::new();
    for (name, ad) in [("a", a), ("b", b)] {
        for (key, f) in &ad.modules {
            if f.a.rows != f.b.cols {
                bail!(
                    "adapter {name} module {key}: A is {}x{} but B is {}x{}; the factors' ranks must agree",
                    f.a.rows,
                    f.a.cols,
                    f.b.rows,
                    f.b.cols
                );
            }
            let shape = (f.b.rows, f.a.cols);
            if let Some(&(o, n)) = shapes.get(key) {
                if (o, n) != shape {
                    bail!(
                        "module {key}: ΔW is {o}x{n} in a but {}x{} in b; compare adapters of the same base model",
                        shape.0,
                        shape.1
                    );
                }
            }
            shapes.insert(*key, shape);
        }
    }
    Ok(shapes)
}

/// The factors of `key` in both adapters (zeros where missing), `b`'s `B` rescaled to `a`'s
/// scale, plus that scale. Errors on unequal ranks.
fn factor_pair(
    a: &Adapter,
    b: &Adapter,
    key: &ModuleKey,
    shape: (usize, usize),
) -> Result<(LoraFactors, LoraFactors, f64)> {
    let (fa, fb) = (a.modules.get(key), b.modules.get(key));
    let rank = match (fa, fb) {
        (Some(x), Some(y)) if x.rank() != y.rank() => bail!(
            "module {key} has rank {} in a and {} in b; factor-space interpolation needs equal ranks (use the delta space)",
            x.rank(),
            y.rank()
        ),
        (Some(x), _) => x.rank(),
        (None, Some(y)) => y.rank(),
        (None, None) => bail!("module {key} is in neither adapter"),
    };
    let scale = a.spec.scale_for(rank);
    if !scale.is_finite() || scale == 0.0 {
        bail!("adapter a's LoRA scale for rank {rank} is {scale}; use a non-zero, finite alpha");
    }
    let zero = || LoraFactors { a: Matrix::zeros(rank, shape.1), b: Matrix::zeros(shape.0, rank) };
    let left = fa.cloned().unwrap_or_else(zero);
    let right = match fb {
        Some(f) => LoraFactors { a: f.a.clone(), b: f.b.scale((b.scale_of(key) / scale) as f32) },
        None => zero(),
    };
    Ok((left, right, scale))
}

/// `ΔW` of `key` in `ad`, zeros of `shape` when missing.
fn delta_or_zero(ad: &Adapter, key: &ModuleKey, shape: (usize, usize)) -> Matrix {
    if ad.modules.contains_key(key) {
        ad.delta(key)
    } else {
        Matrix::zeros(shape.0, shape.1)
    }
}

/// `ΔW(α)` of one module in `space`.
fn interpolate_module(
    a: &Adapter,
    b: &Adapter,
    key: &ModuleKey,
    shape: (usize, usize),
    alpha: f32,
    space: Space,
) -> Result<Matrix> {
    Ok(match space {
        Space::Delta => delta_or_zero(a, key, shape).lerp(&delta_or_zero(b, key, shape), alpha),
        Space::Factor => {
            let (l, r, scale) = factor_pair(a, b, key, shape)?;
            l.b.lerp(&r.b, alpha).matmul(&l.a.lerp(&r.a, alpha)).scale(scale as f32)
        }
    })
}

fn check_alpha(alpha: f64) -> Result<()> {
    if !alpha.is_finite() {
        bail!("interpolation α is {alpha}; give a finite number (0 = adapter a, 1 = adapter b)");
    }
    Ok(())
}

/// Dense `ΔW(α)` (scale included) of every module in the union of `a` and `b`; `α = 0` gives
/// `a`, `α = 1` gives `b`. See the module documentation for the two spaces.
pub fn interpolate(a: &Adapter, b: &Adapter, alpha: f64, space: Space) -> Result<BTreeMap<ModuleKey, Matrix>> {
    check_alpha(alpha)?;
    let shapes = union_shapes(a, b)?;
    shapes.iter().map(|(k, &s)| Ok((*k, interpolate_module(a, b, k, s, alpha as f32, space)?))).collect()
}

/// Layer-wise interpolation (Adilova et al. 2024): modules of the listed `blocks` follow the path
/// of [`interpolate`], every other module stays at `a`'s `ΔW` (zero for modules only `b` has).
/// Errors when a listed block carries no module in either adapter, naming the valid blocks.
pub fn interpolate_blocks(
    a: &Adapter,
    b: &Adapter,
    alpha: f64,
    space: Space,
    blocks: &BTreeSet<usize>,
) -> Result<BTreeMap<ModuleKey, Matrix>> {
    check_alpha(alpha)?;
    let shapes = union_shapes(a, b)?;
    let valid: BTreeSet<usize> = shapes.keys().map(|k| k.block).collect();
    if let Some(bad) = blocks.iter().find(|blk| !valid.contains(blk)) {
        bail!("block {bad} carries no adapted module; choose blocks from {}", describe_blocks(&valid));
    }
    shapes
        .iter()
        .map(|(k, &s)| {
            let m = if blocks.contains(&k.block) {
                interpolate_module(a, b, k, s, alpha as f32, space)?
            } else {
                delta_or_zero(a, k, s)
            };
            Ok((*k, m))
        })
        .collect()
}

/// `0..=11` for a contiguous set, else the list; `none` when empty.
fn describe_blocks(valid: &BTreeSet<usize>) -> String {
    match (valid.first(), valid.last()) {
        (Some(&lo), Some(&hi)) if hi - lo + 1 == valid.len() => format!("{lo}..={hi}"),
        (Some(_), Some(_)) => format!("{:?}", valid.iter().collect::<Vec<_>>()),
        _ => "none (the adapters have no modules)".to_string(),
    }
}

/// One distance measurement between two adapters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DistanceRow {
    /// The block measured, or `None` for all modules together.
    pub block: Option<usize>,
    /// Factor space (raw `A` and `B` entries concatenated) or delta space (`ΔW` entries).
    pub space: Space,
    /// `‖x_a − x_b‖₂` of the concatenated entries.
    pub euclidean: f64,
    /// `⟨x_a, x_b⟩ / (‖x_a‖ ‖x_b‖)`; NaN when either vector is zero.
    pub cosine: f64,
}

/// Running sums for a Euclidean distance and a cosine similarity.
#[derive(Default, Clone, Copy)]
struct Acc {
    diff2: f64,
    ab: f64,
    aa: f64,
    bb: f64,
    invalid: bool,
}

impl Acc {
    fn add(&mut self, x: &Matrix, y: &Matrix) {
        for (p, q) in x.data.iter().zip(&y.data) {
            let (p, q) = (*p as f64, *q as f64);
            self.diff2 += (p - q) * (p - q);
            self.ab += p * q;
            self.aa += p * p;
            self.bb += q * q;
        }
    }
    fn merge(&mut self, o: &Acc) {
        self.diff2 += o.diff2;
        self.ab += o.ab;
        self.aa += o.aa;
        self.bb += o.bb;
        self.invalid |= o.invalid;
    }
    fn row(&self, block: Option<usize>, space: Space) -> DistanceRow {
        if self.invalid {
            return DistanceRow { block, space, euclidean: f64::NAN, cosine: f64::NAN };
        }
        let denom = (self.aa * self.bb).sqrt();
        let cosine = if denom > 0.0 { self.ab / denom } else { f64::NAN };
        DistanceRow { block, space, euclidean: self.diff2.sqrt(), cosine }
    }
}

/// Euclidean distance and cosine similarity between `a` and `b`, per block and in total, in
/// factor space (the raw stored `A` and `B` entries, no scale) and delta space (`ΔW` entries,
/// scale included). Rows: for each block in ascending order a factor row then a delta row,
/// then the totals (`block: None`). Missing modules count as zeros. Factor rows are NaN for a
/// block (and the total) where some module's ranks differ between the adapters, since factor
/// entries then do not correspond.
pub fn distances(a: &Adapter, b: &Adapter) -> Result<Vec<DistanceRow>> {
    let shapes = union_shapes(a, b)?;
    let mut per_block: BTreeMap<usize, (Acc, Acc)> = BTreeMap::new();
    for (key, &shape) in &shapes {
        let entry = per_block.entry(key.block).or_default();
        let (fa, fb) = (a.modules.get(key), b.modules.get(key));
        match (fa, fb) {
            (Some(x), Some(y)) if x.rank() != y.rank() => entry.0.invalid = true,
            _ => {
                let rank = fa.or(fb).map(|f| f.rank()).unwrap_or(0);
                let zero = LoraFactors { a: Matrix::zeros(rank, shape.1), b: Matrix::zeros(shape.0, rank) };
                let (x, y) = (fa.unwrap_or(&zero), fb.unwrap_or(&zero));
                entry.0.add(&x.a, &y.a);
                entry.0.add(&x.b, &y.b);
            }
        }
        entry.1.add(&delta_or_zero(a, key, shape), &delta_or_zero(b, key, shape));
    }
    let mut rows = Vec::with_capacity(2 * per_block.len() + 2);
    let (mut tf, mut td) = (Acc::default(), Acc::default());
    for (block, (f, d)) in &per_block {
        rows.push(f.row(Some(*block), Space::Factor));
        rows.push(d.row(Some(*block), Space::Delta));
        tf.merge(f);
        td.merge(d);
    }
    rows.push(tf.row(None, Space::Factor));
    rows.push(td.row(None, Space::Delta));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{LoraSpec, Scaling, TargetModule::*};

    fn key(block: usize, module: crate::adapter::TargetModule) -> ModuleKey {
        ModuleKey { block, module }
    }

    /// Standard scaling with alpha = rank, so s = 1.
    fn spec(rank: usize) -> LoraSpec {
        LoraSpec { rank, alpha: rank as f64, scaling: Scaling::Standard, ..LoraSpec::default() }
    }

    fn one(block: usize, a: Vec<f32>, b: Vec<f32>) -> (ModuleKey, LoraFactors) {
        (key(block, Query), LoraFactors { a: Matrix::from_vec(1, 2, a), b: Matrix::from_vec(2, 1, b) })
    }

    /// Two rank-1 adapters on blocks 0 and 1 with hand-picked factors.
    fn pair() -> (Adapter, Adapter) {
        let a = Adapter {
            spec: spec(1),
            modules: [one(0, vec![1.0, 0.0], vec![2.0, 0.0]), one(1, vec![1.0, 1.0], vec![1.0, 1.0])].into(),
        };
        let b = Adapter {
            spec: spec(1),
            modules: [one(0, vec![0.0, 1.0], vec![0.0, 4.0]), one(1, vec![1.0, 1.0], vec![1.0, 1.0])].into(),
        };
        (a, b)
    }

    #[test]
    fn space_names() {
        for s in Space::ALL {
            assert_eq!(Space::parse(s.name()).unwrap(), s);
            assert_eq!(s.to_string().parse::<Space>().unwrap(), s);
        }
        assert!(Space::parse("weights").is_err());
    }

    #[test]
    fn endpoints_and_midpoints_by_hand() {
        let (a, b) = pair();
        for space in Space::ALL {
            assert_eq!(interpolate(&a, &b, 0.0, space).unwrap()[&key(0, Query)], a.delta(&key(0, Query)));
            assert_eq!(interpolate(&a, &b, 1.0, space).unwrap()[&key(0, Query)], b.delta(&key(0, Query)));
        }
        // Delta: ½[[2,0],[0,0]] + ½[[0,0],[0,4]] = [[1,0],[0,2]].
        let d = interpolate(&a, &b, 0.5, Space::Delta).unwrap();
        assert_eq!(d[&key(0, Query)].data, vec![1.0, 0.0, 0.0, 2.0]);
        // Factor: B = [1; 2], A = [0.5, 0.5] → [[0.5, 0.5], [1, 1]] (quadratic path).
        let f = interpolate(&a, &b, 0.5, Space::Factor).unwrap();
        assert_eq!(f[&key(0, Query)].data, vec![0.5, 0.5, 1.0, 1.0]);
        // At α = 0.25 in factor space: B = [1.5; 1], A = [0.75, 0.25].
        let f = interpolate(&a, &b, 0.25, Space::Factor).unwrap();
        assert_eq!(f[&key(0, Query)].data, vec![1.125, 0.375, 0.75, 0.25]);
        // Identical modules stay put on both paths.
        assert_eq!(f[&key(1, Query)], a.delta(&key(1, Query)));
        assert!(interpolate(&a, &b, f64::NAN, Space::Delta).is_err());
    }

    #[test]
    fn scale_and_missing_modules() {
        let (a, mut b) = pair();
        // Same ΔW under a different scale: s = 2 with B halved.
        b.spec.alpha = 2.0;
        for f in b.modules.values_mut() {
            f.b = f.b.scale(0.5);
        }
        b.modules.remove(&key(1, Query));
        let f = interpolate(&a, &b, 1.0, Space::Factor).unwrap();
        assert_eq!(f[&key(0, Query)].data, vec![0.0, 0.0, 0.0, 4.0]);
        assert_eq!(f[&key(1, Query)].data, vec![0.0; 4]);
        // Missing in b: factor path is (1−α)²ΔW_a, delta path (1−α)ΔW_a.
        let f = interpolate(&a, &b, 0.5, Space::Factor).unwrap();
        assert_eq!(f[&key(1, Query)].data, vec![0.25; 4]);
        let d = interpolate(&a, &b, 0.5, Space::Delta).unwrap();
        assert_eq!(d[&key(1, Query)].data, vec![0.5; 4]);
    }

    #[test]
    fn rank_and_shape_mismatches() {
        let (a, mut b) = pair();
        b.modules.get_mut(&key(0, Query)).unwrap().a = Matrix::zeros(2, 2);
        b.modules.get_mut(&key(0, Query)).unwrap().b = Matrix::zeros(2, 2);
        let err = interpolate(&a, &b, 0.5, Space::Factor).unwrap_err().to_string();
        assert!(err.contains("delta space"), "{err}");
        assert!(interpolate(&a, &b, 0.5, Space::Delta).is_ok());
        let rows = distances(&a, &b).unwrap();
        assert!(rows[0].euclidean.is_nan() && !rows[1].euclidean.is_nan());
        b.modules.get_mut(&key(0, Query)).unwrap().b = Matrix::zeros(3, 2);
        assert!(interpolate(&a, &b, 0.5, Space::Delta).is_err());
    }

    #[test]
    fn block_wise_interpolation() {
        let (a, b) = pair();
        let only0: BTreeSet<usize> = [0].into();
        let m = interpolate_blocks(&a, &b, 1.0, Space::Delta, &only0).unwrap();
        assert_eq!(m[&key(0, Query)], b.delta(&key(0, Query)));
        assert_eq!(m[&key(1, Query)], a.delta(&key(1, Query)));
        let err = interpolate_blocks(&a, &b, 0.5, Space::Delta, &[5].into()).unwrap_err().to_string();
        assert!(err.contains("block 5") && err.contains("0..=1"), "{err}");
        assert_eq!(describe_blocks(&[0, 2].into()), "[0, 2]");
    }

    #[test]
    fn distances_by_hand() {
        let (a, b) = pair();
        let rows = distances(&a, &b).unwrap();
        assert_eq!(rows.len(), 6);
        // Block 0 factors: a = (1,0 | 2,0), b = (0,1 | 0,4): diff² = 1+1+4+16 = 22, dot 0.
        assert_eq!((rows[0].block, rows[0].space), (Some(0), Space::Factor));
        assert!((rows[0].euclidean - 22f64.sqrt()).abs() < 1e-12 && rows[0].cosine.abs() < 1e-12);
        // Block 0 delta: [[2,0],[0,0]] vs [[0,0],[0,4]]: diff² = 20, cosine 0.
        assert!((rows[1].euclidean - 20f64.sqrt()).abs() < 1e-12);
        // Block 1 is identical: distance 0, cosine 1.
        assert!(rows[2].euclidean.abs() < 1e-12 && (rows[2].cosine - 1.0).abs() < 1e-12);
        // Total factor: diff² 22; dot 4 (block 1), |a|² = 5 + 4, |b|² = 17 + 4.
        let tot = &rows[4];
        assert_eq!((tot.block, tot.space), (None, Space::Factor));
        assert!((tot.euclidean - 22f64.sqrt()).abs() < 1e-12);
        assert!((tot.cosine - 4.0 / (9.0f64 * 21.0).sqrt()).abs() < 1e-12);
        // Zero vector: cosine NaN.
        let empty = Adapter { spec: spec(1), modules: BTreeMap::new() };
        let rows = distances(&a, &empty).unwrap();
        assert!(rows[0].cosine.is_nan() && (rows[1].euclidean - 2.0).abs() < 1e-12);
    }
}
