//! Comparisons at matched fit: a merged, pruned or multi-task quantity regressed on the method
//! and on the endpoint accuracy of the runs it was made from, across a spec's tasks and sweep
//! points (learning rates, steps), so that the method's coefficient is its difference at equal
//! single-task accuracy. A method that underfits looks better on measures that reward small
//! updates; this separates the method from its fit. Standard errors: the delete-one-seed
//! jackknife over the whole regression ([`crate::stats::ols::jackknife_coefficients`]).

use super::inference::seeds_of;
use super::measure::Measurement;
use super::spec::Spec;
use crate::report::table::{Columns, Row};
use crate::stats::ols::{jackknife_coefficients, Coefficient};
use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// The endpoint metric every row is matched on.
pub const ENDPOINT: &str = "accuracy//test_accuracy";

/// One regression: a row of `matched_fit.parquet`.
pub struct MatchedFit {
    /// The quantity regressed (`measure/setting/metric`).
    pub quantity: String,
    /// The variant whose indicator is the method term.
    pub variant: String,
    /// The baseline it is compared with.
    pub baseline: String,
    /// Rows in the regression.
    pub rows: usize,
    /// Seeds.
    pub seeds: usize,
    /// The method's coefficient: the difference at equal endpoint accuracy.
    pub method: Coefficient,
    /// The common slope on the endpoint accuracy.
    pub slope: Coefficient,
    /// The plain mean difference over the same rows (variant − baseline), for comparison.
    pub raw_difference: f64,
    /// Why the regression could not be fitted (collinear design, too few seeds); empty when it was.
    pub not_estimable: String,
}

impl Row for MatchedFit {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("quantity", |r| r.quantity.clone())
            .col("variant", |r| r.variant.clone())
            .col("baseline", |r| r.baseline.clone())
            .col("rows", |r| r.rows as i64)
            .col("seeds", |r| r.seeds as i64)
            .col("raw_difference", |r| r.raw_difference)
            .col("matched_difference", |r| r.method.estimate)
            .col("se", |r| r.method.se)
            .col("df", |r| r.method.df)
            .col("ci95_lo", |r| r.method.lo)
            .col("ci95_hi", |r| r.method.hi)
            .col("p_value", |r| r.method.p)
            .col("endpoint_slope", |r| r.slope.estimate)
            .col("endpoint_slope_se", |r| r.slope.se)
            .col("not_estimable", |r| r.not_estimable.clone());
    }
}

/// The matched-fit regressions the spec asks for (`[report] matched_fit`): for each quantity and
/// each variant other than the baseline, `value ~ method + endpoint + task` over every row of
/// the two variants, where `endpoint` is the mean [`ENDPOINT`] of the row's seeds at the same
/// task and sweep point. Rows without an endpoint (multi-task averages) are left out.
pub fn matched_fits(spec: &Spec, rows: &[Measurement]) -> Result<Vec<MatchedFit>> {
    let key = |m: &Measurement| format!("{}/{}/{}", m.measure, m.setting, m.metric);
    let mut endpoint: BTreeMap<(String, u64, String, u64), f64> = BTreeMap::new();
    for m in rows.iter().filter(|m| key(m) == ENDPOINT) {
        for s in seeds_of(&m.seeds)? {
            endpoint.insert((m.task.clone(), m.x.to_bits(), m.variant.clone(), s), m.value);
        }
    }
    let mut out = Vec::new();
    for q in &spec.report.matched_fit {
        for v in spec.variants.iter().map(|v| &v.name).filter(|v| **v != spec.baseline) {
            let picked: Vec<&Measurement> = rows
                .iter()
                .filter(|m| key(m) == *q && (m.variant == *v || m.variant == spec.baseline) && m.value.is_finite())
                .collect();
            let tasks: Vec<String> = crate::analysis::summary::ordered_unique(picked.iter().map(|m| m.task.clone()));
            let (mut x, mut y, mut seeds) = (Vec::new(), Vec::new(), Vec::new());
            let (mut sum, mut count) = ([0.0f64; 2], [0usize; 2]);
            for m in picked {
                let s = seeds_of(&m.seeds)?;
                let ends: Option<Vec<f64>> = s
                    .iter()
                    .map(|&seed| endpoint.get(&(m.task.clone(), m.x.to_bits(), m.variant.clone(), seed)).copied())
                    .collect();
                let Some(ends) = ends else { continue };
                let is_variant = usize::from(m.variant == *v);
                let mut row = vec![is_variant as f64, ends.iter().sum::<f64>() / ends.len() as f64];
                row.extend(tasks.iter().map(|t| f64::from(u8::from(*t == m.task))));
                x.push(row);
                y.push(m.value);
                seeds.push(s);
                sum[is_variant] += m.value;
                count[is_variant] += 1;
            }
            if count[0] == 0 || count[1] == 0 {
                bail!("[report] matched_fit '{q}': no rows of `{v}` and `{}` with endpoint accuracies; list a merge, prune or multitask quantity", spec.baseline);
            }
            let n_seeds = seeds.iter().flatten().collect::<std::collections::BTreeSet<_>>().len();
            // A design that cannot separate the method from the fit (endpoints that do not vary
            // within a task, too few seeds) is reported as such, not as an error.
            let nan =
                Coefficient { estimate: f64::NAN, se: f64::NAN, df: f64::NAN, lo: f64::NAN, hi: f64::NAN, p: f64::NAN };
            let (c, not_estimable) = match jackknife_coefficients(&x, &y, &seeds) {
                Ok(c) => (c, String::new()),
                Err(e) => (vec![nan.clone(), nan], e.to_string()),
            };
            out.push(MatchedFit {
                quantity: q.clone(),
                variant: v.clone(),
                baseline: spec.baseline.clone(),
                rows: y.len(),
                seeds: n_seeds,
                method: c[0].clone(),
                slope: c[1].clone(),
                raw_difference: sum[1] / count[1] as f64 - sum[0] / count[0] as f64,
                not_estimable,
            });
        }
    }
    Ok(out)
}
