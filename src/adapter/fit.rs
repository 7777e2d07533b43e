//! Whether an adapter fits a backbone: every module's block exists, and its factors have
//! the shapes the backbone's linear layer needs (`A` `[r, in]`, `B` `[out, r]`,
//! `1 ≤ r ≤ min(in, out)`). Checked before any delta reaches the model, so an adapter
//! made for another backbone is a one-line error naming the tensor, never a panic.

use super::peft::PeftLayout;
use super::{Adapter, BlockPlace, TargetModule};
use anyhow::{bail, Result};

/// The geometry of a backbone as far as adapters care.
pub trait ModuleShapes {
    /// Number of transformer blocks.
    fn num_blocks(&self) -> usize;
    /// `(out, in)` of a module's weight in block `block`.
    fn module_shape(&self, block: usize, module: TargetModule) -> (usize, usize);
    /// Which encoder block `block` belongs to, and its index there.
    fn place(&self, block: usize) -> BlockPlace {
        BlockPlace::single(block)
    }
    /// How adapter files name this backbone's modules (errors quote tensor keys in it).
    fn key_layout(&self) -> PeftLayout {
        PeftLayout::VIT
    }
}

/// The largest useful LoRA rank of a module in every block: its smallest dimension.
pub fn max_rank(shapes: &dyn ModuleShapes, module: TargetModule) -> usize {
    (0..shapes.num_blocks())
        .map(|b| {
            let (out, inp) = shapes.module_shape(b, module);
            out.min(inp)
        })
        .min()
        .unwrap_or(0)
}

/// Errors, naming the first offending tensor and `origin`, when `adapter` does not fit `shapes`.
pub fn check_fits(adapter: &Adapter, shapes: &dyn ModuleShapes, origin: &str) -> Result<()> {
    let blocks = shapes.num_blocks();
    let layout = shapes.key_layout();
    for (key, f) in &adapter.modules {
        if key.block >= blocks {
            bail!(
                "{origin}: tensor '{}' is for block {} but the backbone has {blocks} blocks (0 to {}); use the adapter with the backbone it was trained on",
                layout.key(key, "A"),
                key.block,
                blocks.saturating_sub(1)
            );
        }
        let (out, inp) = shapes.module_shape(key.block, key.module);
        let r = f.rank();
        if f.a.cols != inp || f.b.rows != out || f.b.cols != r {
            bail!(
                "{origin}: tensors '{}' {:?} and lora_B {:?} do not fit: the backbone's {} layer needs [r, {inp}] and [{out}, r]; use the adapter with the backbone it was trained on",
                layout.key(key, "A"),
                f.a.shape(),
                f.b.shape(),
                layout.module_path(key.module)
            );
        }
        let limit = out.min(inp);
        if r == 0 || r > limit {
            bail!(
                "{origin}: tensor '{}' has rank {r}; a {out}x{inp} layer allows rank 1 to {limit}",
                layout.key(key, "A")
            );
        }
    }
    Ok(())
}

impl ModuleShapes for crate::model::VitConfig {
    fn num_blocks(&self) -> usize {
        self.num_hidden_layers
    }
    fn module_shape(&self, _block: usize, module: TargetModule) -> (usize, usize) {
        crate::model::vit::module_shape(self, module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{LoraFactors, LoraSpec, ModuleKey};
    use crate::linalg::Matrix;
    use std::collections::BTreeMap;

    struct Tiny;
    impl ModuleShapes for Tiny {
        fn num_blocks(&self) -> usize {
            2
        }
        fn module_shape(&self, _block: usize, module: TargetModule) -> (usize, usize) {
            if module == TargetModule::Fc1 {
                (8, 4)
            } else {
                (4, 4)
            }
        }
    }

    fn one(block: usize, module: TargetModule, r: usize, inp: usize, out: usize) -> Adapter {
        let f = LoraFactors {
            a: Matrix::from_vec(r, inp, vec![0.0; r * inp]),
            b: Matrix::from_vec(out, r, vec![0.0; out * r]),
        };
        Adapter { spec: LoraSpec::default(), modules: BTreeMap::from([(ModuleKey { block, module }, f)]) }
    }

    #[test]
    fn fitting_and_misfitting_adapters() {
        assert!(check_fits(&one(1, TargetModule::Fc1, 2, 4, 8), &Tiny, "x").is_ok());
        let err = check_fits(&one(15, TargetModule::Query, 2, 4, 4), &Tiny, "ad").unwrap_err().to_string();
        assert!(err.contains("layers.15.attention.q_proj.lora_A") && err.contains("2 blocks"), "{err}");
        let err = check_fits(&one(0, TargetModule::Fc1, 2, 4, 4), &Tiny, "ad").unwrap_err().to_string();
        assert!(err.contains("layers.0.mlp.fc1.lora_A") && err.contains("[8, r]"), "{err}");
        let err = check_fits(&one(0, TargetModule::Value, 5, 4, 4), &Tiny, "ad").unwrap_err().to_string();
        assert!(err.contains("rank 5") && err.contains("1 to 4"), "{err}");
        assert_eq!(max_rank(&Tiny, TargetModule::Fc1), 4);
    }
}
