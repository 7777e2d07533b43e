//! The legend strip on the right of a figure, and the colour of each line series.

use std::collections::{HashMap, HashSet};

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, VPos};

use super::spec::Series;
use super::text::{put, text_width, truncate_to, ts};
use super::{draw_err, Area, LEGEND_SIZE, PALETTE, TEXT_COLOR};

/// The mark drawn next to a legend label.
#[derive(Clone, Copy, Debug)]
pub(super) enum Mark {
    Line { color: RGBColor, dashed: bool },
    Box(RGBColor),
}

#[derive(Clone, Debug)]
pub(super) struct LegendEntry {
    pub(super) label: String,
    pub(super) mark: Mark,
}

const LEGEND_ROW: f64 = 22.0;
const LEGEND_MARK: i32 = 28;

/// Width of the legend strip (0 without entries), capped at 35 % of `total`.
pub(super) fn legend_width(entries: &[LegendEntry], total: u32) -> u32 {
    if entries.is_empty() {
        return 0;
    }
    let widest = entries.iter().map(|e| text_width(&e.label, LEGEND_SIZE)).fold(0.0, f64::max);
    let want = widest + f64::from(LEGEND_MARK) + 30.0;
    (want.ceil() as u32).min(total * 35 / 100)
}

pub(super) fn draw_legend(area: &Area, entries: &[LegendEntry], top: i32) -> Result<()> {
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

/// Colour per series: an explicit palette index, else one per distinct label
/// in order of first appearance, skipping explicitly used indices.
pub(super) struct SeriesColors {
    by_label: HashMap<String, usize>,
}

impl SeriesColors {
    pub(super) fn new<'s>(series: impl Iterator<Item = &'s Series> + Clone) -> Self {
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

    pub(super) fn color(&self, s: &Series) -> RGBColor {
        let i = s.color.or_else(|| self.by_label.get(&s.label).copied()).unwrap_or(0);
        PALETTE[i % PALETTE.len()]
    }
}
