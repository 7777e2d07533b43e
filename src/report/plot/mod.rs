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

    /// Checks the texts every figure carries: its title (possibly wrapped over several lines)
    /// and its axis labels.
    fn assert_labels(doc: &XmlDoc, title: &str, x_label: &str, y_label: &str) {
        let all = doc.texts.join(" ");
        assert!(all.contains(title), "title {title:?} missing from {all:?}");
        assert_eq!(doc.text_count(x_label), 1, "x label {x_label:?}");
        assert_eq!(doc.text_count(y_label), 1, "y label {y_label:?}");
    }

    /// Polylines stroked with palette colour `i`, of any width or of stroke width `width`
    /// (data lines are 2 wide, legend marks 3).
    fn polylines_with(doc: &XmlDoc, i: usize, width: Option<&str>) -> usize {
        let c = hex(PALETTE[i]);
        doc.named("polyline")
            .filter(|e| e.attr("stroke") == Some(c.as_str()) && width.is_none_or(|w| e.attr("stroke-width") == Some(w)))
            .count()
    }

    /// Renders one example of each figure (also written to /tmp/report-examples for a visual
    /// check) and checks what each must show: well-formed XML of the requested size, the title
    /// and axis labels, one legend entry per series label, and the marks of every series.
    #[test]
    fn render_examples() {
        let dir = std::env::temp_dir().join("report-examples");

        let line = example_line();
        let svg = line_plot_svg(&line).unwrap();
        write_svg(&dir.join("line.svg"), &svg).unwrap();
        let doc = parse_svg(&svg, line.size, true);
        assert_labels(&doc, &line.title, &line.x_label, &line.y_label);
        for s in &line.series {
            assert_eq!(doc.text_count(&s.label), 1, "one legend entry for {}", s.label);
        }
        assert_eq!(doc.text_count("linear probe"), 1, "reference line label");
        // Legend marks: CopRA solid (one segment), CopRA train dashed (two), LoRA (one).
        assert_eq!(polylines_with(&doc, 0, Some("3")), 1 + 2);
        assert_eq!(polylines_with(&doc, 1, Some("3")), 1);
        // Data: LoRA split in two by its NaN point; the CopRA mean is one line and the train
        // line is drawn dash by dash.
        assert_eq!(polylines_with(&doc, 1, Some("2")), 2);
        assert!(polylines_with(&doc, 0, Some("2")) > 1 + 2, "the dashed line is drawn as dashes");
        // The CI band is one filled polygon in the series colour.
        let band = hex(PALETTE[0]);
        assert_eq!(doc.named("polygon").filter(|e| e.attr("fill") == Some(band.as_str())).count(), 1);

        let mut log = LinePlot::new("Training loss (log-log)", "step", "loss");
        log.log_x = true;
        log.log_y = true;
        for (k, name) in ["rank 4", "rank 16"].iter().enumerate() {
            log.series.push(Series::new(
                *name,
                (1..=200).map(|i| (i as f64 * 5.0, 2.5 / (i as f64).powf(0.3 + 0.1 * k as f64))).collect(),
            ));
        }
        let svg = line_plot_svg(&log).unwrap();
        write_svg(&dir.join("line_log.svg"), &svg).unwrap();
        let doc = parse_svg(&svg, log.size, true);
        assert_labels(&doc, &log.title, "step", "loss");
        for (i, name) in ["rank 4", "rank 16"].iter().enumerate() {
            assert_eq!(doc.text_count(name), 1, "legend entry {name}");
            assert_eq!(polylines_with(&doc, i, None), 1 + 1, "{name}: one line and its legend mark");
        }
        // Decade ticks on both log axes: x spans 5..1000, y about 0.5..2.5.
        for t in ["10", "100", "1000"] {
            assert!(doc.text_count(t) >= 1, "log tick {t}");
        }

        let mut a = example_line();
        a.title = "weight space".into();
        let mut b = example_line();
        b.title = "factor space (A, B)".into();
        let mut c = example_line();
        c.title = "aligned factor space".into();
        c.series.truncate(2);
        let svg = panels_svg("Interpolation in three spaces", &[a, b, c], 2).unwrap();
        write_svg(&dir.join("panels.svg"), &svg).unwrap();
        let doc = parse_svg(&svg, (2 * 440, 2 * 330), false);
        assert_eq!(doc.text_count("Interpolation in three spaces"), 1);
        for t in ["weight space", "factor space (A, B)", "aligned factor space"] {
            assert_eq!(doc.text_count(t), 1, "panel title {t}");
        }
        for s in &example_line().series {
            assert_eq!(doc.text_count(&s.label), 1, "one shared legend entry for {}", s.label);
        }
        // LoRA (colour 1) is in all three panels, two segments each, plus one legend mark.
        assert_eq!(polylines_with(&doc, 1, None), 3 * 2 + 1);

        let bars = example_bars();
        let svg = bar_plot_svg(&bars).unwrap();
        write_svg(&dir.join("bars.svg"), &svg).unwrap();
        let doc = parse_svg(&svg, bars.size, true);
        assert_labels(&doc, &bars.title, &bars.x_label, &bars.y_label);
        for (i, m) in ["LoRA", "CopRA", "CopRA + prune"].iter().enumerate() {
            assert_eq!(doc.text_count(m), 1, "legend entry {m}");
            let fill = hex(PALETTE[i]);
            let rects = doc.named("rect").filter(|e| e.attr("fill") == Some(fill.as_str())).count();
            // One bar per group the series is in (CopRA misses the third), plus the legend swatch.
            assert_eq!(rects, if i == 1 { 2 } else { 3 } + 1, "bars of {m}");
        }

        let heat = example_heatmap();
        let svg = heatmap_svg(&heat).unwrap();
        write_svg(&dir.join("heatmap.svg"), &svg).unwrap();
        let doc = parse_svg(&svg, heat.size, true);
        assert_labels(&doc, &heat.title, &heat.x_label, &heat.y_label);
        for t in heat.x_ticks.iter().chain(&heat.y_ticks) {
            assert_eq!(doc.text_count(t), 1, "tick {t}");
        }
        // Every one of the 12 × 4 cells is annotated with a number.
        let numbers = doc.texts.iter().filter(|t| t.trim_start_matches('-').parse::<f64>().is_ok()).count();
        assert!(numbers >= 12 * 4, "{numbers} numeric labels for 48 cells");
        assert!(doc.named("rect").count() >= 12 * 4, "one rect per cell");

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
        let svg = heatmap_svg(&wide).unwrap();
        write_svg(&dir.join("heatmap_wide.svg"), &svg).unwrap();
        let doc = parse_svg(&svg, (800, 800), true);
        assert!(doc.texts.join(" ").contains(&wide.title));
        assert_eq!(doc.text_count("adapter"), 2, "both axis labels");
        assert!(doc.named("rect").count() >= 24 * 24, "one rect per cell");
    }

    #[test]
    fn the_xml_check_catches_broken_documents() {
        assert!(parse_xml("<svg><g><text>a</text></g></svg>").is_ok());
        assert!(parse_xml(r#"<svg a="1"><rect b='x>y'/></svg>"#).is_ok());
        for bad in [
            "<svg><g></svg>",
            "<svg></svg><svg></svg>",
            "<svg><text>a & b</text></svg>",
            "<svg a=1></svg>",
            "<svg a=\"1\" a=\"2\"></svg>",
            "<svg><text>x</svg>",
            "text<svg></svg>",
            "<svg>",
        ] {
            assert!(parse_xml(bad).is_err(), "accepted {bad:?}");
        }
    }
}
