//! Options of a federated simulation and their checks.

use crate::federated::split::SplitMethod;
use crate::merge::{MergeMethod, MergeOptions};
use anyhow::{bail, Result};

/// Options of a federated simulation.
#[derive(Clone, Debug)]
pub struct FederatedOptions {
    /// Number of clients K.
    pub clients: usize,
    /// Partition of the training shots among the clients.
    pub split: SplitMethod,
    /// Communication rounds R (1 = one-shot merging).
    pub rounds: usize,
    /// Fraction of the clients drawn each round, in `(0, 1]` (at least one client).
    pub client_fraction: f64,
    /// Server aggregation operator.
    pub aggregator: MergeMethod,
    /// Merge options (LoRA Align, SVD rank, …); `pad_ranks` is always switched on.
    pub merge: MergeOptions,
    /// Per-client LoRA ranks, cycled over clients (empty: the training config's rank).
    pub client_ranks: Vec<usize>,
    /// Per-client number of top blocks adapted, cycled over clients (empty: every block).
    pub client_top_blocks: Vec<usize>,
    /// Evaluate every participating client's local model on the test set.
    pub evaluate_clients: bool,
}

impl Default for FederatedOptions {
    fn default() -> Self {
        Self {
            clients: 10,
            split: SplitMethod::Dirichlet { alpha: 0.5, min_size: 16 },
            rounds: 1,
            client_fraction: 1.0,
            aggregator: MergeMethod::parse(crate::merge::registry::DEFAULT_AGGREGATOR)
                .expect("the default aggregator parses"),
            merge: MergeOptions::default(),
            client_ranks: Vec::new(),
            client_top_blocks: Vec::new(),
            evaluate_clients: true,
        }
    }
}

impl FederatedOptions {
    /// Checks the options against a backbone of `num_blocks` blocks; errors name the option.
    pub fn validate(&self, num_blocks: usize) -> Result<()> {
        if self.clients == 0 {
            bail!("--clients must be at least 1");
        }
        if self.rounds == 0 {
            bail!("--rounds must be at least 1 (1 = one-shot merging)");
        }
        if !(self.client_fraction > 0.0 && self.client_fraction <= 1.0) {
            bail!("--client-fraction {} must be in (0, 1]", self.client_fraction);
        }
        if self.client_ranks.contains(&0) {
            bail!("--client-ranks contains 0; every rank must be at least 1");
        }
        if let Some(k) = self.client_top_blocks.iter().find(|k| **k == 0 || **k > num_blocks) {
            bail!("--client-top-blocks value {k} is outside 1..={num_blocks} (the backbone's block count)");
        }
        self.aggregator.validate()
    }

    /// The rank of client `c` (`base` when no per-client ranks are set).
    pub fn rank_of(&self, c: usize, base: usize) -> usize {
        if self.client_ranks.is_empty() {
            base
        } else {
            self.client_ranks[c % self.client_ranks.len()]
        }
    }

    /// The lowest block client `c` adapts on a backbone of `num_blocks` blocks.
    pub fn first_block_of(&self, c: usize, num_blocks: usize) -> usize {
        if self.client_top_blocks.is_empty() {
            0
        } else {
            num_blocks - self.client_top_blocks[c % self.client_top_blocks.len()].min(num_blocks)
        }
    }

    /// How many clients take part in each round: `max(1, round(fraction · K))`.
    pub fn clients_per_round(&self) -> usize {
        ((self.client_fraction * self.clients as f64).round() as usize).clamp(1, self.clients.max(1))
    }
}
