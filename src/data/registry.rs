//! The task-source registry: every kind of task read from a path (`idx:DIR`, `folder:DIR`,
//! `tab:FILE`, `text:FILE`) is one [`SourceKind`] declared in its reader's file and one line in
//! [`SOURCES`]; parsing (`parse_task`), loading (`load_task`), the backbone check (image or
//! text) and the error texts that list the kinds all go through that list.
//!
//! # Example: a new task source
//!
//! A source whose examples are the lines of a file, each `label,pixel,pixel,...` for 8×8
//! grey images. A real one goes in its own file under `src/data/` with one line in
//! [`SOURCES`], which makes `--task pixels:FILE` work in every command.
//!
//! ```
//! use anyhow::{bail, Result};
//! use copra_lab::data::registry::{Modality, SourceKind};
//! use copra_lab::data::{split_train_valid_test, ImageSet, TaskData, TaskOptions};
//! use std::path::Path;
//!
//! fn load_pixels(path: &Path, opts: &TaskOptions) -> Result<TaskData> {
//!     let text = std::fs::read_to_string(path)?;
//!     let (mut images, mut labels) = (Vec::new(), Vec::new());
//!     for line in text.lines() {
//!         let values: Vec<f32> = line.split(',').map(|v| v.trim().parse()).collect::<Result<_, _>>()?;
//!         if values.len() != 65 {
//!             bail!("{}: each line needs a label and 64 pixels", path.display());
//!         }
//!         labels.push(values[0] as u32);
//!         images.extend(values[1..].iter().map(|p| (p / 255.0 - 0.5) / 0.5));
//!     }
//!     let all = ImageSet { images, labels, channels: 1, height: 8, width: 8, tokens: false };
//!     let (train, valid, test) =
//!         split_train_valid_test(&all.labels, 2, opts.shots, opts.valid_len(), opts.test_size, opts.seed)?;
//!     let (train, valid, test) = (all.subset(&train), all.subset(&valid), all.subset(&test));
//!     let class_names = vec!["dark".into(), "light".into()];
//!     Ok(TaskData { name: "pixels".into(), class_names, train, test, valid })
//! }
//!
//! static PIXELS: SourceKind = SourceKind {
//!     prefix: "pixels",
//!     path: "FILE",
//!     modality: Modality::Image,
//!     help: "lines of `label,64 pixels` (8x8 grey)",
//!     load: load_pixels,
//! };
//!
//! let file = std::env::temp_dir().join(format!("copra-pixels-{}.csv", std::process::id()));
//! let lines: Vec<String> = (0..20).map(|i| {
//!     let (label, grey) = (i % 2, if i % 2 == 0 { 20 } else { 230 });
//!     format!("{label},{}", vec![grey.to_string(); 64].join(","))
//! }).collect();
//! std::fs::write(&file, lines.join("\n"))?;
//! let opts = TaskOptions { shots: 3, test_size: 4, valid_size: Some(2), ..TaskOptions::default() };
//! let task = (PIXELS.load)(&file, &opts)?;
//! std::fs::remove_file(&file)?;
//! assert_eq!((task.train.len(), task.valid.len(), task.test.len()), (6, 2, 4));
//! assert_eq!(task.train.class_counts(2), vec![3, 3]);
//! # Ok::<(), anyhow::Error>(())
//! ```

use super::{TaskData, TaskOptions};
use anyhow::Result;
use std::fmt;
use std::path::Path;

/// What the examples of a task are, and so which backbones can read them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modality {
    /// Images `[N, C, H, W]` (ViT, CLIP).
    Image,
    /// Token-id rows (BERT).
    Text,
}

/// One kind of task read from a path.
pub struct SourceKind {
    /// The prefix before `:` in a task spec (`idx` in `idx:DIR`).
    pub prefix: &'static str,
    /// What the path names in help texts: `DIR` or `FILE`.
    pub path: &'static str,
    /// Image or text examples.
    pub modality: Modality,
    /// A few words for the help texts.
    pub help: &'static str,
    /// Reads the task at a path.
    pub load: fn(&Path, &TaskOptions) -> Result<TaskData>,
}

impl SourceKind {
    /// The spelling of a task of this kind, e.g. `idx:DIR`.
    pub fn usage(&self) -> String {
        format!("{}:{}", self.prefix, self.path)
    }
}

impl fmt::Debug for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SourceKind({})", self.prefix)
    }
}

impl PartialEq for SourceKind {
    fn eq(&self, other: &Self) -> bool {
        self.prefix == other.prefix
    }
}

impl Eq for SourceKind {}

/// Every kind of task read from a path, in help-text order.
pub static SOURCES: &[&SourceKind] =
    &[&super::idx::SOURCE, &super::folder::SOURCE, &super::text::TAB_SOURCE, &super::text::TEXT_SOURCE];

/// The kind whose prefix is `prefix`.
pub fn by_prefix(prefix: &str) -> Option<&'static SourceKind> {
    SOURCES.iter().copied().find(|k| k.prefix == prefix)
}

/// `idx:DIR, folder:DIR, ...` for error texts, restricted to `modality` when given.
pub fn usages(modality: Option<Modality>) -> String {
    let kinds: Vec<String> =
        SOURCES.iter().filter(|k| modality.is_none_or(|m| k.modality == m)).map(|k| k.usage()).collect();
    match kinds.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_listed_in_order() {
        let prefixes: Vec<&str> = SOURCES.iter().map(|k| k.prefix).collect();
        assert_eq!(prefixes, ["idx", "folder", "tab", "text"]);
        assert_eq!(by_prefix("tab").map(|k| k.modality), Some(Modality::Text));
        assert!(by_prefix("builtin").is_none());
    }

    #[test]
    fn usages_name_every_kind_of_a_modality() {
        assert_eq!(usages(None), "idx:DIR, folder:DIR, tab:FILE or text:FILE");
        assert_eq!(usages(Some(Modality::Text)), "tab:FILE or text:FILE");
        assert_eq!(usages(Some(Modality::Image)), "idx:DIR or folder:DIR");
    }
}
