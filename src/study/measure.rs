//! What one grid cell measures, as long-format rows: single-task accuracy, structured pruning,
//! merges of seeds, barriers, multi-task merging, one-round federated learning and the
//! multilinear-extension gap. Each function takes trained adapters and evaluators and knows
//! nothing of specs, cells or files.

use crate::adapter::Adapter;
use crate::analysis::federated::{aggregation_weights, run_federated, FederatedOptions};
use crate::analysis::prune::structured::Structure;
use crate::connectivity::barrier::barriers;
use crate::connectivity::interpolate::{interpolate, Space};
use crate::eval::{Deltas, Evaluator, Metrics};
use crate::federated::split::SplitMethod;
use crate::lab::TaskEnv;
use crate::linalg::Matrix;
use crate::merge::{merge, MergeMethod, MergeOptions};
use crate::model::Backbone;
use crate::report::table::{Columns, Row};
use crate::train::TrainConfig;
use crate::util::rng_for;
use anyhow::{anyhow, bail, Result};
use polars::prelude::DataFrame;
use rand::Rng as _;

/// One measured number: a row of `measurements.parquet` (long format: pivot on `metric`).
#[derive(Clone, Debug, PartialEq)]
pub struct Measurement {
    /// The grid cell that produced it.
    pub cell: String,
    /// Task (`all` for a multi-task average).
    pub task: String,
    /// Variant name.
    pub variant: String,
    /// Value of the swept key (NaN without a sweep).
    pub x: f64,
    /// Replicate: the run seed, or for merges and barriers the first seed of the group.
    pub replicate: i64,
    /// The run seeds it involves, `+`-separated.
    pub seeds: String,
    /// `accuracy`, `prune`, `merge`, `barrier`, `multitask`, `federated` or `multilinear`.
    pub measure: String,
    /// The measure's setting (`every-other-odd`, `factor 1:2`, `delta`, an operator, ...);
    /// empty when it has none.
    pub setting: String,
    /// Metric name (`test_accuracy`, `share_of_endpoint`, `loss_barrier`, ...).
    pub metric: String,
    /// The value.
    pub value: f64,
}

impl Row for Measurement {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("cell", |r| r.cell.clone())
            .col("task", |r| r.task.clone())
            .col("variant", |r| r.variant.clone())
            .col("x", |r| r.x)
            .col("replicate", |r| r.replicate)
            .col("seeds", |r| r.seeds.clone())
            .col("measure", |r| r.measure.clone())
            .col("setting", |r| r.setting.clone())
            .col("metric", |r| r.metric.clone())
            .col("value", |r| r.value);
    }
}

/// The identity of a measurement's cell, copied into each of its rows.
#[derive(Clone, Debug)]
pub struct Tag {
    /// Cell id.
    pub cell: String,
    /// Task.
    pub task: String,
    /// Variant.
    pub variant: String,
    /// Sweep value.
    pub x: f64,
    /// Replicate.
    pub replicate: i64,
    /// Seeds.
    pub seeds: String,
}

impl Tag {
    /// A row of this cell.
    pub fn row(&self, measure: &str, setting: &str, metric: &str, value: f64) -> Measurement {
        Measurement {
            cell: self.cell.clone(),
            task: self.task.clone(),
            variant: self.variant.clone(),
            x: self.x,
            replicate: self.replicate,
            seeds: self.seeds.clone(),
            measure: measure.into(),
            setting: setting.into(),
            metric: metric.into(),
            value,
        }
    }
}

/// One point of a training-loss curve: a row of `curves.parquet`.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    /// Cell id.
    pub cell: String,
    /// Task.
    pub task: String,
    /// Variant.
    pub variant: String,
    /// Sweep value.
    pub x: f64,
    /// Run seed.
    pub seed: i64,
    /// Last step of the window (0-based).
    pub step: i64,
    /// Mean training loss over the window.
    pub loss: f64,
    /// Mean participation probability p(t) over the window.
    pub p: f64,
}

impl Row for CurvePoint {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("cell", |r| r.cell.clone())
            .col("task", |r| r.task.clone())
            .col("variant", |r| r.variant.clone())
            .col("x", |r| r.x)
            .col("seed", |r| r.seed)
            .col("step", |r| r.step)
            .col("loss", |r| r.loss)
            .col("p", |r| r.p);
    }
}

fn col_str(df: &DataFrame, name: &str) -> Result<Vec<String>> {
    let c = df.column(name).map_err(|e| anyhow!("column {name}: {e}"))?;
    let s = c.str().map_err(|e| anyhow!("column {name}: {e}"))?;
    Ok(s.iter().map(|v| v.unwrap_or_default().to_string()).collect())
}

/// A Float64 column as values (nulls as NaN); errors name the column.
pub(crate) fn col_f64(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    let c = df.column(name).map_err(|e| anyhow!("column {name}: {e}"))?;
    let s = c.f64().map_err(|e| anyhow!("column {name}: {e}"))?;
    Ok(s.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
}

fn col_i64(df: &DataFrame, name: &str) -> Result<Vec<i64>> {
    let c = df.column(name).map_err(|e| anyhow!("column {name}: {e}"))?;
    let s = c.i64().map_err(|e| anyhow!("column {name}: {e}"))?;
    Ok(s.iter().map(|v| v.unwrap_or_default()).collect())
}

impl Measurement {
    /// Reads rows back from a `measurements.parquet` table.
    pub fn from_frame(df: &DataFrame) -> Result<Vec<Measurement>> {
        let (cell, task, variant, x) =
            (col_str(df, "cell")?, col_str(df, "task")?, col_str(df, "variant")?, col_f64(df, "x")?);
        let (rep, seeds, measure) = (col_i64(df, "replicate")?, col_str(df, "seeds")?, col_str(df, "measure")?);
        let (setting, metric, value) = (col_str(df, "setting")?, col_str(df, "metric")?, col_f64(df, "value")?);
        Ok((0..df.height())
            .map(|i| Measurement {
                cell: cell[i].clone(),
                task: task[i].clone(),
                variant: variant[i].clone(),
                x: x[i],
                replicate: rep[i],
                seeds: seeds[i].clone(),
                measure: measure[i].clone(),
                setting: setting[i].clone(),
                metric: metric[i].clone(),
                value: value[i],
            })
            .collect())
    }
}

impl CurvePoint {
    /// Reads rows back from a `curves.parquet` table.
    pub fn from_frame(df: &DataFrame) -> Result<Vec<CurvePoint>> {
        let (cell, task, variant, x) =
            (col_str(df, "cell")?, col_str(df, "task")?, col_str(df, "variant")?, col_f64(df, "x")?);
        let (seed, step, loss, p) =
            (col_i64(df, "seed")?, col_i64(df, "step")?, col_f64(df, "loss")?, col_f64(df, "p")?);
        Ok((0..df.height())
            .map(|i| CurvePoint {
                cell: cell[i].clone(),
                task: task[i].clone(),
                variant: variant[i].clone(),
                x: x[i],
                seed: seed[i],
                step: step[i],
                loss: loss[i],
                p: p[i],
            })
            .collect())
    }
}

/// The structured-pruning strategy called `name`.
pub fn structure_named(name: &str) -> Result<Structure> {
    Ok(match name {
        "every-other-even" => Structure::EveryOtherEven,
        "every-other-odd" => Structure::EveryOtherOdd,
        "lower-third" => Structure::LowerThird,
        "middle-third" => Structure::MiddleThird,
        "upper-third" => Structure::UpperThird,
        "vision-only" => Structure::Encoder("vision"),
        "text-only" => Structure::Encoder("text"),
        other => bail!(
            "unknown structure '{other}'; use every-other-even, every-other-odd, lower-third, middle-third, upper-third, vision-only or text-only (CLIP)"
        ),
    })
}

/// The client split called `name`: `iid` or `dirichlet:ALPHA`.
pub fn split_named(name: &str, min_size: usize) -> Result<SplitMethod> {
    if name == "iid" {
        return Ok(SplitMethod::Iid);
    }
    let alpha = name
        .strip_prefix("dirichlet:")
        .and_then(|a| a.parse::<f64>().ok())
        .filter(|a| a.is_finite() && *a > 0.0)
        .ok_or_else(|| anyhow!("unknown split '{name}'; use iid or dirichlet:ALPHA with ALPHA > 0"))?;
    Ok(SplitMethod::Dirichlet { alpha, min_size })
}

/// `accuracy / endpoint` and `(accuracy − frozen) / (endpoint − frozen)`: a merged or pruned
/// accuracy as a share of the method's own endpoint and of its gain over the frozen backbone.
pub fn shares(accuracy: f64, endpoint: f64, frozen: f64) -> (f64, f64) {
    let gain = endpoint - frozen;
    (accuracy / endpoint, if gain.abs() > 1e-12 { (accuracy - frozen) / gain } else { f64::NAN })
}

/// Single-task metrics of one run: test accuracy and loss, train accuracy, the frozen
/// backbone's test accuracy and the gain over it.
pub fn accuracy_rows(tag: &Tag, test: &Metrics, train: &Metrics, frozen: &Metrics) -> Vec<Measurement> {
    vec![
        tag.row("accuracy", "", "test_accuracy", test.accuracy),
        tag.row("accuracy", "", "test_loss", test.loss),
        tag.row("accuracy", "", "train_accuracy", train.accuracy),
        tag.row("accuracy", "", "frozen_accuracy", frozen.accuracy),
        tag.row("accuracy", "", "gain_over_frozen", test.accuracy - frozen.accuracy),
    ]
}

/// Structured pruning of one adapter: accuracy of the kept modules and its two shares.
pub fn prune_rows(
    tag: &Tag,
    test: &Evaluator,
    adapter: &Adapter,
    structures: &[String],
    endpoint: f64,
    frozen: f64,
) -> Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    for name in structures {
        let s = structure_named(name)?;
        let kept: Deltas = adapter.deltas().into_iter().filter(|(k, _)| s.keeps(k, test.backbone())).collect();
        let m = test.evaluate(&kept)?;
        let (se, sg) = shares(m.accuracy, endpoint, frozen);
        rows.push(tag.row("prune", name, "accuracy", m.accuracy));
        rows.push(tag.row("prune", name, "share_of_endpoint", se));
        rows.push(tag.row("prune", name, "share_of_gain", sg));
    }
    Ok(rows)
}

/// `Σ w_i ΔW_i` with the weights normalised to sum to 1.
fn delta_mixture(adapters: &[&Adapter], weights: &[f64]) -> Result<Deltas> {
    let total: f64 = weights.iter().sum();
    let mut out: Deltas = Deltas::new();
    for (a, w) in adapters.iter().zip(weights) {
        for (k, d) in a.deltas() {
            let e = out.entry(k).or_insert_with(|| Matrix::zeros(d.rows, d.cols));
            if (e.rows, e.cols) != (d.rows, d.cols) {
                bail!("module {k} has different shapes in the merged adapters");
            }
            for (x, y) in e.data.iter_mut().zip(&d.data) {
                *x += (*w / total) as f32 * y;
            }
        }
    }
    Ok(out)
}

/// The label of a weight list: `1:1`, `1:2`, `1:1:1`.
pub fn weights_label(w: &[f64]) -> String {
    w.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(":")
}

/// Merges of the first `w.len()` adapters at weights `w`, in each space: test accuracy and
/// loss, and the accuracy as a share of the merged runs' mean endpoint accuracy and gain.
pub fn merge_rows(
    tag: &Tag,
    test: &Evaluator,
    adapters: &[&Adapter],
    endpoints: &[f64],
    frozen: f64,
    weights: &[Vec<f64>],
    spaces: &[String],
) -> Result<Vec<Measurement>> {
    let factor = MergeMethod::parse("factor")?;
    let mut rows = Vec::new();
    for w in weights {
        let k = w.len();
        let endpoint = endpoints[..k].iter().sum::<f64>() / k as f64;
        for space in spaces {
            let deltas = match Space::parse(space)? {
                Space::Factor => merge(&adapters[..k], w, &factor, &MergeOptions::default())?.deltas(),
                Space::Delta => delta_mixture(&adapters[..k], w)?,
            };
            let m = test.evaluate(&deltas)?;
            let setting = format!("{space} {}", weights_label(w));
            let (se, sg) = shares(m.accuracy, endpoint, frozen);
            rows.push(tag.row("merge", &setting, "accuracy", m.accuracy));
            rows.push(tag.row("merge", &setting, "loss", m.loss));
            rows.push(tag.row("merge", &setting, "share_of_endpoint", se));
            rows.push(tag.row("merge", &setting, "share_of_gain", sg));
        }
    }
    Ok(rows)
}

/// Linear barriers (Entezari et al.: height above the chord) of the test loss and error on the
/// path from `a` to `b` with `points` evenly spaced α, in each space.
pub fn barrier_rows(
    tag: &Tag,
    test: &Evaluator,
    a: &Adapter,
    b: &Adapter,
    points: usize,
    spaces: &[String],
) -> Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    for space in spaces {
        let sp = Space::parse(space)?;
        let mut loss = Vec::with_capacity(points);
        let mut err = Vec::with_capacity(points);
        for i in 0..points {
            let alpha = i as f64 / (points - 1) as f64;
            let m = test.evaluate(&interpolate(a, b, alpha, sp)?)?;
            loss.push((alpha, m.loss));
            err.push((alpha, 1.0 - m.accuracy));
        }
        let mid = match err.iter().find(|(a, _)| (a - 0.5).abs() < 1e-12) {
            Some((_, e)) => 1.0 - e,
            None => test.evaluate(&interpolate(a, b, 0.5, sp)?)?.accuracy,
        };
        rows.push(tag.row("barrier", space, "loss_barrier", barriers(&loss)?.linear));
        rows.push(tag.row("barrier", space, "error_barrier", barriers(&err)?.linear));
        rows.push(tag.row("barrier", space, "midpoint_accuracy", mid));
    }
    Ok(rows)
}

/// One task of a multi-task merge: its test evaluator, its own adapter and that adapter's
/// test accuracy.
pub struct TaskMember<'a> {
    /// Task name.
    pub task: String,
    /// Test evaluator with the task's head.
    pub test: &'a Evaluator,
    /// The task's adapter.
    pub adapter: &'a Adapter,
    /// Its own test accuracy.
    pub own: f64,
}

/// Multi-task merging: every operator merges the task adapters (default weights) and the
/// result is scored on every task; rows per task and the average (`task = all`).
pub fn multitask_rows(tag: &Tag, members: &[TaskMember], operators: &[String]) -> Result<Vec<Measurement>> {
    let adapters: Vec<&Adapter> = members.iter().map(|m| m.adapter).collect();
    let mut rows = Vec::new();
    for op in operators {
        let method = MergeMethod::parse(op)?;
        let deltas = merge(&adapters, &[], &method, &MergeOptions::default())?.deltas();
        let (mut acc, mut norm) = (0.0, 0.0);
        for m in members {
            let a = m.test.evaluate(&deltas)?.accuracy;
            let t = Tag { task: m.task.clone(), ..tag.clone() };
            rows.push(t.row("multitask", op, "accuracy", a));
            rows.push(t.row("multitask", op, "normalized_accuracy", a / m.own));
            acc += a;
            norm += a / m.own;
        }
        let n = members.len() as f64;
        let t = Tag { task: "all".into(), ..tag.clone() };
        rows.push(t.row("multitask", op, "accuracy", acc / n));
        rows.push(t.row("multitask", op, "normalized_accuracy", norm / n));
    }
    Ok(rows)
}

/// One-round federated learning: the clients train once from a common initialisation, then
/// every aggregator merges the same uploads; global test accuracy per aggregator. The setting
/// is `SPLIT HETERO AGGREGATOR`.
#[allow(clippy::too_many_arguments)]
pub fn federated_rows(
    tag: &Tag,
    backbone: &Backbone,
    env: &TaskEnv,
    cfg: &TrainConfig,
    opts: &FederatedOptions,
    aggregators: &[String],
    label: &str,
) -> Result<Vec<Measurement>> {
    let run = run_federated(backbone, env, cfg, opts, || {})?;
    let selected = &run.rounds.last().ok_or_else(|| anyhow!("internal: no federated round"))?.selected;
    let weights = aggregation_weights(&run.split, selected);
    let uploads: Vec<&Adapter> = run.last_uploads.iter().map(|(_, a)| a).collect();
    let max_rank = uploads.iter().flat_map(|a| a.modules.values().map(|f| f.rank())).max().unwrap_or(1);
    let mut rows = Vec::new();
    for agg in aggregators {
        let method = MergeMethod::parse(agg)?;
        let mut mo = MergeOptions { pad_ranks: true, ..MergeOptions::default() };
        if !method.keeps_low_rank() {
            mo.refactor_rank = Some(max_rank);
        }
        let merged = merge(&uploads, &weights, &method, &mo)?;
        let m = env.test.evaluate(&merged.deltas())?;
        rows.push(tag.row("federated", &format!("{label} {agg}"), "accuracy", m.accuracy));
    }
    Ok(rows)
}

/// The multilinear extension of the training loss over blocks: for each p, the mean loss of
/// `samples` coalitions that keep each block's adapter with probability p (seeded), minus
/// the all-on loss. Rows `F(p)` and `gap` per p, with setting `p=P`.
pub fn multilinear_rows(
    tag: &Tag,
    train: &Evaluator,
    adapter: &Adapter,
    ps: &[f64],
    samples: usize,
    seed: u64,
) -> Result<Vec<Measurement>> {
    let deltas = adapter.deltas();
    let all_on = train.evaluate(&deltas)?.loss;
    let mut rows = vec![tag.row("multilinear", "p=1", "F", all_on)];
    for &p in ps {
        let f = multilinear_loss(train, &deltas, p, samples, seed)?;
        rows.push(tag.row("multilinear", &format!("p={p}"), "F", f));
        rows.push(tag.row("multilinear", &format!("p={p}"), "gap", f - all_on));
    }
    Ok(rows)
}

/// The mean loss of `samples` coalitions that keep each block's updates with probability `p`
/// (a seeded Monte Carlo estimate of the multilinear extension F(p); exact L(N) at p = 1).
pub fn multilinear_loss(train: &Evaluator, deltas: &Deltas, p: f64, samples: usize, seed: u64) -> Result<f64> {
    if p >= 1.0 {
        return Ok(train.evaluate(deltas)?.loss);
    }
    let nb = train.backbone().num_blocks();
    let mut rng = rng_for(seed, &format!("multilinear-{p}"));
    let mut total = 0.0;
    for _ in 0..samples {
        let keep: Vec<bool> = (0..nb).map(|_| rng.random::<f64>() < p).collect();
        let kept: Deltas = deltas.iter().filter(|(k, _)| keep[k.block]).map(|(k, v)| (*k, v.clone())).collect();
        total += train.evaluate(&kept)?.loss;
    }
    Ok(total / samples as f64)
}

/// Checkpoints of one run: at each snapshot (step t of T), the schedule's rate p(t), the
/// all-on training loss L(N), F(p(t)) and the gap, and per-block Shapley values (with the
/// estimator's standard errors) of the game v(S) = −(training loss of coalition S).
pub fn trajectory_rows(
    tag: &Tag,
    train: &Evaluator,
    cfg: &TrainConfig,
    snapshots: &[(usize, Adapter)],
    spec: &super::spec::TrajectorySpec,
) -> Result<Vec<Measurement>> {
    use crate::analysis::layer_game::{GameValue, LayerGame};
    let schedule = crate::train::Schedule {
        method: cfg.method,
        p0: cfg.p0,
        stage1_ratio: cfg.stage1_ratio,
        total_steps: cfg.steps,
    };
    let estimator = crate::shapley::registry::parse(&spec.estimator)?;
    let mut rows = Vec::new();
    for (step, adapter) in snapshots {
        let setting = format!("t={:.2}", *step as f64 / cfg.steps as f64);
        let p = schedule.p(step - 1);
        let deltas = adapter.deltas();
        let all_on = train.evaluate(&deltas)?.loss;
        let f = multilinear_loss(train, &deltas, p, spec.samples, cfg.seed)?;
        rows.push(tag.row("trajectory", &setting, "p", p));
        rows.push(tag.row("trajectory", &setting, "all_on_loss", all_on));
        rows.push(tag.row("trajectory", &setting, "F", f));
        rows.push(tag.row("trajectory", &setting, "gap", f - all_on));
        let game = LayerGame::new(train, adapter, cfg.grouping, GameValue::NegLoss, "trajectory")?;
        let est = crate::shapley::estimate(
            &game,
            &crate::shapley::EstimateConfig::new(estimator.clone(), spec.budget, cfg.seed),
        )?;
        for (b, (v, se)) in est.values.iter().zip(&est.std_errors).enumerate() {
            rows.push(tag.row("trajectory-shapley", &setting, &format!("block{b:02}"), *v));
            rows.push(tag.row("trajectory-shapley", &setting, &format!("block{b:02}_se"), *se));
        }
    }
    Ok(rows)
}

/// Federated options of one heterogeneity setting.
pub fn federated_options(
    clients: usize,
    split: SplitMethod,
    ranks: &[usize],
    top_blocks: &[usize],
    first_aggregator: &str,
) -> Result<FederatedOptions> {
    Ok(FederatedOptions {
        clients,
        split,
        rounds: 1,
        client_fraction: 1.0,
        aggregator: MergeMethod::parse(first_aggregator)?,
        merge: MergeOptions::default(),
        client_ranks: ranks.to_vec(),
        client_top_blocks: top_blocks.to_vec(),
        evaluate_clients: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_of_endpoint_and_gain_by_hand() {
        // Frozen 0.3, endpoint 0.7, merged 0.6: 0.6/0.7 of the endpoint, 0.3/0.4 of the gain.
        let (e, g) = shares(0.6, 0.7, 0.3);
        assert!((e - 0.6 / 0.7).abs() < 1e-12 && (g - 0.75).abs() < 1e-12);
        assert!(shares(0.5, 0.3, 0.3).1.is_nan());
    }

    #[test]
    fn names_parse_with_clear_errors() {
        assert_eq!(structure_named("every-other-odd").unwrap(), Structure::EveryOtherOdd);
        assert!(structure_named("odd").unwrap_err().to_string().contains("every-other-even"));
        assert_eq!(split_named("iid", 8).unwrap(), SplitMethod::Iid);
        assert_eq!(split_named("dirichlet:0.5", 8).unwrap(), SplitMethod::Dirichlet { alpha: 0.5, min_size: 8 });
        assert!(split_named("dirichlet:-1", 8).is_err());
        assert_eq!(weights_label(&[1.0, 2.0]), "1:2");
    }

    #[test]
    fn delta_mixture_is_the_normalised_weighted_sum() {
        use crate::adapter::TargetModule;
        use crate::merge::testutil::{key, random_adapter};
        let keys = [key(0, TargetModule::Query)];
        let (a, b) = (random_adapter(&keys, 2, 3, 3, 1), random_adapter(&keys, 2, 3, 3, 2));
        let m = delta_mixture(&[&a, &b], &[1.0, 2.0]).unwrap();
        let (da, db) = (a.delta(&keys[0]), b.delta(&keys[0]));
        for i in 0..9 {
            let want = da.data[i] / 3.0 + 2.0 * db.data[i] / 3.0;
            assert!((m[&keys[0]].data[i] - want).abs() < 1e-6);
        }
    }
}
