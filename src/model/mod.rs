//! Frozen backbones behind one interface ([`Encoder`], held as [`Backbone`]): the
//! Hugging Face ViT and BERT architectures, their checkpoint format, LoRA branches
//! and the fixed head.

pub mod bert;
pub mod bert_config;
pub mod branch;
pub mod checkpoint;
pub mod config;
pub mod encoder;
pub mod head;
pub mod lora;
pub mod ops;
pub mod vit;

pub use bert::Bert;
pub use bert_config::{BertConfig, Pooling};
pub use branch::{Branch, NoBranch};
pub use config::VitConfig;
pub use encoder::{Backbone, Encoder, InputKind, Numerics};
pub use head::PrototypeHead;
pub use vit::Vit;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bert;
