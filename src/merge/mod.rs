//! Merge operators for LoRA adapters, in the style of a small mergekit registry.
//!
//! Every method takes `K ≥ 1` adapters, one weight per adapter and [`MergeOptions`], and
//! returns a [`Merged`] value: an [`Adapter`] for methods that keep a low-rank form
//! ([`MergeMethod::FactorAverage`], [`MergeMethod::DeltaSvd`], [`MergeMethod::Stack`]) or dense
//! per-module `ΔW` for those that do not ([`MergeMethod::TaskArithmetic`], [`MergeMethod::Ties`];
//! [`MergeOptions::refactor_rank`] turns them back into an adapter by truncated SVD).
//!
//! Conventions shared by all methods:
//! - `ΔW_k = s_k · B_k · A_k` always includes the adapter's own scale `s_k` (from its spec and
//!   the module's rank), so adapters with different `alpha`, scaling rule or rank combine in
//!   weight space.
//! - A module present in some adapters and absent from others counts as `ΔW = 0` (zero factors)
//!   in the adapters that lack it; the merged result carries the union of modules.
//! - Modules must have the same `ΔW` shape `[out, in]` in every adapter that has them.
//! - Merged adapters use the first adapter's spec. When a module's rank changes, its `B` is
//!   rescaled so that `spec.scale_for(new_rank) · B · A` is exactly the intended `ΔW`, and
//!   `spec.rank` is set to the largest module rank of the result.
//! - An empty `weights` slice means "equal weights". [`MergeMethod::FactorAverage`],
//!   [`MergeMethod::DeltaSvd`] and [`MergeMethod::Stack`] normalise the weights to sum 1 (so the
//!   sum must be positive); [`MergeMethod::TaskArithmetic`] uses them as given (default 1 each);
//!   [`MergeMethod::Ties`] needs positive weights (default 1 each) and uses them inside its
//!   weighted disjoint mean.

mod align;
mod dense;
mod factor;

pub use align::{align_adapters, factor_delta_gap, AlignReport};
pub use dense::{task_arithmetic_deltas, ties_deltas};

use crate::adapter::{Adapter, LoraFactors, LoraSpec, ModuleKey};
use crate::linalg::Matrix;
use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Default TIES density (fraction of entries kept per module per adapter), as in the TIES paper.
pub const DEFAULT_TIES_DENSITY: f64 = 0.2;

/// A merge method and its hyper-parameters.
#[derive(Clone, Debug, PartialEq)]
pub enum MergeMethod {
    /// FedAvg / FedIT on the factors: `A = Σ w_k A_k`, `B = Σ w_k B_k` (weights normalised to 1).
    /// Needs equal ranks per module unless [`MergeOptions::pad_ranks`]; optional LoRA Align first.
    FactorAverage,
    /// FlexLoRA: `ΔW = Σ w_k ΔW_k` (normalised weights), then truncated SVD to rank
    /// [`MergeOptions::svd_rank`] (default: the largest rank among the adapters for that module).
    DeltaSvd,
    /// FLoRA stacking: concatenate the factors along the rank so that the merged adapter's `ΔW`
    /// is exactly `Σ w_k ΔW_k` (normalised weights); rank = `Σ r_k`.
    Stack,
    /// Task arithmetic: `ΔW = λ · Σ w_k ΔW_k` with the weights as given (not normalised).
    TaskArithmetic {
        /// Global scale `λ` applied to the weighted sum.
        lambda: f64,
    },
    /// TIES on the dense deltas: trim to the top `density` fraction by magnitude, elect a sign
    /// per entry by total mass, weighted disjoint mean over agreeing adapters, times `λ`.
    Ties {
        /// Fraction of entries kept per module per adapter, in `[0, 1]`.
        density: f64,
        /// Global scale `λ` applied to the merged delta.
        lambda: f64,
    },
}

impl MergeMethod {
    /// The canonical method names accepted by [`MergeMethod::parse`].
    pub const NAMES: [&'static str; 5] = ["factor", "delta-svd", "stack", "task-arithmetic", "ties"];

    /// The canonical name: `factor`, `delta-svd`, `stack`, `task-arithmetic` or `ties`.
    pub fn name(&self) -> &'static str {
        match self {
            MergeMethod::FactorAverage => "factor",
            MergeMethod::DeltaSvd => "delta-svd",
            MergeMethod::Stack => "stack",
            MergeMethod::TaskArithmetic { .. } => "task-arithmetic",
            MergeMethod::Ties { .. } => "ties",
        }
    }

    /// Whether the method's natural output is an adapter (true) or dense deltas (false).
    pub fn keeps_low_rank(&self) -> bool {
        matches!(self, MergeMethod::FactorAverage | MergeMethod::DeltaSvd | MergeMethod::Stack)
    }

    /// Parses `name` or `name:key=value,key=value`. Names (case-insensitive, `_` = `-`):
    /// `factor` (aliases `factor-average`, `fedavg`, `fedit`), `delta-svd` (`svd`, `flexlora`),
    /// `stack` (`cat`, `flora`), `task-arithmetic` (`ta`; key `lambda`, default 1),
    /// `ties` (keys `density`, default 0.2, and `lambda`, default 1).
    pub fn parse(s: &str) -> Result<MergeMethod> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        let (name, params) = match s.split_once(':') {
            Some((n, p)) => (n.trim().to_string(), p.trim().to_string()),
            None => (s.clone(), String::new()),
        };
        let mut kv: BTreeMap<String, f64> = BTreeMap::new();
        for part in params.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                bail!("merge method parameter `{part}` is not key=value; write e.g. `ties:density=0.2,lambda=1`");
            };
            let value: f64 = v.trim().parse().with_context(|| {
                format!("merge method parameter `{}` has non-numeric value `{}`; give a number", k.trim(), v.trim())
            })?;
            kv.insert(k.trim().to_string(), value);
        }
        let allowed: &[&str] = match name.as_str() {
            "task-arithmetic" | "ta" => &["lambda"],
            "ties" => &["density", "lambda"],
            _ => &[],
        };
        if let Some(bad) = kv.keys().find(|k| !allowed.contains(&k.as_str())) {
            bail!("merge method `{name}` has no parameter `{bad}`; allowed: {}", allowed_list(allowed));
        }
        let lambda = kv.get("lambda").copied().unwrap_or(1.0);
        let method = match name.as_str() {
            "factor" | "factor-average" | "fedavg" | "fedit" => MergeMethod::FactorAverage,
            "delta-svd" | "svd" | "flexlora" => MergeMethod::DeltaSvd,
            "stack" | "cat" | "flora" => MergeMethod::Stack,
            "task-arithmetic" | "ta" => MergeMethod::TaskArithmetic { lambda },
            "ties" => MergeMethod::Ties { density: kv.get("density").copied().unwrap_or(DEFAULT_TIES_DENSITY), lambda },
            other => bail!("unknown merge method `{other}`; use one of {}", Self::NAMES.join(", ")),
        };
        method.validate()?;
        Ok(method)
    }

    /// Checks the hyper-parameters (finite `λ`, density in `[0, 1]`).
    pub fn validate(&self) -> Result<()> {
        match *self {
            MergeMethod::TaskArithmetic { lambda } | MergeMethod::Ties { lambda, .. } if !lambda.is_finite() => {
                bail!("merge lambda is {lambda}; give a finite number")
            }
            MergeMethod::Ties { density, .. } if !(0.0..=1.0).contains(&density) => {
                bail!("TIES density {density} is outside [0, 1]; it is the fraction of entries kept")
            }
            _ => Ok(()),
        }
    }
}

fn allowed_list(allowed: &[&str]) -> String {
    if allowed.is_empty() {
        "none".to_string()
    } else {
        allowed.join(", ")
    }
}

impl fmt::Display for MergeMethod {
    /// Writes the form [`MergeMethod::parse`] reads back, e.g. `ties:density=0.2,lambda=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MergeMethod::TaskArithmetic { lambda } => write!(f, "task-arithmetic:lambda={lambda}"),
            MergeMethod::Ties { density, lambda } => write!(f, "ties:density={density},lambda={lambda}"),
            other => f.write_str(other.name()),
        }
    }
}

impl FromStr for MergeMethod {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        MergeMethod::parse(s)
    }
}

/// Options shared by the merge methods.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeOptions {
    /// Run LoRA Align (CopRA's "LA") before factor averaging: per module, each adapter `k ≥ 1`
    /// is re-parameterised as `(B_k P_k, P_k⁻¹ A_k)` to shrink the factor-vs-delta gap. Only
    /// affects [`MergeMethod::FactorAverage`]. Default off.
    pub align: bool,
    /// Optimiser steps per adapter and module for LoRA Align (default 300).
    pub align_steps: usize,
    /// Adam learning rate on the entries of `P` for LoRA Align (default 0.01).
    pub align_lr: f64,
    /// Zero-pad heterogeneous ranks to the largest rank before factor averaging (default off:
    /// unequal ranks are an error).
    pub pad_ranks: bool,
    /// Target rank of [`MergeMethod::DeltaSvd`] (default: the largest rank among the adapters,
    /// per module).
    pub svd_rank: Option<usize>,
    /// Re-factorise the dense result of [`MergeMethod::TaskArithmetic`] / [`MergeMethod::Ties`]
    /// into an adapter of this rank by truncated SVD (default: return dense deltas).
    pub refactor_rank: Option<usize>,
}

impl Default for MergeOptions {
    fn default() -> Self {
        Self { align: false, align_steps: 300, align_lr: 0.01, pad_ranks: false, svd_rank: None, refactor_rank: None }
    }
}

/// The result of a merge.
#[derive(Clone, Debug, PartialEq)]
pub enum Merged {
    /// A low-rank adapter under the first input's spec.
    Adapter(Adapter),
    /// Dense `ΔW` (scale included) per module.
    Dense(BTreeMap<ModuleKey, Matrix>),
}

impl Merged {
    /// Dense `ΔW` per module, scale included.
    pub fn deltas(&self) -> BTreeMap<ModuleKey, Matrix> {
        match self {
            Merged::Adapter(a) => adapter_deltas(a),
            Merged::Dense(d) => d.clone(),
        }
    }

    /// The adapter, when the result is one.
    pub fn adapter(&self) -> Option<&Adapter> {
        match self {
            Merged::Adapter(a) => Some(a),
            Merged::Dense(_) => None,
        }
    }
}

/// A merge result together with the LoRA Align diagnostics (empty when alignment did not run).
#[derive(Clone, Debug, PartialEq)]
pub struct MergeOutcome {
    /// The merged adapter or deltas.
    pub merged: Merged,
    /// Per-module factor-vs-delta gap before and after alignment.
    pub align: BTreeMap<ModuleKey, AlignReport>,
}

/// Merges `adapters` with `weights` (one per adapter, or empty for the method's default) by
/// `method`. See the module documentation for the shared conventions.
pub fn merge(adapters: &[&Adapter], weights: &[f64], method: &MergeMethod, opts: &MergeOptions) -> Result<Merged> {
    Ok(merge_with_report(adapters, weights, method, opts)?.merged)
}

/// Like [`merge`], also returning the LoRA Align report when [`MergeOptions::align`] is set.
pub fn merge_with_report(
    adapters: &[&Adapter],
    weights: &[f64],
    method: &MergeMethod,
    opts: &MergeOptions,
) -> Result<MergeOutcome> {
    method.validate()?;
    let shapes = check_adapters(adapters)?;
    let mut align = BTreeMap::new();
    let merged = match method {
        MergeMethod::FactorAverage => {
            let w = resolve_weights(weights, adapters.len(), WeightRule::Normalised)?;
            let (adapter, report) = factor::factor_average(adapters, &w, &shapes, opts)?;
            align = report;
            Merged::Adapter(adapter)
        }
        MergeMethod::DeltaSvd => {
            let w = resolve_weights(weights, adapters.len(), WeightRule::Normalised)?;
            Merged::Adapter(factor::delta_svd(adapters, &w, &shapes, opts.svd_rank)?)
        }
        MergeMethod::Stack => {
            let w = resolve_weights(weights, adapters.len(), WeightRule::Normalised)?;
            Merged::Adapter(factor::stack(adapters, &w, &shapes)?)
        }
        MergeMethod::TaskArithmetic { lambda } => {
            let w = resolve_weights(weights, adapters.len(), WeightRule::Raw)?;
            match opts.refactor_rank {
                Some(r) => Merged::Adapter(factor::weighted_sum_svd(adapters, &w, *lambda, &shapes, Some(r))?),
                None => Merged::Dense(dense::task_arithmetic_impl(adapters, &w, *lambda, &shapes)),
            }
        }
        MergeMethod::Ties { density, lambda } => {
            let w = resolve_weights(weights, adapters.len(), WeightRule::Positive)?;
            let deltas = dense::ties_impl(adapters, &w, *density, *lambda, &shapes);
            match opts.refactor_rank {
                Some(r) => Merged::Adapter(refactor(&deltas, &adapters[0].spec, r)?),
                None => Merged::Dense(deltas),
            }
        }
    };
    Ok(MergeOutcome { merged, align })
}

pub use crate::eval::adapter_deltas;

/// Re-factorises dense deltas into an adapter of rank `rank` under `spec` by truncated SVD
/// (`B = U√S / s(rank)`, `A = √S Vᵀ`), so `spec.scale_for(rank) · B · A` is the best rank-`rank`
/// approximation of each delta. The returned spec has `rank` set to `rank`.
pub fn refactor(deltas: &BTreeMap<ModuleKey, Matrix>, spec: &LoraSpec, rank: usize) -> Result<Adapter> {
    if rank == 0 {
        bail!("cannot re-factorise to rank 0; choose a rank of at least 1");
    }
    let scale = checked_scale(spec, rank)?;
    let mut modules = BTreeMap::new();
    for (key, delta) in deltas {
        let (b, a) = delta.low_rank(rank);
        modules.insert(*key, LoraFactors { a, b: b.scale((1.0 / scale) as f32) });
    }
    let mut spec = spec.clone();
    spec.rank = rank;
    Ok(Adapter { spec, modules })
}

/// How a weight vector is checked and transformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WeightRule {
    /// Divide by the sum, which must be positive; empty = equal weights `1/K`.
    Normalised,
    /// Use as given (finite); empty = 1 each.
    Raw,
    /// Each weight must be positive; empty = 1 each.
    Positive,
}

/// Checks `weights` against the number of adapters and applies `rule`.
pub(crate) fn resolve_weights(weights: &[f64], k: usize, rule: WeightRule) -> Result<Vec<f64>> {
    let w: Vec<f64> = if weights.is_empty() { vec![1.0; k] } else { weights.to_vec() };
    if w.len() != k {
        bail!("got {} weights for {} adapters; pass one weight per adapter (or none for equal weights)", w.len(), k);
    }
    if let Some(bad) = w.iter().find(|v| !v.is_finite()) {
        bail!("merge weight {bad} is not finite; give finite weights");
    }
    match rule {
        WeightRule::Raw => Ok(w),
        WeightRule::Positive => {
            if let Some(bad) = w.iter().find(|v| **v <= 0.0) {
                bail!("merge weight {bad} is not positive; this method needs every weight > 0");
            }
            Ok(w)
        }
        WeightRule::Normalised => {
            let sum: f64 = w.iter().sum();
            if sum <= 0.0 || !sum.is_finite() {
                bail!("merge weights sum to {sum}; they must sum to a positive number (they are normalised to 1)");
            }
            Ok(w.iter().map(|v| v / sum).collect())
        }
    }
}

/// Validates the adapters and returns the `ΔW` shape `(out, in)` of every module in the union.
pub(crate) fn check_adapters(adapters: &[&Adapter]) -> Result<BTreeMap<ModuleKey, (usize, usize)>> {
    if adapters.is_empty() {
        bail!("no adapters to merge; pass at least one adapter");
    }
    let mut shapes: BTreeMap<ModuleKey, (usize, usize, usize)> = BTreeMap::new();
    for (i, adapter) in adapters.iter().enumerate() {
        for (key, f) in &adapter.modules {
            if f.a.rows != f.b.cols {
                bail!(
                    "adapter {i} module {key}: A is {}x{} but B is {}x{}; A's rows must equal B's columns (the rank)",
                    f.a.rows,
                    f.a.cols,
                    f.b.rows,
                    f.b.cols
                );
            }
            if f.a.rows == 0 {
                bail!("adapter {i} module {key} has rank 0; remove the module instead of giving it empty factors");
            }
            let shape = (f.b.rows, f.a.cols);
            match shapes.get(key) {
                Some(&(o, n, first)) if (o, n) != shape => bail!(
                    "module {key}: adapter {i} has ΔW shape {}x{} but adapter {first} has {o}x{n}; \
                     merge adapters of the same base model",
                    shape.0,
                    shape.1
                ),
                Some(_) => {}
                None => {
                    shapes.insert(*key, (shape.0, shape.1, i));
                }
            }
        }
    }
    Ok(shapes.into_iter().map(|(k, (o, n, _))| (k, (o, n))).collect())
}

/// `spec.scale_for(rank)`, checked to be finite and non-zero (it is divided by).
pub(crate) fn checked_scale(spec: &LoraSpec, rank: usize) -> Result<f64> {
    let s = spec.scale_for(rank);
    if !s.is_finite() || s == 0.0 {
        bail!("LoRA scale for rank {rank} is {s} (alpha {}); use a non-zero, finite alpha", spec.alpha);
    }
    Ok(s)
}

/// The first spec with `rank` set to the largest module rank (unchanged when there are none).
pub(crate) fn output_spec(spec: &LoraSpec, modules: &BTreeMap<ModuleKey, LoraFactors>) -> LoraSpec {
    let mut spec = spec.clone();
    if let Some(r) = modules.values().map(|f| f.rank()).max() {
        spec.rank = r;
    }
    spec
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::*;
    use crate::adapter::{Scaling, TargetModule};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// A module key for tests.
    pub fn key(block: usize, module: TargetModule) -> ModuleKey {
        ModuleKey { block, module }
    }

    /// A spec with `s = 1` at rank 2 under the standard rule (alpha 2).
    pub fn unit_spec(rank: usize) -> LoraSpec {
        LoraSpec { rank, alpha: 2.0, scaling: Scaling::Standard, ..LoraSpec::default() }
    }

    /// Random matrix with entries in [-1, 1).
    pub fn rand_matrix(rows: usize, cols: usize, rng: &mut ChaCha8Rng) -> Matrix {
        Matrix::from_vec(rows, cols, (0..rows * cols).map(|_| rng.random_range(-1.0f32..1.0)).collect())
    }

    /// A random adapter with the given keys, rank and shape `[out, in]` under the default spec.
    pub fn random_adapter(keys: &[ModuleKey], rank: usize, out: usize, inp: usize, seed: u64) -> Adapter {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let spec = LoraSpec { rank, ..LoraSpec::default() };
        let modules = keys
            .iter()
            .map(|k| (*k, LoraFactors { a: rand_matrix(rank, inp, &mut rng), b: rand_matrix(out, rank, &mut rng) }))
            .collect();
        Adapter { spec, modules }
    }

    /// Largest absolute entry difference between two delta maps with the same keys.
    pub fn max_diff(x: &BTreeMap<ModuleKey, Matrix>, y: &BTreeMap<ModuleKey, Matrix>) -> f32 {
        assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
        x.iter()
            .map(|(k, m)| m.data.iter().zip(&y[k].data).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max))
            .fold(0.0, f32::max)
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::adapter::TargetModule::{Query, Value};

    #[test]
    fn parse_names_params_and_roundtrip() {
        assert_eq!(MergeMethod::parse("factor").unwrap(), MergeMethod::FactorAverage);
        assert_eq!(MergeMethod::parse("Delta_SVD").unwrap(), MergeMethod::DeltaSvd);
        assert_eq!(MergeMethod::parse("stack").unwrap(), MergeMethod::Stack);
        assert_eq!(MergeMethod::parse("task-arithmetic").unwrap(), MergeMethod::TaskArithmetic { lambda: 1.0 });
        assert_eq!(MergeMethod::parse("ties").unwrap(), MergeMethod::Ties { density: 0.2, lambda: 1.0 });
        let m = MergeMethod::parse("ties:density=0.5, lambda=0.7").unwrap();
        assert_eq!(m, MergeMethod::Ties { density: 0.5, lambda: 0.7 });
        assert_eq!(m.to_string().parse::<MergeMethod>().unwrap(), m);
        for name in MergeMethod::NAMES {
            assert_eq!(MergeMethod::parse(name).unwrap().name(), name);
        }
        assert!(MergeMethod::parse("slerp").unwrap_err().to_string().contains("unknown merge method"));
        assert!(MergeMethod::parse("ties:density=1.5").unwrap_err().to_string().contains("outside [0, 1]"));
        assert!(MergeMethod::parse("stack:lambda=2").is_err());
        assert!(MergeMethod::parse("ties:density").is_err());
    }

    #[test]
    fn weights_are_checked() {
        assert_eq!(resolve_weights(&[], 2, WeightRule::Normalised).unwrap(), vec![0.5, 0.5]);
        assert_eq!(resolve_weights(&[1.0, 3.0], 2, WeightRule::Normalised).unwrap(), vec![0.25, 0.75]);
        assert!(resolve_weights(&[1.0, -1.0], 2, WeightRule::Normalised).unwrap_err().to_string().contains("sum to"));
        assert!(resolve_weights(&[1.0], 2, WeightRule::Raw).unwrap_err().to_string().contains("1 weights for 2"));
        assert!(resolve_weights(&[1.0, 0.0], 2, WeightRule::Positive).is_err());
        assert!(resolve_weights(&[f64::NAN, 1.0], 2, WeightRule::Raw).is_err());
        assert_eq!(resolve_weights(&[2.0, -1.0], 2, WeightRule::Raw).unwrap(), vec![2.0, -1.0]);
    }

    #[test]
    fn adapters_are_checked() {
        let a = random_adapter(&[key(0, Query)], 2, 4, 3, 1);
        let b = random_adapter(&[key(0, Query)], 2, 5, 3, 2);
        let err = merge(&[&a, &b], &[], &MergeMethod::Stack, &MergeOptions::default()).unwrap_err();
        assert!(err.to_string().contains("module 0.q"), "{err}");
        assert!(merge(&[], &[], &MergeMethod::Stack, &MergeOptions::default()).is_err());
        let mut bad = a.clone();
        bad.modules.get_mut(&key(0, Query)).unwrap().a = Matrix::zeros(3, 3);
        assert!(merge(&[&bad], &[], &MergeMethod::Stack, &MergeOptions::default()).is_err());
    }

    #[test]
    fn every_method_keeps_the_module_union_and_a_single_adapter() {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 5, 4, 3);
        let methods = [
            MergeMethod::FactorAverage,
            MergeMethod::DeltaSvd,
            MergeMethod::Stack,
            MergeMethod::TaskArithmetic { lambda: 1.0 },
            MergeMethod::Ties { density: 1.0, lambda: 1.0 },
        ];
        for m in &methods {
            let merged = merge(&[&a], &[], m, &MergeOptions::default()).unwrap();
            assert_eq!(merged.adapter().is_some(), m.keeps_low_rank(), "{m}");
            assert!(max_diff(&merged.deltas(), &adapter_deltas(&a)) < 1e-5, "{m}");
        }
    }

    #[test]
    fn refactor_reproduces_low_rank_deltas() {
        let a = random_adapter(&[key(0, Query)], 2, 6, 5, 4);
        let d = adapter_deltas(&a);
        let re = refactor(&d, &a.spec, 2).unwrap();
        assert_eq!(re.spec.rank, 2);
        assert!(max_diff(&adapter_deltas(&re), &d) < 1e-5);
        assert!(refactor(&d, &a.spec, 0).is_err());
    }
}
