//! How an encoder output becomes one feature row per example: the class (first) token, or the
//! mean of the other tokens. A BERT folder declares it in sentence-transformers'
//! `1_Pooling/config.json`; `--pooling` chooses it for BERT and DINOv2 backbones.

use crate::choice::Choice;
use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the encoder output becomes one feature row per example.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Pooling {
    /// Mean over tokens: BERT, of the real (unmasked) tokens (sentence-transformers' default);
    /// DINOv2, of the patch tokens after the final layer norm (the half of the features
    /// `Dinov2ForImageClassification` concatenates to the class token).
    Mean,
    /// The first token: BERT's `[CLS]` hidden state; DINOv2's class token after the final
    /// layer norm (`pooler_output`).
    Cls,
}

impl Choice for Pooling {
    const WHAT: &'static str = "pooling";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("cls", "the class token (DINOv2: pooler_output; BERT: [CLS])", Pooling::Cls),
        (
            "mean",
            "the mean of the other tokens (DINOv2: patch tokens after the final layer norm; BERT: real tokens)",
            Pooling::Mean,
        ),
    ];
}

impl Pooling {
    /// The pooling `dir/1_Pooling/config.json` declares (sentence-transformers layout);
    /// `Cls` when the folder has none (a plain `BertModel`).
    pub fn of_folder(dir: &Path) -> Result<Pooling> {
        let path = dir.join("1_Pooling").join("config.json");
        let Ok(text) = std::fs::read_to_string(&path) else { return Ok(Pooling::Cls) };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not valid JSON: {e}", path.display()))?;
        let on = |k: &str| v.get(k).and_then(|x| x.as_bool()).unwrap_or(false);
        match (on("pooling_mode_mean_tokens"), on("pooling_mode_cls_token")) {
            (true, false) => Ok(Pooling::Mean),
            (false, true) => Ok(Pooling::Cls),
            _ => bail!(
                "{}: only mean or CLS pooling (exactly one of pooling_mode_mean_tokens / pooling_mode_cls_token) is supported",
                path.display()
            ),
        }
    }

    /// The `1_Pooling/config.json` text for this pooling and width.
    pub fn config_json(self, width: usize) -> String {
        let v = serde_json::json!({
            "word_embedding_dimension": width,
            "pooling_mode_cls_token": self == Pooling::Cls,
            "pooling_mode_mean_tokens": self == Pooling::Mean,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        });
        serde_json::to_string_pretty(&v).expect("static json")
    }
}
