//! Per-layer Shapley analysis of trained adapters: exact values (prefix walk),
//! sampling estimates at an equal evaluation budget, their convergence against
//! exact, every evaluated coalition, and the multilinear extension F(q).

use super::layer_game::{GameValue, LayerGame};
use super::Outputs;
use crate::adapter::{group_label, Adapter, Grouping};
use crate::eval::Evaluator;
use crate::report::plot::{Bar, BarGroup, BarPlot, LinePlot, Series};
use crate::report::table::{table_row, Table};
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
    if !t.conv.is_empty() {
        out.figures.push(("shapley_convergence.svg".into(), convergence_figure(&t.conv)?));
    }
    out.figures.push(("shapley_efficiency.svg".into(), efficiency_figure(&t.eff)?));
    out.figures.push(("multilinear_extension.svg".into(), mle_figure(&t.mle)?));
    out.tables.push(("shapley_values.parquet".into(), Table::from_rows(&t.values)));
    out.tables.push(("shapley_convergence.parquet".into(), Table::from_rows(&t.conv)));
    out.tables.push(("shapley_coalitions.parquet".into(), Table::from_rows(&t.coal)));
    out.tables.push(("multilinear_extension.parquet".into(), Table::from_rows(&t.mle)));
    out.tables.push(("shapley_efficiency.parquet".into(), Table::from_rows(&t.eff)));
    Ok((out, summaries))
}

/// The rows of every table of the analysis.
#[derive(Default)]
struct Tables {
    /// Per-player values.
    values: Vec<ValueRow>,
    /// Convergence against exact.
    conv: Vec<ConvergenceRow>,
    /// Evaluated coalitions.
    coal: Vec<CoalitionRow>,
    /// The multilinear extension.
    mle: Vec<MleRow>,
    /// Efficiency (sum of values against v(N) − v(∅)).
    eff: Vec<EfficiencyRow>,
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
    let value_row = |i: usize, estimator: &str, value: f64, std_error: f64, evals: usize, samples: usize| ValueRow {
        method: input.method.clone(),
        task: input.task.clone(),
        run_seed: input.run_seed as i64,
        player: i as i64,
        player_label: players[i].clone(),
        estimator: estimator.to_string(),
        value,
        std_error,
        evaluations: evals as i64,
        samples: samples as i64,
        exact_value: exact.as_ref().map(|e| e[i]),
    };
    if let Some(ex) = &exact {
        for (i, v) in ex.iter().enumerate() {
            t.values.push(value_row(i, "exact", *v, 0.0, 1 << n, 0));
        }
        t.eff.push(EfficiencyRow::new(&input.method, "exact", ex.iter().sum(), v_full - v_empty));
    }
    for est in &estimates {
        for i in 0..n {
            let row = value_row(i, &est.estimator, est.values[i], est.std_errors[i], est.evaluations, est.samples);
            t.values.push(row);
        }
        t.eff.push(EfficiencyRow::new(&input.method, &est.estimator, est.values.iter().sum(), v_full - v_empty));
    }
    // Coalitions and the multilinear extension.
    t.coal.extend(evaluated.iter().map(|(c, v)| CoalitionRow::new(&input.method, *c, *v)));
    if let Some(ex) = &exact {
        let table_values: Vec<f64> = evaluated.iter().map(|(_, v)| *v).collect();
        for j in 0..=20 {
            let q = j as f64 / 20.0;
            let value = shapley::multilinear_extension(&table_values, n, q)?;
            t.mle.push(MleRow { method: input.method.clone(), q, value, std_error: 0.0, source: "exact".into() });
        }
        convergence(&input.method, table_values, ex, opts, &mut t.conv)?;
    } else {
        let points = shapley::mle_sampled(&game, &[0.0, 0.25, 0.5, 0.75, 1.0], 8, opts.seed)?;
        for p in points {
            t.mle.push(MleRow {
                method: input.method.clone(),
                q: p.q,
                value: p.mean,
                std_error: p.std_error,
                source: "sampled".into(),
            });
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
    conv: &mut Vec<ConvergenceRow>,
) -> Result<()> {
    let n = exact.len();
    let replay = TableGame::new(n, table_values)?;
    let k = opts.top_k.min(n);
    let study = study_estimators()?;
    for e in &study {
        for budget in convergence_budgets(n, &study) {
            for rep in 0..opts.repetitions as u64 {
                let est = shapley::estimate(&replay, &EstimateConfig::new(e.clone(), budget, rep))?;
                conv.push(ConvergenceRow {
                    method: method.to_string(),
                    estimator: est.estimator.clone(),
                    budget: budget as i64,
                    repetition_seed: rep as i64,
                    evaluations: est.evaluations as i64,
                    mse: shapley::mse(&est.values, exact)?,
                    max_error: shapley::max_abs_error(&est.values, exact)?,
                    kendall_tau: shapley::kendall_tau(&est.values, exact)?,
                    precision_at_k: shapley::precision_at_k(&est.values, exact, k)?,
                    k: k as i64,
                });
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

table_row! {
    /// One player's value by one estimator: a row of `shapley_values.parquet`.
    pub struct ValueRow {
        /// Method name.
        pub method: String,
        /// Task name.
        pub task: String,
        /// Run seed.
        pub run_seed: i64,
        /// Player index.
        pub player: i64,
        /// Player label (block or module).
        pub player_label: String,
        /// `exact` or the estimator's name.
        pub estimator: String,
        /// The value.
        pub value: f64,
        /// Its standard error (0 for exact).
        pub std_error: f64,
        /// Coalition evaluations spent.
        pub evaluations: i64,
        /// Samples drawn.
        pub samples: i64,
        /// The exact value when known (n ≤ 20).
        pub exact_value: Option<f64>,
    }
}

table_row! {
    /// One estimate against exact at one budget: a row of `shapley_convergence.parquet`.
    pub struct ConvergenceRow {
        /// Method name.
        pub method: String,
        /// Estimator name.
        pub estimator: String,
        /// Evaluation budget.
        pub budget: i64,
        /// Seed of the repetition.
        pub repetition_seed: i64,
        /// Coalition evaluations spent.
        pub evaluations: i64,
        /// Mean squared error against exact.
        pub mse: f64,
        /// Largest absolute error against exact.
        pub max_error: f64,
        /// Kendall's τ between the estimate and exact.
        pub kendall_tau: f64,
        /// Precision@k of the top players.
        pub precision_at_k: f64,
        /// The k of precision@k.
        pub k: i64,
    }
}

table_row! {
    /// One evaluated coalition: a row of `shapley_coalitions.parquet`.
    pub struct CoalitionRow {
        /// Method name.
        pub method: String,
        /// The coalition as a bitmask over players.
        pub coalition: i64,
        /// Its players.
        pub players: Vec<i64>,
        /// Its size.
        pub size: i64,
        /// Its value v(S).
        pub value: f64,
    }
}

impl CoalitionRow {
    /// The row of coalition `c` of `method`'s game with value `v`.
    fn new(method: &str, c: u64, v: f64) -> Self {
        CoalitionRow {
            method: method.into(),
            coalition: c as i64,
            players: coalition::to_vec(c).into_iter().map(|b| b as i64).collect(),
            size: coalition::size(c) as i64,
            value: v,
        }
    }
}

table_row! {
    /// One point of the multilinear extension: a row of `multilinear_extension.parquet`.
    pub struct MleRow {
        /// Method name.
        pub method: String,
        /// Participation probability q.
        pub q: f64,
        /// F(q).
        pub value: f64,
        /// Its standard error (0 when exact).
        pub std_error: f64,
        /// `exact` or `sampled`.
        pub source: String,
    }
}

table_row! {
    /// The efficiency check of one estimator: a row of `shapley_efficiency.parquet`.
    pub struct EfficiencyRow {
        /// Method name.
        pub method: String,
        /// `exact` or the estimator's name.
        pub estimator: String,
        /// Σ of the player values.
        pub sum_of_values: f64,
        /// v(N) − v(∅).
        pub v_full_minus_v_empty: f64,
        /// `sum_of_values − v_full_minus_v_empty`.
        pub gap: f64,
    }
}

impl EfficiencyRow {
    /// The row of `estimator`'s values summing to `sum` against `target` = v(N) − v(∅).
    fn new(method: &str, estimator: &str, sum: f64, target: f64) -> Self {
        EfficiencyRow {
            method: method.into(),
            estimator: estimator.into(),
            sum_of_values: sum,
            v_full_minus_v_empty: target,
            gap: sum - target,
        }
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

/// Mean squared error against exact per budget, one line per (method, estimator).
fn convergence_figure(c: &[ConvergenceRow]) -> Result<String> {
    let mut series = Vec::new();
    let mut keys: Vec<(String, String)> = c.iter().map(|r| (r.method.clone(), r.estimator.clone())).collect();
    keys.sort();
    keys.dedup();
    for (m, e) in keys {
        let mut by_budget: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
        for r in c.iter().filter(|r| r.method == m && r.estimator == e) {
            by_budget.entry(r.budget).or_default().push(r.mse);
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

/// Sum of the values of every estimator against v(N) − v(∅), per method.
fn efficiency_figure(e: &[EfficiencyRow]) -> Result<String> {
    let mut methods: Vec<String> = e.iter().map(|r| r.method.clone()).collect();
    methods.dedup();
    let mut groups = Vec::new();
    for m in methods {
        let mut bars = Vec::new();
        let mut target = 0.0;
        for r in e.iter().filter(|r| r.method == m) {
            bars.push(Bar { series: format!("Σφ {}", r.estimator), value: r.sum_of_values, err: None });
            target = r.v_full_minus_v_empty;
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

/// The multilinear extension F(q), one line per method.
fn mle_figure(m: &[MleRow]) -> Result<String> {
    let mut methods: Vec<String> = m.iter().map(|r| r.method.clone()).collect();
    methods.dedup();
    let series = methods
        .iter()
        .map(|name| Series {
            label: name.clone(),
            points: m.iter().filter(|r| &r.method == name).map(|r| (r.q, r.value)).collect(),
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
