//! `digits`: procedurally rendered digit glyphs 0–9.
//!
//! Two styles, a hand-drawn stroke font (65%) and a seven-segment font (35%),
//! with random height, width, slant, rotation, stroke thickness, per-point
//! wobble, position, colours, clutter and noise.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::draw::{arc, background_around, bbox, clutter_lines, near, polar_pair, rot, uni, Canvas, Pt};

/// Class names of the `digits` task, in label order.
pub(crate) const CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// Stroke-font glyph of `d` in the unit box (x right, y down).
fn stroke_glyph(d: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<Pt>> {
    match d {
        0 => vec![arc((0.5, 0.5), (0.4, 0.5), 0.0, 360.0, 20)],
        1 => {
            let mut s = vec![vec![(0.25, 0.25), (0.55, 0.0), (0.55, 1.0)]];
            if rng.random_bool(0.4) {
                s.push(vec![(0.25, 1.0), (0.85, 1.0)]);
            }
            s
        }
        2 => {
            let mut s = arc((0.5, 0.28), (0.38, 0.28), 195.0, 395.0, 10);
            s.extend([(0.1, 1.0), (0.92, 1.0)]);
            vec![s]
        }
        3 => {
            let mut s = arc((0.5, 0.26), (0.34, 0.26), 200.0, 450.0, 10);
            s.extend(arc((0.5, 0.75), (0.4, 0.25), 270.0, 520.0, 10));
            vec![s]
        }
        4 => vec![vec![(0.7, 1.0), (0.7, 0.0), (0.08, 0.68), (0.95, 0.68)]],
        5 => {
            let mut s = vec![(0.85, 0.0), (0.27, 0.0), (0.22, 0.47)];
            s.extend(arc((0.5, 0.7), (0.38, 0.3), 225.0, 520.0, 12));
            vec![s]
        }
        6 => {
            let mut s = vec![(0.78, 0.02), (0.45, 0.12), (0.22, 0.38), (0.12, 0.7)];
            s.extend(arc((0.5, 0.7), (0.38, 0.3), 180.0, 540.0, 16));
            vec![s]
        }
        7 => {
            let mut s = vec![vec![(0.08, 0.0), (0.92, 0.0), (0.4, 1.0)]];
            if rng.random_bool(0.3) {
                s.push(vec![(0.4, 0.52), (0.8, 0.52)]);
            }
            s
        }
        8 => vec![arc((0.5, 0.25), (0.32, 0.25), 0.0, 360.0, 14), arc((0.5, 0.74), (0.4, 0.26), 0.0, 360.0, 16)],
        _ => {
            let mut s = arc((0.5, 0.3), (0.38, 0.3), 0.0, 360.0, 16);
            s.extend([(0.86, 0.65), (0.7, 0.92), (0.3, 1.0)]);
            vec![s]
        }
    }
}

/// Seven-segment glyph of `d` in the unit box: segments a..g as separate strokes.
fn segment_glyph(d: usize) -> Vec<Vec<Pt>> {
    const ON: [&str; 10] = ["abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg"];
    let (l, r, t, m, b, g) = (0.1, 0.9, 0.0, 0.5, 1.0, 0.07);
    ON[d.min(9)]
        .chars()
        .map(|s| match s {
            'a' => vec![(l + g, t), (r - g, t)],
            'b' => vec![(r, t + g), (r, m - g)],
            'c' => vec![(r, m + g), (r, b - g)],
            'd' => vec![(l + g, b), (r - g, b)],
            'e' => vec![(l, m + g), (l, b - g)],
            'f' => vec![(l, t + g), (l, m - g)],
            _ => vec![(l + g, m), (r - g, m)],
        })
        .collect()
}

/// Render one `digits` image of digit `class`.
pub(crate) fn render(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let mut c = Canvas::new(size, [0.0; 3]);
    let (bg, fg) = polar_pair(rng, 0.22, 0.7);
    background_around(&mut c, rng, bg);
    let nl = rng.random_range(1..5);
    clutter_lines(&mut c, rng, nl, (0.15, 0.4));
    let (u, n) = (c.unit(), c.sizef());

    let glyph = if rng.random_bool(0.65) { stroke_glyph(class, rng) } else { segment_glyph(class) };
    let h = uni(rng, 14.0, 24.0) * u;
    let w = h * uni(rng, 0.5, 0.75);
    let slant = uni(rng, -0.3, 0.3);
    let angle = uni(rng, -0.18, 0.18);
    let wobble = 0.03;
    let ht = uni(rng, 0.7, 1.7) * u;
    let mut lines: Vec<Vec<Pt>> = glyph
        .into_iter()
        .map(|line| {
            line.into_iter()
                .map(|(x, y)| {
                    let (x, y) = (x + uni(rng, -wobble, wobble), y + uni(rng, -wobble, wobble));
                    let (yc, xc) = (y - 0.5, x - 0.5);
                    rot(((xc - slant * yc) * w, yc * h), angle)
                })
                .collect()
        })
        .collect();
    let all: Vec<Pt> = lines.iter().flatten().copied().collect();
    let bb = bbox(&all, ht + 1.0);
    let ox = near(rng, 0.5 * n - 0.5 * (bb[0] + bb[2]), 4.0 * u, -bb[0], n - bb[2]);
    let oy = near(rng, 0.5 * n - 0.5 * (bb[1] + bb[3]), 4.0 * u, -bb[1], n - bb[3]);
    for line in &mut lines {
        for p in line.iter_mut() {
            *p = (p.0 + ox, p.1 + oy);
        }
    }
    c.strokes(&lines, ht, fg, uni(rng, 0.8, 1.0));
    c.illumination(rng, 0.8, 1.15);
    let sigma = uni(rng, 0.01, 0.05);
    c.noise(rng, sigma);
    c
}
