//! Few-shot classification data: built-in procedural image tasks (no download),
//! the procedural SOURCE task used to pretrain the backbone, readers for
//! MNIST-format (IDX) directories and class-per-folder image directories, and
//! text tasks (Orange `.tab`, CSV, JSON lines) tokenized for a text backbone.
//!
//! All images are `N×C×H×W` `f32`, normalised as Hugging Face ViT expects:
//! `x = (pixel/255 − 0.5)/0.5`, in `[−1, 1]`. Every random choice is seeded,
//! so the same options give bit-identical data.
//!
//! ```text
//! let opts = TaskOptions::default();                 // 32×32 RGB, 16 shots, 1000 test
//! let task = load_task(&parse_task("lighting")?, &opts)?;
//! let (pre, names) = pretrain_set(50_000, 32, 3, 7)?; // backbone pretraining data
//! ```

use anyhow::{bail, Result};
use registry::{Modality, SourceKind};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

mod convert;
mod digits;
mod draw;
mod factors;
pub mod fewshot;
pub mod folder;
pub mod idx;
pub mod preview;
mod procedural;
pub mod registry;
mod scenes;
mod source;
pub mod text;
mod textures;

#[cfg(test)]
mod tests;

pub use fewshot::{balanced_sample, sample_per_class, split_train_test, split_train_valid, split_train_valid_test};
pub use folder::load_folder_task;
pub use idx::{
    load_idx_task, read_idx_images, read_idx_labels, write_idx_images, write_idx_labels, IdxImages,
    FASHION_MNIST_CLASSES,
};
pub use preview::write_preview;
pub use source::{source_class_names, SOURCE_CLASSES};

use procedural::Builtin;

/// Mix several 64-bit values into one well-scrambled seed (SplitMix64 steps).
pub(crate) fn mix_seed(parts: &[u64]) -> u64 {
    fn splitmix(mut z: u64) -> u64 {
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    parts.iter().fold(0x243F_6A88_85A3_08D3u64, |h, &p| splitmix(h ^ splitmix(p)))
}

/// A set of examples: images, N×C×H×W f32, normalised as Hugging Face ViT expects:
/// x = (pixel/255 − 0.5)/0.5, i.e. in [−1, 1]; or, when `tokens` is set, rows of `width`
/// token ids (exact f32 integers, 0 = padding after the text; `channels = height = 1`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ImageSet {
    /// Pixel data, image-major then channel, row, column.
    pub images: Vec<f32>,
    /// Class label of each image.
    pub labels: Vec<u32>,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels (tokens per row for a token set).
    pub width: usize,
    /// True for token-id rows of a text task.
    pub tokens: bool,
}

impl ImageSet {
    /// A token set: `ids` holds `labels.len()` rows of `width` ids.
    pub fn token_rows(ids: Vec<f32>, labels: Vec<u32>, width: usize) -> ImageSet {
        ImageSet { images: ids, labels, channels: 1, height: 1, width, tokens: true }
    }

    /// The shape of the set as a tensor: `[N, C, H, W]` for images, `[N, L]` for tokens.
    pub fn tensor_shape(&self) -> Vec<usize> {
        if self.tokens {
            vec![self.len(), self.width]
        } else {
            vec![self.len(), self.channels, self.height, self.width]
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the set holds no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Number of `f32` values per image (`C·H·W`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The `C·H·W` values of image `i` (panics if `i >= len()`).
    pub fn image(&self, i: usize) -> &[f32] {
        let n = self.image_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// A new set holding copies of the images at `idx`, in that order (panics on an out-of-range index).
    pub fn subset(&self, idx: &[usize]) -> ImageSet {
        let mut images = Vec::with_capacity(idx.len() * self.image_len());
        for &i in idx {
            images.extend_from_slice(self.image(i));
        }
        ImageSet {
            images,
            labels: idx.iter().map(|&i| self.labels[i]).collect(),
            channels: self.channels,
            height: self.height,
            width: self.width,
            tokens: self.tokens,
        }
    }

    /// Number of images of each class `0..num_classes` (labels outside the range are ignored).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

/// A classification task: names plus a few-shot training split and a test split.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskData {
    /// Task name (built-in name or the directory's name).
    pub name: String,
    /// Class names in label order.
    pub class_names: Vec<String>,
    /// Few-shot training split (`shots` per class, class-major).
    pub train: ImageSet,
    /// Test split, disjoint from the training split.
    pub test: ImageSet,
    /// Validation split, disjoint from the shots and the test split: generated for built-in
    /// tasks, held out of the training files (or, for a single pool, out of what the shots
    /// leave) for file tasks. Tuning reads it; the test split stays for the final numbers.
    pub valid: ImageSet,
}

impl TaskData {
    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// A fingerprint of the decoded data (class names, labels, shapes and pixel values of the
    /// training and test splits): equal data give equal fingerprints, so a run cache keyed on
    /// it notices when the files behind an `idx:` or `folder:` task are replaced. The
    /// validation split is left out: runs never read it, so it does not change their keys.
    pub fn fingerprint(&self) -> String {
        let mut h = crate::util::Fnv64::new();
        for name in &self.class_names {
            h.update(name.as_bytes());
            h.update(&[0]);
        }
        for set in [&self.train, &self.test] {
            if set.tokens {
                h.update(b"tokens");
            }
            for dim in [set.len(), set.channels, set.height, set.width] {
                h.update(&(dim as u64).to_le_bytes());
            }
            for l in &set.labels {
                h.update(&l.to_le_bytes());
            }
            for v in &set.images {
                h.update(&v.to_le_bytes());
            }
        }
        h.hex()
    }
}

/// Where a task comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskSource {
    /// A built-in procedural task, by name (see [`builtin_tasks`], plus `"source"`).
    Builtin(String),
    /// A task read from a path by one kind of the [registry](registry::SOURCES): MNIST-format
    /// IDX files (`idx:`), one image folder per class (`folder:`), Orange `.tab` text (`tab:`),
    /// CSV or JSON-lines text (`text:`).
    File {
        /// The reader.
        kind: &'static SourceKind,
        /// The directory or file.
        path: PathBuf,
    },
}

impl TaskSource {
    /// True for text tasks (they need a text backbone).
    pub fn is_text(&self) -> bool {
        matches!(self, TaskSource::File { kind, .. } if kind.modality == Modality::Text)
    }

    /// True for tasks read from files (their runs are keyed on the decoded data).
    pub fn is_file(&self) -> bool {
        !matches!(self, TaskSource::Builtin(_))
    }
}

/// Options for building a task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskOptions {
    /// Side length of the square images in pixels (default 32).
    pub image_size: usize,
    /// Channels per image: 3 for RGB (default) or 1 for luminance.
    pub channels: usize,
    /// Training images per class (default 16).
    pub shots: usize,
    /// Number of test images, class-balanced (default 1000).
    pub test_size: usize,
    /// Number of validation images, class-balanced (default: `test_size`; see
    /// [`TaskOptions::valid_len`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_size: Option<usize>,
    /// Data seed (default 0).
    pub seed: u64,
    /// The `tokenizer.json` of the text backbone (text tasks only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<PathBuf>,
    /// Longest token sequence of a text example (default 128).
    pub max_length: usize,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            image_size: 32,
            channels: 3,
            shots: 16,
            test_size: 1000,
            valid_size: None,
            seed: 0,
            tokenizer: None,
            max_length: crate::train::config::DEFAULT_MAX_LENGTH,
        }
    }
}

impl TaskOptions {
    /// The number of validation examples asked for: `valid_size`, or `test_size` when unset.
    pub fn valid_len(&self) -> usize {
        self.valid_size.unwrap_or(self.test_size)
    }

    /// Check that the options are usable.
    pub fn validate(&self) -> Result<()> {
        check_geometry(self.image_size, self.channels)?;
        if self.shots == 0 {
            bail!("shots must be at least 1 training image per class; pass a positive shot count");
        }
        if self.test_size == 0 {
            bail!("test_size must be at least 1; pass a positive test size");
        }
        if self.valid_size == Some(0) {
            bail!("valid_size must be at least 1; pass a positive validation size or leave it out (default: the test size)");
        }
        Ok(())
    }
}

/// Check an image size and channel count.
fn check_geometry(image_size: usize, channels: usize) -> Result<()> {
    if !(8..=1024).contains(&image_size) {
        bail!("image size {image_size} is out of range; use 8 to 1024 pixels");
    }
    if channels != 1 && channels != 3 {
        bail!("channels must be 1 (grayscale) or 3 (RGB), not {channels}");
    }
    Ok(())
}

/// Refuse to generate sets larger than this many `f32` values (16 GiB).
const MAX_VALUES: usize = 1 << 32;

/// Check that `images` images of `channels`×`size`×`size` fit the generation limit.
fn check_volume(images: usize, image_size: usize, channels: usize) -> Result<()> {
    let values = images.saturating_mul(channels * image_size * image_size);
    if values > MAX_VALUES {
        bail!(
            "{images} images of {channels}x{image_size}x{image_size} would need {} GiB; lower the shot count, test size or image size",
            values / (1 << 28)
        );
    }
    Ok(())
}

/// Name, description and class count of a built-in task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct BuiltinInfo {
    /// Name to pass to [`parse_task`].
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Number of classes.
    pub num_classes: usize,
}

impl BuiltinInfo {
    fn of(b: Builtin) -> BuiltinInfo {
        BuiltinInfo { name: b.name(), description: b.description(), num_classes: b.num_classes() }
    }
}

/// The default built-in downstream (few-shot) tasks, in listing order.
pub fn builtin_tasks() -> Vec<BuiltinInfo> {
    Builtin::DOWNSTREAM.iter().map(|&b| BuiltinInfo::of(b)).collect()
}

/// The pretraining mixture's generator families, also loadable as (non-default) tasks
/// by their within-family classes; the frozen features barely separate those classes.
pub fn family_tasks() -> Vec<BuiltinInfo> {
    Builtin::FAMILIES.iter().map(|&b| BuiltinInfo::of(b)).collect()
}

/// The pretraining SOURCE task (also loadable as the built-in task `"source"`).
pub fn source_task() -> BuiltinInfo {
    BuiltinInfo::of(Builtin::Source)
}

/// Error for an unknown built-in name, listing the valid ones.
fn unknown_builtin(name: &str) -> anyhow::Error {
    let names = |set: &[Builtin]| set.iter().map(|b| b.name()).collect::<Vec<_>>().join(", ");
    anyhow::anyhow!(
        "unknown task '{name}'; valid built-in tasks: {} (pretraining families: {}; 'source' for the pretraining task), or use {}",
        names(&Builtin::DOWNSTREAM),
        names(&Builtin::FAMILIES),
        registry::usages(None)
    )
}

/// Parse a task spec: a built-in name (`"lighting"`, optionally `"builtin:lighting"`), or
/// `PREFIX:PATH` for a kind of the [registry](registry::SOURCES) (`"idx:/path/dir"`,
/// `"folder:/path/dir"`, `"tab:/path/file.tab"`, `"text:/path/file.csv"`).
pub fn parse_task(s: &str) -> Result<TaskSource> {
    let s = s.trim();
    if let Some((prefix, rest)) = s.split_once(':') {
        if let Some(kind) = registry::by_prefix(prefix) {
            let rest = rest.trim();
            if rest.is_empty() {
                bail!("task spec '{s}' has no path; write {prefix}:/path/to/{}", kind.path.to_ascii_lowercase());
            }
            return Ok(TaskSource::File { kind, path: expand_home(rest) });
        }
    }
    let name = s.strip_prefix("builtin:").unwrap_or(s);
    match Builtin::from_name(name) {
        Some(b) => Ok(TaskSource::Builtin(b.name().to_string())),
        None => Err(unknown_builtin(name)),
    }
}

/// `~/rest` → `$HOME/rest` (so specs can name the asset cache portably); other paths as given.
fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Build a task from its source.
pub fn load_task(source: &TaskSource, opts: &TaskOptions) -> Result<TaskData> {
    opts.validate()?;
    match source {
        TaskSource::Builtin(name) => match Builtin::from_name(name) {
            Some(b) => {
                let images = b
                    .num_classes()
                    .saturating_mul(opts.shots)
                    .saturating_add(opts.test_size)
                    .saturating_add(opts.valid_len());
                check_volume(images, opts.image_size, opts.channels)?;
                procedural::load_builtin(b, opts)
            }
            None => Err(unknown_builtin(name)),
        },
        TaskSource::File { kind, path } => checked_classes((kind.load)(path, opts)?, path),
    }
}

/// Refuses a task with fewer than two classes: any classifier scores 100% on it.
fn checked_classes(task: TaskData, dir: &std::path::Path) -> Result<TaskData> {
    if task.num_classes() < 2 {
        bail!(
            "task {} has {} class; classification needs at least two classes (sub-folders or label values)",
            dir.display(),
            task.num_classes()
        );
    }
    Ok(task)
}

/// Number of classes of the pretraining task (see [`pretrain_set`]).
pub fn pretrain_num_classes() -> usize {
    procedural::pretrain_num_classes()
}

/// Generate `n` labelled images of the pretraining task: half SOURCE composites (labelled
/// by composite, [`SOURCE_CLASSES`] classes), half images of the [`family_tasks`]
/// generators labelled only by family (one class per family; no family's class label is
/// used, no default task's generator takes part, and the seeds never meet a task split). Image `i` is seeded by `(seed, i)`;
/// call it with a fresh seed per chunk for an unlimited stream. Returns the class names.
pub fn pretrain_set(n: usize, image_size: usize, channels: usize, seed: u64) -> Result<(ImageSet, Vec<String>)> {
    check_geometry(image_size, channels)?;
    check_volume(n, image_size, channels)?;
    let base = mix_seed(&[seed, procedural::name_hash("source"), 0x5052_4554]);
    let set = procedural::render_pretrain_mixture(n, base, image_size, channels);
    let mut names = source_class_names();
    names.extend(Builtin::FAMILIES.iter().map(|t| format!("family:{}", t.name())));
    Ok((set, names))
}
