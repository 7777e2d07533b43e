//! CLIP with the Hugging Face `CLIPModel` architecture and weight names: a pre-LN vision
//! transformer (class token, `pre_layrnorm`, `post_layernorm`, `visual_projection`) and a
//! pre-LN causal text transformer (`final_layer_norm`, features read at the end-of-text
//! token, `text_projection`), quick-GELU or GELU as `config.json` says.
//!
//! Blocks are numbered globally: the vision tower's `0..V` (the input's path, which
//! every fast path of the evaluator and the layer game walks) and then the text tower's
//! `V..V+T`, which change only the classifier: the class prompts' embeddings
//! ([`Encoder::encode_prompts`]). Images arrive normalised to `[−1, 1]` like every image
//! task's, and [`Encoder::embed`] converts them to CLIP's own normalisation
//! (`x' = ((x + 1)/2 − mean) / std` per channel, OpenAI's mean and std).

use super::branch::Branch;
use super::checkpoint::{linear_tensors, Architecture, HfTensors};
use super::clip_config::{Activation, ClipConfig, TowerConfig};
use super::encoder::{add_deltas, layer_norm, linear_shape, Backbone, Encoder, InputKind, Numerics};
use super::head::Prompts;
use super::patch::class_and_patch_tokens;
use super::pre_ln::{PreLnBlock, Rows};
use crate::adapter::names::{EncoderNames, Spelling};
use crate::adapter::{BlockPlace, ModuleKey, PeftLayout, TargetModule};
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use candle_core::{Device, IndexOp, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// OpenAI CLIP's per-channel image mean (what `CLIPImageProcessor` subtracts).
pub const IMAGE_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP's per-channel image standard deviation.
pub const IMAGE_STD: [f32; 3] = [0.268_629_54, 0.261_302_6, 0.275_777_1];

/// Score added to attention logits of future positions in the text tower.
const MASKED_SCORE: f64 = -1e9;

/// A frozen CLIP model.
#[derive(Clone, Debug)]
pub struct Clip {
    /// Architecture.
    pub config: ClipConfig,
    /// `vision_model.embeddings.class_embedding` `[Dv]`.
    pub class_embedding: Tensor,
    /// `vision_model.embeddings.patch_embedding.weight` flattened to `[Dv, C·p·p]`.
    pub patch_weight: Tensor,
    /// `vision_model.embeddings.position_embedding.weight` `[Tv, Dv]`.
    pub vision_positions: Tensor,
    /// `vision_model.pre_layrnorm`.
    pub pre_layernorm: (Tensor, Tensor),
    /// `vision_model.post_layernorm`.
    pub post_layernorm: (Tensor, Tensor),
    /// `visual_projection.weight` `[P, Dv]`.
    pub visual_projection: Tensor,
    /// `text_model.embeddings.token_embedding.weight` `[V, Dt]`.
    pub token_embedding: Tensor,
    /// `text_model.embeddings.position_embedding.weight` `[Lmax, Dt]`.
    pub text_positions: Tensor,
    /// `text_model.final_layer_norm`.
    pub final_layer_norm: (Tensor, Tensor),
    /// `text_projection.weight` `[P, Dt]`.
    pub text_projection: Tensor,
    /// `logit_scale` (a scalar; the classifier uses its exponential).
    pub logit_scale: Tensor,
    /// The vision tower's blocks, then the text tower's.
    pub blocks: Vec<PreLnBlock>,
    /// `(scale, shift)` `[1, C, 1, 1]` turning `[−1, 1]` pixels into CLIP's normalisation.
    normalise: (Tensor, Tensor),
    /// The `config.json` text the model was read from (written back unchanged).
    config_text: String,
    /// The folder the weights came from (its `tokenizer.json` tokenizes the prompts).
    pub source: Option<PathBuf>,
}

impl Clip {
    /// Reads a `CLIPModel` folder whose `config.json` text is `config_text` and whose
    /// `model.safetensors` holds `tensors`.
    pub fn load(dir: &Path, config_text: &str, tensors: HashMap<String, Tensor>, origin: &str) -> Result<Clip> {
        let config = ClipConfig::parse(config_text, &dir.join("config.json"))?;
        let mut clip = Clip::from_hf_tensors(&config, config_text, tensors, origin)?;
        clip.source = Some(dir.to_path_buf());
        Ok(clip)
    }

    /// Builds the model from `CLIPModel` weights.
    pub fn from_hf_tensors(
        config: &ClipConfig,
        config_text: &str,
        tensors: HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Clip> {
        let mut w = HfTensors::new(tensors, origin, "CLIPModel");
        let (v, t) = (&config.vision, &config.text);
        let (dv, dt, p, c) = (v.hidden_size, t.hidden_size, config.patch_size, config.num_channels);
        let class_embedding = w.take("vision_model.embeddings.class_embedding", &[dv])?;
        let patch_weight =
            w.take("vision_model.embeddings.patch_embedding.weight", &[dv, c, p, p])?.reshape((dv, c * p * p))?;
        let vision_positions =
            w.take("vision_model.embeddings.position_embedding.weight", &[config.num_image_tokens(), dv])?;
        let pre_layernorm = w.layer_norm("vision_model.pre_layrnorm", dv)?;
        let mut blocks = Vec::new();
        for (tower, cfg) in [v, t].into_iter().enumerate() {
            let layers = NAMES.checkpoint_layers(tower);
            for i in 0..cfg.num_hidden_layers {
                blocks.push(read_block(&mut w, &format!("{layers}.{i}"), cfg)?);
            }
            w.refuse_extra_blocks(&format!("{layers}."))?;
        }
        let post_layernorm = w.layer_norm("vision_model.post_layernorm", dv)?;
        let visual_projection = w.take("visual_projection.weight", &[config.projection_dim, dv])?;
        let token_embedding = w.take("text_model.embeddings.token_embedding.weight", &[config.vocab_size, dt])?;
        let text_positions =
            w.take("text_model.embeddings.position_embedding.weight", &[config.max_position_embeddings, dt])?;
        let final_layer_norm = w.layer_norm("text_model.final_layer_norm", dt)?;
        let text_projection = w.take("text_projection.weight", &[config.projection_dim, dt])?;
        let logit_scale = w.take("logit_scale", &[])?;
        let device = class_embedding.device().clone();
        Ok(Clip {
            config: config.clone(),
            class_embedding,
            patch_weight,
            vision_positions,
            pre_layernorm,
            post_layernorm,
            visual_projection,
            token_embedding,
            text_positions,
            final_layer_norm,
            text_projection,
            logit_scale,
            blocks,
            normalise: normalisation(c, &device)?,
            config_text: config_text.to_string(),
            source: None,
        })
    }

    fn vision_blocks(&self) -> usize {
        self.config.vision.num_hidden_layers
    }

    /// The tower of global block `index`.
    fn tower(&self, index: usize) -> &TowerConfig {
        if index < self.vision_blocks() {
            &self.config.vision
        } else {
            &self.config.text
        }
    }

    /// One pre-LN encoder layer of either tower: `h = x + attn(ln1(x)); out = h + mlp(ln2(h))`,
    /// with `bias` added to the attention scores (the text tower's causal mask).
    fn layer(
        &self,
        index: usize,
        x: &Tensor,
        branch: &dyn Branch,
        numerics: Numerics,
        bias: Option<&Tensor>,
        rows: Rows,
    ) -> Result<Tensor> {
        let cfg = self.tower(index);
        let activation = |x: &Tensor| activate(x, cfg.activation);
        let layer = self.blocks[index].layer(index, cfg.layer_norm_eps, cfg.num_attention_heads, bias, &activation);
        layer.forward(x, branch, numerics, rows)
    }

    /// The tokenizer file of the folder the model came from.
    fn tokenizer_path(&self) -> Result<PathBuf> {
        self.tokenizer().ok_or_else(|| {
            anyhow::anyhow!(
                "the CLIP backbone folder has no tokenizer.json to encode the class prompts; save the processor's tokenizer there (CLIPTokenizerFast.save_pretrained)"
            )
        })
    }
}

/// `CLIPModel`'s names, the same in the checkpoint and in PEFT adapters, under each tower.
pub static NAMES: EncoderNames = EncoderNames {
    class: "CLIPModel",
    class_prefix: "CLIP",
    backbone_hint: "a CLIP folder (--backbone DIR with model_type clip)",
    model_prefix: "",
    towers: &["vision_model", "text_model"],
    checkpoint: CLIP,
    adapter: &[CLIP],
    target_modules: ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
};

/// `CLIPModel`'s module names inside either tower.
const CLIP: Spelling = Spelling {
    layers: "encoder.layers",
    modules: ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "mlp.fc1", "mlp.fc2"],
};

/// The `clip` model type: [`NAMES`] and the folder reader.
pub static ARCHITECTURE: Architecture = Architecture {
    model_type: "clip",
    names: &NAMES,
    load: |dir, text, tensors, origin| Ok(Backbone::new(Clip::load(dir, text, tensors, origin)?)),
};

/// Reads one encoder layer's weights under `prefix`.
fn read_block(w: &mut HfTensors, prefix: &str, cfg: &TowerConfig) -> Result<PreLnBlock> {
    let (d, m) = (cfg.hidden_size, cfg.intermediate_size);
    let linears = w.block_linears(
        |module| format!("{prefix}.{}", NAMES.checkpoint.module(module)),
        |module| linear_shape(d, m, module),
        |_| true,
    )?;
    Ok(PreLnBlock {
        ln1: w.layer_norm(&format!("{prefix}.layer_norm1"), d)?,
        ln2: w.layer_norm(&format!("{prefix}.layer_norm2"), d)?,
        linears,
        layer_scale: None,
    })
}

/// `(scale, shift)` `[1, C, 1, 1]` with `((x + 1)/2 − mean)/std = x·scale + shift`.
fn normalisation(channels: usize, device: &Device) -> Result<(Tensor, Tensor)> {
    if channels != 3 {
        bail!("CLIP backbones read 3-channel images (num_channels {channels} in config.json is not supported)");
    }
    let scale: Vec<f32> = IMAGE_STD.iter().map(|s| 0.5 / s).collect();
    let shift: Vec<f32> = IMAGE_MEAN.iter().zip(IMAGE_STD).map(|(m, s)| (0.5 - m) / s).collect();
    Ok((Tensor::from_vec(scale, (1, 3, 1, 1), device)?, Tensor::from_vec(shift, (1, 3, 1, 1), device)?))
}

/// The MLP activation, from differentiable ops.
fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    match act {
        Activation::Gelu => super::ops::gelu_erf(x),
        Activation::QuickGelu => {
            let sigmoid = ((x * -1.702)?.exp()? + 1.0)?.recip()?;
            Ok((x * sigmoid)?)
        }
    }
}

/// The causal mask `[1, 1, L, L]`: 0 on and below the diagonal, a large negative score above.
fn causal_bias(len: usize, device: &Device) -> Result<Tensor> {
    let v: Vec<f32> = (0..len * len).map(|i| if i % len > i / len { MASKED_SCORE as f32 } else { 0.0 }).collect();
    Ok(Tensor::from_vec(v, (1, 1, len, len), device)?)
}

/// Errors when a class prompt has more tokens than the text tower's `positions` (it would be
/// cut, and long templates would make every prompt the same), or when two classes get the same
/// tokens (`red_square` and `red square`, or a template without `{}`): their logits would be
/// identical and the task unlearnable.
fn check_prompt_rows(texts: &[String], rows: &[Vec<u32>], positions: usize) -> Result<()> {
    for (text, row) in texts.iter().zip(rows) {
        if row.len() > positions {
            bail!(
                "class prompt '{text}' has more than {positions} tokens, all the CLIP text tower reads; it would be cut (and long prompts would all read the same): shorten --prompt-template or the class name"
            );
        }
    }
    for (i, row) in rows.iter().enumerate() {
        if let Some(j) = rows[..i].iter().position(|r| r == row) {
            bail!(
                "the class prompts '{}' and '{}' tokenize the same, so the two classes cannot be told apart; rename a class folder, or put {{}} (the class name) in --prompt-template",
                texts[j],
                texts[i]
            );
        }
    }
    Ok(())
}

impl Encoder for Clip {
    fn model_type(&self) -> &'static str {
        "clip"
    }

    fn device(&self) -> &Device {
        self.class_embedding.device()
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn input_blocks(&self) -> usize {
        self.vision_blocks()
    }

    fn place(&self, block: usize) -> BlockPlace {
        let nv = self.vision_blocks();
        if block < nv {
            BlockPlace { encoder: "vision", layer: block }
        } else {
            BlockPlace { encoder: "text", layer: block - nv }
        }
    }

    fn module_shape(&self, block: usize, module: TargetModule) -> (usize, usize) {
        let cfg = self.tower(block);
        linear_shape(cfg.hidden_size, cfg.intermediate_size, module)
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Image { size: self.config.image_size, channels: self.config.num_channels }
    }

    /// Images `[B, 3, H, W]` in `[−1, 1]` → CLIP normalisation → patch embedding, class
    /// token, position embedding and `pre_layrnorm`: `[B, Tv, Dv]`.
    fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (_, ch, h, w) = images.dims4()?;
        if (ch, h, w) != (c.num_channels, c.image_size, c.image_size) {
            bail!(
                "images of shape [{ch}, {h}, {w}] but the CLIP backbone reads [{}, {s}, {s}]",
                c.num_channels,
                s = c.image_size
            );
        }
        let x = images.broadcast_mul(&self.normalise.0)?.broadcast_add(&self.normalise.1)?;
        let cls = self.class_embedding.reshape((1, 1, c.vision.hidden_size))?;
        let x = class_and_patch_tokens(&x, c.patch_size, &self.patch_weight, None, &cls)?;
        let x = x.broadcast_add(&self.vision_positions)?;
        layer_norm(&x, &self.pre_layernorm, c.vision.layer_norm_eps, Numerics::Fused)
    }

    fn block(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        if index >= self.vision_blocks() {
            bail!(
                "internal: block {index} is a text-tower block; the input's path has {} blocks",
                self.vision_blocks()
            );
        }
        self.layer(index, x, branch, numerics, None, Rows::All)
    }

    /// In evaluation the last vision block computes only the class-token row, the one `pool` reads.
    fn last_block_features(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        if index >= self.vision_blocks() {
            bail!(
                "internal: block {index} is a text-tower block; the input's path has {} blocks",
                self.vision_blocks()
            );
        }
        self.pool(&self.layer(index, x, branch, numerics, None, Rows::FirstToken)?, numerics)
    }

    /// `visual_projection(post_layernorm(class token))` `[B, P]` (`get_image_features`).
    fn pool(&self, encoded: &Tensor, numerics: Numerics) -> Result<Tensor> {
        let cls = encoded.i((.., 0, ..))?.contiguous()?;
        let normed = layer_norm(&cls, &self.post_layernorm, self.config.vision.layer_norm_eps, numerics)?;
        Ok(normed.matmul(&self.visual_projection.t()?)?)
    }

    fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone> {
        let mut out = self.clone();
        add_deltas(&mut out.blocks, deltas, self.device())?;
        Ok(Backbone::new(out))
    }

    fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let c = &self.config;
        let (dv, p) = (c.vision.hidden_size, c.patch_size);
        let mut out = HashMap::new();
        let mut put = |name: &str, t: &Tensor| {
            out.insert(name.to_string(), t.clone());
        };
        put("vision_model.embeddings.class_embedding", &self.class_embedding);
        put("vision_model.embeddings.patch_embedding.weight", &self.patch_weight.reshape((dv, c.num_channels, p, p))?);
        put("vision_model.embeddings.position_embedding.weight", &self.vision_positions);
        for (name, ln) in [
            ("vision_model.pre_layrnorm", &self.pre_layernorm),
            ("vision_model.post_layernorm", &self.post_layernorm),
            ("text_model.final_layer_norm", &self.final_layer_norm),
        ] {
            put(&format!("{name}.weight"), &ln.0);
            put(&format!("{name}.bias"), &ln.1);
        }
        put("visual_projection.weight", &self.visual_projection);
        put("text_model.embeddings.token_embedding.weight", &self.token_embedding);
        put("text_model.embeddings.position_embedding.weight", &self.text_positions);
        put("text_projection.weight", &self.text_projection);
        put("logit_scale", &self.logit_scale);
        let nv = self.vision_blocks();
        for (i, b) in self.blocks.iter().enumerate() {
            let (tower, layer) = if i < nv { (0, i) } else { (1, i - nv) };
            let pre = format!("{}.{layer}", NAMES.checkpoint_layers(tower));
            for (name, tensor) in linear_tensors(&NAMES, tower, layer, &b.linears) {
                put(&name, &tensor);
            }
            for (name, ln) in [("layer_norm1", &b.ln1), ("layer_norm2", &b.ln2)] {
                put(&format!("{pre}.{name}.weight"), &ln.0);
                put(&format!("{pre}.{name}.bias"), &ln.1);
            }
        }
        Ok(out)
    }

    fn hf_config_json(&self) -> String {
        self.config_text.clone()
    }

    fn peft_layout(&self) -> PeftLayout {
        PeftLayout::two_towers(&NAMES, self.vision_blocks(), self.config.text.num_hidden_layers)
    }

    fn extra_files(&self) -> Vec<(String, Vec<u8>)> {
        let Some(dir) = &self.source else { return Vec::new() };
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
            .into_iter()
            .filter_map(|name| std::fs::read(dir.join(name)).ok().map(|bytes| (name.to_string(), bytes)))
            .collect()
    }

    fn tokenizer(&self) -> Option<PathBuf> {
        // Any entry by that name (a folder there is then named by the tokenizer's reader).
        self.source.as_ref().map(|dir| dir.join("tokenizer.json")).filter(|p| p.exists())
    }

    fn logit_scale(&self) -> Option<f64> {
        self.logit_scale.to_scalar::<f32>().ok().map(|s| (s as f64).exp())
    }

    /// Tokenises with the folder's `tokenizer.json` (start and end tokens added, at most
    /// `max_position_embeddings` tokens), pads rows with the end-of-text id and records
    /// where each row's feature is read: the first end-of-text token (the largest id when
    /// `eos_token_id` is 2, as transformers does for old configs).
    fn tokenize_prompts(&self, texts: &[String]) -> Result<Prompts> {
        let path = self.tokenizer_path()?;
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        // One token more than the tower reads, so a prompt that would be cut shows.
        let positions = self.config.max_position_embeddings;
        let rows = crate::data::text::encode_ids(&refs, &path, positions + 1)?;
        check_prompt_rows(texts, &rows, positions)?;
        let eos = self.config.eos_token_id;
        let width = rows.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(rows.len() * width);
        let mut pool_at = Vec::with_capacity(rows.len());
        for (text, row) in texts.iter().zip(&rows) {
            if let Some(bad) = row.iter().find(|&&id| id as usize >= self.config.vocab_size) {
                bail!(
                    "{}: prompt '{text}' got token id {bad}, outside the model's {} tokens: the tokenizer does not belong to this model",
                    path.display(),
                    self.config.vocab_size
                );
            }
            let at = if eos == 2 {
                row.iter().enumerate().max_by_key(|(i, id)| (**id, std::cmp::Reverse(*i))).map(|(i, _)| i)
            } else {
                row.iter().position(|&id| id == eos)
            };
            let Some(at) = at else {
                bail!(
                    "{}: prompt '{text}' has no end-of-text token (id {eos}); is this CLIP's tokenizer?",
                    path.display()
                )
            };
            pool_at.push(at as u32);
            ids.extend(row.iter().copied().chain(std::iter::repeat(eos)).take(width));
        }
        let device = self.device();
        Ok(Prompts {
            texts: texts.to_vec(),
            ids: Tensor::from_vec(ids, (rows.len(), width), device)?,
            pool_at: Tensor::from_vec(pool_at, rows.len(), device)?,
        })
    }

    /// Token and position embeddings, the text tower's causal layers, `final_layer_norm`,
    /// the end-of-text rows and `text_projection`: `[K, P]` (`get_text_features`).
    fn encode_prompts(&self, prompts: &Prompts, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let (k, len) = prompts.ids.dims2()?;
        let c = &self.config;
        if len > c.max_position_embeddings {
            bail!("prompts of {len} tokens but the text tower has {} positions", c.max_position_embeddings);
        }
        let dt = c.text.hidden_size;
        let words = self.token_embedding.index_select(&prompts.ids.flatten_all()?, 0)?.reshape((k, len, dt))?;
        let mut x = words.broadcast_add(&self.text_positions.narrow(0, 0, len)?)?;
        let bias = causal_bias(len, self.device())?;
        for index in self.vision_blocks()..self.blocks.len() {
            x = self.layer(index, &x, branch, numerics, Some(&bias), Rows::All)?;
        }
        let x = layer_norm(&x, &self.final_layer_norm, c.text.layer_norm_eps, numerics)?;
        let offsets: Vec<u32> = (0..k as u32).map(|r| r * len as u32).collect();
        let rows = (Tensor::from_vec(offsets, k, self.device())? + &prompts.pool_at)?;
        let pooled = x.reshape((k * len, dt))?.index_select(&rows, 0)?;
        Ok(pooled.matmul(&self.text_projection.t()?)?)
    }
}
