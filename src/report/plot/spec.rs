//! Figure specifications: what a line plot, a bar plot or a heatmap shows, and the
//! atomic writer of the rendered SVG.

use std::path::Path;

use anyhow::Result;

use crate::report::atomic::write_atomic;

/// Default figure size in pixels (width, height).
pub const DEFAULT_SIZE: (u32, u32) = (800, 500);

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
