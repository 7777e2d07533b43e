//! The fixed classifier head: normalised class-mean features of the frozen
//! backbone on the training shots, and a fixed logit scale (the analogue of
//! CLIP-LoRA's fixed text classifier). Adapters are the only trained parameters.

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

    /// Logits `[N, K]` = scale · cos(feature, prototype).
    pub fn logits(&self, features: &Tensor) -> Result<Tensor> {
        Ok((l2_normalize(features)?.matmul(&self.prototypes.t()?)? * self.logit_scale)?)
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
