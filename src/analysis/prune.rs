//! Pruning of trained adapters, LoRA against CopRA. Pruning a module removes its `ΔW`; every
//! variant is evaluated with [`Evaluator::evaluate`] on the kept deltas.
//!
//! - **Structured**: keep every other block (even or odd blocks; CoTo keeps alternate layers),
//!   only the lower, middle or upper third of the blocks, or only one module type (q, k, v;
//!   CoTo's Fig. r3), plus the full adapter and the frozen backbone as references.
//! - **Removal curves**: blocks are removed one at a time, lowest score first, by exact Shapley
//!   value (the layer game of [`LayerGame`], enumerated when there are at most 20 blocks,
//!   permutation-sampled otherwise), by adapter norm `‖ΔW‖_F`, by leave-one-out value and in
//!   random orders; accuracy is recorded against the number of blocks kept. The scores are
//!   computed on the same test set the curves are drawn on (an oracle ordering, as in the
//!   Neuron-Shapley removal protocol), so the Shapley and leave-one-out curves are upper
//!   references for what a score can achieve.
//! - **Unstructured**: magnitude pruning ([`crate::prune::magnitude`]) of the dense `ΔW` and of
//!   the factors `A`, `B`; `sparsity` is the fraction of entries removed.

use super::layer_game::{GameValue, LayerGame};
use super::Outputs;
use crate::adapter::{Adapter, Grouping, ModuleKey, TargetModule};
use crate::eval::{adapter_deltas, Deltas, Evaluator, Metrics};
use crate::progress::Progress;
use crate::prune::magnitude::{prune_adapter_deltas, prune_factor_deltas, Ranking};
use crate::report::plot::{Bar, BarGroup, BarPlot, LinePlot, Series};
use crate::report::table::Table;
use crate::shapley::{self, coalition, Coalition, EstimateConfig, Estimator, Game};
use crate::stats::{mean_ci, MeanCi};
use crate::util::rng_for;
use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use std::collections::{BTreeMap, BTreeSet};

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
    /// No module (the frozen backbone; the other reference).
    None,
}

impl Structure {
    /// Stable name used in tables: `all`, `every-other-even`, `every-other-odd`, `lower-third`,
    /// `middle-third`, `upper-third`, `q-only` (`k-only`, …) or `none`.
    pub fn name(&self) -> String {
        match self {
            Structure::All => "all".into(),
            Structure::EveryOtherEven => "every-other-even".into(),
            Structure::EveryOtherOdd => "every-other-odd".into(),
            Structure::LowerThird => "lower-third".into(),
            Structure::MiddleThird => "middle-third".into(),
            Structure::UpperThird => "upper-third".into(),
            Structure::Only(m) => format!("{}-only", m.short()),
            Structure::None => "none".into(),
        }
    }

    /// Whether module `key` of a backbone with `num_blocks` blocks keeps its `ΔW`.
    pub fn keeps(&self, key: &ModuleKey, num_blocks: usize) -> bool {
        match self {
            Structure::All => true,
            Structure::EveryOtherEven => key.block.is_multiple_of(2),
            Structure::EveryOtherOdd => key.block % 2 == 1,
            Structure::LowerThird => third_of(key.block, num_blocks) == 0,
            Structure::MiddleThird => third_of(key.block, num_blocks) == 1,
            Structure::UpperThird => third_of(key.block, num_blocks) == 2,
            Structure::Only(m) => key.module == *m,
            Structure::None => false,
        }
    }

    /// The standard list for an adapter on `targets`: all, both every-other variants, the three
    /// thirds, one "only" strategy per adapted module type, and none.
    pub fn standard(targets: &[TargetModule]) -> Vec<Structure> {
        let mut out = vec![
            Structure::All,
            Structure::EveryOtherEven,
            Structure::EveryOtherOdd,
            Structure::LowerThird,
            Structure::MiddleThird,
            Structure::UpperThird,
        ];
        let mut mods: Vec<TargetModule> = targets.to_vec();
        mods.sort();
        mods.dedup();
        out.extend(mods.into_iter().map(Structure::Only));
        out.push(Structure::None);
        out
    }
}

/// Which third of `num_blocks` blocks block `block` falls in: `⌊3·block / num_blocks⌋`
/// (0 lower, 1 middle, 2 upper; with 12 blocks: 0–3, 4–7, 8–11).
pub fn third_of(block: usize, num_blocks: usize) -> usize {
    (3 * block) / num_blocks.max(1)
}

/// The deltas a structure keeps.
pub fn select(deltas: &Deltas, structure: &Structure, num_blocks: usize) -> Deltas {
    deltas.iter().filter(|(k, _)| structure.keeps(k, num_blocks)).map(|(k, v)| (*k, v.clone())).collect()
}

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

/// Coalition values of a layer game: the full table when it was enumerated, otherwise
/// evaluated on demand and memoised.
struct Values<'a> {
    game: &'a LayerGame<'a>,
    table: Option<Vec<f64>>,
    cache: BTreeMap<Coalition, f64>,
}

impl Values<'_> {
    /// Makes sure every coalition in `batch` has a value (one parallel batch of evaluations).
    fn prefetch(&mut self, batch: &BTreeSet<Coalition>) -> Result<()> {
        if self.table.is_some() {
            return Ok(());
        }
        let missing: Vec<Coalition> = batch.iter().copied().filter(|c| !self.cache.contains_key(c)).collect();
        if !missing.is_empty() {
            let vals = self.game.evaluate(&missing)?;
            self.cache.extend(missing.into_iter().zip(vals));
        }
        Ok(())
    }

    fn get(&mut self, c: Coalition) -> Result<f64> {
        if let Some(t) = &self.table {
            return Ok(t[c as usize]);
        }
        if let Some(v) = self.cache.get(&c) {
            return Ok(*v);
        }
        let v = self.game.evaluate(&[c])?[0];
        self.cache.insert(c, v);
        Ok(v)
    }
}

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
    pub removal_area: Vec<(String, f64)>,
    /// Test accuracy at each (target, sparsity): target `delta` or `factors`.
    pub unstructured: Vec<(String, f64, MeanCi)>,
}

#[derive(Default)]
struct StructRows {
    method: Vec<String>,
    seed: Vec<i64>,
    strategy: Vec<String>,
    kept: Vec<i64>,
    total: Vec<i64>,
    params: Vec<f64>,
    loss: Vec<f64>,
    acc: Vec<f64>,
    full: Vec<f64>,
    frozen: Vec<f64>,
}

#[derive(Default)]
struct RemovalRows {
    method: Vec<String>,
    seed: Vec<i64>,
    order: Vec<String>,
    repeat: Vec<i64>,
    step: Vec<i64>,
    kept: Vec<i64>,
    removed: Vec<i64>,
    acc: Vec<f64>,
}

#[derive(Default)]
struct ScoreRows {
    method: Vec<String>,
    seed: Vec<i64>,
    player: Vec<i64>,
    block: Vec<i64>,
    shapley: Vec<f64>,
    source: Vec<String>,
    norm: Vec<f64>,
    loo: Vec<f64>,
}

#[derive(Default)]
struct SparsityRows {
    method: Vec<String>,
    seed: Vec<i64>,
    target: Vec<String>,
    ranking: Vec<String>,
    sparsity: Vec<f64>,
    loss: Vec<f64>,
    acc: Vec<f64>,
}

/// Computes the block scores of one adapter and the values of every coalition the removal
/// curves need (the exact table when there are at most 20 blocks).
fn block_scores<'a>(
    game: &'a LayerGame<'a>,
    adapter: &Adapter,
    opts: &PruneOptions,
    seed: u64,
    cached: Option<&[f64]>,
) -> Result<(BlockScores, Values<'a>)> {
    let n = game.n_players();
    let blocks: Vec<usize> = game.groups().iter().map(|g| g[0].block).collect();
    let deltas = adapter_deltas(adapter);
    let norm: Vec<f64> = game
        .groups()
        .iter()
        .map(|g| g.iter().map(|k| deltas[k].frobenius_norm().powi(2)).sum::<f64>().sqrt())
        .collect();
    let grand = coalition::grand(n);
    let usable = |t: &[f64]| -> Result<bool> {
        if t.len() != 1usize << n {
            return Ok(false);
        }
        let fresh = game.evaluate(&[grand, 0])?;
        Ok(t[grand as usize] == fresh[0] && t[0] == fresh[1])
    };
    let want_shapley = opts.orders.contains(&RemovalOrder::Shapley);
    let cached = match cached {
        Some(t) if usable(t)? => Some(t.to_vec()),
        _ => None,
    };
    let (table, shapley, source) = match cached {
        Some(t) => {
            let sv = shapley::shapley_from_table(&t, n)?;
            (Some(t), sv, "exact".to_string())
        }
        None if !want_shapley => (None, vec![f64::NAN; n], "not computed".to_string()),
        None if n <= shapley::MAX_EXACT_PLAYERS => {
            let t = game.enumerate_all()?;
            let sv = shapley::shapley_from_table(&t, n)?;
            (Some(t), sv, "exact".to_string())
        }
        None => {
            let cfg = EstimateConfig::new(Estimator::Permutation { antithetic: false }, opts.shapley_budget, seed);
            let est = shapley::estimate(game, &cfg)?;
            (None, est.values, est.estimator)
        }
    };
    let mut values = Values { game, table, cache: BTreeMap::new() };
    let loo_set: BTreeSet<Coalition> =
        std::iter::once(grand).chain((0..n).map(|i| coalition::remove(grand, i))).collect();
    values.prefetch(&loo_set)?;
    let v_full = values.get(grand)?;
    let leave_one_out =
        (0..n).map(|i| Ok(v_full - values.get(coalition::remove(grand, i))?)).collect::<Result<Vec<f64>>>()?;
    Ok((BlockScores { blocks, shapley, shapley_source: source, norm, leave_one_out }, values))
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
    let nb = test.backbone().num_blocks();
    let frozen = test.evaluate(&Deltas::new())?;
    let mut st = StructRows::default();
    let mut rm = RemovalRows::default();
    let mut sc = ScoreRows::default();
    let mut sp = SparsityRows::default();
    let bar = progress.bar(inputs.len() as u64, "prune");
    for input in inputs {
        bar.set_message(format!("{} seed {}", input.method, input.seed));
        let deltas = adapter_deltas(input.adapter);
        let full = test.evaluate(&deltas)?;
        // Structured.
        let targets: Vec<TargetModule> = input.adapter.modules.keys().map(|k| k.module).collect();
        let total_params = input.adapter.num_parameters().max(1);
        for s in Structure::standard(&targets) {
            let kept = select(&deltas, &s, nb);
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
            st.method.push(input.method.clone());
            st.seed.push(input.seed as i64);
            st.strategy.push(s.name());
            st.kept.push(kept.len() as i64);
            st.total.push(deltas.len() as i64);
            st.params.push(kept_params as f64 / total_params as f64);
            st.loss.push(m.loss);
            st.acc.push(m.accuracy);
            st.full.push(full.accuracy);
            st.frozen.push(frozen.accuracy);
        }
        // Removal curves.
        let game = LayerGame::new(test, input.adapter, Grouping::Block, GameValue::Accuracy, &input.method)?;
        let n = game.n_players();
        let (scores, mut values) = block_scores(&game, input.adapter, opts, input.seed, input.table.as_deref())?;
        for i in 0..n {
            sc.method.push(input.method.clone());
            sc.seed.push(input.seed as i64);
            sc.player.push(i as i64);
            sc.block.push(scores.blocks[i] as i64);
            sc.shapley.push(scores.shapley[i]);
            sc.source.push(scores.shapley_source.clone());
            sc.norm.push(scores.norm[i]);
            sc.loo.push(scores.leave_one_out[i]);
        }
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
        values.prefetch(&needed)?;
        for (order, repeat, curve) in &curves {
            for (step, p) in curve.iter().enumerate() {
                rm.method.push(input.method.clone());
                rm.seed.push(input.seed as i64);
                rm.order.push(order.name().into());
                rm.repeat.push(*repeat as i64);
                rm.step.push(step as i64);
                rm.kept.push(p.kept as i64);
                rm.removed.push(p.removed.map(|i| scores.blocks[i] as i64).unwrap_or(-1));
                rm.acc.push(values.get(p.coalition)?);
            }
        }
        // Unstructured.
        for target in ["delta", "factors"] {
            for &s in &opts.sparsities {
                let pruned = if target == "delta" {
                    prune_adapter_deltas(input.adapter, s, opts.ranking)?
                } else {
                    prune_factor_deltas(input.adapter, s, opts.ranking)?
                };
                let m: Metrics = if s == 0.0 { full } else { test.evaluate(&pruned)? };
                sp.method.push(input.method.clone());
                sp.seed.push(input.seed as i64);
                sp.target.push(target.into());
                sp.ranking.push(ranking_name(opts.ranking).into());
                sp.sparsity.push(s);
                sp.loss.push(m.loss);
                sp.acc.push(m.accuracy);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let methods = ordered_unique(inputs.iter().map(|i| i.method.clone()));
    let mut out = Outputs::default();
    let struct_ci =
        group_ci(st.method.iter().zip(&st.strategy).zip(&st.acc).map(|((m, s), a)| ((m.clone(), s.clone()), *a)))?;
    let removal_ci =
        group_ci((0..rm.method.len()).map(|k| ((rm.method[k].clone(), rm.order[k].clone(), rm.kept[k]), rm.acc[k])))?;
    let sparsity_ci = group_ci(
        (0..sp.method.len())
            .map(|k| ((sp.method[k].clone(), sp.target[k].clone(), permille(sp.sparsity[k])), sp.acc[k])),
    )?;
    out.figures
        .push(("prune_structured.svg".into(), structured_figure(&methods, &st.strategy, &struct_ci, frozen.accuracy)?));
    out.figures
        .push(("prune_removal.svg".into(), removal_figure(&methods, &opts.orders, &removal_ci, frozen.accuracy)?));
    out.figures
        .push(("prune_sparsity.svg".into(), sparsity_figure(&methods, &sparsity_ci, frozen.accuracy, opts.ranking)?));
    let mut summaries = Vec::new();
    for m in &methods {
        let strategies = ordered_unique(st.strategy.iter().cloned());
        let structured = strategies
            .iter()
            .filter_map(|s| struct_ci.get(&(m.clone(), s.clone())).map(|ci| (s.clone(), ci.clone())))
            .collect();
        let removal_area = opts
            .orders
            .iter()
            .map(|o| {
                let xs: Vec<f64> = (0..rm.method.len())
                    .filter(|&k| &rm.method[k] == m && rm.order[k] == o.name())
                    .map(|k| rm.acc[k])
                    .collect();
                (o.name().to_string(), xs.iter().sum::<f64>() / xs.len().max(1) as f64)
            })
            .collect();
        let unstructured = sparsity_ci
            .iter()
            .filter(|((mm, _, _), _)| mm == m)
            .map(|((_, t, s), ci)| (t.clone(), *s as f64 / 1000.0, ci.clone()))
            .collect();
        summaries.push(PruneSummary {
            method: m.clone(),
            frozen_accuracy: frozen.accuracy,
            structured,
            removal_area,
            unstructured,
        });
    }
    let mut t = Table::new();
    t.str_col("method", st.method)
        .i64_col("seed", st.seed)
        .str_col("strategy", st.strategy)
        .i64_col("modules_kept", st.kept)
        .i64_col("modules_total", st.total)
        .f64_col("params_kept_fraction", st.params)
        .f64_col("test_loss", st.loss)
        .f64_col("test_accuracy", st.acc)
        .f64_col("full_accuracy", st.full)
        .f64_col("frozen_accuracy", st.frozen);
    out.tables.push(("prune_structured.parquet".into(), t));
    out.tables.push((
        "prune_structured_summary.parquet".into(),
        ci_table(
            &["method", "strategy"],
            struct_ci.iter().map(|((m, s), ci)| (vec![m.clone(), s.clone()], Vec::new(), ci)),
        ),
    ));
    let mut t = Table::new();
    t.str_col("method", rm.method)
        .i64_col("seed", rm.seed)
        .str_col("order", rm.order)
        .i64_col("repeat", rm.repeat)
        .i64_col("step", rm.step)
        .i64_col("blocks_kept", rm.kept)
        .i64_col("removed_block", rm.removed)
        .f64_col("test_accuracy", rm.acc);
    out.tables.push(("prune_removal.parquet".into(), t));
    out.tables.push((
        "prune_removal_summary.parquet".into(),
        ci_table_with_i64(
            &["method", "order"],
            "blocks_kept",
            removal_ci.iter().map(|((m, o, k), ci)| (vec![m.clone(), o.clone()], *k, ci)),
        ),
    ));
    let mut t = Table::new();
    t.str_col("method", sc.method)
        .i64_col("seed", sc.seed)
        .i64_col("player", sc.player)
        .i64_col("block", sc.block)
        .f64_col("shapley", sc.shapley)
        .str_col("shapley_source", sc.source)
        .f64_col("norm", sc.norm)
        .f64_col("leave_one_out", sc.loo);
    out.tables.push(("prune_block_scores.parquet".into(), t));
    let mut t = Table::new();
    t.str_col("method", sp.method)
        .i64_col("seed", sp.seed)
        .str_col("target", sp.target)
        .str_col("ranking", sp.ranking)
        .f64_col("sparsity", sp.sparsity)
        .f64_col("test_loss", sp.loss)
        .f64_col("test_accuracy", sp.acc);
    out.tables.push(("prune_unstructured.parquet".into(), t));
    let mut t = Table::new();
    let rows: Vec<_> = sparsity_ci.iter().collect();
    t.str_col("method", rows.iter().map(|((m, _, _), _)| m.clone()).collect())
        .str_col("target", rows.iter().map(|((_, tg, _), _)| tg.clone()).collect())
        .f64_col("sparsity", rows.iter().map(|((_, _, s), _)| *s as f64 / 1000.0).collect());
    push_ci_cols(&mut t, rows.iter().map(|(_, ci)| *ci));
    out.tables.push(("prune_unstructured_summary.parquet".into(), t));
    Ok((out, summaries))
}

fn ranking_name(r: Ranking) -> &'static str {
    match r {
        Ranking::PerModule => "per-module",
        Ranking::Global => "global",
    }
}

/// A sparsity as an integer key in thousandths (exact grouping of float grids).
fn permille(s: f64) -> i64 {
    (s * 1000.0).round() as i64
}

/// Distinct values in first-seen order.
pub(crate) fn ordered_unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in items {
        if !out.contains(&s) {
            out.push(s);
        }
    }
    out
}

/// Mean and Student-t 95% CI of the values of each key.
pub(crate) fn group_ci<K: Ord>(rows: impl IntoIterator<Item = (K, f64)>) -> Result<BTreeMap<K, MeanCi>> {
    let mut groups: BTreeMap<K, Vec<f64>> = BTreeMap::new();
    for (k, v) in rows {
        groups.entry(k).or_default().push(v);
    }
    groups.into_iter().map(|(k, xs)| Ok((k, mean_ci(&xs)?))).collect()
}

/// Appends the columns `n`, `mean`, `std`, `ci95_lo`, `ci95_hi`.
pub(crate) fn push_ci_cols<'a>(t: &mut Table, cis: impl Iterator<Item = &'a MeanCi>) {
    let cis: Vec<&MeanCi> = cis.collect();
    t.i64_col("n", cis.iter().map(|c| c.n as i64).collect())
        .f64_col("mean", cis.iter().map(|c| c.mean).collect())
        .f64_col("std", cis.iter().map(|c| c.std).collect())
        .f64_col("ci95_lo", cis.iter().map(|c| c.lo).collect())
        .f64_col("ci95_hi", cis.iter().map(|c| c.hi).collect());
}

/// A summary table: string key columns, then `n`, `mean`, `std`, `ci95_lo`, `ci95_hi`.
pub(crate) fn ci_table<'a>(keys: &[&str], rows: impl Iterator<Item = (Vec<String>, Vec<i64>, &'a MeanCi)>) -> Table {
    let rows: Vec<_> = rows.collect();
    let mut t = Table::new();
    for (j, name) in keys.iter().enumerate() {
        t.str_col(name, rows.iter().map(|(k, _, _)| k[j].clone()).collect());
    }
    push_ci_cols(&mut t, rows.iter().map(|(_, _, c)| *c));
    t
}

fn ci_table_with_i64<'a>(
    keys: &[&str],
    int_key: &str,
    rows: impl Iterator<Item = (Vec<String>, i64, &'a MeanCi)>,
) -> Table {
    let rows: Vec<_> = rows.collect();
    let mut t = Table::new();
    for (j, name) in keys.iter().enumerate() {
        t.str_col(name, rows.iter().map(|(k, _, _)| k[j].clone()).collect());
    }
    t.i64_col(int_key, rows.iter().map(|(_, i, _)| *i).collect());
    push_ci_cols(&mut t, rows.iter().map(|(_, _, c)| *c));
    t
}

/// Error bar of a mean: the 95% CI when it exists (two or more samples).
pub(crate) fn err_of(ci: &MeanCi) -> Option<(f64, f64)> {
    if ci.n >= 2 && ci.lo.is_finite() && ci.hi.is_finite() {
        Some((ci.lo, ci.hi))
    } else {
        None
    }
}

/// A line series with a CI band from `(x, MeanCi)` points (band only with two or more samples).
pub(crate) fn ci_series(label: &str, points: &[(f64, MeanCi)], dashed: bool, color: Option<usize>) -> Series {
    let band: Vec<(f64, f64, f64)> =
        points.iter().filter(|(_, c)| err_of(c).is_some()).map(|(x, c)| (*x, c.lo, c.hi)).collect();
    Series {
        label: label.to_string(),
        points: points.iter().map(|(x, c)| (*x, c.mean)).collect(),
        band: if band.is_empty() { None } else { Some(band) },
        dashed,
        color,
    }
}

fn structured_figure(
    methods: &[String],
    strategies: &[String],
    ci: &BTreeMap<(String, String), MeanCi>,
    frozen: f64,
) -> Result<String> {
    let mut groups = Vec::new();
    for s in ordered_unique(strategies.iter().cloned()) {
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

fn removal_figure(
    methods: &[String],
    orders: &[RemovalOrder],
    ci: &BTreeMap<(String, String, i64), MeanCi>,
    frozen: f64,
) -> Result<String> {
    let mut panels = Vec::new();
    for &order in orders {
        let mut series = Vec::new();
        for (i, m) in methods.iter().enumerate() {
            let pts: Vec<(f64, MeanCi)> = ci
                .iter()
                .filter(|((mm, o, _), _)| mm == m && o == order.name())
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

fn sparsity_figure(
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

/// Test fixtures shared by the merging and pruning analyses: a tiny random backbone, random
/// images and a prototype head built from its frozen features.
#[cfg(test)]
pub(crate) mod testutil {
    use crate::adapter::{Adapter, LoraFactors, LoraSpec, ModuleKey, TargetModule};
    use crate::data::{ImageSet, TaskData};
    use crate::eval::Evaluator;
    use crate::lab::TaskEnv;
    use crate::linalg::Matrix;
    use crate::model::head::PrototypeHead;
    use crate::model::vit::module_shape;
    use crate::model::{Backbone, Numerics, VitConfig};
    use crate::util::rng_for;
    use candle_core::Device;
    use rand::Rng;

    /// A tiny ViT with `blocks` blocks.
    pub fn tiny_config(blocks: usize) -> VitConfig {
        VitConfig {
            hidden_size: 16,
            num_hidden_layers: blocks,
            num_attention_heads: 2,
            intermediate_size: 24,
            image_size: 16,
            patch_size: 4,
            ..VitConfig::tiny()
        }
    }

    /// Random images in [-1, 1] with labels `i % classes`.
    pub fn image_set(n: usize, classes: usize, cfg: &VitConfig, seed: u64) -> ImageSet {
        let mut rng = rng_for(seed, "test-images");
        let len = n * cfg.num_channels * cfg.image_size * cfg.image_size;
        ImageSet {
            images: (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
            labels: (0..n).map(|i| (i % classes) as u32).collect(),
            channels: cfg.num_channels,
            height: cfg.image_size,
            width: cfg.image_size,
        }
    }

    /// A task environment on a tiny random backbone: random train and test images, the head
    /// from the frozen features of the training images.
    pub fn tiny_env(blocks: usize, classes: usize, train: usize, test: usize) -> (Backbone, TaskEnv) {
        let cfg = tiny_config(blocks);
        let device = Device::Cpu;
        let bb = Backbone::init_random(&cfg, 1, &device).unwrap();
        let train_set = image_set(train, classes, &cfg, 2);
        let test_set = image_set(test, classes, &cfg, 3);
        let train_images = crate::lab::images_tensor(&train_set, &device).unwrap();
        let test_images = crate::lab::images_tensor(&test_set, &device).unwrap();
        let train_inputs = bb.frozen_block_inputs(&train_images, 64).unwrap();
        let feats = bb.cls_feature(&train_inputs[bb.num_blocks()], Numerics::Fused).unwrap();
        let head = PrototypeHead::from_features(&feats, &train_set.labels, classes, 20.0).unwrap();
        let test_ev = Evaluator::new(&bb, &head, &test_images, &test_set.labels, 64).unwrap();
        let train_ev = Evaluator::new(&bb, &head, &train_images, &train_set.labels, 64).unwrap();
        let data = TaskData {
            name: "tiny".into(),
            class_names: (0..classes).map(|c| format!("c{c}")).collect(),
            train: train_set,
            test: test_set,
        };
        (bb.clone(), TaskEnv { data, head, train_inputs, test: test_ev, train: train_ev, data_fingerprint: None })
    }

    /// A random adapter with large factors on every block of `cfg` and the `targets`.
    pub fn random_adapter(cfg: &VitConfig, targets: &[TargetModule], rank: usize, seed: u64) -> Adapter {
        let mut rng = rng_for(seed, "test-adapter");
        let spec = LoraSpec { rank, targets: targets.to_vec(), ..LoraSpec::default() };
        let mut modules = std::collections::BTreeMap::new();
        for block in 0..cfg.num_hidden_layers {
            for &module in targets {
                let (out, inp) = module_shape(cfg, module);
                let mut m = |r: usize, c: usize| {
                    Matrix::from_vec(r, c, (0..r * c).map(|_| rng.random_range(-1.0f32..1.0)).collect())
                };
                modules.insert(ModuleKey { block, module }, LoraFactors { a: m(rank, inp), b: m(out, rank) });
            }
        }
        Adapter { spec, modules }
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use crate::adapter::TargetModule::{Key, Query, Value};

    fn keys_of(d: &Deltas) -> Vec<(usize, TargetModule)> {
        d.keys().map(|k| (k.block, k.module)).collect()
    }

    #[test]
    fn structured_selections_pick_the_right_modules() {
        let cfg = tiny_config(12);
        let adapter = random_adapter(&cfg, &[Query, Key, Value], 1, 1);
        let d = adapter_deltas(&adapter);
        assert_eq!(d.len(), 36);
        let blocks_of = |s: Structure| -> BTreeSet<usize> { select(&d, &s, 12).keys().map(|k| k.block).collect() };
        let count = |s: Structure| select(&d, &s, 12).len();
        assert_eq!(blocks_of(Structure::EveryOtherEven), [0, 2, 4, 6, 8, 10].into());
        assert_eq!(blocks_of(Structure::EveryOtherOdd), [1, 3, 5, 7, 9, 11].into());
        assert_eq!(blocks_of(Structure::LowerThird), (0..4).collect());
        assert_eq!(blocks_of(Structure::MiddleThird), (4..8).collect());
        assert_eq!(blocks_of(Structure::UpperThird), (8..12).collect());
        for s in [Structure::EveryOtherEven, Structure::EveryOtherOdd] {
            assert_eq!(count(s), 18);
        }
        for s in [Structure::LowerThird, Structure::MiddleThird, Structure::UpperThird] {
            assert_eq!(count(s), 12);
        }
        for m in [Query, Key, Value] {
            let kept = select(&d, &Structure::Only(m), 12);
            assert_eq!(kept.len(), 12);
            assert!(kept.keys().all(|k| k.module == m));
            assert_eq!(kept.keys().map(|k| k.block).collect::<BTreeSet<_>>(), (0..12).collect());
        }
        assert_eq!(keys_of(&select(&d, &Structure::All, 12)), keys_of(&d));
        assert!(select(&d, &Structure::None, 12).is_empty());
        // Thirds partition the blocks; the names are stable.
        let names: Vec<String> = Structure::standard(&[Value, Query, Key]).iter().map(|s| s.name()).collect();
        assert_eq!(
            names,
            [
                "all",
                "every-other-even",
                "every-other-odd",
                "lower-third",
                "middle-third",
                "upper-third",
                "q-only",
                "k-only",
                "v-only",
                "none"
            ]
        );
        assert_eq!((0..7).map(|b| third_of(b, 7)).collect::<Vec<_>>(), vec![0, 0, 0, 1, 1, 2, 2]);
    }

    #[test]
    fn sparsity_zero_is_identity_and_one_is_frozen() {
        let (bb, env) = tiny_env(3, 3, 12, 30);
        let adapter = random_adapter(&bb.config, &[Query, Value], 2, 4);
        let full = env.test.evaluate(&adapter_deltas(&adapter)).unwrap();
        let frozen = env.test.evaluate(&Deltas::new()).unwrap();
        assert!(
            (full.loss - frozen.loss).abs() > 1e-6,
            "the adapter must change the model for this test to mean anything"
        );
        for ranking in [Ranking::PerModule, Ranking::Global] {
            let d0 = prune_adapter_deltas(&adapter, 0.0, ranking).unwrap();
            let f0 = prune_factor_deltas(&adapter, 0.0, ranking).unwrap();
            assert_eq!(d0, adapter_deltas(&adapter));
            assert_eq!(env.test.evaluate(&d0).unwrap(), full);
            assert_eq!(env.test.evaluate(&f0).unwrap(), full);
            for pruned in [
                prune_adapter_deltas(&adapter, 1.0, ranking).unwrap(),
                prune_factor_deltas(&adapter, 1.0, ranking).unwrap(),
            ] {
                let m = env.test.evaluate(&pruned).unwrap();
                assert!((m.accuracy - frozen.accuracy).abs() < 1e-12);
                assert!((m.loss - frozen.loss).abs() < 1e-5, "{} vs {}", m.loss, frozen.loss);
            }
        }
    }

    #[test]
    fn removal_curves_run_from_full_to_frozen() {
        let (bb, env) = tiny_env(4, 3, 12, 30);
        let adapter = random_adapter(&bb.config, &[Query, Value], 2, 5);
        let full = env.test.evaluate(&adapter_deltas(&adapter)).unwrap();
        let frozen = env.test.evaluate(&Deltas::new()).unwrap();
        let game = LayerGame::new(&env.test, &adapter, Grouping::Block, GameValue::Accuracy, "t").unwrap();
        let opts = PruneOptions::default();
        let (scores, mut values) = block_scores(&game, &adapter, &opts, 0, None).unwrap();
        assert_eq!(scores.blocks, vec![0, 1, 2, 3]);
        assert_eq!(scores.shapley_source, "exact");
        // Efficiency of the exact values: Σφ = v(N) − v(∅).
        let sum: f64 = scores.shapley.iter().sum();
        assert!((sum - (full.accuracy - frozen.accuracy)).abs() < 1e-9);
        for order in RemovalOrder::ALL {
            let orders = match scores.scores(order) {
                Some(s) => vec![removal_order(s)],
                None => random_orders(4, 3, 0),
            };
            for o in orders {
                let curve = removal_curve(&o, 4);
                assert_eq!(curve.len(), 5);
                assert_eq!(curve.iter().map(|p| p.kept).collect::<Vec<_>>(), vec![4, 3, 2, 1, 0]);
                assert_eq!(values.get(curve[0].coalition).unwrap(), full.accuracy);
                assert_eq!(values.get(curve[4].coalition).unwrap(), frozen.accuracy);
                let removed: BTreeSet<usize> = curve.iter().filter_map(|p| p.removed).collect();
                assert_eq!(removed.len(), 4);
            }
        }
        // The whole analysis agrees: every curve starts at the full accuracy and ends frozen.
        // A wrong cached table is ignored; the right one is used as is.
        let table = coalition_table(&env.test, &adapter).unwrap();
        assert_eq!(table, values.table.clone().unwrap());
        let (_, from_bad) = block_scores(&game, &adapter, &opts, 0, Some(&[0.5; 16])).unwrap();
        assert_eq!(from_bad.table.unwrap(), table);
        let mut doctored = table.clone();
        doctored[5] = 9.0;
        let (_, from_cache) = block_scores(&game, &adapter, &opts, 0, Some(&doctored)).unwrap();
        assert_eq!(from_cache.table.unwrap(), doctored);
        let inputs = [PruneInput { method: "lora".into(), seed: 1, adapter: &adapter, table: Some(table) }];
        let opts = PruneOptions { sparsities: vec![0.0, 0.5, 1.0], random_orders: 2, ..Default::default() };
        let (out, summaries) = analyze(&env.test, &inputs, &opts, &Progress::hidden()).unwrap();
        assert_eq!(summaries.len(), 1);
        let s = &summaries[0];
        let get = |name: &str| s.structured.iter().find(|(n, _)| n == name).unwrap().1.mean;
        assert_eq!(get("all"), full.accuracy);
        assert_eq!(get("none"), frozen.accuracy);
        let at = |t: &str, x: f64| {
            s.unstructured.iter().find(|(tt, sp, _)| tt == t && (*sp - x).abs() < 1e-9).unwrap().2.mean
        };
        assert_eq!(at("delta", 0.0), full.accuracy);
        assert_eq!(at("factors", 1.0), frozen.accuracy);
        assert!(out.tables.iter().any(|(n, _)| n == "prune_removal.parquet"));
        assert_eq!(out.figures.len(), 3);
        // Without the Shapley order nothing is enumerated; the curves still run full → frozen.
        let cheap = PruneOptions {
            orders: vec![RemovalOrder::Norm, RemovalOrder::Random],
            random_orders: 2,
            ..Default::default()
        };
        let (scores, mut values) = block_scores(&game, &adapter, &cheap, 0, None).unwrap();
        assert!(values.table.is_none() && scores.shapley.iter().all(|v| v.is_nan()));
        let curve = removal_curve(&removal_order(&scores.norm), 4);
        assert_eq!(values.get(curve[0].coalition).unwrap(), full.accuracy);
        assert_eq!(values.get(curve[4].coalition).unwrap(), frozen.accuracy);
        let inputs = [PruneInput { method: "copra".into(), seed: 2, adapter: &adapter, table: None }];
        let (_, summaries) = analyze(&env.test, &inputs, &cheap, &Progress::hidden()).unwrap();
        let orders: Vec<&str> = summaries[0].removal_area.iter().map(|(o, _)| o.as_str()).collect();
        assert_eq!(orders, vec!["norm", "random"]);
    }

    #[test]
    fn removal_order_sorts_lowest_first_with_stable_ties() {
        assert_eq!(removal_order(&[0.3, -0.1, 0.3, 0.0]), vec![1, 3, 0, 2]);
        let a = random_orders(6, 3, 9);
        assert_eq!(a, random_orders(6, 3, 9));
        assert!(a.iter().all(|o| o.iter().copied().collect::<BTreeSet<_>>() == (0..6).collect()));
        assert!(PruneOptions { sparsities: vec![1.5], ..Default::default() }.validate().is_err());
        assert!(PruneOptions { sparsities: vec![], ..Default::default() }.validate().is_err());
        assert!(PruneOptions { random_orders: 0, ..Default::default() }.validate().is_err());
        for o in RemovalOrder::ALL {
            assert_eq!(RemovalOrder::parse(o.name()).unwrap(), o);
        }
        assert_eq!(RemovalOrder::parse("LOO").unwrap(), RemovalOrder::LeaveOneOut);
        assert!(RemovalOrder::parse("magnitude").is_err());
    }
}
