//! Reader (and small writer) for the IDX format of MNIST and Fashion-MNIST.
//!
//! A task directory holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
//! `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each raw or gzipped
//! (with or without a `.gz` suffix; gzip is detected by its magic bytes 1f 8b).

use anyhow::{bail, Context, Result};
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use image::GrayImage;
use rayon::prelude::*;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use super::convert::gray_into;
use super::fewshot::{balanced_sample, split_train_valid};
use super::{mix_seed, ImageSet, TaskData, TaskOptions};

/// Magic number of an IDX file of unsigned bytes with three dimensions (images).
pub const IDX_IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of unsigned bytes with one dimension (labels).
pub const IDX_LABELS_MAGIC: u32 = 0x0000_0801;

/// Fashion-MNIST class names, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] =
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"];

/// A stack of 8-bit grayscale images read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows (height) of each image.
    pub rows: usize,
    /// Columns (width) of each image.
    pub cols: usize,
    /// Pixels, image-major then row-major.
    pub pixels: Vec<u8>,
}

impl IdxImages {
    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.rows * self.cols;
        &self.pixels[i * n..(i + 1) * n]
    }
}

/// Read a whole file, transparently decompressing gzip.
fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path)
        .with_context(|| format!("cannot read IDX file {}; check that it exists and is readable", path.display()))?;
    if raw.len() >= 2 && raw[0] == 0x1f && raw[1] == 0x8b {
        let mut out = Vec::with_capacity(raw.len() * 4);
        if let Err(e) = MultiGzDecoder::new(&raw[..]).read_to_end(&mut out) {
            bail!(
                "IDX file {} is a damaged gzip stream ({e}); re-download it or decompress it with gunzip to check",
                path.display()
            );
        }
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parse an IDX header with the expected magic number; return the dimensions and the payload.
fn parse_idx<'a>(bytes: &'a [u8], magic: u32, what: &str, path: &Path) -> Result<(Vec<usize>, &'a [u8])> {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < 4 {
        bail!(
            "IDX file {} is truncated: {} bytes, too short for a header; re-download it",
            path.display(),
            bytes.len()
        );
    }
    let found = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if found != magic {
        bail!(
            "IDX file {} has bad magic number 0x{found:08x} (expected 0x{magic:08x} for an {what} file); check that it is the right MNIST-format file and not damaged",
            path.display()
        );
    }
    if bytes.len() < header {
        bail!(
            "IDX file {} is truncated inside its header ({} of {header} bytes); re-download it",
            path.display(),
            bytes.len()
        );
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= isize::MAX as usize);
    let Some(expected) = expected else {
        bail!(
            "IDX file {} declares impossible dimensions {dims:?}; the header is damaged, re-download it",
            path.display()
        );
    };
    let payload = &bytes[header..];
    if payload.len() < expected {
        bail!(
            "IDX file {} is truncated: dimensions {dims:?} need {expected} data bytes but only {} are present; re-download it",
            path.display(),
            payload.len()
        );
    }
    if payload.len() > expected {
        bail!(
            "IDX file {} has {} unexpected bytes after the {expected} that dimensions {dims:?} describe; the file is damaged or not IDX, re-download it",
            path.display(),
            payload.len() - expected
        );
    }
    Ok((dims, payload))
}

/// Read an IDX image file (magic 0x00000803), raw or gzipped.
pub fn read_idx_images(path: &Path) -> Result<IdxImages> {
    let bytes = read_maybe_gz(path)?;
    let (dims, payload) = parse_idx(&bytes, IDX_IMAGES_MAGIC, "image", path)?;
    let (count, rows, cols) = (dims[0], dims[1], dims[2]);
    if count == 0 || rows == 0 || cols == 0 {
        bail!(
            "IDX file {} holds no image data (dimensions {count}x{rows}x{cols}); use a non-empty file",
            path.display()
        );
    }
    Ok(IdxImages { count, rows, cols, pixels: payload.to_vec() })
}

/// Read an IDX label file (magic 0x00000801), raw or gzipped.
pub fn read_idx_labels(path: &Path) -> Result<Vec<u8>> {
    let bytes = read_maybe_gz(path)?;
    let (_, payload) = parse_idx(&bytes, IDX_LABELS_MAGIC, "label", path)?;
    Ok(payload.to_vec())
}

/// Write bytes to `path`, gzip-compressed when `gzip` is true.
fn write_bytes(path: &Path, bytes: &[u8], gzip: bool) -> Result<()> {
    let data = if gzip {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes)?;
        enc.finish()?
    } else {
        bytes.to_vec()
    };
    std::fs::write(path, data)
        .with_context(|| format!("cannot write {}; check that the directory exists and is writable", path.display()))
}

/// Write an IDX image file from `count` images of `rows`×`cols` bytes.
pub fn write_idx_images(path: &Path, count: usize, rows: usize, cols: usize, pixels: &[u8], gzip: bool) -> Result<()> {
    if pixels.len() != count * rows * cols {
        bail!(
            "cannot write {}: {} pixel bytes given for {count} images of {rows}x{cols}; pass exactly count*rows*cols bytes",
            path.display(),
            pixels.len()
        );
    }
    let mut bytes = IDX_IMAGES_MAGIC.to_be_bytes().to_vec();
    for d in [count, rows, cols] {
        bytes.extend_from_slice(&(d as u32).to_be_bytes());
    }
    bytes.extend_from_slice(pixels);
    write_bytes(path, &bytes, gzip)
}

/// Write an IDX label file.
pub fn write_idx_labels(path: &Path, labels: &[u8], gzip: bool) -> Result<()> {
    let mut bytes = IDX_LABELS_MAGIC.to_be_bytes().to_vec();
    bytes.extend_from_slice(&(labels.len() as u32).to_be_bytes());
    bytes.extend_from_slice(labels);
    write_bytes(path, &bytes, gzip)
}

/// Find `stem` or `stem.gz` in `dir`.
fn find_file(dir: &Path, stem: &str) -> Result<PathBuf> {
    let plain = dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    bail!(
        "IDX directory {} has neither {stem} nor {stem}.gz; put the four MNIST-format files (train/t10k images and labels) there",
        dir.display()
    )
}

/// Read one image/label file pair and check that the counts agree.
fn read_pair(dir: &Path, prefix: &str) -> Result<(IdxImages, Vec<u8>)> {
    let ipath = find_file(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let lpath = find_file(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let images = read_idx_images(&ipath)?;
    let labels = read_idx_labels(&lpath)?;
    if images.count != labels.len() {
        bail!(
            "{} has {} images but {} has {} labels; the files belong to different sets, replace them with a matching pair",
            ipath.display(),
            images.count,
            lpath.display(),
            labels.len()
        );
    }
    Ok((images, labels))
}

/// Resize and normalise the chosen images into an [`ImageSet`].
fn to_set(src: &IdxImages, labels: &[u8], idx: &[usize], opts: &TaskOptions) -> ImageSet {
    let size = opts.image_size;
    let per = opts.channels * size * size;
    let mut images = vec![0f32; per * idx.len()];
    images.par_chunks_mut(per).zip(idx.par_iter()).for_each(|(out, &i)| {
        let img = GrayImage::from_raw(src.cols as u32, src.rows as u32, src.image(i).to_vec())
            .unwrap_or_else(|| GrayImage::new(src.cols as u32, src.rows as u32));
        gray_into(&img, size, opts.channels, out);
    });
    ImageSet {
        images,
        labels: idx.iter().map(|&i| labels[i] as u32).collect(),
        channels: opts.channels,
        height: size,
        width: size,
        tokens: false,
    }
}

/// Registry entry: `idx:DIR`.
pub static SOURCE: super::registry::SourceKind = super::registry::SourceKind {
    prefix: "idx",
    path: "DIR",
    modality: super::registry::Modality::Image,
    help: "MNIST-format IDX files (train-/t10k-images-idx3-ubyte, raw or gzipped)",
    load: load_idx_task,
};

/// Load an MNIST-format directory as a few-shot task: `shots` per class from the
/// training files, up to `valid_len()` class-balanced validation images from the rest of the
/// training files, and `test_size` class-balanced images from the t10k files.
pub fn load_idx_task(dir: &Path, opts: &TaskOptions) -> Result<TaskData> {
    crate::util::check_path_kind(
        dir,
        crate::util::PathKind::Folder,
        "IDX directory",
        "pass idx:/path/to/dir holding train-images-idx3-ubyte[.gz] and friends",
    )?;
    let (train_images, train_labels) = read_pair(dir, "train")?;
    let (test_images, test_labels) = read_pair(dir, "t10k")?;
    if (train_images.rows, train_images.cols) != (test_images.rows, test_images.cols) {
        bail!(
            "IDX directory {}: training images are {}x{} but test images are {}x{}; use files from one data set",
            dir.display(),
            train_images.rows,
            train_images.cols,
            test_images.rows,
            test_images.cols
        );
    }
    let num_classes = train_labels.iter().chain(&test_labels).map(|&l| l as usize + 1).max().unwrap_or(0);
    let fashion = dir.to_string_lossy().to_ascii_lowercase().contains("fashion");
    let class_names: Vec<String> = if fashion && num_classes <= FASHION_MNIST_CLASSES.len() {
        FASHION_MNIST_CLASSES[..num_classes].iter().map(|s| s.to_string()).collect()
    } else {
        (0..num_classes).map(|c| c.to_string()).collect()
    };
    let mut counts = vec![0usize; num_classes];
    for &l in &train_labels {
        counts[l as usize] += 1;
    }
    for (c, &n) in counts.iter().enumerate() {
        if n < opts.shots + 1 {
            bail!(
                "IDX directory {}: class {c} ('{}') has {n} training images, but shots={} plus one validation image need {}; lower the shot count",
                dir.display(),
                class_names[c],
                opts.shots,
                opts.shots + 1
            );
        }
    }
    let base = mix_seed(&[opts.seed, 0x1D8]);
    let labels32: Vec<u32> = train_labels.iter().map(|&l| l as u32).collect();
    let (train_idx, valid_idx) =
        split_train_valid(&labels32, num_classes, opts.shots, opts.valid_len(), mix_seed(&[base, 1]))?;
    let test32: Vec<u32> = test_labels.iter().map(|&l| l as u32).collect();
    let test_idx = balanced_sample(&test32, num_classes, opts.test_size, mix_seed(&[base, 2]))?;
    let name = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "idx".to_string());
    Ok(TaskData {
        name,
        class_names,
        train: to_set(&train_images, &train_labels, &train_idx, opts),
        test: to_set(&test_images, &test_labels, &test_idx, opts),
        valid: to_set(&train_images, &train_labels, &valid_idx, opts),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{load_task, TaskSource};

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("copra-idx-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Write a tiny 3-class data set: image i is filled with value 10*i.
    fn write_tiny(dir: &Path, gzip: bool) {
        for (prefix, n) in [("train", 12usize), ("t10k", 9)] {
            let px: Vec<u8> = (0..n).flat_map(|i| std::iter::repeat_n((10 * i) as u8, 4 * 5)).collect();
            let labels: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            let sfx = if gzip { ".gz" } else { "" };
            write_idx_images(&dir.join(format!("{prefix}-images-idx3-ubyte{sfx}")), n, 4, 5, &px, gzip).unwrap();
            write_idx_labels(&dir.join(format!("{prefix}-labels-idx1-ubyte{sfx}")), &labels, gzip).unwrap();
        }
    }

    #[test]
    fn round_trip_raw_and_gzip() {
        for gzip in [false, true] {
            let dir = temp_dir(if gzip { "gz" } else { "raw" });
            write_tiny(&dir, gzip);
            let sfx = if gzip { ".gz" } else { "" };
            let imgs = read_idx_images(&dir.join(format!("train-images-idx3-ubyte{sfx}"))).unwrap();
            assert_eq!((imgs.count, imgs.rows, imgs.cols), (12, 4, 5));
            assert!(imgs.image(3).iter().all(|&v| v == 30));
            let labels = read_idx_labels(&dir.join(format!("train-labels-idx1-ubyte{sfx}"))).unwrap();
            assert_eq!(labels, (0..12).map(|i| (i % 3) as u8).collect::<Vec<_>>());

            let opts =
                TaskOptions { image_size: 8, channels: 3, shots: 2, test_size: 6, seed: 5, ..TaskOptions::default() };
            let task = load_task(&TaskSource::File { kind: &SOURCE, path: dir.clone() }, &opts).unwrap();
            assert_eq!(task.class_names, vec!["0", "1", "2"]);
            assert_eq!(task.train.len(), 6);
            assert_eq!(task.test.len(), 6);
            assert_eq!(task.train.class_counts(3), vec![2, 2, 2]);
            assert_eq!(task.test.class_counts(3), vec![2, 2, 2]);
            // Constant images stay constant after resizing; the value identifies the source image.
            for i in 0..task.train.len() {
                let img = task.train.image(i);
                assert_eq!(img.len(), 3 * 64);
                assert!(img.iter().all(|&v| v == img[0]));
                let src = ((img[0] * 0.5 + 0.5) * 255.0).round() as usize / 10;
                assert_eq!(src % 3, task.train.labels[i] as usize);
            }
            let again = load_task(&TaskSource::File { kind: &SOURCE, path: dir.clone() }, &opts).unwrap();
            assert_eq!(again.train.images, task.train.images);
            assert_eq!(again.test.images, task.test.images);
            assert_eq!(again.valid.images, task.valid.images);
            // Validation comes from the training file (source value 10*i, i < 12), two per
            // class after the shots, never one of the shots.
            let source = |set: &ImageSet, i: usize| ((set.image(i)[0] * 0.5 + 0.5) * 255.0).round() as usize / 10;
            assert_eq!(task.valid.class_counts(3), vec![2, 2, 2]);
            let shots: Vec<usize> = (0..task.train.len()).map(|i| source(&task.train, i)).collect();
            for i in 0..task.valid.len() {
                assert!(!shots.contains(&source(&task.valid, i)), "validation image {i} is a shot");
            }
            // Its size never changes the shots or the test set.
            let one = TaskOptions { valid_size: Some(3), ..opts.clone() };
            let small = load_task(&TaskSource::File { kind: &SOURCE, path: dir.clone() }, &one).unwrap();
            assert_eq!((&small.train, &small.test, small.valid.len()), (&task.train, &task.test, 3));
            let err =
                load_task(&TaskSource::File { kind: &SOURCE, path: dir.clone() }, &TaskOptions { shots: 4, ..opts })
                    .unwrap_err()
                    .to_string();
            assert!(err.contains("shots=4 plus one validation image need 5"), "{err}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn corrupt_files_give_errors() {
        let dir = temp_dir("bad");
        write_tiny(&dir, false);
        let ip = dir.join("train-images-idx3-ubyte");
        let lp = dir.join("train-labels-idx1-ubyte");

        // Label file where an image file is expected: wrong magic.
        let err = read_idx_images(&lp).unwrap_err().to_string();
        assert!(err.contains("bad magic number 0x00000801"), "{err}");

        // Truncated payload and truncated header.
        let full = std::fs::read(&ip).unwrap();
        std::fs::write(&ip, &full[..full.len() - 7]).unwrap();
        let err = read_idx_images(&ip).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
        std::fs::write(&ip, &full[..9]).unwrap();
        let err = read_idx_images(&ip).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");

        // Truncated gzip stream.
        let gz = dir.join("x.gz");
        write_idx_labels(&gz, &[1, 2, 3], true).unwrap();
        let bytes = std::fs::read(&gz).unwrap();
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        assert!(read_idx_labels(&gz).is_err());

        // Label/image count mismatch.
        std::fs::write(&ip, &full).unwrap();
        write_idx_labels(&lp, &[0, 1, 2], false).unwrap();
        let err = load_idx_task(&dir, &TaskOptions::default()).unwrap_err().to_string();
        assert!(err.contains("12 images but") && err.contains("3 labels"), "{err}");

        // Missing file and missing directory.
        std::fs::remove_file(&lp).unwrap();
        let err = load_idx_task(&dir, &TaskOptions::default()).unwrap_err().to_string();
        assert!(err.contains("neither train-labels-idx1-ubyte"), "{err}");
        let err = load_idx_task(&dir.join("nope"), &TaskOptions::default()).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fashion_mnist_if_installed() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.is_dir() {
            eprintln!("note: {} not found; skipping the Fashion-MNIST test", dir.display());
            return;
        }
        let opts = TaskOptions { shots: 4, test_size: 50, ..TaskOptions::default() };
        let task = load_idx_task(dir, &opts).unwrap();
        assert_eq!(task.class_names.len(), 10);
        assert_eq!(task.class_names[9], "Ankle boot");
        assert_eq!(task.train.len(), 40);
        assert_eq!(task.train.class_counts(10), vec![4; 10]);
        assert_eq!(task.test.len(), 50);
        assert_eq!(task.test.class_counts(10), vec![5; 10]);
        assert_eq!((task.train.channels, task.train.height, task.train.width), (3, 32, 32));
        assert!(task.train.images.iter().all(|v| (-1.0..=1.0).contains(v)));
        // Images are not blank: most have a clear foreground.
        let bright = (0..task.test.len()).filter(|&i| task.test.image(i).iter().any(|&v| v > 0.0)).count();
        assert!(bright > 45);
    }
}
