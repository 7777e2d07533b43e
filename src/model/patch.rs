//! The patch embedding of a vision transformer (ViT, DINOv2, CLIP's vision tower): the image
//! cut into non-overlapping `p`×`p` patches, each projected as a stride-`p` convolution would
//! (written as one matmul with the flattened kernel), after the class token.

use anyhow::Result;
use candle_core::Tensor;

/// Images `[B, C, H, W]` (`H` and `W` whole multiples of `patch`) → tokens
/// `[B, 1 + (H/p)·(W/p), D]`: the class token `cls` `[1, 1, D]`, then every patch, row-major
/// over the patch grid, times `weight` `[D, C·p·p]` (the convolution kernel in `C, kh, kw`
/// order) plus `bias` `[D]` when there is one. Position embeddings are the caller's.
pub fn class_and_patch_tokens(
    images: &Tensor,
    patch: usize,
    weight: &Tensor,
    bias: Option<&Tensor>,
    cls: &Tensor,
) -> Result<Tensor> {
    let (b, ch, h, w) = images.dims4()?;
    let p = patch;
    let (gh, gw) = (h / p, w / p);
    let d = weight.dim(0)?;
    // [B, C, gh, p, gw, p] → [B, gh, gw, C, p, p] → [B·N, C·p·p]
    let patches = images
        .reshape((b, ch, gh, p, gw, p))?
        .permute((0, 2, 4, 1, 3, 5))?
        .contiguous()?
        .reshape((b * gh * gw, ch * p * p))?;
    let projected = patches.matmul(&weight.t()?)?;
    let projected = match bias {
        Some(bias) => projected.broadcast_add(bias)?,
        None => projected,
    };
    let tokens = projected.reshape((b, gh * gw, d))?;
    let cls = cls.broadcast_as((b, 1, d))?.contiguous()?;
    Ok(Tensor::cat(&[&cls, &tokens], 1)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn tokens_are_the_class_token_then_each_patch_times_the_kernel() {
        // One 1-channel 4×4 image of values 0..16, 2×2 patches, D = 2: the kernel sums a patch
        // (row 0) or takes its top-left pixel (row 1); bias (10, 20); class token (−1, −2).
        let dev = Device::Cpu;
        let image = Tensor::arange(0f32, 16.0, &dev).unwrap().reshape((1, 1, 4, 4)).unwrap();
        let weight = Tensor::new(&[[1f32, 1.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0]], &dev).unwrap();
        let bias = Tensor::new(&[10f32, 20.0], &dev).unwrap();
        let cls = Tensor::new(&[[[-1f32, -2.0]]], &dev).unwrap();
        let tokens = class_and_patch_tokens(&image, 2, &weight, Some(&bias), &cls).unwrap();
        let got: Vec<Vec<f32>> = tokens.squeeze(0).unwrap().to_vec2().unwrap();
        // Patches (row-major): {0,1,4,5}, {2,3,6,7}, {8,9,12,13}, {10,11,14,15}.
        let want = [[-1.0, -2.0], [20.0, 20.0], [28.0, 22.0], [52.0, 28.0], [60.0, 30.0]];
        assert_eq!(got, want.map(|r| r.to_vec()).to_vec());
        let unbiased = class_and_patch_tokens(&image, 2, &weight, None, &cls).unwrap();
        let delta: Vec<Vec<f32>> = (tokens - unbiased).unwrap().squeeze(0).unwrap().to_vec2().unwrap();
        assert_eq!(delta[0], [0.0, 0.0]);
        assert!(delta[1..].iter().all(|r| r == &[10.0, 20.0]));
    }
}
