//! Text in figures: width estimates, text styles, wrapping and truncation, number and
//! tick formats, and wrapped titles.

use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{draw_err, Area, FONT, TEXT_COLOR};

/// Estimated rendered width of `text` in pixels at plotters font `size`.
/// The SVG backend writes `font-size = size / 1.24`; sans-serif glyphs average
/// about 0.55 em, so 0.5 × size slightly over-estimates, which is the safe side.
pub(super) fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.5
}

/// Line height in pixels for plotters font `size`.
pub(super) fn line_height(size: f64) -> f64 {
    size
}

/// A text style; `rotate` turns the text to read bottom to top.
pub(super) fn ts(size: f64, color: &'static RGBColor, h: HPos, v: VPos, rotate: bool) -> TextStyle<'static> {
    let style = (FONT, size).into_font().color(color).pos(Pos::new(h, v));
    if rotate {
        style.transform(FontTransform::Rotate270)
    } else {
        style
    }
}

/// Draws `text` at `pos` (pixels relative to `area`).
pub(super) fn put(area: &Area, text: &str, pos: (i32, i32), style: &TextStyle) -> Result<()> {
    area.draw_text(text, style, pos).map_err(draw_err)
}

/// Greedy word wrap to lines of at most `max_width` estimated pixels.
pub(super) fn wrap_text(text: &str, size: f64, max_width: f64) -> Vec<String> {
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
pub(super) fn truncate_to(text: &str, size: f64, max_width: f64) -> String {
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
pub(super) fn fmt_num(v: f64, sig: usize) -> String {
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
pub(super) fn fmt_tick(v: f64, span: Option<f64>) -> String {
    match span {
        Some(span) if v.abs() < span * 1e-9 => "0".to_string(),
        _ => fmt_num(v, 6),
    }
}

/// Height of a wrapped title block (0 for an empty title).
pub(super) fn title_height(title: &str, size: f64, width: u32) -> u32 {
    let lines = wrap_text(title, size, f64::from(width) - 24.0).len();
    if lines == 0 {
        0
    } else {
        (10.0 + lines as f64 * line_height(size) * 1.15 + 6.0).ceil() as u32
    }
}

/// Draws a centred, wrapped title and returns the area below it.
pub(super) fn draw_title<'a>(area: &Area<'a>, title: &str, size: f64) -> Result<Area<'a>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
