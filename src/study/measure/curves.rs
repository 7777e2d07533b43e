//! Training-loss curves: every run's logged loss and participation rate p(t), as means over
//! windows of `every` steps (rows of `curves.parquet`).

use super::base::{options, Input, Measure, MeasureInfo, ParseContext, Rows, Unit};
use super::rows::CurvePoint;
use crate::report::table::Table;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Registry entry.
pub static INFO: MeasureInfo = MeasureInfo { name: "curves", parse: |v, ctx| Ok(Box::new(Curves::parse(v, ctx)?)) };

/// `[measure.curves]` as written.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Curves {
    /// Keep one point every this many steps (the mean of the window).
    pub every: usize,
}

impl Curves {
    fn parse(v: &toml::Value, ctx: &ParseContext) -> Result<Curves> {
        let c: Curves = options(v, ctx)?;
        if c.every == 0 {
            return Err((ctx.at)("every", "must be at least 1".into()));
        }
        Ok(c)
    }
}

impl Measure for Curves {
    fn name(&self) -> &'static str {
        INFO.name
    }
    fn options_json(&self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(self)?))
    }
    fn unit(&self) -> Unit {
        Unit::Run
    }
    fn measure(&self, input: &Input<'_>) -> Result<Rows> {
        let Input::Run { tag, cfg, run, .. } = input else { bail!("internal: curves are measured on runs") };
        let log = run.dir.join("train_log.parquet");
        let df = Table::read_parquet(&log)?;
        let get =
            |name: &str| super::rows::col_f64(&df, name).with_context(|| format!("training log {}", log.display()));
        let (loss, p) = (get("loss")?, get("p")?);
        let mut curves = Vec::new();
        for (w, (lw, pw)) in loss.chunks(self.every).zip(p.chunks(self.every)).enumerate() {
            curves.push(CurvePoint {
                cell: tag.cell.clone(),
                task: tag.task.clone(),
                variant: tag.variant.clone(),
                x: tag.x,
                seed: cfg.seed as i64,
                step: (w * self.every + lw.len() - 1) as i64,
                loss: lw.iter().sum::<f64>() / lw.len() as f64,
                p: pw.iter().sum::<f64>() / pw.len() as f64,
            });
        }
        Ok(Rows { curves, ..Rows::default() })
    }
}
