//! The multilinear extension F(p) = E_{S∼Bernoulli(p)}[L(S)] of the training loss over blocks,
//! at the end of training, against the all-on loss L(N): rows `F` and `gap` per rate p.

use super::base::{options, Cost, Input, Measure, MeasureInfo, ParseContext, Rows, Unit};
use crate::eval::{Deltas, Evaluator};
use crate::util::rng_for;
use anyhow::{bail, Result};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo =
    MeasureInfo { name: "multilinear", parse: |v, ctx| Ok(Box::new(Multilinear::parse(v, ctx)?)) };

/// `[measure.multilinear]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Multilinear {
    /// Participation rates p in (0, 1).
    pub p: Vec<f64>,
    /// Sampled coalitions per rate.
    pub samples: usize,
}

impl Multilinear {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Multilinear> {
        let m: Multilinear = options(v, ctx)?;
        if m.samples == 0 {
            return Err((ctx.at)("samples", "must be at least 1".into()));
        }
        if m.p.is_empty() || m.p.iter().any(|p| !(*p > 0.0 && *p < 1.0)) {
            return Err((ctx.at)("p", "list rates in (0, 1), e.g. p = [0.25, 0.5, 0.75]".into()));
        }
        Ok(m)
    }
}

impl Measure for Multilinear {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(self)?))
    }
    fn unit(&self) -> Unit {
        Unit::Run
    }
    fn costs(&self) -> Vec<Cost> {
        let n = self.samples as f64 * self.p.len() as f64;
        vec![Cost::new("measure.multilinear samples × p (evaluations per run)", n, 16.0 * 3.0)]
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Run { tag, cfg, run, env } = input else { bail!("internal: multilinear is measured on runs") };
        let deltas = run.adapter.deltas();
        let all_on = env.train.evaluate(&deltas)?.loss;
        let mut rows = vec![tag.row(INFO.name, "p=1", "F", all_on)];
        for &p in &self.p {
            let f = multilinear_loss(&env.train, &deltas, p, self.samples, cfg.seed)?;
            rows.push(tag.row(INFO.name, &format!("p={p}"), "F", f));
            rows.push(tag.row(INFO.name, &format!("p={p}"), "gap", f - all_on));
        }
        Ok(rows.into())
    }
}

/// The mean loss of `samples` coalitions that keep each block's updates with probability `p`
/// (a seeded Monte Carlo estimate of the multilinear extension F(p); exact L(N) at p = 1).
pub fn multilinear_loss(train: &Evaluator, deltas: &Deltas, p: f64, samples: usize, seed: u64) -> Result<f64> {
    if p >= 1.0 {
        return Ok(train.evaluate(deltas)?.loss);
    }
    let nb = train.backbone().num_blocks();
    let mut rng = rng_for(seed, &format!("multilinear-{p}"));
    let mut total = 0.0;
    for _ in 0..samples {
        let keep: Vec<bool> = (0..nb).map(|_| rng.random::<f64>() < p).collect();
        let kept: Deltas = deltas.iter().filter(|(k, _)| keep[k.block]).map(|(k, v)| (*k, v.clone())).collect();
        total += train.evaluate(&kept)?.loss;
    }
    Ok(total / samples as f64)
}
