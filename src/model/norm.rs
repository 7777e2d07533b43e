//! Layer norm over the last dimension with a constant (frozen) weight and bias, as one fused
//! pass forward and one backward, on CPU f32.
//!
//! candle's differentiable layer norm (`candle_nn::ops::layer_norm_slow`) is nine element-wise
//! ops forward, each a full pass and an allocation, and about twice that backward; its fused
//! kernel has no backward. Every layer norm copra-lab trains through is frozen, so only the
//! input gradient is needed: with `x̂ = (x − μ)/σ` and `g' = g ⊙ w` per row of width `d`,
//! `∂L/∂x = (g' − mean(g') − x̂ · mean(g' ⊙ x̂)) / σ`.

use super::ops::contiguous_rows;
use crate::parallel::elementwise_chunk;
use anyhow::Result;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Shape, Tensor};
use rayon::prelude::*;

/// Rows per parallel task of a large input (rows are independent).
const ROWS_PER_TASK: usize = 64;

/// `y = x̂ ⊙ w + b` per row, for constant `w` and `b` of the row width.
struct FrozenLayerNorm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

/// The input gradient of [`FrozenLayerNorm`]: `(x, g) → ∂L/∂x`.
struct FrozenLayerNormGrad {
    weight: Vec<f32>,
    eps: f32,
}

/// Mean and `1/σ` of a row (two passes, as candle's composite layer norm).
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = row.iter().sum::<f32>() / d;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

impl CustomOp1 for FrozenLayerNorm {
    fn name(&self) -> &'static str {
        "copra-frozen-layer-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, d) = contiguous_rows(storage, layout, "layer norm: input")?;
        if d != self.weight.len() {
            candle_core::bail!("copra layer norm: rows of {d}, weight of {}", self.weight.len());
        }
        let mut out = vec![0f32; x.len()];
        let chunk = elementwise_chunk(x.len(), d * ROWS_PER_TASK);
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk)).for_each(|(o, x)| {
            for (o, x) in o.chunks_mut(d).zip(x.chunks(d)) {
                let (mean, inv) = row_stats(x, self.eps);
                for i in 0..d {
                    o[i] = (x[i] - mean) * inv * self.weight[i] + self.bias[i];
                }
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let grad = FrozenLayerNormGrad { weight: self.weight.clone(), eps: self.eps };
        Ok(Some(arg.contiguous()?.apply_op2_no_bwd(&grad_res.contiguous()?, &grad)?))
    }
}

impl CustomOp2 for FrozenLayerNormGrad {
    fn name(&self) -> &'static str {
        "copra-frozen-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        gs: &CpuStorage,
        gl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, d) = contiguous_rows(xs, xl, "layer norm: input")?;
        let (g, _) = contiguous_rows(gs, gl, "layer norm: gradient")?;
        if g.len() != x.len() {
            candle_core::bail!("copra layer norm: gradient of {} values for {} inputs", g.len(), x.len());
        }
        let w = &self.weight;
        let mut out = vec![0f32; x.len()];
        let chunk = elementwise_chunk(x.len(), d * ROWS_PER_TASK);
        out.par_chunks_mut(chunk).zip(x.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(o, (x, g))| {
            for ((o, x), g) in o.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)) {
                let (mean, inv) = row_stats(x, self.eps);
                let (mut sum_g, mut sum_gx) = (0f32, 0f32);
                for i in 0..d {
                    let gw = g[i] * w[i];
                    sum_g += gw;
                    sum_gx += gw * (x[i] - mean) * inv;
                }
                let (mean_g, mean_gx) = (sum_g / d as f32, sum_gx / d as f32);
                for i in 0..d {
                    let xhat = (x[i] - mean) * inv;
                    o[i] = (g[i] * w[i] - mean_g - xhat * mean_gx) * inv;
                }
            }
        });
        Ok((CpuStorage::F32(out), xl.shape().clone()))
    }
}

/// Differentiable layer norm over the last dimension of `x` with weight and bias `ln`: the
/// fused kernel above when both are constants and `x` is CPU f32 (the gradient reaches `x`
/// only), candle's composite one otherwise (which also differentiates `ln`).
pub fn layer_norm_differentiable(x: &Tensor, ln: &(Tensor, Tensor), eps: f64) -> Result<Tensor> {
    let frozen = !ln.0.is_variable() && !ln.1.is_variable();
    if frozen && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        let op = FrozenLayerNorm { weight: ln.0.to_vec1()?, bias: ln.1.to_vec1()?, eps: eps as f32 };
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    Ok(candle_nn::ops::layer_norm_slow(x, &ln.0, &ln.1, eps as f32)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::max_abs_diff as max_diff;
    use candle_core::{Device, Var};

    #[test]
    fn a_row_by_hand() {
        // x = [1, 2, 3, 6]: mean 3, variance (4 + 1 + 0 + 9)/4 = 3.5, eps 0.5 → σ = 2.
        let x = Tensor::new(&[[1f32, 2., 3., 6.]], &Device::Cpu).unwrap();
        let ln = (
            Tensor::new(&[1f32, 2., 1., 1.], &Device::Cpu).unwrap(),
            Tensor::new(&[0f32, 0., 1., 0.], &Device::Cpu).unwrap(),
        );
        let y = layer_norm_differentiable(&x, &ln, 0.5).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(y, vec![vec![-1.0, -1.0, 1.0, 1.5]]);
    }

    #[test]
    fn matches_candle_in_value_and_input_gradient() {
        let dev = Device::Cpu;
        // 3-D inputs with a non-contiguous upstream gradient: a small one (one chunk, the
        // calling thread) and one above the threading threshold (split over row chunks).
        for (batch, rows, d) in [(3, 50, 24), (2, 520, 1024)] {
            assert_eq!(batch * rows * d >= crate::parallel::ELEMENTWISE_THREADING_MIN, d == 1024);
            let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (batch, rows, d), &dev).unwrap()).unwrap();
            let ln = (Tensor::randn(1f32, 0.3, d, &dev).unwrap(), Tensor::randn(0f32, 0.3, d, &dev).unwrap());
            let w = Tensor::randn(0f32, 1.0, (batch, d, rows), &dev).unwrap().transpose(1, 2).unwrap();
            let ours = layer_norm_differentiable(x.as_tensor(), &ln, 1e-6).unwrap();
            let theirs = candle_nn::ops::layer_norm_slow(x.as_tensor(), &ln.0, &ln.1, 1e-6).unwrap();
            assert!(max_diff(&ours, &theirs) < 1e-5);
            let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let (a, b) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
            assert!(max_diff(a, b) < 1e-4, "{}", max_diff(a, b));
            // The gradient is not trivially zero (a row's gradient sums to zero only with w = 1).
            assert!(a.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap() > 0.1);
            assert!(g1.get(&ln.0).is_none(), "the frozen weight must not receive a gradient");
        }
    }

    #[test]
    fn trainable_weights_take_candles_path() {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1.0, (4, 8), &dev).unwrap();
        let w = Var::from_tensor(&Tensor::ones(8, candle_core::DType::F32, &dev).unwrap()).unwrap();
        let ln = (w.as_tensor().clone(), Tensor::zeros(8, candle_core::DType::F32, &dev).unwrap());
        let y = layer_norm_differentiable(&x, &ln, 1e-5).unwrap();
        let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(grads.get(w.as_tensor()).is_some(), "a trainable weight keeps its gradient");
    }
}
