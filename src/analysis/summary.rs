//! Summaries the analyses share: distinct values in first-seen order, the mean and Student-t
//! 95% CI of every key's values, and how a CI becomes table columns, an error bar or a band.

use crate::report::plot::Series;
use crate::report::table::{Columns, Field};
use crate::stats::{mean_ci, MeanCi};
use anyhow::Result;
use std::collections::BTreeMap;

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

/// Appends the columns `n` (Int64), `mean`, `std`, `ci95_lo`, `ci95_hi` (Float64) of the CI
/// each row holds: the value columns of every summary table.
pub(crate) fn ci_columns<R>(cols: &mut Columns<'_, R>, ci: impl Fn(&R) -> &MeanCi) {
    cols.col("n", |r| ci(r).n as i64)
        .col("mean", |r| ci(r).mean)
        .col("std", |r| ci(r).std)
        .col("ci95_lo", |r| ci(r).lo)
        .col("ci95_hi", |r| ci(r).hi);
}

/// A CI field of a row is the five columns of [`ci_columns`] (the field name is not used).
impl Field for MeanCi {
    fn add_columns<R>(cols: &mut Columns<'_, R>, _name: &str, get: impl Fn(&R) -> &Self) {
        ci_columns(cols, get);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::table::{table_row, Table};

    #[test]
    fn groups_keep_key_order_and_first_seen_order() {
        assert_eq!(ordered_unique(["b", "a", "b", "c", "a"].map(String::from)), ["b", "a", "c"]);
        let ci = group_ci([("y", 1.0), ("x", 2.0), ("y", 3.0)]).unwrap();
        assert_eq!(ci.keys().copied().collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!((ci["y"].n, ci["y"].mean), (2, 2.0));
        // Two samples 1 and 3: std √2, half-width t_{0.975,1}·√2/√2 = 12.706.
        assert!((ci["y"].std - 2f64.sqrt()).abs() < 1e-12);
        assert!((ci["y"].hi - (2.0 + 12.706_204_736)).abs() < 1e-6, "{}", ci["y"].hi);
        assert_eq!(err_of(&ci["y"]), Some((ci["y"].lo, ci["y"].hi)));
        assert_eq!(err_of(&ci["x"]), None, "one sample has no interval");
        let s = ci_series("m", &[(0.0, ci["x"].clone()), (1.0, ci["y"].clone())], true, Some(3));
        assert_eq!(s.points, vec![(0.0, 2.0), (1.0, 2.0)]);
        assert_eq!(s.band, Some(vec![(1.0, ci["y"].lo, ci["y"].hi)]));
        assert!(ci_series("m", &[(0.0, ci["x"].clone())], false, None).band.is_none());
    }

    table_row! {
        /// A key and a CI: the CI field becomes the five CI columns.
        struct KeyCi {
            key: String,
            ci: MeanCi,
        }
    }

    #[test]
    fn ci_columns_follow_the_keys() {
        let ci = mean_ci(&[1.0, 2.0, 4.0]).unwrap();
        let t = Table::from_rows(&[KeyCi { key: "k".into(), ci }]);
        let names: Vec<String> = t.describe_schema().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["key", "n", "mean", "std", "ci95_lo", "ci95_hi"]);
        assert_eq!(t.describe_schema()[1].1, "Int64");
    }
}
