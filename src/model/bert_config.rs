//! The Hugging Face `BertConfig` subset that defines the architecture (the pooling a
//! sentence-transformers folder declares is read by [`super::pooling::Pooling::of_folder`]).

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_string()
}
fn default_type_vocab() -> usize {
    2
}
fn default_position_type() -> String {
    "absolute".to_string()
}

/// Architecture hyper-parameters of a BERT encoder (field names as in transformers' `BertConfig`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Token vocabulary size.
    pub vocab_size: usize,
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
    /// Size of the position-embedding table (the longest sequence).
    pub max_position_embeddings: usize,
    /// Number of token types (segments).
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    /// Only `absolute` position embeddings are supported.
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

impl BertConfig {
    /// Parses and validates `config.json` text read from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let cfg: BertConfig = serde_json::from_str(text)
            .map_err(|e| anyhow::anyhow!("{} is not a valid BERT config.json: {e}", path.display()))?;
        let p = path.display();
        if cfg.hidden_size == 0 || cfg.num_hidden_layers == 0 || cfg.num_attention_heads == 0 {
            bail!("{p}: hidden_size, num_hidden_layers and num_attention_heads must be positive");
        }
        if !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads) {
            bail!(
                "{p}: hidden_size {} is not divisible by num_attention_heads {}",
                cfg.hidden_size,
                cfg.num_attention_heads
            );
        }
        if cfg.hidden_act != "gelu" {
            bail!("{p}: hidden_act '{}' is not supported (only 'gelu', the exact erf form)", cfg.hidden_act);
        }
        if cfg.position_embedding_type != "absolute" {
            bail!("{p}: position_embedding_type '{}' is not supported (only 'absolute')", cfg.position_embedding_type);
        }
        Ok(cfg)
    }

    /// The full `config.json` text that transformers' `BertModel.from_pretrained` accepts.
    pub fn to_hf_json(&self) -> String {
        let v = serde_json::json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": self.hidden_act,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "initializer_range": 0.02,
            "layer_norm_eps": self.layer_norm_eps,
            "pad_token_id": 0,
            "position_embedding_type": self.position_embedding_type,
            "torch_dtype": "float32",
        });
        serde_json::to_string_pretty(&v).expect("static json")
    }
}
