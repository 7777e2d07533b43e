//! Conversion of 8-bit images into normalised planar `f32` data.

use image::imageops::{resize, FilterType};
use image::{GrayImage, ImageBuffer, Pixel, RgbImage};
use std::borrow::Cow;

/// Normalise one 8-bit value as Hugging Face ViT expects: `(v/255 − 0.5)/0.5`.
pub(crate) fn norm(v: f32) -> f32 {
    (v / 255.0 - 0.5) / 0.5
}

/// `img` resized bilinearly to `size`×`size`, or `img` itself when it has that size.
fn at_size<P: Pixel<Subpixel = u8> + 'static>(
    img: &ImageBuffer<P, Vec<u8>>,
    size: usize,
) -> Cow<'_, ImageBuffer<P, Vec<u8>>> {
    let s = size as u32;
    if img.width() == s && img.height() == s {
        Cow::Borrowed(img)
    } else {
        Cow::Owned(resize(img, s, s, FilterType::Triangle))
    }
}

/// Resize a grayscale image bilinearly to `size`×`size` and write it into `out`
/// (`channels` × size × size), replicating the plane when `channels` is 3.
pub(crate) fn gray_into(img: &GrayImage, size: usize, channels: usize, out: &mut [f32]) {
    let img = at_size(img, size);
    let plane = size * size;
    for (i, p) in img.pixels().enumerate() {
        let v = norm(p.0[0] as f32);
        for c in 0..channels {
            out[c * plane + i] = v;
        }
    }
}

/// Resize an RGB image bilinearly to `size`×`size` and write it into `out`
/// (`channels` × size × size); one channel means luminance.
pub(crate) fn rgb_into(img: &RgbImage, size: usize, channels: usize, out: &mut [f32]) {
    let img = at_size(img, size);
    let plane = size * size;
    for (i, p) in img.pixels().enumerate() {
        let [r, g, b] = p.0.map(|v| v as f32);
        if channels == 1 {
            out[i] = norm(0.299 * r + 0.587 * g + 0.114 * b);
        } else {
            out[i] = norm(r);
            out[plane + i] = norm(g);
            out[2 * plane + i] = norm(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_resize_and_replicate() {
        let img = GrayImage::from_fn(4, 4, |x, _| image::Luma([if x < 2 { 0 } else { 255 }]));
        let mut out = vec![0.0; 3 * 64];
        gray_into(&img, 8, 3, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[7], 1.0);
        assert_eq!(&out[..64], &out[64..128]);
        assert!(out.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
