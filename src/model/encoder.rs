//! The backbone interface: what the trainer, the evaluator, the layer game,
//! connectivity, merging and pruning see of a frozen transformer.
//!
//! An [`Encoder`] turns a batch of inputs (images or token ids, one row per example)
//! into the hidden state entering block 0, runs any block on the hidden state that
//! entered it, and pools the encoder output into one feature row per example. Hidden
//! states are `[N, …]` tensors whose first dimension is the example, so every consumer
//! can slice, select and concatenate rows without knowing the architecture (the BERT
//! encoder carries its padding mask inside its hidden state for this reason).
//!
//! [`Backbone`] is the shared, cheaply cloned handle every command holds. A new
//! architecture is one file implementing [`Encoder`] with its name table
//! (`adapter::names::EncoderNames`) and `checkpoint::Architecture`, plus one line in
//! `checkpoint::ARCHITECTURES`.

use super::branch::{Branch, NoBranch};
use super::head::Prompts;
use super::pooling::Pooling;
use crate::adapter::{fit::ModuleShapes, BlockPlace, ModuleKey, PeftLayout, TargetModule};
use crate::choice::Choice;
use crate::linalg::Matrix;
use anyhow::Result;
use candle_core::{Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Which softmax / layer-norm kernels a forward pass uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// Composite, differentiable ops (training).
    Differentiable,
    /// candle's fused kernels (evaluation only: they have no backward).
    Fused,
}

/// What an encoder reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// Square images `[N, C, H, W]`, normalised to `[−1, 1]`.
    Image {
        /// Side length in pixels.
        size: usize,
        /// Channels (1 or 3).
        channels: usize,
    },
    /// Token-id rows `[N, L]` (ids as exact `f32` integers, 0 = padding after the text).
    Text {
        /// The most tokens a sequence may have (position-embedding table size).
        max_positions: usize,
    },
}

/// A frozen transformer encoder that LoRA branches can be added to and whose forward
/// pass can start at any block.
///
/// # Example: a new encoder
///
/// An encoder that mean-pools the tokens of another encoder's output instead of reading
/// its class token: everything else is delegated. A new architecture implements the same
/// methods on its own weights in one file under `src/model/`, with its names and
/// `Architecture`, plus one line in `checkpoint::ARCHITECTURES` (see `docs/architecture.md`).
///
/// ```
/// use anyhow::Result;
/// use candle_core::{Device, Tensor};
/// use copra_lab::adapter::{ModuleKey, PeftLayout, TargetModule};
/// use copra_lab::linalg::Matrix;
/// use copra_lab::model::{checkpoint, Backbone, Branch, Encoder, InputKind, NoBranch, Numerics};
/// use std::collections::{BTreeMap, HashMap};
///
/// #[derive(Debug)]
/// struct MeanPooled(Backbone);
///
/// impl Encoder for MeanPooled {
///     fn model_type(&self) -> &'static str { self.0.model_type() }
///     fn device(&self) -> &Device { self.0.device() }
///     fn num_blocks(&self) -> usize { self.0.num_blocks() }
///     fn module_shape(&self, block: usize, m: TargetModule) -> (usize, usize) { self.0.module_shape(block, m) }
///     fn input_kind(&self) -> InputKind { self.0.input_kind() }
///     fn embed(&self, inputs: &Tensor) -> Result<Tensor> { self.0.embed(inputs) }
///     fn block(&self, i: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
///         self.0.block(i, x, branch, numerics)
///     }
///     // `[N, tokens, D]` → `[N, D]`: the mean over every token.
///     fn pool(&self, encoded: &Tensor, _numerics: Numerics) -> Result<Tensor> { Ok(encoded.mean(1)?) }
///     fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone> {
///         Ok(Backbone::new(MeanPooled(self.0.with_deltas(deltas)?)))
///     }
///     fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> { self.0.hf_tensors() }
///     fn hf_config_json(&self) -> String { self.0.hf_config_json() }
///     fn peft_layout(&self) -> PeftLayout { self.0.peft_layout() }
/// }
///
/// let vit = checkpoint::load_builtin(&Device::Cpu)?;
/// let InputKind::Image { size, channels } = vit.input_kind() else { unreachable!() };
/// let images = Tensor::randn(0f32, 0.5, (3, channels, size, size), &Device::Cpu)?;
/// let backbone = Backbone::new(MeanPooled(vit));
/// let features = backbone.features(&images, &NoBranch, Numerics::Fused)?;
/// // The same as the mean of the encoder output, which the frozen-state cache holds last.
/// let states = backbone.frozen_block_inputs(&images, 3)?;
/// let want = states[backbone.num_blocks()].mean(1)?;
/// let diff = (features - want)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
/// assert!(diff < 1e-6, "{diff}");
/// # Ok::<(), anyhow::Error>(())
/// ```
pub trait Encoder: Send + Sync + std::fmt::Debug {
    /// The Hugging Face `model_type` (`vit`, `bert`).
    fn model_type(&self) -> &'static str;
    /// The device the weights live on.
    fn device(&self) -> &Device;
    /// Number of transformer blocks that can carry adapters (CLIP: both towers').
    fn num_blocks(&self) -> usize;
    /// Number of blocks on the input's path, `0..input_blocks()`: every block for ViT and
    /// BERT; the vision tower of CLIP, whose text-tower blocks (numbered after them) shape
    /// the classifier instead.
    fn input_blocks(&self) -> usize {
        self.num_blocks()
    }
    /// Which encoder block `block` belongs to, and its index there.
    fn place(&self, block: usize) -> BlockPlace {
        BlockPlace::single(block)
    }
    /// `(out, in)` of a module's weight in block `block`.
    fn module_shape(&self, block: usize, module: TargetModule) -> (usize, usize);
    /// What the encoder reads.
    fn input_kind(&self) -> InputKind;
    /// Errors unless the encoder reads images of side `size` (`--image-size`): by default
    /// only its own size; encoders that interpolate their position embeddings accept others.
    fn check_image_size(&self, size: usize) -> Result<()> {
        match self.input_kind() {
            InputKind::Image { size: own, .. } if own == size => Ok(()),
            InputKind::Image { size: own, .. } => anyhow::bail!(
                "--image-size {size}: the {} backbone reads {own}-pixel images only (its position embeddings are not interpolated); leave --image-size out, or use a DINOv2 backbone",
                self.model_type()
            ),
            InputKind::Text { .. } => {
                anyhow::bail!("--image-size {size}: the {} backbone reads text, not images", self.model_type())
            }
        }
    }
    /// Inputs (one row per example) → hidden state entering block 0.
    fn embed(&self, inputs: &Tensor) -> Result<Tensor>;
    /// Block `index` (`< input_blocks()`) on the hidden state that entered it, with
    /// `branch`'s LoRA outputs added.
    fn block(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor>;
    /// Encoder output (the hidden state after the last block) → features `[N, D]`.
    fn pool(&self, encoded: &Tensor, numerics: Numerics) -> Result<Tensor>;
    /// How [`Encoder::pool`] turns the encoder output into features (the class token unless
    /// the encoder says otherwise).
    fn pooling(&self) -> Pooling {
        Pooling::Cls
    }
    /// A copy that pools with `pooling` (`--pooling`); encoders with one fixed pooling refuse.
    fn with_pooling(&self, pooling: Pooling) -> Result<Backbone> {
        anyhow::bail!(
            "--pooling {}: the {} backbone pools by {} only; leave --pooling out, or use a BERT or DINOv2 backbone",
            pooling.choice_name(),
            self.model_type(),
            self.pooling().choice_name()
        )
    }
    /// `pool(block(index, x))` for the last block on the input's path. Encoders whose pool
    /// reads one token compute only that token's row of the last block in evaluation
    /// (`Numerics::Fused`), with the same values.
    fn last_block_features(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        self.pool(&self.block(index, x, branch, numerics)?, numerics)
    }
    /// Drops what a batch does not need before its blocks run (the BERT encoder cuts the
    /// padding columns every row of the batch has); the identity by default.
    fn trim_batch(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.clone())
    }
    /// A copy whose linear weights hold `W + ΔW` for every module in `deltas`.
    fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone>;
    /// Every weight under its Hugging Face name (as `save_pretrained` writes them).
    fn hf_tensors(&self) -> Result<HashMap<String, Tensor>>;
    /// The `config.json` text that transformers' `from_pretrained` accepts.
    fn hf_config_json(&self) -> String;
    /// How PEFT names this architecture's adapted modules.
    fn peft_layout(&self) -> PeftLayout;
    /// Extra files of a saved checkpoint beyond `config.json` and `model.safetensors`
    /// (relative path, contents), such as the tokenizer and the pooling config.
    fn extra_files(&self) -> Vec<(String, Vec<u8>)> {
        Vec::new()
    }
    /// The `tokenizer.json` that turns task texts (or class prompts) into token ids.
    fn tokenizer(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// The logit scale of a vision-language model's own classifier (CLIP: `exp(logit_scale)`);
    /// `None` for encoders without a text tower, which use a prototype head.
    fn logit_scale(&self) -> Option<f64> {
        None
    }
    /// Class prompts as token ids for [`Encoder::encode_prompts`] (vision-language models).
    fn tokenize_prompts(&self, texts: &[String]) -> Result<Prompts> {
        let _ = texts;
        anyhow::bail!("the {} backbone has no text tower to encode class prompts", self.model_type())
    }
    /// Text-tower embeddings `[K, D]` (unnormalised, in the image features' space) of
    /// `prompts`, with `branch`'s LoRA outputs on the text blocks.
    fn encode_prompts(&self, prompts: &Prompts, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let _ = (prompts, branch, numerics);
        anyhow::bail!("the {} backbone has no text tower to encode class prompts", self.model_type())
    }
}

/// A shared handle to a frozen backbone of any architecture.
#[derive(Clone, Debug)]
pub struct Backbone {
    inner: Arc<dyn Encoder>,
}

impl std::ops::Deref for Backbone {
    type Target = dyn Encoder;
    fn deref(&self) -> &Self::Target {
        &*self.inner
    }
}

impl Backbone {
    /// Wraps an encoder.
    pub fn new(encoder: impl Encoder + 'static) -> Backbone {
        Backbone { inner: Arc::new(encoder) }
    }

    /// Runs blocks `start..input_blocks()` on hidden states that entered block `start`, and
    /// returns the pooled features `[B, D]`.
    pub fn forward_from(&self, start: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let mut h = self.trim_batch(x)?;
        let n = self.input_blocks();
        if start >= n {
            return self.pool(&h, numerics);
        }
        for i in start..n - 1 {
            h = self.block(i, &h, branch, numerics)?;
        }
        self.last_block_features(n - 1, &h, branch, numerics)
    }

    /// Pooled features of an encoder output (alias of [`Encoder::pool`]).
    pub fn cls_feature(&self, encoded: &Tensor, numerics: Numerics) -> Result<Tensor> {
        self.pool(encoded, numerics)
    }

    /// Full forward of inputs to features.
    pub fn features(&self, inputs: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let x = self.embed(inputs)?;
        self.forward_from(0, &x, branch, numerics)
    }

    /// The lowest block on the input's path among `blocks` (`input_blocks()` if none is):
    /// where a forward whose updates touch only `blocks` must start.
    pub fn first_input_block(&self, blocks: impl IntoIterator<Item = usize>) -> usize {
        let n = self.input_blocks();
        blocks.into_iter().filter(|b| *b < n).min().unwrap_or(n)
    }

    /// The frozen hidden state entering every block on the input's path, and the encoder
    /// output, for `inputs` (`input_blocks + 1` tensors with one row per example), computed
    /// in batches of `batch`.
    pub fn frozen_block_inputs(&self, inputs: &Tensor, batch: usize) -> Result<Vec<Tensor>> {
        use rayon::prelude::*;
        let n = inputs.dim(0)?;
        let size = batch.max(1);
        // Batches run in parallel; each yields its states entering every block.
        let per_batch = (0..n)
            .step_by(size)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|start| {
                let h = self.embed(&inputs.narrow(0, start, size.min(n - start))?)?;
                let mut states = vec![h.clone()];
                states.extend(self.frozen_block_outputs(h)?);
                Ok(states)
            })
            .collect::<Result<Vec<_>>>()?;
        stack_batches(per_batch, self.input_blocks() + 1)
    }

    /// The evaluation forward (no branch) of hidden states `h` entering block 0: the state
    /// after each block on the input's path.
    pub fn frozen_block_outputs(&self, mut h: Tensor) -> Result<Vec<Tensor>> {
        let mut states = Vec::with_capacity(self.input_blocks());
        for i in 0..self.input_blocks() {
            h = self.block(i, &h, &NoBranch, Numerics::Fused)?;
            states.push(h.clone());
        }
        Ok(states)
    }
}

/// Per-batch lists of `width` tensors → `width` tensors, each the batches' rows in order.
pub fn stack_batches(per_batch: Vec<Vec<Tensor>>, width: usize) -> Result<Vec<Tensor>> {
    let mut columns: Vec<Vec<Tensor>> = vec![Vec::with_capacity(per_batch.len()); width];
    for states in per_batch {
        for (column, t) in columns.iter_mut().zip(states) {
            column.push(t);
        }
    }
    columns.into_iter().map(|parts| Ok(Tensor::cat(&parts, 0)?)).collect()
}

impl ModuleShapes for Backbone {
    fn num_blocks(&self) -> usize {
        self.inner.num_blocks()
    }
    fn module_shape(&self, block: usize, module: TargetModule) -> (usize, usize) {
        self.inner.module_shape(block, module)
    }
    fn place(&self, block: usize) -> BlockPlace {
        self.inner.place(block)
    }
    fn key_layout(&self) -> PeftLayout {
        self.inner.peft_layout()
    }
}

/// A frozen linear layer: `y = x · Wᵀ + b`.
#[derive(Clone, Debug)]
pub struct LinearWeights {
    /// Weight `[out, in]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
}

/// Position of a module in `TargetModule::ALL`.
pub fn module_index(module: TargetModule) -> usize {
    TargetModule::ALL.iter().position(|m| *m == module).expect("module in ALL")
}

/// `x · Wᵀ + b` of block `block`'s `module` on `x` `[…, in]`, plus `branch`'s LoRA output.
pub fn adapted_linear(
    lw: &LinearWeights,
    block: usize,
    module: TargetModule,
    x: &Tensor,
    branch: &dyn Branch,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let rows: usize = dims[..dims.len() - 1].iter().product();
    let x2d = x.reshape((rows, dims[dims.len() - 1]))?;
    let mut y = super::ops::linear_2d(&x2d, &lw.weight, lw.bias.as_ref())?;
    if let Some(extra) = branch.output(ModuleKey { block, module }, &x2d)? {
        y = (y + extra)?;
    }
    let mut out_dims = dims;
    let last = out_dims.len() - 1;
    out_dims[last] = lw.weight.dim(0)?;
    Ok(y.reshape(out_dims)?)
}

/// Layer norm over the last dimension with the kernels `numerics` names.
pub fn layer_norm(x: &Tensor, ln: &(Tensor, Tensor), eps: f64, numerics: Numerics) -> Result<Tensor> {
    Ok(match numerics {
        Numerics::Differentiable => super::norm::layer_norm_differentiable(x, ln, eps)?,
        Numerics::Fused => candle_nn::ops::layer_norm(&x.contiguous()?, &ln.0, &ln.1, eps as f32)?,
    })
}

/// Softmax over the last dimension with the kernels `numerics` names.
pub fn softmax(x: &Tensor, numerics: Numerics) -> Result<Tensor> {
    match numerics {
        Numerics::Differentiable => super::ops::softmax_last_dim(x),
        Numerics::Fused => Ok(candle_nn::ops::softmax_last_dim(x)?),
    }
}

/// Adds ΔW to `lw`'s weight (the module `key`), checking the shape.
pub fn apply_delta(lw: &mut LinearWeights, key: &ModuleKey, delta: &Matrix, device: &Device) -> Result<()> {
    let (o, i) = lw.weight.dims2()?;
    if delta.shape() != (o, i) {
        anyhow::bail!(
            "adapter module {key} has ΔW of shape {:?} but the backbone's weight is [{o}, {i}]: adapter and backbone do not match",
            delta.shape()
        );
    }
    let d = Tensor::from_slice(&delta.data, (o, i), device)?;
    lw.weight = (&lw.weight + d)?;
    Ok(())
}

/// A block's linear layers, in `TargetModule::ALL` order (for [`add_deltas`]).
pub trait BlockLinears {
    /// The linear layers, mutable.
    fn linears_mut(&mut self) -> &mut [LinearWeights];
}

/// Adds ΔW to the weight of every module in `deltas`, checking blocks and shapes.
pub fn add_deltas<B: BlockLinears>(
    blocks: &mut [B],
    deltas: &BTreeMap<ModuleKey, Matrix>,
    device: &Device,
) -> Result<()> {
    let n = blocks.len();
    for (key, delta) in deltas {
        let block = blocks.get_mut(key.block).ok_or_else(|| missing_block(key, n))?;
        apply_delta(&mut block.linears_mut()[module_index(key.module)], key, delta, device)?;
    }
    Ok(())
}

/// `(out, in)` of a module in a block of width `d` and MLP width `m`.
pub fn linear_shape(d: usize, m: usize, module: TargetModule) -> (usize, usize) {
    match module {
        TargetModule::Fc1 => (m, d),
        TargetModule::Fc2 => (d, m),
        _ => (d, d),
    }
}

/// The error for an adapter module whose block the backbone does not have.
pub fn missing_block(key: &ModuleKey, blocks: usize) -> anyhow::Error {
    anyhow::anyhow!(
        "adapter module {key} is for block {} but the backbone has {blocks} blocks: adapter and backbone do not match",
        key.block
    )
}
