//! Linear barriers (Entezari et al.: height above the chord) of the test loss and error on the
//! path between the first two seeds of each group, with evenly spaced α, on each path: straight
//! lines in factor or delta space, or factor lines after aligning the second seed's gauge
//! (`factor-aligned-orth`, `-gl`, `-perm`, as the `connectivity` command); and the accuracy at
//! the midpoint.

use super::base::{options, Cost, Input, Measure, MeasureInfo, ParseContext, Rows, Unit};
use super::rows::Tag;
use crate::analysis::connectivity::space::PathSpace;
use crate::connectivity::barrier::barriers;
use crate::connectivity::gauge::align_gauge;
use crate::connectivity::interpolate::{interpolate, Space};
use crate::merge::MergeOptions;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo = MeasureInfo { name: "barrier", parse: |v, ctx| Ok(Box::new(Barrier::parse(v, ctx)?)) };

/// `[measure.barrier]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BarrierSpec {
    /// Points on the path, endpoints included (at least 3).
    #[serde(default = "default_points")]
    pub points: usize,
    /// Paths: `factor`, `delta`, `factor-aligned-orth`, `factor-aligned-gl`, `factor-aligned-perm`.
    #[serde(default = "super::both_spaces")]
    pub spaces: Vec<String>,
}

fn default_points() -> usize {
    11
}

/// Barriers between two seeds.
#[derive(Clone, Debug)]
pub struct Barrier {
    /// The options as written.
    pub written: BarrierSpec,
    /// The paths, in the written order.
    pub spaces: Vec<PathSpace>,
}

impl Barrier {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Barrier> {
        let written: BarrierSpec = options(v, ctx)?;
        if written.points < 3 {
            return Err((ctx.at)(
                "points",
                format!("{}: a barrier needs at least 3 points on the path", written.points),
            ));
        }
        if ctx.seeds.len() < 2 {
            return Err((ctx.at)("", "a barrier needs at least two seeds".into()));
        }
        let choices = "factor, delta or factor-aligned-orth";
        let spaces = super::parse_spaces(&written.spaces, ctx, PathSpace::parse, "path", choices)?;
        Ok(Barrier { written, spaces })
    }
}

impl Measure for Barrier {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&self.written)?))
    }
    fn unit(&self) -> Unit {
        Unit::Group
    }
    fn group_sizes(&self) -> Vec<usize> {
        vec![2]
    }
    fn costs(&self) -> Vec<Cost> {
        let n = self.written.points as f64 * self.spaces.len() as f64;
        vec![Cost::new("measure.barrier points × spaces (evaluations per group)", n, 11.0 * 2.0)]
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Group { tag, cfgs, runs, env, .. } = input else {
            bail!("internal: barriers are measured on groups")
        };
        let tag = Tag { seeds: format!("{}+{}", cfgs[0].seed, cfgs[1].seed), ..(*tag).clone() };
        let (a, b) = (&runs[0].adapter, &runs[1].adapter);
        let points = self.written.points;
        let (mut rows, mut predictions) = (Vec::new(), Vec::new());
        let draw = cfgs[0].data_seed;
        for (name, &path) in self.written.spaces.iter().zip(&self.spaces) {
            // A straight line in its space, or the factor line to B re-parameterised in a gauge.
            let (b, sp) = match (path.plain(), path.gauge()) {
                (Some(sp), _) => (b.clone(), sp),
                (None, Some(gauge)) => (align_gauge(a, b, gauge, &MergeOptions::default())?.0, Space::Factor),
                (None, None) => bail!("internal: {path} is not a straight path"),
            };
            let b = &b;
            let mut loss = Vec::with_capacity(points);
            let mut err = Vec::with_capacity(points);
            for i in 0..points {
                let alpha = i as f64 / (points - 1) as f64;
                let (m, examples) = env.test.evaluate_examples(&interpolate(a, b, alpha, sp)?)?;
                predictions.extend(tag.predictions(&format!("barrier {name} alpha={alpha}"), draw, &examples));
                loss.push((alpha, m.loss));
                err.push((alpha, 1.0 - m.accuracy));
            }
            let mid = match err.iter().find(|(a, _)| (a - 0.5).abs() < 1e-12) {
                Some((_, e)) => 1.0 - e,
                None => {
                    let (m, examples) = env.test.evaluate_examples(&interpolate(a, b, 0.5, sp)?)?;
                    predictions.extend(tag.predictions(&format!("barrier {name} alpha=0.5"), draw, &examples));
                    m.accuracy
                }
            };
            rows.push(tag.row(INFO.name, name, "loss_barrier", barriers(&loss)?.linear));
            rows.push(tag.row(INFO.name, name, "error_barrier", barriers(&err)?.linear));
            rows.push(tag.row(INFO.name, name, "midpoint_accuracy", mid));
        }
        Ok(Rows::with_predictions(rows, predictions))
    }
}
