//! DINOv2 (Hugging Face `Dinov2Model`, `model_type: dinov2`): a pre-LN ViT with a class
//! token, per-channel layer scale on both residual branches and a final layer norm, whose
//! position embeddings are resized bicubically to the input's patch grid exactly as
//! transformers does (`interpolate_pos_encoding`). Features are the class token after the
//! final layer norm (`pooler_output`), or with `--pooling mean` the mean of the patch tokens
//! after it. Images arrive in `[−1, 1]` and are normalised with the
//! folder's `preprocessor_config.json` mean and std (ImageNet's by default).
//!
//! The file holds the architecture's names too ([`NAMES`]): the checkpoint keeps transformers
//! 4's names (`encoder.layer.{i}.attention.attention.query`, `mlp.fc1`), transformers 5 and
//! PEFT name the attention modules `attention.q_proj` … `attention.o_proj`.

use super::branch::Branch;
use super::checkpoint::{linear_tensors, Architecture, HfTensors};
use super::dinov2_config::{processor, Dinov2Config};
use super::encoder::{add_deltas, layer_norm, linear_shape, Backbone, Encoder, InputKind, Numerics};
use super::patch::class_and_patch_tokens;
use super::pooling::Pooling;
use super::pre_ln::{PreLnBlock, PreLnLayer, Rows};
use crate::adapter::names::{EncoderNames, Spelling};
use crate::adapter::{ModuleKey, PeftLayout, TargetModule};
use crate::linalg::Matrix;
use anyhow::{bail, Result};
use candle_core::{Device, IndexOp, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// `Dinov2Model`'s names: PEFT's (transformers 5) first, then the checkpoint's (transformers 4).
pub static NAMES: EncoderNames = EncoderNames {
    class: "Dinov2Model",
    class_prefix: "Dinov2",
    backbone_hint: "a DINOv2 folder (--backbone DIR with model_type dinov2)",
    model_prefix: "dinov2.",
    towers: &[""],
    checkpoint: CHECKPOINT,
    adapter: &[
        Spelling {
            layers: "encoder.layer",
            modules: [
                "attention.q_proj",
                "attention.k_proj",
                "attention.v_proj",
                "attention.o_proj",
                "mlp.fc1",
                "mlp.fc2",
            ],
        },
        CHECKPOINT,
    ],
    target_modules: ["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"],
};

/// The checkpoint's (and transformers 4's) module names.
const CHECKPOINT: Spelling = Spelling {
    layers: "encoder.layer",
    modules: [
        "attention.attention.query",
        "attention.attention.key",
        "attention.attention.value",
        "attention.output.dense",
        "mlp.fc1",
        "mlp.fc2",
    ],
};

/// The `dinov2` model type: [`NAMES`] and the folder reader.
pub static ARCHITECTURE: Architecture = Architecture {
    model_type: "dinov2",
    names: &NAMES,
    load: |dir, text, tensors, origin| Ok(Backbone::new(Dinov2::load(dir, text, tensors, origin)?)),
};

/// A frozen DINOv2 encoder.
#[derive(Clone, Debug)]
pub struct Dinov2 {
    /// Architecture.
    pub config: Dinov2Config,
    /// The `config.json` text it was read from (written back unchanged).
    config_text: String,
    /// `embeddings.cls_token` `[1, 1, D]`.
    pub cls_token: Tensor,
    /// `embeddings.mask_token` `[1, D]` (unused in the forward; kept for saving).
    mask_token: Option<Tensor>,
    /// `embeddings.position_embeddings` `[1, 1 + g², D]`, class position first.
    pub position_embeddings: Tensor,
    /// Patch projection weight flattened to `[D, C·p·p]`.
    pub patch_weight: Tensor,
    /// Patch projection bias `[D]`.
    pub patch_bias: Tensor,
    /// The transformer blocks.
    pub blocks: Vec<PreLnBlock>,
    /// Final `layernorm` weight and bias.
    pub final_ln: (Tensor, Tensor),
    /// `(scale, shift)` `[1, C, 1, 1]`: `((x + 1)/2 − mean)/std = x·scale + shift`.
    normalise: (Tensor, Tensor),
    /// The image side tasks are made at (`crop_size` of `preprocessor_config.json`, else
    /// `image_size` of `config.json`).
    input_size: usize,
    /// The folder the weights came from (its `preprocessor_config.json` is saved along).
    source: Option<PathBuf>,
    /// Class token (`pooler_output`, the default) or the mean of the patch tokens.
    pooling: Pooling,
}

impl Dinov2 {
    /// Reads a `Dinov2Model` folder (or `Dinov2ForImageClassification`, prefix `dinov2.`):
    /// `config_text` is its `config.json`, `tensors` its weights.
    pub fn load(dir: &Path, config_text: &str, tensors: HashMap<String, Tensor>, origin: &str) -> Result<Dinov2> {
        let config = Dinov2Config::parse(config_text, &dir.join("config.json"))?;
        let processor = processor(dir, config.num_channels)?;
        let mut model =
            Dinov2::from_hf_tensors(&config, config_text, tensors, origin, &processor.mean, &processor.std)?;
        model.source = Some(dir.to_path_buf());
        if let Some(size) = processor.size {
            model.set_input_size(size)?;
        }
        Ok(model)
    }

    /// Sets the image side tasks are made at (the position embeddings are interpolated to
    /// its patch grid); errors when no patch fits.
    pub fn set_input_size(&mut self, size: usize) -> Result<()> {
        if size < self.config.patch_size {
            bail!("image size {size} holds no {p}x{p} patch of the DINOv2 backbone", p = self.config.patch_size);
        }
        self.input_size = size;
        Ok(())
    }

    /// Builds the encoder from `Dinov2Model` weights, normalising images with `mean`, `std`.
    pub fn from_hf_tensors(
        config: &Dinov2Config,
        config_text: &str,
        tensors: HashMap<String, Tensor>,
        origin: &str,
        mean: &[f64],
        std: &[f64],
    ) -> Result<Dinov2> {
        let mut w = HfTensors::new(tensors, origin, "Dinov2Model");
        w.strip_prefix_if_missing(NAMES.model_prefix, "embeddings.cls_token");
        let (d, m) = (config.hidden_size, config.mlp_size());
        let (c, p, g) = (config.num_channels, config.patch_size, config.grid());
        let cls_token = w.take("embeddings.cls_token", &[1, 1, d])?;
        let mask_token = if config.use_mask_token { Some(w.take("embeddings.mask_token", &[1, d])?) } else { None };
        let position_embeddings = w.take("embeddings.position_embeddings", &[1, 1 + g * g, d])?;
        let patch_weight =
            w.take("embeddings.patch_embeddings.projection.weight", &[d, c, p, p])?.reshape((d, c * p * p))?;
        let patch_bias = w.take("embeddings.patch_embeddings.projection.bias", &[d])?;
        // save_pretrained keeps the checkpoint names; a file saved from transformers 5's
        // in-memory state dict has the PEFT names instead.
        let spelling = if w.contains(&format!("{}.0.{}.weight", CHECKPOINT.layers, NAMES.written().modules[0])) {
            NAMES.written()
        } else {
            &NAMES.checkpoint
        };
        let mut blocks = Vec::new();
        for i in 0..config.num_hidden_layers {
            let pre = format!("{}.{i}", spelling.layers);
            let linears = w.block_linears(
                |module| NAMES.module_name(spelling, 0, i, module),
                |module| linear_shape(d, m, module),
                |_| true,
            )?;
            blocks.push(PreLnBlock {
                ln1: w.layer_norm(&format!("{pre}.norm1"), d)?,
                ln2: w.layer_norm(&format!("{pre}.norm2"), d)?,
                layer_scale: Some((
                    w.take(&format!("{pre}.layer_scale1.lambda1"), &[d])?,
                    w.take(&format!("{pre}.layer_scale2.lambda1"), &[d])?,
                )),
                linears,
            });
        }
        let final_ln = w.layer_norm("layernorm", d)?;
        w.refuse_extra_blocks(&format!("{}.", spelling.layers))?;
        let device = cls_token.device().clone();
        let scale: Vec<f32> = std.iter().map(|s| (0.5 / s) as f32).collect();
        let shift: Vec<f32> = mean.iter().zip(std).map(|(m, s)| ((0.5 - m) / s) as f32).collect();
        let normalise =
            (Tensor::from_vec(scale, (1, c, 1, 1), &device)?, Tensor::from_vec(shift, (1, c, 1, 1), &device)?);
        Ok(Dinov2 {
            config: config.clone(),
            config_text: config_text.to_string(),
            cls_token,
            mask_token,
            position_embeddings,
            patch_weight,
            patch_bias,
            blocks,
            final_ln,
            normalise,
            input_size: config.image_size,
            source: None,
            pooling: Pooling::Cls,
        })
    }

    /// Block `index` as a [`PreLnLayer`] with layer scale.
    fn layer(&self, index: usize) -> PreLnLayer<'_> {
        let c = &self.config;
        self.blocks[index].layer(index, c.layer_norm_eps, c.num_attention_heads, None, &super::ops::gelu_erf)
    }

    /// The position embeddings for an input of `height` × `width` pixels, `[1, 1 + gh·gw, D]`:
    /// the checkpoint's when the grid is the same and the input square, else the patch
    /// positions resized bicubically to the input's grid (`Dinov2Embeddings.interpolate_pos_encoding`).
    pub fn positions_for(&self, height: usize, width: usize) -> Result<Tensor> {
        let (p, g, d) = (self.config.patch_size, self.config.grid(), self.config.hidden_size);
        let (gh, gw) = (height / p, width / p);
        if gh * gw == g * g && height == width {
            return Ok(self.position_embeddings.clone());
        }
        let patch: Vec<f32> = self.position_embeddings.i((0, 1.., ..))?.flatten_all()?.to_vec1()?;
        let resized = bicubic_resize(&patch, (g, g), (gh, gw), d);
        let resized = Tensor::from_vec(resized, (1, gh * gw, d), self.position_embeddings.device())?;
        Ok(Tensor::cat(&[&self.position_embeddings.i((.., ..1, ..))?, &resized], 1)?)
    }

    /// Already normalised `pixel_values` `[B, C, H, W]` (any size holding a patch) → the hidden
    /// state entering block 0 (what `Dinov2Embeddings` computes).
    pub fn embed_pixels(&self, pixels: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let (_, ch, h, w) = pixels.dims4()?;
        let p = c.patch_size;
        let (gh, gw) = (h / p, w / p);
        if ch != c.num_channels || gh == 0 || gw == 0 {
            bail!(
                "images of shape [{ch}, {h}, {w}] but the DINOv2 backbone reads {} channels of at least {p} pixels",
                c.num_channels
            );
        }
        // A stride-p convolution drops the pixels beyond the last whole patch.
        let pixels = pixels.narrow(2, 0, gh * p)?.narrow(3, 0, gw * p)?;
        let x = class_and_patch_tokens(&pixels, p, &self.patch_weight, Some(&self.patch_bias), &self.cls_token)?;
        Ok(x.broadcast_add(&self.positions_for(h, w)?)?)
    }

    /// The final layer norm of every token of an encoder output (`last_hidden_state`).
    pub fn last_hidden_state(&self, encoded: &Tensor) -> Result<Tensor> {
        layer_norm(encoded, &self.final_ln, self.config.layer_norm_eps, Numerics::Fused)
    }
}

impl Encoder for Dinov2 {
    fn model_type(&self) -> &'static str {
        "dinov2"
    }

    fn device(&self) -> &Device {
        self.cls_token.device()
    }

    fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    fn module_shape(&self, _block: usize, module: TargetModule) -> (usize, usize) {
        linear_shape(self.config.hidden_size, self.config.mlp_size(), module)
    }

    fn input_kind(&self) -> InputKind {
        InputKind::Image { size: self.input_size, channels: self.config.num_channels }
    }

    /// Any size holding one patch: the position embeddings are interpolated to its grid.
    fn check_image_size(&self, size: usize) -> Result<()> {
        if size < self.config.patch_size {
            bail!(
                "--image-size {size} holds no {p}x{p} patch of the DINOv2 backbone; use at least {p}",
                p = self.config.patch_size
            );
        }
        Ok(())
    }

    /// Images `[B, C, H, W]` in `[−1, 1]` → the processor's normalisation → [`Dinov2::embed_pixels`].
    fn embed(&self, images: &Tensor) -> Result<Tensor> {
        let x = images.broadcast_mul(&self.normalise.0)?.broadcast_add(&self.normalise.1)?;
        self.embed_pixels(&x)
    }

    fn block(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        self.layer(index).forward(x, branch, numerics, Rows::All)
    }

    /// In evaluation with class-token pooling the last block computes only the class row, the
    /// one `pool` reads.
    fn last_block_features(&self, index: usize, x: &Tensor, branch: &dyn Branch, numerics: Numerics) -> Result<Tensor> {
        let rows = match self.pooling {
            Pooling::Cls => Rows::FirstToken,
            Pooling::Mean => Rows::All,
        };
        self.pool(&self.layer(index).forward(x, branch, numerics, rows)?, numerics)
    }

    /// `[B, T, D]` → `[B, D]`: the class token after the final layer norm (`pooler_output`),
    /// or the mean of the patch tokens after it (as `Dinov2ForImageClassification` computes the
    /// second half of its features).
    fn pool(&self, encoded: &Tensor, numerics: Numerics) -> Result<Tensor> {
        let eps = self.config.layer_norm_eps;
        match self.pooling {
            Pooling::Cls => {
                let cls = encoded.i((.., 0, ..))?.contiguous()?;
                layer_norm(&cls, &self.final_ln, eps, numerics)
            }
            Pooling::Mean => {
                let tokens = encoded.dim(1)?;
                let patches = encoded.narrow(1, 1, tokens - 1)?.contiguous()?;
                Ok(layer_norm(&patches, &self.final_ln, eps, numerics)?.mean(1)?)
            }
        }
    }

    fn pooling(&self) -> Pooling {
        self.pooling
    }

    fn with_pooling(&self, pooling: Pooling) -> Result<Backbone> {
        Ok(Backbone::new(Dinov2 { pooling, ..self.clone() }))
    }

    fn with_deltas(&self, deltas: &BTreeMap<ModuleKey, Matrix>) -> Result<Backbone> {
        let mut out = self.clone();
        add_deltas(&mut out.blocks, deltas, self.device())?;
        Ok(Backbone::new(out))
    }

    fn hf_tensors(&self) -> Result<HashMap<String, Tensor>> {
        let c = &self.config;
        let mut out = HashMap::new();
        let mut put = |name: String, t: &Tensor| {
            out.insert(name, t.clone());
        };
        put("embeddings.cls_token".into(), &self.cls_token);
        if let Some(mask) = &self.mask_token {
            put("embeddings.mask_token".into(), mask);
        }
        put("embeddings.position_embeddings".into(), &self.position_embeddings);
        let patch = self.patch_weight.reshape((c.hidden_size, c.num_channels, c.patch_size, c.patch_size))?;
        put("embeddings.patch_embeddings.projection.weight".into(), &patch);
        put("embeddings.patch_embeddings.projection.bias".into(), &self.patch_bias);
        for (i, b) in self.blocks.iter().enumerate() {
            let pre = NAMES.checkpoint_layers(0);
            for (name, tensor) in linear_tensors(&NAMES, 0, i, &b.linears) {
                put(name, &tensor);
            }
            for (name, (weight, bias)) in [("norm1", &b.ln1), ("norm2", &b.ln2)] {
                put(format!("{pre}.{i}.{name}.weight"), weight);
                put(format!("{pre}.{i}.{name}.bias"), bias);
            }
            if let Some((first, second)) = &b.layer_scale {
                put(format!("{pre}.{i}.layer_scale1.lambda1"), first);
                put(format!("{pre}.{i}.layer_scale2.lambda1"), second);
            }
        }
        put("layernorm.weight".into(), &self.final_ln.0);
        put("layernorm.bias".into(), &self.final_ln.1);
        Ok(out)
    }

    fn hf_config_json(&self) -> String {
        self.config_text.clone()
    }

    fn peft_layout(&self) -> PeftLayout {
        PeftLayout::single(&NAMES)
    }

    /// The folder's `preprocessor_config.json`, when it has one.
    fn extra_files(&self) -> Vec<(String, Vec<u8>)> {
        let name = "preprocessor_config.json";
        let Some(dir) = &self.source else { return Vec::new() };
        std::fs::read(dir.join(name)).map(|bytes| vec![(name.to_string(), bytes)]).unwrap_or_default()
    }
}

/// PyTorch's bicubic kernel weights (`A = −0.75`) of the four taps around fraction `t`.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let near = |x: f32| ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    let far = |x: f32| ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    [far(t + 1.0), near(t), near(1.0 - t), far(2.0 - t)]
}

/// For each of `out` positions along an axis of `len` inputs: the four input indices (clamped
/// to the axis) and their weights, as `interpolate(mode="bicubic", align_corners=False)`
/// computes them (source `(o + ½)·len/out − ½`, not clamped below zero).
fn axis_taps(len: usize, out: usize) -> Vec<([usize; 4], [f32; 4])> {
    let scale = len as f32 / out as f32;
    (0..out)
        .map(|o| {
            let src = scale * (o as f32 + 0.5) - 0.5;
            let floor = src.floor();
            let index = (floor as i64).min(len as i64 - 1);
            let t = (src - index as f32).clamp(0.0, 1.0);
            let at = |k: i64| (index + k).clamp(0, len as i64 - 1) as usize;
            ([at(-1), at(0), at(1), at(2)], cubic_weights(t))
        })
        .collect()
}

/// Resizes a `from.0 × from.1` grid of `d`-vectors (row-major `[h·w, d]`) to `to.0 × to.1`
/// bicubically, as PyTorch's `interpolate(mode="bicubic", align_corners=False)` on `[1, d, h, w]`.
pub fn bicubic_resize(grid: &[f32], from: (usize, usize), to: (usize, usize), d: usize) -> Vec<f32> {
    let (rows, cols) = (axis_taps(from.0, to.0), axis_taps(from.1, to.1));
    let mut out = vec![0f32; to.0 * to.1 * d];
    for (oy, (iy, wy)) in rows.iter().enumerate() {
        for (ox, (ix, wx)) in cols.iter().enumerate() {
            let dst = &mut out[(oy * to.1 + ox) * d..(oy * to.1 + ox + 1) * d];
            for (c, slot) in dst.iter_mut().enumerate() {
                let mut acc = 0f32;
                for (y, wy) in iy.iter().zip(wy) {
                    let mut row = 0f32;
                    for (x, wx) in ix.iter().zip(wx) {
                        row += wx * grid[(y * from.1 + x) * d + c];
                    }
                    acc += wy * row;
                }
                *slot = acc;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bicubic_keeps_constants_and_linear_ramps_and_is_the_identity_at_the_same_size() {
        // The cubic weights sum to one, so a constant grid stays constant (up to f32 rounding).
        let constant = vec![2.5f32; 5 * 5];
        let resized = bicubic_resize(&constant, (5, 5), (3, 7), 1);
        assert!(resized.iter().all(|v| (v - 2.5).abs() < 1e-5), "{resized:?}");
        // At the same size every tap weight is (0, 1, 0, 0).
        let grid: Vec<f32> = (0..4 * 4 * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(bicubic_resize(&grid, (4, 4), (4, 4), 2), grid);
        // Away from the clamped border, a linear ramp is reproduced exactly (cubic convolution
        // is exact on linear functions): 8 → 4 samples x = 2o + ½ for o = 1, 2.
        let ramp: Vec<f32> = (0..8 * 8).map(|i| (i % 8) as f32).collect();
        let out = bicubic_resize(&ramp, (8, 8), (4, 4), 1);
        assert!((out[1] - 2.5).abs() < 1e-5 && (out[2] - 4.5).abs() < 1e-5, "{out:?}");
    }
}
