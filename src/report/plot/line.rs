//! Line plots ([`line_plot_svg`]) and grids of line-plot panels ([`panels_svg`]).

use std::collections::HashSet;

use anyhow::{bail, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::legend::{draw_legend, legend_width, LegendEntry, Mark, SeriesColors};
use super::spec::LinePlot;
use super::text::{draw_title, fmt_tick, text_width, title_height};
use super::{check_size, draw_err, min_max, Area, DESC_SIZE, FONT, PANEL_TITLE_SIZE, TICK_SIZE, TITLE_SIZE};

/// Size of one panel in [`panels_svg`], in pixels.
const PANEL_SIZE: (u32, u32) = (440, 330);
const REFERENCE_COLOR: RGBColor = RGBColor(80, 80, 80);
/// Series with at most this many finite points also get a marker per point.
const MAX_MARKED_POINTS: usize = 40;

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
pub(super) fn y_label_area(range: (f64, f64), log: bool, n: usize) -> u32 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plot::spec::Series;
    use crate::report::plot::test_support::*;
    use crate::report::plot::PALETTE;

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
}
