//! The seed-level summary of the whole-adapter test barriers (linear-reference convention):
//! per method and path, the mean barrier over all seed pairs, the barrier each aligned line or
//! curve removes from the plain factor line (absolute and as a share), and each method minus
//! LoRA on the same pairs; each with a delete-one-seed jackknife 95% interval
//! ([`group_jackknife`]), since pairs that share a seed are not independent.

use super::space::PathSpace;
use super::{BarrierRow, Quantity, Scope, Split};
use crate::report::table::table_row;
use crate::stats::groups::group_jackknife;
use anyhow::Result;
use std::collections::BTreeMap;

table_row! {
    /// One seed-level estimate: a row of `connectivity_summary.parquet`.
    pub struct SummaryRow {
        /// Method name.
        pub method: String,
        /// Path space.
        pub space: PathSpace,
        /// What the barrier is measured on (`loss` or `error`).
        pub quantity: Quantity,
        /// `barrier` (the path's barrier), `removed` (factor barrier − this path's),
        /// `share_removed` ((factor − this) / factor, per pair) or `minus_lora` (this method's
        /// barrier − LoRA's on the same pair and path).
        pub statistic: String,
        /// Seeds (the jackknife's replicates).
        pub n_seeds: i64,
        /// Seed pairs averaged.
        pub n_pairs: i64,
        /// Mean over pairs.
        pub mean: f64,
        /// Lower end of the jackknife 95% interval (NaN with fewer than 3 seeds).
        pub ci95_lo: f64,
        /// Upper end of the jackknife 95% interval.
        pub ci95_hi: f64,
        /// Two-sided p-value of a zero mean (NaN with fewer than 3 seeds).
        pub p_value: f64,
    }
}

/// Per pair `(seed_a, seed_b)`, the whole-adapter test barrier (linear reference) of one
/// (method, space, quantity).
type PairValues = BTreeMap<(i64, i64), f64>;

/// The barriers of every (method, space, quantity), per pair.
fn pair_barriers(bars: &[BarrierRow]) -> BTreeMap<(String, PathSpace, &'static str), PairValues> {
    let mut out: BTreeMap<(String, PathSpace, &'static str), PairValues> = BTreeMap::new();
    for r in bars.iter().filter(|r| r.split == Split::Test && r.scope == Scope::All) {
        out.entry((r.method.clone(), r.space, r.quantity.name()))
            .or_default()
            .insert((r.seed_a, r.seed_b), r.barriers.linear);
    }
    out
}

/// The summary rows of every (method, space, quantity) in `bars`.
pub(super) fn summary_rows(bars: &[BarrierRow]) -> Result<Vec<SummaryRow>> {
    let all = pair_barriers(bars);
    let mut rows = Vec::new();
    for ((method, space, qname), values) in &all {
        let quantity = if *qname == Quantity::Loss.name() { Quantity::Loss } else { Quantity::Error };
        let mut push = |statistic: &str, v: &PairValues| -> Result<()> {
            if let Some(row) = estimate(method, *space, quantity, statistic, v)? {
                rows.push(row);
            }
            Ok(())
        };
        push("barrier", values)?;
        if *space != PathSpace::Factor && *space != PathSpace::Delta {
            if let Some(factor) = all.get(&(method.clone(), PathSpace::Factor, *qname)) {
                push("removed", &paired(factor, values, |f, s| f - s))?;
                push("share_removed", &paired(factor, values, |f, s| if f != 0.0 { (f - s) / f } else { f64::NAN }))?;
            }
        }
        if method != "lora" {
            if let Some(lora) = all.get(&("lora".to_string(), *space, *qname)) {
                push("minus_lora", &paired(lora, values, |l, m| m - l))?;
            }
        }
    }
    Ok(rows)
}

/// `f(x, y)` on the pairs both carry.
fn paired(x: &PairValues, y: &PairValues, f: impl Fn(f64, f64) -> f64) -> PairValues {
    x.iter().filter_map(|(k, xv)| y.get(k).map(|yv| (*k, f(*xv, *yv)))).collect()
}

/// The mean of `values` over pairs with its jackknife interval, when the pairs are every pair of
/// their seeds (3 or more seeds); the mean alone with 2 seeds; nothing when the pairs are
/// incomplete or a value is not finite.
fn estimate(
    method: &str,
    space: PathSpace,
    quantity: Quantity,
    statistic: &str,
    values: &PairValues,
) -> Result<Option<SummaryRow>> {
    if values.is_empty() || values.values().any(|v| !v.is_finite()) {
        return Ok(None);
    }
    let mut seeds: Vec<i64> = values.keys().flat_map(|(a, b)| [*a, *b]).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let n = seeds.len();
    if values.len() != n * (n - 1) / 2 {
        return Ok(None);
    }
    let mean = values.values().sum::<f64>() / values.len() as f64;
    let (lo, hi, p) = if n >= 3 {
        let index = |s: &i64| seeds.iter().position(|x| x == s).unwrap_or(0);
        let groups: Vec<(Vec<usize>, f64)> = values
            .iter()
            .map(|((a, b), v)| {
                let mut g = vec![index(a), index(b)];
                g.sort_unstable();
                (g, *v)
            })
            .collect();
        let e = group_jackknife(n, &groups, 0.95)?;
        (e.lo, e.hi, e.p_value)
    } else {
        (f64::NAN, f64::NAN, f64::NAN)
    };
    Ok(Some(SummaryRow {
        method: method.to_string(),
        space,
        quantity,
        statistic: statistic.to_string(),
        n_seeds: n as i64,
        n_pairs: values.len() as i64,
        mean,
        ci95_lo: lo,
        ci95_hi: hi,
        p_value: p,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectivity::barrier::Barriers;

    fn bar(method: &str, space: PathSpace, pair: (i64, i64), linear: f64) -> BarrierRow {
        BarrierRow {
            method: method.into(),
            seed_a: pair.0,
            seed_b: pair.1,
            space,
            path_kind: space.kind(),
            split: Split::Test,
            quantity: Quantity::Error,
            scope: Scope::All,
            block: -1,
            barriers: Barriers {
                linear,
                linear_alpha: 0.5,
                mean: linear,
                worst: linear,
                max_alpha: 0.5,
                midpoint_gap: linear,
                midpoint_interpolated: false,
            },
        }
    }

    #[test]
    fn shares_differences_and_jackknife_by_hand() {
        let pairs = [(1, 2), (1, 3), (2, 3)];
        let aligned = PathSpace::Aligned(crate::connectivity::gauge::Gauge::Orthogonal);
        let mut bars = Vec::new();
        for (i, p) in pairs.iter().enumerate() {
            bars.push(bar("lora", PathSpace::Factor, *p, 0.4));
            bars.push(bar("lora", aligned, *p, 0.1 * (i + 1) as f64));
            bars.push(bar("copra", PathSpace::Factor, *p, 0.2));
        }
        let rows = summary_rows(&bars).unwrap();
        let get = |m: &str, s: PathSpace, stat: &str| {
            rows.iter().find(|r| r.method == m && r.space == s && r.statistic == stat).unwrap()
        };
        // Aligned barriers 0.1, 0.2, 0.3: mean 0.2; removed 0.2; share (0.75 + 0.5 + 0.25)/3.
        assert!((get("lora", aligned, "barrier").mean - 0.2).abs() < 1e-12);
        assert!((get("lora", aligned, "removed").mean - 0.2).abs() < 1e-12);
        assert!((get("lora", aligned, "share_removed").mean - 0.5).abs() < 1e-12);
        let d = get("copra", PathSpace::Factor, "minus_lora");
        assert!((d.mean + 0.2).abs() < 1e-12 && d.n_seeds == 3 && d.n_pairs == 3);
        // A constant difference has a zero-width interval.
        assert!((d.ci95_lo - d.ci95_hi).abs() < 1e-12);
        let b = get("lora", aligned, "barrier");
        assert!(b.ci95_lo < 0.2 && b.ci95_hi > 0.2);
        // Two seeds: the mean only.
        let two = summary_rows(&bars[..3]).unwrap();
        assert!(two.iter().all(|r| r.n_seeds == 2 && r.ci95_lo.is_nan()));
    }
}
