//! Object-scene tasks: `shapes`, `counting`, `orientation` and `relations`.
//!
//! Each scene is drawn over a random gradient background with faint clutter,
//! uneven illumination and pixel noise; objects get random colours, sizes and
//! positions, so class identity lives only in the property the task asks about.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

use super::draw::{
    aa, background_around, clutter_lines, clutter_specks, contrasting_side, jitter_color, luma, near, place,
    polar_pair, regular, rot, uni, Canvas, Pt,
};

/// Probability that the foreground is lighter than the background.
const P_LIGHT: f32 = 0.7;

/// Class names of the `shapes` task, in label order.
pub(crate) const SHAPES: [&str; 10] =
    ["circle", "square", "triangle", "star", "plus", "ring", "diamond", "hexagon", "crescent", "arrow"];

/// Class names of the `counting` task, in label order (one to eight objects).
pub(crate) const COUNTS: [&str; 8] = ["one", "two", "three", "four", "five", "six", "seven", "eight"];

/// Class names of the `orientation` task: bar angle bins of 22.5°, counter-clockwise from horizontal.
pub(crate) const ORIENTATIONS: [&str; 8] = ["0deg", "22deg", "45deg", "67deg", "90deg", "112deg", "135deg", "157deg"];

/// Class names of the `relations` task: where the square is relative to the ring.
pub(crate) const RELATIONS: [&str; 8] =
    ["right", "up-right", "up", "up-left", "left", "down-left", "down", "down-right"];

/// Outline (circumradius about 1) of a polygonal `shapes` class, or `None` for round ones.
fn shape_polygon(class: usize) -> Option<Vec<Pt>> {
    let w = 0.3;
    Some(match class {
        1 => vec![(-0.72, -0.72), (0.72, -0.72), (0.72, 0.72), (-0.72, 0.72)],
        2 => regular(3, None).into_iter().map(|(x, y)| (1.1 * x, 1.1 * y + 0.15)).collect(),
        3 => regular(5, Some(0.45)),
        4 => vec![
            (-w, -1.0),
            (w, -1.0),
            (w, -w),
            (1.0, -w),
            (1.0, w),
            (w, w),
            (w, 1.0),
            (-w, 1.0),
            (-w, w),
            (-1.0, w),
            (-1.0, -w),
            (-w, -w),
        ],
        6 => vec![(0.0, -1.0), (0.62, 0.0), (0.0, 1.0), (-0.62, 0.0)],
        7 => regular(6, None).into_iter().map(|(x, y)| (0.92 * y, 0.92 * x)).collect(),
        9 => vec![(-1.0, -0.24), (0.15, -0.24), (0.15, -0.62), (1.0, 0.0), (0.15, 0.62), (0.15, 0.24), (-1.0, 0.24)],
        _ => return None,
    })
}

/// Finish a scene: uneven illumination and pixel noise.
fn finish(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    c.illumination(rng, 0.8, 1.15);
    let sigma = uni(rng, 0.01, 0.05);
    c.noise(rng, sigma);
}

/// Render one `shapes` image: a single filled shape among clutter.
pub(crate) fn render_shapes(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let mut c = Canvas::new(size, [0.0; 3]);
    let (bg, fg) = polar_pair(rng, 0.2, P_LIGHT);
    background_around(&mut c, rng, bg);
    let nl = rng.random_range(2..6);
    clutter_lines(&mut c, rng, nl, (0.15, 0.45));
    let ns = rng.random_range(0..4);
    clutter_specks(&mut c, rng, ns, (0.15, 0.45));
    let (u, n) = (c.unit(), c.sizef());
    let r = uni(rng, 5.5, 11.0) * u;
    let centre = (near(rng, 0.5 * n, 6.0 * u, r + 1.0, n - r - 1.0), near(rng, 0.5 * n, 6.0 * u, r + 1.0, n - r - 1.0));
    let full_turn = matches!(class, 8 | 9);
    let angle = if full_turn { uni(rng, 0.0, TAU) } else { uni(rng, -0.35, 0.35) };
    let alpha = uni(rng, 0.8, 1.0);
    match class {
        0 => c.disc(centre, 0.85 * r, fg, alpha),
        5 => {
            let ht = uni(rng, 0.14, 0.24) * r;
            c.ring(centre, 0.85 * r - ht, ht, fg, alpha)
        }
        8 => {
            let rr = 0.85 * r;
            let off = rot((uni(rng, 0.4, 0.6) * rr, 0.0), angle);
            let c2 = (centre.0 + off.0, centre.1 + off.1);
            let r2 = rr * uni(rng, 0.8, 0.95);
            let bb = [centre.0 - rr - 1.0, centre.1 - rr - 1.0, centre.0 + rr + 1.0, centre.1 + rr + 1.0];
            c.paint(bb, fg, alpha, |p| {
                let d1 = ((p.0 - centre.0).powi(2) + (p.1 - centre.1).powi(2)).sqrt() - rr;
                let d2 = ((p.0 - c2.0).powi(2) + (p.1 - c2.1).powi(2)).sqrt() - r2;
                aa(d1.max(-d2))
            });
        }
        _ => {
            let poly = shape_polygon(class).unwrap_or_else(|| regular(4, None));
            let aspect = uni(rng, 0.88, 1.12);
            let pts = place(&poly, centre, (r * aspect, r / aspect), angle);
            c.polygon(&pts, fg, alpha);
        }
    }
    finish(&mut c, rng);
    c
}

/// Render one `counting` image: `class + 1` non-overlapping discs or squares.
pub(crate) fn render_counting(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let count = class + 1;
    let mut c = Canvas::new(size, [0.0; 3]);
    let (bg, fg) = polar_pair(rng, 0.22, P_LIGHT);
    background_around(&mut c, rng, bg);
    let nl = rng.random_range(1..5);
    clutter_lines(&mut c, rng, nl, (0.15, 0.4));
    let (u, n) = (c.unit(), c.sizef());
    let squares = rng.random_bool(0.35);
    let mut base = uni(rng, 1.5, 2.8) * u;
    let mut placed: Vec<(Pt, f32)> = Vec::with_capacity(count);
    'attempt: for _ in 0..20 {
        placed.clear();
        for _ in 0..count {
            let r = base * uni(rng, 0.8, 1.2);
            let mut ok = false;
            for _ in 0..200 {
                let p = (uni(rng, r + 0.5, n - r - 0.5), uni(rng, r + 0.5, n - r - 0.5));
                let free = placed
                    .iter()
                    .all(|&(q, rq)| ((p.0 - q.0).powi(2) + (p.1 - q.1).powi(2)).sqrt() >= 1.45 * (r + rq) + 1.5 * u);
                if free {
                    placed.push((p, r));
                    ok = true;
                    break;
                }
            }
            if !ok {
                base *= 0.85;
                continue 'attempt;
            }
        }
        break;
    }
    for &(p, r) in &placed {
        let col = jitter_color(rng, fg, 0.08);
        if squares {
            let sq = [(-0.85, -0.85), (0.85, -0.85), (0.85, 0.85), (-0.85, 0.85)];
            let pts = place(&sq, p, (r, r), uni(rng, 0.0, PI));
            c.polygon(&pts, col, 1.0);
        } else {
            c.disc(p, r, col, 1.0);
        }
    }
    finish(&mut c, rng);
    c
}

/// Render one `orientation` image: one elongated bar whose angle falls in bin `class`.
pub(crate) fn render_orientation(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let mut c = Canvas::new(size, [0.0; 3]);
    let (bg, fg) = polar_pair(rng, 0.22, P_LIGHT);
    background_around(&mut c, rng, bg);
    let ns = rng.random_range(2..7);
    clutter_specks(&mut c, rng, ns, (0.25, 0.7));
    let nl = rng.random_range(2..6);
    clutter_lines(&mut c, rng, nl, (0.2, 0.45));
    let (u, n) = (c.unit(), c.sizef());
    let theta = (class as f32 * 22.5 + uni(rng, -10.0, 10.0)).to_radians();
    let half = uni(rng, 4.5, 11.0) * u;
    let ht = uni(rng, 0.8, 2.4) * u;
    // Direction in image coordinates (y down), so the angle is counter-clockwise on screen.
    let dir = (theta.cos(), -theta.sin());
    let (ex, ey) = (half * dir.0.abs() + ht + 1.0, half * dir.1.abs() + ht + 1.0);
    let centre = (near(rng, 0.5 * n, 5.0 * u, ex, n - ex), near(rng, 0.5 * n, 5.0 * u, ey, n - ey));
    let a = (centre.0 - half * dir.0, centre.1 - half * dir.1);
    let b = (centre.0 + half * dir.0, centre.1 + half * dir.1);
    let alpha = uni(rng, 0.8, 1.0);
    match rng.random_range(0..3) {
        0 => c.polyline(&[a, b], ht, fg, alpha),
        1 => {
            // Elongated ellipse (approximate signed distance).
            let rb = (half, ht * uni(rng, 1.3, 2.0));
            let bb = [centre.0 - half - 2.0, centre.1 - half - 2.0, centre.0 + half + 2.0, centre.1 + half + 2.0];
            c.paint(bb, fg, alpha, |p| {
                let (x, y) = rot((p.0 - centre.0, p.1 - centre.1), theta);
                let k0 = ((x / rb.0).powi(2) + (y / rb.1).powi(2)).sqrt();
                let k1 = ((x / (rb.0 * rb.0)).powi(2) + (y / (rb.1 * rb.1)).powi(2)).sqrt();
                if k1 > 0.0 {
                    aa(k0 * (k0 - 1.0) / k1)
                } else {
                    1.0
                }
            });
        }
        _ => {
            let pieces = rng.random_range(3..5);
            let seg = 1.0 / (2 * pieces - 1) as f32;
            let lines: Vec<Vec<Pt>> = (0..pieces)
                .map(|k| {
                    let t0 = 2.0 * k as f32 * seg;
                    let t1 = t0 + seg;
                    let at = |t: f32| (a.0 + (b.0 - a.0) * t, a.1 + (b.1 - a.1) * t);
                    vec![at(t0), at(t1)]
                })
                .collect();
            c.strokes(&lines, ht, fg, alpha);
        }
    }
    finish(&mut c, rng);
    c
}

/// Render one `relations` image: a filled square placed in direction `class` from a ring.
pub(crate) fn render_relations(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let mut c = Canvas::new(size, [0.0; 3]);
    let (bg, c1) = polar_pair(rng, 0.22, P_LIGHT);
    background_around(&mut c, rng, bg);
    let nl = rng.random_range(2..6);
    clutter_lines(&mut c, rng, nl, (0.15, 0.45));
    let (u, n) = (c.unit(), c.sizef());
    let phi = (class as f32 * 45.0 + uni(rng, -12.0, 12.0)).to_radians();
    let dir = (phi.cos(), -phi.sin());
    let r_ring = uni(rng, 3.0, 5.0) * u;
    let r_sq = uni(rng, 2.5, 4.5) * u;
    let dist = uni(rng, 10.0, 17.0) * u;
    let m = r_ring.max(r_sq) + 1.0;
    let (hx, hy) = (0.5 * dist * dir.0.abs(), 0.5 * dist * dir.1.abs());
    let mid = (near(rng, 0.5 * n, 4.0 * u, m + hx, n - m - hx), near(rng, 0.5 * n, 4.0 * u, m + hy, n - m - hy));
    let ring = (mid.0 - 0.5 * dist * dir.0, mid.1 - 0.5 * dist * dir.1);
    let square = (mid.0 + 0.5 * dist * dir.0, mid.1 + 0.5 * dist * dir.1);
    let lighter = luma(c1) > luma(bg);
    let c2 = contrasting_side(rng, bg, 0.22, lighter).unwrap_or(c1);
    let ht = uni(rng, 0.18, 0.3) * r_ring;
    c.ring(ring, r_ring - ht, ht, c1, 1.0);
    let sq = [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)];
    let pts = place(&sq, square, (r_sq, r_sq), uni(rng, 0.0, PI));
    c.polygon(&pts, c2, 1.0);
    finish(&mut c, rng);
    c
}
