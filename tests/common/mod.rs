//! Helpers shared by the end-to-end tests of the `copra-lab` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The binary, with progress bars hidden.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_copra-lab"));
    c.arg("--quiet");
    c
}

/// A fresh, empty scratch directory for one test.
pub fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("copra-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("binary runs")
}

/// The command's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The command's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Asserts a failure with exactly one line on stderr, no panic, containing `needle`.
pub fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert!(!o.status.success(), "expected failure, got success: {}", stdout(o));
    assert!(!err.contains("panicked"), "panic: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line, got: {err}");
    assert!(err.contains(needle), "expected '{needle}' in: {err}");
}

/// Asserts the command did not panic (exit code 101 or a panic message).
pub fn assert_no_panic(o: &Output, what: &str) {
    let err = stderr(o);
    assert!(!err.contains("panicked") && o.status.code() != Some(101), "{what}: panic: {err}");
    assert!(o.status.code().is_some(), "{what}: killed by a signal: {err}");
}

/// Quick training settings: few steps, a small test split and few shots.
pub const QUICK: &[&str] = &["--steps", "12", "--test-size", "200", "--shots", "4"];

/// The only run directory below a runs root (`<task>/<method>/<seed-key>`).
pub fn run_dir_of(root: &Path) -> PathBuf {
    let mut p = root.to_path_buf();
    for _ in 0..3 {
        p = std::fs::read_dir(&p).unwrap().next().unwrap().unwrap().path();
    }
    p
}

/// Every file below `root` whose name contains `needle`, recursively.
pub fn files_named(root: &Path, needle: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(root) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if p.file_name().is_some_and(|n| n.to_string_lossy().contains(needle)) {
            out.push(p.clone());
        }
        if p.is_dir() {
            out.extend(files_named(&p, needle));
        }
    }
    out
}

/// A folder task of 32×32 PNG images in three classes named like the CLIP fixture's prompts
/// (`red_square`, `blue_circle`, `green_triangle`), `per_class` images each: a coloured shape
/// at a varying place on a grey, lightly noisy background. Returns the folder.
pub fn write_shape_folder(root: &Path, per_class: u32) -> PathBuf {
    let dir = root.join("shapes");
    let classes: [(&str, [u8; 3]); 3] =
        [("red_square", [200, 40, 40]), ("blue_circle", [40, 60, 210]), ("green_triangle", [40, 180, 60])];
    for (c, (name, colour)) in classes.iter().enumerate() {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        for i in 0..per_class {
            let (cx, cy) = (10 + (i * 7 % 12) as i32, 10 + (i * 5 % 12) as i32);
            let img = image::RgbImage::from_fn(32, 32, |x, y| {
                let (dx, dy) = (x as i32 - cx, y as i32 - cy);
                let inside = match c {
                    0 => dx.abs() <= 5 && dy.abs() <= 5,
                    1 => dx * dx + dy * dy <= 30,
                    _ => (-5..=5).contains(&dy) && dx.abs() <= (dy + 5) / 2,
                };
                let noise = ((x * 31 + y * 17 + i * 13) % 23) as u8;
                if inside {
                    image::Rgb(*colour)
                } else {
                    image::Rgb([110 + noise, 110 + noise, 110 + noise])
                }
            });
            img.save(dir.join(name).join(format!("{i:02}.png"))).unwrap();
        }
    }
    dir
}

/// The tiny random CLIP fixture's model folder (`tests/fixtures/clip-tiny/model`).
pub fn tiny_clip() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny/model").display().to_string()
}

/// The tiny random BERT fixture's model folder (`tests/fixtures/bert-tiny/model`).
pub fn tiny_bert() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny/model").display().to_string()
}

/// A three-class Orange `.tab` file in the fixture tokenizer's vocabulary.
pub fn write_news(dir: &Path) -> PathBuf {
    let topics = [
        ("sports", "team ball goal win match season player score game"),
        ("space", "orbit launch rocket nasa shuttle planet mission earth moon"),
        ("computer", "disk drive file program code data memory screen software"),
    ];
    let mut s = String::from("Category\tText\nd\tstring\nclass\t\n");
    for i in 0..14 {
        for (label, words) in topics {
            let w: Vec<&str> = words.split(' ').collect();
            let doc: Vec<&str> = (0..4 + i % 5).map(|j| w[(i * 7 + j * 3) % w.len()]).collect();
            s.push_str(&format!("{label}\tthe {} and the {}\n", doc.join(" "), w[i % w.len()]));
        }
    }
    let path = dir.join("news.tab");
    std::fs::write(&path, s).unwrap();
    path
}
