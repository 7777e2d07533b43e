//! The frozen ViT backbone, its checkpoint format, LoRA branches and the fixed head.

pub mod checkpoint;
pub mod config;
pub mod head;
pub mod lora;
pub mod ops;
pub mod vit;

pub use config::VitConfig;
pub use head::PrototypeHead;
pub use vit::{Backbone, Branch, NoBranch, Numerics};

#[cfg(test)]
mod tests;
