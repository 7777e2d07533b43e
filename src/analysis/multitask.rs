//! Multi-task merging: one adapter per task (each trained with that task's data and fixed
//! head on the shared frozen backbone), merged with every operator of [`crate::merge`], and
//! the merged adapter evaluated on every task with that task's own head. Accuracy is reported
//! as is and normalised by the task's own adapter (`merged accuracy / own accuracy`), the
//! usual multi-task-merging metric.

use super::summary::{err_of, group_ci, ordered_unique};
use super::Outputs;
use crate::adapter::Adapter;
use crate::eval::{Deltas, Evaluator};
use crate::merge::MergeOptions;
use crate::progress::Progress;
use crate::report::plot::{Bar, BarGroup, BarPlot};
use crate::report::table::{table_row, Table};
use crate::stats::MeanCi;
use anyhow::{bail, Result};
use std::collections::BTreeMap;

pub use crate::merge::Operator;

/// One task of the comparison.
pub struct TaskInput<'a> {
    /// Task name.
    pub name: String,
    /// The task's test evaluator (its own head).
    pub test: &'a Evaluator,
}

/// One trained adapter: method, run seed and the task (index into the task list) it learned.
pub struct TaskAdapter<'a> {
    /// Method name.
    pub method: String,
    /// Run seed.
    pub seed: u64,
    /// Index of its task.
    pub task: usize,
    /// The adapter.
    pub adapter: &'a Adapter,
}

/// Options shared by the merges (LoRA Align steps and learning rate, SVD rank, …); `align`
/// is set per operator.
#[derive(Clone, Debug, Default)]
pub struct MultitaskOptions {
    /// Base merge options.
    pub merge: MergeOptions,
}

/// A per-(method, operator) summary for the command's printout.
#[derive(Clone, Debug)]
pub struct MultitaskSummary {
    /// Method name.
    pub method: String,
    /// Operator name (`own` for each task's own adapter).
    pub operator: String,
    /// Mean over tasks of the test accuracy (mean and CI over seeds).
    pub accuracy: MeanCi,
    /// Mean over tasks of the normalised accuracy (mean and CI over seeds).
    pub normalized: MeanCi,
}

table_row! {
    /// One adapter or merge scored on one task: a row of `multitask_accuracy.parquet`.
    pub struct AccuracyRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// Operator name (`own` for the task's own adapter).
        pub operator: String,
        /// Task name.
        pub task: String,
        /// Test loss on the task.
        pub test_loss: f64,
        /// Test accuracy on the task.
        pub test_accuracy: f64,
        /// Test accuracy of the task's own adapter.
        pub own_accuracy: f64,
        /// Test accuracy of the frozen backbone on the task.
        pub frozen_accuracy: f64,
        /// `test_accuracy / own_accuracy`.
        pub normalized_accuracy: f64,
    }
}

table_row! {
    /// LoRA Align on one module of one merge: a row of `multitask_align.parquet`.
    pub struct AlignRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// Block of the module.
        pub block: i64,
        /// Module short name (`q`, `k`, …).
        pub module: String,
        /// Alignment gap before LoRA Align.
        pub gap_before: f64,
        /// Alignment gap after LoRA Align.
        pub gap_after: f64,
        /// Norm of the mixture.
        pub mixture_norm: f64,
        /// Mean absolute entry of the alignment matrix P.
        pub mean_abs_p: f64,
    }
}

table_row! {
    /// One (method, operator, task or `average`, metric) over seeds: a row of
    /// `multitask_summary.parquet`.
    pub struct SummaryRow {
        /// Method name.
        pub method: String,
        /// Operator name.
        pub operator: String,
        /// Task name, or `average` for the mean over tasks.
        pub task: String,
        /// `accuracy` or `normalized_accuracy`.
        pub metric: String,
        /// The metric over seeds.
        pub ci: MeanCi,
    }
}

/// Merges the task adapters of every (method, seed) with every operator and evaluates the
/// result on every task.
pub fn analyze(
    tasks: &[TaskInput],
    adapters: &[TaskAdapter],
    operators: &[Operator],
    opts: &MultitaskOptions,
    progress: &Progress,
) -> Result<(Outputs, Vec<MultitaskSummary>)> {
    if tasks.len() < 2 {
        bail!("multi-task merging needs at least two tasks; got {}", tasks.len());
    }
    if operators.is_empty() {
        bail!("no merge operators given; use e.g. --operators factor,delta-svd");
    }
    let frozen: Vec<f64> =
        tasks.iter().map(|t| Ok(t.test.evaluate(&Deltas::new())?.accuracy)).collect::<Result<_>>()?;
    let groups = group_by_run(tasks, adapters)?;
    let methods = ordered_unique(adapters.iter().map(|a| a.method.clone()));
    let mut rows: Vec<AccuracyRow> = Vec::new();
    let mut al: Vec<AlignRow> = Vec::new();
    let bar = progress.bar((groups.len() * (operators.len() + 1)) as u64, "multitask");
    for ((method, seed), slots) in &groups {
        let run = RunScores::new(tasks, method, *seed, slots, &frozen)?;
        rows.extend(run.own_rows()?);
        bar.inc(1);
        for op in operators {
            bar.set_message(format!("{method} seed {seed} {op}"));
            let (merged, align) = run.merged_rows(op, opts)?;
            rows.extend(merged);
            al.extend(align);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let op_names: Vec<String> =
        std::iter::once("own".to_string()).chain(operators.iter().map(|o| o.to_string())).collect();
    let task_names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
    let cis = AccuracyCis::of(&rows)?;
    let mut out = Outputs::default();
    out.figures.push(("multitask_operators.svg".into(), operators_figure(&methods, &op_names, &cis.avg_norm)?));
    for op in &op_names[1..] {
        let file = format!(
            "multitask_tasks_{}.svg",
            crate::runs::sanitize(&op.replace('+', "-").replace([':', ',', '='], "-"))
        );
        out.figures.push((file, tasks_figure(&methods, op, &task_names, &cis.per_task_acc, &cis.avg_acc, &frozen)?));
    }
    let summaries = cis.summaries(&methods, &op_names);
    out.tables.push(("multitask_accuracy.parquet".into(), Table::from_rows(&rows)));
    out.tables.push(("multitask_summary.parquet".into(), Table::from_rows(&cis.summary_rows())));
    if !al.is_empty() {
        out.tables.push(("multitask_align.parquet".into(), Table::from_rows(&al)));
    }
    Ok((out, summaries))
}

/// The task adapters of each (method, seed), one slot per task.
type RunGroups<'a> = BTreeMap<(String, u64), Vec<Option<&'a Adapter>>>;

/// Groups the adapters by (method, seed); refuses a task index out of range or a task twice.
fn group_by_run<'a>(tasks: &[TaskInput], adapters: &[TaskAdapter<'a>]) -> Result<RunGroups<'a>> {
    let mut groups = RunGroups::new();
    for a in adapters {
        if a.task >= tasks.len() {
            bail!(
                "adapter of {} seed {} names task {} but only {} tasks are given",
                a.method,
                a.seed,
                a.task,
                tasks.len()
            );
        }
        let slot = &mut groups.entry((a.method.clone(), a.seed)).or_insert_with(|| vec![None; tasks.len()])[a.task];
        if slot.is_some() {
            bail!("two adapters for {} seed {} on task {}; pass one per task", a.method, a.seed, tasks[a.task].name);
        }
        *slot = Some(a.adapter);
    }
    Ok(groups)
}

/// One (method, seed): its task adapters and each one's accuracy on its own task.
struct RunScores<'r, 'a> {
    /// The tasks.
    tasks: &'r [TaskInput<'a>],
    /// Method name.
    method: &'r str,
    /// Run seed.
    seed: u64,
    /// The adapter of every task, in task order.
    adapters: Vec<&'a Adapter>,
    /// Test accuracy of each task's own adapter.
    own: Vec<f64>,
    /// Test accuracy of the frozen backbone on each task.
    frozen: &'r [f64],
}

impl<'r, 'a> RunScores<'r, 'a> {
    /// Checks that every task has an adapter and scores each on its own task.
    fn new(
        tasks: &'r [TaskInput<'a>],
        method: &'r str,
        seed: u64,
        slots: &[Option<&'a Adapter>],
        frozen: &'r [f64],
    ) -> Result<Self> {
        let adapters: Vec<&Adapter> = slots
            .iter()
            .enumerate()
            .map(|(t, a)| {
                a.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{method} seed {seed} has no adapter for task {}; train one per task",
                        tasks[t].name
                    )
                })
            })
            .collect::<Result<_>>()?;
        let own: Vec<f64> = tasks
            .iter()
            .zip(&adapters)
            .map(|(t, a)| Ok(t.test.evaluate(&a.deltas())?.accuracy))
            .collect::<Result<_>>()?;
        Ok(Self { tasks, method, seed, adapters, own, frozen })
    }

    /// The row of operator `op` on task `t` with test loss `loss` and accuracy `acc`.
    fn row(&self, op: &str, t: usize, loss: f64, acc: f64) -> AccuracyRow {
        AccuracyRow {
            method: self.method.to_string(),
            seed: self.seed as i64,
            operator: op.to_string(),
            task: self.tasks[t].name.clone(),
            test_loss: loss,
            test_accuracy: acc,
            own_accuracy: self.own[t],
            frozen_accuracy: self.frozen[t],
            normalized_accuracy: acc / self.own[t],
        }
    }

    /// Every task's own adapter on its task (operator `own`).
    fn own_rows(&self) -> Result<Vec<AccuracyRow>> {
        let mut rows = Vec::new();
        for (t, task) in self.tasks.iter().enumerate() {
            let m = task.test.evaluate(&self.adapters[t].deltas())?;
            rows.push(self.row("own", t, m.loss, m.accuracy));
        }
        Ok(rows)
    }

    /// The merge of the task adapters with `op` on every task, and LoRA Align's report.
    fn merged_rows(&self, op: &Operator, opts: &MultitaskOptions) -> Result<(Vec<AccuracyRow>, Vec<AlignRow>)> {
        let outcome = op.merge(&self.adapters, &opts.merge)?;
        let deltas = outcome.merged.deltas();
        let mut rows = Vec::new();
        for (t, task) in self.tasks.iter().enumerate() {
            let m = task.test.evaluate(&deltas)?;
            rows.push(self.row(&op.to_string(), t, m.loss, m.accuracy));
        }
        let align = outcome
            .align
            .iter()
            .map(|(key, r)| AlignRow {
                method: self.method.to_string(),
                seed: self.seed as i64,
                block: key.block as i64,
                module: key.module.short().to_string(),
                gap_before: r.before,
                gap_after: r.after,
                mixture_norm: r.mixture_norm,
                mean_abs_p: r.mean_abs_p,
            })
            .collect();
        Ok((rows, align))
    }
}

/// Accuracy and normalised accuracy over seeds, per task and averaged over tasks.
struct AccuracyCis {
    /// Accuracy per (method, operator, task).
    per_task_acc: BTreeMap<(String, String, String), MeanCi>,
    /// Normalised accuracy per (method, operator, task).
    per_task_norm: BTreeMap<(String, String, String), MeanCi>,
    /// Mean over tasks of the accuracy, per (method, operator).
    avg_acc: BTreeMap<(String, String), MeanCi>,
    /// Mean over tasks of the normalised accuracy, per (method, operator).
    avg_norm: BTreeMap<(String, String), MeanCi>,
}

impl AccuracyCis {
    /// Per (method, operator, task) over seeds, and the task average per seed, then over seeds.
    fn of(rows: &[AccuracyRow]) -> Result<Self> {
        let key = |r: &AccuracyRow| (r.method.clone(), r.operator.clone(), r.task.clone());
        let per_task_acc = group_ci(rows.iter().map(|r| (key(r), r.test_accuracy)))?;
        let per_task_norm = group_ci(rows.iter().map(|r| (key(r), r.normalized_accuracy)))?;
        // (method, operator, seed) → (accuracies, normalised accuracies) over tasks.
        type PerSeed = BTreeMap<(String, String, i64), (Vec<f64>, Vec<f64>)>;
        let mut avg = PerSeed::new();
        for r in rows {
            let e = avg.entry((r.method.clone(), r.operator.clone(), r.seed)).or_default();
            e.0.push(r.test_accuracy);
            e.1.push(r.normalized_accuracy);
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let avg_acc = group_ci(avg.iter().map(|((m, o, _), (a, _))| ((m.clone(), o.clone()), mean(a))))?;
        let avg_norm = group_ci(avg.iter().map(|((m, o, _), (_, n))| ((m.clone(), o.clone()), mean(n))))?;
        Ok(Self { per_task_acc, per_task_norm, avg_acc, avg_norm })
    }

    /// One printout summary per (method, operator) with results, methods outer.
    fn summaries(&self, methods: &[String], op_names: &[String]) -> Vec<MultitaskSummary> {
        let mut summaries = Vec::new();
        for m in methods {
            for op in op_names {
                let key = (m.clone(), op.clone());
                if let (Some(a), Some(n)) = (self.avg_acc.get(&key), self.avg_norm.get(&key)) {
                    summaries.push(MultitaskSummary {
                        method: m.clone(),
                        operator: op.clone(),
                        accuracy: a.clone(),
                        normalized: n.clone(),
                    });
                }
            }
        }
        summaries
    }

    /// The rows of `multitask_summary.parquet`: per task, then the average over tasks.
    fn summary_rows(&self) -> Vec<SummaryRow> {
        let summary = |m: &String, o: &String, task: &str, metric: &str, c: &MeanCi| SummaryRow {
            method: m.clone(),
            operator: o.clone(),
            task: task.into(),
            metric: metric.into(),
            ci: c.clone(),
        };
        let mut s: Vec<SummaryRow> = Vec::new();
        s.extend(self.per_task_acc.iter().map(|((m, o, task), c)| summary(m, o, task, "accuracy", c)));
        s.extend(self.per_task_norm.iter().map(|((m, o, task), c)| summary(m, o, task, "normalized_accuracy", c)));
        s.extend(self.avg_acc.iter().map(|((m, o), c)| summary(m, o, "average", "accuracy", c)));
        s.extend(self.avg_norm.iter().map(|((m, o), c)| summary(m, o, "average", "normalized_accuracy", c)));
        s
    }
}

fn operators_figure(
    methods: &[String],
    ops: &[String],
    avg_norm: &BTreeMap<(String, String), MeanCi>,
) -> Result<String> {
    let groups = ops
        .iter()
        .map(|o| BarGroup {
            label: o.clone(),
            bars: methods
                .iter()
                .filter_map(|m| {
                    avg_norm.get(&(m.clone(), o.clone())).map(|c| Bar {
                        series: m.clone(),
                        value: c.mean,
                        err: err_of(c),
                    })
                })
                .collect(),
        })
        .collect();
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: "Multi-task merging: normalised accuracy (merged / own adapter), averaged over tasks (error bars 95% t-CI over seeds)".into(),
        x_label: "merge operator".into(),
        y_label: "normalised accuracy".into(),
        groups,
        ..Default::default()
    })
}

fn tasks_figure(
    methods: &[String],
    op: &str,
    tasks: &[String],
    per_task: &BTreeMap<(String, String, String), MeanCi>,
    avg: &BTreeMap<(String, String), MeanCi>,
    frozen: &[f64],
) -> Result<String> {
    let mut groups = Vec::new();
    let frozen_avg = frozen.iter().sum::<f64>() / frozen.len().max(1) as f64;
    for (t, name) in tasks
        .iter()
        .enumerate()
        .map(|(t, n)| (Some(t), n.clone()))
        .chain(std::iter::once((None, "average".to_string())))
    {
        let mut bars = Vec::new();
        for m in methods {
            for (series, o) in [(format!("{m} own adapter"), "own"), (format!("{m} merged"), op)] {
                let c = match t {
                    Some(_) => per_task.get(&(m.clone(), o.to_string(), name.clone())),
                    None => avg.get(&(m.clone(), o.to_string())),
                };
                if let Some(c) = c {
                    bars.push(Bar { series, value: c.mean, err: err_of(c) });
                }
            }
        }
        bars.push(Bar {
            series: "frozen backbone".into(),
            value: t.map(|t| frozen[t]).unwrap_or(frozen_avg),
            err: None,
        });
        groups.push(BarGroup { label: name, bars });
    }
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: format!("Multi-task merging with {op}: test accuracy per task, each with its own head (error bars 95% t-CI over seeds)"),
        x_label: "task".into(),
        y_label: "test accuracy".into(),
        groups,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TargetModule::{Query, Value};
    use crate::analysis::test_support::{random_adapter, tiny_env};

    #[test]
    fn operator_lists_parse() {
        let ops = Operator::parse_list("factor, ties:density=0.3,lambda=0.5,stack,factor+align,ta:lambda=0.3").unwrap();
        assert_eq!(ops.len(), 5);
        assert_eq!(ops[1].method.to_string(), "ties:density=0.3,lambda=0.5");
        assert!(ops[3].align && ops[3].method.name() == "factor");
        assert_eq!(ops[4].method.to_string(), "task-arithmetic:lambda=0.3");
        let names: Vec<String> = Operator::defaults().iter().map(|o| o.to_string()).collect();
        assert_eq!(names.len(), 6);
        assert_eq!(names[5], "factor+align");
        for op in Operator::defaults() {
            assert_eq!(Operator::parse(&op.to_string()).unwrap(), op);
        }
        assert!(Operator::parse("stack+align").is_err());
        assert!(Operator::parse_list(" , ").is_err());
        assert!(Operator::parse("slerp").is_err());
    }

    #[test]
    fn merged_adapters_are_scored_against_each_tasks_own_adapter() {
        let (bb, env_a) = tiny_env(2, 3, 12, 20);
        let (_, env_b) = tiny_env(2, 3, 12, 20);
        let tasks =
            [TaskInput { name: "a".into(), test: &env_a.test }, TaskInput { name: "b".into(), test: &env_b.test }];
        let ad = [random_adapter(&bb, &[Query, Value], 2, 1), random_adapter(&bb, &[Query, Value], 2, 2)];
        let inputs: Vec<TaskAdapter> = ad
            .iter()
            .enumerate()
            .map(|(t, a)| TaskAdapter { method: "lora".into(), seed: 1, task: t, adapter: a })
            .collect();
        let ops = Operator::parse_list("factor,stack,task-arithmetic:lambda=0.5").unwrap();
        let (out, summaries) =
            analyze(&tasks, &inputs, &ops, &MultitaskOptions::default(), &Progress::hidden()).unwrap();
        let own = summaries.iter().find(|s| s.operator == "own").unwrap();
        assert!((own.normalized.mean - 1.0).abs() < 1e-12);
        // Stacking with equal weights is the delta mean, i.e. task arithmetic with λ = 1/2.
        let stack = summaries.iter().find(|s| s.operator == "stack").unwrap();
        let ta = summaries.iter().find(|s| s.operator == "task-arithmetic:lambda=0.5").unwrap();
        assert!((stack.accuracy.mean - ta.accuracy.mean).abs() < 1e-9);
        assert_eq!(out.figures.len(), 4);
        // A missing task adapter is an error naming the task.
        let err = analyze(&tasks, &inputs[..1], &ops, &MultitaskOptions::default(), &Progress::hidden()).err().unwrap();
        assert!(err.to_string().contains("task b"), "{err}");
    }
}
