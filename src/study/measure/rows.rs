//! The rows every measure writes: one measured number per row of `measurements.parquet`
//! (long format), loss-curve points of `curves.parquet`, per-example predictions of
//! `predictions.parquet`, and the tag that copies a cell's
//! identity into each of its rows.

use crate::report::table::table_row;
use anyhow::{anyhow, Result};
use polars::prelude::{Column, DataFrame, PolarsResult};

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

/// A cell type that a column of a read-back table holds, with what a null reads as.
trait ReadCell: Sized + Clone {
    /// Every value of `column`.
    fn read(column: &Column) -> PolarsResult<Vec<Self>>;
}

/// Strings; a null reads as the empty string.
impl ReadCell for String {
    fn read(column: &Column) -> PolarsResult<Vec<Self>> {
        Ok(column.str()?.iter().map(|v| v.unwrap_or_default().to_string()).collect())
    }
}

/// Float64; a null reads as NaN.
impl ReadCell for f64 {
    fn read(column: &Column) -> PolarsResult<Vec<Self>> {
        Ok(column.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect())
    }
}

/// Int64; a null reads as 0.
impl ReadCell for i64 {
    fn read(column: &Column) -> PolarsResult<Vec<Self>> {
        Ok(column.i64()?.iter().map(|v| v.unwrap_or_default()).collect())
    }
}

/// Boolean; a null reads as false.
impl ReadCell for bool {
    fn read(column: &Column) -> PolarsResult<Vec<Self>> {
        Ok(column.bool()?.iter().map(|v| v.unwrap_or_default()).collect())
    }
}

/// The column `name` of `df` as values of `T`; errors name the column.
fn read_column<T: ReadCell>(df: &DataFrame, name: &str) -> Result<Vec<T>> {
    let column = df.column(name).map_err(|e| anyhow!("column {name}: {e}"))?;
    T::read(column).map_err(|e| anyhow!("column {name}: {e}"))
}

/// A Float64 column as values (nulls as NaN); errors name the column.
pub(crate) fn col_f64(df: &DataFrame, name: &str) -> Result<Vec<f64>> {
    read_column(df, name)
}

/// Row `i` of a column read by [`read_column`].
fn nth<T: Clone>(values: &[T], i: usize) -> T {
    values[i].clone()
}

/// Implements `from_frame` for a `table_row!` type: each listed field (every field, or the
/// struct literal does not compile) is read from the column of its name.
macro_rules! rows_from_frame {
    ($(#[$doc:meta])* $row:ident { $($field:ident),+ $(,)? }) => {
        impl $row {
            $(#[$doc])*
            pub fn from_frame(df: &DataFrame) -> Result<Vec<$row>> {
                $( let $field = read_column(df, stringify!($field))?; )+
                Ok((0..df.height()).map(|i| $row { $($field: nth(&$field, i)),+ }).collect())
            }
        }
    };
}

rows_from_frame! {
    /// Reads rows back from a `measurements.parquet` table.
    Measurement { cell, task, variant, x, replicate, seeds, measure, setting, metric, value }
}

rows_from_frame! {
    /// Reads rows back from a `predictions.parquet` table.
    Prediction { cell, task, variant, x, replicate, seeds, evaluated, draw, example, label, prediction, correct, loss }
}

rows_from_frame! {
    /// Reads rows back from a `curves.parquet` table.
    CurvePoint { cell, task, variant, x, seed, step, loss, p }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::Table;

    #[test]
    fn rows_read_back_equal_the_rows_written() {
        let tag =
            Tag { cell: "c1".into(), task: "t".into(), variant: "v".into(), x: 0.5, replicate: 3, seeds: "3+4".into() };
        let measurements = vec![tag.row("merge", "factor 1:2", "accuracy", 0.75), tag.row("prune", "", "loss", -1.5)];
        let examples = crate::eval::Examples { labels: vec![0, 2], predictions: vec![0, 1], losses: vec![0.25, 2.0] };
        let predictions = tag.predictions("endpoint", 7, &examples);
        let curves = vec![CurvePoint {
            cell: "c1".into(),
            task: "t".into(),
            variant: "v".into(),
            x: 0.5,
            seed: 3,
            step: 9,
            loss: 1.25,
            p: 0.5,
        }];
        let frame = |t: Table| t.to_dataframe().unwrap();
        assert_eq!(Measurement::from_frame(&frame(Table::from_rows(&measurements))).unwrap(), measurements);
        assert_eq!(Prediction::from_frame(&frame(Table::from_rows(&predictions))).unwrap(), predictions);
        assert_eq!(CurvePoint::from_frame(&frame(Table::from_rows(&curves))).unwrap(), curves);
        let err = CurvePoint::from_frame(&frame(Table::from_rows(&measurements))).unwrap_err().to_string();
        assert!(err.contains("column seed"), "{err}");
    }
}
