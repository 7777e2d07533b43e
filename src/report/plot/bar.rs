//! Grouped bar plots with error bars ([`bar_plot_svg`]).

use std::collections::HashSet;

use anyhow::{bail, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::legend::{draw_legend, legend_width, LegendEntry, Mark};
use super::line::y_label_area;
use super::spec::BarPlot;
use super::text::{draw_title, fmt_tick, line_height, put, truncate_to, ts, wrap_text};
use super::{check_size, draw_err, min_max, DESC_SIZE, FONT, PALETTE, TEXT_COLOR, TICK_SIZE, TITLE_SIZE};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::plot::test_support::*;

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
}
