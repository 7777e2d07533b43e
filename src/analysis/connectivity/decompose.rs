//! What the factor path is made of: along `ΔW(α) = (1−α)²ΔW_a + α²ΔW_b + α(1−α)·s·(B_a A_b +
//! B_b A_a)`, the test accuracy and loss of the delta path, of the factor path, and of the
//! factor path without its cross term (the endpoints' shrunk updates only), and the size of the
//! cross term relative to the factor path's `ΔW`.

use super::space::PathSpace;
use super::{PathRow, Split};
use crate::adapter::Adapter;
use crate::connectivity::gauge::factor_path_terms;
use crate::connectivity::interpolate::{interpolate, Space};
use crate::eval::{Evaluator, Metrics};
use crate::report::plot::{LinePlot, Series};
use crate::report::table::table_row;
use anyhow::Result;
use std::collections::BTreeMap;

table_row! {
    /// One α of one pair's factor-path decomposition (test split): a row of
    /// `connectivity_decomposition.parquet`.
    pub struct DecompositionRow {
        /// Method name.
        pub method: String,
        /// Seed of endpoint A (α = 0).
        pub seed_a: i64,
        /// Seed of endpoint B (α = 1).
        pub seed_b: i64,
        /// Interpolation coefficient α.
        pub alpha: f64,
        /// Test loss on the delta path.
        pub delta_loss: f64,
        /// Test accuracy on the delta path.
        pub delta_accuracy: f64,
        /// Test loss on the factor path.
        pub factor_loss: f64,
        /// Test accuracy on the factor path.
        pub factor_accuracy: f64,
        /// Test loss of the factor path without its cross term, `(1−α)²ΔW_a + α²ΔW_b`.
        pub endpoints_loss: f64,
        /// Test accuracy of the factor path without its cross term.
        pub endpoints_accuracy: f64,
        /// `‖cross term‖_F` over all modules.
        pub cross_norm: f64,
        /// `‖ΔW(α)‖_F` of the factor path over all modules.
        pub path_norm: f64,
        /// `cross_norm / path_norm` (NaN when the path's ΔW is 0).
        pub cross_relative: f64,
    }
}

/// The test metrics of a path at `alpha`, read from the already evaluated `paths` of this pair
/// when there, else evaluated.
fn path_metrics(
    paths: &[PathRow],
    key: (&str, u64, u64),
    space: Space,
    alpha: f64,
    eval: impl FnOnce() -> Result<Metrics>,
) -> Result<Metrics> {
    let found = paths.iter().find(|p| {
        p.method == key.0
            && p.seed_a == key.1 as i64
            && p.seed_b == key.2 as i64
            && p.space == PathSpace::from(space)
            && p.split == Split::Test
            && (p.alpha - alpha).abs() < 1e-12
    });
    match found {
        Some(p) => Ok(Metrics { loss: p.loss, accuracy: p.accuracy }),
        None => eval(),
    }
}

/// The decomposition rows of one pair on the α `grid` (test split).
pub(super) fn decomposition_rows(
    test: &Evaluator,
    key: (&str, u64, u64),
    a: &Adapter,
    b: &Adapter,
    grid: &[f64],
    paths: &[PathRow],
) -> Result<Vec<DecompositionRow>> {
    let mut rows = Vec::with_capacity(grid.len());
    for &alpha in grid {
        let full = interpolate(a, b, alpha, Space::Factor)?;
        let terms = factor_path_terms(a, b, alpha)?;
        let mut endpoints = full.clone();
        let mut cross2 = 0.0;
        for (k, t) in &terms {
            if let Some(m) = endpoints.get_mut(k) {
                *m = m.sub(&t.cross);
            }
            cross2 += t.cross.frobenius_norm().powi(2);
        }
        let path_norm = full.values().map(|m| m.frobenius_norm().powi(2)).sum::<f64>().sqrt();
        let cross_norm = cross2.sqrt();
        let delta =
            path_metrics(paths, key, Space::Delta, alpha, || test.evaluate(&interpolate(a, b, alpha, Space::Delta)?))?;
        let factor = path_metrics(paths, key, Space::Factor, alpha, || test.evaluate(&full))?;
        let ends = test.evaluate(&endpoints)?;
        rows.push(DecompositionRow {
            method: key.0.to_string(),
            seed_a: key.1 as i64,
            seed_b: key.2 as i64,
            alpha,
            delta_loss: delta.loss,
            delta_accuracy: delta.accuracy,
            factor_loss: factor.loss,
            factor_accuracy: factor.accuracy,
            endpoints_loss: ends.loss,
            endpoints_accuracy: ends.accuracy,
            cross_norm,
            path_norm,
            cross_relative: if path_norm > 0.0 { cross_norm / path_norm } else { f64::NAN },
        });
    }
    Ok(rows)
}

/// The mean over pairs, per α, of `value` of `method`'s rows.
fn mean_by_alpha(rows: &[DecompositionRow], method: &str, value: fn(&DecompositionRow) -> f64) -> Vec<(f64, f64)> {
    let mut by: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.method == method) {
        by.entry((r.alpha * 1e6).round() as i64).or_default().push(value(r));
    }
    by.into_iter().map(|(a, v)| (a as f64 / 1e6, v.iter().sum::<f64>() / v.len() as f64)).collect()
}

/// One figure for `method`: test accuracy of the delta path, the factor path and the factor
/// path without its cross term along α, and the cross term's relative size.
pub(super) fn decomposition_figure(rows: &[DecompositionRow], method: &str) -> Result<String> {
    type Curve = (&'static str, fn(&DecompositionRow) -> f64);
    let accuracy: [Curve; 3] = [
        ("delta path", |r| r.delta_accuracy),
        ("factor path", |r| r.factor_accuracy),
        ("factor path without cross term", |r| r.endpoints_accuracy),
    ];
    let panel = |title: &str, y: &str, series: Vec<Series>| LinePlot {
        title: title.into(),
        x_label: "α (0 = seed A, 1 = seed B)".into(),
        y_label: y.into(),
        series,
        ..Default::default()
    };
    let acc_series = accuracy.iter().map(|(l, f)| Series::new(*l, mean_by_alpha(rows, method, *f))).collect();
    let cross = vec![Series::new("‖cross‖ / ‖ΔW(α)‖", mean_by_alpha(rows, method, |r| r.cross_relative))];
    crate::report::plot::panels_svg(
        &format!("{method}: what the factor path is made of (test split, mean over seed pairs)"),
        &[
            panel("test accuracy", "test accuracy", acc_series),
            panel("relative size of the cross term", "Frobenius ratio", cross),
        ],
        2,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TargetModule::{Query, Value};
    use crate::analysis::test_support::{random_adapter, tiny_env};

    #[test]
    fn the_path_without_its_cross_term_is_the_shrunk_endpoints() {
        let (bb, env) = tiny_env(2, 3, 12, 16);
        let (a, b) = (random_adapter(&bb, &[Query, Value], 2, 1), random_adapter(&bb, &[Query, Value], 2, 2));
        let grid = [0.0, 0.3, 0.5, 1.0];
        let rows = decomposition_rows(&env.test, ("lora", 1, 2), &a, &b, &grid, &[]).unwrap();
        assert_eq!(rows.len(), grid.len());
        for r in &rows {
            let alpha = r.alpha;
            // (1−α)²ΔW_a + α²ΔW_b, built from the two adapters' own ΔW.
            let (da, db) = (a.deltas(), b.deltas());
            let ends: crate::eval::Deltas = da
                .iter()
                .map(|(k, m)| {
                    (*k, m.scale(((1.0 - alpha) * (1.0 - alpha)) as f32).add(&db[k].scale((alpha * alpha) as f32)))
                })
                .collect();
            let want = env.test.evaluate(&ends).unwrap();
            assert!((r.endpoints_loss - want.loss).abs() < 1e-4, "α {alpha}: {} vs {}", r.endpoints_loss, want.loss);
            let factor = env.test.evaluate(&interpolate(&a, &b, alpha, Space::Factor).unwrap()).unwrap();
            assert_eq!((r.factor_loss, r.factor_accuracy), (factor.loss, factor.accuracy));
            if alpha == 0.0 || alpha == 1.0 {
                assert_eq!(r.cross_norm, 0.0);
                assert_eq!(r.endpoints_accuracy, r.factor_accuracy);
                assert_eq!(r.delta_accuracy, r.factor_accuracy);
            } else {
                assert!(r.cross_relative > 0.0 && r.cross_relative.is_finite(), "α {alpha}");
            }
        }
    }
}
