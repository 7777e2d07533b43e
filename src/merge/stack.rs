//! FLoRA stacking: concatenate the factors along the rank so that the merged adapter's `ΔW` is
//! exactly `Σ w_k ΔW_k` (weights normalised to 1); the merged rank is `Σ r_k`.

use super::operator::{MergeInput, MergeMethod, MergeOperator, OperatorInfo, Params};
use super::{checked_scale, output_spec, MergeOutcome, Merged};
use crate::adapter::{Adapter, LoraFactors, ModuleKey};
use crate::linalg::Matrix;
use anyhow::Result;
use std::collections::BTreeMap;

/// Registry entry.
pub static INFO: OperatorInfo = OperatorInfo {
    name: "stack",
    aliases: &["cat", "flora"],
    label: "FLoRA",
    params: &[],
    build: |_: &Params| Ok(MergeMethod::new(Stack)),
};

/// Rank stacking (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stack;

impl MergeOperator for Stack {
    fn info(&self) -> &'static OperatorInfo {
        &INFO
    }
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
        let adapter = stack(input.adapters, &input.weights, &input.shapes)?;
        Ok(MergeOutcome { merged: Merged::Adapter(adapter), align: BTreeMap::new() })
    }
}

fn stack(adapters: &[&Adapter], w: &[f64], shapes: &BTreeMap<ModuleKey, (usize, usize)>) -> Result<Adapter> {
    let spec = &adapters[0].spec;
    let mut modules = BTreeMap::new();
    for key in shapes.keys() {
        let present: Vec<(&Adapter, f64)> =
            adapters.iter().zip(w).filter(|(ad, _)| ad.modules.contains_key(key)).map(|(ad, wk)| (*ad, *wk)).collect();
        let total_rank: usize = present.iter().map(|(ad, _)| ad.modules[key].rank()).sum();
        let scale = checked_scale(spec, total_rank)?;
        let b_parts: Vec<Matrix> =
            present.iter().map(|(ad, wk)| ad.modules[key].b.scale((wk * ad.scale_of(key) / scale) as f32)).collect();
        let a_parts: Vec<&Matrix> = present.iter().map(|(ad, _)| &ad.modules[key].a).collect();
        modules.insert(
            *key,
            LoraFactors { a: Matrix::vstack(&a_parts)?, b: Matrix::hstack(&b_parts.iter().collect::<Vec<_>>())? },
        );
    }
    Ok(Adapter { spec: output_spec(spec, &modules), modules })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{merge, MergeOptions};
    use super::*;
    use crate::adapter::{Scaling, TargetModule::*};

    #[test]
    fn stack_is_exact_with_mixed_ranks_specs_and_missing_modules() {
        let a = random_adapter(&[key(0, Query), key(1, Value)], 2, 6, 5, 20);
        let mut b = random_adapter(&[key(0, Query)], 3, 6, 5, 21);
        b.spec.scaling = Scaling::Standard;
        b.spec.alpha = 4.0;
        let w = [0.25, 0.75];
        let op = MergeMethod::new(Stack);
        let m = merge(&[&a, &b], &w, &op, &MergeOptions::default()).unwrap();
        let ad = m.adapter().unwrap();
        assert_eq!(ad.modules[&key(0, Query)].rank(), 5);
        assert_eq!(ad.modules[&key(1, Value)].rank(), 2);
        assert_eq!(ad.spec.rank, 5);
        assert!(max_diff(&m.deltas(), &mixture(&[&a, &b], &w)) < 1e-5);
        // Weights are normalised: [1, 3] gives the same result.
        let m2 = merge(&[&a, &b], &[1.0, 3.0], &op, &MergeOptions::default()).unwrap();
        assert!(max_diff(&m.deltas(), &m2.deltas()) < 1e-6);
    }
}
