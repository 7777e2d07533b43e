//! The SOURCE task used to pretrain the backbone: 32 classes of random composites.
//!
//! Each class is a fixed "prototype" of three or four parts (Gaussian blobs,
//! curved strokes, Gabor gratings, rings, filled polygons, bars), each with its
//! own colour, size, orientation and offset, drawn from a constant seed so the
//! class definitions never change. Samples move, scale, rotate and recolour the
//! whole composite, jitter and sometimes drop parts, and add clutter and noise.
//! Learning it needs colour, edge, blob, stroke and frequency features, while
//! no downstream task uses these class definitions.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::f32::consts::{PI, TAU};

use super::draw::{
    background_around, clutter_lines, hsv, jitter_color, place, random_color, regular, rot, uni, Canvas, Pt, Rgb,
};
use super::mix_seed;

/// Number of classes in the source task.
pub const SOURCE_CLASSES: usize = 32;

/// Constant seed from which the class prototypes are drawn.
const PROTOTYPE_SEED: u64 = 0xC0FF_EE5E_ED00_0001;

#[derive(Clone, Copy)]
enum Kind {
    Blob,
    Stroke,
    Grating,
    Ring,
    Polygon,
    Bar,
}

/// One part of a class prototype; lengths in units of the 32-pixel design grid.
#[derive(Clone, Copy)]
struct Part {
    kind: Kind,
    offset: Pt,
    size: f32,
    angle: f32,
    aspect: f32,
    color: Rgb,
    /// Stroke curvature, grating wavelength or polygon side count, by kind.
    extra: f32,
}

/// Class names of the source task ("src00".."src31").
pub fn source_class_names() -> Vec<String> {
    (0..SOURCE_CLASSES).map(|c| format!("src{c:02}")).collect()
}

/// The fixed prototype of source class `class`.
fn prototype(class: usize) -> Vec<Part> {
    let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[PROTOTYPE_SEED, class as u64]));
    let parts = rng.random_range(3..5);
    (0..parts)
        .map(|_| {
            let kind = match rng.random_range(0..6) {
                0 => Kind::Blob,
                1 => Kind::Stroke,
                2 => Kind::Grating,
                3 => Kind::Ring,
                4 => Kind::Polygon,
                _ => Kind::Bar,
            };
            let r = uni(&mut rng, 0.0, 8.0);
            let a = uni(&mut rng, 0.0, TAU);
            let extra = match kind {
                Kind::Stroke => uni(&mut rng, -1.0, 1.0),
                Kind::Grating => uni(&mut rng, 2.5, 6.0),
                Kind::Polygon => rng.random_range(3..7) as f32,
                _ => 0.0,
            };
            Part {
                kind,
                offset: (r * a.cos(), r * a.sin()),
                size: uni(&mut rng, 3.0, 8.0),
                angle: uni(&mut rng, 0.0, PI),
                aspect: uni(&mut rng, 0.4, 1.0),
                color: random_color(&mut rng),
                extra,
            }
        })
        .collect()
}

/// Render one source-task image of class `class`.
pub(crate) fn render(class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
    let mut c = Canvas::new(size, [0.0; 3]);
    let bg = hsv(rng.random(), uni(rng, 0.0, 0.6), uni(rng, 0.1, 0.9));
    background_around(&mut c, rng, bg);
    let nl = rng.random_range(0..4);
    clutter_lines(&mut c, rng, nl, (0.15, 0.4));
    let (u, n) = (c.unit(), c.sizef());
    let parts = prototype(class % SOURCE_CLASSES);
    let scale = uni(rng, 0.8, 1.2) * u;
    let turn = uni(rng, -0.4, 0.4);
    let centre = (0.5 * n + uni(rng, -6.0, 6.0) * u, 0.5 * n + uni(rng, -6.0, 6.0) * u);
    let shade = uni(rng, 0.85, 1.15);
    let mut keep: Vec<bool> = parts.iter().map(|_| !rng.random_bool(0.12)).collect();
    if keep.iter().filter(|&&k| k).count() < 2 {
        keep.iter_mut().take(2).for_each(|k| *k = true);
    }
    for (part, _) in parts.iter().zip(&keep).filter(|(_, &k)| k) {
        let off = rot(part.offset, turn);
        let p =
            (centre.0 + off.0 * scale + uni(rng, -1.5, 1.5) * u, centre.1 + off.1 * scale + uni(rng, -1.5, 1.5) * u);
        let r = part.size * scale * uni(rng, 0.85, 1.15);
        let angle = part.angle + turn + uni(rng, -0.15, 0.15);
        let base = part.color.map(|v| (v * shade).min(1.0));
        let col = jitter_color(rng, base, 0.1);
        match part.kind {
            Kind::Blob => c.blob(p, (0.5 * r, 0.5 * r * part.aspect), angle, col, 0.95),
            Kind::Stroke => {
                let pts: Vec<Pt> = (0..=8)
                    .map(|i| {
                        let t = i as f32 / 4.0 - 1.0;
                        (t, part.extra * (t * t - 0.5) * 0.6)
                    })
                    .collect();
                let pts = place(&pts, p, (r, r), angle);
                c.polyline(&pts, (0.5 + 0.5 * part.aspect) * u, col, 1.0);
            }
            Kind::Grating => {
                let lambda = part.extra * scale;
                let phase = uni(rng, 0.0, TAU);
                let sig = 0.55 * r;
                let bb = [p.0 - 3.0 * sig, p.1 - 3.0 * sig, p.0 + 3.0 * sig, p.1 + 3.0 * sig];
                c.paint(bb, col, 1.0, |q| {
                    let (x, y) = rot((q.0 - p.0, q.1 - p.1), -angle);
                    let env = (-(x * x + y * y) / (2.0 * sig * sig)).exp();
                    env * 0.5 * (1.0 + (TAU * x / lambda + phase).cos())
                });
            }
            Kind::Ring => {
                let ht = (0.12 + 0.1 * part.aspect) * r;
                c.ring(p, 0.7 * r, ht, col, 1.0);
            }
            Kind::Polygon => {
                let poly = regular(part.extra as usize, None);
                let pts = place(&poly, p, (0.7 * r, 0.7 * r * (0.6 + 0.4 * part.aspect)), angle);
                c.polygon(&pts, col, 1.0);
            }
            Kind::Bar => {
                let d = rot((r, 0.0), angle);
                c.polyline(&[(p.0 - d.0, p.1 - d.1), (p.0 + d.0, p.1 + d.1)], 0.3 * r * part.aspect, col, 1.0);
            }
        }
    }
    c.illumination(rng, 0.85, 1.15);
    let sigma = uni(rng, 0.01, 0.05);
    c.noise(rng, sigma);
    c
}
