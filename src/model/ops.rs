//! Differentiable activation kernels with cheap backward passes.
//!
//! candle's composite softmax back-propagates through `max` (an expensive masked
//! broadcast) and its `gelu_erf` backward re-derives erf with many small ops; on this
//! model they dominated the backward pass. Softmax is shift-invariant, so subtracting a
//! detached row maximum gives the same value and the same gradient; GELU gets a custom
//! op whose backward is one fused pass.

use anyhow::Result;
use candle_core::{CpuStorage, CustomOp1, Layout, Shape, Tensor, D};

/// The contiguous f32 values of `storage` under `layout` and the width of their last dimension
/// (a row), for the CPU kernels here and in `norm`; `what` names the operand in the error
/// (`"softmax: input"` → "copra softmax: input must be contiguous").
pub(crate) fn contiguous_rows<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<(&'a [f32], usize)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("copra {what} must be contiguous");
    };
    let width = *layout.shape().dims().last().unwrap_or(&1);
    Ok((&storage.as_slice::<f32>()?[start..end], width.max(1)))
}

/// The differentiable softmax of one row, in place: `exp(x − max)`, summed in order, divided.
pub(crate) fn softmax_row(row: &mut [f32]) {
    let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// Row softmax over the last dimension; backward `y ⊙ (g − Σ g⊙y)`.
struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "copra-softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (data, dim) = contiguous_rows(storage, layout, "softmax: input")?;
        let mut out = data.to_vec();
        for row in out.chunks_mut(dim) {
            softmax_row(row);
        }
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let dot = (grad_res * res)?.sum_keepdim(D::Minus1)?;
        Ok(Some((res * grad_res.broadcast_sub(&dot)?)?))
    }
}

/// Row softmax over the last dimension with a gradient: a fused kernel on CPU f32, candle's
/// composite (differentiable) softmax elsewhere.
pub fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        Ok(x.contiguous()?.apply_op1(Softmax)?)
    } else {
        Ok(candle_nn::ops::softmax(x, D::Minus1)?)
    }
}

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// Elements per parallel task of [`map_f32`] on a large input.
const MAP_CHUNK: usize = 1 << 14;

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (`1 − (a₁t + … + a₅t⁵)·e^{−x²}`, `t = 1/(1 + p|x|)`),
/// evaluated in f64: absolute error at most 1.5e-7 before the final rounding to f32 (2e-7
/// after it, tested). The `libm` erf candle calls took 8% of a DINOv2 training step; this is a
/// few multiplications and one `exp`. (In f32 the error grows to 6e-7; its f64 `exp` costs about
/// 7% of an evaluation pass on the built-in backbone, where `libm`'s erf took a cheaper branch
/// for small arguments.)
pub fn erf_f32(x: f32) -> f32 {
    const P: f64 = 0.327_591_1;
    const A: [f64; 5] = [0.254_829_592, -0.284_496_736, 1.421_413_741, -1.453_152_027, 1.061_405_429];
    let ax = x.abs() as f64;
    let t = 1.0 / (1.0 + P * ax);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let y = 1.0 - poly * (-ax * ax).exp();
    (y as f32).copysign(x)
}

fn map_f32(
    storage: &CpuStorage,
    layout: &Layout,
    f: impl Fn(f32) -> f32 + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    use rayon::prelude::*;
    let (data, _) = contiguous_rows(storage, layout, "gelu: input")?;
    let out = if data.len() < crate::parallel::ELEMENTWISE_THREADING_MIN {
        data.iter().map(|x| f(*x)).collect()
    } else {
        let mut out = vec![0f32; data.len()];
        out.par_chunks_mut(MAP_CHUNK).zip(data.par_chunks(MAP_CHUNK)).for_each(|(o, x)| {
            for (o, x) in o.iter_mut().zip(x) {
                *o = f(*x);
            }
        });
        out
    };
    Ok((CpuStorage::F32(out), layout.shape().clone()))
}

/// Exact GELU `x·Φ(x)` whose backward is `grad · (Φ(x) + x·φ(x))`.
struct GeluErf;

/// The derivative of exact GELU, `Φ(x) + x·φ(x)`.
struct GeluErfGrad;

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "copra-gelu-erf"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f32(storage, layout, |x| 0.5 * x * (1.0 + erf_f32(x * FRAC_1_SQRT_2)))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let d = arg.apply_op1_no_bwd(&GeluErfGrad)?;
        Ok(Some(grad_res.mul(&d)?))
    }
}

impl CustomOp1 for GeluErfGrad {
    fn name(&self) -> &'static str {
        "copra-gelu-erf-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_f32(storage, layout, |x| {
            let cdf = 0.5 * (1.0 + erf_f32(x * FRAC_1_SQRT_2));
            cdf + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
        })
    }
}

/// Exact (erf) GELU with a fused backward on CPU f32; candle's own op elsewhere.
pub fn gelu_erf(x: &Tensor) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == candle_core::DType::F32 {
        Ok(x.contiguous()?.apply_op1(GeluErf)?)
    } else {
        Ok(x.gelu_erf()?)
    }
}

/// `y = x·Wᵀ + b` for a frozen `W` and `b`, whose backward returns only the input gradient.
/// candle's matmul backward always computes the weight gradient too (a second GEMM the
/// size of the forward one) even when the weight is a constant; this op skips it.
struct FrozenLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "copra-frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (data, _) = contiguous_rows(storage, layout, "frozen linear: input")?;
        let (rows, cols) = layout.shape().dims2()?;
        let x = Tensor::from_slice(data, (rows, cols), &candle_core::Device::Cpu)?;
        let mut y = x.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        let out = self.weight.dim(0)?;
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), Shape::from((rows, out))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad_res.matmul(&self.weight)?))
    }
}

/// `x·Wᵀ + b` for a 2-D input. With a constant (non-`Var`) weight on CPU f32 the backward
/// skips the weight and bias gradients; otherwise candle's own ops (which compute them).
pub fn linear_2d(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> Result<Tensor> {
    let frozen = !weight.is_variable() && bias.is_none_or(|b| !b.is_variable());
    if frozen && x.device().is_cpu() && x.dtype() == candle_core::DType::F32 && x.track_op() {
        let op = FrozenLinear { weight: weight.clone(), bias: bias.cloned() };
        return Ok(x.contiguous()?.apply_op1(op)?);
    }
    let y = x.matmul(&weight.t()?)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::model::max_abs_diff as max_diff;

    #[test]
    fn frozen_linear_matches_matmul_and_skips_weight_gradient() {
        let dev = Device::Cpu;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (6, 5), &dev).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 5), &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, 4, &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (6, 4), &dev).unwrap();
        let ours = linear_2d(x.as_tensor(), &w, Some(&b)).unwrap();
        let plain = x.as_tensor().matmul(&w.t().unwrap()).unwrap().broadcast_add(&b).unwrap();
        assert!(max_diff(&ours, &plain) < 1e-5);
        let g1 = (ours * &g).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (plain * &g).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-5);
        assert!(g1.get(&w).is_none(), "the frozen weight must not receive a gradient");
    }

    #[test]
    fn fast_erf_is_within_2e7_of_erf() {
        // Against statrs's double-precision erf on a fine grid over [−6, 6], and the closed
        // values erf(0) = 0 (to 1e-9, the approximation's own), erf(±∞) = ±1, odd symmetry.
        let mut worst = 0f64;
        for i in -60_000..=60_000 {
            let x = (i as f64 * 1e-4) as f32;
            worst = worst.max((erf_f32(x) as f64 - statrs::function::erf::erf(x as f64)).abs());
            assert_eq!(erf_f32(-x), -erf_f32(x));
        }
        assert!(worst < 2e-7, "max |error| {worst:e}");
        assert!(erf_f32(0.0).abs() < 1e-8);
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert!(erf_f32(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_matches_candle_in_value_and_gradient() {
        let x = Var::from_tensor(&Tensor::randn(0f32, 3.0, (4, 3, 7), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (4, 3, 7), &Device::Cpu).unwrap();
        let ours = softmax_last_dim(x.as_tensor()).unwrap();
        let theirs = candle_nn::ops::softmax(x.as_tensor(), D::Minus1).unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-6);
        let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-5);
    }

    #[test]
    fn gelu_matches_candle_in_value_and_gradient() {
        let x = Var::from_tensor(&Tensor::randn(0f32, 2.0, (5, 9), &Device::Cpu).unwrap()).unwrap();
        let w = Tensor::randn(0f32, 1.0, (5, 9), &Device::Cpu).unwrap();
        let ours = gelu_erf(x.as_tensor()).unwrap();
        let theirs = x.as_tensor().gelu_erf().unwrap();
        assert!(max_diff(&ours, &theirs) < 1e-5);
        let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
        assert!(max_diff(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap()) < 1e-4);
        // Above the threading threshold the map is split over chunks, with the same values.
        let big = Tensor::randn(0f32, 2.0, (1 << 20) + 7, &Device::Cpu).unwrap();
        assert!(max_diff(&gelu_erf(&big).unwrap(), &big.gelu_erf().unwrap()) < 1e-5);
        // Strided input (a transpose) is handled too.
        let t = x.as_tensor().t().unwrap();
        assert!(max_diff(&gelu_erf(&t).unwrap(), &t.gelu_erf().unwrap()) < 1e-5);
    }
}
