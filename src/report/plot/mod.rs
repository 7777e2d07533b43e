//! SVG figures drawn with plotters: line plots (optionally with shaded bands,
//! dashed series, log axes and a reference line), grids of line plots, grouped
//! bar plots with error bars, and annotated heatmaps.
//!
//! No fonts are needed: text becomes SVG `<text>` elements that the viewer
//! renders, and layout uses a conservative estimate of text width. Legends sit
//! outside the plotting area (on the right) so they never hide data. Series
//! colours come from a fixed ten-colour palette; a series' colour follows its
//! label, so the same label has the same colour in every panel of a grid.
//!
//! - [`spec`]: what a figure shows ([`LinePlot`], [`BarPlot`], [`Heatmap`]) and [`write_svg`];
//! - `text`: text width estimates, wrapping, number formats and titles;
//! - `legend`: the legend strip and the series colours;
//! - `line`: [`line_plot_svg`] and [`panels_svg`];
//! - `bar`: [`bar_plot_svg`];
//! - `heatmap`: [`heatmap_svg`].

mod bar;
mod heatmap;
mod legend;
mod line;
pub mod spec;
#[cfg(test)]
mod test_support;
mod text;

pub use bar::bar_plot_svg;
pub use heatmap::heatmap_svg;
pub use line::{line_plot_svg, panels_svg};
pub use spec::{write_svg, Bar, BarGroup, BarPlot, Heatmap, LinePlot, Series, DEFAULT_SIZE};

use anyhow::{anyhow, bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;

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
const TEXT_COLOR: RGBColor = RGBColor(20, 20, 20);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the SVG failed: {e}; check the figure size and data")
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

/// The smallest and largest of `values` (`(inf, -inf)` when empty).
fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

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
