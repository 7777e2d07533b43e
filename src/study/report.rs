//! The report of a finished analysis, built from its cells alone: merged Parquet tables, a
//! summary over seeds (mean, std, Student-t 95% interval), paired comparisons of every variant
//! against the baseline (Holm-adjusted over the headline family), SVG figures and a README.

use super::cell::cells;
use super::measure::{CurvePoint, Measurement};
use super::spec::{HolmFamily, Spec};
use super::store::{self, CellRecord};
use crate::analysis::summary::{ci_columns, ci_series, err_of, ordered_unique};
use crate::report::atomic::write_atomic;
use crate::report::plot::{bar_plot_svg, panels_svg, write_svg, Bar, BarGroup, BarPlot, LinePlot};
use crate::report::table::{Columns, Row, Table};
use crate::stats::{holm, mean_ci, paired_t, MeanCi};
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

impl Row for SummaryRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        key_columns(cols, |r| &r.key, |r| &r.variant);
        ci_columns(cols, |r| &r.ci);
    }
}

/// A variant against the baseline on the same replicates: a row of `paired.parquet`.
struct PairedRow {
    key: Key,
    variant: String,
    baseline: String,
    n: usize,
    diff: MeanCi,
    t: f64,
    p: f64,
    headline: bool,
    p_holm: f64,
}

impl Row for PairedRow {
    fn columns(cols: &mut Columns<'_, Self>) {
        key_columns(cols, |r| &r.key, |r| &r.variant);
        cols.col("baseline", |r| r.baseline.clone())
            .col("n", |r| r.n as i64)
            .col("mean_diff", |r| r.diff.mean)
            .col("ci95_lo", |r| r.diff.lo)
            .col("ci95_hi", |r| r.diff.hi)
            .col("t", |r| r.t)
            .col("p_value", |r| r.p)
            .col("headline", |r| r.headline)
            .col("p_holm", |r| r.p_holm);
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

/// Values of each (key, variant) by replicate, keys in first-seen order.
type Grouped = Vec<(Key, BTreeMap<String, BTreeMap<i64, f64>>)>;

fn group(rows: &[Measurement]) -> Grouped {
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
        out[pos].1.entry(m.variant.clone()).or_default().insert(m.replicate, m.value);
    }
    out
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
    // A headline that names no measured quantity would silently drop out of the Answer.
    let measured = ordered_unique(g.rows.iter().map(|m| Key::of(m).quantity()));
    if let Some(h) = spec.report.headline.iter().find(|h| !measured.contains(h)) {
        bail!(
            "[report] headline '{h}' names no measured quantity (measure/setting/metric); fix it in the spec and rerun analyze (the cells are kept); measured: {}",
            measured.join(", ")
        );
    }
    let grouped = group(&g.rows);
    let variants: Vec<String> = spec.variants.iter().map(|v| v.name.clone()).collect();
    let first_measure = g.rows.first().map(|m| m.measure.clone()).unwrap_or_default();
    let mut summary = Vec::new();
    let mut paired = Vec::new();
    for (key, by_variant) in &grouped {
        for v in &variants {
            if let Some(vals) = by_variant.get(v) {
                let xs: Vec<f64> = vals.values().copied().filter(|x| x.is_finite()).collect();
                if !xs.is_empty() {
                    summary.push(SummaryRow { key: key.clone(), variant: v.clone(), ci: mean_ci(&xs)? });
                }
            }
        }
        let Some(base) = by_variant.get(&spec.baseline) else { continue };
        for v in variants.iter().filter(|v| **v != spec.baseline) {
            let Some(vals) = by_variant.get(v) else { continue };
            let pairs: Vec<(f64, f64)> = base
                .iter()
                .filter_map(|(r, b)| vals.get(r).map(|x| (*b, *x)))
                .filter(|(b, x)| b.is_finite() && x.is_finite())
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let (a, b): (Vec<f64>, Vec<f64>) = pairs.into_iter().unzip();
            let t = paired_t(&a, &b)?;
            paired.push(PairedRow {
                key: key.clone(),
                variant: v.clone(),
                baseline: spec.baseline.clone(),
                n: t.n,
                diff: t.diff,
                t: t.t,
                p: t.p_value,
                headline: is_headline(spec, key, &first_measure),
                p_holm: f64::NAN,
            });
        }
    }
    // Holm families (see `holm_family`).
    for q in ordered_unique(paired.iter().filter(|p| p.headline).map(|p| holm_family(spec, &p.key))) {
        let idx: Vec<usize> =
            (0..paired.len()).filter(|&i| paired[i].headline && holm_family(spec, &paired[i].key) == q).collect();
        let adjusted = holm(&idx.iter().map(|&i| paired[i].p).collect::<Vec<_>>());
        for (&i, p) in idx.iter().zip(adjusted) {
            paired[i].p_holm = p;
        }
    }
    Table::from_rows(&summary).write_parquet(&dir.join("summary.parquet"))?;
    Table::from_rows(&paired).write_parquet(&dir.join("paired.parquet"))?;
    // Figures of an earlier report (another spec version) must not linger.
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("fig-") && name.ends_with(".svg") {
            std::fs::remove_file(entry.path())?;
        }
    }
    let figures = write_figures(dir, spec, &summary, &g.curves)?;
    let mut readme = readme(spec, &g, &summary, &paired, &figures, &first_measure);
    super::tune::insert_section(&mut readme, &super::tune::write_tables(dir, spec)?);
    let path = dir.join("README.md");
    write_atomic(&path, readme.as_bytes())?;
    Ok(path)
}

/// The Holm family of a headline comparison: its quantity (`measure/setting/metric`), or its
/// `measure/metric` when the spec pools the settings (`[report] holm = "metric"`).
fn holm_family(spec: &Spec, k: &Key) -> String {
    match spec.report.holm {
        HolmFamily::Quantity => k.quantity(),
        HolmFamily::Metric => format!("{}/{}", k.measure, k.metric),
    }
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
            for v in ordered_unique(curves.iter().map(|c| c.variant.clone())) {
                let mut by_step: BTreeMap<i64, Vec<f64>> = BTreeMap::new();
                for c in curves.iter().filter(|c| c.task == task && c.variant == v && same_x(c.x, x)) {
                    by_step.entry(c.step).or_default().push(c.loss);
                }
                let pts: Vec<(f64, MeanCi)> =
                    by_step.into_iter().filter_map(|(s, l)| mean_ci(&l).ok().map(|c| (s as f64, c))).collect();
                if !pts.is_empty() {
                    p.series.push(ci_series(&v, &pts, false, None));
                }
            }
            p.log_y = true;
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
    let _ = writeln!(
        s,
        "Each line compares a variant with `{}` on the same seeds (paired t-test, two-sided), with the mean difference and its 95% interval. A difference counts as significant when its Holm-adjusted p-value is below 0.05. {} ({} tests in {} families). Other comparisons are in `paired.parquet` with raw p-values only (exploratory). With few seeds the test has little power, so \"no significant difference\" means the data cannot tell, not that the methods are equal.\n",
        spec.baseline,
        match spec.report.holm {
            HolmFamily::Quantity => "Each headline quantity is one Holm family: its comparisons over every task, sweep point and variant",
            HolmFamily::Metric => "Each headline measure and metric is one Holm family: its comparisons over every setting, task, sweep point and variant",
        },
        paired.iter().filter(|p| p.headline).count(),
        ordered_unique(paired.iter().filter(|p| p.headline).map(|p| holm_family(spec, &p.key))).len()
    );
    let quantities = headline_quantities(spec, summary, first_measure);
    for q in &quantities {
        for v in spec.variants.iter().map(|v| &v.name).filter(|v| **v != spec.baseline) {
            let rows: Vec<&PairedRow> =
                paired.iter().filter(|p| p.headline && p.key.quantity() == *q && p.variant == *v).collect();
            if rows.is_empty() {
                continue;
            }
            let label = |p: &PairedRow| {
                let x = x_label(spec, p.key.x);
                let where_ = if x.is_empty() { p.key.task.clone() } else { format!("{} ({x})", p.key.task) };
                format!("{where_} {:+.4} [{}, {}]", p.diff.mean, num(p.diff.lo), num(p.diff.hi))
            };
            let up: Vec<String> =
                rows.iter().filter(|p| p.p_holm < 0.05 && p.diff.mean > 0.0).map(|p| label(p)).collect();
            let down: Vec<String> =
                rows.iter().filter(|p| p.p_holm < 0.05 && p.diff.mean < 0.0).map(|p| label(p)).collect();
            let ns = rows.len() - up.len() - down.len();
            let mut line = format!("- `{q}`, `{v}` − `{}`:", spec.baseline);
            if !up.is_empty() {
                let _ = write!(line, " higher on {};", up.join("; "));
            }
            if !down.is_empty() {
                let _ = write!(line, " lower on {};", down.join("; "));
            }
            let _ = write!(line, " no significant difference on {ns} of {}.", rows.len());
            let _ = writeln!(s, "{line}");
        }
    }
    if !figures.is_empty() {
        let _ = writeln!(s, "\n## Figures\n");
        for (q, f) in figures {
            let _ = writeln!(s, "![{q}]({f})\n");
        }
    }
    let _ = writeln!(s, "## Results: mean, std and Student-t 95% interval over seeds\n");
    let _ = writeln!(
        s,
        "| quantity | task | {} variant | n | mean | std | 95% CI |",
        if spec.sweep.is_empty() { "" } else { "x |" }
    );
    let _ = writeln!(s, "|---|---|{}---|---|---|---|---|", if spec.sweep.is_empty() { "" } else { "---|" });
    for r in summary.iter().filter(|r| quantities.contains(&r.key.quantity())) {
        let x = if spec.sweep.is_empty() { String::new() } else { format!("{} |", r.key.x) };
        let _ = writeln!(
            s,
            "| {} | {} | {x} {} | {} | {} | {} | [{}, {}] |",
            r.key.quantity(),
            r.key.task,
            r.variant,
            r.ci.n,
            num(r.ci.mean),
            num(r.ci.std),
            num(r.ci.lo),
            num(r.ci.hi)
        );
    }
    let _ = writeln!(s, "\n## Paired comparisons against `{}` (same seeds)\n", spec.baseline);
    let _ = writeln!(
        s,
        "| quantity | task | {} variant | n | mean difference | 95% CI | p | Holm p |",
        if spec.sweep.is_empty() { "" } else { "x |" }
    );
    let _ = writeln!(s, "|---|---|{}---|---|---|---|---|---|", if spec.sweep.is_empty() { "" } else { "---|" });
    for p in paired.iter().filter(|p| p.headline) {
        let x = if spec.sweep.is_empty() { String::new() } else { format!("{} |", p.key.x) };
        let _ = writeln!(
            s,
            "| {} | {} | {x} {} | {} | {} | [{}, {}] | {} | {} |",
            p.key.quantity(),
            p.key.task,
            p.variant,
            p.n,
            num(p.diff.mean),
            num(p.diff.lo),
            num(p.diff.hi),
            num(p.p),
            num(p.p_holm)
        );
    }
    let _ = writeln!(s, "\n## Files\n");
    let _ = writeln!(s, "- `measurements.parquet`: every measured number (long format: cell, task, variant, x, replicate, seeds, measure, setting, metric, value).");
    let _ = writeln!(s, "- `summary.parquet`: mean, std and 95% interval per quantity, task, x and variant.");
    let _ = writeln!(
        s,
        "- `paired.parquet`: every variant against `{}`, with raw and (headline) Holm-adjusted p-values.",
        spec.baseline
    );
    let _ = writeln!(
        s,
        "- `cells.parquet`: wall time and machine of each cell; `cells/`: the per-cell parts (resumable, shardable)."
    );
    if !g.curves.is_empty() {
        let _ = writeln!(s, "- `curves.parquet`: training-loss curves (window means) of every run.");
    }
    let _ = writeln!(s, "\nReplicates of merges and barriers are groups of consecutive seeds taken cyclically (seeds i, i+1, …), so neighbouring groups share runs; their intervals treat the groups as independent and are somewhat optimistic.");
    s
}
