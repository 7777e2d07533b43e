//! The default downstream tasks: `lighting`, `location`, `hue` and `frequency`.
//!
//! Each task's label is one factor of the image that the pretraining mixture varies
//! at random and never labels (light direction, object position, colour, texture
//! scale), so the pretrained backbone learns to look past it: its frozen features
//! carry the factor only weakly, yet it stays in the patch embeddings, within reach
//! of a low-rank adapter. This is the few-shot situation LoRA is made for (knowledge
//! in the backbone, a shift that 16 shots can teach), and it leaves the adapters a
//! large, measurable effect. Every other property of the scene (objects, colours,
//! clutter, noise) is drawn at random, independently of the label.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

use super::draw::{background_around, clutter_lines, contrasting, hsv, place, random_color, regular, uni, Canvas, Pt};
use super::scenes::RELATIONS;

/// Class names of the `lighting` task: the compass direction the light comes from.
pub(crate) const LIGHTING: [&str; 8] = RELATIONS;

/// Class names of the `location` task: the cell of a 3×3 grid holding the object.
pub(crate) const LOCATIONS: [&str; 9] =
    ["top-left", "top", "top-right", "left", "centre", "right", "bottom-left", "bottom", "bottom-right"];

/// Class names of the `hue` task: twelve hue sectors of 30°, centred on these hues.
pub(crate) const HUES: [&str; 12] = [
    "red",
    "orange",
    "yellow",
    "chartreuse",
    "green",
    "spring-green",
    "cyan",
    "azure",
    "blue",
    "violet",
    "magenta",
    "rose",
];

/// Class names of the `frequency` task: grating period in pixels of the 32-pixel design grid.
pub(crate) const PERIODS: [&str; 6] = ["2.5px", "3.4px", "4.6px", "6.2px", "8.3px", "11.2px"];

/// Grating period of `frequency` class 0, in design-grid pixels.
const PERIOD_BASE: f32 = 2.5;
/// Ratio between the periods of neighbouring `frequency` classes.
const PERIOD_RATIO: f32 = 1.35;

/// Light direction of `lighting` class `class`, in radians counter-clockwise from "right".
pub(crate) fn light_angle(class: usize) -> f32 {
    (class as f32 * 45.0).to_radians()
}

/// Grating period of `frequency` class `class`, in design-grid pixels.
pub(crate) fn grating_period(class: usize) -> f32 {
    PERIOD_BASE * PERIOD_RATIO.powi(class as i32)
}

/// A background with faint clutter lines, as every factor scene starts.
fn plain_scene(size: usize, rng: &mut ChaCha8Rng, bg: [f32; 3]) -> Canvas {
    let mut c = Canvas::new(size, [0.0; 3]);
    background_around(&mut c, rng, bg);
    let lines = rng.random_range(1..4);
    clutter_lines(&mut c, rng, lines, (0.15, 0.35));
    c
}

/// Draw one solid object (a disc or a regular polygon of 3 to 7 sides) of radius `r`.
fn solid_object(c: &mut Canvas, rng: &mut ChaCha8Rng, centre: Pt, r: f32, color: [f32; 3]) {
    let sides = rng.random_range(0..6);
    if sides == 0 {
        c.disc(centre, 0.85 * r, color, 1.0);
    } else {
        let pts = place(&regular(sides + 2, None), centre, (r, r), uni(rng, 0.0, PI));
        c.polygon(&pts, color, 1.0);
    }
}

/// Uneven illumination and pixel noise, the finish of every scene but `lighting`.
fn finish(c: &mut Canvas, rng: &mut ChaCha8Rng) {
    c.illumination(rng, 0.85, 1.15);
    let sigma = uni(rng, 0.01, 0.04);
    c.noise(rng, sigma);
}

/// Render one `lighting` image: a random scene of one or two objects lit by a strong
/// linear light ramp (dark side 25–45%, lit side 100–120%) from direction `class`
/// (compass bins of 45°, ±12° jitter).
pub(crate) fn render_lighting(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let bg = hsv(rng.random(), uni(rng, 0.0, 0.6), uni(rng, 0.4, 0.9));
    let mut c = plain_scene(size, rng, bg);
    let (u, n) = (c.unit(), c.sizef());
    for _ in 0..rng.random_range(1..3) {
        let r = uni(rng, 3.0, 7.0) * u;
        let centre = (uni(rng, r, n - r), uni(rng, r, n - r));
        let color = random_color(rng);
        solid_object(&mut c, rng, centre, r, color);
    }
    let phi = light_angle(class) + uni(rng, -12.0, 12.0).to_radians();
    // Image y points down, so "up" is −y.
    let dir = (phi.cos(), -phi.sin());
    let (dark, lit) = (uni(rng, 0.25, 0.45), uni(rng, 1.0, 1.2));
    c.light_ramp(dir, dark, lit);
    let sigma = uni(rng, 0.01, 0.04);
    c.noise(rng, sigma);
    c
}

/// Render one `location` image: one small object (radius 3–4.5 design pixels) of a
/// contrasting colour, placed uniformly inside grid cell `class` (row-major 3×3).
pub(crate) fn render_location(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let bg = random_color(rng);
    let mut c = plain_scene(size, rng, bg);
    let (u, n) = (c.unit(), c.sizef());
    let r = uni(rng, 3.0, 4.5) * u;
    let cell = n / 3.0;
    let within = |index: usize| {
        let lo = index as f32 * cell;
        let (a, b) = ((lo + r).max(r), (lo + cell - r).min(n - r));
        (a, b.max(a + 1e-3))
    };
    let ((x0, x1), (y0, y1)) = (within(class % 3), within(class / 3));
    let centre = (uni(rng, x0, x1), uni(rng, y0, y1));
    let color = contrasting(rng, bg, 0.3);
    solid_object(&mut c, rng, centre, r, color);
    finish(&mut c, rng);
    c
}

/// Render one `hue` image: one object whose hue lies in sector `class` (±6° around its
/// centre; saturation and value 0.6–1) on a nearly grey background, at a random place.
pub(crate) fn render_hue(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let bg = hsv(rng.random(), uni(rng, 0.0, 0.12), uni(rng, 0.15, 0.85));
    let mut c = plain_scene(size, rng, bg);
    let (u, n) = (c.unit(), c.sizef());
    let r = uni(rng, 5.0, 10.0) * u;
    let centre = (uni(rng, r, n - r), uni(rng, r, n - r));
    let k = HUES.len() as f32;
    let color = hsv((class as f32 + uni(rng, -0.2, 0.2)) / k, uni(rng, 0.6, 1.0), uni(rng, 0.6, 1.0));
    solid_object(&mut c, rng, centre, r, color);
    finish(&mut c, rng);
    c
}

/// Render one `frequency` image: a full-frame sinusoidal grating of random orientation,
/// phase and colours whose period is [`grating_period`]`(class)` (±0.25 of a class step
/// on the log scale).
pub(crate) fn render_frequency(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let bg = random_color(rng);
    let fg = contrasting(rng, bg, 0.3);
    let mut c = Canvas::new(size, bg);
    let period = grating_period(class) * PERIOD_RATIO.powf(uni(rng, -0.25, 0.25)) * c.unit();
    let (s, co) = uni(rng, 0.0, PI).sin_cos();
    let phase = uni(rng, 0.0, 1.0);
    c.paint_all(fg, 1.0, |p| 0.5 * (1.0 + (TAU * ((p.0 * co + p.1 * s) / period + phase)).cos()));
    finish(&mut c, rng);
    c
}
