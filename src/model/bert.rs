//! A BERT encoder with the Hugging Face `BertModel` architecture and weight names
//! (post-LN blocks, exact GELU, absolute position embeddings, padding attention
//! mask), pooled by the mean of the real tokens or by `[CLS]` as the folder's
//! `1_Pooling/config.json` says (sentence-transformers layout).
//!
//! Inputs are token-id rows `[N, L]` (ids stored as exact `f32` integers, 0 =
//! `[PAD]` after the text). The hidden state between blocks is `[N, T, D + 1]`:
//! the `D` features plus the padding mask (1 real, 0 pad) as the last channel, so
//! that row slicing, caching and concatenation by architecture-blind code keep
//! each example's mask with it. Padded positions never reach a real one (their
//! keys are masked) nor the pooled feature.

use super::attention::attention;
use super::bert_config::BertConfig;
use super::branch::Branch;
use super::checkpoint::{linear_tensors, Architecture, HfTensors};
use super::encoder::{
    adapted_linear, add_deltas, layer_norm, linear_shape, module_index, Backbone, BlockLinears, Encoder, InputKind,
    LinearWeights, Numerics,
};
use super::pooling::Pooling;
use crate::adapter::names::{EncoderNames, Spelling};
use crate::adapter::{ModuleKey, PeftLayout, TargetModule};
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `BertModel`'s names, the same in the checkpoint and in PEFT adapters. `output.dense` (the
/// MLP output) is also a suffix of `attention.output.dense`, which `target_modules` accounts for.
pub static NAMES: EncoderNames = EncoderNames {
    class: "BertModel",
    class_prefix: "Bert",
    backbone_hint: "a BERT folder (--backbone DIR with model_type bert)",
    model_prefix: "bert.",
    towers: &[""],
    checkpoint: BERT,
    adapter: &[BERT],
    target_modules: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
};

/// `BertModel`'s module names.
const BERT: Spelling = Spelling {
    layers: "encoder.layer",
    modules: [
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
    ],
};

/// The `bert` model type: [`NAMES`] and the folder reader.
pub static ARCHITECTURE: Architecture = Architecture {
    model_type: "bert",
    names: &NAMES,
    load: |dir, text, tensors, origin| Ok(Backbone::new(Bert::load(dir, text, tensors, origin)?)),
};

/// Score added to attention logits of padded keys (their softmax weight underflows to 0).
const MASKED_SCORE: f64 = -1e9;

/// Weights of one BERT block.
#[derive(Clone, Debug)]
pub struct BertBlock {
    /// The six linear layers, in `TargetModule::ALL` order (query, key, value,
    /// `attention.output.dense`, `intermediate.dense`, `output.dense`).
    pub linears: Vec<LinearWeights>,
    /// `attention.output.LayerNorm` weight and bias.
    pub ln_attention: (Tensor, Tensor),
    /// `output.LayerNorm` weight and bias.
    pub ln_output: (Tensor, Tensor),
}

/// A frozen BERT encoder.
#[derive(Clone, Debug)]
pub struct Bert {
    /// Architecture.
    pub config: BertConfig,
    /// How the encoder output is pooled.
    pub pooling: Pooling,
    /// `embeddings.word_embeddings` `[V, D]`.
    pub word_embeddings: Tensor,
    /// `embeddings.position_embeddings` `[P, D]`.
    pub position_embeddings: Tensor,
    /// Row 0 of `embeddings.token_type_embeddings` `[D]` (every text is one segment).
    pub token_type_embeddings: Tensor,
    /// `embeddings.LayerNorm` weight and bias.
    pub embeddings_ln: (Tensor, Tensor),
    /// The transformer blocks.
    pub blocks: Vec<BertBlock>,
    /// The full `embeddings.token_type_embeddings` `[types, D]` (kept for saving).
    pub token_type_table: Tensor,
    /// The folder the weights came from (its `tokenizer.json` tokenizes the tasks).
    pub source: Option<PathBuf>,
}

impl Bert {
    /// Reads a `BertModel` folder whose `config.json` text is `config_text` and whose
    /// `model.safetensors` holds `tensors` (`bert.`-prefixed task checkpoints too).
    pub fn load(dir: &Path, config_text: &str, tensors: HashMap<String, Tensor>, origin: &str) -> Result<Bert> {
        let config = BertConfig::parse(config_text, &dir.join("config.json"))?;
        let pooling = Pooling::of_folder(dir)?;
        let mut bert = Bert::from_hf_tensors(&config, pooling, tensors, origin)?;
        bert.source = Some(dir.to_path_buf());
        Ok(bert)
    }

    /// Builds the encoder from `BertModel` weights.
    pub fn from_hf_tensors(
        config: &BertConfig,
        pooling: Pooling,
        tensors: HashMap<String, Tensor>,
        origin: &str,
    ) -> Result<Bert> {
        if config.vocab_size >= 1 << 24 {
            bail!("{origin}: vocab_size {} is too large (token ids travel as exact f32 below 2^24)", config.vocab_size);
        }
        let mut w = HfTensors::new(tensors, origin, "BertModel");
        w.strip_prefix_if_missing("bert.", "embeddings.word_embeddings.weight");
        let (d, m) = (config.hidden_size, config.intermediate_size);
        let word_embeddings = w.take("embeddings.word_embeddings.weight", &[config.vocab_size, d])?;
        let position_embeddings =
            w.take("embeddings.position_embeddings.weight", &[config.max_position_embeddings, d])?;
        let token_type_table = w.take("embeddings.token_type_embeddings.weight", &[config.type_vocab_size, d])?;
        let embeddings_ln = w.layer_norm("embeddings.LayerNorm", d)?;
        let mut blocks = Vec::new();
        for i in 0..config.num_hidden_layers {
            let pre = format!("encoder.layer.{i}");
            let linears = w.block_linears(
                |module| NAMES.checkpoint_module(0, i, module),
                |module| linear_shape(d, m, module),
                |_| true,
            )?;
            let ln_attention = w.layer_norm(&format!("{pre}.attention.output.LayerNorm"), d)?;
            let ln_output = w.layer_norm(&format!("{pre}.output.LayerNorm"), d)?;
            blocks.push(BertBlock { linears, ln_attention, ln_output });
        }
        w.refuse_extra_blocks("encoder.layer.")?;
        Ok(Bert {
            config: config.clone(),
            pooling,
            word_embeddings,
            position_embeddings,
            token_type_embeddings: token_type_table.i(0)?,
            embeddings_ln,
            blocks,
            token_type_table,
            source: None,
        })
    }

    /// Random weights (normal, std 0.02; layer norms perturbed around 1 and 0), for tests.
    /// Deterministic in `seed`.
    pub fn init_random(config: &BertConfig, pooling: Pooling, seed: u64, device: &Device) -> Result<Bert> {
        use rand::SeedableRng;
        use rand_distr::{Distribution, Normal};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let normal = Normal::new(0.0f32, 0.02).expect("valid normal");
        let mut randn = |shape: &[usize], scale: f32, offset: f32| -> Result<Tensor> {
            let n: usize = shape.iter().product();
            let data: Vec<f32> = (0..n).map(|_| offset + scale * normal.sample(&mut rng)).collect();
            Ok(Tensor::from_vec(data, shape, device)?)
        };
        let (d, m) = (config.hidden_size, config.intermediate_size);
        let mut blocks = Vec::new();
        for _ in 0..config.num_hidden_layers {
            let mut linears = Vec::new();
            for module in TargetModule::ALL {
                let (o, i) = linear_shape(d, m, module);
                linears.push(LinearWeights { weight: randn(&[o, i], 1.0, 0.0)?, bias: Some(randn(&[o], 1.0, 0.0)?) });
            }
            let ln_attention = (randn(&[d], 5.0, 1.0)?, randn(&[d], 5.0, 0.0)?);
            let ln_output = (randn(&[d], 5.0, 1.0)?, randn(&[d], 5.0, 0.0)?);
            blocks.push(BertBlock { linears, ln_attention, ln_output });
        }
        let token_type_table = randn(&[config.type_vocab_size, d], 1.0, 0.0)?;
        Ok(Bert {
            config: config.clone(),
            pooling,
            word_embeddings: randn(&[config.vocab_size, d], 1.0, 0.0)?,
            position_embeddings: randn(&[config.max_position_embeddings, d], 1.0, 0.0)?,
            token_type_embeddings: token_type_table.i(0)?,
            embeddings_ln: (randn(&[d], 5.0, 1.0)?, randn(&[d], 5.0, 0.0)?),
            blocks,
            token_type_table,
            source: None,
        })
    }

    /// Splits a hidden state `[B, T, D+1]` into features `[B, T, D]` and mask `[B, T, 1]`.
    fn split(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let d = self.config.hidden_size;
        if x.dim(D::Minus1)? != d + 1 {
            bail!("BERT hidden state has width {} but {d} features plus the mask are expected", x.dim(D::Minus1)?);
        }
        Ok((x.narrow(2, 0, d)?, x.narrow(2, d, 1)?))
    }
}

/// The largest number of leading non-padding entries of any row of `mask` `[B, T]`
/// (masks are 1 on the text, 0 on the trailing padding).
fn longest_row(mask: &Tensor) -> Result<usize> {
    let lengths: Vec<f32> = mask.sum(1)?.to_vec1()?;
    Ok(lengths.into_iter().fold(0f32, f32::max).round() as usize)
}

impl Encoder for Bert {
    fn model_type(&self) -> &'static str {
        "bert"
    }

    fn device(&self) -> &Device {
        self.word_embeddings.device()
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn module_shape(&self, _block: usize, module: TargetModule) -> (usize, usize) {
        linear_shape(self.config.hidden_size, self.config.intermediate_size, module)
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Text { max_positions: self.config.max_position_embeddings }
    }

    /// Token ids `[B, L]` (0 = padding) → `[B, L, D+1]`:
    /// `LayerNorm(word + position + type-0 embeddings)` plus the mask channel. The width is
    /// kept (cached states of a set share it); [`Encoder::trim_batch`] cuts a batch's padding.
    fn embed(&self, inputs: &Tensor) -> Result<Tensor> {
        let (b, t) = inputs.dims2()?;
        if t > self.config.max_position_embeddings {
            bail!(
                "texts of {t} tokens but the model has {} positions; lower --max-length",
                self.config.max_position_embeddings
            );
        }
        let mask = inputs.ne(0f32)?.to_dtype(DType::F32)?;
        let ids = inputs.to_dtype(DType::U32)?;
        let max_id = ids.max_all()?.to_scalar::<u32>()? as usize;
        if max_id >= self.config.vocab_size {
            bail!(
                "token id {max_id} is outside the vocabulary of {} tokens: the tokenizer does not belong to this model",
                self.config.vocab_size
            );
        }
        let d = self.config.hidden_size;
        let words = self.word_embeddings.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, d))?;
        let positions = self.position_embeddings.narrow(0, 0, t)?;
        let summed = words.broadcast_add(&positions)?.broadcast_add(&self.token_type_embeddings)?;
        let normed = layer_norm(&summed, &self.embeddings_ln, self.config.layer_norm_eps, Numerics::Fused)?;
        Ok(Tensor::cat(&[normed, mask.unsqueeze(2)?], 2)?)
    }

    /// One post-LN block: `h = LN(x + attn(x)); out = LN(h + mlp(h))`, padded keys masked.
    fn block(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let c = &self.config;
        let bw = &self.blocks[index];
        let (h, mask) = self.split(x)?;
        let (b, t, _) = h.dims3()?;
        let lin = |m: TargetModule, x: &Tensor| adapted_linear(&bw.linears[module_index(m)], index, m, x, branch);
        let key_bias = ((mask.reshape((b, 1, 1, t))? - 1.0)? * -MASKED_SCORE)?;
        let (q, k, v) = (lin(TargetModule::Query, &h)?, lin(TargetModule::Key, &h)?, lin(TargetModule::Value, &h)?);
        let ctx = attention(q, k, v, c.num_attention_heads, Some(&key_bias), numerics)?;
        let attended =
            layer_norm(&(&h + lin(TargetModule::Output, &ctx)?)?, &bw.ln_attention, c.layer_norm_eps, numerics)?;
        let mid = super::ops::gelu_erf(&lin(TargetModule::Fc1, &attended)?)?;
        let out = layer_norm(&(&attended + lin(TargetModule::Fc2, &mid)?)?, &bw.ln_output, c.layer_norm_eps, numerics)?;
        Ok(Tensor::cat(&[out, mask], 2)?)
    }

    fn pool(&self, encoded: &Tensor, _numerics: Numerics) -> Result<Tensor> {
        let (h, mask) = self.split(encoded)?;
        match self.pooling {
            Pooling::Cls => Ok(h.i((.., 0, ..))?.contiguous()?),
            Pooling::Mean => {
                let summed = h.broadcast_mul(&mask)?.sum(1)?;
                let count = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                Ok(summed.broadcast_div(&count)?)
            }
        }
    }

    /// Cuts the padding columns every row of the batch has.
    fn trim_batch(&self, x: &Tensor) -> Result<Tensor> {
        let (_, mask) = self.split(x)?;
        let t = x.dim(1)?;
        let longest = longest_row(&mask.squeeze(2)?)?.max(1);
        Ok(if longest < t { x.narrow(1, 0, longest)? } else { x.clone() })
    }

    fn pooling(&self) -> Pooling {
        self.pooling
    }

    /// The same encoder pooling with `pooling` (its saved folder declares it).
    fn with_pooling(&self, pooling: Pooling) -> Result<Backbone> {
        Ok(Backbone::new(Bert { pooling, ..self.clone() }))
    }

    fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone> {
        let mut out = self.clone();
        add_deltas(&mut out.blocks, deltas, self.device())?;
        Ok(Backbone::new(out))
    }

    fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        let mut put = |name: String, t: &Tensor| {
            out.insert(name, t.clone());
        };
        put("embeddings.word_embeddings.weight".into(), &self.word_embeddings);
        put("embeddings.position_embeddings.weight".into(), &self.position_embeddings);
        put("embeddings.token_type_embeddings.weight".into(), &self.token_type_table);
        put("embeddings.LayerNorm.weight".into(), &self.embeddings_ln.0);
        put("embeddings.LayerNorm.bias".into(), &self.embeddings_ln.1);
        for (i, b) in self.blocks.iter().enumerate() {
            let pre = format!("encoder.layer.{i}");
            for (name, tensor) in linear_tensors(&NAMES, 0, i, &b.linears) {
                put(name, &tensor);
            }
            put(format!("{pre}.attention.output.LayerNorm.weight"), &b.ln_attention.0);
            put(format!("{pre}.attention.output.LayerNorm.bias"), &b.ln_attention.1);
            put(format!("{pre}.output.LayerNorm.weight"), &b.ln_output.0);
            put(format!("{pre}.output.LayerNorm.bias"), &b.ln_output.1);
        }
        Ok(out)
    }

    fn hf_config_json(&self) -> String {
        self.config.to_hf_json()
    }

    fn peft_layout(&self) -> PeftLayout {
        PeftLayout::single(&NAMES)
    }

    fn extra_files(&self) -> Vec<(String, Vec<u8>)> {
        let mut files =
            vec![("1_Pooling/config.json".to_string(), self.pooling.config_json(self.config.hidden_size).into_bytes())];
        if let Some(bytes) = self.source.as_ref().and_then(|dir| std::fs::read(dir.join("tokenizer.json")).ok()) {
            files.push(("tokenizer.json".to_string(), bytes));
        }
        files
    }

    fn tokenizer(&self) -> Option<PathBuf> {
        // Any entry by that name (a folder there is then named by the tokenizer's reader).
        self.source.as_ref().map(|dir| dir.join("tokenizer.json")).filter(|p| p.exists())
    }
}

impl BlockLinears for BertBlock {
    fn linears_mut(&mut self) -> &mut [LinearWeights] {
        &mut self.linears
    }
}
