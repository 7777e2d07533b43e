//! `textures`: ten DTD-like periodic and stochastic texture classes.
//!
//! Every image draws a foreground texture over a background colour with random
//! colours, scale, rotation, phase, a slight coordinate warp, uneven illumination
//! and pixel noise, so class identity lives only in the texture's structure.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

use super::draw::{aa, contrasting, random_color, uni, Canvas};

/// Class names of the `textures` task, in label order.
pub(crate) const CLASSES: [&str; 10] =
    ["stripes", "checks", "dots", "waves", "zigzag", "crosshatch", "grid", "rings", "blotches", "bricks"];

/// Coverage of periodic bands of `width` pixels repeating every `period` pixels along `t`.
fn band(t: f32, period: f32, width: f32) -> f32 {
    let f = (t / period).rem_euclid(1.0);
    aa((f - 0.5).abs() * period - 0.5 * width)
}

/// Triangle wave in `[-1, 1]` with period 1.
fn tri(t: f32) -> f32 {
    4.0 * (t.rem_euclid(1.0) - 0.5).abs() - 1.0
}

/// Smoothly interpolated lattice noise in `[0, 1]`.
struct ValueNoise {
    cell: f32,
    n: usize,
    vals: Vec<f32>,
}

impl ValueNoise {
    fn new(rng: &mut ChaCha8Rng, extent: f32, cell: f32) -> ValueNoise {
        let n = (extent / cell).ceil() as usize + 3;
        let vals = (0..n * n).map(|_| rng.random::<f32>()).collect();
        ValueNoise { cell, n, vals }
    }

    fn at(&self, x: f32, y: f32) -> f32 {
        let (gx, gy) = ((x / self.cell).max(0.0), (y / self.cell).max(0.0));
        let (ix, iy) = (gx.floor() as usize, gy.floor() as usize);
        let (ix, iy) = (ix.min(self.n - 2), iy.min(self.n - 2));
        let s = |t: f32| t * t * (3.0 - 2.0 * t);
        let (fx, fy) = (s((gx - ix as f32).clamp(0.0, 1.0)), s((gy - iy as f32).clamp(0.0, 1.0)));
        let v = |i: usize, j: usize| self.vals[j * self.n + i];
        let top = v(ix, iy) + (v(ix + 1, iy) - v(ix, iy)) * fx;
        let bot = v(ix, iy + 1) + (v(ix + 1, iy + 1) - v(ix, iy + 1)) * fx;
        top + (bot - top) * fy
    }
}

/// Render one `textures` image of class `class`.
pub(crate) fn render(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let bg = random_color(rng);
    let fg = contrasting(rng, bg, 0.22);
    let mut c = Canvas::new(size, bg);
    let u = c.unit();
    let n = c.sizef();

    // Texture frame: rotation, translation and a gentle sinusoidal warp.
    let theta = uni(rng, 0.0, PI);
    let (st, ct) = theta.sin_cos();
    let (ox, oy) = (uni(rng, 0.0, 64.0) * u, uni(rng, 0.0, 64.0) * u);
    let warp_amp = uni(rng, 0.0, 0.9) * u;
    let warp_len = uni(rng, 10.0, 24.0) * u;
    let (wp1, wp2) = (uni(rng, 0.0, TAU), uni(rng, 0.0, TAU));

    // Class parameters (all lengths in pixels).
    let period = match class {
        1 => uni(rng, 6.0, 12.0),
        2 => uni(rng, 5.0, 9.0),
        6 => uni(rng, 5.0, 10.0),
        9 => uni(rng, 4.0, 7.0),
        _ => uni(rng, 4.0, 9.0),
    } * u;
    let duty = match class {
        5 => uni(rng, 0.15, 0.3),
        6 => uni(rng, 0.12, 0.25),
        9 => uni(rng, 0.15, 0.3),
        _ => uni(rng, 0.3, 0.55),
    };
    let amp = match class {
        3 => uni(rng, 0.3, 0.6),
        _ => uni(rng, 0.45, 0.8),
    } * period;
    let wavelength = match class {
        3 => uni(rng, 8.0, 16.0) * u,
        _ => uni(rng, 4.5, 9.0) * u,
    };
    let delta = uni(rng, 35.0, 60.0).to_radians() * if rng.random_bool(0.5) { 1.0 } else { -1.0 };
    let (sd, cd) = delta.sin_cos();
    let hex = rng.random_bool(0.5);
    let dot_r = uni(rng, 0.2, 0.33) * period;
    let ring_c = (uni(rng, -0.3, 1.3) * n, uni(rng, -0.3, 1.3) * n);
    let brick_len = uni(rng, 1.6, 2.6) * period;
    let noise = if class == 8 {
        let cell = uni(rng, 5.0, 10.0) * u;
        Some(ValueNoise::new(rng, n + 2.0 * warp_amp + 4.0, cell))
    } else {
        None
    };
    let thresh = uni(rng, 0.4, 0.6);

    let cov = |x: f32, y: f32| -> f32 {
        let xw = x + warp_amp * (TAU * y / warp_len + wp1).sin();
        let yw = y + warp_amp * (TAU * x / warp_len + wp2).sin();
        let a = xw * ct + yw * st + ox;
        let b = -xw * st + yw * ct + oy;
        match class {
            0 => band(a, period, duty * period),
            1 => {
                let (p, q) = (band(a, period, 0.5 * period), band(b, period, 0.5 * period));
                p + q - 2.0 * p * q
            }
            2 => {
                let row = (b / period).floor();
                let shift = if hex && (row as i64) % 2 != 0 { 0.5 * period } else { 0.0 };
                let fx = (a + shift).rem_euclid(period) - 0.5 * period;
                let fy = b.rem_euclid(period) - 0.5 * period;
                aa((fx * fx + fy * fy).sqrt() - dot_r)
            }
            3 => band(a + amp * (TAU * b / wavelength).sin(), period, duty * period),
            4 => band(a + amp * tri(b / wavelength), period, duty * period),
            5 => {
                let a2 = a * cd + b * sd;
                band(a, period, duty * period).max(band(a2, period, duty * period))
            }
            6 => band(a, period, duty * period).max(band(b, period, duty * period)),
            7 => {
                let r = ((xw - ring_c.0).powi(2) + (yw - ring_c.1).powi(2)).sqrt();
                band(r + ox, period, duty * period)
            }
            8 => match &noise {
                Some(vn) => {
                    let v = vn.at(xw + 2.0, yw + 2.0);
                    ((v - thresh) * 8.0 + 0.5).clamp(0.0, 1.0)
                }
                None => 0.0,
            },
            _ => {
                let m = duty * period;
                let row = ((b - 0.5 * period) / period).floor();
                let shift = if (row as i64) % 2 != 0 { 0.5 * brick_len } else { 0.0 };
                band(b, period, m).max(band(a + shift, brick_len, m))
            }
        }
    };
    let alpha = uni(rng, 0.7, 1.0);
    c.paint_all(fg, alpha, |p| cov(p.0, p.1));
    c.illumination(rng, 0.75, 1.15);
    let sigma = uni(rng, 0.01, 0.06);
    c.noise(rng, sigma);
    c
}
