//! Pruning of LoRA adapters.

pub mod magnitude;
