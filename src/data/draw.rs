//! Small anti-aliased raster helpers shared by the procedural tasks.
//!
//! Everything is drawn into a square [`Canvas`] of linear RGB values in `[0, 1]`.
//! Shapes are described by signed distances in pixel units, and a pixel's
//! coverage is `clamp(0.5 - d, 0, 1)`, which gives one-pixel anti-aliased edges.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// An RGB colour with channels in `[0, 1]`.
pub(crate) type Rgb = [f32; 3];

/// A 2-D point in pixel coordinates (x to the right, y down).
pub(crate) type Pt = (f32, f32);

/// Uniform sample in `[a, b)`; never panics, even when `a >= b`.
pub(crate) fn uni(rng: &mut ChaCha8Rng, a: f32, b: f32) -> f32 {
    a + (b - a) * rng.random::<f32>()
}

/// Pixel coverage of a signed distance (negative inside), with a one-pixel ramp.
pub(crate) fn aa(d: f32) -> f32 {
    (0.5 - d).clamp(0.0, 1.0)
}

/// Distance from `p` to the segment `a`–`b`.
pub(crate) fn dist_segment(p: Pt, a: Pt, b: Pt) -> f32 {
    let (px, py) = (p.0 - a.0, p.1 - a.1);
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 > 0.0 { ((px * dx + py * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
    let (ex, ey) = (px - t * dx, py - t * dy);
    (ex * ex + ey * ey).sqrt()
}

/// Signed distance from `p` to a simple polygon (negative inside, even-odd rule).
pub(crate) fn sd_polygon(p: Pt, pts: &[Pt]) -> f32 {
    let n = pts.len();
    if n < 3 {
        return f32::INFINITY;
    }
    let mut d = f32::INFINITY;
    let mut inside = false;
    let mut j = n - 1;
    for i in 0..n {
        let (a, b) = (pts[j], pts[i]);
        d = d.min(dist_segment(p, a, b));
        if (b.1 > p.1) != (a.1 > p.1) {
            let x = b.0 + (p.1 - b.1) * (a.0 - b.0) / (a.1 - b.1);
            if p.0 < x {
                inside = !inside;
            }
        }
        j = i;
    }
    if inside {
        -d
    } else {
        d
    }
}

/// Rotate `p` by `angle` radians around the origin.
pub(crate) fn rot(p: Pt, angle: f32) -> Pt {
    let (s, c) = angle.sin_cos();
    (p.0 * c - p.1 * s, p.0 * s + p.1 * c)
}

/// Map local points through scale (sx, sy), rotation and translation to pixel space.
pub(crate) fn place(pts: &[Pt], centre: Pt, scale: Pt, angle: f32) -> Vec<Pt> {
    pts.iter()
        .map(|&(x, y)| {
            let (rx, ry) = rot((x * scale.0, y * scale.1), angle);
            (centre.0 + rx, centre.1 + ry)
        })
        .collect()
}

/// Points on an elliptical arc; angles in degrees, 0° = +x, 90° = +y (down).
pub(crate) fn arc(c: Pt, r: Pt, a0: f32, a1: f32, n: usize) -> Vec<Pt> {
    (0..=n)
        .map(|i| {
            let a = (a0 + (a1 - a0) * i as f32 / n as f32).to_radians();
            (c.0 + r.0 * a.cos(), c.1 + r.1 * a.sin())
        })
        .collect()
}

/// Regular polygon (or star when `inner` is given) with circumradius 1, first vertex up.
pub(crate) fn regular(n: usize, inner: Option<f32>) -> Vec<Pt> {
    let steps = if inner.is_some() { 2 * n } else { n };
    (0..steps)
        .map(|i| {
            let a = -std::f32::consts::FRAC_PI_2 + std::f32::consts::TAU * i as f32 / steps as f32;
            let r = match inner {
                Some(ri) if i % 2 == 1 => ri,
                _ => 1.0,
            };
            (r * a.cos(), r * a.sin())
        })
        .collect()
}

/// Convert HSV (all in `[0, 1]`) to RGB.
pub(crate) fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let h6 = h.rem_euclid(1.0) * 6.0;
    let f = h6 - h6.floor();
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    match h6 as u32 {
        0 => [v, t, p],
        1 => [q, v, p],
        2 => [p, v, t],
        3 => [p, q, v],
        4 => [t, p, v],
        _ => [v, p, q],
    }
}

/// Perceptual luminance of a colour.
pub(crate) fn luma(c: Rgb) -> f32 {
    0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]
}

/// A random colour of any hue, moderate to full saturation and brightness.
pub(crate) fn random_color(rng: &mut ChaCha8Rng) -> Rgb {
    hsv(rng.random(), uni(rng, 0.15, 1.0), uni(rng, 0.1, 1.0))
}

/// A random colour whose luminance differs from `other` by at least `min_diff`.
pub(crate) fn contrasting(rng: &mut ChaCha8Rng, other: Rgb, min_diff: f32) -> Rgb {
    for _ in 0..32 {
        let c = random_color(rng);
        if (luma(c) - luma(other)).abs() >= min_diff {
            return c;
        }
    }
    if luma(other) > 0.5 {
        [0.05, 0.05, 0.05]
    } else {
        [0.95, 0.95, 0.95]
    }
}

/// A random colour whose luminance is at least `min_diff` above (`lighter`) or below `other`.
pub(crate) fn contrasting_side(rng: &mut ChaCha8Rng, other: Rgb, min_diff: f32, lighter: bool) -> Option<Rgb> {
    (0..32).map(|_| random_color(rng)).find(|&c| {
        let d = luma(c) - luma(other);
        if lighter {
            d >= min_diff
        } else {
            -d >= min_diff
        }
    })
}

/// A (background, foreground) pair with luminance contrast of at least `min_diff`;
/// the foreground is the lighter one with probability `p_light`. The darker colour
/// has value in `[0.05, 0.55]` and the lighter one in `[0.5, 1]`, any hue.
pub(crate) fn polar_pair(rng: &mut ChaCha8Rng, min_diff: f32, p_light: f32) -> (Rgb, Rgb) {
    let lighter = rng.random_bool(p_light.clamp(0.0, 1.0) as f64);
    for _ in 0..32 {
        let dark = hsv(rng.random(), uni(rng, 0.1, 0.9), uni(rng, 0.05, 0.55));
        let light = hsv(rng.random(), uni(rng, 0.1, 0.9), uni(rng, 0.5, 1.0));
        if luma(light) - luma(dark) >= min_diff {
            return if lighter { (dark, light) } else { (light, dark) };
        }
    }
    let (dark, light) = ([0.05; 3], [0.95; 3]);
    if lighter {
        (dark, light)
    } else {
        (light, dark)
    }
}

/// Shift each channel of `c` by a uniform amount in `[-amount, amount]`.
pub(crate) fn jitter_color(rng: &mut ChaCha8Rng, c: Rgb, amount: f32) -> Rgb {
    let mut out = c;
    for v in &mut out {
        *v = (*v + uni(rng, -amount, amount)).clamp(0.0, 1.0);
    }
    out
}

/// Linear interpolation between two colours.
pub(crate) fn mix(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t, a[2] + (b[2] - a[2]) * t]
}

/// A square RGB raster, row-major, values in `[0, 1]`.
pub(crate) struct Canvas {
    /// Side length in pixels.
    pub size: usize,
    /// Pixels, row-major.
    pub px: Vec<Rgb>,
}

impl Canvas {
    /// A canvas filled with one colour.
    pub fn new(size: usize, fill: Rgb) -> Canvas {
        Canvas { size, px: vec![fill; size * size] }
    }

    /// Pixels per unit of the reference 32×32 design grid.
    pub fn unit(&self) -> f32 {
        self.size as f32 / 32.0
    }

    /// Side length as `f32`.
    pub fn sizef(&self) -> f32 {
        self.size as f32
    }

    /// Fill with a linear gradient from `a` to `b` along direction `angle`.
    pub fn gradient(&mut self, a: Rgb, b: Rgb, angle: f32) {
        let (s, c) = angle.sin_cos();
        let n = self.sizef();
        for y in 0..self.size {
            for x in 0..self.size {
                let u = ((x as f32 + 0.5) / n - 0.5) * c + ((y as f32 + 0.5) / n - 0.5) * s;
                self.px[y * self.size + x] = mix(a, b, (u + 0.5).clamp(0.0, 1.0));
            }
        }
    }

    /// Blend `color` with per-pixel coverage `cov(p)` times `alpha` inside a bounding box.
    pub fn paint(&mut self, bbox: [f32; 4], color: Rgb, alpha: f32, cov: impl Fn(Pt) -> f32) {
        let n = self.size as isize;
        let clip = |v: f32| (v.floor() as isize).clamp(0, n) as usize;
        let (x0, y0) = (clip(bbox[0]), clip(bbox[1]));
        let (x1, y1) = (clip(bbox[2] + 1.0), clip(bbox[3] + 1.0));
        for y in y0..y1 {
            for x in x0..x1 {
                let a = cov((x as f32 + 0.5, y as f32 + 0.5)) * alpha;
                if a > 0.0 {
                    let p = &mut self.px[y * self.size + x];
                    *p = mix(*p, color, a.min(1.0));
                }
            }
        }
    }

    /// Blend `color` over the whole canvas with coverage `cov(p)`.
    pub fn paint_all(&mut self, color: Rgb, alpha: f32, cov: impl Fn(Pt) -> f32) {
        let n = self.sizef();
        self.paint([0.0, 0.0, n, n], color, alpha, cov);
    }

    /// Filled anti-aliased disc.
    pub fn disc(&mut self, c: Pt, r: f32, color: Rgb, alpha: f32) {
        let bb = [c.0 - r - 1.0, c.1 - r - 1.0, c.0 + r + 1.0, c.1 + r + 1.0];
        self.paint(bb, color, alpha, |p| aa(((p.0 - c.0).powi(2) + (p.1 - c.1).powi(2)).sqrt() - r));
    }

    /// Anti-aliased annulus of radius `r` and half-thickness `ht`.
    pub fn ring(&mut self, c: Pt, r: f32, ht: f32, color: Rgb, alpha: f32) {
        let e = r + ht + 1.0;
        let bb = [c.0 - e, c.1 - e, c.0 + e, c.1 + e];
        self.paint(bb, color, alpha, |p| aa((((p.0 - c.0).powi(2) + (p.1 - c.1).powi(2)).sqrt() - r).abs() - ht));
    }

    /// Round-capped polyline of half-thickness `ht` (painted once, no double blending).
    pub fn polyline(&mut self, pts: &[Pt], ht: f32, color: Rgb, alpha: f32) {
        if pts.is_empty() {
            return;
        }
        let bb = bbox(pts, ht + 1.0);
        self.paint(bb, color, alpha, |p| {
            let mut d = f32::INFINITY;
            if pts.len() == 1 {
                d = dist_segment(p, pts[0], pts[0]);
            }
            for w in pts.windows(2) {
                d = d.min(dist_segment(p, w[0], w[1]));
            }
            aa(d - ht)
        });
    }

    /// Several polylines painted as one union.
    pub fn strokes(&mut self, lines: &[Vec<Pt>], ht: f32, color: Rgb, alpha: f32) {
        let all: Vec<Pt> = lines.iter().flatten().copied().collect();
        if all.is_empty() {
            return;
        }
        let bb = bbox(&all, ht + 1.0);
        self.paint(bb, color, alpha, |p| {
            let mut d = f32::INFINITY;
            for line in lines {
                for w in line.windows(2) {
                    d = d.min(dist_segment(p, w[0], w[1]));
                }
            }
            aa(d - ht)
        });
    }

    /// Filled anti-aliased polygon.
    pub fn polygon(&mut self, pts: &[Pt], color: Rgb, alpha: f32) {
        if pts.len() < 3 {
            return;
        }
        let bb = bbox(pts, 1.0);
        self.paint(bb, color, alpha, |p| aa(sd_polygon(p, pts)));
    }

    /// Soft Gaussian ellipse with standard deviations `sig` rotated by `angle`.
    pub fn blob(&mut self, c: Pt, sig: Pt, angle: f32, color: Rgb, alpha: f32) {
        let e = 3.0 * sig.0.max(sig.1);
        let bb = [c.0 - e, c.1 - e, c.0 + e, c.1 + e];
        self.paint(bb, color, alpha, |p| {
            let (u, v) = rot((p.0 - c.0, p.1 - c.1), -angle);
            (-0.5 * ((u / sig.0).powi(2) + (v / sig.1).powi(2))).exp()
        });
    }

    /// Add independent Gaussian noise of standard deviation `sigma` to every channel.
    pub fn noise(&mut self, rng: &mut ChaCha8Rng, sigma: f32) {
        for p in &mut self.px {
            for v in p.iter_mut() {
                let z: f32 = rng.sample(StandardNormal);
                *v += sigma * z;
            }
        }
    }

    /// Multiply brightness by a smooth random illumination field in `[lo, hi]`.
    pub fn illumination(&mut self, rng: &mut ChaCha8Rng, lo: f32, hi: f32) {
        let (a, b) = (uni(rng, lo, hi), uni(rng, lo, hi));
        let (s, c) = uni(rng, 0.0, std::f32::consts::TAU).sin_cos();
        self.light_ramp((c, s), a, b);
    }

    /// Multiply brightness by a linear ramp along unit direction `dir` (image
    /// coordinates, y down): `dark` at the trailing edge, `lit` at the leading edge.
    pub fn light_ramp(&mut self, dir: Pt, dark: f32, lit: f32) {
        let n = self.sizef();
        for y in 0..self.size {
            for x in 0..self.size {
                let u = ((x as f32 + 0.5) / n - 0.5) * dir.0 + ((y as f32 + 0.5) / n - 0.5) * dir.1;
                let g = dark + (lit - dark) * (u + 0.5).clamp(0.0, 1.0);
                for v in self.px[y * self.size + x].iter_mut() {
                    *v *= g;
                }
            }
        }
    }

    /// Write the canvas as normalised planar data (`x = (q/255 − 0.5)/0.5` with 8-bit
    /// quantisation) into `out`, which holds `channels × size × size` values.
    /// One channel means luminance; three means RGB.
    pub fn write_normalised(&self, out: &mut [f32], channels: usize) {
        let plane = self.size * self.size;
        let q = |v: f32| ((v.clamp(0.0, 1.0) * 255.0).round() / 255.0 - 0.5) / 0.5;
        for (i, p) in self.px.iter().enumerate() {
            if channels == 1 {
                out[i] = q(luma(*p));
            } else {
                for c in 0..channels.min(3) {
                    out[c * plane + i] = q(p[c]);
                }
            }
        }
    }
}

/// Axis-aligned bounding box `[x0, y0, x1, y1]` of points, padded by `pad`.
pub(crate) fn bbox(pts: &[Pt], pad: f32) -> [f32; 4] {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for &(x, y) in pts {
        b[0] = b[0].min(x);
        b[1] = b[1].min(y);
        b[2] = b[2].max(x);
        b[3] = b[3].max(y);
    }
    [b[0] - pad, b[1] - pad, b[2] + pad, b[3] + pad]
}

/// Fill the canvas with a gentle gradient around `base`.
pub(crate) fn background_around(c: &mut Canvas, rng: &mut ChaCha8Rng, base: Rgb) {
    let a = jitter_color(rng, base, 0.08);
    let b = jitter_color(rng, base, 0.08);
    c.gradient(a, b, uni(rng, 0.0, std::f32::consts::TAU));
}

/// Uniform sample in `[centre − jitter, centre + jitter]` clamped to `[lo, hi]`.
pub(crate) fn near(rng: &mut ChaCha8Rng, centre: f32, jitter: f32, lo: f32, hi: f32) -> f32 {
    let v = uni(rng, centre - jitter, centre + jitter);
    if lo > hi {
        0.5 * (lo + hi)
    } else {
        v.clamp(lo, hi)
    }
}

/// Draw `n` faint random thin line segments as background clutter.
pub(crate) fn clutter_lines(c: &mut Canvas, rng: &mut ChaCha8Rng, n: usize, alpha: (f32, f32)) {
    let (s, u) = (c.sizef(), c.unit());
    for _ in 0..n {
        let a = (uni(rng, 0.0, s), uni(rng, 0.0, s));
        let len = uni(rng, 4.0, 14.0) * u;
        let ang = uni(rng, 0.0, std::f32::consts::TAU);
        let b = (a.0 + len * ang.cos(), a.1 + len * ang.sin());
        let col = random_color(rng);
        let al = uni(rng, alpha.0, alpha.1);
        c.polyline(&[a, b], uni(rng, 0.3, 0.7) * u, col, al);
    }
}

/// Draw `n` faint random small specks (discs) as background clutter.
pub(crate) fn clutter_specks(c: &mut Canvas, rng: &mut ChaCha8Rng, n: usize, alpha: (f32, f32)) {
    let (s, u) = (c.sizef(), c.unit());
    for _ in 0..n {
        let p = (uni(rng, 0.0, s), uni(rng, 0.0, s));
        let col = random_color(rng);
        let al = uni(rng, alpha.0, alpha.1);
        c.disc(p, uni(rng, 0.6, 1.6) * u, col, al);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn polygon_sign_and_distance() {
        let sq = [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)];
        assert!((sd_polygon((5.0, 5.0), &sq) + 5.0).abs() < 1e-5);
        assert!((sd_polygon((13.0, 5.0), &sq) - 3.0).abs() < 1e-5);
        assert!(sd_polygon((5.0, 0.5), &sq) < 0.0);
    }

    #[test]
    fn disc_covers_centre_not_corner() {
        let mut c = Canvas::new(16, [0.0; 3]);
        c.disc((8.0, 8.0), 4.0, [1.0; 3], 1.0);
        assert_eq!(c.px[8 * 16 + 8], [1.0; 3]);
        assert_eq!(c.px[0], [0.0; 3]);
        // Edge pixels are partially covered.
        let edge = c.px[8 * 16 + 11][0];
        assert!(edge > 0.0 && edge <= 1.0);
    }

    #[test]
    fn hsv_primaries_and_contrast() {
        assert_eq!(hsv(0.0, 1.0, 1.0), [1.0, 0.0, 0.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for _ in 0..100 {
            let a = random_color(&mut rng);
            let b = contrasting(&mut rng, a, 0.3);
            assert!((luma(a) - luma(b)).abs() >= 0.3 - 1e-6 || luma(b) < 0.1 || luma(b) > 0.9);
        }
    }

    #[test]
    fn normalisation_range() {
        let mut c = Canvas::new(4, [0.0; 3]);
        c.px[0] = [1.0, 0.5, 2.0];
        let mut out = vec![0.0; 3 * 16];
        c.write_normalised(&mut out, 3);
        assert_eq!(out[0], 1.0);
        assert_eq!(out[1], -1.0);
        assert_eq!(out[32], 1.0);
        assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
