//! Linear mode connectivity between adapters trained from different seeds:
//! interpolation paths in factor and delta space, barriers under every common
//! convention, layer-wise and cumulative barriers (Adilova et al. 2024), the
//! equal-weight merge of all seeds, and distances between runs; factor lines after gauge
//! alignment (`space`), the factor path's decomposition (`decompose`), learned curves
//! (`curves`) and the seed-level summary with jackknife intervals (`summary`).

pub mod curves;
pub mod decompose;
pub mod space;
pub mod summary;

use self::curves::{trained_curve, CurveRow, CurveTraining};
use self::decompose::{decomposition_figure, decomposition_rows, DecompositionRow};
use self::space::{aligned_endpoints, alignment_rows, AlignedEnds, AlignmentRow, PathKind, PathSpace};
use self::summary::{summary_rows, SummaryRow};
use super::Outputs;
use crate::adapter::Adapter;
use crate::connectivity::barrier::{barriers, Barriers};
use crate::connectivity::interpolate::{distances, interpolate, interpolate_blocks, Space};
use crate::eval::{Deltas, Evaluator, Metrics};
use crate::progress::Progress;
use crate::report::plot::{Bar, BarGroup, BarPlot, Heatmap, LinePlot, Series};
use crate::report::table::{named_cells, table_row, Columns, Field, Table};
use crate::stats::mean_ci;
use crate::train::curve::curve_point;
use anyhow::{bail, Result};
use indicatif::ProgressBar;
use std::collections::{BTreeMap, BTreeSet};

/// One trained run entering the analysis.
pub struct SeedRun<'a> {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: u64,
    /// The adapter.
    pub adapter: &'a Adapter,
}

/// Options of the analysis.
#[derive(Clone, Debug)]
pub struct ConnectivityOptions {
    /// Points on the α grid of the main paths (both endpoints included).
    pub alphas: usize,
    /// Points on the α grid of the layer-wise paths.
    pub layer_alphas: usize,
    /// Straight paths: plain factor and delta lines and aligned factor lines (curves come
    /// with [`CurveTraining`]).
    pub spaces: Vec<PathSpace>,
    /// Whether to run the layer-wise sweeps.
    pub layerwise: bool,
}

/// The α grid `0, 1/(k−1), …, 1`.
pub fn alpha_grid(points: usize) -> Result<Vec<f64>> {
    if points < 2 {
        bail!("an α grid needs at least 2 points (both endpoints); got {points}");
    }
    Ok((0..points).map(|i| i as f64 / (points - 1) as f64).collect())
}

/// Where a path is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// The test set.
    Test,
    /// The training shots.
    Train,
}

impl Split {
    /// `test` or `train` (the `split` column).
    pub fn name(self) -> &'static str {
        match self {
            Split::Test => "test",
            Split::Train => "train",
        }
    }
}

/// What a barrier is measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quantity {
    /// The loss.
    Loss,
    /// The error, `1 − accuracy`.
    Error,
}

impl Quantity {
    /// Both quantities, in table order.
    pub const ALL: [Quantity; 2] = [Quantity::Loss, Quantity::Error];

    /// `loss` or `error` (the `quantity` column).
    pub fn name(self) -> &'static str {
        match self {
            Quantity::Loss => "loss",
            Quantity::Error => "error",
        }
    }

    /// The quantity of metrics `m`.
    pub fn of(self, m: &Metrics) -> f64 {
        match self {
            Quantity::Loss => m.loss,
            Quantity::Error => 1.0 - m.accuracy,
        }
    }
}

/// Which blocks a path interpolates (the others stay at seed A).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole adapter.
    All,
    /// Only block ℓ.
    Single,
    /// Blocks 0..=ℓ.
    Cumulative,
}

impl Scope {
    /// The layer-wise scopes, in table order.
    pub const LAYERWISE: [Scope; 2] = [Scope::Single, Scope::Cumulative];

    /// `all`, `single` or `cumulative` (the `scope` column).
    pub fn name(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::Single => "single",
            Scope::Cumulative => "cumulative",
        }
    }
}

/// A summary line per (method, space): mean test-error barrier (Entezari) over pairs.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Method.
    pub method: String,
    /// Path space.
    pub space: PathSpace,
    /// Test-loss barrier (linear convention), mean over pairs.
    pub loss_barrier: f64,
    /// Test-error barrier (linear convention), mean over pairs.
    pub error_barrier: f64,
    /// Test accuracy at α = 0.5, mean over pairs.
    pub midpoint_accuracy: f64,
    /// Mean endpoint test accuracy.
    pub endpoint_accuracy: f64,
    /// Test accuracy of the equal-weight merge of all seeds (3 or more seeds).
    pub merge_all_accuracy: Option<f64>,
}

table_row! {
    /// One point of an interpolation path: a row of `connectivity_paths.parquet`.
    pub struct PathRow {
        /// Method name.
        pub method: String,
        /// Seed of endpoint A (α = 0).
        pub seed_a: i64,
        /// Seed of endpoint B (α = 1).
        pub seed_b: i64,
        /// Path space.
        pub space: PathSpace,
        /// `line`, `aligned` or `curve`.
        pub path_kind: PathKind,
        /// Interpolation coefficient α (the curve's position `t` on a curve).
        pub alpha: f64,
        /// Where the path is evaluated.
        pub split: Split,
        /// Loss of the interpolated adapter.
        pub loss: f64,
        /// Accuracy of the interpolated adapter.
        pub accuracy: f64,
    }
}

/// The barriers of a path are the columns `barrier_linear_ref`, `barrier_mean_ref`,
/// `barrier_worst_ref`, `midpoint_gap` and `alpha_of_linear_max` (the field name is not used).
impl Field for Barriers {
    fn add_columns<R>(cols: &mut Columns<'_, R>, _name: &str, get: impl Fn(&R) -> &Self) {
        cols.col("barrier_linear_ref", |r| get(r).linear)
            .col("barrier_mean_ref", |r| get(r).mean)
            .col("barrier_worst_ref", |r| get(r).worst)
            .col("midpoint_gap", |r| get(r).midpoint_gap)
            .col("alpha_of_linear_max", |r| get(r).linear_alpha);
    }
}

named_cells!(Space, Split, Quantity, Scope);

table_row! {
/// The barriers of one path: a row of `connectivity_barriers.parquet`.
pub struct BarrierRow {
    /// Method name.
    pub method: String,
    /// Seed of endpoint A.
    pub seed_a: i64,
    /// Seed of endpoint B.
    pub seed_b: i64,
    /// Path space.
    pub space: PathSpace,
    /// `line`, `aligned` or `curve`.
    pub path_kind: PathKind,
    /// Where the path is evaluated.
    pub split: Split,
    /// What the barrier is measured on.
    pub quantity: Quantity,
    /// Which blocks the path interpolates.
    pub scope: Scope,
    /// The block ℓ of a layer-wise path (−1 for `all`).
    pub block: i64,
    /// The barrier under every convention.
    pub barriers: Barriers,
}
}

impl BarrierRow {
    /// Whether the row is on `method`'s whole-adapter test path in `space` for `quantity`.
    fn is_main_test(&self, method: &str, space: PathSpace, quantity: Quantity) -> bool {
        self.method == method
            && self.space == space
            && self.split == Split::Test
            && self.quantity == quantity
            && self.scope == Scope::All
    }
}

table_row! {
    /// A distance between two runs: a row of `connectivity_distances.parquet`.
    pub struct DistanceRow {
        /// Method name.
        pub method: String,
        /// Seed of run A.
        pub seed_a: i64,
        /// Seed of run B.
        pub seed_b: i64,
        /// Space of the distance.
        pub space: Space,
        /// Block (−1 for the whole adapter).
        pub block: i64,
        /// Euclidean distance.
        pub euclidean: f64,
        /// Cosine similarity.
        pub cosine: f64,
    }
}

table_row! {
    /// The equal-weight merge of all seeds: a row of `connectivity_merge_all.parquet`.
    pub struct MergeAllRow {
        /// Method name.
        pub method: String,
        /// Merge space.
        pub space: Space,
        /// Where the merge is evaluated.
        pub split: Split,
        /// Seeds merged.
        pub n_seeds: i64,
        /// Loss of the merge.
        pub loss: f64,
        /// Accuracy of the merge.
        pub accuracy: f64,
    }
}

/// The `(α, quantity)` curve of a path's points.
fn curve(points: &[(f64, Metrics)], quantity: Quantity) -> Vec<(f64, f64)> {
    points.iter().map(|(a, m)| (*a, quantity.of(m))).collect()
}

/// The two evaluation splits, in table order.
type Splits<'e> = [(Split, &'e Evaluator); 2];

/// The rows the analysis collects, per table, and the summaries.
#[derive(Default)]
struct Collected {
    /// Interpolation paths.
    paths: Vec<PathRow>,
    /// Barriers of every path.
    bars: Vec<BarrierRow>,
    /// Equal-weight merges of all seeds.
    merges: Vec<MergeAllRow>,
    /// Distances between runs.
    dist: Vec<DistanceRow>,
    /// Per (method, space) summaries.
    summaries: Vec<Summary>,
    /// Alignment residuals per pair, gauge and module.
    alignment: Vec<AlignmentRow>,
    /// The factor path's decomposition per pair and α.
    decomposition: Vec<DecompositionRow>,
    /// Trained curves.
    curves: Vec<CurveRow>,
}

/// Runs the analysis on the test evaluator (paths, barriers, layer-wise, the factor path's
/// decomposition) and the train evaluator (paths and barriers on the shots); with `curves`,
/// also trains and evaluates a curve per pair and shape. Returns the outputs, the per
/// (method, path) summaries and the seed-level summary rows.
pub fn analyze(
    test: &Evaluator,
    train: &Evaluator,
    runs: &[SeedRun],
    opts: &ConnectivityOptions,
    curves: Option<&CurveTraining>,
    progress: &Progress,
) -> Result<(Outputs, Vec<Summary>, Vec<SummaryRow>)> {
    let grid = alpha_grid(opts.alphas)?;
    let layer_grid = alpha_grid(opts.layer_alphas)?;
    if let Some(bad) = opts.spaces.iter().find(|s| s.kind() == PathKind::Curve) {
        bail!("{bad} is a learned curve, not a straight path; ask for curves with their training settings");
    }
    let curve_kinds: Vec<PathSpace> =
        curves.map(|c| c.kinds.iter().map(|k| PathSpace::Curve(*k)).collect()).unwrap_or_default();
    let mut methods: Vec<String> = runs.iter().map(|r| r.method.clone()).collect();
    methods.dedup();
    let splits: Splits = [(Split::Test, test), (Split::Train, train)];
    let mut c = Collected::default();
    for method in &methods {
        let mine: Vec<&SeedRun> = runs.iter().filter(|r| &r.method == method).collect();
        if mine.len() < 2 {
            bail!("method {method} has {} seed(s): connectivity needs at least 2 (e.g. --seeds 1,2)", mine.len());
        }
        let pairs: Vec<(usize, usize)> =
            (0..mine.len()).flat_map(|i| (i + 1..mine.len()).map(move |j| (i, j))).collect();
        let nb = test.backbone().num_blocks();
        let per_pair = (opts.spaces.len() + curve_kinds.len()) * 2 * grid.len()
            + grid.len()
            + if opts.layerwise { opts.spaces.len() * 2 * nb * layer_grid.len() } else { 0 };
        let bar = progress.bar((pairs.len() * per_pair) as u64, &format!("connectivity {method}"));
        for &(i, j) in &pairs {
            let (a, b) = (mine[i].adapter, mine[j].adapter);
            let aligned = aligned_endpoints(a, b, &opts.spaces)?;
            let pair = Pair { method, a: mine[i], b: mine[j], aligned: &aligned };
            c.dist.extend(pair.distance_rows()?);
            for (gauge, (_, reports)) in &aligned {
                c.alignment.extend(alignment_rows(method, pair.seeds(), *gauge, reports));
            }
            for &space in &opts.spaces {
                let (end, s) = pair.line_end(space)?;
                pair.path(space, &splits, &grid, &bar, &mut c, |alpha| interpolate(a, end, alpha, s))?;
                if opts.layerwise {
                    c.bars.extend(pair.layerwise_barriers(test, space, &layer_grid, &bar)?);
                }
            }
            let key = (method.as_str(), mine[i].seed, mine[j].seed);
            c.decomposition.extend(decomposition_rows(test, key, a, b, &grid, &c.paths)?);
            bar.inc(grid.len() as u64);
            if let Some(t) = curves {
                for &kind in &t.kinds {
                    let (control, row) = trained_curve(test.backbone(), t, method, pair.seeds(), kind, a, b)?;
                    c.curves.push(row);
                    let point =
                        |alpha: f64| -> Result<Deltas> { Ok(curve_point(kind, a, &control, b, alpha)?.deltas()) };
                    pair.path(PathSpace::Curve(kind), &splits, &grid, &bar, &mut c, point)?;
                }
            }
        }
        bar.finish_and_clear();
        let merge_acc = merge_all(method, &mine, &opts.spaces, &splits, &mut c.merges)?;
        for &space in opts.spaces.iter().chain(&curve_kinds) {
            let summary = method_summary(method, space, &grid, &c, merge_acc.get(&space).copied());
            c.summaries.push(summary);
        }
    }
    let seed_level = summary_rows(&c.bars)?;
    let out = outputs(&c, &methods, opts, &curve_kinds, &seed_level)?;
    Ok((out, c.summaries, seed_level))
}

/// Two seeds of one method: endpoint A (α = 0) and endpoint B (α = 1), with B re-parameterised
/// towards A in every gauge asked for.
struct Pair<'r, 'a> {
    /// Method name.
    method: &'r str,
    /// Endpoint A.
    a: &'r SeedRun<'a>,
    /// Endpoint B.
    b: &'r SeedRun<'a>,
    /// Endpoint B aligned towards A, per gauge (with the alignment's residuals).
    aligned: &'r AlignedEnds,
}

impl Pair<'_, '_> {
    /// `(seed A, seed B)`.
    fn seeds(&self) -> (u64, u64) {
        (self.a.seed, self.b.seed)
    }

    /// The end of the straight path `space` (B, or B aligned in the path's gauge) and the
    /// space the line is drawn in.
    fn line_end(&self, space: PathSpace) -> Result<(&Adapter, Space)> {
        if let Some(s) = space.plain() {
            return Ok((self.b.adapter, s));
        }
        match space.gauge().and_then(|g| self.aligned.get(&g)) {
            Some((b, _)) => Ok((b, Space::Factor)),
            None => bail!("internal: path {space} has no aligned endpoint; align before drawing lines"),
        }
    }

    /// Euclidean distances and cosines between the two runs, whole adapter and per block.
    fn distance_rows(&self) -> Result<Vec<DistanceRow>> {
        Ok(distances(self.a.adapter, self.b.adapter)?
            .into_iter()
            .map(|d| DistanceRow {
                method: self.method.to_string(),
                seed_a: self.a.seed as i64,
                seed_b: self.b.seed as i64,
                space: d.space,
                block: d.block.map(|x| x as i64).unwrap_or(-1),
                euclidean: d.euclidean,
                cosine: d.cosine,
            })
            .collect())
    }

    /// The barrier row of this pair for one (space, split, quantity, scope, block).
    fn barrier(
        &self,
        space: PathSpace,
        split: Split,
        quantity: Quantity,
        scope: Scope,
        block: i64,
        barriers: Barriers,
    ) -> BarrierRow {
        BarrierRow {
            method: self.method.to_string(),
            seed_a: self.a.seed as i64,
            seed_b: self.b.seed as i64,
            space,
            path_kind: space.kind(),
            split,
            quantity,
            scope,
            block,
            barriers,
        }
    }

    /// The whole-adapter path `space` on both splits, with its loss and error barriers;
    /// `point(α)` gives the path's `ΔW` at `α`.
    fn path(
        &self,
        space: PathSpace,
        splits: &Splits,
        grid: &[f64],
        bar: &ProgressBar,
        c: &mut Collected,
        point: impl Fn(f64) -> Result<Deltas>,
    ) -> Result<()> {
        for &(split, ev) in splits {
            let mut pts = Vec::new();
            for &alpha in grid {
                let m = ev.evaluate(&point(alpha)?)?;
                bar.inc(1);
                c.paths.push(PathRow {
                    method: self.method.to_string(),
                    seed_a: self.a.seed as i64,
                    seed_b: self.b.seed as i64,
                    space,
                    path_kind: space.kind(),
                    alpha,
                    split,
                    loss: m.loss,
                    accuracy: m.accuracy,
                });
                pts.push((alpha, m));
            }
            for q in Quantity::ALL {
                c.bars.push(self.barrier(space, split, q, Scope::All, -1, barriers(&curve(&pts, q))?));
            }
        }
        Ok(())
    }

    /// Test barriers of the layer-wise paths: only block ℓ interpolated (`single`) and blocks
    /// 0..=ℓ interpolated (`cumulative`), the rest at seed A.
    fn layerwise_barriers(
        &self,
        test: &Evaluator,
        space: PathSpace,
        layer_grid: &[f64],
        bar: &ProgressBar,
    ) -> Result<Vec<BarrierRow>> {
        let a = self.a.adapter;
        let (b, space_of_line) = self.line_end(space)?;
        let nb = test.backbone().num_blocks();
        let base = a.deltas();
        let based = test.with_base(&base)?;
        // curves[scope][block]: (α, metrics) points.
        let mut curves: [Vec<Vec<(f64, Metrics)>>; 2] = [vec![Vec::new(); nb], vec![Vec::new(); nb]];
        for &alpha in layer_grid {
            for (block, pts) in curves[0].iter_mut().enumerate() {
                let d = interpolate_blocks(a, b, alpha, space_of_line, &BTreeSet::from([block]))?;
                pts.push((alpha, based.evaluate(&d)?));
                bar.inc(1);
            }
            // Cumulative scope: blocks 0..=ℓ interpolated, the rest at seed A, for
            // every ℓ in one pass that shares the interpolated prefix.
            let all = interpolate(a, b, alpha, space_of_line)?;
            for (pts, m) in curves[1].iter_mut().zip(based.prefix_sweep(&all, &base)?) {
                pts.push((alpha, m));
                bar.inc(1);
            }
        }
        let mut rows = Vec::new();
        for (scope, per_block) in Scope::LAYERWISE.into_iter().zip(&curves) {
            for (block, pts) in per_block.iter().enumerate() {
                for q in Quantity::ALL {
                    rows.push(self.barrier(space, Split::Test, q, scope, block as i64, barriers(&curve(pts, q))?));
                }
            }
        }
        Ok(rows)
    }
}

/// The equal-weight merge of all seeds of `method` (CoTo's 1:1:1) in the plain factor and
/// delta spaces among `spaces`, on both splits, when there are 3 or more seeds; returns the
/// test accuracy per space.
fn merge_all(
    method: &str,
    mine: &[&SeedRun],
    spaces: &[PathSpace],
    splits: &Splits,
    merges: &mut Vec<MergeAllRow>,
) -> Result<BTreeMap<PathSpace, f64>> {
    let mut merge_acc = BTreeMap::new();
    if mine.len() >= 3 {
        for space in spaces.iter().filter_map(|s| s.plain()) {
            let d = equal_merge(mine, space)?;
            for &(split, ev) in splits {
                let m = ev.evaluate(&d)?;
                merges.push(MergeAllRow {
                    method: method.to_string(),
                    space,
                    split,
                    n_seeds: mine.len() as i64,
                    loss: m.loss,
                    accuracy: m.accuracy,
                });
                if split == Split::Test {
                    merge_acc.insert(PathSpace::from(space), m.accuracy);
                }
            }
        }
    }
    Ok(merge_acc)
}

/// The summary of `method` in `space`: mean barriers over pairs and path accuracies.
fn method_summary(method: &str, space: PathSpace, grid: &[f64], c: &Collected, merge_all: Option<f64>) -> Summary {
    let sel = |q: Quantity| -> Vec<f64> {
        c.bars.iter().filter(|r| r.is_main_test(method, space, q)).map(|r| r.barriers.linear).collect()
    };
    let acc_at = |alpha: f64| -> Vec<f64> {
        c.paths
            .iter()
            .filter(|p| {
                p.method == method && p.space == space && p.split == Split::Test && (p.alpha - alpha).abs() < 1e-9
            })
            .map(|p| p.accuracy)
            .collect()
    };
    let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mid = if grid.iter().any(|a| (a - 0.5).abs() < 1e-9) { mean(acc_at(0.5)) } else { f64::NAN };
    let ends = (mean(acc_at(0.0)) + mean(acc_at(1.0))) / 2.0;
    Summary {
        method: method.to_string(),
        space,
        loss_barrier: mean(sel(Quantity::Loss)),
        error_barrier: mean(sel(Quantity::Error)),
        midpoint_accuracy: mid,
        endpoint_accuracy: ends,
        merge_all_accuracy: merge_all,
    }
}

/// The figures and tables of the collected rows.
fn outputs(
    c: &Collected,
    methods: &[String],
    opts: &ConnectivityOptions,
    curves: &[PathSpace],
    seed_level: &[SummaryRow],
) -> Result<Outputs> {
    let mut out = Outputs::default();
    let all: Vec<PathSpace> = opts.spaces.iter().chain(curves).copied().collect();
    out.figures.push(("connectivity_paths.svg".into(), paths_figure(&c.paths, &all)?));
    for m in methods {
        out.figures.push((format!("connectivity_paths_{m}.svg"), method_paths_figure(&c.paths, m, &all)?));
        out.figures.push((format!("connectivity_decomposition_{m}.svg"), decomposition_figure(&c.decomposition, m)?));
    }
    out.figures.push(("connectivity_barriers.svg".into(), barrier_figure(&c.bars, methods, &all)?));
    if opts.layerwise {
        for scope in Scope::LAYERWISE {
            out.figures.push((
                format!("connectivity_layerwise_{}.svg", scope.name()),
                layer_figure(&c.bars, methods, &opts.spaces, scope)?,
            ));
        }
    }
    out.tables.push(("connectivity_paths.parquet".into(), Table::from_rows(&c.paths)));
    out.tables.push(("connectivity_barriers.parquet".into(), Table::from_rows(&c.bars)));
    out.tables.push(("connectivity_barrier_ci.parquet".into(), Table::from_rows(&barrier_ci_rows(&c.bars)?)));
    out.tables.push(("connectivity_distances.parquet".into(), Table::from_rows(&c.dist)));
    if !c.merges.is_empty() {
        out.tables.push(("connectivity_merge_all.parquet".into(), Table::from_rows(&c.merges)));
    }
    if !c.alignment.is_empty() {
        out.tables.push(("connectivity_alignment.parquet".into(), Table::from_rows(&c.alignment)));
    }
    out.tables.push(("connectivity_decomposition.parquet".into(), Table::from_rows(&c.decomposition)));
    if !c.curves.is_empty() {
        out.tables.push(("connectivity_curves.parquet".into(), Table::from_rows(&c.curves)));
    }
    out.tables.push(("connectivity_summary.parquet".into(), Table::from_rows(seed_level)));
    Ok(out)
}

/// The mean over pairs of `value` on `method`'s test paths in `space`, per α.
fn mean_path(p: &[PathRow], method: &str, space: PathSpace, value: fn(&PathRow) -> f64) -> Vec<(f64, f64)> {
    let mut by_alpha: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for r in p.iter().filter(|r| r.method == method && r.space == space && r.split == Split::Test) {
        by_alpha.entry((r.alpha * 1e6).round() as i64).or_default().push(value(r));
    }
    by_alpha.into_iter().map(|(a, v)| (a as f64 / 1e6, v.iter().sum::<f64>() / v.len() as f64)).collect()
}

/// One figure for `method`: straight lines, aligned lines (dashed) and curves on one plot,
/// test accuracy and test loss along α, mean over pairs.
fn method_paths_figure(p: &[PathRow], method: &str, spaces: &[PathSpace]) -> Result<String> {
    let metrics: [PathMetric; 2] = [("test accuracy", |r| r.accuracy), ("test loss", |r| r.loss)];
    let panels: Vec<LinePlot> = metrics
        .iter()
        .map(|(label, value)| LinePlot {
            title: (*label).into(),
            x_label: "α (0 = seed A, 1 = seed B; t on a curve)".into(),
            y_label: (*label).into(),
            series: spaces
                .iter()
                .map(|&s| Series {
                    label: s.name().into(),
                    points: mean_path(p, method, s, *value),
                    dashed: s.kind() == PathKind::Aligned,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .collect();
    crate::report::plot::panels_svg(
        &format!("{method}: lines, gauge-aligned lines and learned curves between seeds (mean over pairs)"),
        &panels,
        2,
    )
}

/// Equal-weight merge of every run of one method: factor averages of A and B, or ΔW average
/// ([`crate::merge::merge_in_space`], which the analyses' merge measure uses too).
fn equal_merge(runs: &[&SeedRun], space: Space) -> Result<Deltas> {
    let adapters: Vec<&Adapter> = runs.iter().map(|r| r.adapter).collect();
    crate::merge::merge_in_space(&adapters, &[], space)
}

/// A barrier convention: table name, figure label and the field it reads.
type BarrierField = (&'static str, &'static str, fn(&Barriers) -> f64);

/// Every barrier convention, in table order.
const BARRIER_FIELDS: [BarrierField; 4] = [
    ("linear", "linear ref.", |b| b.linear),
    ("mean", "mean ref.", |b| b.mean),
    ("worst", "worse endpoint", |b| b.worst),
    ("midpoint", "midpoint gap", |b| b.midpoint_gap),
];

/// Grouping key of barrier rows: method, space, split, quantity, scope, block. The enums enter
/// by their table names, so the summary rows sort as the names do.
type BarrierKey = (String, &'static str, &'static str, &'static str, &'static str, i64);

table_row! {
    /// One barrier convention over seed pairs: a row of `connectivity_barrier_ci.parquet`.
    pub struct BarrierCiRow {
        /// Method name.
        pub method: String,
        /// Path space.
        pub space: PathSpace,
        /// Where the paths are evaluated.
        pub split: Split,
        /// What the barriers are measured on.
        pub quantity: Quantity,
        /// Which blocks the paths interpolate.
        pub scope: Scope,
        /// The block ℓ of a layer-wise path (−1 for `all`).
        pub block: i64,
        /// `linear`, `mean`, `worst` or `midpoint`.
        pub convention: String,
        /// Seed pairs.
        pub n_pairs: i64,
        /// Mean over pairs.
        pub mean: f64,
        /// Lower end of the Student-t 95% CI.
        pub ci95_lo: f64,
        /// Upper end of the Student-t 95% CI.
        pub ci95_hi: f64,
    }
}

/// Mean and Student-t 95% CI over seed pairs of every barrier convention, one group per
/// (method, space, split, quantity, scope, block) in the order of their table names.
fn barrier_ci_rows(bars: &[BarrierRow]) -> Result<Vec<BarrierCiRow>> {
    let mut groups: BTreeMap<BarrierKey, (&BarrierRow, Vec<&Barriers>)> = BTreeMap::new();
    for r in bars {
        let key = (r.method.clone(), r.space.name(), r.split.name(), r.quantity.name(), r.scope.name(), r.block);
        groups.entry(key).or_insert_with(|| (r, Vec::new())).1.push(&r.barriers);
    }
    let mut rows = Vec::new();
    for (first, group) in groups.into_values() {
        for (name, _, f) in BARRIER_FIELDS {
            let xs: Vec<f64> = group.iter().copied().map(f).collect();
            let ci = mean_ci(&xs)?;
            rows.push(BarrierCiRow {
                method: first.method.clone(),
                space: first.space,
                split: first.split,
                quantity: first.quantity,
                scope: first.scope,
                block: first.block,
                convention: name.to_string(),
                n_pairs: xs.len() as i64,
                mean: ci.mean,
                ci95_lo: ci.lo,
                ci95_hi: ci.hi,
            });
        }
    }
    Ok(rows)
}

/// A path panel's label and the value it reads from a path point.
type PathMetric = (&'static str, fn(&PathRow) -> f64);

/// Test accuracy, then test loss, along the paths: one panel per (metric, space).
fn paths_figure(p: &[PathRow], spaces: &[PathSpace]) -> Result<String> {
    let mut panels = Vec::new();
    let metrics: [PathMetric; 2] = [("test accuracy", |r| r.accuracy), ("test loss", |r| r.loss)];
    for (label, value) in metrics {
        for &space in spaces {
            let mut methods: Vec<String> = p.iter().map(|r| r.method.clone()).collect();
            methods.dedup();
            let mut series = Vec::new();
            for m in &methods {
                let mut by_alpha: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
                for r in p.iter().filter(|r| &r.method == m && r.space == space && r.split == Split::Test) {
                    by_alpha.entry((r.alpha * 1e6).round() as i64).or_default().push(value(r));
                }
                let pts: Vec<(f64, f64)> =
                    by_alpha.iter().map(|(a, v)| (*a as f64 / 1e6, v.iter().sum::<f64>() / v.len() as f64)).collect();
                let band = by_alpha
                    .iter()
                    .map(|(a, v)| {
                        (
                            *a as f64 / 1e6,
                            v.iter().cloned().fold(f64::INFINITY, f64::min),
                            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        )
                    })
                    .collect::<Vec<_>>();
                let multi = by_alpha.values().next().map(|v| v.len() > 1).unwrap_or(false);
                series.push(Series {
                    label: m.clone(),
                    points: pts,
                    band: if multi { Some(band) } else { None },
                    dashed: false,
                    ..Default::default()
                });
            }
            panels.push(LinePlot {
                title: format!("{label}, {} space", space.name()),
                x_label: "α (0 = seed A, 1 = seed B)".into(),
                y_label: label.into(),
                series,
                log_x: false,
                log_y: false,
                reference_y: None,
                ..Default::default()
            });
        }
    }
    crate::report::plot::panels_svg(
        "Linear interpolation between seeds (mean over pairs; band = min..max)",
        &panels,
        spaces.len().max(1),
    )
}

/// The whole-adapter test-error barrier under every convention, per method and space.
fn barrier_figure(b: &[BarrierRow], methods: &[String], spaces: &[PathSpace]) -> Result<String> {
    let mut groups = Vec::new();
    for (_, name, f) in BARRIER_FIELDS {
        let mut bars_v = Vec::new();
        for m in methods {
            for &s in spaces {
                let xs: Vec<f64> =
                    b.iter().filter(|r| r.is_main_test(m, s, Quantity::Error)).map(|r| f(&r.barriers)).collect();
                let ci = mean_ci(&xs)?;
                let err = if xs.len() >= 2 { Some((ci.lo, ci.hi)) } else { None };
                bars_v.push(Bar { series: format!("{m} ({})", s.name()), value: ci.mean, err });
            }
        }
        groups.push(BarGroup { label: name.into(), bars: bars_v });
    }
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: "Test-error barrier by convention (error bars: 95% t-interval over seed pairs)".into(),
        x_label: "barrier convention".into(),
        y_label: "barrier (error, fraction)".into(),
        groups,
        ..Default::default()
    })
}

/// The layer-wise test-error barriers of `scope`: one heatmap row per (method, space).
fn layer_figure(b: &[BarrierRow], methods: &[String], spaces: &[PathSpace], scope: Scope) -> Result<String> {
    let nb = b.iter().map(|r| r.block).max().unwrap_or(-1) + 1;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for m in methods {
        for &s in spaces {
            let mut row = Vec::new();
            for blk in 0..nb {
                let xs: Vec<f64> = b
                    .iter()
                    .filter(|r| {
                        &r.method == m
                            && r.space == s
                            && r.quantity == Quantity::Error
                            && r.scope == scope
                            && r.block == blk
                    })
                    .map(|r| r.barriers.linear)
                    .collect();
                row.push(xs.iter().sum::<f64>() / xs.len().max(1) as f64);
            }
            rows.push(row);
            labels.push(format!("{m} ({})", s.name()));
        }
    }
    let what = match scope {
        Scope::Single => "only block ℓ interpolated",
        Scope::All | Scope::Cumulative => "blocks 0..ℓ interpolated",
    };
    crate::report::plot::heatmap_svg(&Heatmap {
        title: format!("Layer-wise test-error barrier (linear ref.), {what}"),
        x_label: "block ℓ".into(),
        y_label: "method (space)".into(),
        x_ticks: (0..nb).map(|i| i.to_string()).collect(),
        y_ticks: labels,
        values: rows,
        annotate: true,
        ..Default::default()
    })
}
