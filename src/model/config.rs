//! The Hugging Face `ViTConfig` subset that defines the architecture, read from
//! and written to `config.json` as `save_pretrained` does.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_eps() -> f64 {
    1e-12
}
fn default_true() -> bool {
    true
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_channels() -> usize {
    3
}

/// Architecture hyper-parameters of a ViT (field names as in transformers' `ViTConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VitConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Width of the MLP hidden layer.
    pub intermediate_size: usize,
    /// MLP activation; only `gelu` (exact, erf) is supported.
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Layer-norm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Input resolution (square).
    pub image_size: usize,
    /// Patch size (square).
    pub patch_size: usize,
    /// Input channels.
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Whether query, key and value projections have a bias.
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
}

impl VitConfig {
    /// The built-in default backbone: 12 blocks (as ViT-B/16), narrow enough for two CPU cores.
    pub fn tiny() -> Self {
        Self {
            hidden_size: 32,
            num_hidden_layers: 12,
            num_attention_heads: 4,
            intermediate_size: 64,
            hidden_act: "gelu".into(),
            layer_norm_eps: 1e-12,
            image_size: 32,
            patch_size: 8,
            num_channels: 3,
            qkv_bias: true,
        }
    }

    /// Patches per image.
    pub fn num_patches(&self) -> usize {
        (self.image_size / self.patch_size).pow(2)
    }

    /// Tokens per image (patches plus the CLS token).
    pub fn num_tokens(&self) -> usize {
        self.num_patches() + 1
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Checks internal consistency; errors name the offending field.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.num_attention_heads == 0 {
            bail!("config.json: hidden_size, num_hidden_layers and num_attention_heads must be positive");
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "config.json: hidden_size {} is not divisible by num_attention_heads {}",
                self.hidden_size,
                self.num_attention_heads
            );
        }
        if self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size) {
            bail!("config.json: image_size {} is not a multiple of patch_size {}", self.image_size, self.patch_size);
        }
        if self.hidden_act != "gelu" {
            bail!("config.json: hidden_act '{}' is not supported (only 'gelu')", self.hidden_act);
        }
        Ok(())
    }

    /// Reads and validates `config.json`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}: is this a Hugging Face model directory?", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses and validates `config.json` text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let cfg: VitConfig = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid ViT config.json: {e}", path.display()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The full `config.json` text that transformers' `ViTModel.from_pretrained` accepts.
    pub fn to_hf_json(&self) -> String {
        let v = serde_json::json!({
            "architectures": ["ViTModel"],
            "model_type": "vit",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "initializer_range": 0.02,
            "layer_norm_eps": self.layer_norm_eps,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "qkv_bias": self.qkv_bias,
            "encoder_stride": self.patch_size,
            "torch_dtype": "float32",
        });
        serde_json::to_string_pretty(&v).expect("static json")
    }
}
