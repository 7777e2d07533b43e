//! Pruning of trained adapters, LoRA against CopRA. Pruning a module removes its `ΔW`; every
//! variant is evaluated with [`Evaluator::evaluate`] on the kept deltas.
//!
//! - **Structured** ([`structured`]): keep every other block (even or odd blocks; CoTo keeps
//!   alternate layers), only the lower, middle or upper third of the blocks, or only one module
//!   type (q, k, v; CoTo's Fig. r3), plus the full adapter and the frozen backbone as references.
//! - **Removal curves** ([`removal`]): blocks are removed one at a time, lowest score first, by
//!   Shapley value (the layer game of [`LayerGame`], exact or sampled by
//!   [`crate::analysis::exact_shapley`]), by adapter norm `‖ΔW‖_F`, by leave-one-out value and
//!   in random orders; accuracy is recorded against the number of blocks kept. The scores are
//!   computed on the same test set the curves are drawn on (an oracle ordering, as in the
//!   Neuron-Shapley removal protocol), so the Shapley and leave-one-out curves are upper
//!   references for what a score can achieve.
//! - **Unstructured** ([`unstructured`]): magnitude pruning ([`crate::prune::magnitude`]) of
//!   the dense `ΔW` and of the factors `A`, `B`; `sparsity` is the fraction of entries removed.

pub mod removal;
pub mod structured;
pub mod unstructured;

pub use removal::{random_orders, removal_curve, removal_order, BlockScores, CurvePoint, RemovalOrder};
pub use structured::{select, third_of, Structure};
pub use unstructured::Target;

use super::layer_game::{GameValue, LayerGame};
use super::summary::ordered_unique;
use super::Outputs;
use crate::adapter::{Adapter, Grouping};
use crate::eval::{Deltas, Evaluator};
use crate::progress::Progress;
use crate::prune::magnitude::Ranking;
use crate::report::table::Table;
use crate::stats::MeanCi;
use anyhow::{bail, Result};

/// Options of the pruning analysis.
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Sparsities (fractions of entries removed, in `[0, 1]`) of the unstructured pruning.
    pub sparsities: Vec<f64>,
    /// Magnitude ranking: per module or global.
    pub ranking: Ranking,
    /// Number of random removal orders.
    pub random_orders: usize,
    /// Seed of the random removal orders (shared by every method and run seed, so LoRA and
    /// CopRA are pruned in the same random orders).
    pub order_seed: u64,
    /// Evaluation budget of the permutation-sampled Shapley values used when there are more
    /// than 20 blocks.
    pub shapley_budget: usize,
    /// Removal orders to draw. Without `shapley` (and without a cached table) the `2^n`
    /// coalition enumeration is skipped and only the curves' own coalitions are evaluated.
    pub orders: Vec<RemovalOrder>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        Self {
            sparsities: (0..10).map(|i| i as f64 / 10.0).collect(),
            ranking: Ranking::PerModule,
            random_orders: 10,
            order_seed: 0,
            shapley_budget: 4096,
            orders: RemovalOrder::ALL.to_vec(),
        }
    }
}

impl PruneOptions {
    /// Checks the options; errors name the option and its valid range.
    pub fn validate(&self) -> Result<()> {
        if self.sparsities.is_empty() {
            bail!("no sparsities given; pass fractions removed in [0, 1], e.g. --sparsities 0.1,0.5,0.9");
        }
        if let Some(s) = self.sparsities.iter().find(|s| !(0.0..=1.0).contains(*s)) {
            bail!("sparsity {s} is outside [0, 1]; it is the fraction of entries removed");
        }
        if self.orders.is_empty() {
            bail!("no removal orders given; use some of shapley, norm, leave-one-out, random");
        }
        if (1..self.orders.len()).any(|i| self.orders[..i].contains(&self.orders[i])) {
            bail!("a removal order is listed twice; name each of shapley, norm, leave-one-out, random at most once");
        }
        if self.orders.contains(&RemovalOrder::Random) && self.random_orders == 0 {
            bail!("--random-orders is 0 but the random removal order is requested; use at least 1 or drop `random` from --orders");
        }
        Ok(())
    }
}

/// One adapter to prune.
pub struct PruneInput<'a> {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: u64,
    /// The trained adapter.
    pub adapter: &'a Adapter,
    /// Every coalition's test accuracy in the block game of this adapter on this evaluator
    /// (index = bitmask over the adapter's blocks), e.g. from a cache written by an earlier
    /// run ([`coalition_table`]). Used when it has `2^n` entries and its full and empty
    /// coalitions match a fresh evaluation; recomputed otherwise.
    pub table: Option<Vec<f64>>,
}

/// Every coalition's test accuracy in the block game of `adapter` (players = adapted blocks,
/// index = bitmask), by the prefix walk of [`LayerGame::enumerate_all`] (at most 20 blocks).
pub fn coalition_table(test: &Evaluator, adapter: &Adapter) -> Result<Vec<f64>> {
    LayerGame::new(test, adapter, Grouping::Block, GameValue::Accuracy, "prune")?.enumerate_all()
}

/// A per-method summary for the command's printout.
#[derive(Clone, Debug)]
pub struct PruneSummary {
    /// Method name.
    pub method: String,
    /// Frozen-backbone test accuracy.
    pub frozen_accuracy: f64,
    /// Test accuracy of each structured strategy (mean and CI over run seeds), in table order.
    pub structured: Vec<(String, MeanCi)>,
    /// Mean accuracy along each removal curve (a normalised area under the curve, over blocks
    /// kept from n down to 0; mean over seeds and random orders).
    pub removal_area: Vec<(RemovalOrder, f64)>,
    /// Test accuracy at each (target, sparsity).
    pub unstructured: Vec<(Target, f64, MeanCi)>,
}

/// Runs the pruning analysis on the test evaluator for every input adapter.
pub fn analyze(
    test: &Evaluator,
    inputs: &[PruneInput],
    opts: &PruneOptions,
    progress: &Progress,
) -> Result<(Outputs, Vec<PruneSummary>)> {
    opts.validate()?;
    if inputs.is_empty() {
        bail!("no adapters to prune; pass at least one run");
    }
    let frozen = test.evaluate(&Deltas::new())?;
    let (mut st, mut sc, mut rm, mut sp) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let bar = progress.bar(inputs.len() as u64, "prune");
    for input in inputs {
        bar.set_message(format!("{} seed {}", input.method, input.seed));
        let deltas = input.adapter.deltas();
        let full = test.evaluate(&deltas)?;
        st.extend(structured::evaluate(test, input, &deltas, full, frozen)?);
        let (scores, curves) = removal::evaluate(test, input, opts)?;
        sc.extend(scores);
        rm.extend(curves);
        sp.extend(unstructured::evaluate(test, input, opts, full)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let methods = ordered_unique(inputs.iter().map(|i| i.method.clone()));
    let struct_ci = structured::accuracy_ci(&st)?;
    let removal_ci = removal::accuracy_ci(&rm)?;
    let sparsity_ci = unstructured::accuracy_ci(&sp)?;
    let mut out = Outputs::default();
    out.figures.push(("prune_structured.svg".into(), structured::figure(&methods, &st, &struct_ci, frozen.accuracy)?));
    out.figures
        .push(("prune_removal.svg".into(), removal::figure(&methods, &opts.orders, &removal_ci, frozen.accuracy)?));
    out.figures.push((
        "prune_sparsity.svg".into(),
        unstructured::figure(&methods, &sparsity_ci, frozen.accuracy, opts.ranking)?,
    ));
    let strategies = ordered_unique(st.iter().map(|r| r.strategy.clone()));
    let summaries = methods
        .iter()
        .map(|m| PruneSummary {
            method: m.clone(),
            frozen_accuracy: frozen.accuracy,
            structured: strategies
                .iter()
                .filter_map(|s| struct_ci.get(&(m.clone(), s.clone())).map(|ci| (s.clone(), ci.clone())))
                .collect(),
            removal_area: opts.orders.iter().map(|&o| (o, removal::removal_area(&rm, m, o))).collect(),
            unstructured: sparsity_ci
                .iter()
                .filter(|((mm, _, _), _)| mm == m)
                .map(|((_, t, s), ci)| (*t, *s as f64 / 1000.0, ci.clone()))
                .collect(),
        })
        .collect();
    out.tables.push(("prune_structured.parquet".into(), Table::from_rows(&st)));
    out.tables
        .push(("prune_structured_summary.parquet".into(), Table::from_rows(&structured::summary_rows(&struct_ci))));
    out.tables.push(("prune_removal.parquet".into(), Table::from_rows(&rm)));
    out.tables.push(("prune_removal_summary.parquet".into(), Table::from_rows(&removal::summary_rows(&removal_ci))));
    out.tables.push(("prune_block_scores.parquet".into(), Table::from_rows(&sc)));
    out.tables.push(("prune_unstructured.parquet".into(), Table::from_rows(&sp)));
    out.tables.push((
        "prune_unstructured_summary.parquet".into(),
        Table::from_rows(&unstructured::summary_rows(&sparsity_ci)),
    ));
    Ok((out, summaries))
}

#[cfg(test)]
mod tests;
