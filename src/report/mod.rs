//! Result output: Parquet tables and SVG figures.
//!
//! - [`atomic`]: atomic file writes (temporary file, fsync, rename).
//! - [`atomic_dir`]: atomic folder installs (temporary sibling, rename or exchange), safe for
//!   concurrent writers, and cleaning of stale temporary folders.
//! - [`file_set`]: a command's outputs written as a set (staged, then renamed in together).
//! - [`table`]: a column-oriented [`Table`] builder written as zstd Parquet,
//!   so analysis code never imports polars.
//! - [`plot`]: readable SVG line plots, panel grids, grouped bar plots and
//!   heatmaps drawn with plotters (no fonts needed).

pub mod atomic;
pub mod atomic_dir;
pub mod file_set;
pub mod plot;
pub mod table;

pub use atomic::{write_atomic, write_atomic_with};
pub use plot::{
    bar_plot_svg, heatmap_svg, line_plot_svg, panels_svg, write_svg, Bar, BarGroup, BarPlot, Heatmap, LinePlot, Series,
    DEFAULT_SIZE,
};
pub use table::Table;
