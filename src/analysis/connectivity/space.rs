//! The paths the connectivity analysis walks: straight lines in factor or delta space, straight
//! factor lines after a gauge alignment of seed B towards seed A, and learned curves; and the
//! alignment residuals per pair and module.

use crate::adapter::{Adapter, ModuleKey};
use crate::connectivity::gauge::{align_gauge, Gauge, GaugeReport};
use crate::connectivity::interpolate::Space;
use crate::merge::MergeOptions;
use crate::report::table::{named_cells, table_row};
use crate::train::curve::CurveKind;
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt;

/// One path between two seeds' adapters (the `space` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathSpace {
    /// Straight line in factor space (`factor`).
    Factor,
    /// Straight line in delta space (`delta`).
    Delta,
    /// Straight factor line after aligning B's gauge towards A (`factor-aligned-orth`, …).
    Aligned(Gauge),
    /// A learned curve in factor space through a trained control point (`curve-bezier`, …).
    Curve(CurveKind),
}

/// What kind of path a [`PathSpace`] is (the `path_kind` column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathKind {
    /// A straight line (factor or delta).
    Line,
    /// A straight factor line after gauge alignment.
    Aligned,
    /// A learned curve.
    Curve,
}

impl PathKind {
    /// `line`, `aligned` or `curve`.
    pub fn name(self) -> &'static str {
        match self {
            PathKind::Line => "line",
            PathKind::Aligned => "aligned",
            PathKind::Curve => "curve",
        }
    }
}

impl PathSpace {
    /// Every straight path (`--spaces` names), in table order.
    pub const LINES: [PathSpace; 5] = [
        PathSpace::Factor,
        PathSpace::Delta,
        PathSpace::Aligned(Gauge::Orthogonal),
        PathSpace::Aligned(Gauge::General),
        PathSpace::Aligned(Gauge::SignedPermutation),
    ];

    /// `factor`, `delta`, `factor-aligned-{orth,gl,perm}` or `curve-{bezier,polychain}`.
    pub fn name(self) -> &'static str {
        match self {
            PathSpace::Factor => "factor",
            PathSpace::Delta => "delta",
            PathSpace::Aligned(Gauge::Orthogonal) => "factor-aligned-orth",
            PathSpace::Aligned(Gauge::General) => "factor-aligned-gl",
            PathSpace::Aligned(Gauge::SignedPermutation) => "factor-aligned-perm",
            PathSpace::Curve(CurveKind::Bezier) => "curve-bezier",
            PathSpace::Curve(CurveKind::Polychain) => "curve-polychain",
        }
    }

    /// Parses a straight path's name (case-insensitive); curves are asked for with `--curve`.
    pub fn parse(s: &str) -> Result<PathSpace> {
        let s = s.trim().to_ascii_lowercase();
        if let Some(p) = PathSpace::LINES.iter().find(|p| p.name() == s) {
            return Ok(*p);
        }
        if s.starts_with("curve") {
            bail!("`{s}` is a learned curve, not a straight path; ask for it with --curve bezier or --curve polychain");
        }
        let names: Vec<&str> = PathSpace::LINES.iter().map(|p| p.name()).collect();
        bail!("unknown path space `{s}`; use one of {}", names.join(", "))
    }

    /// Line, aligned line or curve.
    pub fn kind(self) -> PathKind {
        match self {
            PathSpace::Factor | PathSpace::Delta => PathKind::Line,
            PathSpace::Aligned(_) => PathKind::Aligned,
            PathSpace::Curve(_) => PathKind::Curve,
        }
    }

    /// The plain interpolation space of a straight unaligned line.
    pub fn plain(self) -> Option<Space> {
        match self {
            PathSpace::Factor => Some(Space::Factor),
            PathSpace::Delta => Some(Space::Delta),
            PathSpace::Aligned(_) | PathSpace::Curve(_) => None,
        }
    }

    /// The gauge of an aligned line.
    pub fn gauge(self) -> Option<Gauge> {
        match self {
            PathSpace::Aligned(g) => Some(g),
            _ => None,
        }
    }
}

impl From<Space> for PathSpace {
    fn from(s: Space) -> Self {
        match s {
            Space::Factor => PathSpace::Factor,
            Space::Delta => PathSpace::Delta,
        }
    }
}

impl fmt::Display for PathSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

named_cells!(PathSpace, PathKind);

/// Seed B re-parameterised towards seed A, per gauge, with the per-module residuals.
pub(super) type AlignedEnds = BTreeMap<Gauge, (Adapter, BTreeMap<ModuleKey, GaugeReport>)>;

/// Seed B of a pair re-parameterised towards seed A in every gauge of `spaces`, with the
/// per-module residuals.
pub(super) fn aligned_endpoints(a: &Adapter, b: &Adapter, spaces: &[PathSpace]) -> Result<AlignedEnds> {
    let mut out = BTreeMap::new();
    for gauge in spaces.iter().filter_map(|s| s.gauge()) {
        out.insert(gauge, align_gauge(a, b, gauge, &MergeOptions::default())?);
    }
    Ok(out)
}

table_row! {
    /// How far seed B's factors are from seed A's before and after one alignment, per module
    /// and in total (`block` −1, `module` `all`, root of summed squares): a row of
    /// `connectivity_alignment.parquet`.
    pub struct AlignmentRow {
        /// Method name.
        pub method: String,
        /// Seed of endpoint A (the reference).
        pub seed_a: i64,
        /// Seed of endpoint B (the one re-parameterised).
        pub seed_b: i64,
        /// The aligned path space (`factor-aligned-orth`, …).
        pub space: PathSpace,
        /// Block of the module (−1 for the total).
        pub block: i64,
        /// Module name (`all` for the total).
        pub module: String,
        /// Factor distance `√(‖B_b − B_a‖² + ‖A_b − A_a‖²)` before alignment.
        pub distance_before: f64,
        /// The factor distance after alignment.
        pub distance_after: f64,
        /// `distance_after / distance_before` (NaN when the distance was 0).
        pub distance_ratio: f64,
        /// `‖factor-path midpoint − delta-path midpoint‖_F` before alignment.
        pub midpoint_gap_before: f64,
        /// The same gap after alignment.
        pub midpoint_gap_after: f64,
    }
}

/// The alignment rows of one pair and gauge: one per module, then the total.
pub(super) fn alignment_rows(
    method: &str,
    seeds: (u64, u64),
    gauge: Gauge,
    reports: &BTreeMap<ModuleKey, GaugeReport>,
) -> Vec<AlignmentRow> {
    let row = |block: i64, module: String, r: &GaugeReport| AlignmentRow {
        method: method.to_string(),
        seed_a: seeds.0 as i64,
        seed_b: seeds.1 as i64,
        space: PathSpace::Aligned(gauge),
        block,
        module,
        distance_before: r.distance_before,
        distance_after: r.distance_after,
        distance_ratio: if r.distance_before > 0.0 { r.distance_after / r.distance_before } else { f64::NAN },
        midpoint_gap_before: r.midpoint_gap_before,
        midpoint_gap_after: r.midpoint_gap_after,
    };
    let mut rows: Vec<AlignmentRow> =
        reports.iter().map(|(k, r)| row(k.block as i64, k.module.to_string(), r)).collect();
    let root_sum = |f: fn(&GaugeReport) -> f64| reports.values().map(|r| f(r).powi(2)).sum::<f64>().sqrt();
    let total = GaugeReport {
        distance_before: root_sum(|r| r.distance_before),
        distance_after: root_sum(|r| r.distance_after),
        midpoint_gap_before: root_sum(|r| r.midpoint_gap_before),
        midpoint_gap_after: root_sum(|r| r.midpoint_gap_after),
    };
    rows.push(row(-1, "all".into(), &total));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_curves_are_not_spaces() {
        for p in PathSpace::LINES {
            assert_eq!(PathSpace::parse(p.name()).unwrap(), p);
            assert!(p.kind() != PathKind::Curve);
        }
        assert_eq!(PathSpace::parse("Factor-Aligned-GL").unwrap(), PathSpace::Aligned(Gauge::General));
        assert_eq!(PathSpace::Curve(CurveKind::Bezier).name(), "curve-bezier");
        assert!(PathSpace::parse("curve-bezier").unwrap_err().to_string().contains("--curve"));
        assert!(PathSpace::parse("weights").unwrap_err().to_string().contains("factor-aligned-orth"));
    }
}
