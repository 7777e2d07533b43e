//! Reader for image folders: one sub-folder per class, PNG or JPEG files inside.
//!
//! Classes are the sub-folders sorted by name (hidden ones skipped); files are
//! sorted by name, and only `.png`, `.jpg` and `.jpeg` files (any case) count.

use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

use super::convert::rgb_into;
use super::fewshot::split_train_valid_test;
use super::{mix_seed, ImageSet, TaskData, TaskOptions};

/// Whether `path` has a PNG or JPEG extension.
fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
        .unwrap_or(false)
}

/// Whether a directory entry name is hidden.
fn hidden(path: &Path) -> bool {
    path.file_name().map(|n| n.to_string_lossy().starts_with('.')).unwrap_or(true)
}

/// Sorted entries of `dir` that satisfy `keep`.
fn sorted_entries(dir: &Path, keep: impl Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list directory {}; check that it is readable", dir.display()))?;
    let mut out = Vec::new();
    for e in rd {
        let p =
            e.with_context(|| format!("cannot list directory {}; check that it is readable", dir.display()))?.path();
        if !hidden(&p) && keep(&p) {
            out.push(p);
        }
    }
    out.sort();
    Ok(out)
}

/// Why the header of an image file cannot be read, or `None` when it decodes to a
/// non-empty size (the pixels are decoded only when the file is sampled).
fn header_error(path: &Path) -> Option<String> {
    let reader = match image::ImageReader::open(path).and_then(|r| r.with_guessed_format()) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    match reader.into_dimensions() {
        Ok((w, h)) if w > 0 && h > 0 => None,
        Ok((w, h)) => Some(format!("{w}x{h} pixels")),
        Err(e) => Some(e.to_string()),
    }
}

/// A decoder message on one line (some span several).
fn one_line(msg: &str) -> String {
    msg.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Checks the header of every file of a folder task once, reporting all bad files in one error.
fn check_headers(files: &[(PathBuf, u32)], dir: &Path) -> Result<()> {
    const LISTED: usize = 10;
    let bad: Vec<String> = files
        .par_iter()
        .filter_map(|(p, _)| header_error(p).map(|e| format!("{} ({})", p.display(), one_line(&e))))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let more = if bad.len() > LISTED { format!("; and {} more", bad.len() - LISTED) } else { String::new() };
    bail!(
        "{} of {} images in {} cannot be read: {}{more}; remove them or re-save them as PNG or JPEG",
        bad.len(),
        files.len(),
        dir.display(),
        bad[..bad.len().min(LISTED)].join("; ")
    )
}

/// Decode, convert to RGB, resize and normalise the chosen files.
fn to_set(files: &[(PathBuf, u32)], idx: &[usize], opts: &TaskOptions) -> Result<ImageSet> {
    let size = opts.image_size;
    let per = opts.channels * size * size;
    let mut images = vec![0f32; per * idx.len()];
    images.par_chunks_mut(per).zip(idx.par_iter()).try_for_each(|(out, &i)| -> Result<()> {
        let path = &files[i].0;
        let img = match image::open(path) {
            Ok(img) => img,
            Err(e) => bail!("cannot read image {} ({e}); remove it or re-save it as PNG or JPEG", path.display()),
        };
        rgb_into(&img.to_rgb8(), size, opts.channels, out);
        Ok(())
    })?;
    Ok(ImageSet {
        images,
        labels: idx.iter().map(|&i| files[i].1).collect(),
        channels: opts.channels,
        height: size,
        width: size,
        tokens: false,
    })
}

/// Registry entry: `folder:DIR`.
pub static SOURCE: super::registry::SourceKind = super::registry::SourceKind {
    prefix: "folder",
    path: "DIR",
    modality: super::registry::Modality::Image,
    help: "one sub-folder of PNG/JPEG images per class",
    load: load_folder_task,
};

/// Load an image folder as a few-shot task: `shots` random images per class for training,
/// a class-balanced validation set held out of the rest (see
/// [`split_train_valid_test`]) and up to `test_size` class-balanced images from what is left
/// for testing.
pub fn load_folder_task(dir: &Path, opts: &TaskOptions) -> Result<TaskData> {
    crate::util::check_path_kind(
        dir,
        crate::util::PathKind::Folder,
        "image folder",
        "pass folder:/path/to/dir with one sub-folder of PNG/JPEG images per class",
    )?;
    let classes = sorted_entries(dir, |p| p.is_dir())?;
    if classes.is_empty() {
        bail!(
            "image folder {} has no class sub-folders; put each class's PNG/JPEG images in its own sub-folder",
            dir.display()
        );
    }
    let mut class_names = Vec::with_capacity(classes.len());
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for (c, cdir) in classes.iter().enumerate() {
        let name = cdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let imgs = sorted_entries(cdir, |p| p.is_file() && is_image(p))?;
        if imgs.len() < opts.shots + 2 {
            bail!(
                "class '{name}' in {} has {} PNG/JPEG images but shots={} plus one validation and one test image need at least {}; add images or lower the shot count",
                dir.display(),
                imgs.len(),
                opts.shots,
                opts.shots + 2
            );
        }
        files.extend(imgs.into_iter().map(|p| (p, c as u32)));
        class_names.push(name);
    }
    check_headers(&files, dir)?;
    let labels: Vec<u32> = files.iter().map(|f| f.1).collect();
    let seed = mix_seed(&[opts.seed, 0xF01D]);
    let (train_idx, valid_idx, test_idx) =
        split_train_valid_test(&labels, classes.len(), opts.shots, opts.valid_len(), opts.test_size, seed)?;
    let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "folder".to_string());
    Ok(TaskData {
        name,
        class_names,
        train: to_set(&files, &train_idx, opts)?,
        test: to_set(&files, &test_idx, opts)?,
        valid: to_set(&files, &valid_idx, opts)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_task, parse_task};
    use image::{Rgb, RgbImage};

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("copra-folder-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Three classes (red, green, blue) of 5, 4 and 6 images of varying size; one JPEG.
    fn write_tiny(dir: &Path) {
        let colours = [[200u8, 10, 10], [10, 200, 10], [10, 10, 200]];
        for (c, (name, n)) in [("b_red", 5), ("a_green", 4), ("c_blue", 6)].iter().enumerate() {
            let sub = dir.join(name);
            std::fs::create_dir_all(&sub).unwrap();
            let col = colours[c];
            for i in 0..*n {
                let img = RgbImage::from_pixel(10 + i, 12, Rgb(col));
                let ext = if i == 0 { "jpg" } else { "png" };
                img.save(sub.join(format!("img{i}.{ext}"))).unwrap();
            }
            std::fs::write(sub.join("notes.txt"), "not an image").unwrap();
        }
        std::fs::create_dir_all(dir.join(".hidden")).unwrap();
    }

    #[test]
    fn reads_classes_and_splits() {
        let dir = temp_dir("ok");
        write_tiny(&dir);
        let opts =
            TaskOptions { image_size: 16, channels: 3, shots: 2, test_size: 100, seed: 1, ..TaskOptions::default() };
        let src = parse_task(&format!("folder:{}", dir.display())).unwrap();
        let task = load_task(&src, &opts).unwrap();
        assert_eq!(task.class_names, vec!["a_green", "b_red", "c_blue"]);
        assert_eq!(task.train.class_counts(3), vec![2, 2, 2]);
        // Validation takes at most half of what each class has beyond its shots (1, 1, 2 of
        // 2, 3, 4); all remaining images go to the test split: 1 + 2 + 2.
        assert_eq!(task.valid.class_counts(3), vec![1, 1, 2]);
        assert_eq!(task.test.class_counts(3), vec![1, 2, 2]);
        assert_eq!(task.train.len() + task.valid.len() + task.test.len(), 15, "every file in one split");
        assert_eq!(task.train.len() * 3 * 16 * 16, task.train.images.len());
        // Colours survive: the dominant channel matches the class.
        for set in [&task.train, &task.valid, &task.test] {
            for i in 0..set.len() {
                let img = set.image(i);
                let mean = |c: usize| img[c * 256..(c + 1) * 256].iter().sum::<f32>() / 256.0;
                let best = (0..3).max_by(|&a, &b| mean(a).total_cmp(&mean(b))).unwrap();
                assert_eq!(best, [1, 0, 2][set.labels[i] as usize]);
            }
        }
        let small = load_task(&src, &TaskOptions { test_size: 4, ..opts.clone() }).unwrap();
        assert_eq!(small.test.len(), 4);
        assert_eq!(small.train.images, task.train.images);
        let again = load_task(&src, &opts).unwrap();
        assert_eq!(again.test.images, task.test.images);
        assert_eq!(again.valid.images, task.valid.images);

        let err = load_task(&src, &TaskOptions { shots: 3, ..opts.clone() }).unwrap_err().to_string();
        assert!(err.contains("class 'a_green'") && err.contains("at least 5"), "{err}");

        // An unreadable image is reported by path.
        std::fs::write(dir.join("a_green").join("img1.png"), b"garbage").unwrap();
        let err = load_task(&src, &TaskOptions { test_size: 100, ..opts.clone() }).unwrap_err().to_string();
        assert!(err.contains("cannot be read") && err.contains("img1.png"), "{err}");
        // Every bad file is reported at once, whether or not the sampler would pick it.
        std::fs::write(dir.join("c_blue").join("img5.png"), b"junk").unwrap();
        let err = load_task(&src, &TaskOptions { test_size: 1, ..opts.clone() }).unwrap_err().to_string();
        assert!(err.starts_with("2 of 15 images") && err.contains("img1.png") && err.contains("img5.png"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_or_empty_folder() {
        let dir = temp_dir("empty");
        let err = load_folder_task(&dir, &TaskOptions::default()).unwrap_err().to_string();
        assert!(err.contains("no class sub-folders"), "{err}");
        let err = load_folder_task(&dir.join("missing"), &TaskOptions::default()).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
