//! The cooperative game whose players are LoRA groups (one per block by default):
//! v(S) = test accuracy (or −loss) of the frozen backbone with only the adapters of
//! the groups in S switched on.
//!
//! Two accelerations, both exact because the backbone is frozen:
//! - every forward starts at the coalition's lowest active block, from the cached
//!   frozen hidden states (`Evaluator`);
//! - exact enumeration walks the blocks depth-first and keeps the hidden state at each
//!   depth, so coalitions sharing a prefix of block choices share its compute: about
//!   2^(n+1) block passes instead of n·2^n.

use crate::adapter::{Adapter, Grouping, ModuleKey};
use crate::eval::{Deltas, Evaluator};
use crate::model::head::loss_and_accuracy;
use crate::model::{Backbone, NoBranch, Numerics};
use crate::shapley::coalition::MAX_PLAYERS;
use crate::shapley::{Coalition, Game};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// What v(S) measures.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GameValue {
    /// Test accuracy in [0, 1].
    #[default]
    Accuracy,
    /// Negative mean test cross-entropy.
    NegLoss,
}

impl crate::choice::Choice for GameValue {
    const WHAT: &'static str = "game value";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("accuracy", "test accuracy in [0, 1]", GameValue::Accuracy),
        ("neg-loss", "negative mean test cross-entropy", GameValue::NegLoss),
    ];
}

impl GameValue {
    /// Name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            GameValue::Accuracy => "accuracy",
            GameValue::NegLoss => "neg_loss",
        }
    }
}

/// The LoRA layer game of one adapter on one evaluation set.
pub struct LayerGame<'a> {
    evaluator: &'a Evaluator,
    groups: Vec<Vec<ModuleKey>>,
    deltas: Deltas,
    value: GameValue,
    label: String,
}

impl<'a> LayerGame<'a> {
    /// The game of `adapter` with players formed by `grouping`.
    pub fn new(
        evaluator: &'a Evaluator,
        adapter: &Adapter,
        grouping: Grouping,
        value: GameValue,
        label: &str,
    ) -> Result<Self> {
        if !evaluator.is_frozen() {
            bail!("internal: the layer game needs an evaluator over the frozen backbone");
        }
        let groups = adapter.groups(grouping);
        if groups.is_empty() {
            bail!("the adapter has no modules: nothing to value");
        }
        if groups.len() > MAX_PLAYERS {
            bail!("{} players exceed the {MAX_PLAYERS} a coalition bitmask holds: use --players block", groups.len());
        }
        Ok(Self { evaluator, groups, deltas: adapter.deltas(), value, label: label.to_string() })
    }

    /// The players' module groups.
    pub fn groups(&self) -> &[Vec<ModuleKey>] {
        &self.groups
    }

    /// The updates of coalition `s`.
    pub fn coalition_deltas(&self, s: Coalition) -> Deltas {
        let mut out = Deltas::new();
        for (i, g) in self.groups.iter().enumerate() {
            if s >> i & 1 == 1 {
                for k in g {
                    out.insert(*k, self.deltas[k].clone());
                }
            }
        }
        out
    }

    fn metric(&self, logits: &Tensor) -> Result<f64> {
        let (loss, acc) = loss_and_accuracy(logits, self.evaluator.labels())?;
        Ok(match self.value {
            GameValue::Accuracy => acc,
            GameValue::NegLoss => -loss,
        })
    }

    /// v(S) by a plain forward from the input with the coalition's adapters merged
    /// (the reference the fast paths are checked against).
    pub fn value_plain(&self, s: Coalition) -> Result<f64> {
        let merged = self.evaluator.backbone().with_deltas(&self.coalition_deltas(s))?;
        self.metric(&self.evaluator.logits_from(&merged, 0)?)
    }

    /// v(S) starting at the coalition's lowest active block.
    pub fn value_fast(&self, s: Coalition) -> Result<f64> {
        let d = self.coalition_deltas(s);
        let start = d.keys().map(|k| k.block).min().unwrap_or(self.evaluator.backbone().num_blocks());
        let merged = self.evaluator.backbone().with_deltas(&d)?;
        self.metric(&self.evaluator.logits_from(&merged, start)?)
    }

    /// Every coalition's value (index = bitmask), by the depth-first walk over blocks.
    pub fn enumerate_all(&self) -> Result<Vec<f64>> {
        let n = self.groups.len();
        if n > 20 {
            bail!("exact enumeration of {n} players needs 2^{n} evaluations: use at most 20 players (--players block)");
        }
        let bb = self.evaluator.backbone();
        let nb = bb.num_blocks();
        // Players of each block (a player belongs to the block of its modules).
        let mut players_of_block: Vec<Vec<usize>> = vec![Vec::new(); nb];
        for (i, g) in self.groups.iter().enumerate() {
            let b = g[0].block;
            if g.iter().any(|k| k.block != b) {
                bail!("player {i} spans several blocks; the prefix walk needs players within one block");
            }
            players_of_block[b].push(i);
        }
        let mut values = vec![f64::NAN; 1 << n];
        let results = self.walk(bb, &players_of_block, 0, None, 0)?;
        for (s, v) in results {
            values[s as usize] = v;
        }
        Ok(values)
    }

    /// Depth-first walk: `hidden` is the state entering `block` (None = frozen, use the cache).
    fn walk(
        &self,
        bb: &Backbone,
        players_of_block: &[Vec<usize>],
        block: usize,
        hidden: Option<&Tensor>,
        prefix: Coalition,
    ) -> Result<Vec<(Coalition, f64)>> {
        let nb = bb.num_blocks();
        let x = match hidden {
            Some(h) => h.clone(),
            None => self.evaluator.block_input(block).clone(),
        };
        if block == nb {
            let feats = bb.cls_feature(&x, Numerics::Fused)?;
            let logits = self.evaluator.head().logits(&feats)?;
            return Ok(vec![(prefix, self.metric(&logits)?)]);
        }
        let players = &players_of_block[block];
        let subsets: Vec<Coalition> = (0..(1u64 << players.len())).collect();
        let branch = |sub: Coalition| -> Result<Vec<(Coalition, f64)>> {
            let mut s = prefix;
            let mut d = Deltas::new();
            for (j, &p) in players.iter().enumerate() {
                if sub >> j & 1 == 1 {
                    s |= 1 << p;
                    for k in &self.groups[p] {
                        d.insert(*k, self.deltas[k].clone());
                    }
                }
            }
            if hidden.is_none() && d.is_empty() {
                // Still frozen: the next block's input is cached.
                return self.walk(bb, players_of_block, block + 1, None, s);
            }
            let merged = bb.with_deltas(&d)?;
            let out = merged.block(block, &x, &NoBranch, Numerics::Fused)?;
            self.walk(bb, players_of_block, block + 1, Some(&out), s)
        };
        // Parallelise the first levels only; deeper levels run inside those tasks.
        let parts: Vec<Vec<(Coalition, f64)>> = if block < 2 {
            subsets.par_iter().map(|s| branch(*s)).collect::<Result<_>>()?
        } else {
            subsets.iter().map(|s| branch(*s)).collect::<Result<_>>()?
        };
        Ok(parts.into_iter().flatten().collect())
    }
}

impl Game for LayerGame<'_> {
    fn n_players(&self) -> usize {
        self.groups.len()
    }

    fn evaluate(&self, coalitions: &[Coalition]) -> Result<Vec<f64>> {
        coalitions.par_iter().map(|s| self.value_fast(*s)).collect()
    }

    fn name(&self) -> String {
        self.label.clone()
    }
}
