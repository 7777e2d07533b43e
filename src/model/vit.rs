//! A Vision Transformer with the Hugging Face `ViTModel` architecture (pre-LN,
//! exact GELU, CLS token), written against candle so that a LoRA branch can be
//! added to any linear layer and the forward pass can start at any block.
//!
//! Two numerics paths share one code path: `Numerics::Differentiable` uses
//! composite softmax and layer norm (candle-nn's fused kernels silently drop
//! gradients, see `rust-ecosystem.md` §0.1), `Numerics::Fused` uses the fused
//! kernels for evaluation where no gradient is needed.

use super::branch::Branch;
use super::checkpoint::{linear_tensors, Architecture, HfTensors};
use super::config::VitConfig;
use super::encoder::{add_deltas, layer_norm, linear_shape, Backbone, Encoder, InputKind, LinearWeights, Numerics};
use super::patch::class_and_patch_tokens;
use super::pre_ln::{PreLnBlock, PreLnLayer, Rows};
use crate::adapter::names::{EncoderNames, Spelling};
use crate::adapter::{ModuleKey, PeftLayout, TargetModule};
use crate::linalg::Matrix;
use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor};
use std::collections::{BTreeMap, HashMap};

/// `ViTModel`'s names. transformers 5 names the attention and MLP modules `layers.{i}.attention.q_proj`,
/// `mlp.fc1`, … in memory (what PEFT writes) and keeps transformers 4's names in the checkpoint.
pub static NAMES: EncoderNames = EncoderNames {
    class: "ViTModel",
    class_prefix: "ViT",
    backbone_hint: "the built-in backbone or a ViT folder",
    model_prefix: "vit.",
    towers: &[""],
    checkpoint: VIT4,
    adapter: &[
        Spelling {
            layers: "layers",
            modules: [
                "attention.q_proj",
                "attention.k_proj",
                "attention.v_proj",
                "attention.o_proj",
                "mlp.fc1",
                "mlp.fc2",
            ],
        },
        VIT4,
    ],
    target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"],
};

/// The `vit` model type (also a `config.json` without `model_type`): [`NAMES`] and the folder reader.
pub static ARCHITECTURE: Architecture = Architecture { model_type: "vit", names: &NAMES, load: Vit::load };

/// transformers 4's `ViTModel` names (and the checkpoint's).
const VIT4: Spelling = Spelling {
    layers: "encoder.layer",
    modules: [
        "attention.attention.query",
        "attention.attention.key",
        "attention.attention.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
};

/// The ViT backbone's weights (frozen) and architecture.
#[derive(Clone, Debug)]
pub struct Vit {
    /// Architecture.
    pub config: VitConfig,
    /// `embeddings.cls_token` `[1, 1, D]`.
    pub cls_token: Tensor,
    /// `embeddings.position_embeddings` `[1, T, D]`.
    pub position_embeddings: Tensor,
    /// Patch projection weight flattened to `[D, C·p·p]` (conv kernel order C, kh, kw).
    pub patch_weight: Tensor,
    /// Patch projection bias `[D]`.
    pub patch_bias: Tensor,
    /// The transformer blocks.
    pub blocks: Vec<PreLnBlock>,
    /// Final `layernorm` weight and bias.
    pub final_ln: (Tensor, Tensor),
}

impl Encoder for Vit {
    fn model_type(&self) -> &'static str {
        "vit"
    }

    fn device(&self) -> &Device {
        self.cls_token.device()
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn module_shape(&self, _block: usize, module: TargetModule) -> (usize, usize) {
        module_shape(&self.config, module)
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Image { size: self.config.image_size, channels: self.config.num_channels }
    }

    /// Patch + position embedding of images `[B, C, H, W]` → hidden states `[B, T, D]`.
    fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let (weight, bias) = (&self.patch_weight, Some(&self.patch_bias));
        let x = class_and_patch_tokens(images, self.config.patch_size, weight, bias, &self.cls_token)?;
        Ok(x.broadcast_add(&self.position_embeddings)?)
    }

    /// One pre-LN transformer block: `h = x + attn(ln(x)); out = h + mlp(ln(h))`.
    fn block(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        self.layer(index).forward(x, branch, numerics, Rows::All)
    }

    /// In evaluation the last block computes only the CLS row, the one `pool` reads.
    fn last_block_features(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        self.pool(&self.layer(index).forward(x, branch, numerics, Rows::FirstToken)?, numerics)
    }

    /// Final layer norm of the CLS token of encoder output `[B, T, D]` → `[B, D]` (what
    /// `ViTModel`'s `last_hidden_state[:, 0]` holds).
    fn pool(&self, encoded: &Tensor, numerics: Numerics) -> Result<Tensor> {
        let cls = encoded.i((.., 0, ..))?.contiguous()?;
        layer_norm(&cls, &self.final_ln, self.config.layer_norm_eps, numerics)
    }

    fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone> {
        let mut out = self.clone();
        add_deltas(&mut out.blocks, deltas, self.device())?;
        Ok(Backbone::new(out))
    }

    fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let cfg = &self.config;
        let mut out = HashMap::new();
        out.insert("embeddings.cls_token".to_string(), self.cls_token.clone());
        out.insert("embeddings.position_embeddings".to_string(), self.position_embeddings.clone());
        out.insert(
            "embeddings.patch_embeddings.projection.weight".to_string(),
            self.patch_weight.reshape((cfg.hidden_size, cfg.num_channels, cfg.patch_size, cfg.patch_size))?,
        );
        out.insert("embeddings.patch_embeddings.projection.bias".to_string(), self.patch_bias.clone());
        for (i, b) in self.blocks.iter().enumerate() {
            let pre = format!("encoder.layer.{i}");
            out.extend(linear_tensors(&NAMES, 0, i, &b.linears));
            out.insert(format!("{pre}.layernorm_before.weight"), b.ln1.0.clone());
            out.insert(format!("{pre}.layernorm_before.bias"), b.ln1.1.clone());
            out.insert(format!("{pre}.layernorm_after.weight"), b.ln2.0.clone());
            out.insert(format!("{pre}.layernorm_after.bias"), b.ln2.1.clone());
        }
        out.insert("layernorm.weight".to_string(), self.final_ln.0.clone());
        out.insert("layernorm.bias".to_string(), self.final_ln.1.clone());
        Ok(out)
    }

    fn hf_config_json(&self) -> String {
        self.config.to_hf_json()
    }

    fn peft_layout(&self) -> PeftLayout {
        PeftLayout::single(&NAMES)
    }
}

impl Vit {
    /// Block `index` as a [`PreLnLayer`].
    pub(crate) fn layer(&self, index: usize) -> PreLnLayer<'_> {
        let c = &self.config;
        self.blocks[index].layer(index, c.layer_norm_eps, c.num_attention_heads, None, &super::ops::gelu_erf)
    }

    /// Reads a `ViTModel` folder: `config_text` is its `config.json`, `tensors` its weights.
    pub fn load(
        dir: &std::path::Path,
        config_text: &str,
        tensors: HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Backbone> {
        let config = VitConfig::parse(config_text, &dir.join("config.json"))?;
        Ok(Backbone::new(Vit::from_hf_tensors(&config, tensors, origin)?))
    }

    /// Reads `ViTModel` (or `ViTForImageClassification`, prefix `vit.`) weights.
    pub fn from_hf_tensors(config: &VitConfig, tensors: HashMap<String, Tensor>, origin: &str) -> Result<Vit> {
        let mut w = HfTensors::new(tensors, origin, "ViTModel");
        w.strip_prefix_if_missing("vit.", "embeddings.cls_token");
        let d = config.hidden_size;
        let (c, p) = (config.num_channels, config.patch_size);
        let cls_token = w.take("embeddings.cls_token", &[1, 1, d])?;
        let position_embeddings = w.take("embeddings.position_embeddings", &[1, config.num_tokens(), d])?;
        let patch_weight =
            w.take("embeddings.patch_embeddings.projection.weight", &[d, c, p, p])?.reshape((d, c * p * p))?;
        let patch_bias = w.take("embeddings.patch_embeddings.projection.bias", &[d])?;
        let mut blocks = Vec::new();
        for i in 0..config.num_hidden_layers {
            let pre = format!("encoder.layer.{i}");
            let linears = w.block_linears(
                |module| NAMES.checkpoint_module(0, i, module),
                |module| module_shape(config, module),
                |module| has_bias(config, module),
            )?;
            let ln_before = w.layer_norm(&format!("{pre}.layernorm_before"), d)?;
            let ln_after = w.layer_norm(&format!("{pre}.layernorm_after"), d)?;
            blocks.push(PreLnBlock { ln1: ln_before, ln2: ln_after, linears, layer_scale: None });
        }
        let final_ln = w.layer_norm("layernorm", d)?;
        w.refuse_extra_blocks("encoder.layer.")?;
        Ok(Vit { config: config.clone(), cls_token, position_embeddings, patch_weight, patch_bias, blocks, final_ln })
    }

    /// Random initialisation (truncated-normal-like, std 0.02, as `ViTModel._init_weights`),
    /// used by `pretrain`. Deterministic in `seed`.
    pub fn init_random(config: &VitConfig, seed: u64, device: &Device) -> Result<Vit> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
        let mut randn = |shape: &[usize]| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| normal.sample(&mut rng).clamp(-0.04, 0.04)).collect();
            Ok(Tensor::from_vec(data, shape, device)?)
        };
        let d = config.hidden_size;
        let m = config.intermediate_size;
        let cpp = config.num_channels * config.patch_size * config.patch_size;
        let zeros = |n: usize| Tensor::zeros(n, DType::F32, device);
        let ones = |n: usize| Tensor::ones(n, DType::F32, device);
        let mut blocks = Vec::new();
        for _ in 0..config.num_hidden_layers {
            let mut linears = Vec::new();
            for module in TargetModule::ALL {
                let (o, i) = module_shape(config, module);
                linears.push(LinearWeights {
                    weight: randn(&[o, i])?,
                    bias: if has_bias(config, module) { Some(zeros(o)?) } else { None },
                });
            }
            let (ln1, ln2) = ((ones(d)?, zeros(d)?), (ones(d)?, zeros(d)?));
            blocks.push(PreLnBlock { ln1, ln2, linears, layer_scale: None });
        }
        let _ = m;
        Ok(Vit {
            config: config.clone(),
            cls_token: randn(&[1, 1, d])?,
            position_embeddings: randn(&[1, config.num_tokens(), d])?,
            patch_weight: randn(&[d, cpp])?,
            patch_bias: zeros(d)?,
            blocks,
            final_ln: (ones(d)?, zeros(d)?),
        })
    }

    /// Every weight tensor, in a fixed order (for training all of them in `pretrain`).
    pub fn tensors_mut(&mut self) -> Vec<&mut Tensor> {
        let mut out: Vec<&mut Tensor> =
            vec![&mut self.cls_token, &mut self.position_embeddings, &mut self.patch_weight, &mut self.patch_bias];
        for b in &mut self.blocks {
            out.push(&mut b.ln1.0);
            out.push(&mut b.ln1.1);
            out.push(&mut b.ln2.0);
            out.push(&mut b.ln2.1);
            for l in &mut b.linears {
                out.push(&mut l.weight);
                if let Some(bias) = &mut l.bias {
                    out.push(bias);
                }
            }
        }
        out.push(&mut self.final_ln.0);
        out.push(&mut self.final_ln.1);
        out
    }
}

/// Whether `module` has a bias under `config` (query, key and value only with `qkv_bias`).
fn has_bias(config: &VitConfig, module: TargetModule) -> bool {
    config.qkv_bias || !matches!(module, TargetModule::Query | TargetModule::Key | TargetModule::Value)
}

/// `[out, in]` of a module's weight under `config`.
pub fn module_shape(config: &VitConfig, module: TargetModule) -> (usize, usize) {
    linear_shape(config.hidden_size, config.intermediate_size, module)
}

impl Backbone {
    /// A randomly initialised ViT backbone ([`Vit::init_random`]), for tests and `pretrain`.
    pub fn init_random(config: &VitConfig, seed: u64, device: &Device) -> Result<Backbone> {
        Ok(Backbone::new(Vit::init_random(config, seed, device)?))
    }
}
