//! Structured pruning: keep every other block, one third of the blocks, one module type or
//! (CLIP) one encoder, plus the full adapter and the frozen backbone as references; each
//! variant is evaluated on the deltas it keeps. Block positions count within each encoder,
//! so on CLIP "lower third" keeps the lower third of both towers.

use super::PruneInput;
use crate::adapter::{fit::ModuleShapes, ModuleKey, TargetModule};
use crate::analysis::summary::{err_of, group_ci, ordered_unique};
use crate::eval::{Deltas, Evaluator, Metrics};
use crate::report::plot::{Bar, BarGroup, BarPlot};
use crate::report::table::table_row;
use crate::stats::MeanCi;
use anyhow::Result;
use std::collections::BTreeMap;

/// A structured pruning strategy: which modules keep their `ΔW`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Structure {
    /// Every module (no pruning; the reference).
    All,
    /// Modules of even blocks 0, 2, 4, … (every other block removed).
    EveryOtherEven,
    /// Modules of odd blocks 1, 3, 5, … (every other block removed).
    EveryOtherOdd,
    /// Modules of the lower third of the blocks (`⌊3b/L⌋ = 0`).
    LowerThird,
    /// Modules of the middle third of the blocks (`⌊3b/L⌋ = 1`).
    MiddleThird,
    /// Modules of the upper third of the blocks (`⌊3b/L⌋ = 2`).
    UpperThird,
    /// Only the modules of one type in every block (e.g. only the value projections).
    Only(TargetModule),
    /// Only the modules of one encoder (`vision` or `text` on CLIP).
    Encoder(&'static str),
    /// No module (the frozen backbone; the other reference).
    None,
}

impl Structure {
    /// Stable name used in tables: `all`, `every-other-even`, `every-other-odd`, `lower-third`,
    /// `middle-third`, `upper-third`, `q-only` (`k-only`, …), `vision-only`, `text-only` or `none`.
    pub fn name(&self) -> String {
        match self {
            Structure::All => "all".into(),
            Structure::EveryOtherEven => "every-other-even".into(),
            Structure::EveryOtherOdd => "every-other-odd".into(),
            Structure::LowerThird => "lower-third".into(),
            Structure::MiddleThird => "middle-third".into(),
            Structure::UpperThird => "upper-third".into(),
            Structure::Only(m) => format!("{}-only", m.short()),
            Structure::Encoder(e) => format!("{e}-only"),
            Structure::None => "none".into(),
        }
    }

    /// The structures chosen by block position alone: all, both every-other variants and the
    /// three thirds, in listing order.
    pub const BY_POSITION: [Structure; 6] = [
        Structure::All,
        Structure::EveryOtherEven,
        Structure::EveryOtherOdd,
        Structure::LowerThird,
        Structure::MiddleThird,
        Structure::UpperThird,
    ];

    /// The structure called `name`, as [`Structure::name`] writes it.
    pub fn parse(name: &str) -> anyhow::Result<Structure> {
        let encoders = [Structure::Encoder("vision"), Structure::Encoder("text"), Structure::None];
        let modules = TargetModule::ALL.into_iter().map(Structure::Only);
        let mut all = Structure::BY_POSITION.into_iter().chain(encoders).chain(modules);
        all.find(|s| s.name() == name).ok_or_else(|| {
            anyhow::anyhow!(
                "unknown structure '{name}'; use every-other-even, every-other-odd, lower-third, middle-third, upper-third, q-only (k-, v-, o-, fc1-, fc2-only), all, none, or vision-only or text-only (CLIP)"
            )
        })
    }

    /// Whether module `key` of a backbone of `shapes` keeps its `ΔW` (block positions count
    /// within the key's encoder).
    pub fn keeps(&self, key: &ModuleKey, shapes: &dyn ModuleShapes) -> bool {
        let place = shapes.place(key.block);
        let depth = (0..shapes.num_blocks()).filter(|&b| shapes.place(b).encoder == place.encoder).count();
        let layer = place.layer;
        match self {
            Structure::All => true,
            Structure::EveryOtherEven => layer.is_multiple_of(2),
            Structure::EveryOtherOdd => layer % 2 == 1,
            Structure::LowerThird => third_of(layer, depth) == 0,
            Structure::MiddleThird => third_of(layer, depth) == 1,
            Structure::UpperThird => third_of(layer, depth) == 2,
            Structure::Only(m) => key.module == *m,
            Structure::Encoder(e) => place.encoder == *e,
            Structure::None => false,
        }
    }

    /// The standard list for an adapter on `targets` of a backbone of `shapes`: all, both
    /// every-other variants, the three thirds, one "only" strategy per adapted module type,
    /// one per encoder when there are several, and none.
    pub fn standard(targets: &[TargetModule], shapes: &dyn ModuleShapes) -> Vec<Structure> {
        let mut out = Structure::BY_POSITION.to_vec();
        let mut mods: Vec<TargetModule> = targets.to_vec();
        mods.sort();
        mods.dedup();
        out.extend(mods.into_iter().map(Structure::Only));
        let mut encoders: Vec<&'static str> = (0..shapes.num_blocks()).map(|b| shapes.place(b).encoder).collect();
        encoders.dedup();
        if encoders.len() > 1 {
            out.extend(encoders.into_iter().map(Structure::Encoder));
        }
        out.push(Structure::None);
        out
    }
}

/// Which third of `num_blocks` blocks block `block` falls in: `⌊3·block / num_blocks⌋`
/// (0 lower, 1 middle, 2 upper; with 12 blocks: 0–3, 4–7, 8–11).
pub fn third_of(block: usize, num_blocks: usize) -> usize {
    (3 * block) / num_blocks.max(1)
}

/// The deltas a structure keeps on a backbone of `shapes`.
pub fn select(deltas: &Deltas, structure: &Structure, shapes: &dyn ModuleShapes) -> Deltas {
    deltas.iter().filter(|(k, _)| structure.keeps(k, shapes)).map(|(k, v)| (*k, v.clone())).collect()
}

table_row! {
    /// One structured variant of one adapter: a row of `prune_structured.parquet`.
    pub struct StructuredRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// [`Structure::name`].
        pub strategy: String,
        /// Modules whose `ΔW` is kept.
        pub modules_kept: i64,
        /// Modules of the adapter.
        pub modules_total: i64,
        /// Fraction of the adapter's factor entries kept.
        pub params_kept_fraction: f64,
        /// Test loss of the kept modules.
        pub test_loss: f64,
        /// Test accuracy of the kept modules.
        pub test_accuracy: f64,
        /// Test accuracy of the full adapter.
        pub full_accuracy: f64,
        /// Test accuracy of the frozen backbone.
        pub frozen_accuracy: f64,
    }
}

/// Evaluates every standard structure of one adapter (`deltas` are its updates, `full` and
/// `frozen` the metrics of all and of no module).
pub(super) fn evaluate(
    test: &Evaluator,
    input: &PruneInput,
    deltas: &Deltas,
    full: Metrics,
    frozen: Metrics,
) -> Result<Vec<StructuredRow>> {
    let shapes = test.backbone();
    let targets: Vec<TargetModule> = input.adapter.modules.keys().map(|k| k.module).collect();
    let total_params = input.adapter.num_parameters().max(1);
    let mut rows = Vec::new();
    for s in Structure::standard(&targets, shapes) {
        let kept = select(deltas, &s, shapes);
        let m = match s {
            Structure::All => full,
            Structure::None => frozen,
            _ => test.evaluate(&kept)?,
        };
        let kept_params: usize = input
            .adapter
            .modules
            .iter()
            .filter(|(k, _)| kept.contains_key(k))
            .map(|(_, f)| f.a.data.len() + f.b.data.len())
            .sum();
        rows.push(StructuredRow {
            method: input.method.clone(),
            seed: input.seed as i64,
            strategy: s.name(),
            modules_kept: kept.len() as i64,
            modules_total: deltas.len() as i64,
            params_kept_fraction: kept_params as f64 / total_params as f64,
            test_loss: m.loss,
            test_accuracy: m.accuracy,
            full_accuracy: full.accuracy,
            frozen_accuracy: frozen.accuracy,
        });
    }
    Ok(rows)
}

/// Test accuracy of each (method, strategy), mean and CI over run seeds.
pub(super) fn accuracy_ci(rows: &[StructuredRow]) -> Result<BTreeMap<(String, String), MeanCi>> {
    group_ci(rows.iter().map(|r| ((r.method.clone(), r.strategy.clone()), r.test_accuracy)))
}

table_row! {
    /// A row of `prune_structured_summary.parquet`: one (method, strategy) over run seeds.
    pub struct StructuredSummaryRow {
        /// Method name.
        pub method: String,
        /// [`Structure::name`].
        pub strategy: String,
        /// Test accuracy over run seeds.
        pub ci: MeanCi,
    }
}

/// The summary rows of [`accuracy_ci`], in key order.
pub(super) fn summary_rows(ci: &BTreeMap<(String, String), MeanCi>) -> Vec<StructuredSummaryRow> {
    ci.iter()
        .map(|((method, strategy), ci)| StructuredSummaryRow {
            method: method.clone(),
            strategy: strategy.clone(),
            ci: ci.clone(),
        })
        .collect()
}

/// Bars of the test accuracy per strategy (in table order) and method.
pub(super) fn figure(
    methods: &[String],
    rows: &[StructuredRow],
    ci: &BTreeMap<(String, String), MeanCi>,
    frozen: f64,
) -> Result<String> {
    let mut groups = Vec::new();
    for s in ordered_unique(rows.iter().map(|r| r.strategy.clone())) {
        let bars = methods
            .iter()
            .filter_map(|m| {
                ci.get(&(m.clone(), s.clone())).map(|c| Bar { series: m.clone(), value: c.mean, err: err_of(c) })
            })
            .collect();
        // Short axis labels: `every-other-even` → `even`, `lower-third` → `lower`, `q-only` → `q only`.
        let label = s.trim_start_matches("every-other-").trim_end_matches("-third").replace("-only", " only");
        groups.push(BarGroup { label, bars });
    }
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: format!("Structured pruning: test accuracy of the kept modules (frozen backbone {:.1}%; error bars 95% t-CI over seeds)", 100.0 * frozen),
        x_label: "modules kept (even / odd: every other block; lower / middle / upper: one third of the blocks)".into(),
        y_label: "test accuracy".into(),
        groups,
        ..Default::default()
    })
}
