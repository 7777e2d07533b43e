//! Linear mode connectivity between adapters trained from different seeds:
//! interpolation paths in factor and delta space, barriers under every common
//! convention, layer-wise and cumulative barriers (Adilova et al. 2024), the
//! equal-weight merge of all seeds, and distances between runs.

use super::Outputs;
use crate::adapter::Adapter;
use crate::connectivity::barrier::{barriers, Barriers};
use crate::connectivity::interpolate::{distances, interpolate, interpolate_blocks, Space};
use crate::eval::{adapter_deltas, Deltas, Evaluator, Metrics};
use crate::progress::Progress;
use crate::report::plot::{Bar, BarGroup, BarPlot, Heatmap, LinePlot, Series};
use crate::report::table::Table;
use crate::stats::mean_ci;
use anyhow::{bail, Result};
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
    /// Interpolation spaces.
    pub spaces: Vec<Space>,
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

/// A summary line per (method, space): mean test-error barrier (Entezari) over pairs.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Method.
    pub method: String,
    /// Space.
    pub space: Space,
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

#[derive(Default)]
struct PathRows {
    method: Vec<String>,
    seed_a: Vec<i64>,
    seed_b: Vec<i64>,
    space: Vec<String>,
    alpha: Vec<f64>,
    split: Vec<String>,
    loss: Vec<f64>,
    accuracy: Vec<f64>,
}

#[derive(Default)]
struct BarrierRows {
    method: Vec<String>,
    seed_a: Vec<i64>,
    seed_b: Vec<i64>,
    space: Vec<String>,
    split: Vec<String>,
    quantity: Vec<String>,
    scope: Vec<String>,
    block: Vec<i64>,
    b: Vec<Barriers>,
}

impl BarrierRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        method: &str,
        pair: (u64, u64),
        space: Space,
        split: &str,
        quantity: &str,
        scope: &str,
        block: i64,
        b: Barriers,
    ) {
        self.method.push(method.into());
        self.seed_a.push(pair.0 as i64);
        self.seed_b.push(pair.1 as i64);
        self.space.push(space.name().into());
        self.split.push(split.into());
        self.quantity.push(quantity.into());
        self.scope.push(scope.into());
        self.block.push(block);
        self.b.push(b);
    }

    fn table(&self) -> Table {
        let mut t = Table::new();
        t.str_col("method", self.method.clone())
            .i64_col("seed_a", self.seed_a.clone())
            .i64_col("seed_b", self.seed_b.clone())
            .str_col("space", self.space.clone())
            .str_col("split", self.split.clone())
            .str_col("quantity", self.quantity.clone())
            .str_col("scope", self.scope.clone())
            .i64_col("block", self.block.clone())
            .f64_col("barrier_linear_ref", self.b.iter().map(|b| b.linear).collect())
            .f64_col("barrier_mean_ref", self.b.iter().map(|b| b.mean).collect())
            .f64_col("barrier_worst_ref", self.b.iter().map(|b| b.worst).collect())
            .f64_col("midpoint_gap", self.b.iter().map(|b| b.midpoint_gap).collect())
            .f64_col("alpha_of_linear_max", self.b.iter().map(|b| b.linear_alpha).collect());
        t
    }
}

fn curve(points: &[(f64, Metrics)], quantity: &str) -> Vec<(f64, f64)> {
    points.iter().map(|(a, m)| (*a, if quantity == "loss" { m.loss } else { 1.0 - m.accuracy })).collect()
}

/// Runs the analysis on the test evaluator (paths, barriers, layer-wise) and the train
/// evaluator (paths and barriers on the shots).
pub fn analyze(
    test: &Evaluator,
    train: &Evaluator,
    runs: &[SeedRun],
    opts: &ConnectivityOptions,
    progress: &Progress,
) -> Result<(Outputs, Vec<Summary>)> {
    let grid = alpha_grid(opts.alphas)?;
    let layer_grid = alpha_grid(opts.layer_alphas)?;
    let mut methods: Vec<String> = runs.iter().map(|r| r.method.clone()).collect();
    methods.dedup();
    let mut paths = PathRows::default();
    let mut bars = BarrierRows::default();
    let mut merges = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut dist = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut summaries = Vec::new();
    let splits: [(&str, &Evaluator); 2] = [("test", test), ("train", train)];
    for method in &methods {
        let mine: Vec<&SeedRun> = runs.iter().filter(|r| &r.method == method).collect();
        if mine.len() < 2 {
            bail!("method {method} has {} seed(s): connectivity needs at least 2 (e.g. --seeds 1,2)", mine.len());
        }
        let pairs: Vec<(usize, usize)> =
            (0..mine.len()).flat_map(|i| (i + 1..mine.len()).map(move |j| (i, j))).collect();
        let nb = test.backbone().num_blocks();
        let per_pair =
            opts.spaces.len() * (2 * grid.len() + if opts.layerwise { 2 * nb * layer_grid.len() } else { 0 });
        let bar = progress.bar((pairs.len() * per_pair) as u64, &format!("connectivity {method}"));
        for &(i, j) in &pairs {
            let (a, b) = (mine[i], mine[j]);
            let pair = (a.seed, b.seed);
            for d in distances(a.adapter, b.adapter)? {
                dist.0.push(method.clone());
                dist.1.push(a.seed as i64);
                dist.2.push(b.seed as i64);
                dist.3.push(d.space.name().to_string());
                dist.4.push(d.block.map(|x| x as i64).unwrap_or(-1));
                dist.5.push(d.euclidean);
                dist.6.push(d.cosine);
            }
            for &space in &opts.spaces {
                for (split, ev) in splits {
                    let mut pts = Vec::new();
                    for &alpha in &grid {
                        let m = ev.evaluate(&interpolate(a.adapter, b.adapter, alpha, space)?)?;
                        bar.inc(1);
                        paths.method.push(method.clone());
                        paths.seed_a.push(a.seed as i64);
                        paths.seed_b.push(b.seed as i64);
                        paths.space.push(space.name().into());
                        paths.alpha.push(alpha);
                        paths.split.push(split.into());
                        paths.loss.push(m.loss);
                        paths.accuracy.push(m.accuracy);
                        pts.push((alpha, m));
                    }
                    for q in ["loss", "error"] {
                        bars.push(method, pair, space, split, q, "all", -1, barriers(&curve(&pts, q))?);
                    }
                }
                if opts.layerwise {
                    let base = adapter_deltas(a.adapter);
                    let based = test.with_base(&base)?;
                    // curves[scope][block]: (α, metrics) points.
                    let mut curves: [Vec<Vec<(f64, Metrics)>>; 2] = [vec![Vec::new(); nb], vec![Vec::new(); nb]];
                    for &alpha in &layer_grid {
                        for (block, pts) in curves[0].iter_mut().enumerate() {
                            let d = interpolate_blocks(a.adapter, b.adapter, alpha, space, &BTreeSet::from([block]))?;
                            pts.push((alpha, based.evaluate(&d)?));
                            bar.inc(1);
                        }
                        // Cumulative scope: blocks 0..=ℓ interpolated, the rest at seed A, for
                        // every ℓ in one pass that shares the interpolated prefix.
                        let all = interpolate(a.adapter, b.adapter, alpha, space)?;
                        for (pts, m) in curves[1].iter_mut().zip(based.prefix_sweep(&all, &base)?) {
                            pts.push((alpha, m));
                            bar.inc(1);
                        }
                    }
                    for (scope, per_block) in ["single", "cumulative"].into_iter().zip(&curves) {
                        for (block, pts) in per_block.iter().enumerate() {
                            for q in ["loss", "error"] {
                                bars.push(
                                    method,
                                    pair,
                                    space,
                                    "test",
                                    q,
                                    scope,
                                    block as i64,
                                    barriers(&curve(pts, q))?,
                                );
                            }
                        }
                    }
                }
            }
        }
        bar.finish_and_clear();
        // Equal-weight merge of all seeds (CoTo's 1:1:1), both spaces.
        let mut merge_acc = BTreeMap::new();
        if mine.len() >= 3 {
            for &space in &opts.spaces {
                let d = equal_merge(&mine, space)?;
                for (split, ev) in splits {
                    let m = ev.evaluate(&d)?;
                    merges.0.push(method.clone());
                    merges.1.push(space.name().to_string());
                    merges.2.push(split.to_string());
                    merges.3.push(mine.len() as i64);
                    merges.4.push(m.loss);
                    merges.5.push(m.accuracy);
                    if split == "test" {
                        merge_acc.insert(space, m.accuracy);
                    }
                }
            }
        }
        for &space in &opts.spaces {
            let sel = |q: &str| -> Vec<f64> {
                (0..bars.method.len())
                    .filter(|&k| {
                        &bars.method[k] == method
                            && bars.space[k] == space.name()
                            && bars.split[k] == "test"
                            && bars.quantity[k] == q
                            && bars.scope[k] == "all"
                    })
                    .map(|k| bars.b[k].linear)
                    .collect()
            };
            let acc_at = |alpha: f64| -> Vec<f64> {
                (0..paths.method.len())
                    .filter(|&k| {
                        &paths.method[k] == method
                            && paths.space[k] == space.name()
                            && paths.split[k] == "test"
                            && (paths.alpha[k] - alpha).abs() < 1e-9
                    })
                    .map(|k| paths.accuracy[k])
                    .collect()
            };
            let mean = |v: Vec<f64>| v.iter().sum::<f64>() / v.len().max(1) as f64;
            let mid = if grid.iter().any(|a| (a - 0.5).abs() < 1e-9) { mean(acc_at(0.5)) } else { f64::NAN };
            let ends = (mean(acc_at(0.0)) + mean(acc_at(1.0))) / 2.0;
            summaries.push(Summary {
                method: method.clone(),
                space,
                loss_barrier: mean(sel("loss")),
                error_barrier: mean(sel("error")),
                midpoint_accuracy: mid,
                endpoint_accuracy: ends,
                merge_all_accuracy: merge_acc.get(&space).copied(),
            });
        }
    }
    let mut out = Outputs::default();
    out.figures.push(("connectivity_paths.svg".into(), paths_figure(&paths, &opts.spaces)?));
    out.figures.push(("connectivity_barriers.svg".into(), barrier_figure(&bars, &methods, &opts.spaces)?));
    if opts.layerwise {
        for scope in ["single", "cumulative"] {
            out.figures.push((
                format!("connectivity_layerwise_{scope}.svg"),
                layer_figure(&bars, &methods, &opts.spaces, scope)?,
            ));
        }
    }
    let mut t = Table::new();
    t.str_col("method", paths.method.clone())
        .i64_col("seed_a", paths.seed_a.clone())
        .i64_col("seed_b", paths.seed_b.clone())
        .str_col("space", paths.space.clone())
        .f64_col("alpha", paths.alpha.clone())
        .str_col("split", paths.split.clone())
        .f64_col("loss", paths.loss.clone())
        .f64_col("accuracy", paths.accuracy.clone());
    out.tables.push(("connectivity_paths.parquet".into(), t));
    out.tables.push(("connectivity_barriers.parquet".into(), bars.table()));
    out.tables.push(("connectivity_barrier_ci.parquet".into(), ci_table(&bars)?));
    let mut t = Table::new();
    t.str_col("method", dist.0)
        .i64_col("seed_a", dist.1)
        .i64_col("seed_b", dist.2)
        .str_col("space", dist.3)
        .i64_col("block", dist.4)
        .f64_col("euclidean", dist.5)
        .f64_col("cosine", dist.6);
    out.tables.push(("connectivity_distances.parquet".into(), t));
    if !merges.0.is_empty() {
        let mut t = Table::new();
        t.str_col("method", merges.0)
            .str_col("space", merges.1)
            .str_col("split", merges.2)
            .i64_col("n_seeds", merges.3)
            .f64_col("loss", merges.4)
            .f64_col("accuracy", merges.5);
        out.tables.push(("connectivity_merge_all.parquet".into(), t));
    }
    Ok((out, summaries))
}

/// Equal-weight merge of every run of one method: factor averages of A and B, or ΔW average.
fn equal_merge(runs: &[&SeedRun], space: Space) -> Result<Deltas> {
    // Averaging k adapters equals the midpoint path repeatedly: do it directly.
    let k = runs.len() as f32;
    match space {
        Space::Delta => {
            let mut acc: Deltas = Deltas::new();
            for r in runs {
                for (key, d) in adapter_deltas(r.adapter) {
                    let e = acc.entry(key).or_insert_with(|| crate::linalg::Matrix::zeros(d.rows, d.cols));
                    *e = e.add(&d.scale(1.0 / k));
                }
            }
            Ok(acc)
        }
        Space::Factor => {
            let mut avg = runs[0].adapter.clone();
            for (key, f) in avg.modules.iter_mut() {
                let mut a = crate::linalg::Matrix::zeros(f.a.rows, f.a.cols);
                let mut b = crate::linalg::Matrix::zeros(f.b.rows, f.b.cols);
                for r in runs {
                    let g = r
                        .adapter
                        .modules
                        .get(key)
                        .ok_or_else(|| anyhow::anyhow!("module {key} missing in seed {}", r.seed))?;
                    if g.a.shape() != f.a.shape() || g.b.shape() != f.b.shape() {
                        bail!("module {key}: ranks differ between seeds; factor averaging needs equal ranks");
                    }
                    a = a.add(&g.a.scale(1.0 / k));
                    b = b.add(&g.b.scale(1.0 / k));
                }
                f.a = a;
                f.b = b;
            }
            Ok(adapter_deltas(&avg))
        }
    }
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

/// Grouping key of barrier rows: method, space, split, quantity, scope, block.
type BarrierKey = (String, String, String, String, String, i64);

/// Mean and Student-t 95% CI over seed pairs of every barrier convention.
fn ci_table(bars: &BarrierRows) -> Result<Table> {
    let mut groups: BTreeMap<BarrierKey, Vec<usize>> = BTreeMap::new();
    for k in 0..bars.method.len() {
        groups
            .entry((
                bars.method[k].clone(),
                bars.space[k].clone(),
                bars.split[k].clone(),
                bars.quantity[k].clone(),
                bars.scope[k].clone(),
                bars.block[k],
            ))
            .or_default()
            .push(k);
    }
    let mut keys: Vec<BarrierKey> = Vec::new();
    let (mut conv, mut n, mut mean, mut lo, mut hi) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((m, s, sp, q, sc, blk), idx) in groups {
        for (name, _, f) in BARRIER_FIELDS {
            let xs: Vec<f64> = idx.iter().map(|&k| f(&bars.b[k])).collect();
            let ci = mean_ci(&xs)?;
            keys.push((m.clone(), s.clone(), sp.clone(), q.clone(), sc.clone(), blk));
            conv.push(name.to_string());
            n.push(xs.len() as i64);
            mean.push(ci.mean);
            lo.push(ci.lo);
            hi.push(ci.hi);
        }
    }
    let mut t = Table::new();
    let col = |f: fn(&BarrierKey) -> String| keys.iter().map(f).collect::<Vec<String>>();
    t.str_col("method", col(|k| k.0.clone()))
        .str_col("space", col(|k| k.1.clone()))
        .str_col("split", col(|k| k.2.clone()))
        .str_col("quantity", col(|k| k.3.clone()))
        .str_col("scope", col(|k| k.4.clone()))
        .i64_col("block", keys.iter().map(|k| k.5).collect())
        .str_col("convention", conv)
        .i64_col("n_pairs", n)
        .f64_col("mean", mean)
        .f64_col("ci95_lo", lo)
        .f64_col("ci95_hi", hi);
    Ok(t)
}

fn paths_figure(p: &PathRows, spaces: &[Space]) -> Result<String> {
    let mut panels = Vec::new();
    for (metric, label) in [("accuracy", "test accuracy"), ("loss", "test loss")] {
        for &space in spaces {
            let mut methods: Vec<String> = p.method.clone();
            methods.dedup();
            let mut series = Vec::new();
            for m in &methods {
                let mut by_alpha: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
                for k in 0..p.method.len() {
                    if &p.method[k] == m && p.space[k] == space.name() && p.split[k] == "test" {
                        let v = if metric == "accuracy" { p.accuracy[k] } else { p.loss[k] };
                        by_alpha.entry((p.alpha[k] * 1e6).round() as i64).or_default().push(v);
                    }
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

fn barrier_figure(b: &BarrierRows, methods: &[String], spaces: &[Space]) -> Result<String> {
    let mut groups = Vec::new();
    for (_, name, f) in BARRIER_FIELDS {
        let mut bars_v = Vec::new();
        for m in methods {
            for &s in spaces {
                let xs: Vec<f64> = (0..b.method.len())
                    .filter(|&k| {
                        &b.method[k] == m
                            && b.space[k] == s.name()
                            && b.split[k] == "test"
                            && b.quantity[k] == "error"
                            && b.scope[k] == "all"
                    })
                    .map(|k| f(&b.b[k]))
                    .collect();
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

fn layer_figure(b: &BarrierRows, methods: &[String], spaces: &[Space], scope: &str) -> Result<String> {
    let nb = b.block.iter().cloned().max().unwrap_or(-1) + 1;
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for m in methods {
        for &s in spaces {
            let mut row = Vec::new();
            for blk in 0..nb {
                let xs: Vec<f64> = (0..b.method.len())
                    .filter(|&k| {
                        &b.method[k] == m
                            && b.space[k] == s.name()
                            && b.quantity[k] == "error"
                            && b.scope[k] == scope
                            && b.block[k] == blk
                    })
                    .map(|k| b.b[k].linear)
                    .collect();
                row.push(xs.iter().sum::<f64>() / xs.len().max(1) as f64);
            }
            rows.push(row);
            labels.push(format!("{m} ({})", s.name()));
        }
    }
    let what = if scope == "single" { "only block ℓ interpolated" } else { "blocks 0..ℓ interpolated" };
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
