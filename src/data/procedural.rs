//! Registry of the built-in procedural tasks and seeded, parallel split generation.
//!
//! Image `i` of a split is drawn from its own `ChaCha8Rng` seeded by
//! `(data seed, task name, split, i)`, so generation is deterministic regardless
//! of thread count, and training and test images come from disjoint seeds.

use anyhow::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use super::draw::Canvas;
use super::{digits, factors, mix_seed, scenes, source, textures};
use super::{ImageSet, TaskData, TaskOptions};

/// Split tag mixed into the seeds of training images.
const SPLIT_TRAIN: u64 = 0x7241_494E;
/// Split tag mixed into the seeds of test images.
const SPLIT_TEST: u64 = 0x7445_5354;
/// Split tag mixed into the seeds of validation images.
const SPLIT_VALID: u64 = 0x5641_4C49;

/// A built-in procedural task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    Source,
    Textures,
    Shapes,
    Counting,
    Digits,
    Orientation,
    Relations,
    Lighting,
    Location,
    Hue,
    Frequency,
}

impl Builtin {
    /// The default downstream (few-shot) tasks, in listing order: each labels a factor
    /// that pretraining varies but never labels (see `factors`).
    pub const DOWNSTREAM: [Builtin; 4] = [Builtin::Lighting, Builtin::Location, Builtin::Hue, Builtin::Frequency];

    /// The generator families of the pretraining mixture, labelled there by family only;
    /// their within-family classes are also loadable as (harder, non-default) tasks.
    pub const FAMILIES: [Builtin; 6] = [
        Builtin::Textures,
        Builtin::Shapes,
        Builtin::Counting,
        Builtin::Digits,
        Builtin::Orientation,
        Builtin::Relations,
    ];

    /// The task's name as used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Source => "source",
            Builtin::Textures => "textures",
            Builtin::Shapes => "shapes",
            Builtin::Counting => "counting",
            Builtin::Digits => "digits",
            Builtin::Orientation => "orientation",
            Builtin::Relations => "relations",
            Builtin::Lighting => "lighting",
            Builtin::Location => "location",
            Builtin::Hue => "hue",
            Builtin::Frequency => "frequency",
        }
    }

    /// One-line description.
    pub fn description(self) -> &'static str {
        match self {
            Builtin::Source => {
                "pretraining source: which of 32 fixed random composites of blobs, strokes, gratings, rings, polygons and bars"
            }
            Builtin::Textures => {
                "DTD-like textures: stripes, checks, dots, waves, zigzag, crosshatch, grid, rings, blotches, bricks (random colours, scale, rotation, phase, warp)"
            }
            Builtin::Shapes => {
                "one filled shape (circle, square, triangle, star, plus, ring, diamond, hexagon, crescent, arrow) at random position, size and colour among clutter"
            }
            Builtin::Counting => "how many discs or squares (1 to 8) of random size and position, with line clutter",
            Builtin::Digits => {
                "digit glyphs 0-9 in a stroke or seven-segment font with random size, slant, rotation, thickness and wobble"
            }
            Builtin::Orientation => {
                "angle of one bar, line, dashed line or ellipse in 8 bins of 22.5 degrees, among round distractors"
            }
            Builtin::Relations => "direction (8 compass bins) of a filled square relative to a ring, at random positions",
            Builtin::Lighting => {
                "direction (8 compass bins) the light comes from, over a random scene of one or two objects"
            }
            Builtin::Location => "which cell of a 3x3 grid holds one small object of random shape and colour",
            Builtin::Hue => "hue (12 sectors of 30 degrees) of one object of random shape, size and position",
            Builtin::Frequency => {
                "period (6 log-spaced bins, 2.5 to 11.2 px) of a grating of random orientation, phase and colours"
            }
        }
    }

    /// Class names in label order.
    pub fn class_names(self) -> Vec<String> {
        let names: &[&str] = match self {
            Builtin::Source => return source::source_class_names(),
            Builtin::Textures => &textures::CLASSES,
            Builtin::Shapes => &scenes::SHAPES,
            Builtin::Counting => &scenes::COUNTS,
            Builtin::Digits => &digits::CLASSES,
            Builtin::Orientation => &scenes::ORIENTATIONS,
            Builtin::Relations => &scenes::RELATIONS,
            Builtin::Lighting => &factors::LIGHTING,
            Builtin::Location => &factors::LOCATIONS,
            Builtin::Hue => &factors::HUES,
            Builtin::Frequency => &factors::PERIODS,
        };
        names.iter().map(|s| s.to_string()).collect()
    }

    /// Number of classes.
    pub fn num_classes(self) -> usize {
        match self {
            Builtin::Source => source::SOURCE_CLASSES,
            _ => self.class_names().len(),
        }
    }

    /// Look a task up by name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Builtin> {
        let name = name.trim().to_ascii_lowercase();
        std::iter::once(Builtin::Source).chain(Builtin::DOWNSTREAM).chain(Builtin::FAMILIES).find(|b| b.name() == name)
    }

    /// Draw one image of class `class`.
    pub fn render(self, class: usize, size: usize, rng: &mut ChaCha8Rng) -> Canvas {
        match self {
            Builtin::Source => source::render(class, size, rng),
            Builtin::Textures => textures::render(class, size, rng),
            Builtin::Shapes => scenes::render_shapes(class, size, rng),
            Builtin::Counting => scenes::render_counting(class, size, rng),
            Builtin::Digits => digits::render(class, size, rng),
            Builtin::Orientation => scenes::render_orientation(class, size, rng),
            Builtin::Relations => scenes::render_relations(class, size, rng),
            Builtin::Lighting => factors::render_lighting(class, size, rng),
            Builtin::Location => factors::render_location(class, size, rng),
            Builtin::Hue => factors::render_hue(class, size, rng),
            Builtin::Frequency => factors::render_frequency(class, size, rng),
        }
    }
}

/// FNV-1a hash of a task name, mixed into seeds so tasks never share images.
pub(crate) fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

/// Render the pretraining mixture: with probability ½ a SOURCE composite (labels
/// `0..SOURCE_CLASSES`), otherwise an image of a random class of a random generator of
/// [`Builtin::FAMILIES`], labelled only by its family (`SOURCE_CLASSES + family`). No
/// default downstream task's generator takes part, no family's class label is ever used,
/// and the seeds are disjoint from every split.
pub(crate) fn render_pretrain_mixture(n: usize, base_seed: u64, size: usize, channels: usize) -> ImageSet {
    use rand::Rng;
    let per = channels * size * size;
    let mut images = vec![0f32; per * n];
    let source_k = Builtin::Source.num_classes() as u32;
    let labels: Vec<u32> = images
        .par_chunks_mut(per)
        .enumerate()
        .map(|(i, out)| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(&[base_seed, i as u64]));
            let (task, class, label) = if rng.random::<bool>() {
                let c = rng.random_range(0..source_k);
                (Builtin::Source, c as usize, c)
            } else {
                let f = rng.random_range(0..Builtin::FAMILIES.len());
                let t = Builtin::FAMILIES[f];
                (t, rng.random_range(0..t.num_classes()), source_k + f as u32)
            };
            task.render(class, size, &mut rng).write_normalised(out, channels);
            label
        })
        .collect();
    ImageSet { images, labels, channels, height: size, width: size, tokens: false }
}

/// Number of classes of the pretraining mixture (SOURCE composites plus one per family).
pub(crate) fn pretrain_num_classes() -> usize {
    Builtin::Source.num_classes() + Builtin::FAMILIES.len()
}

/// Render one image per `(label, seed)` pair, in parallel.
pub(crate) fn render_set(task: Builtin, labels: Vec<u32>, seeds: &[u64], size: usize, channels: usize) -> ImageSet {
    let per = channels * size * size;
    let mut images = vec![0f32; per * labels.len()];
    images.par_chunks_mut(per).enumerate().for_each(|(i, out)| {
        let mut rng = ChaCha8Rng::seed_from_u64(seeds[i]);
        task.render(labels[i] as usize, size, &mut rng).write_normalised(out, channels);
    });
    ImageSet { images, labels, channels, height: size, width: size, tokens: false }
}

/// Generate a built-in task: `shots` training images per class (class-major), and
/// `test_size` test and `valid_len()` validation images, class-balanced (labels cycle
/// through the classes).
///
/// Training image `j` of class `c` is seeded by `(seed, task, train, c, j)`, test image `i`
/// by `(seed, task, test, i)` and validation image `i` by `(seed, task, valid, i)`, so the
/// splits never share a seed, the validation split changes neither other split, and a
/// smaller size yields a subset of a larger one's images.
pub(crate) fn load_builtin(task: Builtin, opts: &TaskOptions) -> Result<TaskData> {
    let k = task.num_classes();
    let base = mix_seed(&[opts.seed, name_hash(task.name())]);
    let (train_base, test_base) = (mix_seed(&[base, SPLIT_TRAIN]), mix_seed(&[base, SPLIT_TEST]));
    let mut train_labels = Vec::with_capacity(k * opts.shots);
    let mut train_seeds = Vec::with_capacity(k * opts.shots);
    for c in 0..k {
        for j in 0..opts.shots {
            train_labels.push(c as u32);
            train_seeds.push(mix_seed(&[train_base, c as u64, j as u64]));
        }
    }
    let test_labels: Vec<u32> = (0..opts.test_size).map(|i| (i % k) as u32).collect();
    let test_seeds: Vec<u64> = (0..opts.test_size).map(|i| mix_seed(&[test_base, i as u64])).collect();
    let valid_base = mix_seed(&[base, SPLIT_VALID]);
    let valid_labels: Vec<u32> = (0..opts.valid_len()).map(|i| (i % k) as u32).collect();
    let valid_seeds: Vec<u64> = (0..opts.valid_len()).map(|i| mix_seed(&[valid_base, i as u64])).collect();
    let size = opts.image_size;
    Ok(TaskData {
        name: task.name().to_string(),
        class_names: task.class_names(),
        train: render_set(task, train_labels, &train_seeds, size, opts.channels),
        test: render_set(task, test_labels, &test_seeds, size, opts.channels),
        valid: render_set(task, valid_labels, &valid_seeds, size, opts.channels),
    })
}
