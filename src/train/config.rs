//! Everything that defines a training run; serialised into the run manifest and
//! hashed for the run cache. Loadable from TOML (`copra-lab train --config run.toml`).

use super::schedule::{Method, Rescale};
use crate::adapter::{fit::ModuleShapes, Grouping, LoraSpec};
use crate::model::head::DEFAULT_TEMPLATE;
use serde::{Deserialize, Serialize};

/// Which encoders of a two-tower backbone (CLIP) carry adapters; single-encoder backbones
/// take `both` (the default), which there means every block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdaptedEncoders {
    /// Every block of every encoder (CLIP-LoRA's default).
    #[default]
    Both,
    /// The vision tower only.
    Vision,
    /// The text tower only.
    Text,
}

impl crate::choice::Choice for AdaptedEncoders {
    const WHAT: &'static str = "encoder";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("both", "adapters on every block of both encoders (CLIP-LoRA's default)", AdaptedEncoders::Both),
        ("vision", "adapters on the vision tower only", AdaptedEncoders::Vision),
        ("text", "adapters on the text tower only", AdaptedEncoders::Text),
    ];
}

impl AdaptedEncoders {
    /// Name in configs and tables.
    pub fn name(self) -> &'static str {
        match self {
            AdaptedEncoders::Both => "both",
            AdaptedEncoders::Vision => "vision",
            AdaptedEncoders::Text => "text",
        }
    }

    /// The blocks of `shapes` that carry adapters; errors when the backbone has no such encoder.
    pub fn blocks(self, shapes: &dyn ModuleShapes) -> anyhow::Result<Vec<usize>> {
        let all = 0..shapes.num_blocks();
        if self == AdaptedEncoders::Both {
            return Ok(all.collect());
        }
        let blocks: Vec<usize> = all.filter(|&b| shapes.place(b).encoder == self.name()).collect();
        if blocks.is_empty() {
            anyhow::bail!(
                "--encoder {}: this backbone has no {} encoder (--encoder applies to CLIP backbones); use --encoder both",
                self.name(),
                self.name()
            );
        }
        Ok(blocks)
    }
}

/// Configuration of one LoRA / CopRA training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// Task name (`lighting`, `idx:/path`, `folder:/path`, ...).
    pub task: String,
    /// Training method and schedule.
    pub method: Method,
    /// Run seed: adapter init, dropout, batch order and CopRA masks.
    pub seed: u64,
    /// Data seed: which images are generated or sampled (shared by all runs that compare).
    pub data_seed: u64,
    /// Training shots per class.
    pub shots: usize,
    /// Test images.
    pub test_size: usize,
    /// Validation images (default: `test_size`). Runs never read the validation split, so it is
    /// left out of their cache keys ([`crate::lab::Lab::normalized`]) and of the serialised
    /// config when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_size: Option<usize>,
    /// Optimizer steps T.
    pub steps: usize,
    /// Batch size.
    pub batch_size: usize,
    /// Peak learning rate (default 2e-3: CLIP-LoRA's 2e-4 is tuned for ViT-B/16; on the
    /// 32-wide built-in backbone it leaves the adapters far from fitting the shots).
    pub lr: f64,
    /// Final learning rate of the cosine decay.
    pub min_lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW β1.
    pub beta1: f64,
    /// AdamW β2.
    pub beta2: f64,
    /// AdamW ε.
    pub eps: f64,
    /// LoRA shape, scale, dropout and target modules.
    pub lora: LoraSpec,
    /// How active adapter groups are scaled while the schedule drops groups (`none` as
    /// published; `inverse-p` for inverted dropout). Left out of the serialised config when
    /// `none`, so runs from before the option keep their cache keys.
    #[serde(skip_serializing_if = "Rescale::is_none")]
    pub rescale: Rescale,
    /// Players / Bernoulli groups: one per block or one per module.
    pub grouping: Grouping,
    /// CopRA starting probability p0 (0 as in the paper; 0.1 in CoTo's reference code).
    pub p0: f64,
    /// Fraction of training over which p rises to 1.
    pub stage1_ratio: f64,
    /// Fixed logit scale of the prototype head.
    pub logit_scale: f64,
    /// Longest token sequence of a text task's example (text backbones; default 128).
    /// Left out of the serialised config at its default, so image runs keep their cache keys.
    #[serde(skip_serializing_if = "is_default_max_length")]
    pub max_length: usize,
    /// Which encoders carry adapters (CLIP; default both). Left out at its default.
    #[serde(skip_serializing_if = "is_both")]
    pub encoders: AdaptedEncoders,
    /// Class prompt template of a CLIP backbone's text classifier (`{}` = class name).
    /// Left out at its default, "a photo of a {}.".
    #[serde(skip_serializing_if = "is_default_template")]
    pub prompt_template: String,
    /// Side in pixels image tasks are made at, instead of the backbone's own (only for
    /// backbones that interpolate their position embeddings: DINOv2). Left out when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_size: Option<usize>,
}

fn is_both(v: &AdaptedEncoders) -> bool {
    *v == AdaptedEncoders::Both
}

fn is_default_template(v: &str) -> bool {
    v == DEFAULT_TEMPLATE
}

/// Default of [`TrainConfig::max_length`].
pub const DEFAULT_MAX_LENGTH: usize = 128;

fn is_default_max_length(v: &usize) -> bool {
    *v == DEFAULT_MAX_LENGTH
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            task: "lighting".into(),
            method: Method::Copra,
            seed: 1,
            data_seed: 0,
            shots: 16,
            test_size: 1000,
            valid_size: None,
            steps: 500,
            batch_size: 32,
            lr: 2e-3,
            min_lr: 1e-6,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            lora: LoraSpec::default(),
            rescale: Rescale::None,
            grouping: Grouping::Block,
            p0: 0.0,
            stage1_ratio: 0.75,
            logit_scale: 20.0,
            max_length: DEFAULT_MAX_LENGTH,
            image_size: None,
            encoders: AdaptedEncoders::Both,
            prompt_template: DEFAULT_TEMPLATE.to_string(),
        }
    }
}

impl TrainConfig {
    /// Checks value ranges; errors name the field and the valid range.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::bail;
        if self.steps == 0 {
            bail!("steps must be at least 1");
        }
        if self.batch_size == 0 {
            bail!("batch_size must be at least 1");
        }
        if self.shots == 0 {
            bail!("shots must be at least 1");
        }
        if self.valid_size == Some(0) {
            bail!("valid_size must be at least 1; leave it out for the default (the test size)");
        }
        if self.max_length < 2 {
            bail!("max_length must be at least 2 tokens ([CLS] and [SEP]); the default is {DEFAULT_MAX_LENGTH}");
        }
        for (name, v) in [
            ("lr", self.lr),
            ("min_lr", self.min_lr),
            ("lora alpha", self.lora.alpha),
            ("logit_scale", self.logit_scale),
            ("weight_decay", self.weight_decay),
            ("eps", self.eps),
        ] {
            if !v.is_finite() {
                bail!("{name} must be a finite number, got {v}");
            }
        }
        if self.logit_scale <= 0.0 {
            bail!("logit_scale must be positive, got {}", self.logit_scale);
        }
        if self.eps <= 0.0 || self.weight_decay < 0.0 {
            bail!(
                "eps must be positive and weight_decay non-negative (got eps {}, weight_decay {})",
                self.eps,
                self.weight_decay
            );
        }
        if self.lr.is_nan() || self.lr <= 0.0 || self.min_lr.is_nan() || self.min_lr < 0.0 || self.min_lr > self.lr {
            bail!(
                "learning rates must satisfy 0 ≤ min_lr ≤ lr and lr > 0 (got lr {}, min_lr {})",
                self.lr,
                self.min_lr
            );
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            bail!("lora dropout must be in [0, 1), got {}", self.lora.dropout);
        }
        if self.lora.rank == 0 {
            bail!("lora rank must be at least 1");
        }
        if self.lora.targets.is_empty() {
            bail!("lora targets must name at least one module (q, k, v, o, fc1, fc2)");
        }
        if !self.prompt_template.contains("{}") {
            bail!(
                "prompt_template '{}' has no {{}} where the class name goes; the default is \"{DEFAULT_TEMPLATE}\"",
                self.prompt_template
            );
        }
        if !(0.0..=1.0).contains(&self.p0) {
            bail!("p0 must be in [0, 1], got {}", self.p0);
        }
        if !(self.stage1_ratio > 0.0 && self.stage1_ratio <= 1.0) {
            bail!("stage1_ratio must be in (0, 1], got {}", self.stage1_ratio);
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            bail!("betas must be in [0, 1)");
        }
        Ok(())
    }

    /// Parses a TOML file's text (unknown keys are errors, missing keys take defaults).
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        let cfg: TrainConfig =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("invalid training config: {}", e.message()))?;
        cfg.validate()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_defaults() {
        let cfg = TrainConfig { seed: 7, method: Method::StochasticDepth { p: 0.5 }, ..Default::default() };
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(TrainConfig::from_toml(&text).unwrap(), cfg);
        let partial = TrainConfig::from_toml("seed = 3\nsteps = 10\n").unwrap();
        assert_eq!(partial.seed, 3);
        assert_eq!(partial.lr, 2e-3);
    }

    #[test]
    fn bad_values_are_named() {
        let err = TrainConfig::from_toml("stepz = 3").unwrap_err().to_string();
        assert!(err.contains("stepz"), "{err}");
        let err = TrainConfig::from_toml("p0 = 2.0").unwrap_err().to_string();
        assert!(err.contains("p0"), "{err}");
        for (text, field) in
            [("lr = inf", "lr"), ("logit_scale = nan", "logit_scale"), ("logit_scale = 0.0", "logit_scale")]
        {
            let err = TrainConfig::from_toml(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let cfg = TrainConfig { lora: LoraSpec { alpha: f64::NAN, ..LoraSpec::default() }, ..Default::default() };
        assert!(cfg.validate().unwrap_err().to_string().contains("alpha"));
    }
}
