//! Annotated heatmaps with a colour bar ([`heatmap_svg`]).

use anyhow::{bail, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::spec::Heatmap;
use super::text::{draw_title, fmt_num, line_height, put, text_width, truncate_to, ts};
use super::{check_size, draw_err, min_max, DESC_SIZE, TEXT_COLOR, TICK_SIZE, TITLE_SIZE};

const MISSING_COLOR: RGBColor = RGBColor(215, 215, 215);
/// Number of colour steps in a heatmap's colour bar.
const COLORBAR_STEPS: usize = 64;

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
    use crate::report::plot::test_support::*;

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
}
