//! Divergence checks of the training loop: a non-finite loss, gradient or parameter
//! stops the run with an error that names the step and suggests a lower learning rate,
//! so a diverged adapter never reaches the run cache.

use anyhow::{bail, Result};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};

/// The advice every divergence error ends with.
fn advice(lr: f64) -> String {
    format!("lower the learning rate (--lr, now {lr}) or the LoRA alpha; nothing was saved")
}

/// Whether every value of every tensor is finite. One reduction per tensor and a single
/// device sync: a NaN or ±inf anywhere makes the total non-finite.
pub fn all_finite<'a>(tensors: impl IntoIterator<Item = &'a Tensor>) -> Result<bool> {
    let mut total: Option<Tensor> = None;
    for t in tensors {
        let s = t.abs()?.sum_all()?;
        total = Some(match total {
            Some(acc) => (acc + s)?,
            None => s,
        });
    }
    Ok(match total {
        Some(t) => t.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?.is_finite(),
        None => true,
    })
}

/// Errors when the loss of `step` is not finite.
pub fn check_loss(step: usize, loss: f64, lr: f64) -> Result<()> {
    if !loss.is_finite() {
        bail!("training diverged at step {step}: the loss is {loss}; {}", advice(lr));
    }
    Ok(())
}

/// Errors when a gradient of `vars` in `grads` holds a NaN or an infinity.
pub fn check_gradients(step: usize, grads: &GradStore, vars: &[Var], lr: f64) -> Result<()> {
    if !all_finite(vars.iter().filter_map(|v| grads.get(v.as_tensor())))? {
        bail!("training diverged at step {step}: a gradient is not finite (NaN or inf); {}", advice(lr));
    }
    Ok(())
}

/// Errors when a parameter in `vars` holds a NaN or an infinity after the step's update.
pub fn check_parameters(step: usize, vars: &[Var], lr: f64) -> Result<()> {
    if !all_finite(vars.iter().map(|v| v.as_tensor()))? {
        bail!("training diverged at step {step}: an adapter parameter is not finite after the update; {}", advice(lr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn finiteness_of_tensors() {
        let d = Device::Cpu;
        let ok = Tensor::new(&[1.0f32, -2.0, 3.5], &d).unwrap();
        let nan = Tensor::new(&[1.0f32, f32::NAN], &d).unwrap();
        let inf = Tensor::new(&[f32::NEG_INFINITY, 0.0], &d).unwrap();
        assert!(all_finite([&ok, &ok]).unwrap());
        assert!(all_finite(std::iter::empty()).unwrap());
        assert!(!all_finite([&ok, &nan]).unwrap());
        assert!(!all_finite([&inf]).unwrap());
        // +inf and -inf in different tensors do not cancel: absolute values are summed.
        let pinf = Tensor::new(&[f32::INFINITY], &d).unwrap();
        assert!(!all_finite([&pinf, &inf]).unwrap());
    }

    #[test]
    fn errors_name_the_step_and_the_fix() {
        assert!(check_loss(3, 0.7, 1e-3).is_ok());
        let err = check_loss(17, f64::NAN, 1000.0).unwrap_err().to_string();
        assert!(err.contains("step 17") && err.contains("lower the learning rate") && err.contains("1000"), "{err}");
        let d = Device::Cpu;
        let v = Var::from_tensor(&Tensor::new(&[1.0f32, f32::INFINITY], &d).unwrap()).unwrap();
        let err = check_parameters(4, &[v], 0.5).unwrap_err().to_string();
        assert!(err.contains("step 4") && err.contains("parameter"), "{err}");
        let w = Var::from_tensor(&Tensor::new(&[1.0f32, 2.0], &d).unwrap()).unwrap();
        assert!(check_parameters(4, std::slice::from_ref(&w), 0.5).is_ok());
        // A gradient of inf: loss = sum(w * inf-scaled) gives a non-finite gradient.
        let loss = (w.as_tensor() * f64::INFINITY).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let err = check_gradients(9, &grads, &[w], 0.5).unwrap_err().to_string();
        assert!(err.contains("step 9") && err.contains("gradient"), "{err}");
    }
}
