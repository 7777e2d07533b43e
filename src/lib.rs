//! copra-lab: a research toolkit for CopRA (progressive LoRA training, arXiv 2410.22911;
//! CoTo, ICML 2025). It trains LoRA and CopRA adapters side by side on a frozen encoder (the
//! built-in ViT, or a Hugging Face ViT, BERT, CLIP or DINOv2 folder) and measures what the method
//! claims: linear mode connectivity, per-layer Shapley values, merging and pruning.
//!
//! Flow: [`train::TrainConfig`] → [`data`] → [`model`] backbone + [`adapter`] →
//! [`train`] → [`runs`] (cached artifacts) → [`analysis`] commands and [`study`] specs →
//! [`report`] tables and figures.

#![warn(missing_docs)]

pub mod adapter;
pub mod analysis;
pub mod choice;
pub mod connectivity;
pub mod data;
pub mod eval;
pub mod federated;
pub mod lab;
pub mod linalg;
pub mod merge;
pub mod model;
pub mod parallel;
pub mod pretrain;
pub mod progress;
pub mod prune;
pub mod report;
pub mod runs;
pub mod shapley;
pub mod stats;
pub mod study;
pub mod train;
pub mod util;
