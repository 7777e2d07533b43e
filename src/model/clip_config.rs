//! The Hugging Face `CLIPConfig` subset that defines the architecture: the text and vision
//! towers' `text_config` / `vision_config`, the projection width and the logit scale.
//! Missing keys take transformers' defaults (the `openai/clip-vit-base-patch32` shapes), as
//! `save_pretrained` leaves values at their defaults out.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The MLP activation of a CLIP tower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x · σ(1.702 x)` (OpenAI CLIP).
    QuickGelu,
    /// Exact (erf) GELU.
    Gelu,
}

impl Activation {
    fn parse(name: &str, path: &Path) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => bail!("{}: hidden_act '{other}' is not supported (quick_gelu or gelu)", path.display()),
        }
    }
}

/// One tower's architecture (the fields both `CLIPTextConfig` and `CLIPVisionConfig` have).
#[derive(Clone, Debug, PartialEq)]
pub struct TowerConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the MLP hidden layer.
    pub intermediate_size: usize,
    /// Number of transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// MLP activation.
    pub activation: Activation,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
}

/// The architecture of a CLIP model.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    /// Text tower.
    pub text: TowerConfig,
    /// Vision tower.
    pub vision: TowerConfig,
    /// Token vocabulary size.
    pub vocab_size: usize,
    /// Position-embedding table size of the text tower (the longest prompt, 77).
    pub max_position_embeddings: usize,
    /// End-of-text token id; the text feature is read at its first occurrence (at the
    /// largest id when it is 2, transformers' rule for old configs).
    pub eos_token_id: u32,
    /// Image side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Image channels.
    pub num_channels: usize,
    /// Width of the shared image-text embedding space.
    pub projection_dim: usize,
}

#[derive(Deserialize, Serialize)]
#[serde(default)]
struct RawTower {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    vocab_size: usize,
    max_position_embeddings: usize,
    eos_token_id: u32,
    image_size: usize,
    patch_size: usize,
    num_channels: usize,
}

impl RawTower {
    fn text() -> RawTower {
        RawTower {
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            vocab_size: 49408,
            max_position_embeddings: 77,
            eos_token_id: 49407,
            image_size: 0,
            patch_size: 0,
            num_channels: 0,
        }
    }

    fn vision() -> RawTower {
        RawTower {
            hidden_size: 768,
            intermediate_size: 3072,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            ..RawTower::text()
        }
    }

    fn tower(&self, what: &str, path: &Path) -> Result<TowerConfig> {
        if self.hidden_size == 0 || self.num_hidden_layers == 0 || self.num_attention_heads == 0 {
            bail!("{}: {what} hidden_size, num_hidden_layers and num_attention_heads must be positive", path.display());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            bail!(
                "{}: {what} hidden_size {} is not divisible by num_attention_heads {}",
                path.display(),
                self.hidden_size,
                self.num_attention_heads
            );
        }
        Ok(TowerConfig {
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            activation: Activation::parse(&self.hidden_act, path)?,
            layer_norm_eps: self.layer_norm_eps,
        })
    }
}

impl Default for RawTower {
    fn default() -> Self {
        RawTower::text()
    }
}

impl ClipConfig {
    /// Parses and validates `config.json` text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<ClipConfig> {
        let json: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid CLIP config.json: {e}", path.display()))?;
        let tower = |key: &str, defaults: RawTower| -> Result<RawTower> {
            let Some(v) = json.get(key) else { return Ok(defaults) };
            // Start from the tower's defaults and let the file's keys override them.
            let mut merged = serde_json::to_value(&defaults)?;
            if let (Some(m), Some(given)) = (merged.as_object_mut(), v.as_object()) {
                for (k, val) in given {
                    m.insert(k.clone(), val.clone());
                }
            }
            serde_json::from_value(merged)
                .map_err(|e| anyhow::anyhow!("{}: {key} is not a valid CLIP tower config: {e}", path.display()))
        };
        let text_raw = tower("text_config", RawTower::text())?;
        let vision_raw = tower("vision_config", RawTower::vision())?;
        let projection_dim = json.get("projection_dim").and_then(|v| v.as_u64()).unwrap_or(512) as usize;
        let cfg = ClipConfig {
            text: text_raw.tower("text_config", path)?,
            vision: vision_raw.tower("vision_config", path)?,
            vocab_size: text_raw.vocab_size,
            max_position_embeddings: text_raw.max_position_embeddings,
            eos_token_id: text_raw.eos_token_id,
            image_size: vision_raw.image_size,
            patch_size: vision_raw.patch_size,
            num_channels: vision_raw.num_channels,
            projection_dim,
        };
        if cfg.patch_size == 0 || !cfg.image_size.is_multiple_of(cfg.patch_size) {
            bail!(
                "{}: vision_config image_size {} is not a multiple of patch_size {}",
                path.display(),
                cfg.image_size,
                cfg.patch_size
            );
        }
        if cfg.vocab_size >= 1 << 24 {
            bail!(
                "{}: vocab_size {} is too large (ids travel as exact f32 below 2^24)",
                path.display(),
                cfg.vocab_size
            );
        }
        Ok(cfg)
    }

    /// Tokens per image: the patches plus the class token.
    pub fn num_image_tokens(&self) -> usize {
        (self.image_size / self.patch_size).pow(2) + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_transformers_defaults_and_given_keys_win() {
        let p = Path::new("config.json");
        let cfg = ClipConfig::parse(r#"{"model_type": "clip", "vision_config": {"patch_size": 16}}"#, p).unwrap();
        assert_eq!((cfg.vision.hidden_size, cfg.patch_size, cfg.image_size), (768, 16, 224));
        assert_eq!((cfg.text.hidden_size, cfg.text.num_attention_heads, cfg.max_position_embeddings), (512, 8, 77));
        assert_eq!((cfg.eos_token_id, cfg.projection_dim, cfg.num_image_tokens()), (49407, 512, 197));
        assert_eq!(cfg.text.activation, Activation::QuickGelu);
    }

    #[test]
    fn bad_configs_are_named() {
        let p = Path::new("config.json");
        let err = ClipConfig::parse(r#"{"text_config": {"hidden_act": "relu"}}"#, p).unwrap_err().to_string();
        assert!(err.contains("hidden_act 'relu'"), "{err}");
        let err = ClipConfig::parse(r#"{"vision_config": {"patch_size": 15}}"#, p).unwrap_err().to_string();
        assert!(err.contains("not a multiple of patch_size 15"), "{err}");
        let err = ClipConfig::parse(r#"{"text_config": {"hidden_size": 30}}"#, p).unwrap_err().to_string();
        assert!(err.contains("not divisible"), "{err}");
    }
}
