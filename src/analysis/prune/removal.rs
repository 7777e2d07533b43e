//! Block-removal curves: blocks are removed one at a time, lowest score first, by Shapley
//! value in the block game of [`LayerGame`], by adapter norm `‖ΔW‖_F`, by leave-one-out value
//! and in random orders; accuracy is recorded against the number of blocks kept. Every
//! coalition value comes through one [`Memo`]: over the full coalition table when it is known
//! (cached or enumerated), over the live game otherwise.

use super::{PruneInput, PruneOptions};
use crate::adapter::{Adapter, Grouping};
use crate::analysis::exact_shapley;
use crate::analysis::layer_game::{GameValue, LayerGame};
use crate::analysis::summary::{ci_series, group_ci};
use crate::eval::Evaluator;
use crate::report::plot::LinePlot;
use crate::report::table::{named_cells, table_row};
use crate::shapley::{
    self, coalition, Coalition, EstimateConfig, Estimator, Game, Memo, PermutationEstimator, TableGame,
};
use crate::stats::MeanCi;
use crate::util::rng_for;
use anyhow::Result;
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet};

/// How blocks are ordered for removal (lowest score removed first).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemovalOrder {
    /// By Shapley value in the layer game (exact for ≤ 20 blocks).
    Shapley,
    /// By adapter norm `sqrt(Σ_modules ‖ΔW‖_F²)` of the block.
    Norm,
    /// By leave-one-out value `v(N) − v(N ∖ {i})`.
    LeaveOneOut,
    /// Uniformly random orders (several, summarised by mean and CI).
    Random,
}

impl RemovalOrder {
    /// Every order, in table order.
    pub const ALL: [RemovalOrder; 4] =
        [RemovalOrder::Shapley, RemovalOrder::Norm, RemovalOrder::LeaveOneOut, RemovalOrder::Random];

    /// Parses `shapley`, `norm`, `leave-one-out` (alias `loo`) or `random`.
    pub fn parse(s: &str) -> Result<RemovalOrder> {
        let t = s.trim().to_ascii_lowercase().replace('_', "-");
        RemovalOrder::ALL
            .into_iter()
            .find(|o| o.name() == t || (t == "loo" && *o == RemovalOrder::LeaveOneOut))
            .ok_or_else(|| anyhow::anyhow!("unknown removal order '{s}': use shapley, norm, leave-one-out or random"))
    }

    /// Name used in tables: `shapley`, `norm`, `leave-one-out`, `random`.
    pub fn name(self) -> &'static str {
        match self {
            RemovalOrder::Shapley => "shapley",
            RemovalOrder::Norm => "norm",
            RemovalOrder::LeaveOneOut => "leave-one-out",
            RemovalOrder::Random => "random",
        }
    }
}

named_cells!(RemovalOrder);

impl std::fmt::Display for RemovalOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Player indices sorted by ascending score (ties: lower index first), i.e. the removal order
/// "lowest value first". Non-finite scores sort last.
pub fn removal_order(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]).then(a.cmp(&b)));
    idx
}

/// One point of a removal curve.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    /// Players (blocks) still kept.
    pub kept: usize,
    /// The player removed to reach this point (`None` for the full adapter).
    pub removed: Option<usize>,
    /// The kept coalition.
    pub coalition: Coalition,
}

/// The coalitions of a removal curve: the grand coalition of `n` players, then each player of
/// `order` removed in turn, down to the empty coalition (`n + 1` points).
pub fn removal_curve(order: &[usize], n: usize) -> Vec<CurvePoint> {
    let mut s = coalition::grand(n);
    let mut out = vec![CurvePoint { kept: n, removed: None, coalition: s }];
    for (k, &p) in order.iter().enumerate() {
        s = coalition::remove(s, p);
        out.push(CurvePoint { kept: n - k - 1, removed: Some(p), coalition: s });
    }
    out
}

/// Per-block scores of one adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockScores {
    /// The block of each player.
    pub blocks: Vec<usize>,
    /// Shapley values (exact or sampled, see `shapley_source`).
    pub shapley: Vec<f64>,
    /// `exact` or the sampling estimator's name.
    pub shapley_source: String,
    /// Adapter norms `sqrt(Σ ‖ΔW‖_F²)`.
    pub norm: Vec<f64>,
    /// Leave-one-out values `v(N) − v(N ∖ {i})`.
    pub leave_one_out: Vec<f64>,
}

impl BlockScores {
    /// The scores behind a (non-random) order.
    pub fn scores(&self, order: RemovalOrder) -> Option<&[f64]> {
        match order {
            RemovalOrder::Shapley => Some(&self.shapley),
            RemovalOrder::Norm => Some(&self.norm),
            RemovalOrder::LeaveOneOut => Some(&self.leave_one_out),
            RemovalOrder::Random => None,
        }
    }
}

/// The full coalition table of `game` the curves read, if known: `cached` when it has `2^n`
/// finite values whose grand and empty coalitions match a fresh evaluation, else the prefix
/// walk's enumeration when the Shapley order is wanted and the game is small enough to be
/// exact ([`exact_shapley`]); `None` otherwise (coalitions are then evaluated on demand).
pub(super) fn known_table(game: &LayerGame, want_shapley: bool, cached: Option<&[f64]>) -> Result<Option<TableGame>> {
    let n = game.n_players();
    let grand = coalition::grand(n);
    if let Some(t) = cached {
        if t.len() == 1usize << n && t.iter().all(|v| v.is_finite()) {
            let fresh = game.evaluate(&[grand, 0])?;
            if t[grand as usize] == fresh[0] && t[0] == fresh[1] {
                return Ok(Some(TableGame::new(n, t.to_vec())?));
            }
        }
    }
    if want_shapley && exact_shapley(n) {
        return Ok(Some(TableGame::new(n, game.enumerate_all()?)?));
    }
    Ok(None)
}

/// The block scores of one adapter. Shapley values are exact when `table` is known, sampled
/// through `memo` (permutation sampling, `opts.shapley_budget` evaluations, seeded by `seed`)
/// when the Shapley order is wanted, and NaN otherwise; leave-one-out values come from `memo`.
pub(super) fn block_scores(
    game: &LayerGame,
    memo: &Memo,
    table: Option<&TableGame>,
    adapter: &Adapter,
    opts: &PruneOptions,
    seed: u64,
) -> Result<BlockScores> {
    let n = game.n_players();
    let blocks: Vec<usize> = game.groups().iter().map(|g| g[0].block).collect();
    let deltas = adapter.deltas();
    let norm: Vec<f64> = game
        .groups()
        .iter()
        .map(|g| g.iter().map(|k| deltas[k].frobenius_norm().powi(2)).sum::<f64>().sqrt())
        .collect();
    let (shapley, shapley_source) = match table {
        Some(t) => (shapley::shapley_from_table(t.values(), n)?, "exact".to_string()),
        None if !opts.orders.contains(&RemovalOrder::Shapley) => (vec![f64::NAN; n], "not computed".to_string()),
        None => {
            let cfg = EstimateConfig::new(Estimator::new(PermutationEstimator::default()), opts.shapley_budget, seed);
            let est = shapley::estimate_with_memo(memo, &cfg)?;
            (est.values, est.estimator)
        }
    };
    let grand = coalition::grand(n);
    let loo_set: Vec<Coalition> = std::iter::once(grand)
        .chain((0..n).map(|i| coalition::remove(grand, i)))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    memo.values(&loo_set)?;
    let v_full = memo.value(grand)?;
    let leave_one_out =
        (0..n).map(|i| Ok(v_full - memo.value(coalition::remove(grand, i))?)).collect::<Result<Vec<f64>>>()?;
    Ok(BlockScores { blocks, shapley, shapley_source, norm, leave_one_out })
}

/// The random removal orders of `n` players: the same for every method and run seed.
pub fn random_orders(n: usize, count: usize, seed: u64) -> Vec<Vec<usize>> {
    (0..count)
        .map(|r| {
            let mut rng = rng_for(seed, &format!("prune-random-order-{r}"));
            let mut o: Vec<usize> = (0..n).collect();
            o.shuffle(&mut rng);
            o
        })
        .collect()
}

table_row! {
    /// One block's scores: a row of `prune_block_scores.parquet`.
    pub struct ScoreRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// Player index in the block game.
        pub player: i64,
        /// The player's block.
        pub block: i64,
        /// Shapley value (NaN when not computed).
        pub shapley: f64,
        /// `exact`, the sampling estimator's name or `not computed`.
        pub shapley_source: String,
        /// Adapter norm `sqrt(Σ ‖ΔW‖_F²)` of the block.
        pub norm: f64,
        /// Leave-one-out value `v(N) − v(N ∖ {i})`.
        pub leave_one_out: f64,
    }
}

table_row! {
    /// One point of one removal curve: a row of `prune_removal.parquet`.
    pub struct RemovalRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// The removal order.
        pub order: RemovalOrder,
        /// Index of the random order (0 for the scored orders).
        pub repeat: i64,
        /// Blocks removed so far.
        pub step: i64,
        /// Blocks still kept.
        pub blocks_kept: i64,
        /// The block removed at this step (−1 for the full adapter).
        pub removed_block: i64,
        /// Test accuracy of the kept blocks.
        pub test_accuracy: f64,
    }
}

/// The block scores and every removal curve of one adapter.
pub(super) fn evaluate(
    test: &Evaluator,
    input: &PruneInput,
    opts: &PruneOptions,
) -> Result<(Vec<ScoreRow>, Vec<RemovalRow>)> {
    let game = LayerGame::new(test, input.adapter, Grouping::Block, GameValue::Accuracy, &input.method)?;
    let n = game.n_players();
    let table = known_table(&game, opts.orders.contains(&RemovalOrder::Shapley), input.table.as_deref())?;
    let memo = match &table {
        Some(t) => Memo::unlimited(t),
        None => Memo::unlimited(&game),
    };
    let scores = block_scores(&game, &memo, table.as_ref(), input.adapter, opts, input.seed)?;
    let score_rows = (0..n)
        .map(|i| ScoreRow {
            method: input.method.clone(),
            seed: input.seed as i64,
            player: i as i64,
            block: scores.blocks[i] as i64,
            shapley: scores.shapley[i],
            shapley_source: scores.shapley_source.clone(),
            norm: scores.norm[i],
            leave_one_out: scores.leave_one_out[i],
        })
        .collect();
    let mut curves: Vec<(RemovalOrder, usize, Vec<CurvePoint>)> = Vec::new();
    for &order in &opts.orders {
        match scores.scores(order) {
            Some(s) => curves.push((order, 0, removal_curve(&removal_order(s), n))),
            None => {
                for (r, o) in random_orders(n, opts.random_orders, opts.order_seed).into_iter().enumerate() {
                    curves.push((order, r, removal_curve(&o, n)));
                }
            }
        }
    }
    let needed: BTreeSet<Coalition> = curves.iter().flat_map(|(_, _, c)| c.iter().map(|p| p.coalition)).collect();
    memo.values(&needed.into_iter().collect::<Vec<_>>())?;
    let mut rows = Vec::new();
    for (order, repeat, curve) in &curves {
        for (step, p) in curve.iter().enumerate() {
            rows.push(RemovalRow {
                method: input.method.clone(),
                seed: input.seed as i64,
                order: *order,
                repeat: *repeat as i64,
                step: step as i64,
                blocks_kept: p.kept as i64,
                removed_block: p.removed.map(|i| scores.blocks[i] as i64).unwrap_or(-1),
                test_accuracy: memo.value(p.coalition)?,
            });
        }
    }
    Ok((score_rows, rows))
}

/// Test accuracy of each (method, order, blocks kept), mean and CI over seeds and random orders.
/// The order enters by name, so the summary rows sort as the names do.
pub(super) fn accuracy_ci(rows: &[RemovalRow]) -> Result<BTreeMap<RemovalKey, MeanCi>> {
    group_ci(rows.iter().map(|r| ((r.method.clone(), OrderByName(r.order), r.blocks_kept), r.test_accuracy)))
}

/// A removal order that sorts by its table name (`leave-one-out` < `norm` < `random` < `shapley`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct OrderByName(pub(super) RemovalOrder);

impl PartialOrd for OrderByName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for OrderByName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.name().cmp(other.0.name())
    }
}

/// Grouping key of removal rows: method, order, blocks kept.
pub(super) type RemovalKey = (String, OrderByName, i64);

/// Mean accuracy along the curves of `method` in `order` (a normalised area under the curve).
pub(super) fn removal_area(rows: &[RemovalRow], method: &str, order: RemovalOrder) -> f64 {
    let xs: Vec<f64> =
        rows.iter().filter(|r| r.method == method && r.order == order).map(|r| r.test_accuracy).collect();
    xs.iter().sum::<f64>() / xs.len().max(1) as f64
}

table_row! {
    /// A row of `prune_removal_summary.parquet`: one (method, order, blocks kept).
    pub struct RemovalSummaryRow {
        /// Method name.
        pub method: String,
        /// The removal order.
        pub order: RemovalOrder,
        /// Blocks still kept.
        pub blocks_kept: i64,
        /// Test accuracy over seeds and random orders.
        pub ci: MeanCi,
    }
}

/// The summary rows of [`accuracy_ci`], in key order.
pub(super) fn summary_rows(ci: &BTreeMap<RemovalKey, MeanCi>) -> Vec<RemovalSummaryRow> {
    ci.iter()
        .map(|((method, order, kept), ci)| RemovalSummaryRow {
            method: method.clone(),
            order: order.0,
            blocks_kept: *kept,
            ci: ci.clone(),
        })
        .collect()
}

/// One panel of removal curves per order, one line per method.
pub(super) fn figure(
    methods: &[String],
    orders: &[RemovalOrder],
    ci: &BTreeMap<RemovalKey, MeanCi>,
    frozen: f64,
) -> Result<String> {
    let mut panels = Vec::new();
    for &order in orders {
        let mut series = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let pts: Vec<(f64, MeanCi)> = ci
                .iter()
                .filter(|((mm, o, _), _)| mm == m && o.0 == order)
                .map(|((_, _, k), c)| (*k as f64, c.clone()))
                .collect();
            if !pts.is_empty() {
                series.push(ci_series(m, &pts, false, Some(i % 10)));
            }
        }
        let what = match order {
            RemovalOrder::Shapley => "by Shapley value",
            RemovalOrder::Norm => "by adapter norm ‖ΔW‖_F",
            RemovalOrder::LeaveOneOut => "by leave-one-out value",
            RemovalOrder::Random => "in random orders",
        };
        panels.push(LinePlot {
            title: format!("blocks removed {what}, lowest first"),
            x_label: "blocks kept".into(),
            y_label: "test accuracy".into(),
            series,
            reference_y: Some((frozen, "frozen backbone".into())),
            ..Default::default()
        });
    }
    crate::report::plot::panels_svg(
        "Block-removal curves (mean over seeds and random orders; band = 95% t-CI)",
        &panels,
        2,
    )
}
