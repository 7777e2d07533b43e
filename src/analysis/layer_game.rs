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
use crate::model::head::{loss_and_accuracy, Classifier};
use crate::model::{Backbone, NoBranch, Numerics};
use crate::shapley::coalition::MAX_PLAYERS;
use crate::shapley::{Coalition, Game};
use anyhow::{bail, Result};
use candle_core::Tensor;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

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
        let groups = adapter.groups(grouping, evaluator.backbone());
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
        let start = self.evaluator.backbone().first_input_block(d.keys().map(|k| k.block));
        let merged = self.evaluator.backbone().with_deltas(&d)?;
        self.metric(&self.evaluator.logits_from(&merged, start)?)
    }

    /// Every coalition's value (index = bitmask), by the depth-first walk over the blocks on
    /// the input's path. Players with modules after that path (CLIP's text tower) change
    /// the classifier only: the classifier of every subset of them is computed once, and
    /// the walk's leaves pair the image features with each.
    pub fn enumerate_all(&self) -> Result<Vec<f64>> {
        let n = self.groups.len();
        if n > 20 {
            bail!(
                "exact enumeration of {n} players needs 2^{n} evaluations: use at most 20 players (--players block, or layer on a CLIP backbone)"
            );
        }
        let bb = self.evaluator.backbone();
        let nin = bb.input_blocks();
        let mut plan = WalkPlan {
            players_of_block: vec![Vec::new(); nin],
            head_only: Vec::new(),
            text_mask: 0,
            classifiers: HashMap::new(),
        };
        for (i, g) in self.groups.iter().enumerate() {
            let on_path: BTreeSet<usize> = g.iter().map(|k| k.block).filter(|b| *b < nin).collect();
            if g.iter().any(|k| k.block >= nin) {
                plan.text_mask |= 1 << i;
            }
            match on_path.len() {
                0 => plan.head_only.push(i),
                1 => plan.players_of_block[*on_path.first().expect("one block")].push(i),
                _ => bail!("player {i} spans several blocks; the prefix walk needs players within one block"),
            }
        }
        plan.classifiers = self.classifiers(bb, plan.text_mask)?;
        // The walk runs on chunks of the images in parallel (each chunk's hidden states stay
        // in cache); a coalition's logits are its chunks' logits in order.
        let images = self.evaluator.len();
        if images == 0 {
            bail!("the layer game needs at least one evaluation image");
        }
        let chunk = images.div_ceil(4 * rayon::current_num_threads()).max(WALK_MIN_CHUNK);
        let chunks: Vec<(usize, usize)> = (0..images).step_by(chunk).map(|i| (i, chunk.min(images - i))).collect();
        let per_chunk =
            chunks.par_iter().map(|&rows| self.walk(bb, &plan, rows, 0, None, 0)).collect::<Result<Vec<_>>>()?;
        let mut values = vec![f64::NAN; 1 << n];
        let mut columns: Vec<std::vec::IntoIter<(Coalition, Tensor)>> =
            per_chunk.into_iter().map(|c| c.into_iter()).collect();
        for _ in 0..1u64 << n {
            let parts: Vec<(Coalition, Tensor)> = columns.iter_mut().filter_map(|c| c.next()).collect();
            let s = parts[0].0;
            if parts.len() != columns.len() || parts.iter().any(|(t, _)| *t != s) {
                bail!("internal: the walk's image chunks visited the coalitions in different orders");
            }
            let logits: Vec<Tensor> = parts.into_iter().map(|(_, l)| l).collect();
            values[s as usize] = self.metric(&Tensor::cat(&logits, 0)?)?;
        }
        Ok(values)
    }

    /// The classifier of every subset of the players in `mask` (their modules after the
    /// input's path merged), keyed by the subset.
    fn classifiers(&self, bb: &Backbone, mask: Coalition) -> Result<HashMap<Coalition, Classifier>> {
        let nin = bb.input_blocks();
        let mut subsets = vec![0];
        let mut sub = mask;
        while sub != 0 {
            subsets.push(sub);
            sub = (sub - 1) & mask;
        }
        subsets
            .par_iter()
            .map(|&sub| {
                let mut d = self.coalition_deltas(sub);
                d.retain(|k, _| k.block >= nin);
                let model = bb.with_deltas(&d)?;
                Ok((sub, self.evaluator.head().classifier(&model, &NoBranch, Numerics::Fused)?))
            })
            .collect()
    }

    /// Depth-first walk over the images `rows` (first, count), returning every coalition's
    /// logits on them in a fixed order: `hidden` is the state entering `block` (None = frozen,
    /// use the cache).
    fn walk(
        &self,
        bb: &Backbone,
        plan: &WalkPlan,
        rows: (usize, usize),
        block: usize,
        hidden: Option<&Tensor>,
        prefix: Coalition,
    ) -> Result<Vec<(Coalition, Tensor)>> {
        let x = match hidden {
            Some(h) => h.clone(),
            None => self.evaluator.block_input(block).narrow(0, rows.0, rows.1)?,
        };
        if block == bb.input_blocks() {
            return self.leaves(plan, &bb.cls_feature(&x, Numerics::Fused)?, prefix);
        }
        let players = &plan.players_of_block[block];
        let subsets: Vec<Coalition> = (0..(1u64 << players.len())).collect();
        let branch = |sub: Coalition| -> Result<Vec<(Coalition, Tensor)>> {
            let mut s = prefix;
            let mut d = Deltas::new();
            for (j, &p) in players.iter().enumerate() {
                if sub >> j & 1 == 1 {
                    s |= 1 << p;
                    for k in self.groups[p].iter().filter(|k| k.block == block) {
                        d.insert(*k, self.deltas[k].clone());
                    }
                }
            }
            if hidden.is_none() && d.is_empty() {
                // Still frozen: the next block's input is cached.
                return self.walk(bb, plan, rows, block + 1, None, s);
            }
            let merged = bb.with_deltas(&d)?;
            if block + 1 == bb.input_blocks() {
                // The last block: only the rows the features read.
                return self.leaves(plan, &merged.last_block_features(block, &x, &NoBranch, Numerics::Fused)?, s);
            }
            let out = merged.block(block, &x, &NoBranch, Numerics::Fused)?;
            self.walk(bb, plan, rows, block + 1, Some(&out), s)
        };
        let parts: Vec<Vec<(Coalition, Tensor)>> = subsets.iter().map(|s| branch(*s)).collect::<Result<_>>()?;
        Ok(parts.into_iter().flatten().collect())
    }

    /// The logits of the coalitions that extend `prefix` by players acting on the
    /// classifier only, from the encoder features `feats` of `prefix`'s input-path players.
    fn leaves(&self, plan: &WalkPlan, feats: &Tensor, prefix: Coalition) -> Result<Vec<(Coalition, Tensor)>> {
        (0..1u64 << plan.head_only.len())
            .map(|h| {
                let s = plan.head_only.iter().enumerate().fold(prefix, |s, (j, &p)| s | (h >> j & 1) << p);
                Ok((s, plan.classifiers[&(s & plan.text_mask)].logits(feats)?))
            })
            .collect()
    }
}

/// The fewest images a chunk of the exact walk holds (at least
/// `model::pre_ln::FIRST_TOKEN_MIN_BATCH`, so its last block computes the class token only).
const WALK_MIN_CHUNK: usize = 128;

/// How the exact walk visits the players: by block on the input's path, then the players
/// that only change the classifier, whose classifiers are precomputed.
struct WalkPlan {
    /// Players of each block on the input's path.
    players_of_block: Vec<Vec<usize>>,
    /// Players with no module on the input's path.
    head_only: Vec<usize>,
    /// Players with a module after the input's path.
    text_mask: Coalition,
    /// Classifier of every subset of `text_mask`.
    classifiers: HashMap<Coalition, Classifier>,
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
