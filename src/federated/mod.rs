//! Federated-learning utilities.

pub mod global;
pub mod local;
pub mod split;

use crate::merge::{MergeMethod, MergeOptions};

/// The options a server aggregates client uploads with: `base`, with heterogeneous ranks
/// zero-padded and, for an operator that does not keep a low-rank form, the dense result
/// re-factorised to the largest client rank `max_rank` (unless `base` sets a rank), so that
/// the global model stays an adapter.
pub fn aggregation_options(aggregator: &MergeMethod, base: &MergeOptions, max_rank: usize) -> MergeOptions {
    let mut opts = MergeOptions { pad_ranks: true, ..base.clone() };
    if !aggregator.keeps_low_rank() && opts.refactor_rank.is_none() {
        opts.refactor_rank = Some(max_rank);
    }
    opts
}
