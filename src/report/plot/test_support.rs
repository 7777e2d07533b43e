//! Helpers of the figure tests: SVG checks and one example of every figure kind.

use plotters::prelude::RGBColor;

use super::spec::{Bar, BarGroup, BarPlot, Heatmap, LinePlot, Series};

pub(super) fn well_formed(svg: &str) {
    assert!(svg.trim_start().starts_with("<svg"), "bad start: {}", &svg[..60.min(svg.len())]);
    assert!(svg.trim_end().ends_with("</svg>"), "bad end");
    assert!(!svg.contains("NaN"), "NaN leaked into the SVG");
    assert!(!svg.contains("inf"), "infinity leaked into the SVG");
}

/// True when `text` is the content of some `<text>` element.
pub(super) fn has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>")) || svg.contains(&format!(">{text}\n</text>"))
}

pub(super) fn hex(c: RGBColor) -> String {
    format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
}

/// Number of filled `<rect>` elements with colour `c`.
pub(super) fn rects_with(svg: &str, c: RGBColor) -> usize {
    let fill = format!("fill=\"{}\"", hex(c));
    svg.lines().filter(|l| l.starts_with("<rect") && l.contains(&fill)).count()
}

pub(super) fn example_line() -> LinePlot {
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
    let mut lora: Vec<(f64, f64)> = xs.iter().map(|&x| (x, 0.78 - 0.05 * (std::f64::consts::PI * x).sin())).collect();
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

pub(super) fn example_bars() -> BarPlot {
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

pub(super) fn example_heatmap() -> Heatmap {
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
