//! Grid training: the runs of a grid (seeds × methods of one task and backbone) trained
//! at once, one run per core.
//!
//! Every run is exactly the single-run loop ([`train_adapter`]): its adapter, log and
//! every bit of both are what training it alone gives, whichever runs share the grid
//! (tested). Runs are spread over the rayon pool; inside a run, ops stay on one thread
//! (see `crate::parallel`).
//!
//! Why not one batched pass through the shared frozen weights? On the CPU the step's
//! cost is per example: a step on a batch of 128 trains at 0.9× the images/s of a batch
//! of 32, so concatenating the runs' batches saves nothing, while the op overhead it
//! would save is what parallel runs hide anyway. (A batched pass pays off on a GPU, whose
//! kernels are launch-bound at this size; see docs/performance.md.)

use super::config::TrainConfig;
use super::trainer::{train_adapter, StepRecord, TrainOutput};
use crate::model::head::Head;
use crate::model::Backbone;
use anyhow::Result;
use candle_core::Tensor;
use rayon::prelude::*;

/// Trains one adapter per config on the same task (`train_inputs`, `labels` as for
/// [`train_adapter`]), several at once. `on_step(i, record)` is called after each step of
/// run `i` (from the thread training it). Returns each run's outcome in `cfgs` order: a run
/// that fails (a diverging loss, say) does not stop the others.
pub fn train_grid(
    backbone: &Backbone,
    head: &Head,
    train_inputs: &[Tensor],
    labels: &[u32],
    cfgs: &[TrainConfig],
    on_step: impl Fn(usize, &StepRecord) + Sync,
) -> Vec<Result<TrainOutput>> {
    cfgs.par_iter()
        .enumerate()
        .map(|(i, cfg)| train_adapter(backbone, head, train_inputs, labels, cfg, None, |r| on_step(i, r)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::test_support::tiny_env;
    use crate::train::Method;

    fn cfg(method: Method, seed: u64) -> TrainConfig {
        TrainConfig { method, seed, steps: 12, batch_size: 8, ..TrainConfig::default() }
    }

    #[test]
    fn inverse_p_rescaling_at_p_one_is_bit_identical_lora_and_changes_dropped_runs() {
        use crate::train::Rescale;
        let (bb, env) = tiny_env(3, 3, 24, 6);
        let labels = &env.data.train.labels;
        let run = |c: &TrainConfig| train_adapter(&bb, &env.head, &env.train_inputs, labels, c, None, |_| {}).unwrap();
        let lora = run(&cfg(Method::Lora, 4));
        let full = run(&TrainConfig { rescale: Rescale::InverseP, ..cfg(Method::StochasticDepth { p: 1.0 }, 4) });
        assert_eq!(lora.adapter.deltas(), full.adapter.deltas(), "p = 1 with 1/p rescaling must be LoRA's bits");
        // Where groups are dropped, rescaling changes the run (the option is not ignored).
        let plain = run(&cfg(Method::Copra, 4));
        let rescaled = run(&TrainConfig { rescale: Rescale::InverseP, ..cfg(Method::Copra, 4) });
        assert_ne!(plain.adapter.deltas(), rescaled.adapter.deltas());
    }

    #[test]
    fn a_run_in_a_grid_is_bit_identical_to_training_it_alone_whatever_shares_the_grid() {
        let (bb, env) = tiny_env(3, 3, 24, 6);
        let labels = &env.data.train.labels;
        let cfgs = [cfg(Method::Lora, 1), cfg(Method::Copra, 2), cfg(Method::StochasticDepth { p: 0.5 }, 3)];
        let alone: Vec<TrainOutput> = cfgs
            .iter()
            .map(|c| train_adapter(&bb, &env.head, &env.train_inputs, labels, c, None, |_| {}).unwrap())
            .collect();
        let grid = train_grid(&bb, &env.head, &env.train_inputs, labels, &cfgs, |_, _| {});
        let other =
            train_grid(&bb, &env.head, &env.train_inputs, labels, &[cfgs[2].clone(), cfgs[0].clone()], |_, _| {});
        for (i, (a, g)) in alone.iter().zip(&grid).enumerate() {
            let g = g.as_ref().unwrap();
            assert_eq!(a.adapter, g.adapter, "run {i}: the grid changed the adapter");
            assert_eq!(a.log, g.log, "run {i}: the grid changed the log");
        }
        assert_eq!(other[0].as_ref().unwrap().adapter, alone[2].adapter);
        assert_eq!(other[1].as_ref().unwrap().adapter, alone[0].adapter);
        // The runs differ from each other (the comparison above is not vacuous).
        assert_ne!(alone[0].adapter, alone[1].adapter);
    }

    #[test]
    fn a_diverging_run_fails_alone_and_the_others_finish() {
        let (bb, env) = tiny_env(2, 3, 24, 6);
        let diverging = TrainConfig { lr: 1e30, min_lr: 1e29, ..cfg(Method::Lora, 1) };
        let cfgs = [cfg(Method::Lora, 1), diverging, cfg(Method::Lora, 2)];
        let counts = std::sync::Mutex::new([0usize; 3]);
        let out = train_grid(&bb, &env.head, &env.train_inputs, &env.data.train.labels, &cfgs, |i, _| {
            counts.lock().unwrap()[i] += 1;
        });
        let err = out[1].as_ref().err().expect("the run at lr 1e30 diverges").to_string();
        assert!(err.contains("diverged"), "{err}");
        assert!(out[0].is_ok() && out[2].is_ok());
        let counts = counts.into_inner().unwrap();
        assert_eq!((counts[0], counts[2]), (12, 12), "the other runs ran every step");
        assert!(counts[1] < 12);
    }
}
