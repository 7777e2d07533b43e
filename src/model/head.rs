//! The classifier heads. [`PrototypeHead`]: normalised class-mean features of the frozen
//! backbone on the training shots, and a fixed logit scale (the analogue of CLIP-LoRA's
//! text classifier for single-encoder backbones). [`PromptHead`]: CLIP-LoRA's own
//! classifier, the text tower's normalised embeddings of one prompt per class, recomputed
//! through the text adapters whenever they change. Adapters are the only trained
//! parameters either way.

use super::branch::Branch;
use super::encoder::{Backbone, Numerics};
use anyhow::{bail, Result};
use candle_core::{DType, Tensor, D};

/// Cosine-similarity classifier with fixed prototypes.
#[derive(Clone, Debug)]
pub struct PrototypeHead {
    /// L2-normalised class prototypes `[K, D]`.
    pub prototypes: Tensor,
    /// Fixed logit scale.
    pub logit_scale: f64,
}

/// Rows divided by their L2 norm.
pub fn l2_normalize(x: &Tensor) -> Result<Tensor> {
    let norm = x.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    Ok(x.broadcast_div(&norm)?)
}

impl PrototypeHead {
    /// Prototypes from frozen features `[N, D]` and labels: the normalised mean of the
    /// normalised features of each class.
    pub fn from_features(features: &Tensor, labels: &[u32], num_classes: usize, logit_scale: f64) -> Result<Self> {
        let feats = l2_normalize(features)?;
        let (n, d) = feats.dims2()?;
        if n != labels.len() {
            bail!("head: {n} features but {} labels", labels.len());
        }
        let rows: Vec<f32> = feats.flatten_all()?.to_vec1()?;
        let mut sums = vec![0f64; num_classes * d];
        let mut counts = vec![0usize; num_classes];
        for (i, &y) in labels.iter().enumerate() {
            let y = y as usize;
            if y >= num_classes {
                bail!("head: label {y} out of range for {num_classes} classes");
            }
            counts[y] += 1;
            for j in 0..d {
                sums[y * d + j] += rows[i * d + j] as f64;
            }
        }
        if let Some(k) = counts.iter().position(|c| *c == 0) {
            bail!("head: class {k} has no training example; every class needs at least one shot");
        }
        let means: Vec<f32> = sums.iter().enumerate().map(|(i, s)| (s / counts[i / d] as f64) as f32).collect();
        let protos = Tensor::from_vec(means, (num_classes, d), features.device())?;
        Ok(Self { prototypes: l2_normalize(&protos)?, logit_scale })
    }
}

/// Tokenised class prompts: token ids `[K, L]` (rows padded after the text) and the
/// position each row is pooled at (CLIP: its end-of-text token).
#[derive(Clone, Debug)]
pub struct Prompts {
    /// The prompt texts, one per class.
    pub texts: Vec<String>,
    /// Token ids `[K, L]` (`u32`).
    pub ids: Tensor,
    /// Pooling position of every row `[K]` (`u32`).
    pub pool_at: Tensor,
}

/// The default CLIP-LoRA prompt template; `{}` is replaced by the class name.
pub const DEFAULT_TEMPLATE: &str = "a photo of a {}.";

/// The prompt of one class: `template` with `{}` replaced by the class name, underscores
/// as spaces (`dotted_lines` → "a photo of a dotted lines.").
pub fn class_prompt(template: &str, class_name: &str) -> String {
    template.replace("{}", &class_name.replace('_', " "))
}

/// A text-prompt classifier: the (adapted) text tower's embeddings of the class prompts,
/// L2-normalised, times the model's logit scale.
#[derive(Clone, Debug)]
pub struct PromptHead {
    /// The class prompts.
    pub prompts: Prompts,
    /// Logit scale (CLIP's `exp(logit_scale)`).
    pub logit_scale: f64,
}

/// How a batch of features becomes class logits.
#[derive(Clone, Debug)]
pub enum Head {
    /// Fixed prototypes (ViT, BERT).
    Prototype(PrototypeHead),
    /// Text prompts through the text tower (CLIP).
    Prompts(PromptHead),
}

/// The class weights of a head for one model: logits = scale · cos(feature, weight row).
#[derive(Clone, Debug)]
pub struct Classifier {
    /// L2-normalised class weights `[K, D]`.
    pub weights: Tensor,
    /// Logit scale.
    pub scale: f64,
}

impl Classifier {
    /// Logits `[N, K]` of features `[N, D]`.
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        Ok((l2_normalize(features)?.matmul(&self.weights.t()?)? * self.scale)?)
    }
}

impl Head {
    /// The classifier of `model` (a backbone with any updates merged) with `branch`'s LoRA
    /// outputs on: the fixed prototypes, or the prompts encoded by `model`'s text tower.
    pub fn classifier(&self, model: &Backbone, branch: &dyn Branch, numerics: Numerics) -> Result<Classifier> {
        match self {
            Head::Prototype(p) => Ok(Classifier { weights: p.prototypes.clone(), scale: p.logit_scale }),
            Head::Prompts(p) => Ok(Classifier {
                weights: l2_normalize(&model.encode_prompts(&p.prompts, branch, numerics)?)?,
                scale: p.logit_scale,
            }),
        }
    }
}

/// Mean cross-entropy and accuracy of logits `[N, K]` against labels.
pub fn loss_and_accuracy(logits: &Tensor, labels: &Tensor) -> Result<(f64, f64)> {
    let loss = candle_nn::loss::cross_entropy(logits, labels)?.to_scalar::<f32>()? as f64;
    let n = labels.dim(0)?;
    let pred = logits.argmax(D::Minus1)?;
    let correct = pred.eq(labels)?.to_dtype(DType::F32)?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((loss, correct / n as f64))
}
