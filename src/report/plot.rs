//! SVG figures drawn with plotters: line plots (optionally with shaded bands,
//! dashed series, log axes and a reference line), grids of line plots, grouped
//! bar plots with error bars, and annotated heatmaps.
//!
//! No fonts are needed: text becomes SVG `<text>` elements that the viewer
//! renders, and layout uses a conservative estimate of text width. Legends sit
//! outside the plotting area (on the right) so they never hide data. Series
//! colours come from a fixed ten-colour palette; a series' colour follows its
//! label, so the same label has the same colour in every panel of a grid.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report::atomic::write_atomic;

/// Default figure size in pixels (width, height).
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);

/// Size of one panel in [`panels_svg`], in pixels.
const PANEL_SIZE: (u32, u32) = (440, 330);
/// Smallest accepted figure size.
const MIN_SIZE: (u32, u32) = (240, 180);

const FONT: &str = "sans-serif";
const TITLE_SIZE: f64 = 22.0;
const PANEL_TITLE_SIZE: f64 = 17.0;
const DESC_SIZE: f64 = 16.0;
const TICK_SIZE: f64 = 15.0;
const LEGEND_SIZE: f64 = 15.0;

/// Series colours (the Tableau 10 palette): distinct and colour-blind friendly.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const REFERENCE_COLOR: RGBColor = RGBColor(80, 80, 80);
const MISSING_COLOR: RGBColor = RGBColor(215, 215, 215);
const TEXT_COLOR: RGBColor = RGBColor(20, 20, 20);
/// Number of colour steps in a heatmap's colour bar.
const COLORBAR_STEPS: usize = 64;
/// Series with at most this many finite points also get a marker per point.
const MAX_MARKED_POINTS: usize = 40;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// One line of a [`LinePlot`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend label; an empty label gives no legend entry.
    pub label: String,
    /// `(x, y)` points in drawing order. Non-finite points are skipped and
    /// break the line.
    pub points: Vec<(f64, f64)>,
    /// Optional shaded band `(x, lo, hi)` drawn under the line in the same
    /// colour (for example a confidence interval). Non-finite rows are skipped.
    pub band: Option<Vec<(f64, f64, f64)>>,
    /// Draw the line dashed instead of solid.
    pub dashed: bool,
    /// Palette index (0–9) to force a colour, for example to pair a dashed and a
    /// solid series; `None` picks the next free colour for this label.
    pub color: Option<usize>,
}

impl Series {
    /// A solid series without band and with an automatic colour.
    pub fn new(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, ..Self::default() }
    }
}

/// A line plot: several [`Series`] on shared axes.
#[derive(Clone, Debug, PartialEq)]
pub struct LinePlot {
    /// Title drawn above the plot (wrapped when long).
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The lines, drawn in order (later ones on top).
    pub series: Vec<Series>,
    /// Logarithmic x axis; every finite x must then be positive.
    pub log_x: bool,
    /// Logarithmic y axis; every finite y (and band bound) must then be positive.
    pub log_y: bool,
    /// A horizontal dashed reference line at `y`, listed in the legend with its
    /// label (for example the accuracy of a baseline).
    pub reference_y: Option<(f64, String)>,
    /// Figure size in pixels; ignored for panels of [`panels_svg`].
    pub size: (u32, u32),
}

impl Default for LinePlot {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            log_x: false,
            log_y: false,
            reference_y: None,
            size: DEFAULT_SIZE,
        }
    }
}

impl LinePlot {
    /// An empty linear-axis plot of the default size.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), ..Self::default() }
    }
}

/// One bar of a [`BarGroup`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bar {
    /// Series name: bars of the same series share colour, position within the
    /// group and legend entry.
    pub series: String,
    /// Bar height (from 0). A non-finite value draws no bar.
    pub value: f64,
    /// Optional error bar as absolute bounds `(lo, hi)`, `lo <= hi`.
    pub err: Option<(f64, f64)>,
}

/// A category on the x axis of a [`BarPlot`] with its bars.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BarGroup {
    /// Category label under the group (wrapped when long).
    pub label: String,
    /// At most one bar per series.
    pub bars: Vec<Bar>,
}

/// A grouped bar plot with optional error bars and a legend per series.
#[derive(Clone, Debug, PartialEq)]
pub struct BarPlot {
    /// Title drawn above the plot.
    pub title: String,
    /// X axis label (below the category labels).
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Categories, left to right.
    pub groups: Vec<BarGroup>,
    /// Figure size in pixels.
    pub size: (u32, u32),
}

impl Default for BarPlot {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            groups: Vec::new(),
            size: DEFAULT_SIZE,
        }
    }
}

/// A heatmap of a matrix with viridis colours and a colour bar.
#[derive(Clone, Debug, PartialEq)]
pub struct Heatmap {
    /// Title drawn above the heatmap.
    pub title: String,
    /// X axis label (below the column labels).
    pub x_label: String,
    /// Y axis label (left of the row labels).
    pub y_label: String,
    /// One label per column; empty means the column indices.
    pub x_ticks: Vec<String>,
    /// One label per row; empty means the row indices.
    pub y_ticks: Vec<String>,
    /// `values[row][col]`; row 0 is drawn at the top. Non-finite cells are grey.
    pub values: Vec<Vec<f64>>,
    /// Print each cell's value in the cell (skipped when cells are too small).
    pub annotate: bool,
    /// Figure size in pixels.
    pub size: (u32, u32),
}

impl Default for Heatmap {
    fn default() -> Self {
        Self {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            x_ticks: Vec::new(),
            y_ticks: Vec::new(),
            values: Vec::new(),
            annotate: false,
            size: DEFAULT_SIZE,
        }
    }
}

/// Writes an SVG string to `path` atomically (creating parent directories).
pub fn write_svg(path: &Path, svg: &str) -> Result<()> {
    write_atomic(path, svg.as_bytes())
}

// ---------------------------------------------------------------------------
// Shared helpers: errors, text, numbers, colours, legend, title.

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the SVG failed: {e}; check the figure size and data")
}

/// Estimated rendered width of `text` in pixels at plotters font `size`.
/// The SVG backend writes `font-size = size / 1.24`; sans-serif glyphs average
/// about 0.55 em, so 0.5 × size slightly over-estimates, which is the safe side.
fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.5
}

/// Line height in pixels for plotters font `size`.
fn line_height(size: f64) -> f64 {
    size
}

/// A text style; `rotate` turns the text to read bottom to top.
fn ts(size: f64, color: &'static RGBColor, h: HPos, v: VPos, rotate: bool) -> TextStyle<'static> {
    let style = (FONT, size).into_font().color(color).pos(Pos::new(h, v));
    if rotate {
        style.transform(FontTransform::Rotate270)
    } else {
        style
    }
}

/// Draws `text` at `pos` (pixels relative to `area`).
fn put(area: &Area, text: &str, pos: (i32, i32), style: &TextStyle) -> Result<()> {
    area.draw_text(text, style, pos).map_err(draw_err)
}

/// Greedy word wrap to lines of at most `max_width` estimated pixels.
fn wrap_text(text: &str, size: f64, max_width: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split_whitespace() {
        let candidate = if cur.is_empty() { word.to_string() } else { format!("{cur} {word}") };
        if !cur.is_empty() && text_width(&candidate, size) > max_width {
            lines.push(std::mem::take(&mut cur));
            cur = word.to_string();
        } else {
            cur = candidate;
        }
    }
    if !cur.is_empty() {
        lines.push(cur);
    }
    lines
}

/// Shortens `text` with an ellipsis so that it fits `max_width`.
fn truncate_to(text: &str, size: f64, max_width: f64) -> String {
    if text_width(text, size) <= max_width {
        return text.to_string();
    }
    let keep = ((max_width / (size * 0.5)).floor() as usize).saturating_sub(1);
    let mut s: String = text.chars().take(keep.max(1)).collect();
    s.push('…');
    s
}

fn trim_zeros(s: &str) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s.to_string()
    }
}

/// Formats `v` with `sig` significant digits, without trailing zeros;
/// scientific notation for very large or small magnitudes.
fn fmt_num(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    let sig = sig.max(1);
    if !(1e-3..1e5).contains(&a) {
        let s = format!("{:.*e}", sig - 1, v);
        match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim_zeros(m)),
            None => s,
        }
    } else {
        let mag = a.log10().floor() as i32;
        let decimals = (sig as i32 - 1 - mag).max(0) as usize;
        let s = trim_zeros(&format!("{v:.decimals$}"));
        if s == "-0" {
            "0".to_string()
        } else {
            s
        }
    }
}

/// Tick label: snaps float noise around zero on linear axes (`span` given).
fn fmt_tick(v: f64, span: Option<f64>) -> String {
    match span {
        Some(span) if v.abs() < span * 1e-9 => "0".to_string(),
        _ => fmt_num(v, 6),
    }
}

fn check_size(size: (u32, u32), what: &str, title: &str) -> Result<()> {
    if size.0 < MIN_SIZE.0 || size.1 < MIN_SIZE.1 || size.0 > 20_000 || size.1 > 20_000 {
        bail!(
            "{what} '{title}' has size {}x{}; use a size between {}x{} and 20000x20000 pixels",
            size.0,
            size.1,
            MIN_SIZE.0,
            MIN_SIZE.1
        );
    }
    Ok(())
}

/// The mark drawn next to a legend label.
#[derive(Clone, Copy, Debug)]
enum Mark {
    Line { color: RGBColor, dashed: bool },
    Box(RGBColor),
}

#[derive(Clone, Debug)]
struct LegendEntry {
    label: String,
    mark: Mark,
}

const LEGEND_ROW: f64 = 22.0;
const LEGEND_MARK: i32 = 28;

/// Width of the legend strip (0 without entries), capped at 35 % of `total`.
fn legend_width(entries: &[LegendEntry], total: u32) -> u32 {
    if entries.is_empty() {
        return 0;
    }
    let widest = entries.iter().map(|e| text_width(&e.label, LEGEND_SIZE)).fold(0.0, f64::max);
    let want = widest + f64::from(LEGEND_MARK) + 30.0;
    (want.ceil() as u32).min(total * 35 / 100)
}

fn draw_legend(area: &Area, entries: &[LegendEntry], top: i32) -> Result<()> {
    let (w, h) = area.dim_in_pixel();
    let x = 8;
    let text_x = x + LEGEND_MARK + 6;
    let max_text = f64::from(w) - f64::from(text_x) - 6.0;
    for (i, e) in entries.iter().enumerate() {
        let y = top + (LEGEND_ROW * (i as f64 + 0.5)) as i32;
        if y > h as i32 {
            break;
        }
        match e.mark {
            Mark::Line { color, dashed } => {
                let style = color.stroke_width(3);
                let segments: Vec<(i32, i32)> =
                    if dashed { vec![(0, 10), (16, LEGEND_MARK)] } else { vec![(0, LEGEND_MARK)] };
                for (a, b) in segments {
                    area.draw(&PathElement::new(vec![(x + a, y), (x + b, y)], style)).map_err(draw_err)?;
                }
            }
            Mark::Box(color) => {
                area.draw(&Rectangle::new([(x + 4, y - 7), (x + LEGEND_MARK - 4, y + 7)], color.filled()))
                    .map_err(draw_err)?;
            }
        }
        let label = truncate_to(&e.label, LEGEND_SIZE, max_text);
        put(area, &label, (text_x, y), &ts(LEGEND_SIZE, &TEXT_COLOR, HPos::Left, VPos::Center, false))?;
    }
    Ok(())
}

/// Height of a wrapped title block (0 for an empty title).
fn title_height(title: &str, size: f64, width: u32) -> u32 {
    let lines = wrap_text(title, size, f64::from(width) - 24.0).len();
    if lines == 0 {
        0
    } else {
        (10.0 + lines as f64 * line_height(size) * 1.15 + 6.0).ceil() as u32
    }
}

/// Draws a centred, wrapped title and returns the area below it.
fn draw_title<'a>(area: &Area<'a>, title: &str, size: f64) -> Result<Area<'a>> {
    let (w, _) = area.dim_in_pixel();
    let h = title_height(title, size, w);
    if h == 0 {
        return Ok(area.clone());
    }
    for (i, line) in wrap_text(title, size, f64::from(w) - 24.0).iter().enumerate() {
        let y = 10 + (i as f64 * line_height(size) * 1.15) as i32;
        put(area, line, (w as i32 / 2, y), &ts(size, &TEXT_COLOR, HPos::Center, VPos::Top, false))?;
    }
    Ok(area.split_vertically(h).1)
}

/// Colour per series: an explicit palette index, else one per distinct label
/// in order of first appearance, skipping explicitly used indices.
struct SeriesColors {
    by_label: HashMap<String, usize>,
}

impl SeriesColors {
    fn new<'s>(series: impl Iterator<Item = &'s Series> + Clone) -> Self {
        let explicit: HashSet<usize> = series.clone().filter_map(|s| s.color.map(|c| c % PALETTE.len())).collect();
        let mut free = (0..PALETTE.len()).filter(|i| !explicit.contains(i)).cycle();
        let mut by_label = HashMap::new();
        for s in series.filter(|s| s.color.is_none()) {
            if !by_label.contains_key(&s.label) {
                let next = free.next().unwrap_or(by_label.len() % PALETTE.len());
                by_label.insert(s.label.clone(), next);
            }
        }
        Self { by_label }
    }

    fn color(&self, s: &Series) -> RGBColor {
        let i = s.color.or_else(|| self.by_label.get(&s.label).copied()).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    }
}

// ---------------------------------------------------------------------------
// Line plots.

/// Validated axis ranges of a line plot.
#[derive(Clone, Copy, Debug)]
struct LineRanges {
    x: (f64, f64),
    y: (f64, f64),
}

fn check_log(log: bool, v: f64, axis: &str, plot: &LinePlot, series: &str) -> Result<()> {
    if log && v <= 0.0 {
        bail!(
            "line plot '{}': series '{}' has {axis} = {v} on a logarithmic {axis} axis; drop non-positive values or set log_{axis} = false",
            plot.title,
            series
        );
    }
    Ok(())
}

/// Axis range with a 5 % margin (a fixed margin for constant data). On a log
/// axis the margin is in decades, and the range is widened to whole decades
/// when it would otherwise hold fewer than two powers of ten (plotters only
/// labels powers of ten on narrow log ranges).
fn padded_range(lo: f64, hi: f64, log: bool) -> Option<(f64, f64)> {
    let (a, b) = if log {
        let (l, h) = (lo.log10(), hi.log10());
        let span = h - l;
        let pad = if span > 1e-12 { span * 0.05 } else { 0.3 };
        let (mut l, mut h) = (l - pad, h + pad);
        let powers = h.floor() - l.ceil() + 1.0;
        if powers < 2.0 {
            l = l.floor() - 0.001;
            h = h.ceil() + 0.001;
        }
        (10f64.powf(l), 10f64.powf(h))
    } else {
        let span = hi - lo;
        let pad = if span > lo.abs().max(hi.abs()) * 1e-12 && span > 0.0 {
            span * 0.05
        } else if lo != 0.0 {
            lo.abs() * 0.1
        } else {
            1.0
        };
        (lo - pad, hi + pad)
    };
    (a.is_finite() && b.is_finite() && a < b && (!log || a > 0.0)).then_some((a, b))
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// Checks a line plot's data and computes its axis ranges.
fn line_ranges(plot: &LinePlot) -> Result<LineRanges> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for s in &plot.series {
        for &(x, y) in &s.points {
            if x.is_finite() && y.is_finite() {
                check_log(plot.log_x, x, "x", plot, &s.label)?;
                check_log(plot.log_y, y, "y", plot, &s.label)?;
                xs.push(x);
                ys.push(y);
            }
        }
        for &(x, lo, hi) in s.band.iter().flatten() {
            if x.is_finite() && lo.is_finite() && hi.is_finite() {
                check_log(plot.log_x, x, "x", plot, &s.label)?;
                check_log(plot.log_y, lo.min(hi), "y", plot, &s.label)?;
                xs.push(x);
                ys.push(lo);
                ys.push(hi);
            }
        }
    }
    if xs.is_empty() {
        bail!(
            "line plot '{}' has no finite data points; add a series with at least one finite (x, y) point",
            plot.title
        );
    }
    if let Some((y, label)) = &plot.reference_y {
        if !y.is_finite() {
            bail!(
                "line plot '{}': reference line '{label}' is at y = {y}; use a finite value or no reference line",
                plot.title
            );
        }
        check_log(plot.log_y, *y, "y", plot, label)?;
        ys.push(*y);
    }
    let (x0, x1) = min_max(&xs);
    let (y0, y1) = min_max(&ys);
    let x = padded_range(x0, x1, plot.log_x);
    let y = padded_range(y0, y1, plot.log_y);
    match (x, y) {
        (Some(x), Some(y)) => Ok(LineRanges { x, y }),
        _ => bail!(
            "line plot '{}' has values too large to plot (x in [{x0}, {x1}], y in [{y0}, {y1}]); rescale the data",
            plot.title
        ),
    }
}

/// Splits points into runs of consecutive finite points.
fn finite_runs(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for &(x, y) in points {
        if x.is_finite() && y.is_finite() {
            cur.push((x, y));
        } else if !cur.is_empty() {
            runs.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        runs.push(cur);
    }
    runs
}

/// Tick positions plotters will label on an axis with at most `n` labels.
fn axis_ticks(range: (f64, f64), log: bool, n: usize) -> Vec<f64> {
    if log {
        let c: LogCoord<f64> = (range.0..range.1).log_scale().into();
        c.key_points(n)
    } else {
        let c: RangedCoordf64 = (range.0..range.1).into();
        c.key_points(n)
    }
}

/// Width of the y label area: widest tick label plus room for the rotated
/// axis description.
fn y_label_area(range: (f64, f64), log: bool, n: usize) -> u32 {
    let span = (!log).then_some(range.1 - range.0);
    let widest = axis_ticks(range, log, n)
        .into_iter()
        .map(|v| text_width(&fmt_tick(v, span), TICK_SIZE))
        .fold(text_width("0", TICK_SIZE), f64::max);
    (widest + 14.0 + DESC_SIZE * 1.4 + 4.0).ceil() as u32
}

fn line_legend(plots: &[LinePlot], colors: &SeriesColors) -> Vec<LegendEntry> {
    let mut seen = HashSet::new();
    let mut entries = Vec::new();
    for p in plots {
        for s in &p.series {
            if !s.label.is_empty() && seen.insert(s.label.clone()) {
                entries.push(LegendEntry {
                    label: s.label.clone(),
                    mark: Mark::Line { color: colors.color(s), dashed: s.dashed },
                });
            }
        }
    }
    for p in plots {
        if let Some((_, label)) = &p.reference_y {
            if !label.is_empty() && seen.insert(label.clone()) {
                entries.push(LegendEntry {
                    label: label.clone(),
                    mark: Mark::Line { color: REFERENCE_COLOR, dashed: true },
                });
            }
        }
    }
    entries
}

/// Layout options of one line chart.
#[derive(Clone, Copy)]
struct LineLayout {
    /// Draw the plot's own title at this size (panels).
    title_size: Option<f64>,
    x_labels: usize,
    y_labels: usize,
}

fn draw_line_chart(area: &Area, plot: &LinePlot, colors: &SeriesColors, layout: LineLayout) -> Result<()> {
    let r = line_ranges(plot)?;
    let (xr, yr) = (r.x.0..r.x.1, r.y.0..r.y.1);
    match (plot.log_x, plot.log_y) {
        (false, false) => draw_line_in(area, plot, colors, layout, r, xr, yr),
        (true, false) => draw_line_in(area, plot, colors, layout, r, xr.log_scale(), yr),
        (false, true) => draw_line_in(area, plot, colors, layout, r, xr, yr.log_scale()),
        (true, true) => draw_line_in(area, plot, colors, layout, r, xr.log_scale(), yr.log_scale()),
    }
}

fn draw_line_in<XS, YS>(
    area: &Area,
    plot: &LinePlot,
    colors: &SeriesColors,
    layout: LineLayout,
    r: LineRanges,
    x_spec: XS,
    y_spec: YS,
) -> Result<()>
where
    XS: AsRangedCoord<Value = f64>,
    YS: AsRangedCoord<Value = f64>,
    XS::CoordDescType: ValueFormatter<f64>,
    YS::CoordDescType: ValueFormatter<f64>,
{
    let area = match layout.title_size {
        Some(size) => draw_title(area, &plot.title, size)?,
        None => area.clone(),
    };
    let x_area = (TICK_SIZE * 1.4 + DESC_SIZE * 1.5 + 8.0).ceil() as u32;
    let mut chart = ChartBuilder::on(&area)
        .margin(10)
        .margin_right(22)
        .x_label_area_size(x_area)
        .y_label_area_size(y_label_area(r.y, plot.log_y, layout.y_labels))
        .build_cartesian_2d(x_spec, y_spec)
        .map_err(draw_err)?;

    let x_span = (!plot.log_x).then_some(r.x.1 - r.x.0);
    let y_span = (!plot.log_y).then_some(r.y.1 - r.y.0);
    let x_fmt = move |v: &f64| fmt_tick(*v, x_span);
    let y_fmt = move |v: &f64| fmt_tick(*v, y_span);
    chart
        .configure_mesh()
        .x_desc(plot.x_label.as_str())
        .y_desc(plot.y_label.as_str())
        .x_labels(layout.x_labels)
        .y_labels(layout.y_labels)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, TICK_SIZE))
        .axis_desc_style((FONT, DESC_SIZE))
        .bold_line_style(BLACK.mix(0.12))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(draw_err)?;

    for s in &plot.series {
        let Some(band) = &s.band else { continue };
        let rows: Vec<(f64, f64, f64)> =
            band.iter().copied().filter(|(x, lo, hi)| x.is_finite() && lo.is_finite() && hi.is_finite()).collect();
        if rows.len() < 2 {
            continue;
        }
        let mut outline: Vec<(f64, f64)> = rows.iter().map(|&(x, _, hi)| (x, hi)).collect();
        outline.extend(rows.iter().rev().map(|&(x, lo, _)| (x, lo)));
        chart
            .draw_series(std::iter::once(Polygon::new(outline, colors.color(s).mix(0.2).filled())))
            .map_err(draw_err)?;
    }

    if let Some((y, _)) = &plot.reference_y {
        chart
            .draw_series(DashedLineSeries::new(vec![(r.x.0, *y), (r.x.1, *y)], 8, 6, REFERENCE_COLOR.stroke_width(2)))
            .map_err(draw_err)?;
    }

    for s in &plot.series {
        let color = colors.color(s);
        let style = color.stroke_width(2);
        let runs = finite_runs(&s.points);
        let n_finite: usize = runs.iter().map(Vec::len).sum();
        for run in &runs {
            if run.len() >= 2 {
                if s.dashed {
                    chart.draw_series(DashedLineSeries::new(run.clone(), 9, 6, style)).map_err(draw_err)?;
                } else {
                    chart.draw_series(LineSeries::new(run.clone(), style)).map_err(draw_err)?;
                }
            }
            if n_finite <= MAX_MARKED_POINTS || run.len() == 1 {
                chart.draw_series(run.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(draw_err)?;
            }
        }
    }
    Ok(())
}

/// Renders a line plot as an SVG document.
///
/// Fails with a clear message when there is no finite point, when a log axis
/// meets a non-positive value, or when the size is unusable.
pub fn line_plot_svg(plot: &LinePlot) -> Result<String> {
    check_size(plot.size, "line plot", &plot.title)?;
    line_ranges(plot)?;
    let colors = SeriesColors::new(plot.series.iter());
    let legend = line_legend(std::slice::from_ref(plot), &colors);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, plot.size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let body = draw_title(&root, &plot.title, TITLE_SIZE)?;
        let (w, _) = body.dim_in_pixel();
        let (chart_area, legend_area) = body.split_horizontally(w - legend_width(&legend, w));
        let layout = LineLayout { title_size: None, x_labels: 8, y_labels: 7 };
        draw_line_chart(&chart_area, plot, &colors, layout)?;
        draw_legend(&legend_area, &legend, 10)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Renders several line plots as panels of a grid with `cols` columns (for
/// example one panel per interpolation space), under a common title and with
/// one shared legend on the right. Each panel keeps its own title, axis labels,
/// log settings and reference line; its `size` is ignored (panels are
/// 440×330 pixels). A label has the same colour in every panel.
pub fn panels_svg(title: &str, panels: &[LinePlot], cols: usize) -> Result<String> {
    if panels.is_empty() {
        bail!("panel figure '{title}' has no panels; pass at least one line plot");
    }
    if cols == 0 {
        bail!("panel figure '{title}' has cols = 0; use at least one column");
    }
    for p in panels {
        line_ranges(p)?;
    }
    let cols = cols.min(panels.len());
    let rows = panels.len().div_ceil(cols);
    let colors = SeriesColors::new(panels.iter().flat_map(|p| p.series.iter()));
    let legend = line_legend(panels, &colors);
    let grid_w = cols as u32 * PANEL_SIZE.0;
    let legend_w = legend_width(&legend, grid_w.max(800));
    let width = grid_w + legend_w;
    let title_h = title_height(title, TITLE_SIZE, width);
    let height = rows as u32 * PANEL_SIZE.1 + title_h;
    if width > 20_000 || height > 20_000 {
        bail!("panel figure '{title}' would be {width}x{height} pixels; use fewer panels per figure");
    }
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let body = draw_title(&root, title, TITLE_SIZE)?;
        let (grid, legend_area) = body.split_horizontally(grid_w);
        let layout = LineLayout { title_size: Some(PANEL_TITLE_SIZE), x_labels: 5, y_labels: 6 };
        for (cell, plot) in grid.split_evenly((rows, cols)).iter().zip(panels) {
            draw_line_chart(cell, plot, &colors, layout)?;
        }
        draw_legend(&legend_area, &legend, 10)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

// ---------------------------------------------------------------------------
// Bar plots.

/// Renders a grouped bar plot with optional error bars as an SVG document.
///
/// Series keep a fixed slot inside every group (a missing bar leaves a gap),
/// bars start at 0, and non-finite values or error bounds are not drawn.
pub fn bar_plot_svg(plot: &BarPlot) -> Result<String> {
    check_size(plot.size, "bar plot", &plot.title)?;
    if plot.groups.is_empty() {
        bail!("bar plot '{}' has no groups; add at least one group with a bar", plot.title);
    }
    let mut series: Vec<&str> = Vec::new();
    let mut ys = vec![0.0];
    for g in &plot.groups {
        let mut in_group = HashSet::new();
        for b in &g.bars {
            if !in_group.insert(b.series.as_str()) {
                bail!(
                    "bar plot '{}': group '{}' has two bars of series '{}'; keep one bar per series and group",
                    plot.title,
                    g.label,
                    b.series
                );
            }
            if !series.contains(&b.series.as_str()) {
                series.push(&b.series);
            }
            if b.value.is_finite() {
                ys.push(b.value);
            }
            if let Some((lo, hi)) = b.err {
                if lo.is_finite() && hi.is_finite() {
                    if lo > hi {
                        bail!(
                            "bar plot '{}': bar '{}' of group '{}' has error bounds lo = {lo} > hi = {hi}; pass (lo, hi) with lo <= hi",
                            plot.title,
                            b.series,
                            g.label
                        );
                    }
                    ys.push(lo);
                    ys.push(hi);
                }
            }
        }
    }
    if !plot.groups.iter().flat_map(|g| &g.bars).any(|b| b.value.is_finite()) {
        bail!("bar plot '{}' has no bar with a finite value; add at least one bar", plot.title);
    }
    let (lo, hi) = min_max(&ys);
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y0 = if lo < 0.0 { lo - 0.05 * span } else { 0.0 };
    let y1 = if hi > 0.0 {
        hi + 0.05 * span
    } else if y0 < 0.0 {
        0.0
    } else {
        1.0
    };
    if !(y0.is_finite() && y1.is_finite()) {
        bail!("bar plot '{}' has values too large to plot; rescale the data", plot.title);
    }

    let legend: Vec<LegendEntry> = series
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, s)| LegendEntry { label: s.to_string(), mark: Mark::Box(PALETTE[i % PALETTE.len()]) })
        .collect();
    let n_groups = plot.groups.len();
    let n_series = series.len().max(1);
    let slot = 0.8 / n_series as f64;
    let y_labels = 7;
    let y_area = y_label_area((y0, y1), false, y_labels);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, plot.size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let body = draw_title(&root, &plot.title, TITLE_SIZE)?;
        let (w, _) = body.dim_in_pixel();
        let legend_w = legend_width(&legend, w);
        let (chart_area, legend_area) = body.split_horizontally(w - legend_w);

        // Category labels are wrapped to the estimated group width.
        let plot_w = f64::from(w - legend_w) - f64::from(y_area) - 32.0;
        let group_w = (plot_w / n_groups as f64 * 0.95).max(20.0);
        let wrapped: Vec<Vec<String>> = plot
            .groups
            .iter()
            .map(|g| {
                let mut lines = wrap_text(&g.label, TICK_SIZE, group_w);
                if lines.len() > 3 {
                    let rest = lines.split_off(2).join(" ");
                    lines.push(rest);
                }
                lines.iter().map(|l| truncate_to(l, TICK_SIZE, group_w)).collect::<Vec<_>>()
            })
            .collect();
        let max_lines = wrapped.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let tick_h = line_height(TICK_SIZE) * 1.15;
        let x_area = (10.0 + max_lines as f64 * tick_h + DESC_SIZE * 1.5 + 8.0).ceil() as u32;

        let mut chart = ChartBuilder::on(&chart_area)
            .margin(10)
            .margin_right(16)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(-0.5..(n_groups as f64 - 0.5), y0..y1)
            .map_err(draw_err)?;
        let y_span = Some(y1 - y0);
        let y_fmt = move |v: &f64| fmt_tick(*v, y_span);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(y_labels)
            .y_label_formatter(&y_fmt)
            .x_desc(plot.x_label.as_str())
            .y_desc(plot.y_label.as_str())
            .label_style((FONT, TICK_SIZE))
            .axis_desc_style((FONT, DESC_SIZE))
            .bold_line_style(BLACK.mix(0.12))
            .light_line_style(TRANSPARENT)
            .draw()
            .map_err(draw_err)?;
        if y0 < 0.0 {
            chart
                .draw_series(LineSeries::new(vec![(-0.5, 0.0), (n_groups as f64 - 0.5, 0.0)], BLACK.stroke_width(1)))
                .map_err(draw_err)?;
        }

        let (px, _) = chart.plotting_area().get_pixel_range();
        // Error-bar caps: a quarter of the bar width, at most 6 pixels each side.
        let px_per_unit = f64::from(px.end - px.start) / n_groups as f64;
        let cap = (slot * 0.25).min(6.0 / px_per_unit.max(1.0));
        for (gi, g) in plot.groups.iter().enumerate() {
            for b in &g.bars {
                let si = series.iter().position(|s| *s == b.series).unwrap_or(0);
                let color = PALETTE[si % PALETTE.len()];
                let left = gi as f64 - 0.4 + si as f64 * slot;
                let (l, r) = (left + slot * 0.06, left + slot * 0.94);
                if b.value.is_finite() {
                    chart
                        .draw_series(std::iter::once(Rectangle::new([(l, 0.0), (r, b.value)], color.filled())))
                        .map_err(draw_err)?;
                }
                if let Some((lo, hi)) = b.err {
                    if lo.is_finite() && hi.is_finite() {
                        let x = (l + r) / 2.0;
                        let whisker = [
                            vec![(x, lo), (x, hi)],
                            vec![(x - cap, lo), (x + cap, lo)],
                            vec![(x - cap, hi), (x + cap, hi)],
                        ];
                        chart
                            .draw_series(whisker.into_iter().map(|p| PathElement::new(p, BLACK.stroke_width(2))))
                            .map_err(draw_err)?;
                    }
                }
            }
        }

        // Category labels under each group, drawn on the root (absolute pixels).
        let (_, py) = chart.plotting_area().get_pixel_range();
        for (gi, lines) in wrapped.iter().enumerate() {
            let (cx, _) = chart.backend_coord(&(gi as f64, y0));
            for (li, line) in lines.iter().enumerate() {
                let y = py.end + 8 + (li as f64 * tick_h) as i32;
                put(&root, line, (cx, y), &ts(TICK_SIZE, &TEXT_COLOR, HPos::Center, VPos::Top, false))?;
            }
        }
        draw_legend(&legend_area, &legend, 10)?;
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

// ---------------------------------------------------------------------------
// Heatmaps.

fn viridis(t: f64) -> RGBColor {
    ViridisRGB.get_color(t.clamp(0.0, 1.0) as f32)
}

/// Renders a heatmap as an SVG document: viridis colours scaled between the
/// finite minimum and maximum, a colour bar labelled with its min and max,
/// and (with `annotate`) the value printed in each cell.
///
/// Row 0 is drawn at the top. Non-finite cells are light grey. Fails on empty
/// or ragged `values`, on tick lists of the wrong length, and when no value is
/// finite.
pub fn heatmap_svg(h: &Heatmap) -> Result<String> {
    check_size(h.size, "heatmap", &h.title)?;
    let ny = h.values.len();
    let nx = h.values.first().map_or(0, Vec::len);
    if ny == 0 || nx == 0 {
        bail!("heatmap '{}' has no values; pass at least one row with one value", h.title);
    }
    if let Some((i, row)) = h.values.iter().enumerate().find(|(_, r)| r.len() != nx) {
        bail!(
            "heatmap '{}': row {i} has {} values but row 0 has {nx}; give every row the same length",
            h.title,
            row.len()
        );
    }
    let x_ticks = tick_labels(&h.x_ticks, nx, "x_ticks", "columns", &h.title)?;
    let y_ticks = tick_labels(&h.y_ticks, ny, "y_ticks", "rows", &h.title)?;
    let finite: Vec<f64> = h.values.iter().flatten().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        bail!("heatmap '{}' has no finite value; pass at least one finite value", h.title);
    }
    let (vmin, vmax) = min_max(&finite);
    let norm = |v: f64| {
        if vmax > vmin {
            (v - vmin) / (vmax - vmin)
        } else {
            0.5
        }
    };

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, h.size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let body = draw_title(&root, &h.title, TITLE_SIZE)?;
        let (bw, bh) = body.dim_in_pixel();
        let (bw, bh) = (f64::from(bw), f64::from(bh));

        // Horizontal layout: [y desc][y ticks][grid][gap][colour bar][labels].
        let desc_w = if h.y_label.is_empty() { 0.0 } else { DESC_SIZE * 1.4 };
        let ytick_w = y_ticks.iter().map(|t| text_width(t, TICK_SIZE)).fold(0.0, f64::max);
        let ytick_w = ytick_w.min(bw * 0.3);
        let left = 8.0 + desc_w + ytick_w + 8.0;
        let cb_labels = [fmt_num(vmax, 4), fmt_num(vmin, 4)];
        let cb_label_w = cb_labels.iter().map(|t| text_width(t, TICK_SIZE)).fold(0.0, f64::max);
        let cb_w = 18.0;
        let right = 18.0 + cb_w + 6.0 + cb_label_w + 10.0;
        let grid_w = bw - left - right;
        let cell_w = grid_w / nx as f64;

        // Vertical layout: [top][grid][x ticks][x desc].
        let xtick_w = x_ticks.iter().map(|t| text_width(t, TICK_SIZE)).fold(0.0, f64::max);
        let rotate_x = xtick_w > cell_w * 0.95;
        let xtick_h = if rotate_x { (xtick_w + 4.0).min(bh * 0.3) } else { line_height(TICK_SIZE) * 1.2 };
        let xdesc_h = if h.x_label.is_empty() { 0.0 } else { DESC_SIZE * 1.5 };
        let top = 12.0;
        let bottom = 6.0 + xtick_h + 6.0 + xdesc_h + 6.0;
        let grid_h = bh - top - bottom;
        let cell_h = grid_h / ny as f64;
        if cell_w < 2.0 || cell_h < 2.0 {
            bail!(
                "heatmap '{}' has {ny}x{nx} cells, too many for {}x{} pixels; increase size",
                h.title,
                h.size.0,
                h.size.1
            );
        }
        let x_edge = |j: usize| (left + j as f64 * cell_w).round() as i32;
        let y_edge = |i: usize| (top + i as f64 * cell_h).round() as i32;

        for (i, row) in h.values.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let color = if v.is_finite() { viridis(norm(v)) } else { MISSING_COLOR };
                body.draw(&Rectangle::new([(x_edge(j), y_edge(i)), (x_edge(j + 1), y_edge(i + 1))], color.filled()))
                    .map_err(draw_err)?;
            }
        }

        if h.annotate {
            let texts: Vec<Vec<String>> = h
                .values
                .iter()
                .map(|r| r.iter().map(|&v| if v.is_finite() { fmt_num(v, 3) } else { String::new() }).collect())
                .collect();
            let chars = texts.iter().flatten().map(|t| t.chars().count()).max().unwrap_or(1).max(1);
            let size = 14f64.min(cell_h * 0.75).min(cell_w * 1.8 / chars as f64);
            if size >= 7.0 {
                for (i, row) in texts.iter().enumerate() {
                    for (j, t) in row.iter().enumerate() {
                        if t.is_empty() {
                            continue;
                        }
                        let color: &'static RGBColor = if norm(h.values[i][j]) < 0.6 { &WHITE } else { &BLACK };
                        let cx = (left + (j as f64 + 0.5) * cell_w).round() as i32;
                        let cy = (top + (i as f64 + 0.5) * cell_h).round() as i32;
                        put(&body, t, (cx, cy), &ts(size, color, HPos::Center, VPos::Center, false))?;
                    }
                }
            }
        }

        // Row labels, thinned when rows are shorter than a line of text.
        let step_y = (line_height(TICK_SIZE) / cell_h).ceil().max(1.0) as usize;
        for (i, t) in y_ticks.iter().enumerate().step_by(step_y) {
            let cy = (top + (i as f64 + 0.5) * cell_h).round() as i32;
            let t = truncate_to(t, TICK_SIZE, ytick_w.max(text_width("00", TICK_SIZE)));
            put(&body, &t, (left as i32 - 6, cy), &ts(TICK_SIZE, &TEXT_COLOR, HPos::Right, VPos::Center, false))?;
        }
        // Column labels, rotated when too wide and thinned when too dense.
        let grid_bottom = y_edge(ny);
        let step_x = if rotate_x { (line_height(TICK_SIZE) / cell_w).ceil().max(1.0) as usize } else { 1 };
        for (j, t) in x_ticks.iter().enumerate().step_by(step_x) {
            let cx = (left + (j as f64 + 0.5) * cell_w).round() as i32;
            if rotate_x {
                let t = truncate_to(t, TICK_SIZE, xtick_h - 4.0);
                put(&body, &t, (cx, grid_bottom + 6), &ts(TICK_SIZE, &TEXT_COLOR, HPos::Right, VPos::Center, true))?;
            } else {
                put(&body, t, (cx, grid_bottom + 6), &ts(TICK_SIZE, &TEXT_COLOR, HPos::Center, VPos::Top, false))?;
            }
        }
        let grid_mid_x = ((left + x_edge(nx) as f64) / 2.0) as i32;
        if !h.x_label.is_empty() {
            put(
                &body,
                &h.x_label,
                (grid_mid_x, bh as i32 - 6),
                &ts(DESC_SIZE, &TEXT_COLOR, HPos::Center, VPos::Bottom, false),
            )?;
        }
        if !h.y_label.is_empty() {
            let cy = ((top + grid_bottom as f64) / 2.0) as i32;
            put(&body, &h.y_label, (8, cy), &ts(DESC_SIZE, &TEXT_COLOR, HPos::Center, VPos::Top, true))?;
        }

        // Colour bar: top = max, bottom = min.
        let cb_x0 = x_edge(nx) + 18;
        let cb_x1 = cb_x0 + cb_w as i32;
        let cb_top = y_edge(0);
        let cb_h = f64::from(grid_bottom - cb_top);
        for k in 0..COLORBAR_STEPS {
            let y_a = cb_top + (cb_h * k as f64 / COLORBAR_STEPS as f64).round() as i32;
            let y_b = cb_top + (cb_h * (k + 1) as f64 / COLORBAR_STEPS as f64).round() as i32;
            let t = 1.0 - (k as f64 + 0.5) / COLORBAR_STEPS as f64;
            body.draw(&Rectangle::new([(cb_x0, y_a), (cb_x1, y_b)], viridis(t).filled())).map_err(draw_err)?;
        }
        body.draw(&Rectangle::new([(cb_x0, cb_top), (cb_x1, grid_bottom)], BLACK.mix(0.5))).map_err(draw_err)?;
        // Max at the top, min at the bottom; a constant map gets one middle label.
        let label_ys = if vmax > vmin { vec![cb_top, grid_bottom] } else { vec![(cb_top + grid_bottom) / 2] };
        for (t, &y) in cb_labels.iter().zip(&label_ys) {
            put(&body, t, (cb_x1 + 6, y), &ts(TICK_SIZE, &TEXT_COLOR, HPos::Left, VPos::Center, false))?;
        }
        root.present().map_err(draw_err)?;
    }
    Ok(svg)
}

/// Tick labels for `n` cells: the given ones, or indices when none are given.
fn tick_labels(ticks: &[String], n: usize, field: &str, what: &str, title: &str) -> Result<Vec<String>> {
    if ticks.is_empty() {
        return Ok((0..n).map(|i| i.to_string()).collect());
    }
    if ticks.len() != n {
        bail!(
            "heatmap '{title}': {field} has {} labels but there are {n} {what}; pass one label per {} or none",
            ticks.len(),
            what.trim_end_matches('s')
        );
    }
    Ok(ticks.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn well_formed(svg: &str) {
        assert!(svg.trim_start().starts_with("<svg"), "bad start: {}", &svg[..60.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"), "bad end");
        assert!(!svg.contains("NaN"), "NaN leaked into the SVG");
        assert!(!svg.contains("inf"), "infinity leaked into the SVG");
    }

    /// True when `text` is the content of some `<text>` element.
    fn has_text(svg: &str, text: &str) -> bool {
        svg.contains(&format!(">\n{text}\n</text>")) || svg.contains(&format!(">{text}\n</text>"))
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    /// Number of filled `<rect>` elements with colour `c`.
    fn rects_with(svg: &str, c: RGBColor) -> usize {
        let fill = format!("fill=\"{}\"", hex(c));
        svg.lines().filter(|l| l.starts_with("<rect") && l.contains(&fill)).count()
    }

    fn example_line() -> LinePlot {
        let xs: Vec<f64> = (0..=20).map(|i| i as f64 / 20.0).collect();
        let mut plot = LinePlot::new(
            "Linear mode connectivity between two CopRA runs (test accuracy along the path)",
            "interpolation coefficient α",
            "accuracy",
        );
        let mean: Vec<(f64, f64)> = xs.iter().map(|&x| (x, 0.8 - 0.25 * (std::f64::consts::PI * x).sin())).collect();
        plot.series.push(Series {
            band: Some(mean.iter().map(|&(x, y)| (x, y - 0.03, y + 0.03)).collect()),
            color: Some(0),
            ..Series::new("CopRA (mean ± 95% CI)", mean)
        });
        let mut lora: Vec<(f64, f64)> =
            xs.iter().map(|&x| (x, 0.78 - 0.05 * (std::f64::consts::PI * x).sin())).collect();
        lora[7].1 = f64::NAN;
        plot.series.push(Series::new("LoRA", lora));
        plot.series.push(Series {
            dashed: true,
            color: Some(0),
            ..Series::new("CopRA train", xs.iter().map(|&x| (x, 0.9 - 0.1 * x)).collect())
        });
        plot.reference_y = Some((0.75, "linear probe".to_string()));
        plot
    }

    #[test]
    fn line_plot_has_texts_and_skips_nan() {
        let plot = example_line();
        let svg = line_plot_svg(&plot).unwrap();
        well_formed(&svg);
        for t in ["interpolation coefficient α", "accuracy", "LoRA", "CopRA train", "linear probe"] {
            assert!(has_text(&svg, t), "missing text {t}");
        }
        assert!(svg.contains("Linear mode connectivity"));
        // The NaN point splits the LoRA line into two polylines of 7 and 13 points.
        let lora = hex(PALETTE[1]);
        let lines =
            svg.lines().filter(|l| l.starts_with("<polyline") && l.contains(&format!("stroke=\"{lora}\""))).count();
        assert_eq!(lines, 2 + 1, "two LoRA segments plus the legend mark");
    }

    #[test]
    fn line_plot_errors() {
        let mut p = LinePlot::new("empty", "x", "y");
        assert!(line_plot_svg(&p).unwrap_err().to_string().contains("no finite data"));
        p.series.push(Series::new("nan only", vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)]));
        assert!(line_plot_svg(&p).is_err());

        let mut p = LinePlot::new("log", "steps", "loss");
        p.series.push(Series::new("run", vec![(0.0, 1.0), (10.0, 0.5)]));
        p.log_x = true;
        let msg = line_plot_svg(&p).unwrap_err().to_string();
        assert!(msg.contains("log_x") && msg.contains("run"), "{msg}");
        p.log_x = false;
        p.log_y = true;
        p.series[0].points[1].1 = 0.0;
        assert!(line_plot_svg(&p).unwrap_err().to_string().contains("log_y"));
        p.series[0].points[1].1 = 0.5;
        p.reference_y = Some((-1.0, "chance".into()));
        assert!(line_plot_svg(&p).is_err());

        let mut p = LinePlot::new("tiny", "x", "y");
        p.series.push(Series::new("a", vec![(0.0, 1.0)]));
        p.size = (10, 10);
        assert!(line_plot_svg(&p).unwrap_err().to_string().contains("size"));
    }

    #[test]
    fn constant_single_point_and_log_plots_render() {
        let mut p = LinePlot::new("constant", "x", "y");
        p.series.push(Series::new("flat", vec![(1.0, 2.0), (2.0, 2.0), (3.0, 2.0)]));
        well_formed(&line_plot_svg(&p).unwrap());
        let mut p = LinePlot::new("one point", "x", "y");
        p.series.push(Series::new("dot", vec![(0.0, 0.0)]));
        let svg = line_plot_svg(&p).unwrap();
        well_formed(&svg);
        assert!(svg.contains("<circle"));

        let mut p = LinePlot::new("log-log", "rank", "loss");
        p.log_x = true;
        p.log_y = true;
        p.series.push(Series::new("loss", (0..8).map(|i| (2f64.powi(i), 3.0 / (1.0 + i as f64))).collect()));
        let svg = line_plot_svg(&p).unwrap();
        well_formed(&svg);
        // A narrow log range is widened to whole decades, so ticks are labelled.
        assert!(has_text(&svg, "1") && has_text(&svg, "100"), "{svg}");
    }

    #[test]
    fn panels_share_legend_and_colours() {
        let mut a = example_line();
        a.title = "weight space".into();
        let mut b = example_line();
        b.title = "factor space".into();
        b.log_y = true;
        let mut c = example_line();
        c.title = "rotated".into();
        c.series.truncate(1);
        let svg = panels_svg("Interpolation, all spaces", &[a, b, c], 2).unwrap();
        well_formed(&svg);
        for t in ["weight space", "factor space", "rotated", "Interpolation, all spaces", "LoRA"] {
            assert!(has_text(&svg, t), "missing {t}");
        }
        assert_eq!(svg.matches(">\nLoRA\n</text>").count(), 1, "one shared legend entry");
        assert!(panels_svg("none", &[], 2).is_err());
        assert!(panels_svg("zero cols", &[example_line()], 0).is_err());
        let mut bad = example_line();
        bad.log_x = true;
        assert!(panels_svg("bad", &[example_line(), bad], 2).is_err());
    }

    fn example_bars() -> BarPlot {
        let methods = ["LoRA", "CopRA", "CopRA + prune"];
        let groups = ["CIFAR-100", "Flowers-102", "a very long dataset name that wraps"];
        BarPlot {
            title: "Merged accuracy by dataset".into(),
            x_label: "dataset".into(),
            y_label: "accuracy".into(),
            groups: groups
                .iter()
                .enumerate()
                .map(|(gi, g)| BarGroup {
                    label: g.to_string(),
                    bars: methods
                        .iter()
                        .enumerate()
                        .filter(|&(mi, _)| !(gi == 2 && mi == 1))
                        .map(|(mi, m)| {
                            let v = 0.6 + 0.1 * mi as f64 - 0.05 * gi as f64;
                            Bar { series: m.to_string(), value: v, err: Some((v - 0.02, v + 0.03)) }
                        })
                        .collect(),
                })
                .collect(),
            ..BarPlot::default()
        }
    }

    #[test]
    fn bar_plot_counts_and_texts() {
        let svg = bar_plot_svg(&example_bars()).unwrap();
        well_formed(&svg);
        for t in ["Merged accuracy by dataset", "dataset", "accuracy", "LoRA", "CopRA", "CIFAR-100"] {
            assert!(has_text(&svg, t), "missing {t}");
        }
        // Bars per series plus one legend swatch each.
        assert_eq!(rects_with(&svg, PALETTE[0]), 3 + 1);
        assert_eq!(rects_with(&svg, PALETTE[1]), 2 + 1);
        assert_eq!(rects_with(&svg, PALETTE[2]), 3 + 1);
    }

    #[test]
    fn bar_plot_negative_nan_and_errors() {
        let mut p = example_bars();
        p.groups[0].bars[0].value = -0.3;
        p.groups[1].bars[0].value = f64::NAN;
        let svg = bar_plot_svg(&p).unwrap();
        well_formed(&svg);
        assert_eq!(rects_with(&svg, PALETTE[0]), 2 + 1);

        let mut p = example_bars();
        p.groups[0].bars[1].err = Some((1.0, 0.0));
        assert!(bar_plot_svg(&p).unwrap_err().to_string().contains("lo <= hi"));
        let mut p = example_bars();
        let dup = p.groups[0].bars[0].clone();
        p.groups[0].bars.push(dup);
        assert!(bar_plot_svg(&p).unwrap_err().to_string().contains("two bars"));
        assert!(bar_plot_svg(&BarPlot::default()).is_err());
        let mut p = example_bars();
        p.groups.iter_mut().flat_map(|g| &mut g.bars).for_each(|b| b.value = f64::NAN);
        assert!(bar_plot_svg(&p).is_err());
    }

    fn example_heatmap() -> Heatmap {
        let ny = 12;
        let nx = 4;
        Heatmap {
            title: "Shapley value per block and module".into(),
            x_label: "module".into(),
            y_label: "block".into(),
            x_ticks: ["query", "key", "value", "output"].iter().map(|s| s.to_string()).collect(),
            y_ticks: (0..ny).map(|i| format!("block {i}")).collect(),
            values: (0..ny).map(|i| (0..nx).map(|j| ((i * nx + j) as f64 * 0.37).sin() * 0.02).collect()).collect(),
            annotate: true,
            ..Heatmap::default()
        }
    }

    #[test]
    fn heatmap_cells_colourbar_and_labels() {
        let mut h = example_heatmap();
        h.values[3][2] = f64::NAN;
        let svg = heatmap_svg(&h).unwrap();
        well_formed(&svg);
        for t in ["Shapley value per block and module", "module", "block", "query", "block 11"] {
            assert!(has_text(&svg, t), "missing {t}");
        }
        let rects = svg.lines().filter(|l| l.starts_with("<rect")).count();
        // background + cells + colour-bar steps + colour-bar frame
        assert_eq!(rects, 1 + 12 * 4 + COLORBAR_STEPS + 1);
        assert_eq!(rects_with(&svg, MISSING_COLOR), 1);
        // 47 finite cells are annotated.
        let annotated = svg.lines().filter(|l| l.starts_with("<text") && l.contains("middle")).count();
        assert!(annotated >= 47, "{annotated}");
    }

    #[test]
    fn heatmap_errors_and_constant() {
        assert!(heatmap_svg(&Heatmap::default()).is_err());
        let mut h = example_heatmap();
        h.values[2].pop();
        assert!(heatmap_svg(&h).unwrap_err().to_string().contains("row 2"));
        let mut h = example_heatmap();
        h.x_ticks.pop();
        assert!(heatmap_svg(&h).unwrap_err().to_string().contains("x_ticks"));
        let mut h = example_heatmap();
        h.values.iter_mut().flatten().for_each(|v| *v = f64::NAN);
        assert!(heatmap_svg(&h).is_err());
        let h = Heatmap { values: vec![vec![1.0; 3]; 2], annotate: true, ..Heatmap::default() };
        well_formed(&heatmap_svg(&h).unwrap());
        let h = Heatmap { values: vec![vec![1.0; 2000]; 2], ..Heatmap::default() };
        assert!(heatmap_svg(&h).unwrap_err().to_string().contains("increase size"));
    }

    #[test]
    fn number_formatting() {
        assert_eq!(fmt_num(0.15000000000000002, 6), "0.15");
        assert_eq!(fmt_num(-0.0, 6), "0");
        assert_eq!(fmt_num(1234.5, 6), "1234.5");
        assert_eq!(fmt_num(1.5e-4, 3), "1.5e-4");
        assert_eq!(fmt_num(2.0e6, 3), "2e6");
        assert_eq!(fmt_tick(5.5e-17, Some(1.0)), "0");
        assert_eq!(wrap_text("a bb ccc", 10.0, 19.0), vec!["a", "bb", "ccc"]);
    }

    /// Renders one example of each figure to /tmp/report-examples for a visual check.
    #[test]
    fn render_examples() {
        let dir = std::env::temp_dir().join("report-examples");
        write_svg(&dir.join("line.svg"), &line_plot_svg(&example_line()).unwrap()).unwrap();
        let mut log = LinePlot::new("Training loss (log-log)", "step", "loss");
        log.log_x = true;
        log.log_y = true;
        for (k, name) in ["rank 4", "rank 16"].iter().enumerate() {
            log.series.push(Series::new(
                *name,
                (1..=200).map(|i| (i as f64 * 5.0, 2.5 / (i as f64).powf(0.3 + 0.1 * k as f64))).collect(),
            ));
        }
        write_svg(&dir.join("line_log.svg"), &line_plot_svg(&log).unwrap()).unwrap();
        let mut a = example_line();
        a.title = "weight space".into();
        let mut b = example_line();
        b.title = "factor space (A, B)".into();
        let mut c = example_line();
        c.title = "aligned factor space".into();
        c.series.truncate(2);
        let svg = panels_svg("Interpolation in three spaces", &[a, b, c], 2).unwrap();
        write_svg(&dir.join("panels.svg"), &svg).unwrap();
        write_svg(&dir.join("bars.svg"), &bar_plot_svg(&example_bars()).unwrap()).unwrap();
        write_svg(&dir.join("heatmap.svg"), &heatmap_svg(&example_heatmap()).unwrap()).unwrap();
        let wide = Heatmap {
            title: "Pairwise distance between 24 adapters".into(),
            x_ticks: (0..24).map(|i| format!("adapter-{i}")).collect(),
            y_ticks: (0..24).map(|i| format!("adapter-{i}")).collect(),
            values: (0..24).map(|i| (0..24).map(|j| (i as f64 - j as f64).abs()).collect()).collect(),
            annotate: true,
            x_label: "adapter".into(),
            y_label: "adapter".into(),
            size: (800, 800),
        };
        write_svg(&dir.join("heatmap_wide.svg"), &heatmap_svg(&wide).unwrap()).unwrap();
    }
}
