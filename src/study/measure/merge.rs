//! Merges of k seeds at given weights, in factor and delta space ([`merge_in_space`]): test
//! accuracy and loss, and the accuracy as a share of the merged runs' mean endpoint accuracy
//! and of their gain over the frozen backbone.

use super::base::{options, Cost, Input, Measure, MeasureInfo, ParseContext, Rows, Unit};
use super::rows::Tag;
use super::{shares, spaces};
use crate::connectivity::interpolate::Space;
use crate::merge::merge_in_space;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo = MeasureInfo { name: "merge", parse: |v, ctx| Ok(Box::new(SeedMerge::parse(v, ctx)?)) };

/// `[measure.merge]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    /// Weight lists: `[1, 1]` is the 1:1 merge of two seeds, `[1, 2]` the 1:2 merge,
    /// `[1, 1, 1]` the 1:1:1 merge of three. Every group of that many seeds is merged (each
    /// sorted, so `1:2` weighs the later seed twice).
    pub weights: Vec<Vec<f64>>,
    /// `factor` (average A and B) and / or `delta` (average ΔW).
    #[serde(default = "super::both_spaces")]
    pub spaces: Vec<String>,
}

/// Merges of every group of seeds.
#[derive(Clone, Debug)]
pub struct SeedMerge {
    /// The options as written.
    pub written: MergeSpec,
    /// The spaces, in the written order.
    pub spaces: Vec<Space>,
}

impl SeedMerge {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<SeedMerge> {
        let written: MergeSpec = options(v, ctx)?;
        if written.weights.is_empty() {
            return Err((ctx.at)("weights", "list at least one weight list, e.g. weights = [[1, 1]]".into()));
        }
        for w in &written.weights {
            if w.len() < 2 || w.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
                return Err((ctx.at)("weights", format!("{w:?}: a merge needs at least two positive weights")));
            }
            if w.len() > ctx.seeds.len() {
                let msg = format!("{w:?} merges {} seeds but the grid has {}", w.len(), ctx.seeds.len());
                return Err((ctx.at)("weights", msg));
            }
        }
        if let Some(i) = (1..written.weights.len()).find(|&i| written.weights[..i].contains(&written.weights[i])) {
            return Err((ctx.at)("weights", format!("{:?} is listed twice; list each once", written.weights[i])));
        }
        let spaces = spaces(&written.spaces, ctx)?;
        Ok(SeedMerge { written, spaces })
    }
}

/// The label of a weight list: `1:1`, `1:2`, `1:1:1`.
pub fn weights_label(w: &[f64]) -> String {
    w.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(":")
}

impl Measure for SeedMerge {
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
        let mut sizes: Vec<usize> = self.written.weights.iter().map(Vec::len).collect();
        sizes.sort_unstable();
        sizes.dedup();
        sizes
    }
    fn costs(&self) -> Vec<Cost> {
        let n = self.written.weights.len() as f64 * self.spaces.len() as f64;
        vec![Cost::new("measure.merge weights × spaces (evaluations per group)", n, 3.0 * 2.0)]
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Group { tag, cfgs, runs, env, sizes } = input else {
            bail!("internal: merges are measured on groups")
        };
        let adapters: Vec<&crate::adapter::Adapter> = runs.iter().map(|r| &r.adapter).collect();
        let frozen = runs[0].manifest.frozen_test.accuracy;
        let (mut rows, mut predictions) = (Vec::new(), Vec::new());
        for w in self.written.weights.iter().filter(|w| sizes.contains(&w.len())) {
            let k = w.len();
            // The rows name the seeds merged.
            let seeds = cfgs[..k].iter().map(|c| c.seed.to_string()).collect::<Vec<_>>().join("+");
            let tag = Tag { seeds, ..(*tag).clone() };
            let endpoint = runs[..k].iter().map(|r| r.manifest.test.accuracy).sum::<f64>() / k as f64;
            for (name, &space) in self.written.spaces.iter().zip(&self.spaces) {
                let (m, examples) = env.test.evaluate_examples(&merge_in_space(&adapters[..k], w, space)?)?;
                let setting = format!("{name} {}", weights_label(w));
                predictions.extend(tag.predictions(&format!("merge {setting}"), cfgs[0].data_seed, &examples));
                let (se, sg) = shares(m.accuracy, endpoint, frozen);
                rows.push(tag.row(INFO.name, &setting, "accuracy", m.accuracy));
                rows.push(tag.row(INFO.name, &setting, "loss", m.loss));
                rows.push(tag.row(INFO.name, &setting, "share_of_endpoint", se));
                rows.push(tag.row(INFO.name, &setting, "share_of_gain", sg));
            }
        }
        Ok(Rows::with_predictions(rows, predictions))
    }
}
