//! The Hugging Face `Dinov2Config` subset that defines the architecture, and the image
//! normalisation of the folder's `preprocessor_config.json`. Missing keys take transformers'
//! defaults, as `save_pretrained` may leave values at their defaults out.

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::path::Path;

/// ImageNet's per-channel mean, which DINOv2's image processor subtracts.
pub const IMAGENET_MEAN: [f64; 3] = [0.485, 0.456, 0.406];
/// ImageNet's per-channel standard deviation, which DINOv2's image processor divides by.
pub const IMAGENET_STD: [f64; 3] = [0.229, 0.224, 0.225];

fn d_hidden() -> usize {
    768
}
fn d_layers() -> usize {
    12
}
fn d_heads() -> usize {
    12
}
fn d_mlp_ratio() -> f64 {
    4.0
}
fn d_act() -> String {
    "gelu".into()
}
fn d_eps() -> f64 {
    1e-6
}
fn d_image() -> usize {
    224
}
fn d_patch() -> usize {
    14
}
fn d_channels() -> usize {
    3
}
fn d_true() -> bool {
    true
}

/// Architecture hyper-parameters of a DINOv2 ViT (field names as in transformers'
/// `Dinov2Config`; the MLP width is `int(hidden_size · mlp_ratio)`, there is no
/// `intermediate_size`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct Dinov2Config {
    /// Width of the residual stream.
    #[serde(default = "d_hidden")]
    pub hidden_size: usize,
    /// Number of transformer blocks.
    #[serde(default = "d_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    #[serde(default = "d_heads")]
    pub num_attention_heads: usize,
    /// MLP width over `hidden_size`.
    #[serde(default = "d_mlp_ratio")]
    pub mlp_ratio: f64,
    /// MLP activation; only `gelu` (exact, erf) is supported.
    #[serde(default = "d_act")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    /// The resolution the position embeddings were made for: a grid of
    /// `image_size / patch_size` positions per side (other input sizes interpolate it).
    #[serde(default = "d_image")]
    pub image_size: usize,
    /// Patch size (square).
    #[serde(default = "d_patch")]
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "d_channels")]
    pub num_channels: usize,
    /// Whether query, key and value have a bias.
    #[serde(default = "d_true")]
    pub qkv_bias: bool,
    /// SwiGLU MLP (DINOv2-giant); not supported.
    #[serde(default)]
    pub use_swiglu_ffn: bool,
    /// Whether the checkpoint holds `embeddings.mask_token` (kept for saving; unused).
    #[serde(default = "d_true")]
    pub use_mask_token: bool,
}

impl Dinov2Config {
    /// Position-grid side of the checkpoint's position embeddings.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Width of the MLP hidden layer, `int(hidden_size · mlp_ratio)`.
    pub fn mlp_size(&self) -> usize {
        (self.hidden_size as f64 * self.mlp_ratio).floor() as usize
    }

    /// Parses and validates `config.json` text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Dinov2Config> {
        let cfg: Dinov2Config = serde_json::from_str(text)
            .map_err(|e| anyhow!("{} is not a valid Dinov2 config.json: {e}", path.display()))?;
        let p = path.display();
        if cfg.hidden_size == 0 || cfg.num_hidden_layers == 0 || cfg.num_attention_heads == 0 || cfg.mlp_size() == 0 {
            bail!("{p}: hidden_size, num_hidden_layers, num_attention_heads and mlp_ratio must be positive");
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            bail!(
                "{p}: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        if cfg.patch_size == 0 || cfg.grid() == 0 {
            bail!("{p}: image_size {} holds no patch of patch_size {}", cfg.image_size, cfg.patch_size);
        }
        if cfg.hidden_act != "gelu" {
            bail!("{p}: hidden_act '{}' is not supported (only 'gelu')", cfg.hidden_act);
        }
        if cfg.use_swiglu_ffn {
            bail!(
                "{p}: use_swiglu_ffn (DINOv2-giant's SwiGLU MLP) is not supported; use dinov2-small, -base or -large"
            );
        }
        if !cfg.qkv_bias {
            bail!("{p}: qkv_bias false is not supported (every DINOv2 checkpoint has query, key and value biases)");
        }
        Ok(cfg)
    }
}

/// What the folder's `preprocessor_config.json` says about the images the model reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Processor {
    /// Per-channel mean subtracted from `[0, 1]` pixels (`image_mean`).
    pub mean: Vec<f64>,
    /// Per-channel standard deviation divided by (`image_std`).
    pub std: Vec<f64>,
    /// The square side images are cropped to (`crop_size`), if the file gives one.
    pub size: Option<usize>,
}

/// Reads the folder's `preprocessor_config.json`: `image_mean` and `image_std` (ImageNet's,
/// DINOv2's image processor default, when the file or a key is absent) and a square
/// `crop_size` (the input resolution; `facebook/dinov2-small` crops to 224).
pub fn processor(dir: &Path, channels: usize) -> Result<Processor> {
    let path = dir.join("preprocessor_config.json");
    let mut size = None;
    let (mean, std) = match std::fs::read_to_string(&path) {
        Err(_) => (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec()),
        Ok(text) => {
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| anyhow!("{} is not valid JSON: {e}", path.display()))?;
            let list = |key: &str, default: [f64; 3]| -> Result<Vec<f64>> {
                match json.get(key) {
                    None | Some(serde_json::Value::Null) => Ok(default.to_vec()),
                    Some(serde_json::Value::Array(items)) => items
                        .iter()
                        .map(|v| v.as_f64())
                        .collect::<Option<Vec<_>>>()
                        .ok_or_else(|| anyhow!("{}: {key} must be a list of numbers", path.display())),
                    Some(serde_json::Value::Number(n)) => Ok(vec![n.as_f64().unwrap_or(0.0); channels]),
                    Some(v) => bail!("{}: {key} is {v}; expected a list of numbers", path.display()),
                }
            };
            let side = |key: &str| json.get("crop_size").and_then(|c| c.get(key)).and_then(|v| v.as_u64());
            if json.get("do_center_crop").and_then(|v| v.as_bool()) != Some(false) {
                size = match (side("height"), side("width")) {
                    (Some(h), Some(w)) if h == w && h > 0 => Some(h as usize),
                    (None, None) => None,
                    (h, w) => bail!(
                        "{}: crop_size {h:?} x {w:?} is not a square; copra-lab reads square images",
                        path.display()
                    ),
                };
            }
            (list("image_mean", IMAGENET_MEAN)?, list("image_std", IMAGENET_STD)?)
        }
    };
    if mean.len() != channels || std.len() != channels || std.iter().any(|s| *s <= 0.0) {
        bail!(
            "{}: image_mean {mean:?} and image_std {std:?} must hold {channels} values (num_channels), std positive",
            path.display()
        );
    }
    Ok(Processor { mean, std, size })
}
