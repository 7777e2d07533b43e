//! Learned curves between two seeds (Garipov et al. 2018): the control point of a Bézier curve
//! or polygonal chain in factor space is trained on the training shots with a run's optimizer,
//! schedule and budget ([`train_curve`]), then the curve is evaluated on the α grid like a line.

use crate::adapter::Adapter;
use crate::model::head::Head;
use crate::model::Backbone;
use crate::report::table::table_row;
use crate::train::curve::{line_midpoint, train_curve, CurveKind};
use crate::train::TrainConfig;
use anyhow::{bail, Result};
use candle_core::Tensor;
use std::collections::BTreeMap;

/// What the curves are trained with: the curve shapes, the training shots and, per method, the
/// training configuration (optimizer, schedule, learning rate, steps; CopRA's schedule drops
/// blocks' adapters while the curve trains).
pub struct CurveTraining<'a> {
    /// Curve shapes to train per pair.
    pub kinds: Vec<CurveKind>,
    /// The task head.
    pub head: &'a Head,
    /// Frozen hidden states entering every block, for the training shots.
    pub train_inputs: &'a [Tensor],
    /// Labels of the training shots.
    pub labels: &'a [u32],
    /// Training configuration per method name (its seed is replaced per pair).
    pub configs: BTreeMap<String, TrainConfig>,
}

table_row! {
    /// One trained curve: a row of `connectivity_curves.parquet`.
    pub struct CurveRow {
        /// Method name (the endpoints' method).
        pub method: String,
        /// Seed of endpoint A.
        pub seed_a: i64,
        /// Seed of endpoint B.
        pub seed_b: i64,
        /// `bezier` or `polychain`.
        pub curve: CurveKind,
        /// The method whose schedule trained the control point (`copra` drops blocks).
        pub trained_with: String,
        /// Optimizer steps.
        pub steps: i64,
        /// Seed of the curve's batches and positions.
        pub curve_seed: i64,
        /// Mean training loss over the last tenth of the steps.
        pub final_train_loss: f64,
        /// Factor distance of the trained control point from the line's midpoint.
        pub control_distance: f64,
        /// Factor distance between the two endpoints.
        pub endpoint_distance: f64,
        /// `control_distance / endpoint_distance`.
        pub control_relative: f64,
        /// Wall time of the curve's training, seconds.
        pub wall_seconds: f64,
    }
}

crate::report::table::named_cells!(CurveKind);

/// `√(Σ ‖A_x − A_y‖² + ‖B_x − B_y‖²)` over the modules of `x` (raw stored factors).
pub fn factor_distance(x: &Adapter, y: &Adapter) -> Result<f64> {
    let mut sum = 0.0;
    for (key, fx) in &x.modules {
        let Some(fy) = y.modules.get(key) else { bail!("module {key} is missing from one of the adapters") };
        for (p, q) in [(&fx.a, &fy.a), (&fx.b, &fy.b)] {
            if p.shape() != q.shape() {
                bail!("module {key}: factor shapes differ; compare adapters of the same rank");
            }
            sum += p.data.iter().zip(&q.data).map(|(u, v)| (*u as f64 - *v as f64).powi(2)).sum::<f64>();
        }
    }
    Ok(sum.sqrt())
}

/// The seed of the curve between seeds `a` and `b` (distinct per ordered pair).
pub fn curve_seed(a: u64, b: u64) -> u64 {
    a.wrapping_mul(1_000_003).wrapping_add(b)
}

/// Trains the `kind` curve between `a` and `b` of `method` and returns its control point and
/// table row.
pub(super) fn trained_curve(
    backbone: &Backbone,
    t: &CurveTraining,
    method: &str,
    seeds: (u64, u64),
    kind: CurveKind,
    a: &Adapter,
    b: &Adapter,
) -> Result<(Adapter, CurveRow)> {
    let Some(base) = t.configs.get(method) else {
        bail!("no curve training configuration for method {method}; pass one per method");
    };
    let seed = curve_seed(seeds.0, seeds.1);
    let cfg = TrainConfig { seed, ..base.clone() };
    let out = train_curve(backbone, t.head, t.train_inputs, t.labels, &cfg, kind, a, b)?;
    let tail = (out.log.len() / 10).max(1).min(out.log.len());
    let final_loss = out.log[out.log.len() - tail..].iter().map(|r| r.loss).sum::<f64>() / tail.max(1) as f64;
    let control_distance = factor_distance(&out.control, &line_midpoint(a, b)?)?;
    let endpoint_distance = factor_distance(a, b)?;
    let row = CurveRow {
        method: method.to_string(),
        seed_a: seeds.0 as i64,
        seed_b: seeds.1 as i64,
        curve: kind,
        trained_with: cfg.method.name(),
        steps: cfg.steps as i64,
        curve_seed: seed as i64,
        final_train_loss: final_loss,
        control_distance,
        endpoint_distance,
        control_relative: if endpoint_distance > 0.0 { control_distance / endpoint_distance } else { f64::NAN },
        wall_seconds: out.wall_seconds,
    };
    Ok((out.control, row))
}
