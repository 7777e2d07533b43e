//! The rows every measure writes: one measured number per row of `measurements.parquet`
//! (long format), loss-curve points of `curves.parquet`, per-example predictions of
//! `predictions.parquet`, and the tag that copies a cell's
//! identity into each of its rows.

use crate::report::table::table_row;
use anyhow::{anyhow, Result};
use polars::prelude::DataFrame;

table_row! {
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
        /// The measure's name ([`super::Measure::name`]): `accuracy`, `prune`, `merge`, ...
        pub measure: String,
        /// The measure's setting (`every-other-odd`, `factor 1:2`, `delta`, an operator, ...);
        /// empty when it has none.
        pub setting: String,
        /// Metric name (`test_accuracy`, `share_of_endpoint`, `loss_barrier`, ...).
        pub metric: String,
        /// The value.
        pub value: f64,
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
    /// The per-example rows of one evaluation of this cell on the test set of data seed
    /// `draw`.
    pub fn predictions(&self, evaluated: &str, draw: u64, examples: &crate::eval::Examples) -> Vec<Prediction> {
        let n = examples.labels.len().min(examples.predictions.len()).min(examples.losses.len());
        (0..n)
            .map(|i| Prediction {
                cell: self.cell.clone(),
                task: self.task.clone(),
                variant: self.variant.clone(),
                x: self.x,
                replicate: self.replicate,
                seeds: self.seeds.clone(),
                evaluated: evaluated.into(),
                draw: draw as i64,
                example: i as i64,
                label: i64::from(examples.labels[i]),
                prediction: i64::from(examples.predictions[i]),
                correct: examples.labels[i] == examples.predictions[i],
                loss: examples.losses[i],
            })
            .collect()
    }

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

table_row! {
    /// One test example scored by one evaluated model: a row of `predictions.parquet`.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Prediction {
        /// The grid cell that evaluated it.
        pub cell: String,
        /// Task of the test set.
        pub task: String,
        /// Variant name.
        pub variant: String,
        /// Value of the swept key (NaN without a sweep).
        pub x: f64,
        /// Replicate (as in `measurements.parquet`).
        pub replicate: i64,
        /// The run seeds of the evaluated model, `+`-separated.
        pub seeds: String,
        /// What was evaluated: `endpoint`, `merge factor 1:2`, `barrier delta alpha=0.5`,
        /// `prune every-other-odd`, `multitask ties`, `federated iid equal fedavg`, ...
        pub evaluated: String,
        /// The data seed of the test set (its draw): equal draws mean the same test items.
        pub draw: i64,
        /// Index of the example in the test set.
        pub example: i64,
        /// Its true class.
        pub label: i64,
        /// The predicted class.
        pub prediction: i64,
        /// `prediction == label`.
        pub correct: bool,
        /// Its cross-entropy.
        pub loss: f64,
    }
}

table_row! {
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

fn col_bool(df: &DataFrame, name: &str) -> Result<Vec<bool>> {
    let c = df.column(name).map_err(|e| anyhow!("column {name}: {e}"))?;
    let s = c.bool().map_err(|e| anyhow!("column {name}: {e}"))?;
    Ok(s.iter().map(|v| v.unwrap_or_default()).collect())
}

impl Prediction {
    /// Reads rows back from a `predictions.parquet` table.
    pub fn from_frame(df: &DataFrame) -> Result<Vec<Prediction>> {
        let (cell, task, variant, x) =
            (col_str(df, "cell")?, col_str(df, "task")?, col_str(df, "variant")?, col_f64(df, "x")?);
        let (rep, seeds, evaluated, draw) =
            (col_i64(df, "replicate")?, col_str(df, "seeds")?, col_str(df, "evaluated")?, col_i64(df, "draw")?);
        let (example, label, prediction) = (col_i64(df, "example")?, col_i64(df, "label")?, col_i64(df, "prediction")?);
        let (correct, loss) = (col_bool(df, "correct")?, col_f64(df, "loss")?);
        Ok((0..df.height())
            .map(|i| Prediction {
                cell: cell[i].clone(),
                task: task[i].clone(),
                variant: variant[i].clone(),
                x: x[i],
                replicate: rep[i],
                seeds: seeds[i].clone(),
                evaluated: evaluated[i].clone(),
                draw: draw[i],
                example: example[i],
                label: label[i],
                prediction: prediction[i],
                correct: correct[i],
                loss: loss[i],
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
