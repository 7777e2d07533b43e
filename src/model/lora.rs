//! Trainable LoRA factors as candle `Var`s and the training-time branch
//! `s · B · A · dropout(x)`, skipped entirely for inactive modules.

use super::branch::Branch;
use crate::adapter::fit::ModuleShapes;
use crate::adapter::{Adapter, LoraFactors, LoraSpec, ModuleKey};
use crate::linalg::Matrix;
use crate::util::Rng;
use anyhow::Result;
use candle_core::{Device, Tensor, Var};
use rand::Rng as _;
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

/// The trainable factors of every adapted module.
pub struct LoraVars {
    /// Shape and scale hyper-parameters.
    pub spec: LoraSpec,
    /// `(A [r, in], B [out, r])` per module, in canonical order.
    pub vars: BTreeMap<ModuleKey, (Var, Var)>,
}

impl LoraVars {
    /// Fresh factors on every block in `blocks`: A Kaiming-uniform (`nn.Linear`'s default,
    /// bound 1/√in), B zero, so the adapter starts as the identity update.
    pub fn init(
        spec: &LoraSpec,
        shapes: &dyn ModuleShapes,
        blocks: &[usize],
        rng: &mut Rng,
        device: &Device,
    ) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for &block in blocks {
            for &module in &spec.targets {
                let (out, inp) = shapes.module_shape(block, module);
                let bound = 1.0 / (inp as f32).sqrt();
                let a: Vec<f32> = (0..spec.rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (spec.rank, inp), device)?)?;
                let b = Var::zeros((out, spec.rank), candle_core::DType::F32, device)?;
                vars.insert(ModuleKey { block, module }, (a, b));
            }
        }
        Ok(Self { spec: spec.clone(), vars })
    }

    /// Trainable copies of an existing adapter (for continued training, e.g. federated rounds).
    pub fn from_adapter(adapter: &Adapter, device: &Device) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (key, f) in &adapter.modules {
            let a = Var::from_tensor(&Tensor::from_slice(&f.a.data, f.a.shape(), device)?)?;
            let b = Var::from_tensor(&Tensor::from_slice(&f.b.data, f.b.shape(), device)?)?;
            vars.insert(*key, (a, b));
        }
        Ok(Self { spec: adapter.spec.clone(), vars })
    }

    /// The current factors as plain data.
    pub fn to_adapter(&self) -> Result<Adapter> {
        let mut modules = BTreeMap::new();
        for (key, (a, b)) in &self.vars {
            let to_m = |t: &Tensor| -> Result<Matrix> {
                let (r, c) = t.dims2()?;
                Ok(Matrix::from_vec(r, c, t.flatten_all()?.to_vec1()?))
            };
            modules.insert(*key, LoraFactors { a: to_m(a.as_tensor())?, b: to_m(b.as_tensor())? });
        }
        Ok(Adapter { spec: self.spec.clone(), modules })
    }
}

/// The LoRA branch used in training: active modules only, input dropout from a seeded RNG.
pub struct TrainingBranch<'a> {
    lora: &'a LoraVars,
    active: &'a BTreeSet<ModuleKey>,
    active_scale: f64,
    dropout: f64,
    rng: RefCell<&'a mut Rng>,
}

impl<'a> TrainingBranch<'a> {
    /// A branch over `active` modules with input dropout `dropout` (0 disables it).
    pub fn new(lora: &'a LoraVars, active: &'a BTreeSet<ModuleKey>, dropout: f64, rng: &'a mut Rng) -> Self {
        Self { lora, active, active_scale: 1.0, dropout, rng: RefCell::new(rng) }
    }

    /// The same branch with every active module's output multiplied by `scale` (inverted
    /// dropout over adapter groups: 1 / the group's inclusion probability).
    pub fn with_active_scale(mut self, scale: f64) -> Self {
        self.active_scale = scale;
        self
    }
}

impl Branch for TrainingBranch<'_> {
    fn output(&self, key: ModuleKey, x2d: &Tensor) -> Result<Option<Tensor>> {
        if !self.active.contains(&key) {
            return Ok(None);
        }
        let Some((a, b)) = self.lora.vars.get(&key) else { return Ok(None) };
        let x = input_dropout(x2d, self.dropout, &mut self.rng.borrow_mut())?;
        let scale = self.lora.spec.scale_for(a.dim(0)?) * self.active_scale;
        let y = x.matmul(&a.as_tensor().t()?)?.matmul(&b.as_tensor().t()?)?;
        Ok(Some((y * scale)?))
    }
}

/// Inverted input dropout of a LoRA branch: each entry of `x2d` kept with probability
/// `1 − dropout` and scaled by its inverse, from `rng` (entry by entry, row-major); `x2d`
/// itself when `dropout` is 0.
pub fn input_dropout(x2d: &Tensor, dropout: f64, rng: &mut Rng) -> Result<Tensor> {
    if dropout <= 0.0 {
        return Ok(x2d.clone());
    }
    let (rows, cols) = x2d.dims2()?;
    let keep = 1.0 - dropout;
    let inv = (1.0 / keep) as f32;
    let mask: Vec<f32> = (0..rows * cols).map(|_| if rng.random::<f64>() < keep { inv } else { 0.0 }).collect();
    Ok((x2d * Tensor::from_vec(mask, (rows, cols), x2d.device())?)?)
}
