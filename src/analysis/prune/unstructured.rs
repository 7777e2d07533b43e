//! Unstructured pruning: magnitude pruning ([`crate::prune::magnitude`]) of the dense `ΔW`
//! and of the factors `A`, `B`; `sparsity` is the fraction of entries removed.

use super::{PruneInput, PruneOptions};
use crate::analysis::summary::{ci_series, group_ci};
use crate::eval::{Evaluator, Metrics};
use crate::prune::magnitude::{prune_adapter_deltas, prune_factor_deltas, Ranking};
use crate::report::plot::LinePlot;
use crate::report::table::{named_cells, table_row, Cell, Table};
use crate::stats::MeanCi;
use anyhow::Result;
use std::collections::BTreeMap;

/// What magnitude pruning removes entries from. The variants are declared in the order of
/// their names, so keys holding a target sort as the names do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// The dense `ΔW` of every module.
    Delta,
    /// The factors `A` and `B`.
    Factors,
}

impl Target {
    /// Both targets, in table order.
    pub const ALL: [Target; 2] = [Target::Delta, Target::Factors];

    /// `delta` or `factors` (the `target` column).
    pub fn name(self) -> &'static str {
        match self {
            Target::Delta => "delta",
            Target::Factors => "factors",
        }
    }

    /// What the target prunes, for figure titles.
    fn what(self) -> &'static str {
        match self {
            Target::Delta => "dense ΔW",
            Target::Factors => "factors A and B",
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

named_cells!(Target);

/// A ranking's column holds [`ranking_name`].
impl Cell for Ranking {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.str_col(name, values.into_iter().map(|r| ranking_name(r).to_string()).collect());
    }
}

table_row! {
/// One (target, sparsity) of one adapter: a row of `prune_unstructured.parquet`.
pub struct SparsityRow {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: i64,
    /// What was pruned.
    pub target: Target,
    /// How entries were ranked.
    pub ranking: Ranking,
    /// Fraction of entries removed.
    pub sparsity: f64,
    /// Test loss of the pruned adapter.
    pub test_loss: f64,
    /// Test accuracy of the pruned adapter.
    pub test_accuracy: f64,
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
    for target in Target::ALL {
        for &s in &opts.sparsities {
            let pruned = match target {
                Target::Delta => prune_adapter_deltas(input.adapter, s, opts.ranking)?,
                Target::Factors => prune_factor_deltas(input.adapter, s, opts.ranking)?,
            };
            let m: Metrics = if s == 0.0 { full } else { test.evaluate(&pruned)? };
            rows.push(SparsityRow {
                method: input.method.clone(),
                seed: input.seed as i64,
                target,
                ranking: opts.ranking,
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
pub(super) fn accuracy_ci(rows: &[SparsityRow]) -> Result<BTreeMap<(String, Target, i64), MeanCi>> {
    group_ci(rows.iter().map(|r| ((r.method.clone(), r.target, permille(r.sparsity)), r.test_accuracy)))
}

table_row! {
    /// A row of `prune_unstructured_summary.parquet`: one (method, target, sparsity).
    pub struct SparsitySummaryRow {
        /// Method name.
        pub method: String,
        /// What was pruned.
        pub target: Target,
        /// Fraction of entries removed (rounded to thousandths).
        pub sparsity: f64,
        /// Test accuracy over seeds.
        pub ci: MeanCi,
    }
}

/// The summary rows of [`accuracy_ci`], in key order.
pub(super) fn summary_rows(ci: &BTreeMap<(String, Target, i64), MeanCi>) -> Vec<SparsitySummaryRow> {
    ci.iter()
        .map(|((method, target, s), ci)| SparsitySummaryRow {
            method: method.clone(),
            target: *target,
            sparsity: *s as f64 / 1000.0,
            ci: ci.clone(),
        })
        .collect()
}

/// One panel per target (dense ΔW, factors), one line per method.
pub(super) fn figure(
    methods: &[String],
    ci: &BTreeMap<(String, Target, i64), MeanCi>,
    frozen: f64,
    ranking: Ranking,
) -> Result<String> {
    let mut panels = Vec::new();
    for target in Target::ALL {
        let mut series = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let pts: Vec<(f64, MeanCi)> = ci
                .iter()
                .filter(|((mm, t, _), _)| mm == m && *t == target)
                .map(|((_, _, s), c)| (*s as f64 / 1000.0, c.clone()))
                .collect();
            if !pts.is_empty() {
                series.push(ci_series(m, &pts, false, Some(i % 10)));
            }
        }
        panels.push(LinePlot {
            title: format!("magnitude pruning of {} ({})", target.what(), ranking_name(ranking)),
            x_label: "sparsity (fraction of entries removed)".into(),
            y_label: "test accuracy".into(),
            series,
            reference_y: Some((frozen, "frozen backbone".into())),
            ..Default::default()
        });
    }
    crate::report::plot::panels_svg("Unstructured magnitude pruning (mean over seeds; band = 95% t-CI)", &panels, 2)
}
