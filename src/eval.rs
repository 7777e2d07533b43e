//! Evaluation of a backbone with arbitrary weight updates on a fixed image set.
//!
//! The backbone is frozen, so every block below the lowest block an update touches
//! computes exactly what the frozen backbone computes. The evaluator caches the
//! frozen hidden state entering every block once, merges ΔW into the weights
//! (so an adapted forward costs what the frozen one costs), and starts each
//! forward at the lowest modified block.

use crate::adapter::ModuleKey;
use crate::linalg::Matrix;
use crate::model::head::{loss_and_accuracy, Head};
use crate::model::{Backbone, NoBranch, Numerics};
use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Dense weight updates ΔW per adapted module (merged adapters, interpolations, pruned updates).
pub type Deltas = BTreeMap<ModuleKey, Matrix>;

/// `x + y` module by module (a module present in one map only is copied unchanged), e.g. a
/// dense residual folded into the frozen weights plus an adapter's updates on top of it.
pub fn sum_deltas(x: &Deltas, y: &Deltas) -> Deltas {
    let mut out = x.clone();
    for (key, d) in y {
        out.entry(*key).and_modify(|m| *m = m.add(d)).or_insert_with(|| d.clone());
    }
    out
}

/// Loss and accuracy of one evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Mean cross-entropy.
    pub loss: f64,
    /// Top-1 accuracy in [0, 1].
    pub accuracy: f64,
}

/// What one evaluation gave on each example, in the order of the evaluator's set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Examples {
    /// True class of each example.
    pub labels: Vec<u32>,
    /// Predicted class (the first largest logit).
    pub predictions: Vec<u32>,
    /// Cross-entropy of each example, `logsumexp(z) − z_label`.
    pub losses: Vec<f64>,
}

impl Examples {
    /// Per-example outcomes of logits `[N, K]` against `labels` (N of them). Errors when the
    /// shapes disagree or a label is not a class.
    pub fn of(logits: &Tensor, labels: &[u32]) -> Result<Examples> {
        let rows: Vec<Vec<f32>> = logits.to_dtype(candle_core::DType::F32)?.to_vec2()?;
        if rows.len() != labels.len() {
            anyhow::bail!("internal: {} logit rows for {} labels", rows.len(), labels.len());
        }
        let mut out = Examples { labels: labels.to_vec(), ..Examples::default() };
        for (z, &y) in rows.iter().zip(labels) {
            let Some(&zy) = z.get(y as usize) else {
                anyhow::bail!("label {y} is not one of the {} classes; check the task's labels", z.len())
            };
            let (mut best, mut max) = (0, f32::NEG_INFINITY);
            for (c, &v) in z.iter().enumerate() {
                if v > max {
                    (best, max) = (c, v);
                }
            }
            let lse = f64::from(max) + z.iter().map(|&v| (f64::from(v) - f64::from(max)).exp()).sum::<f64>().ln();
            out.predictions.push(best as u32);
            out.losses.push(lse - f64::from(zy));
        }
        Ok(out)
    }

    /// True where the prediction is the label.
    pub fn correct(&self) -> Vec<bool> {
        self.labels.iter().zip(&self.predictions).map(|(y, p)| y == p).collect()
    }
}

/// A frozen backbone, a head and an image set with cached frozen block inputs.
pub struct Evaluator {
    backbone: Backbone,
    head: Head,
    /// The updates the cached block inputs were computed with (empty: the frozen backbone).
    base: Deltas,
    block_inputs: Vec<Tensor>,
    labels: Tensor,
    batch: usize,
}

impl Evaluator {
    /// Builds the cache of frozen block inputs for `images` `[N, C, H, W]`.
    pub fn new(backbone: &Backbone, head: &Head, images: &Tensor, labels: &[u32], batch: usize) -> Result<Self> {
        let block_inputs = backbone.frozen_block_inputs(images, batch)?;
        let labels = Tensor::from_slice(labels, labels.len(), backbone.device())?;
        Ok(Self { backbone: backbone.clone(), head: head.clone(), base: Deltas::new(), block_inputs, labels, batch })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.dims()[0]
    }

    /// True when the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The frozen hidden states entering block `i` (`i = input_blocks` is the encoder output).
    pub fn block_input(&self, i: usize) -> &Tensor {
        &self.block_inputs[i]
    }

    /// True when the cache holds the frozen backbone's activations.
    pub fn is_frozen(&self) -> bool {
        self.base.is_empty()
    }

    /// The labels as a tensor.
    pub fn labels(&self) -> &Tensor {
        &self.labels
    }

    /// The frozen backbone.
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The head.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Loss and accuracy with `deltas` merged into the frozen weights. The forward starts at
    /// the lowest block where `deltas` differ from the updates the cache was built with.
    pub fn evaluate(&self, deltas: &Deltas) -> Result<Metrics> {
        let start = self.first_differing_block(deltas);
        let merged = self.backbone.with_deltas(deltas)?;
        self.run_from(&merged, start)
    }

    /// [`Evaluator::evaluate`] plus what the model gave on each example (for per-example
    /// predictions and item-level intervals). The metrics are the same bits as `evaluate`'s.
    pub fn evaluate_examples(&self, deltas: &Deltas) -> Result<(Metrics, Examples)> {
        let start = self.first_differing_block(deltas);
        let merged = self.backbone.with_deltas(deltas)?;
        let logits = self.logits_from(&merged, start)?;
        let labels: Vec<u32> = self.labels.to_vec1()?;
        Ok((self.metrics(&logits)?, Examples::of(&logits, &labels)?))
    }

    /// The lowest block on the input's path where `deltas` differ from this evaluator's base
    /// (`input_blocks` if none does: only the head, if anything, changes).
    pub fn first_differing_block(&self, deltas: &Deltas) -> usize {
        let differs = |k: &ModuleKey| deltas.get(k) != self.base.get(k);
        self.backbone.first_input_block(deltas.keys().chain(self.base.keys()).filter(|k| differs(k)).map(|k| k.block))
    }

    /// Loss and accuracy of `model` (weights already merged), starting at block `start`
    /// from the cached inputs (valid when `model` equals the cache's model below `start`).
    pub fn run_from(&self, model: &Backbone, start: usize) -> Result<Metrics> {
        self.metrics(&self.logits_from(model, start)?)
    }

    /// Logits `[N, K]` of `model` from cached block `start`.
    pub fn logits_from(&self, model: &Backbone, start: usize) -> Result<Tensor> {
        let classifier = self.head.classifier(model, &NoBranch, Numerics::Fused)?;
        let parts = self
            .batches(start)?
            .par_iter()
            .map(|x| classifier.logits(&model.forward_from(start, x, &NoBranch, Numerics::Fused)?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The cached hidden states entering block `block`, split into evaluation batches.
    fn batches(&self, block: usize) -> Result<Vec<Tensor>> {
        let (n, size) = (self.len(), self.batch.max(1));
        (0..n).step_by(size).map(|i| Ok(self.block_inputs[block].narrow(0, i, size.min(n - i))?)).collect()
    }

    /// Loss and accuracy of logits `[N, K]` against this set's labels.
    fn metrics(&self, logits: &Tensor) -> Result<Metrics> {
        let (loss, accuracy) = loss_and_accuracy(logits, &self.labels)?;
        Ok(Metrics { loss, accuracy })
    }
}

impl Evaluator {
    /// Metrics of the `num_blocks` models that use `prefix` updates in blocks `0..=ℓ` and
    /// `suffix` updates above ℓ, one per ℓ (the cumulative layer-wise sweep). On the input's
    /// path the hidden state after the prefix blocks is shared across ℓ, so the sweep costs
    /// `n + n(n−1)/2` block passes instead of `n²`; the blocks after it (CLIP's text tower)
    /// change only the classifier and are evaluated one by one.
    pub fn prefix_sweep(&self, prefix: &Deltas, suffix: &Deltas) -> Result<Vec<Metrics>> {
        let nin = self.backbone.input_blocks();
        let (head_model, tail_model) = (self.backbone.with_deltas(prefix)?, self.backbone.with_deltas(suffix)?);
        let classifier = self.head.classifier(&tail_model, &NoBranch, Numerics::Fused)?;
        let per_batch = self
            .batches(0)?
            .into_par_iter()
            .map(|mut h| {
                let mut logits = Vec::with_capacity(nin);
                for l in 0..nin {
                    h = head_model.block(l, &h, &NoBranch, Numerics::Fused)?;
                    let feats = tail_model.forward_from(l + 1, &h, &NoBranch, Numerics::Fused)?;
                    logits.push(classifier.logits(&feats)?);
                }
                Ok(logits)
            })
            .collect::<Result<Vec<_>>>()?;
        let logits = crate::model::encoder::stack_batches(per_batch, nin)?;
        let mut out: Vec<Metrics> = logits.iter().map(|l| self.metrics(l)).collect::<Result<_>>()?;
        for l in nin..self.backbone.num_blocks() {
            let below = prefix.iter().filter(|(k, _)| k.block <= l);
            let above = suffix.iter().filter(|(k, _)| k.block > l);
            out.push(self.evaluate(&below.chain(above).map(|(k, d)| (*k, d.clone())).collect())?);
        }
        Ok(out)
    }
}

impl Evaluator {
    /// An evaluator on the examples `idx` (indices into this set, in the order given), sharing
    /// this evaluator's backbone, head and cached block inputs (e.g. one federated client's
    /// training shots). Errors when an index is out of range.
    pub fn subset(&self, idx: &[usize]) -> Result<Evaluator> {
        if let Some(bad) = idx.iter().find(|&&i| i >= self.len()) {
            anyhow::bail!(
                "example index {bad} is outside this set of {} examples; select existing examples",
                self.len()
            );
        }
        let ids: Vec<u32> = idx.iter().map(|&i| i as u32).collect();
        let ids = Tensor::from_vec(ids, idx.len(), self.labels.device())?;
        let block_inputs =
            self.block_inputs.iter().map(|t| Ok(t.index_select(&ids, 0)?)).collect::<Result<Vec<_>>>()?;
        Ok(Evaluator {
            backbone: self.backbone.clone(),
            head: self.head.clone(),
            base: self.base.clone(),
            block_inputs,
            labels: self.labels.index_select(&ids, 0)?,
            batch: self.batch,
        })
    }

    /// An evaluator on the same images whose cached block inputs are those of the backbone
    /// with `base` merged (e.g. seed A's adapter for layer-wise interpolation): forwards that
    /// differ from `base` only at block ℓ and above can start at ℓ.
    pub fn with_base(&self, base: &Deltas) -> Result<Evaluator> {
        let merged = self.backbone.with_deltas(base)?;
        let per_batch =
            self.batches(0)?.into_par_iter().map(|h| merged.frozen_block_outputs(h)).collect::<Result<Vec<_>>>()?;
        let mut inputs = vec![self.block_inputs[0].clone()];
        inputs.extend(crate::model::encoder::stack_batches(per_batch, merged.input_blocks())?);
        Ok(Evaluator {
            backbone: self.backbone.clone(),
            head: self.head.clone(),
            base: base.clone(),
            block_inputs: inputs,
            labels: self.labels.clone(),
            batch: self.batch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::TargetModule::{Query, Value};
    use crate::analysis::test_support::{random_adapter, tiny_env};

    #[test]
    fn examples_by_hand() {
        // Logits [2, 1, 0] (label 0) and [0, 0, 5] (label 1): predictions 0 and 2; losses
        // ln(e² + e + 1) − 2 and ln(2 + e⁵) − 0.
        let logits = Tensor::from_slice(&[2f32, 1.0, 0.0, 0.0, 0.0, 5.0], (2, 3), &candle_core::Device::Cpu).unwrap();
        let ex = Examples::of(&logits, &[0, 1]).unwrap();
        assert_eq!(ex.predictions, vec![0, 2]);
        assert_eq!(ex.correct(), vec![true, false]);
        let e = std::f64::consts::E;
        assert!((ex.losses[0] - ((e * e + e + 1.0).ln() - 2.0)).abs() < 1e-6, "{:?}", ex.losses);
        assert!((ex.losses[1] - (2.0 + e.powi(5)).ln()).abs() < 1e-5, "{:?}", ex.losses);
        assert!(Examples::of(&logits, &[0, 3]).unwrap_err().to_string().contains("not one of the 3 classes"));
        assert!(Examples::of(&logits, &[0]).is_err());
    }

    #[test]
    fn per_example_outcomes_agree_with_the_metrics() {
        // On a random backbone and adapter: the same metrics bits as `evaluate`, the share of
        // correct examples is the accuracy and the mean loss is the loss.
        let (bb, env) = tiny_env(2, 4, 16, 40);
        let deltas = random_adapter(&bb, &[Query, Value], 2, 5).deltas();
        let m = env.test.evaluate(&deltas).unwrap();
        let (m2, ex) = env.test.evaluate_examples(&deltas).unwrap();
        assert_eq!(m, m2);
        assert_eq!(ex.labels.len(), 40);
        let acc = ex.correct().iter().filter(|c| **c).count() as f64 / 40.0;
        assert!((acc - m.accuracy).abs() < 1e-12, "{acc} vs {}", m.accuracy);
        let loss = ex.losses.iter().sum::<f64>() / 40.0;
        assert!((loss - m.loss).abs() < 1e-4 * m.loss.max(1.0), "{loss} vs {}", m.loss);
    }

    #[test]
    fn a_subset_evaluates_exactly_its_examples() {
        // The subset's accuracy is the share of correct examples among the chosen ones in the
        // full set's per-example outcomes (and its labels are theirs).
        let (bb, env) = tiny_env(2, 4, 16, 40);
        let deltas = random_adapter(&bb, &[Query, Value], 2, 6).deltas();
        let (_, ex) = env.test.evaluate_examples(&deltas).unwrap();
        let idx = [3usize, 0, 17, 39, 21, 8, 8];
        let sub = env.test.subset(&idx).unwrap();
        let labels: Vec<u32> = sub.labels().to_vec1().unwrap();
        assert_eq!(labels, idx.iter().map(|&i| ex.labels[i]).collect::<Vec<_>>());
        let correct = ex.correct();
        let want = idx.iter().filter(|&&i| correct[i]).count() as f64 / idx.len() as f64;
        let m = sub.evaluate(&deltas).unwrap();
        assert!((m.accuracy - want).abs() < 1e-12, "{} vs {want}", m.accuracy);
        let loss = idx.iter().map(|&i| ex.losses[i]).sum::<f64>() / idx.len() as f64;
        assert!((m.loss - loss).abs() < 1e-4 * loss.max(1.0), "{} vs {loss}", m.loss);
        let err = env.test.subset(&[40]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("outside"), "{err}");
    }

    #[test]
    fn sum_deltas_adds_shared_modules_and_keeps_the_others() {
        let (q, v) = (ModuleKey { block: 0, module: Query }, ModuleKey { block: 1, module: Value });
        let x: Deltas = [(q, Matrix::from_vec(1, 2, vec![1.0, 2.0]))].into();
        let y: Deltas = [(q, Matrix::from_vec(1, 2, vec![0.5, -2.0])), (v, Matrix::from_vec(1, 1, vec![3.0]))].into();
        let s = sum_deltas(&x, &y);
        assert_eq!(s[&q].data, vec![1.5, 0.0]);
        assert_eq!(s[&v].data, vec![3.0]);
        assert_eq!(sum_deltas(&y, &Deltas::new()), y);
    }
}
