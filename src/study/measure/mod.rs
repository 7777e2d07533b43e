//! What an analysis measures. Each measurement is one file implementing [`Measure`] (see
//! [`base`]) plus one line in [`MEASURES`]: the spec parser reads each `[measure.NAME]` table
//! with the parser listed there, the grid lays out the cells the measures ask for, and a cell
//! loops over the measures of its unit. Single-task [`accuracy::Accuracy`] is always taken.
//!
//! To add a measurement: write `src/study/measure/NAME.rs` with an options struct, a `parse`
//! that checks it, a [`Measure`] implementation and an `INFO` entry, then add `NAME` below.

pub mod base;
pub mod rows;

// The measures: one file each plus one entry in `MEASURES`.
pub mod accuracy;
pub mod barrier;
pub mod curves;
pub mod federated;
pub mod merge;
pub mod multilinear;
pub mod multitask;
pub mod prune;
pub mod trajectory;

/// Every measure with a `[measure.NAME]` table, in the order their options enter cell ids and
/// their rows enter a cell's table (append new measures at the end: cell ids stay).
pub static MEASURES: &[&MeasureInfo] = &[
    &prune::INFO,
    &merge::INFO,
    &barrier::INFO,
    &multitask::INFO,
    &federated::INFO,
    &curves::INFO,
    &multilinear::INFO,
    &trajectory::INFO,
];

pub use base::{Cost, Input, Measure, MeasureInfo, OwnCell, ParseContext, Rows, Unit};
pub use rows::{CurvePoint, Measurement, Prediction, Tag};

use crate::connectivity::interpolate::Space;
use anyhow::Result;

/// `accuracy / endpoint` and `(accuracy − frozen) / (endpoint − frozen)`: a merged or pruned
/// accuracy as a share of the method's own endpoint and of its gain over the frozen backbone.
pub fn shares(accuracy: f64, endpoint: f64, frozen: f64) -> (f64, f64) {
    let gain = endpoint - frozen;
    (accuracy / endpoint, if gain.abs() > 1e-12 { (accuracy - frozen) / gain } else { f64::NAN })
}

/// The default `spaces` of merges and barriers: both.
fn both_spaces() -> Vec<String> {
    vec!["factor".into(), "delta".into()]
}

/// Parses a `spaces` list: at least one, each `factor` or `delta`, none twice.
fn spaces(written: &[String], ctx: &ParseContext) -> Result<Vec<Space>> {
    parse_spaces(written, ctx, Space::parse, "space", "factor or delta")
}

/// Parses the `spaces` key of a measure: at least one entry, each read by `parse`, none twice;
/// `what` names one entry (`space`, `path`) and `choices` the names it may take, in the errors.
fn parse_spaces<T: PartialEq>(
    written: &[String],
    ctx: &ParseContext,
    parse: impl Fn(&str) -> Result<T>,
    what: &str,
    choices: &str,
) -> Result<Vec<T>> {
    if written.is_empty() {
        return Err((ctx.at)("spaces", format!("list at least one {what}: {choices}")));
    }
    let parsed =
        written.iter().map(|s| parse(s).map_err(|e| (ctx.at)("spaces", e.to_string()))).collect::<Result<Vec<_>>>()?;
    if let Some(i) = (1..parsed.len()).find(|&i| parsed[..i].contains(&parsed[i])) {
        return Err((ctx.at)("spaces", format!("'{}' is listed twice; list each {what} once", written[i])));
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_endpoint_and_gain_by_hand() {
        // Frozen 0.3, endpoint 0.7, merged 0.6: 0.6/0.7 of the endpoint, 0.3/0.4 of the gain.
        let (e, g) = shares(0.6, 0.7, 0.3);
        assert!((e - 0.6 / 0.7).abs() < 1e-12 && (g - 0.75).abs() < 1e-12);
        assert!(shares(0.5, 0.3, 0.3).1.is_nan());
    }

    #[test]
    fn the_registry_names_each_measure_once_and_names_match() {
        for (i, info) in MEASURES.iter().enumerate() {
            assert!(MEASURES[..i].iter().all(|o| o.name != info.name), "{} twice", info.name);
        }
        assert_eq!(merge::weights_label(&[1.0, 2.0]), "1:2");
    }
}
