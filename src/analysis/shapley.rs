//! Per-layer Shapley analysis of trained adapters: exact values (prefix walk),
//! sampling estimates at an equal evaluation budget, their convergence against
//! exact, every evaluated coalition, and the multilinear extension F(q).

use super::layer_game::{GameValue, LayerGame};
use super::Outputs;
use crate::adapter::{group_label, Adapter, Grouping};
use crate::eval::Evaluator;
use crate::report::plot::{Bar, BarGroup, BarPlot, LinePlot, Series};
use crate::report::table::Table;
use crate::shapley::{self, coalition, EstimateConfig, Estimator, Game, Memo, ShapleyEstimate, TableGame};
use crate::train::Method;
use anyhow::Result;
use std::time::Instant;

/// Options of the Shapley analysis.
#[derive(Clone, Debug)]
pub struct ShapleyOptions {
    /// Evaluation budget of each sampling estimator (distinct coalition evaluations of v).
    pub budget: usize,
    /// The estimators reported per player.
    pub estimators: Vec<Estimator>,
    /// Seed of the estimators.
    pub seed: u64,
    /// Players: one per block or one per module.
    pub grouping: Grouping,
    /// v(S) = accuracy or −loss.
    pub value: GameValue,
    /// Repetitions (seeds) per budget in the convergence study.
    pub repetitions: usize,
    /// Precision@k's k.
    pub top_k: usize,
    /// Optional early-stopping target (max SE / value range).
    pub target_precision: Option<f64>,
}

/// One method's adapter to value.
pub struct ShapleyInput<'a> {
    /// Method name.
    pub method: String,
    /// Task name.
    pub task: String,
    /// Run seed.
    pub run_seed: u64,
    /// The trained adapter.
    pub adapter: &'a Adapter,
    /// Every coalition's value when already known (e.g. cached in the run folder); it must
    /// come from the same game (evaluator, grouping, value). `None`: enumerated when n ≤ 20.
    pub table: Option<Vec<f64>>,
}

/// A per-method summary, for the command's printout and the closing note.
#[derive(Clone, Debug)]
pub struct MethodSummary {
    /// Method name.
    pub method: String,
    /// Player labels.
    pub players: Vec<String>,
    /// Exact values when n ≤ 20.
    pub exact: Option<Vec<f64>>,
    /// The estimates at the requested budget.
    pub estimates: Vec<ShapleyEstimate>,
    /// v(∅) and v(N).
    pub v_empty: f64,
    /// v(N).
    pub v_full: f64,
    /// Seconds spent evaluating coalitions with the model.
    pub eval_seconds: f64,
    /// Coalitions evaluated with the model.
    pub model_evaluations: usize,
}

/// Budgets of the convergence study: powers of two from the smallest that pays for one
/// sample of every estimator up to 2^n.
fn convergence_budgets(n: usize, estimators: &[Estimator]) -> Vec<usize> {
    let min = estimators.iter().map(|e| e.min_budget(n)).max().unwrap_or(1).max(1);
    let mut b = min.next_power_of_two();
    let mut out = Vec::new();
    while b <= 1usize << n.min(20) {
        out.push(b);
        b *= 2;
    }
    out
}

/// The sampling estimators compared in the convergence study, by registry name.
pub const STUDY_ESTIMATORS: &str =
    "permutation,permutation-antithetic,owen-stratified,owen-stratified-antithetic,owen-midpoint,owen-grid";

/// Every sampling estimator variant compared in the convergence study.
pub fn study_estimators() -> Result<Vec<Estimator>> {
    Estimator::parse_list(STUDY_ESTIMATORS)
}

/// Exact values (n ≤ 20), every evaluated coalition with its value, the estimates, and the
/// number of coalitions evaluated with the model.
type GameOutcome = (Option<Vec<f64>>, Vec<(u64, f64)>, Vec<ShapleyEstimate>, usize);

/// Runs the analysis for each input; returns tables, figures and summaries.
pub fn analyze(
    evaluator: &Evaluator,
    inputs: &[ShapleyInput],
    opts: &ShapleyOptions,
) -> Result<(Outputs, Vec<MethodSummary>)> {
    let mut t = Tables::default();
    let mut summaries = Vec::new();
    for input in inputs {
        summaries.push(value_input(evaluator, input, opts, &mut t)?);
    }
    let mut out = Outputs::default();
    out.figures.push(("shapley_values.svg".into(), values_figure(&summaries)?));
    if !t.conv.method.is_empty() {
        out.figures.push(("shapley_convergence.svg".into(), convergence_figure(&t.conv)?));
    }
    out.figures.push(("shapley_efficiency.svg".into(), efficiency_figure(&t.eff)?));
    out.figures.push(("multilinear_extension.svg".into(), mle_figure(&t.mle)?));
    out.tables.push(("shapley_values.parquet".into(), t.values.table()));
    out.tables.push(("shapley_convergence.parquet".into(), t.conv.table()));
    out.tables.push(("shapley_coalitions.parquet".into(), t.coal.table()));
    out.tables.push(("multilinear_extension.parquet".into(), t.mle.table()));
    out.tables.push(("shapley_efficiency.parquet".into(), t.eff.table()));
    Ok((out, summaries))
}

/// The rows of every table of the analysis.
#[derive(Default)]
struct Tables {
    /// Per-player values.
    values: Rows,
    /// Convergence against exact.
    conv: ConvRows,
    /// Evaluated coalitions.
    coal: CoalRows,
    /// The multilinear extension.
    mle: MleRows,
    /// Efficiency (sum of values against v(N) − v(∅)).
    eff: EffRows,
}

/// Values one input's layer game, appends its rows to `t` and returns its summary.
fn value_input(
    evaluator: &Evaluator,
    input: &ShapleyInput,
    opts: &ShapleyOptions,
    t: &mut Tables,
) -> Result<MethodSummary> {
    let game = LayerGame::new(evaluator, input.adapter, opts.grouping, opts.value, &input.method)?;
    let n = game.n_players();
    let players: Vec<String> =
        game.groups().iter().map(|g| group_label(g, opts.grouping, evaluator.backbone())).collect();
    let started = Instant::now();
    let (exact, evaluated, estimates, model_evals) = play(&game, input, opts)?;
    let eval_seconds = started.elapsed().as_secs_f64();
    let v_empty = game.evaluate(&[0])?[0];
    let v_full = game.evaluate(&[coalition::grand(n)])?[0];
    // Per-player values.
    if let Some(ex) = &exact {
        for (i, v) in ex.iter().enumerate() {
            t.values.push(input, i, &players[i], "exact", *v, 0.0, 1 << n, 0, Some(*v));
        }
        t.eff.push(&input.method, "exact", ex.iter().sum(), v_full - v_empty);
    }
    for est in &estimates {
        for i in 0..n {
            let exact_i = exact.as_ref().map(|e| e[i]);
            t.values.push(
                input,
                i,
                &players[i],
                &est.estimator,
                est.values[i],
                est.std_errors[i],
                est.evaluations,
                est.samples,
                exact_i,
            );
        }
        t.eff.push(&input.method, &est.estimator, est.values.iter().sum(), v_full - v_empty);
    }
    // Coalitions and the multilinear extension.
    for (c, v) in &evaluated {
        t.coal.push(&input.method, *c, *v);
    }
    if let Some(ex) = &exact {
        let table_values: Vec<f64> = evaluated.iter().map(|(_, v)| *v).collect();
        for j in 0..=20 {
            let q = j as f64 / 20.0;
            t.mle.push(&input.method, q, shapley::multilinear_extension(&table_values, n, q)?, 0.0, "exact");
        }
        convergence(&input.method, table_values, ex, opts, &mut t.conv)?;
    } else {
        let points = shapley::mle_sampled(&game, &[0.0, 0.25, 0.5, 0.75, 1.0], 8, opts.seed)?;
        for p in points {
            t.mle.push(&input.method, p.q, p.mean, p.std_error, "sampled");
        }
    }
    Ok(MethodSummary {
        method: input.method.clone(),
        players,
        exact,
        estimates,
        v_empty,
        v_full,
        eval_seconds,
        model_evaluations: model_evals,
    })
}

/// Plays the game. Exact (n ≤ 20): enumerate every coalition by the prefix walk (or take the
/// input's known table), then let the estimators replay that table (identical values, no model
/// cost). Otherwise the estimators evaluate the model live, each through its own budgeted memo.
fn play(game: &LayerGame, input: &ShapleyInput, opts: &ShapleyOptions) -> Result<GameOutcome> {
    let n = game.n_players();
    if super::exact_shapley(n) {
        let known = input.table.as_ref().filter(|t| t.len() == 1usize << n);
        let table = match known {
            Some(t) => t.clone(),
            None => game.enumerate_all()?,
        };
        let exact = shapley::shapley_from_table(&table, n)?;
        let replay = TableGame::new(n, table.clone())?;
        let est = run_estimators(&replay, opts)?;
        let evaluated = table.iter().enumerate().map(|(c, v)| (c as u64, *v)).collect();
        Ok((Some(exact), evaluated, est, if known.is_some() { 0 } else { 1usize << n }))
    } else {
        let mut seen = std::collections::BTreeMap::new();
        let mut est = Vec::new();
        for e in &opts.estimators {
            let cfg = config_for(e, opts, opts.seed);
            let memo = Memo::new(game, cfg.memo_budget());
            est.push(shapley::estimate_with_memo(&memo, &cfg)?);
            seen.extend(memo.cached());
        }
        let evals = seen.len();
        Ok((None, seen.into_iter().collect(), est, evals))
    }
}

/// Convergence of every study estimator against the exact values `exact`, on the game replayed
/// from its coalition table, at every budget and repetition.
fn convergence(
    method: &str,
    table_values: Vec<f64>,
    exact: &[f64],
    opts: &ShapleyOptions,
    conv: &mut ConvRows,
) -> Result<()> {
    let n = exact.len();
    let replay = TableGame::new(n, table_values)?;
    let k = opts.top_k.min(n);
    let study = study_estimators()?;
    for e in &study {
        for budget in convergence_budgets(n, &study) {
            for rep in 0..opts.repetitions as u64 {
                let est = shapley::estimate(&replay, &EstimateConfig::new(e.clone(), budget, rep))?;
                conv.push(
                    method,
                    &est.estimator,
                    budget,
                    rep,
                    est.evaluations,
                    shapley::mse(&est.values, exact)?,
                    shapley::max_abs_error(&est.values, exact)?,
                    shapley::kendall_tau(&est.values, exact)?,
                    shapley::precision_at_k(&est.values, exact, k)?,
                    k,
                );
            }
        }
    }
    Ok(())
}

fn config_for(e: &Estimator, opts: &ShapleyOptions, seed: u64) -> EstimateConfig {
    let cfg = EstimateConfig::new(e.clone(), opts.budget, seed);
    match opts.target_precision {
        Some(t) => cfg.with_target_precision(t),
        None => cfg,
    }
}

fn run_estimators(game: &dyn Game, opts: &ShapleyOptions) -> Result<Vec<ShapleyEstimate>> {
    opts.estimators.iter().map(|e| shapley::estimate(game, &config_for(e, opts, opts.seed))).collect()
}

#[derive(Default)]
struct Rows {
    method: Vec<String>,
    task: Vec<String>,
    run_seed: Vec<i64>,
    player: Vec<i64>,
    label: Vec<String>,
    estimator: Vec<String>,
    value: Vec<f64>,
    se: Vec<f64>,
    evals: Vec<i64>,
    samples: Vec<i64>,
    exact: Vec<Option<f64>>,
}

impl Rows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        input: &ShapleyInput,
        player: usize,
        label: &str,
        estimator: &str,
        value: f64,
        se: f64,
        evals: usize,
        samples: usize,
        exact: Option<f64>,
    ) {
        self.method.push(input.method.clone());
        self.task.push(input.task.clone());
        self.run_seed.push(input.run_seed as i64);
        self.player.push(player as i64);
        self.label.push(label.to_string());
        self.estimator.push(estimator.to_string());
        self.value.push(value);
        self.se.push(se);
        self.evals.push(evals as i64);
        self.samples.push(samples as i64);
        self.exact.push(exact);
    }

    fn table(self) -> Table {
        let mut t = Table::new();
        t.str_col("method", self.method)
            .str_col("task", self.task)
            .i64_col("run_seed", self.run_seed)
            .i64_col("player", self.player)
            .str_col("player_label", self.label)
            .str_col("estimator", self.estimator)
            .f64_col("value", self.value)
            .f64_col("std_error", self.se)
            .i64_col("evaluations", self.evals)
            .i64_col("samples", self.samples)
            .opt_f64_col("exact_value", self.exact);
        t
    }
}

#[derive(Default)]
struct ConvRows {
    method: Vec<String>,
    estimator: Vec<String>,
    budget: Vec<i64>,
    rep: Vec<i64>,
    evals: Vec<i64>,
    mse: Vec<f64>,
    max_err: Vec<f64>,
    tau: Vec<f64>,
    prec: Vec<f64>,
    k: Vec<i64>,
}

impl ConvRows {
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        method: &str,
        estimator: &str,
        budget: usize,
        rep: u64,
        evals: usize,
        mse: f64,
        max_err: f64,
        tau: f64,
        prec: f64,
        k: usize,
    ) {
        self.method.push(method.into());
        self.estimator.push(estimator.into());
        self.budget.push(budget as i64);
        self.rep.push(rep as i64);
        self.evals.push(evals as i64);
        self.mse.push(mse);
        self.max_err.push(max_err);
        self.tau.push(tau);
        self.prec.push(prec);
        self.k.push(k as i64);
    }

    fn table(self) -> Table {
        let mut t = Table::new();
        t.str_col("method", self.method)
            .str_col("estimator", self.estimator)
            .i64_col("budget", self.budget)
            .i64_col("repetition_seed", self.rep)
            .i64_col("evaluations", self.evals)
            .f64_col("mse", self.mse)
            .f64_col("max_error", self.max_err)
            .f64_col("kendall_tau", self.tau)
            .f64_col("precision_at_k", self.prec)
            .i64_col("k", self.k);
        t
    }
}

#[derive(Default)]
struct CoalRows {
    method: Vec<String>,
    mask: Vec<i64>,
    blocks: Vec<Vec<i64>>,
    size: Vec<i64>,
    value: Vec<f64>,
}

impl CoalRows {
    fn push(&mut self, method: &str, c: u64, v: f64) {
        self.method.push(method.into());
        self.mask.push(c as i64);
        self.blocks.push(coalition::to_vec(c).into_iter().map(|b| b as i64).collect());
        self.size.push(coalition::size(c) as i64);
        self.value.push(v);
    }

    fn table(self) -> Table {
        let mut t = Table::new();
        t.str_col("method", self.method)
            .i64_col("coalition", self.mask)
            .list_i64_col("players", self.blocks)
            .i64_col("size", self.size)
            .f64_col("value", self.value);
        t
    }
}

#[derive(Default)]
struct MleRows {
    method: Vec<String>,
    q: Vec<f64>,
    f: Vec<f64>,
    se: Vec<f64>,
    source: Vec<String>,
}

impl MleRows {
    fn push(&mut self, method: &str, q: f64, f: f64, se: f64, source: &str) {
        self.method.push(method.into());
        self.q.push(q);
        self.f.push(f);
        self.se.push(se);
        self.source.push(source.into());
    }

    fn table(self) -> Table {
        let mut t = Table::new();
        t.str_col("method", self.method)
            .f64_col("q", self.q)
            .f64_col("value", self.f)
            .f64_col("std_error", self.se)
            .str_col("source", self.source);
        t
    }
}

#[derive(Default)]
struct EffRows {
    method: Vec<String>,
    estimator: Vec<String>,
    sum: Vec<f64>,
    target: Vec<f64>,
}

impl EffRows {
    fn push(&mut self, method: &str, estimator: &str, sum: f64, target: f64) {
        self.method.push(method.into());
        self.estimator.push(estimator.into());
        self.sum.push(sum);
        self.target.push(target);
    }

    fn table(self) -> Table {
        let gap: Vec<f64> = self.sum.iter().zip(&self.target).map(|(s, t)| s - t).collect();
        let mut t = Table::new();
        t.str_col("method", self.method)
            .str_col("estimator", self.estimator)
            .f64_col("sum_of_values", self.sum)
            .f64_col("v_full_minus_v_empty", self.target)
            .f64_col("gap", gap);
        t
    }
}

fn values_figure(summaries: &[MethodSummary]) -> Result<String> {
    let n = summaries.first().map(|s| s.players.len()).unwrap_or(0);
    let mut groups = Vec::new();
    for i in 0..n {
        let mut bars = Vec::new();
        for s in summaries {
            if let Some(ex) = &s.exact {
                bars.push(Bar { series: format!("{} exact", s.method), value: ex[i], err: None });
            }
            for e in &s.estimates {
                let (v, se) = (e.values[i], e.std_errors[i]);
                bars.push(Bar {
                    series: format!("{} {}", s.method, e.estimator),
                    value: v,
                    err: Some((v - se, v + se)),
                });
            }
        }
        groups.push(BarGroup { label: summaries[0].players[i].clone(), bars });
    }
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: "Per-layer Shapley values (v = test accuracy; error bars ±1 SE)".into(),
        x_label: "player (LoRA group)".into(),
        y_label: "Shapley value".into(),
        groups,
        ..Default::default()
    })
}

fn convergence_figure(c: &ConvRows) -> Result<String> {
    let mut series = Vec::new();
    let mut keys: Vec<(String, String)> = c.method.iter().cloned().zip(c.estimator.iter().cloned()).collect();
    keys.sort();
    keys.dedup();
    for (m, e) in keys {
        let mut by_budget: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for i in 0..c.method.len() {
            if c.method[i] == m && c.estimator[i] == e {
                by_budget.entry(c.budget[i]).or_default().push(c.mse[i]);
            }
        }
        let points: Vec<(f64, f64)> = by_budget
            .into_iter()
            .map(|(b, v)| (b as f64, v.iter().sum::<f64>() / v.len() as f64))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        if !points.is_empty() {
            series.push(Series {
                label: format!("{m} {e}"),
                points,
                band: None,
                dashed: m != Method::Lora.name(),
                ..Default::default()
            });
        }
    }
    crate::report::plot::line_plot_svg(&LinePlot {
        title: "Estimator convergence: mean squared error against exact Shapley values".into(),
        x_label: "budget (coalition evaluations)".into(),
        y_label: "MSE (mean over repetitions)".into(),
        series,
        log_x: true,
        log_y: true,
        reference_y: None,
        ..Default::default()
    })
}

fn efficiency_figure(e: &EffRows) -> Result<String> {
    let mut methods: Vec<String> = e.method.clone();
    methods.dedup();
    let mut groups = Vec::new();
    for m in methods {
        let mut bars = Vec::new();
        let mut target = 0.0;
        for i in 0..e.method.len() {
            if e.method[i] == m {
                bars.push(Bar { series: format!("Σφ {}", e.estimator[i]), value: e.sum[i], err: None });
                target = e.target[i];
            }
        }
        bars.push(Bar { series: "v(N) − v(∅)".into(), value: target, err: None });
        groups.push(BarGroup { label: m, bars });
    }
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: "Efficiency check: sum of Shapley values against v(N) − v(∅)".into(),
        x_label: "method".into(),
        y_label: "accuracy points (fraction)".into(),
        groups,
        ..Default::default()
    })
}

fn mle_figure(m: &MleRows) -> Result<String> {
    let mut methods: Vec<String> = m.method.clone();
    methods.dedup();
    let series = methods
        .iter()
        .map(|name| Series {
            label: name.clone(),
            points: (0..m.method.len()).filter(|i| &m.method[*i] == name).map(|i| (m.q[i], m.f[i])).collect(),
            band: None,
            dashed: false,
            ..Default::default()
        })
        .collect();
    crate::report::plot::line_plot_svg(&LinePlot {
        title: "Multilinear extension F(q) = E[v(S)], S ~ Bernoulli(q) per player (CopRA's objective at p = q)".into(),
        x_label: "q (participation probability)".into(),
        y_label: "F(q) (test accuracy)".into(),
        series,
        log_x: false,
        log_y: false,
        reference_y: None,
        ..Default::default()
    })
}
