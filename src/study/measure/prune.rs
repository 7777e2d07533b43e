//! Structured pruning of every run: the test accuracy of the modules a structure keeps, and
//! that accuracy as a share of the run's endpoint and of its gain over the frozen backbone.

use super::base::{options, Input, Measure, MeasureInfo, ParseContext, Rows, Unit};
use super::shares;
use crate::analysis::prune::structured::{select, Structure};
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo = MeasureInfo { name: "prune", parse: |v, ctx| Ok(Box::new(Prune::parse(v, ctx)?)) };

/// `[measure.prune]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PruneSpec {
    /// Structure names: `every-other-even`, `every-other-odd`, `lower-third`, `middle-third`,
    /// `upper-third`, `vision-only`, `text-only`.
    pub structures: Vec<String>,
}

/// Structured pruning of every run.
#[derive(Clone, Debug)]
pub struct Prune {
    /// The options as written.
    pub written: PruneSpec,
    /// The structures, in the written order.
    pub structures: Vec<Structure>,
}

impl Prune {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Prune> {
        let written: PruneSpec = options(v, ctx)?;
        let structures = written
            .structures
            .iter()
            .map(|s| Structure::parse(s).map_err(|e| (ctx.at)("structures", e.to_string())))
            .collect::<Result<Vec<_>>>()?;
        if structures.is_empty() {
            return Err((ctx.at)("structures", "list at least one structure, e.g. [\"every-other-odd\"]".into()));
        }
        if let Some(i) = (1..structures.len()).find(|&i| structures[..i].contains(&structures[i])) {
            return Err((ctx.at)("structures", format!("'{}' is listed twice; list each once", written.structures[i])));
        }
        Ok(Prune { written, structures })
    }
}

impl Measure for Prune {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&self.written)?))
    }
    fn unit(&self) -> Unit {
        Unit::Run
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Run { tag, run, env, cfg } = input else { bail!("internal: pruning is measured on runs") };
        let (endpoint, frozen) = (run.manifest.test.accuracy, run.manifest.frozen_test.accuracy);
        let deltas = run.adapter.deltas();
        let (mut rows, mut predictions) = (Vec::new(), Vec::new());
        for (name, s) in self.written.structures.iter().zip(&self.structures) {
            let (m, examples) = env.test.evaluate_examples(&select(&deltas, s, env.test.backbone()))?;
            predictions.extend(tag.predictions(&format!("prune {name}"), cfg.data_seed, &examples));
            let (se, sg) = shares(m.accuracy, endpoint, frozen);
            rows.push(tag.row(INFO.name, name, "accuracy", m.accuracy));
            rows.push(tag.row(INFO.name, name, "share_of_endpoint", se));
            rows.push(tag.row(INFO.name, name, "share_of_gain", sg));
        }
        Ok(Rows::with_predictions(rows, predictions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TargetModule;

    #[test]
    fn structures_parse_from_the_names_they_write() {
        for s in Structure::BY_POSITION.into_iter().chain([
            Structure::Only(TargetModule::Value),
            Structure::Encoder("text"),
            Structure::None,
        ]) {
            assert_eq!(Structure::parse(&s.name()).unwrap(), s);
        }
        assert!(Structure::parse("odd").unwrap_err().to_string().contains("every-other-even"));
    }
}
