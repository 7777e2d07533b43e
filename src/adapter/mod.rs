//! LoRA adapters as plain data: which modules carry a branch, their factors
//! `A` ([r, in]) and `B` ([out, r]), the scaling rule, and how modules group
//! into players. Training, analyses and file formats all meet here; nothing in
//! this module depends on the tensor backend.

pub mod fit;
pub mod names;
pub mod pattern;
pub mod peft;
pub mod peft_config;

pub use peft::PeftLayout;

use crate::linalg::Matrix;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// A linear layer of a ViT block that can carry a LoRA branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetModule {
    /// Attention query projection.
    Query,
    /// Attention key projection.
    Key,
    /// Attention value projection.
    Value,
    /// Attention output projection.
    Output,
    /// First MLP layer (`intermediate.dense`).
    Fc1,
    /// Second MLP layer (`output.dense`).
    Fc2,
}

impl TargetModule {
    /// Every module, in block order.
    pub const ALL: [TargetModule; 6] = [
        TargetModule::Query,
        TargetModule::Key,
        TargetModule::Value,
        TargetModule::Output,
        TargetModule::Fc1,
        TargetModule::Fc2,
    ];

    /// Position in [`TargetModule::ALL`] (the order of every per-module table).
    pub fn index(self) -> usize {
        self as usize
    }

    /// Short name used on the command line and in tables: `q`, `k`, `v`, `o`, `fc1`, `fc2`.
    pub fn short(self) -> &'static str {
        match self {
            TargetModule::Query => "q",
            TargetModule::Key => "k",
            TargetModule::Value => "v",
            TargetModule::Output => "o",
            TargetModule::Fc1 => "fc1",
            TargetModule::Fc2 => "fc2",
        }
    }

    /// Parses a short name (`q`), a PEFT name (`q_proj`) or a Hugging Face name (`query`).
    pub fn parse(s: &str) -> Option<TargetModule> {
        let s = s.trim().to_ascii_lowercase();
        let hf_alias = match s.as_str() {
            "query" => Some(TargetModule::Query),
            "key" => Some(TargetModule::Key),
            "value" => Some(TargetModule::Value),
            "q_proj" => Some(TargetModule::Query),
            "k_proj" => Some(TargetModule::Key),
            "v_proj" => Some(TargetModule::Value),
            "out" | "output" | "out_proj" | "o_proj" => Some(TargetModule::Output),
            "intermediate" | "mlp1" => Some(TargetModule::Fc1),
            "mlp2" => Some(TargetModule::Fc2),
            _ => None,
        };
        hf_alias.or_else(|| TargetModule::ALL.into_iter().find(|m| s == m.short()))
    }
}

impl fmt::Display for TargetModule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short())
    }
}

/// Where a block sits in a backbone with one or more encoders: the encoder's name (empty
/// for single-encoder backbones; `vision` / `text` for CLIP) and the block's index inside it.
/// Blocks are numbered globally, encoder after encoder (CLIP: vision blocks first).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockPlace {
    /// Encoder name (`""`, `vision`, `text`).
    pub encoder: &'static str,
    /// Index of the block inside its encoder.
    pub layer: usize,
}

impl BlockPlace {
    /// The place of `block` in a single-encoder backbone.
    pub fn single(block: usize) -> BlockPlace {
        BlockPlace { encoder: "", layer: block }
    }

    /// `b3` (single encoder) or `vision.b3`.
    pub fn label(self) -> String {
        if self.encoder.is_empty() {
            format!("b{}", self.layer)
        } else {
            format!("{}.b{}", self.encoder, self.layer)
        }
    }
}

/// One adapted linear layer: transformer block index and module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ModuleKey {
    /// Transformer block index, 0-based from the input.
    pub block: usize,
    /// Which linear layer of the block.
    pub module: TargetModule,
}

impl fmt::Display for ModuleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.block, self.module)
    }
}

/// How the LoRA scale `s` follows from alpha and rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scaling {
    /// `s = alpha / sqrt(r)` (rsLoRA; CLIP-LoRA's default).
    Rslora,
    /// `s = alpha / r` (the original LoRA paper, PEFT's default).
    Standard,
}

impl Scaling {
    /// The scale for a module of rank `rank`.
    pub fn scale(self, alpha: f64, rank: usize) -> f64 {
        match self {
            Scaling::Rslora => alpha / (rank as f64).sqrt(),
            Scaling::Standard => alpha / rank as f64,
        }
    }
}

/// The hyper-parameters that define an adapter's shape and scale.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    /// Rank r (default 2, as CLIP-LoRA).
    pub rank: usize,
    /// Alpha (default 1).
    pub alpha: f64,
    /// Scaling rule (default alpha/sqrt(r)).
    pub scaling: Scaling,
    /// Input dropout on the LoRA branch during training (default 0.25).
    pub dropout: f64,
    /// Adapted modules in every block (default q, k, v).
    pub targets: Vec<TargetModule>,
}

impl Default for LoraSpec {
    fn default() -> Self {
        Self {
            rank: 2,
            alpha: 1.0,
            scaling: Scaling::Rslora,
            dropout: 0.25,
            targets: vec![TargetModule::Query, TargetModule::Key, TargetModule::Value],
        }
    }
}

impl LoraSpec {
    /// The scale `s` for a module of rank `rank` under this spec.
    pub fn scale_for(&self, rank: usize) -> f64 {
        self.scaling.scale(self.alpha, rank)
    }
}

/// The two factors of one LoRA branch: `A` is `[r, in]`, `B` is `[out, r]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraFactors {
    /// Down projection, `[r, in]`.
    pub a: Matrix,
    /// Up projection, `[out, r]`.
    pub b: Matrix,
}

impl LoraFactors {
    /// The rank r of this branch.
    pub fn rank(&self) -> usize {
        self.a.rows
    }

    /// `B · A` (without the scale), `[out, in]`.
    pub fn product(&self) -> Matrix {
        self.b.matmul(&self.a)
    }
}

/// How adapted modules group into players (Bernoulli draws in CopRA, players in the Shapley game).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// One group per transformer block, holding all its adapted modules (CoTo's reference).
    #[default]
    Block,
    /// One group per adapted module.
    Module,
    /// One group per block index shared by the encoders (CLIP: vision block ℓ and text
    /// block ℓ form one player); the same as `block` on single-encoder backbones.
    Layer,
}

impl crate::choice::Choice for Grouping {
    const WHAT: &'static str = "player grouping";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("block", "one group per transformer block, holding all its adapted modules", Grouping::Block),
        ("module", "one group per adapted module", Grouping::Module),
        ("layer", "one group per block index, shared by both encoders of a CLIP backbone", Grouping::Layer),
    ];
}

/// A full adapter: spec plus the factors of every adapted module.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Adapter {
    /// Shape and scale hyper-parameters.
    pub spec: LoraSpec,
    /// Factors per adapted module, ordered by block then module.
    pub modules: BTreeMap<ModuleKey, LoraFactors>,
}

impl Adapter {
    /// The scale `s` of one module (depends on its own rank).
    pub fn scale_of(&self, key: &ModuleKey) -> f64 {
        self.spec.scale_for(self.modules[key].rank())
    }

    /// The weight update `ΔW = s · B · A` of one module, `[out, in]`.
    pub fn delta(&self, key: &ModuleKey) -> Matrix {
        let f = &self.modules[key];
        f.product().scale(self.scale_of(key) as f32)
    }

    /// The weight update `ΔW = s · B · A` of every module, `[out, in]` each, in key order.
    pub fn deltas(&self) -> BTreeMap<ModuleKey, Matrix> {
        self.modules.keys().map(|k| (*k, self.delta(k))).collect()
    }

    /// The set of blocks that carry at least one adapted module.
    pub fn blocks(&self) -> BTreeSet<usize> {
        self.modules.keys().map(|k| k.block).collect()
    }

    /// Module keys in canonical order.
    pub fn keys(&self) -> Vec<ModuleKey> {
        self.modules.keys().copied().collect()
    }

    /// The groups (players) under `grouping` on a backbone of `shapes`: each a list of module
    /// keys, in canonical order.
    pub fn groups(&self, grouping: Grouping, shapes: &dyn fit::ModuleShapes) -> Vec<Vec<ModuleKey>> {
        group_keys(&self.keys(), grouping, shapes)
    }

    /// A copy keeping only the modules for which `keep` is true (the others are removed,
    /// which is the same as a zero update).
    pub fn filtered(&self, keep: impl Fn(&ModuleKey) -> bool) -> Adapter {
        Adapter {
            spec: self.spec.clone(),
            modules: self.modules.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (*k, v.clone())).collect(),
        }
    }

    /// Total number of trainable values (all A and B entries).
    pub fn num_parameters(&self) -> usize {
        self.modules.values().map(|f| f.a.data.len() + f.b.data.len()).sum()
    }
}

/// Groups module keys (in canonical order) into players on a backbone of `shapes`.
pub fn group_keys(keys: &[ModuleKey], grouping: Grouping, shapes: &dyn fit::ModuleShapes) -> Vec<Vec<ModuleKey>> {
    let by = |id: &dyn Fn(&ModuleKey) -> usize| {
        let mut groups: BTreeMap<usize, Vec<ModuleKey>> = BTreeMap::new();
        for k in keys {
            groups.entry(id(k)).or_default().push(*k);
        }
        groups.into_values().collect()
    };
    match grouping {
        Grouping::Module => keys.iter().map(|k| vec![*k]).collect(),
        Grouping::Block => by(&|k| k.block),
        Grouping::Layer => by(&|k| shapes.place(k.block).layer),
    }
}

/// A short label for a group: `b3` for a block group, `b3.q` for a single module, with the
/// encoder in front on CLIP (`vision.b3`, `text.b1.q`); a layer group is `l3`.
pub fn group_label(group: &[ModuleKey], grouping: Grouping, shapes: &dyn fit::ModuleShapes) -> String {
    let place = shapes.place(group[0].block);
    match grouping {
        Grouping::Block => place.label(),
        Grouping::Module => format!("{}.{}", place.label(), group[0].module),
        Grouping::Layer => format!("l{}", place.layer),
    }
}
