//! Unstructured pruning: magnitude pruning ([`crate::prune::magnitude`]) of the dense `ΔW`
//! and of the factors `A`, `B`; `sparsity` is the fraction of entries removed.

use super::{PruneInput, PruneOptions};
use crate::analysis::summary::{ci_columns, ci_series, group_ci};
use crate::eval::{Evaluator, Metrics};
use crate::prune::magnitude::{prune_adapter_deltas, prune_factor_deltas, Ranking};
use crate::report::plot::LinePlot;
use crate::report::table::{Columns, Row};
use crate::stats::MeanCi;
use anyhow::Result;
use std::collections::BTreeMap;

/// What magnitude pruning removes entries from, in table order: the dense `ΔW` or the factors.
const TARGETS: [&str; 2] = ["delta", "factors"];

/// One (target, sparsity) of one adapter: a row of `prune_unstructured.parquet`.
pub struct SparsityRow {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: i64,
    /// `delta` or `factors`.
    pub target: String,
    /// `per-module` or `global`.
    pub ranking: String,
    /// Fraction of entries removed.
    pub sparsity: f64,
    /// Test loss of the pruned adapter.
    pub test_loss: f64,
    /// Test accuracy of the pruned adapter.
    pub test_accuracy: f64,
}

impl Row for SparsityRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("method", |r| r.method.clone())
            .col("seed", |r| r.seed)
            .col("target", |r| r.target.clone())
            .col("ranking", |r| r.ranking.clone())
            .col("sparsity", |r| r.sparsity)
            .col("test_loss", |r| r.test_loss)
            .col("test_accuracy", |r| r.test_accuracy);
    }
}

/// Evaluates every target and sparsity of one adapter (`full`: its unpruned metrics).
pub(super) fn evaluate(
    test: &Evaluator,
    input: &PruneInput,
    opts: &PruneOptions,
    full: Metrics,
) -> Result<Vec<SparsityRow>> {
    let mut rows = Vec::new();
    for target in TARGETS {
        for &s in &opts.sparsities {
            let pruned = if target == "delta" {
                prune_adapter_deltas(input.adapter, s, opts.ranking)?
            } else {
                prune_factor_deltas(input.adapter, s, opts.ranking)?
            };
            let m: Metrics = if s == 0.0 { full } else { test.evaluate(&pruned)? };
            rows.push(SparsityRow {
                method: input.method.clone(),
                seed: input.seed as i64,
                target: target.into(),
                ranking: ranking_name(opts.ranking).into(),
                sparsity: s,
                test_loss: m.loss,
                test_accuracy: m.accuracy,
            });
        }
    }
    Ok(rows)
}

/// Name of a magnitude ranking in tables and titles: `per-module` or `global`.
pub fn ranking_name(r: Ranking) -> &'static str {
    match r {
        Ranking::PerModule => "per-module",
        Ranking::Global => "global",
    }
}

/// A sparsity as an integer key in thousandths (exact grouping of float grids).
fn permille(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

/// Test accuracy of each (method, target, sparsity in thousandths), mean and CI over seeds.
pub(super) fn accuracy_ci(rows: &[SparsityRow]) -> Result<BTreeMap<(String, String, i64), MeanCi>> {
    group_ci(rows.iter().map(|r| ((r.method.clone(), r.target.clone(), permille(r.sparsity)), r.test_accuracy)))
}

/// A row of `prune_unstructured_summary.parquet`: one (method, target, sparsity).
pub struct SparsitySummaryRow {
    /// Method name.
    pub method: String,
    /// `delta` or `factors`.
    pub target: String,
    /// Fraction of entries removed (rounded to thousandths).
    pub sparsity: f64,
    /// Test accuracy over seeds.
    pub ci: MeanCi,
}

impl Row for SparsitySummaryRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("method", |r| r.method.clone()).col("target", |r| r.target.clone()).col("sparsity", |r| r.sparsity);
        ci_columns(cols, |r| &r.ci);
    }
}

/// The summary rows of [`accuracy_ci`], in key order.
pub(super) fn summary_rows(ci: &BTreeMap<(String, String, i64), MeanCi>) -> Vec<SparsitySummaryRow> {
    ci.iter()
        .map(|((method, target, s), ci)| SparsitySummaryRow {
            method: method.clone(),
            target: target.clone(),
            sparsity: *s as f64 / 1000.0,
            ci: ci.clone(),
        })
        .collect()
}

/// One panel per target (dense ΔW, factors), one line per method.
pub(super) fn figure(
    methods: &[String],
    ci: &BTreeMap<(String, String, i64), MeanCi>,
    frozen: f64,
    ranking: Ranking,
) -> Result<String> {
    let mut panels = Vec::new();
    for (target, what) in [("delta", "dense ΔW"), ("factors", "factors A and B")] {
        let mut series = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let pts: Vec<(f64, MeanCi)> = ci
                .iter()
                .filter(|((mm, t, _), _)| mm == m && t == target)
                .map(|((_, _, s), c)| (*s as f64 / 1000.0, c.clone()))
                .collect();
            if !pts.is_empty() {
                series.push(ci_series(m, &pts, false, Some(i % 10)));
            }
        }
        panels.push(LinePlot {
            title: format!("magnitude pruning of {what} ({})", ranking_name(ranking)),
            x_label: "sparsity (fraction of entries removed)".into(),
            y_label: "test accuracy".into(),
            series,
            reference_y: Some((frozen, "frozen backbone".into())),
            ..Default::default()
        });
    }
    crate::report::plot::panels_svg("Unstructured magnitude pruning (mean over seeds; band = 95% t-CI)", &panels, 2)
}
