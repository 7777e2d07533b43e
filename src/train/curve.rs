//! Learned curves between two adapters in factor space (Garipov et al. 2018): the endpoints
//! `θ_a` and `θ_b` (two seeds' trained factors) stay fixed, and a control point `θ_c` is trained
//! to minimise the expected training loss along the curve, with the position `t` drawn
//! uniformly at each step.
//!
//! - [`CurveKind::Bezier`]: `θ(t) = (1−t)²θ_a + 2t(1−t)θ_c + t²θ_b`.
//! - [`CurveKind::Polychain`]: two segments, `θ_a → θ_c` for `t ≤ ½` and `θ_c → θ_b` after.
//!
//! Both start from the line's midpoint `θ_c = (θ_a + θ_b)/2`, where each equals the straight
//! factor path. Training uses [`train_loop`] with the run's optimizer, schedule, batches and
//! budget from a [`TrainConfig`]: under a CopRA schedule, blocks' adapters are dropped at the
//! schedule's rate while the curve trains ("CopRA-style curve"); under LoRA every module is on.

use super::config::TrainConfig;
use super::trainer::{train_loop, LoopOptions, StepRecord, Trainable};
use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::Matrix;
use crate::model::head::Head;
use crate::model::lora::input_dropout;
use crate::model::{Backbone, Branch};
use crate::util::{rng_for, Rng};
use anyhow::{bail, Result};
use candle_core::{Device, Tensor, Var};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The shape of a curve through a control point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CurveKind {
    /// Quadratic Bézier curve.
    Bezier,
    /// Two straight segments through the control point.
    Polychain,
}

impl CurveKind {
    /// Both kinds.
    pub const ALL: [CurveKind; 2] = [CurveKind::Bezier, CurveKind::Polychain];

    /// `bezier` or `polychain`.
    pub fn name(self) -> &'static str {
        match self {
            CurveKind::Bezier => "bezier",
            CurveKind::Polychain => "polychain",
        }
    }

    /// Parses a [`CurveKind::name`] (case-insensitive).
    pub fn parse(s: &str) -> Result<CurveKind> {
        let s = s.trim().to_ascii_lowercase();
        match CurveKind::ALL.iter().find(|k| k.name() == s) {
            Some(k) => Ok(*k),
            None => bail!("unknown curve `{s}`; use bezier or polychain"),
        }
    }

    /// The weights `(w_a, w_c, w_b)` of the endpoints and the control point at `t`
    /// (`θ(t) = w_a θ_a + w_c θ_c + w_b θ_b`; they sum to 1).
    pub fn weights(self, t: f64) -> (f64, f64, f64) {
        match self {
            CurveKind::Bezier => ((1.0 - t) * (1.0 - t), 2.0 * t * (1.0 - t), t * t),
            CurveKind::Polychain if t <= 0.5 => (1.0 - 2.0 * t, 2.0 * t, 0.0),
            CurveKind::Polychain => (0.0, 2.0 - 2.0 * t, 2.0 * t - 1.0),
        }
    }
}

impl fmt::Display for CurveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors unless `a` and `b` can be joined in factor space: the same spec and the same modules
/// with the same factor shapes.
pub fn check_endpoints(a: &Adapter, b: &Adapter) -> Result<()> {
    if a.spec != b.spec {
        bail!(
            "a curve joins adapters trained with the same LoRA settings; the two specs differ ({:?} vs {:?})",
            a.spec,
            b.spec
        );
    }
    if a.modules.keys().ne(b.modules.keys()) {
        bail!("a curve joins adapters of the same modules; the two adapters adapt different modules");
    }
    for (key, fa) in &a.modules {
        let fb = &b.modules[key];
        if fa.a.shape() != fb.a.shape() || fa.b.shape() != fb.b.shape() {
            bail!("module {key}: the factors' shapes differ between the two adapters; train both with the same rank");
        }
    }
    Ok(())
}

/// The adapter at `t` on the curve `kind` through `control` (plain data, for evaluation).
pub fn curve_point(kind: CurveKind, a: &Adapter, control: &Adapter, b: &Adapter, t: f64) -> Result<Adapter> {
    check_endpoints(a, b)?;
    check_endpoints(a, control)?;
    let (wa, wc, wb) = kind.weights(t);
    let mix = |x: &Matrix, c: &Matrix, y: &Matrix| x.scale(wa as f32).add(&c.scale(wc as f32)).add(&y.scale(wb as f32));
    let modules = a
        .modules
        .iter()
        .map(|(key, fa)| {
            let (fc, fb) = (&control.modules[key], &b.modules[key]);
            (*key, LoraFactors { a: mix(&fa.a, &fc.a, &fb.a), b: mix(&fa.b, &fc.b, &fb.b) })
        })
        .collect();
    Ok(Adapter { spec: a.spec.clone(), modules })
}

/// The midpoint `(θ_a + θ_b)/2` of the straight factor path, where training starts.
pub fn line_midpoint(a: &Adapter, b: &Adapter) -> Result<Adapter> {
    check_endpoints(a, b)?;
    let modules = a
        .modules
        .iter()
        .map(|(key, fa)| {
            let fb = &b.modules[key];
            (*key, LoraFactors { a: fa.a.lerp(&fb.a, 0.5), b: fa.b.lerp(&fb.b, 0.5) })
        })
        .collect();
    Ok(Adapter { spec: a.spec.clone(), modules })
}

/// One module of a curve: the endpoints' `(A, B)` as constants, the control point's as variables.
struct CurveModule {
    a: (Tensor, Tensor),
    control: (Var, Var),
    b: (Tensor, Tensor),
}

/// A curve with a trainable control point.
struct Curve {
    kind: CurveKind,
    scale_spec: crate::adapter::LoraSpec,
    /// Per module: the endpoints' factors and the control point's.
    modules: BTreeMap<ModuleKey, CurveModule>,
    /// Draws the position `t` of each step.
    t_rng: std::cell::RefCell<Rng>,
    /// The position of the current step.
    t: Cell<f64>,
}

impl Curve {
    fn new(kind: CurveKind, a: &Adapter, b: &Adapter, seed: u64, device: &Device) -> Result<Curve> {
        let start = line_midpoint(a, b)?;
        let tensor = |m: &Matrix| Tensor::from_slice(&m.data, m.shape(), device);
        let mut modules = BTreeMap::new();
        for (key, fa) in &a.modules {
            let (fb, fc) = (&b.modules[key], &start.modules[key]);
            let control = (Var::from_tensor(&tensor(&fc.a)?)?, Var::from_tensor(&tensor(&fc.b)?)?);
            let module =
                CurveModule { a: (tensor(&fa.a)?, tensor(&fa.b)?), control, b: (tensor(&fb.a)?, tensor(&fb.b)?) };
            modules.insert(*key, module);
        }
        Ok(Curve {
            kind,
            scale_spec: a.spec.clone(),
            modules,
            t_rng: std::cell::RefCell::new(rng_for(seed, "curve-position")),
            t: Cell::new(0.5),
        })
    }

    fn control(&self) -> Result<Adapter> {
        let to_m = |t: &Tensor| -> Result<Matrix> {
            let (r, c) = t.dims2()?;
            Ok(Matrix::from_vec(r, c, t.flatten_all()?.to_vec1()?))
        };
        let modules = self
            .modules
            .iter()
            .map(|(key, m)| {
                let (a, b) = &m.control;
                Ok((*key, LoraFactors { a: to_m(a.as_tensor())?, b: to_m(b.as_tensor())? }))
            })
            .collect::<Result<_>>()?;
        Ok(Adapter { spec: self.scale_spec.clone(), modules })
    }
}

impl Trainable for Curve {
    fn keys(&self) -> Vec<ModuleKey> {
        self.modules.keys().copied().collect()
    }
    fn vars(&self) -> Vec<Var> {
        self.modules.values().flat_map(|m| [m.control.0.clone(), m.control.1.clone()]).collect()
    }
    fn branch<'a>(
        &'a self,
        active: &'a BTreeSet<ModuleKey>,
        active_scale: f64,
        dropout: f64,
        rng: &'a mut Rng,
    ) -> Result<Box<dyn Branch + 'a>> {
        // One position per step, from the curve's own stream.
        self.t.set(self.t_rng.borrow_mut().random::<f64>());
        Ok(Box::new(CurveBranch { curve: self, active, active_scale, dropout, rng: std::cell::RefCell::new(rng) }))
    }
}

/// The LoRA branch of the curve at the step's position.
struct CurveBranch<'a> {
    curve: &'a Curve,
    active: &'a BTreeSet<ModuleKey>,
    active_scale: f64,
    dropout: f64,
    rng: std::cell::RefCell<&'a mut Rng>,
}

impl Branch for CurveBranch<'_> {
    fn output(&self, key: ModuleKey, x2d: &Tensor) -> Result<Option<Tensor>> {
        if !self.active.contains(&key) {
            return Ok(None);
        }
        let Some(m) = self.curve.modules.get(&key) else { return Ok(None) };
        let ((aa, ba), (ac, bc), (ab, bb)) = (&m.a, &m.control, &m.b);
        let (wa, wc, wb) = self.curve.kind.weights(self.curve.t.get());
        let mix =
            |x: &Tensor, c: &Tensor, y: &Tensor| -> Result<Tensor> { Ok(((x * wa)? + (c * wc)?)?.add(&(y * wb)?)?) };
        let a = mix(aa, ac.as_tensor(), ab)?;
        let b = mix(ba, bc.as_tensor(), bb)?;
        let x = input_dropout(x2d, self.dropout, &mut self.rng.borrow_mut())?;
        let scale = self.curve.scale_spec.scale_for(a.dim(0)?) * self.active_scale;
        Ok(Some((x.matmul(&a.t()?)?.matmul(&b.t()?)? * scale)?))
    }
}

/// A trained curve.
pub struct CurveOutput {
    /// The control point after training.
    pub control: Adapter,
    /// One record per step (loss at that step's position).
    pub log: Vec<StepRecord>,
    /// Wall time of the loop in seconds.
    pub wall_seconds: f64,
}

/// Trains the control point of a `kind` curve between `a` and `b` with the optimizer, schedule,
/// batches, learning rate and steps of `cfg` (its seed seeds the batches, masks, dropout and
/// positions); same inputs, same bits.
#[allow(clippy::too_many_arguments)]
pub fn train_curve(
    backbone: &Backbone,
    head: &Head,
    train_inputs: &[Tensor],
    labels: &[u32],
    cfg: &TrainConfig,
    kind: CurveKind,
    a: &Adapter,
    b: &Adapter,
) -> Result<CurveOutput> {
    let curve = Curve::new(kind, a, b, cfg.seed, backbone.device())?;
    let (log, wall_seconds) = train_loop(
        backbone,
        head,
        train_inputs,
        labels,
        cfg,
        &curve,
        LoopOptions::default(),
        &mut |_: &StepRecord, _: &Curve| Ok(()),
    )?;
    Ok(CurveOutput { control: curve.control()?, log, wall_seconds })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_support::tiny_env;
    use crate::connectivity::interpolate::{interpolate, Space};
    use crate::train::{train_adapter, Method};

    fn max_diff(x: &BTreeMap<ModuleKey, Matrix>, y: &BTreeMap<ModuleKey, Matrix>) -> f32 {
        x.iter().map(|(k, m)| m.sub(&y[k]).data.iter().fold(0.0f32, |acc, v| acc.max(v.abs()))).fold(0.0, f32::max)
    }

    #[test]
    fn weights_pass_through_the_endpoints_and_sum_to_one() {
        for kind in CurveKind::ALL {
            assert_eq!(kind.weights(0.0), (1.0, 0.0, 0.0));
            assert_eq!(kind.weights(1.0), (0.0, 0.0, 1.0));
            for t in [0.1, 0.37, 0.5, 0.8] {
                let (a, c, b) = kind.weights(t);
                assert!((a + c + b - 1.0).abs() < 1e-15, "{kind} {t}");
            }
            assert_eq!(CurveKind::parse(kind.name()).unwrap(), kind);
        }
        assert_eq!(CurveKind::Polychain.weights(0.5), (0.0, 1.0, 0.0));
        assert_eq!(CurveKind::Bezier.weights(0.5), (0.25, 0.5, 0.25));
        assert!(CurveKind::parse("spline").is_err());
    }

    /// Two LoRA runs of `steps` steps (seeds 1 and 2) on a tiny random backbone, and the
    /// environment they were trained on.
    fn two_runs(steps: usize) -> (Backbone, crate::lab::TaskEnv, TrainConfig, Adapter, Adapter) {
        let (bb, env) = tiny_env(2, 3, 24, 24);
        let cfg = TrainConfig { method: Method::Lora, steps, lr: 2e-2, batch_size: 8, ..TrainConfig::default() };
        let run = |seed| {
            let c = TrainConfig { seed, ..cfg.clone() };
            train_adapter(&bb, &env.head, &env.train_inputs, &env.data.train.labels, &c, None, |_| {}).unwrap().adapter
        };
        let (a, b) = (run(1), run(2));
        (bb, env, cfg, a, b)
    }

    #[test]
    fn with_the_midpoint_as_control_both_curves_are_the_straight_line() {
        let (_, _, _, a, b) = two_runs(10);
        let mid = line_midpoint(&a, &b).unwrap();
        for kind in CurveKind::ALL {
            for t in [0.0, 0.2, 0.5, 0.9, 1.0] {
                let on_curve = curve_point(kind, &a, &mid, &b, t).unwrap().deltas();
                let on_line = interpolate(&a, &b, t, Space::Factor).unwrap();
                assert!(max_diff(&on_curve, &on_line) < 1e-5, "{kind} at {t}: {}", max_diff(&on_curve, &on_line));
            }
            // The endpoints are exact whatever the control point.
            let far = curve_point(kind, &a, &a, &b, 1.0).unwrap();
            assert_eq!(far.modules, b.modules);
        }
    }

    #[test]
    fn a_trained_curve_lowers_the_training_loss_along_it_and_is_reproducible() {
        let (bb, env, cfg, a, b) = two_runs(40);
        let curve_cfg = TrainConfig { steps: 60, seed: 5, ..cfg.clone() };
        let labels = &env.data.train.labels;
        let train =
            |c: &TrainConfig| train_curve(&bb, &env.head, &env.train_inputs, labels, c, CurveKind::Bezier, &a, &b);
        let out = train(&curve_cfg).unwrap();
        assert_eq!(out.log.len(), 60);
        let grid = [0.1, 0.3, 0.5, 0.7, 0.9];
        let mean_loss = |control: &Adapter| -> f64 {
            grid.iter()
                .map(|&t| {
                    let point = curve_point(CurveKind::Bezier, &a, control, &b, t).unwrap();
                    env.train.evaluate(&point.deltas()).unwrap().loss
                })
                .sum::<f64>()
                / grid.len() as f64
        };
        let (line, curve) = (mean_loss(&line_midpoint(&a, &b).unwrap()), mean_loss(&out.control));
        eprintln!("mean training loss along the line {line:.4}, along the trained curve {curve:.4}");
        assert!(curve < line, "curve {curve} vs line {line}");
        // Same config, same bits; another seed, another curve.
        assert_eq!(train(&curve_cfg).unwrap().control, out.control);
        assert_ne!(train(&TrainConfig { seed: 6, ..curve_cfg.clone() }).unwrap().control, out.control);
        // Endpoints of another spec are refused.
        let mut other = b.clone();
        other.spec.alpha = 3.0;
        let refused = train_curve(&bb, &env.head, &env.train_inputs, labels, &curve_cfg, CurveKind::Bezier, &a, &other);
        assert!(refused.err().map(|e| e.to_string()).unwrap_or_default().contains("same LoRA settings"));
    }
}
