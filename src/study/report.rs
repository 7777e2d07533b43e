//! The report of a finished analysis, built from its cells alone: merged Parquet tables, a
//! summary over replicates (mean and 95% interval, [`super::inference`]), paired comparisons of
//! every variant against the baseline (exploratory, raw p), the spec's primary tests (pooled
//! over tasks, Holm-adjusted together), SVG figures and a README whose Answer states only what
//! the primary tests show.

use super::cell::cells;
use super::inference::{differences, estimate, pooled, seeds_of, ByGroup, Estimate};
use super::measure::{CurvePoint, Measurement};
use super::spec::{Direction, PrimaryTest, Spec};
use super::store::{self, CellRecord};
use crate::analysis::summary::{ci_columns, ci_series, err_of, ordered_unique};
use crate::report::atomic::write_atomic;
use crate::report::plot::{bar_plot_svg, panels_svg, write_svg, Bar, BarGroup, BarPlot, LinePlot};
use crate::report::table::{Columns, Row, Table};
use crate::stats::{holm, mean_ci, MeanCi};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a summary or comparison is about: one measured quantity on one task at one x.
#[derive(Clone, Debug, PartialEq, PartialOrd)]
struct Key {
    measure: String,
    setting: String,
    metric: String,
    task: String,
    x: f64,
}

impl Key {
    fn of(m: &Measurement) -> Key {
        Key {
            measure: m.measure.clone(),
            setting: m.setting.clone(),
            metric: m.metric.clone(),
            task: m.task.clone(),
            x: m.x,
        }
    }
    fn quantity(&self) -> String {
        format!("{}/{}/{}", self.measure, self.setting, self.metric)
    }
    fn same(&self, o: &Key) -> bool {
        self.measure == o.measure
            && self.setting == o.setting
            && self.metric == o.metric
            && self.task == o.task
            && same_x(self.x, o.x)
    }
}

/// Equal sweep values, NaN (no sweep) equal to NaN.
fn same_x(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// One (quantity, task, x, variant) over replicates: a row of `summary.parquet`.
struct SummaryRow {
    key: Key,
    variant: String,
    est: Estimate,
    ci: MeanCi,
}

/// The key columns every summary and comparison row starts with.
fn key_columns<R>(cols: &mut Columns<'_, R>, key: fn(&R) -> &Key, variant: fn(&R) -> &String) {
    cols.col("measure", move |r| key(r).measure.clone())
        .col("setting", move |r| key(r).setting.clone())
        .col("metric", move |r| key(r).metric.clone())
        .col("task", move |r| key(r).task.clone())
        .col("x", move |r| key(r).x)
        .col("variant", move |r| variant(r).clone());
}

/// The design columns of an estimate: seeds per group, groups, the method, SE and df.
fn design_columns<R>(cols: &mut Columns<'_, R>, est: fn(&R) -> &Estimate) {
    cols.col("k", move |r| est(r).k as i64)
        .col("groups", move |r| est(r).groups as i64)
        .col("method", move |r| est(r).method().to_string())
        .col("se", move |r| est(r).se)
        .col("df", move |r| est(r).df);
}

impl Row for SummaryRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        key_columns(cols, |r| &r.key, |r| &r.variant);
        ci_columns(cols, |r| &r.ci);
        design_columns(cols, |r| &r.est);
    }
}

/// The test columns of a paired estimate.
fn test_columns<R>(cols: &mut Columns<'_, R>, est: fn(&R) -> &Estimate) {
    cols.col("n", move |r| est(r).n_seeds as i64)
        .col("mean_diff", move |r| est(r).mean)
        .col("ci95_lo", move |r| est(r).lo)
        .col("ci95_hi", move |r| est(r).hi)
        .col("p_value", move |r| est(r).p)
        .col("p_sign_flip", move |r| est(r).p_sign_flip)
        .col("p_floor", move |r| est(r).p_floor)
        .col("not_testable", move |r| est(r).not_testable.clone().unwrap_or_default());
    design_columns(cols, est);
}

/// A variant against the baseline on the same replicates: a row of `paired.parquet`
/// (exploratory: raw p-values, no adjustment).
struct PairedRow {
    key: Key,
    variant: String,
    baseline: String,
    est: Estimate,
}

impl Row for PairedRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        key_columns(cols, |r| &r.key, |r| &r.variant);
        cols.col("baseline", |r| r.baseline.clone());
        test_columns(cols, |r| &r.est);
    }
}

/// One primary test of the spec: a row of `primary.parquet`.
struct PrimaryRow {
    test: PrimaryTest,
    baseline: String,
    /// The tasks pooled.
    tasks: Vec<String>,
    est: Estimate,
    p_holm: f64,
}

impl PrimaryRow {
    /// What the test says about its claim.
    fn verdict(&self) -> &'static str {
        if self.est.not_testable.is_some() || self.p_holm.is_nan() {
            return "not testable";
        }
        if self.p_holm >= 0.05 {
            return "not shown";
        }
        let up = self.est.mean > 0.0;
        match (self.test.expect, up) {
            (Direction::Higher, true) | (Direction::Lower, false) => "holds",
            _ => "goes against the claim",
        }
    }
}

impl Row for PrimaryRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("claim", |r| r.test.claim.clone())
            .col("quantity", |r| r.test.quantity.clone())
            .col("variant", |r| r.test.variant.clone())
            .col("baseline", |r| r.baseline.clone())
            .col("expect", |r| format!("{:?}", r.test.expect).to_lowercase())
            .col("tasks", |r| r.tasks.join(","))
            .col("x", |r| r.test.x.unwrap_or(f64::NAN));
        test_columns(cols, |r| &r.est);
        cols.col("p_holm", |r| r.p_holm).col("verdict", |r| r.verdict().to_string());
    }
}

impl Row for CellRecord {
    fn columns(cols: &mut Columns<'_, Self>) {
        cols.col("cell", |r| r.id.clone())
            .col("wall_seconds", |r| r.wall_seconds)
            .col("training_seconds", |r| r.training_seconds.unwrap_or(f64::NAN))
            .col("machine", |r| r.machine.clone());
    }
}

/// Everything read back from the cells of a finished analysis.
struct Gathered {
    spec: Spec,
    backbone: String,
    records: Vec<CellRecord>,
    rows: Vec<Measurement>,
    curves: Vec<CurvePoint>,
}

fn gather(dir: &Path) -> Result<Gathered> {
    let spec_path = dir.join("spec.toml");
    if !spec_path.is_file() {
        bail!("{} has no spec.toml; run `copra-lab analyze SPEC` first (it writes the report folder)", dir.display());
    }
    let spec = super::tune::resolve(dir, Spec::read(&spec_path)?)?;
    let all = cells(&spec)?;
    store::migrate_legacy(dir, &all)?;
    let missing: Vec<&str> = all.iter().filter(|c| !store::is_done(dir, &c.id)).map(|c| c.id.as_str()).collect();
    if !missing.is_empty() {
        bail!(
            "{} of {} cells are not finished in {} (first: {}); run `copra-lab analyze` on the spec (every shard) first",
            missing.len(),
            all.len(),
            dir.display(),
            missing[0]
        );
    }
    let (mut records, mut rows, mut curves) = (Vec::new(), Vec::new(), Vec::new());
    for c in &all {
        let (r, m, cv) = store::read_cell(dir, &c.id)?;
        records.push(r);
        rows.extend(m);
        curves.extend(cv);
    }
    let backbone = match std::fs::read_to_string(dir.join("backbone.txt")) {
        Ok(t) => {
            let t = t.trim().to_string();
            match t.split_once(' ') {
                Some((name, fp)) => format!("`{name}` (weights fingerprint {fp})"),
                None => format!("`{t}`"),
            }
        }
        Err(_) => "not recorded".into(),
    };
    Ok(Gathered { spec, backbone, records, rows, curves })
}

/// Values of each (key, variant) by replicate (its group of seeds), keys in first-seen order.
type Grouped = Vec<(Key, BTreeMap<String, ByGroup>)>;

fn group(rows: &[Measurement]) -> Result<Grouped> {
    let mut out: Grouped = Vec::new();
    for m in rows {
        let k = Key::of(m);
        let pos = match out.iter().rposition(|(e, _)| e.same(&k)) {
            Some(p) => p,
            None => {
                out.push((k, BTreeMap::new()));
                out.len() - 1
            }
        };
        out[pos].1.entry(m.variant.clone()).or_default().insert(seeds_of(&m.seeds)?, m.value);
    }
    Ok(out)
}

fn is_headline(spec: &Spec, key: &Key, first_measure: &str) -> bool {
    if spec.report.headline.is_empty() {
        key.measure == first_measure
    } else {
        spec.report.headline.iter().any(|h| *h == key.quantity())
    }
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "∞".into()
        } else {
            "−∞".into()
        }
    } else if v != 0.0 && v.abs() < 1e-3 {
        format!("{v:.2e}")
    } else {
        format!("{v:.4}")
    }
}

fn x_label(spec: &Spec, x: f64) -> String {
    if x.is_nan() {
        String::new()
    } else {
        format!("{} = {x}", spec.sweep.key)
    }
}

fn file_stem(q: &str) -> String {
    let s: String = q.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let mut out = String::new();
    for part in s.split('-').filter(|p| !p.is_empty()) {
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(part);
    }
    out
}

/// Rebuilds the tables, figures and README of the finished analysis in `dir` from its cells;
/// returns the README's path. Errors, naming the first one, when cells are missing.
pub fn write_report(dir: &Path) -> Result<PathBuf> {
    let g = gather(dir)?;
    let spec = &g.spec;
    Table::from_rows(&g.rows).write_parquet(&dir.join("measurements.parquet"))?;
    Table::from_rows(&g.records).write_parquet(&dir.join("cells.parquet"))?;
    if !g.curves.is_empty() {
        Table::from_rows(&g.curves).write_parquet(&dir.join("curves.parquet"))?;
    }
    super::items::write_tables(dir, g.records.iter().map(|r| r.id.as_str()), &spec.baseline)?;
    // A headline that names no measured quantity would silently drop out of the Answer.
    let measured = ordered_unique(g.rows.iter().map(|m| Key::of(m).quantity()));
    if let Some(h) = spec.report.headline.iter().find(|h| !measured.contains(h)) {
        bail!(
            "[report] headline '{h}' names no measured quantity (measure/setting/metric); fix it in the spec and rerun analyze (the cells are kept); measured: {}",
            measured.join(", ")
        );
    }
    let grouped = group(&g.rows)?;
    let variants: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
    let first_measure = g.rows.first().map(|m| m.measure.clone()).unwrap_or_default();
    let mut summary = Vec::new();
    let mut paired = Vec::new();
    for (key, by_variant) in &grouped {
        for v in &variants {
            if let Some(vals) = by_variant.get(v) {
                if vals.values().any(|x| x.is_finite()) {
                    let est = estimate(vals)?;
                    summary.push(SummaryRow { key: key.clone(), variant: v.clone(), ci: est.mean_ci(), est });
                }
            }
        }
        let Some(base) = by_variant.get(&spec.baseline) else { continue };
        for v in variants.iter().filter(|v| **v != spec.baseline) {
            let Some(vals) = by_variant.get(v) else { continue };
            let d = differences(base, vals);
            if d.is_empty() {
                continue;
            }
            paired.push(PairedRow {
                key: key.clone(),
                variant: v.clone(),
                baseline: spec.baseline.clone(),
                est: estimate(&d)?,
            });
        }
    }
    let primary = primary_tests(spec, &grouped)?;
    Table::from_rows(&summary).write_parquet(&dir.join("summary.parquet"))?;
    Table::from_rows(&paired).write_parquet(&dir.join("paired.parquet"))?;
    if primary.is_empty() {
        // A spec without primary tests has no table (an earlier version's must not linger).
        let _ = std::fs::remove_file(dir.join("primary.parquet"));
    } else {
        Table::from_rows(&primary).write_parquet(&dir.join("primary.parquet"))?;
    }
    let matched = super::matched_fit::matched_fits(spec, &g.rows)?;
    if !matched.is_empty() {
        Table::from_rows(&matched).write_parquet(&dir.join("matched_fit.parquet"))?;
    }
    // Figures of an earlier report (another spec version) must not linger.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("fig-") && name.ends_with(".svg") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let figures = write_figures(dir, spec, &summary, &g.curves)?;
    let mut readme = readme(spec, &g, &summary, &paired, &primary, &figures, &first_measure);
    super::tune::insert_section(&mut readme, &super::tune::write_tables(dir, spec)?);
    readme.push_str(&matched_fit_section(&matched));
    let path = dir.join("README.md");
    write_atomic(&path, readme.as_bytes())?;
    Ok(path)
}

/// The spec's primary tests: each pools its quantity's per-replicate differences (variant −
/// baseline, or the variant it names with `against`) over its tasks (and sweep points, unless it names one), and Holm adjusts over all
/// of them together. Errors name a test whose quantity has no paired values.
fn primary_tests(spec: &Spec, grouped: &Grouped) -> Result<Vec<PrimaryRow>> {
    let mut out = Vec::new();
    for t in &spec.report.primary {
        let baseline = t.against.as_ref().unwrap_or(&spec.baseline);
        let mut sets = Vec::new();
        let mut tasks = Vec::new();
        for (key, by_variant) in grouped {
            let in_tasks = t.tasks.is_empty() || t.tasks.contains(&key.task);
            let at_x = t.x.is_none_or(|x| same_x(x, key.x));
            if key.quantity() != t.quantity || !in_tasks || !at_x {
                continue;
            }
            let (Some(base), Some(vals)) = (by_variant.get(baseline), by_variant.get(&t.variant)) else {
                continue;
            };
            sets.push(differences(base, vals));
            if !tasks.contains(&key.task) {
                tasks.push(key.task.clone());
            }
        }
        let d = pooled(&sets);
        if d.is_empty() {
            bail!(
                "[[report.primary]] '{}': no replicate has values of `{}` for both `{}` and `{}` on every pooled task; check the quantity, variant and tasks",
                t.claim,
                t.quantity,
                t.variant,
                baseline
            );
        }
        out.push(PrimaryRow {
            test: t.clone(),
            baseline: baseline.clone(),
            tasks,
            est: estimate(&d)?,
            p_holm: f64::NAN,
        });
    }
    let adjusted =
        holm(&out.iter().map(|r| if r.est.not_testable.is_some() { f64::NAN } else { r.est.p }).collect::<Vec<_>>());
    for (r, p) in out.iter_mut().zip(adjusted) {
        r.p_holm = p;
    }
    Ok(out)
}

/// Headline quantities in first-seen order.
fn headline_quantities(spec: &Spec, summary: &[SummaryRow], first_measure: &str) -> Vec<String> {
    ordered_unique(summary.iter().filter(|r| is_headline(spec, &r.key, first_measure)).map(|r| r.key.quantity()))
}

fn write_figures(
    dir: &Path,
    spec: &Spec,
    summary: &[SummaryRow],
    curves: &[CurvePoint],
) -> Result<Vec<(String, String)>> {
    let first_measure = summary.first().map(|r| r.key.measure.clone()).unwrap_or_default();
    let mut out = Vec::new();
    let quantities = headline_quantities(spec, summary, &first_measure);
    let tasks = ordered_unique(summary.iter().map(|r| r.key.task.clone()));
    if spec.sweep.is_empty() && tasks.len() == 1 {
        // One task: one bar plot per (measure, metric), a group of bars per setting.
        let families = ordered_unique(quantities.iter().map(|q| {
            let parts: Vec<&str> = q.splitn(3, '/').collect();
            format!("{}/{}", parts[0], parts.get(2).unwrap_or(&""))
        }));
        for fam in families {
            let (measure, metric) = fam.split_once('/').unwrap_or((&fam, ""));
            let rows: Vec<&SummaryRow> = summary
                .iter()
                .filter(|r| {
                    r.key.measure == measure && r.key.metric == metric && quantities.contains(&r.key.quantity())
                })
                .collect();
            let settings = ordered_unique(rows.iter().map(|r| r.key.setting.clone()));
            let groups = settings
                .iter()
                .map(|st| BarGroup {
                    label: if st.is_empty() { tasks[0].clone() } else { st.clone() },
                    bars: rows
                        .iter()
                        .filter(|r| &r.key.setting == st)
                        .map(|r| Bar { series: r.variant.clone(), value: r.ci.mean, err: err_of(&r.ci) })
                        .collect(),
                })
                .collect::<Vec<_>>();
            let width = (200 + 60 * rows.len()).clamp(800, 2400) as u32;
            let svg = bar_plot_svg(&BarPlot {
                title: format!("{}: {measure} {metric}, mean and 95% CI over seeds", tasks[0]),
                x_label: if settings.len() > 1 { "setting".into() } else { "task".into() },
                y_label: metric.into(),
                groups,
                size: (width, 500),
            })?;
            let name = format!("fig-{}.svg", file_stem(&fam));
            write_svg(&dir.join(&name), &svg)?;
            out.push((fam, name));
        }
    }
    for q in quantities.iter().filter(|_| !(spec.sweep.is_empty() && tasks.len() == 1)) {
        let q = q.clone();
        let rows: Vec<&SummaryRow> = summary.iter().filter(|r| r.key.quantity() == q).collect();
        let tasks = ordered_unique(rows.iter().map(|r| r.key.task.clone()));
        let name = format!("fig-{}.svg", file_stem(&q));
        let svg = if spec.sweep.is_empty() {
            let groups = tasks
                .iter()
                .map(|t| BarGroup {
                    label: t.clone(),
                    bars: rows
                        .iter()
                        .filter(|r| &r.key.task == t)
                        .map(|r| Bar { series: r.variant.clone(), value: r.ci.mean, err: err_of(&r.ci) })
                        .collect(),
                })
                .collect();
            bar_plot_svg(&BarPlot {
                title: format!("{q}: mean and 95% CI over seeds"),
                x_label: "task".into(),
                y_label: q.rsplit('/').next().unwrap_or("").into(),
                groups,
                ..BarPlot::default()
            })?
        } else {
            let panels: Vec<LinePlot> = tasks
                .iter()
                .map(|t| {
                    let mut p =
                        LinePlot::new(format!("{t}: {q}"), spec.sweep.key.clone(), q.rsplit('/').next().unwrap_or(""));
                    p.log_x = spec.sweep.values.iter().all(|v| *v > 0.0);
                    for v in ordered_unique(rows.iter().map(|r| r.variant.clone())) {
                        let pts: Vec<(f64, MeanCi)> = rows
                            .iter()
                            .filter(|r| &r.key.task == t && r.variant == v)
                            .map(|r| (r.key.x, r.ci.clone()))
                            .collect();
                        p.series.push(ci_series(&v, &pts, false, None));
                    }
                    p
                })
                .collect();
            panels_svg(&format!("{q}: mean and 95% band over seeds"), &panels, panels.len().min(3))?
        };
        write_svg(&dir.join(&name), &svg)?;
        out.push((q, name));
    }
    if !curves.is_empty() {
        let mut panels = Vec::new();
        let keys = ordered_unique(curves.iter().map(|c| format!("{}\u{1}{}", c.task, c.x)));
        for k in keys {
            let (task, x) = k.split_once('\u{1}').unwrap_or((&k, ""));
            let x: f64 = x.parse().unwrap_or(f64::NAN);
            let xl = x_label(spec, x);
            let mut p = LinePlot::new(format!("{task} {xl}"), "step", "training loss (window mean)");
            // A band reaching 0 or below (few seeds, each on its own data draw) has no log axis.
            let mut positive = true;
            for v in ordered_unique(curves.iter().map(|c| c.variant.clone())) {
                let mut by_step: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
                for c in curves.iter().filter(|c| c.task == task && c.variant == v && same_x(c.x, x)) {
                    by_step.entry(c.step).or_default().push(c.loss);
                }
                let pts: Vec<(f64, MeanCi)> =
                    by_step.into_iter().filter_map(|(s, l)| mean_ci(&l).ok().map(|c| (s as f64, c))).collect();
                positive &= pts.iter().all(|(_, c)| c.lo > 0.0 || c.lo.is_nan());
                if !pts.is_empty() {
                    p.series.push(ci_series(&v, &pts, false, None));
                }
            }
            p.log_y = positive;
            panels.push(p);
        }
        let svg = panels_svg("training loss: mean and 95% band over seeds", &panels, panels.len().min(2))?;
        write_svg(&dir.join("fig-curves.svg"), &svg)?;
        out.push(("training loss curves".into(), "fig-curves.svg".into()));
    }
    Ok(out)
}

fn readme(
    spec: &Spec,
    g: &Gathered,
    summary: &[SummaryRow],
    paired: &[PairedRow],
    primary: &[PrimaryRow],
    figures: &[(String, String)],
    first_measure: &str,
) -> String {
    let mut s = String::new();
    let title = spec.question.lines().next().unwrap_or("");
    let _ = writeln!(s, "# {}: {title}\n", spec.name);
    let _ = writeln!(
        s,
        "Generated by `copra-lab report reports/{}` from the tables in this folder; do not edit.\n",
        spec.name
    );
    let _ = writeln!(s, "## Question\n\n{}\n", spec.question);
    let _ = writeln!(s, "## Setup\n");
    let _ = writeln!(s, "- Backbone: {}", g.backbone);
    let _ = writeln!(s, "- Tasks: {}", spec.tasks.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", "));
    let _ = writeln!(s, "- Seeds: {:?} (baseline of the paired comparisons: `{}`)", spec.seeds, spec.baseline);
    for v in &spec.variants {
        let o = if v.overrides.is_empty() { "(base config)".to_string() } else { v.overrides.clone() };
        let _ = writeln!(s, "- Variant `{}`: {o}", v.name);
    }
    if !spec.sweep.is_empty() {
        let _ = writeln!(s, "- Sweep: `{}` over {:?}", spec.sweep.key, spec.sweep.values);
    }
    let wall: f64 = g.records.iter().map(|r| r.wall_seconds).sum();
    let machines = ordered_unique(g.records.iter().map(|r| r.machine.clone()));
    let training: Option<f64> = g.records.iter().map(|r| r.training_seconds).sum();
    let _ = match training {
        Some(t) => writeln!(
            s,
            "- Cells: {}; summed cell wall time {:.1} min, of which {:.1} min trained runs (each run's training counts for the first cell that read it; cached runs cost nothing; shards running in parallel finish sooner) on {}",
            g.records.len(),
            wall / 60.0,
            t / 60.0,
            machines.join("; ")
        ),
        None => writeln!(
            s,
            "- Cells: {}; summed cell wall time {:.1} min (cells written before copra-lab recorded training time leave out the runs trained before them; shards running in parallel finish sooner) on {}",
            g.records.len(),
            wall / 60.0,
            machines.join("; ")
        ),
    };
    let _ = writeln!(
        s,
        "- Reproduce: `copra-lab analyze analyses/{}.toml`; rebuild this README: `copra-lab report reports/{}`",
        spec.name, spec.name
    );
    let _ = writeln!(s, "- The exact spec is `spec.toml` in this folder.");
    if !spec.scale_up.is_empty() {
        let _ = writeln!(s, "\n**Scaling up.** {}", spec.scale_up);
    }
    let _ = writeln!(s, "\n## Answer\n");
    s.push_str(&answer(spec, primary));
    let quantities = headline_quantities(spec, summary, first_measure);
    if !figures.is_empty() {
        let _ = writeln!(s, "\n## Figures\n");
        for (q, f) in figures {
            let _ = writeln!(s, "![{q}]({f})\n");
        }
    }
    let _ = writeln!(s, "## Results: mean and 95% interval over replicates\n");
    let _ = writeln!(s, "{INTERVALS}\n");
    let _ = writeln!(
        s,
        "| quantity | task | {} variant | seeds | groups | mean | std | 95% CI |",
        if spec.sweep.is_empty() { "" } else { "x |" }
    );
    let _ = writeln!(s, "|---|---|{}---|---|---|---|---|---|", if spec.sweep.is_empty() { "" } else { "---|" });
    for r in summary.iter().filter(|r| quantities.contains(&r.key.quantity())) {
        let x = if spec.sweep.is_empty() { String::new() } else { format!("{} |", r.key.x) };
        let _ = writeln!(
            s,
            "| {} | {} | {x} {} | {} | {} | {} | {} | [{}, {}] |",
            r.key.quantity(),
            r.key.task,
            r.variant,
            r.est.n_seeds,
            r.est.groups,
            num(r.est.mean),
            num(r.est.std),
            num(r.est.lo),
            num(r.est.hi)
        );
    }
    let _ = writeln!(s, "\n## Exploratory: every variant against `{}` per task (same replicates)\n", spec.baseline);
    let _ = writeln!(
        s,
        "Raw p-values, not adjusted for the many comparisons: a pattern here is a lead for a new primary test, not a finding. `sign-flip p` is the exact test over single runs (10 seeds or fewer); `floor` is the smallest p an exact sign-flip test on that many seeds can give.\n"
    );
    let _ = writeln!(
        s,
        "| quantity | task | {} variant | seeds | mean difference | 95% CI | p | sign-flip p | floor |",
        if spec.sweep.is_empty() { "" } else { "x |" }
    );
    let _ = writeln!(s, "|---|---|{}---|---|---|---|---|---|---|", if spec.sweep.is_empty() { "" } else { "---|" });
    for p in paired.iter().filter(|p| quantities.contains(&p.key.quantity())) {
        let x = if spec.sweep.is_empty() { String::new() } else { format!("{} |", p.key.x) };
        let p_text = match &p.est.not_testable {
            Some(why) => format!("not testable ({why})"),
            None => num(p.est.p),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {x} {} | {} | {} | [{}, {}] | {p_text} | {} | {} |",
            p.key.quantity(),
            p.key.task,
            p.variant,
            p.est.n_seeds,
            num(p.est.mean),
            num(p.est.lo),
            num(p.est.hi),
            num(p.est.p_sign_flip),
            num(p.est.p_floor)
        );
    }
    let _ = writeln!(s, "\n## Files\n");
    let _ = writeln!(s, "- `measurements.parquet`: every measured number (long format: cell, task, variant, x, replicate, seeds, measure, setting, metric, value).");
    let _ = writeln!(
        s,
        "- `summary.parquet`: mean, std, 95% interval, SE, df and method per quantity, task, x and variant."
    );
    let _ = writeln!(
        s,
        "- `paired.parquet`: every variant against `{}` per quantity, task and x (exploratory: raw, sign-flip and floor p-values).",
        spec.baseline
    );
    if !primary.is_empty() {
        let _ = writeln!(
            s,
            "- `primary.parquet`: the primary tests (pooled over tasks), with Holm-adjusted p-values and verdicts."
        );
    }
    let _ = writeln!(
        s,
        "- `cells.parquet`: wall time and machine of each cell; `cells/`: the per-cell parts (resumable, shardable)."
    );
    if !g.curves.is_empty() {
        let _ = writeln!(s, "- `curves.parquet`: training-loss curves (window means) of every run.");
    }
    s
}

/// The README section of the matched-fit regressions (empty without any).
fn matched_fit_section(rows: &[super::matched_fit::MatchedFit]) -> String {
    let mut s = String::new();
    if rows.is_empty() {
        return s;
    }
    let _ = writeln!(s, "\n## At matched fit (secondary, exploratory)\n");
    let _ = writeln!(
        s,
        "Each quantity regressed on the method, the mean endpoint accuracy of the runs it was made from (`{}`), and one intercept per task, over every task and sweep point; the method's coefficient is the difference at equal endpoint accuracy. Its interval is the delete-one-seed jackknife over the whole regression (t on seeds − 1 df). Absolute differences lead; this asks whether a difference is the method or its fit. `matched_fit.parquet` holds these rows.\n",
        super::matched_fit::ENDPOINT
    );
    let _ = writeln!(s, "| quantity | variant − baseline | rows | seeds | plain difference | at matched fit | 95% CI | p | endpoint slope |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | `{}` − `{}` | {} | {} | {} | {} | [{}, {}] | {} | {} |",
            r.quantity,
            r.variant,
            r.baseline,
            r.rows,
            r.seeds,
            num(r.raw_difference),
            num(r.method.estimate),
            num(r.method.lo),
            num(r.method.hi),
            if r.not_estimable.is_empty() { num(r.method.p) } else { format!("not estimable: {}", r.not_estimable) },
            num(r.slope.estimate)
        );
    }
    s
}

/// How the intervals of every table are made, in words.
const INTERVALS: &str = "A replicate is a group of seeds: one seed for a single run, k seeds for a merge or a barrier of k runs. Every group of k of the n seeds is evaluated and the groups are averaged; the 95% interval is Student-t on n − 1 degrees of freedom with the delete-one-seed jackknife standard error (for single runs this is the ordinary t interval over seeds). Groups that share a seed are not independent, and the jackknife accounts for that; see docs/statistics.md.";

/// The Answer: one line per primary test, with its estimate, interval, p-values and verdict.
fn answer(spec: &Spec, primary: &[PrimaryRow]) -> String {
    let mut s = String::new();
    if primary.is_empty() {
        let _ = writeln!(
            s,
            "This spec names no primary test (`[[report.primary]]`), so this report answers no claim: every comparison below is exploratory.\n"
        );
        return s;
    }
    let _ = writeln!(
        s,
        "Each line is one primary test: the variant minus `{}` on the same replicates, pooled over the tasks listed (the per-replicate mean difference over tasks), with its 95% interval and two-sided p-value; Holm adjusts over the {} primary tests together. A claim **holds** when its Holm-adjusted p is below 0.05 in the predicted direction, **goes against the claim** when it is below 0.05 in the other direction, and is **not shown** otherwise (the data cannot tell; it does not mean the methods are equal). Everything else in this report is exploratory.\n",
        spec.baseline,
        primary.len()
    );
    for r in primary {
        let x = r.test.x.map(|x| format!(" at {}", x_label(spec, x))).unwrap_or_default();
        let stats = match &r.est.not_testable {
            Some(why) => format!(
                "mean difference {} ({why}; an exact sign-flip test on {} seeds cannot go below p = {})",
                num(r.est.mean),
                r.est.n_seeds,
                num(r.est.p_floor)
            ),
            None => {
                format!(
                    "mean difference {} [{}, {}], p = {}, Holm p = {}{}",
                    num(r.est.mean),
                    num(r.est.lo),
                    num(r.est.hi),
                    num(r.est.p),
                    num(r.p_holm),
                    if r.est.p_sign_flip.is_nan() {
                        String::new()
                    } else {
                        format!(", exact sign-flip p = {}", num(r.est.p_sign_flip))
                    }
                ) + &if r.est.p_floor > 0.05 {
                    format!(" (with {} seeds no exact sign-flip test can reach p < 0.05: its floor is {}; the t-test's p leans on normality)", r.est.n_seeds, num(r.est.p_floor))
                } else {
                    String::new()
                }
            }
        };
        let _ = writeln!(
            s,
            "- **{}** {}: {}. `{}`, `{}` − `{}`{x}, pooled over {} ({} seeds, {} replicates): {stats}.",
            r.verdict(),
            match r.test.expect {
                Direction::Higher => "(predicted higher)",
                Direction::Lower => "(predicted lower)",
            },
            r.test.claim,
            r.test.quantity,
            r.test.variant,
            r.baseline,
            r.tasks.join(", "),
            r.est.n_seeds,
            r.est.groups,
        );
    }
    s.push('\n');
    s
}
