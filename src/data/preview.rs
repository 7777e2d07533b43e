//! PNG contact sheets: one row per class, labelled with the class name.

use anyhow::{bail, Result};
use image::{ImageFormat, Rgb, RgbImage};
use std::path::Path;

use super::{ImageSet, TaskData};

/// 3×5 bitmap glyph (rows top to bottom, 3 bits each, MSB = left) of an ASCII character.
fn glyph(ch: char) -> [u8; 5] {
    match ch.to_ascii_uppercase() {
        'A' => [2, 5, 7, 5, 5],
        'B' => [6, 5, 6, 5, 6],
        'C' => [3, 4, 4, 4, 3],
        'D' => [6, 5, 5, 5, 6],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'G' => [3, 4, 5, 5, 3],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'J' => [1, 1, 1, 5, 2],
        'K' => [5, 5, 6, 5, 5],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [2, 5, 5, 5, 2],
        'P' => [6, 5, 6, 4, 4],
        'Q' => [2, 5, 5, 6, 3],
        'R' => [6, 5, 6, 5, 5],
        'S' => [3, 4, 2, 1, 6],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        'W' => [5, 5, 7, 7, 5],
        'X' => [5, 5, 2, 5, 5],
        'Y' => [5, 5, 2, 2, 2],
        'Z' => [7, 1, 2, 4, 7],
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [6, 1, 2, 4, 7],
        '3' => [6, 1, 2, 1, 6],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 6, 1, 6],
        '6' => [3, 4, 7, 5, 7],
        '7' => [7, 1, 2, 2, 2],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 6],
        '-' => [0, 0, 7, 0, 0],
        '.' => [0, 0, 0, 0, 2],
        '/' => [1, 1, 2, 4, 4],
        '_' => [0, 0, 0, 0, 7],
        ' ' => [0; 5],
        _ => [6, 1, 2, 0, 2],
    }
}

/// Draw `text` at (x, y) with each font pixel `scale`×`scale` screen pixels.
fn draw_text(img: &mut RgbImage, text: &str, x: u32, y: u32, scale: u32, colour: Rgb<u8>) {
    for (k, ch) in text.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3u32 {
                if bits & (4 >> col) == 0 {
                    continue;
                }
                for dy in 0..scale {
                    for dx in 0..scale {
                        let px = x + (k as u32 * 4 + col) * scale + dx;
                        let py = y + row as u32 * scale + dy;
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, colour);
                        }
                    }
                }
            }
        }
    }
}

/// 8-bit RGB value of pixel (x, y) of image `i` in `set`.
fn pixel(set: &ImageSet, i: usize, x: usize, y: usize) -> Rgb<u8> {
    let img = set.image(i);
    let plane = set.height * set.width;
    let at = |c: usize| {
        let c = c.min(set.channels.saturating_sub(1));
        ((img[c * plane + y * set.width + x] * 0.5 + 0.5) * 255.0).round().clamp(0.0, 255.0) as u8
    };
    Rgb([at(0), at(1), at(2)])
}

/// Write a PNG contact sheet of `task` to `path`: one row per class with up to
/// `per_class` examples (training images first, then test images), each row
/// labelled with its class name.
pub fn write_preview(task: &TaskData, path: &Path, per_class: usize) -> Result<()> {
    if per_class == 0 {
        bail!("write_preview needs at least one example per class; pass per_class >= 1");
    }
    let k = task.class_names.len();
    if k == 0 {
        bail!("task '{}' has no classes, so there is nothing to preview", task.name);
    }
    let (h, w) = (task.train.height.max(task.test.height), task.train.width.max(task.test.width));
    if h == 0 || w == 0 {
        bail!("task '{}' has empty images, so there is nothing to preview", task.name);
    }
    let zoom = (64 / h.max(w)).max(1) as u32;
    let (tile_w, tile_h) = (w as u32 * zoom, h as u32 * zoom);
    let gap = 2u32;
    let text_scale = 2u32;
    let label_chars = task.class_names.iter().map(|n| n.chars().count()).max().unwrap_or(0).min(16) as u32;
    let margin = label_chars * 4 * text_scale + 8;
    let width = margin + per_class as u32 * (tile_w + gap) + gap;
    let height = k as u32 * (tile_h + gap) + gap;
    let mut sheet = RgbImage::from_pixel(width, height, Rgb([40, 40, 40]));
    for (c, name) in task.class_names.iter().enumerate() {
        let y0 = gap + c as u32 * (tile_h + gap);
        let label: String = name.chars().take(16).collect();
        let ty = y0 + tile_h.saturating_sub(5 * text_scale) / 2;
        draw_text(&mut sheet, &label, 4, ty, text_scale, Rgb([230, 230, 230]));
        let examples = [&task.train, &task.test]
            .into_iter()
            .flat_map(|set| {
                set.labels.iter().enumerate().filter(move |(_, &l)| l as usize == c).map(move |(i, _)| (set, i))
            })
            .take(per_class);
        for (j, (set, i)) in examples.enumerate() {
            let x0 = margin + gap + j as u32 * (tile_w + gap);
            for y in 0..set.height {
                for x in 0..set.width {
                    let p = pixel(set, i, x, y);
                    for dy in 0..zoom {
                        for dx in 0..zoom {
                            sheet.put_pixel(x0 + x as u32 * zoom + dx, y0 + y as u32 * zoom + dy, p);
                        }
                    }
                }
            }
        }
    }
    if let Err(e) = sheet.save_with_format(path, ImageFormat::Png) {
        bail!("cannot write preview {} ({e}); check that the directory exists and is writable", path.display());
    }
    Ok(())
}
