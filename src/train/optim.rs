//! AdamW with a per-parameter step count, as PyTorch's `torch.optim.AdamW`:
//! a parameter without a gradient this step (an inactive CopRA group) is left
//! entirely alone — no moment update, no weight decay, no step increment.

use anyhow::Result;
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// AdamW hyper-parameters (PyTorch defaults except weight decay, CLIP-LoRA's 0.01).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay β1.
    pub beta1: f64,
    /// Second-moment decay β2.
    pub beta2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

struct ParamState {
    var: Var,
    m: Tensor,
    v: Tensor,
    steps: u64,
}

/// AdamW over a fixed list of variables.
pub struct AdamW {
    config: AdamWConfig,
    params: Vec<ParamState>,
}

impl AdamW {
    /// An optimizer over `vars` (order matters only for reproducibility).
    pub fn new(vars: Vec<Var>, config: AdamWConfig) -> Result<Self> {
        let params = vars
            .into_iter()
            .map(|var| {
                Ok(ParamState { m: var.as_tensor().zeros_like()?, v: var.as_tensor().zeros_like()?, var, steps: 0 })
            })
            .collect::<Result<_>>()?;
        Ok(Self { config, params })
    }

    /// One step at learning rate `lr`; parameters with no gradient in `grads` are skipped.
    /// Returns how many parameters were updated.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<usize> {
        let c = self.config;
        let mut updated = 0;
        for p in &mut self.params {
            let Some(g) = grads.get(p.var.as_tensor()) else { continue };
            p.steps += 1;
            let t = p.steps as i32;
            p.m = ((&p.m * c.beta1)? + (g * (1.0 - c.beta1))?)?;
            p.v = ((&p.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&p.m / (1.0 - c.beta1.powi(t)))?;
            let v_hat = (&p.v / (1.0 - c.beta2.powi(t)))?;
            let theta = p.var.as_tensor();
            let decayed = (theta * (1.0 - lr * c.weight_decay))?;
            let upd = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            p.var.set(&(decayed - (upd * lr)?)?)?;
            updated += 1;
        }
        Ok(updated)
    }

    /// Per-parameter step counts (for tests and logs).
    pub fn step_counts(&self) -> Vec<u64> {
        self.params.iter().map(|p| p.steps).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn first_step_matches_hand_computed_adamw() {
        // θ=1, g=2·θ=2 (loss θ²): m̂ = g, v̂ = g², update = lr·g/(|g|+eps) ≈ lr; decay θ·(1−lr·wd).
        let dev = Device::Cpu;
        let w = Var::new(&[1.0f32], &dev).unwrap();
        let loss = w.as_tensor().sqr().unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let mut opt = AdamW::new(vec![w.clone()], AdamWConfig::default()).unwrap();
        opt.step(&grads, 0.1).unwrap();
        let got: Vec<f32> = w.as_tensor().to_vec1().unwrap();
        let expected = 1.0 * (1.0 - 0.1 * 0.01) - 0.1 * 2.0 / (2.0 + 1e-8);
        assert!((got[0] as f64 - expected).abs() < 1e-6, "{got:?} vs {expected}");
    }

    #[test]
    fn parameters_without_gradient_are_untouched() {
        let dev = Device::Cpu;
        let a = Var::new(&[1.0f32, 2.0], &dev).unwrap();
        let b = Var::new(&[3.0f32], &dev).unwrap();
        let mut opt = AdamW::new(vec![a.clone(), b.clone()], AdamWConfig::default()).unwrap();
        for _ in 0..3 {
            let loss = a.as_tensor().sqr().unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            assert_eq!(opt.step(&grads, 0.01).unwrap(), 1);
        }
        assert_eq!(b.as_tensor().to_vec1::<f32>().unwrap(), vec![3.0]);
        assert_eq!(opt.step_counts(), vec![3, 0]);
    }
}
