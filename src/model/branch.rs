//! The extension point through which LoRA reaches a frozen linear layer.

use crate::adapter::ModuleKey;
use anyhow::Result;
use candle_core::Tensor;

/// Supplies the LoRA branch output of a module for a flattened input `[rows, in]`.
/// Returning `None` means no branch (the frozen output alone).
pub trait Branch {
    /// The branch output `s·B·A·dropout(x)` as `[rows, out]`, or `None`.
    fn output(&self, key: ModuleKey, x2d: &Tensor) -> Result<Option<Tensor>>;
}

/// No adapter at all: the frozen backbone (or weights that already hold merged deltas).
pub struct NoBranch;

impl Branch for NoBranch {
    fn output(&self, _key: ModuleKey, _x2d: &Tensor) -> Result<Option<Tensor>> {
        Ok(None)
    }
}
