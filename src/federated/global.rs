//! The server's global model in a federated simulation: the adapter clients start from, plus
//! the dense residual that exact aggregators (FedEx-LoRA, [`crate::merge::fedex`]) fold into
//! the frozen weights. Models only ever see dense `ΔW` ([`Deltas`]): a client trains on the
//! backbone with [`GlobalModel::frozen_for`] merged in, and the global model is evaluated with
//! [`GlobalModel::deltas`].

use crate::adapter::Adapter;
use crate::eval::{sum_deltas, Deltas};
use crate::merge::Merged;
use anyhow::{Context, Result};

/// The global model: frozen weights + `residual` + `ΔW(adapter)`.
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalModel {
    /// The aggregated adapter (clients of the next round start from its factors).
    pub adapter: Adapter,
    /// Dense `ΔW` per module folded into the frozen weights, summed over rounds (empty unless
    /// the aggregator returns a residual).
    pub residual: Deltas,
}

impl GlobalModel {
    /// A global model with `adapter` and nothing folded into the frozen weights.
    pub fn new(adapter: Adapter) -> Self {
        GlobalModel { adapter, residual: Deltas::new() }
    }

    /// Takes a round's aggregation: its adapter replaces the global one and its residual, if
    /// any, is added to the folded residual. Errors when the aggregation has no adapter.
    pub fn absorb(&mut self, merged: &Merged) -> Result<()> {
        let adapter = merged.adapter().cloned().context(
            "the aggregation returned dense deltas without an adapter; re-factorise them (refactor_rank) \
             or aggregate with an operator that keeps a low-rank form",
        )?;
        if let Some(r) = merged.residual() {
            self.residual = sum_deltas(&self.residual, r);
        }
        self.adapter = adapter;
        Ok(())
    }

    /// The global model's update of the frozen backbone: residual plus the adapter's `ΔW`.
    pub fn deltas(&self) -> Deltas {
        sum_deltas(&self.residual, &self.adapter.deltas())
    }

    /// What a client adapting blocks `≥ first_block` keeps frozen: the residual of every module
    /// plus the global adapter's `ΔW` below `first_block`.
    pub fn frozen_for(&self, first_block: usize) -> Deltas {
        let lower: Deltas = self
            .adapter
            .modules
            .keys()
            .filter(|k| k.block < first_block)
            .map(|k| (*k, self.adapter.delta(k)))
            .collect();
        sum_deltas(&self.residual, &lower)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::{ModuleKey, TargetModule::*};
    use crate::analysis::test_support::{random_adapter, tiny_env};
    use crate::federated::aggregation_options;
    use crate::linalg::Matrix;
    use crate::merge::{delta_mean, merge, MergeMethod, MergeOptions};
    use crate::model::lora::{LoraVars, TrainingBranch};
    use crate::model::{Backbone, Numerics};
    use std::collections::BTreeSet;

    use crate::model::max_abs_diff;

    #[test]
    fn frozen_plus_residual_with_the_adapter_branch_is_the_dense_weighted_mean() {
        // Three clients (ranks 2, 3, 2; the third adapts blocks ≥ 1 only), unequal weights.
        let (bb, env) = tiny_env(3, 3, 24, 12);
        let a = random_adapter(&bb, &[Query, Value], 2, 1);
        let b = random_adapter(&bb, &[Query, Value], 3, 2);
        let c = random_adapter(&bb, &[Query, Value], 2, 3).filtered(|k| k.block >= 1);
        let (ads, w) = ([&a, &b, &c], [1.0, 3.0, 2.0]);
        let fedex = MergeMethod::parse("fedex").unwrap();
        let merged = merge(&ads, &w, &fedex, &aggregation_options(&fedex, &MergeOptions::default(), 3)).unwrap();
        let mut global = GlobalModel::new(a.clone());
        global.absorb(&merged).unwrap();
        // The model a client of the next round starts from: the backbone with the residual
        // folded in, the global adapter as its LoRA branch.
        let x = env.test.block_input(0);
        let folded = bb.with_deltas(&global.residual).unwrap();
        let lora = LoraVars::from_adapter(&global.adapter, bb.device()).unwrap();
        let active: BTreeSet<ModuleKey> = global.adapter.modules.keys().copied().collect();
        let mut rng = crate::util::rng_for(1, "unused");
        let branch = TrainingBranch::new(&lora, &active, 0.0, &mut rng);
        let feats = folded.forward_from(0, x, &branch, Numerics::Fused).unwrap();
        let client_view = env.head.classifier(&folded, &branch, Numerics::Fused).unwrap().logits(&feats).unwrap();
        // The dense model holding the weighted mean of the clients' ΔW, and the evaluation path.
        let dense = |d: &Deltas| -> Backbone { bb.with_deltas(d).unwrap() };
        let mean = env.test.logits_from(&dense(&delta_mean(&ads, &w).unwrap()), 0).unwrap();
        let evaluated = env.test.logits_from(&dense(&global.deltas()), 0).unwrap();
        assert!(max_abs_diff(&client_view, &mean) < 1e-3, "{}", max_abs_diff(&client_view, &mean));
        assert!(max_abs_diff(&evaluated, &mean) < 1e-3, "{}", max_abs_diff(&evaluated, &mean));
        // Without the residual (plain FedAvg of the factors) the logits are far from it.
        let fedavg = merge(
            &ads,
            &w,
            &MergeMethod::parse("factor").unwrap(),
            &aggregation_options(&fedex, &MergeOptions::default(), 3),
        )
        .unwrap();
        let fedavg = env.test.logits_from(&dense(&fedavg.deltas()), 0).unwrap();
        assert!(max_abs_diff(&fedavg, &mean) > 0.1, "{}", max_abs_diff(&fedavg, &mean));
    }

    #[test]
    fn residuals_accumulate_and_top_block_clients_freeze_the_lower_adapter() {
        let (bb, _) = tiny_env(3, 3, 8, 8);
        let a = random_adapter(&bb, &[Query], 2, 4);
        let b = random_adapter(&bb, &[Query], 2, 5);
        let q = |block| ModuleKey { block, module: Query };
        let r1: Deltas = [(q(0), Matrix::from_vec(16, 16, vec![1.0; 256]))].into();
        let r2: Deltas =
            [(q(0), Matrix::from_vec(16, 16, vec![0.5; 256])), (q(2), Matrix::from_vec(16, 16, vec![2.0; 256]))].into();
        let mut g = GlobalModel::new(a.clone());
        assert_eq!(g.deltas(), a.deltas());
        assert!(g.frozen_for(0).is_empty());
        g.absorb(&Merged::Folded { adapter: b.clone(), residual: r1 }).unwrap();
        g.absorb(&Merged::Folded { adapter: b.clone(), residual: r2 }).unwrap();
        assert_eq!(g.adapter, b);
        assert_eq!(g.residual[&q(0)].data, vec![1.5; 256]);
        assert_eq!(g.residual[&q(2)].data, vec![2.0; 256]);
        // A client adapting blocks ≥ 2: the residual everywhere plus the adapter of blocks 0, 1.
        let frozen = g.frozen_for(2);
        assert_eq!(frozen.keys().copied().collect::<Vec<_>>(), vec![q(0), q(1), q(2)]);
        assert_eq!(frozen[&q(0)], g.residual[&q(0)].add(&b.delta(&q(0))));
        assert_eq!(frozen[&q(1)], b.delta(&q(1)));
        assert_eq!(frozen[&q(2)], g.residual[&q(2)]);
        // A plain adapter leaves the residual alone; dense deltas are refused.
        g.absorb(&Merged::Adapter(a.clone())).unwrap();
        assert_eq!(g.residual[&q(0)].data, vec![1.5; 256]);
        assert!(g.absorb(&Merged::Dense(a.deltas())).is_err());
    }
}
