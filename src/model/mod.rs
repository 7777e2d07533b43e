//! Frozen backbones behind one interface ([`Encoder`], held as [`Backbone`]): the
//! Hugging Face ViT, BERT, CLIP and DINOv2 architectures, their checkpoint format, LoRA branches
//! and the classifier heads.

pub mod attention;
pub mod bert;
pub mod bert_config;
pub mod branch;
pub mod checkpoint;
pub mod clip;
pub mod clip_config;
pub mod config;
pub mod dinov2;
pub mod dinov2_config;
pub mod encoder;
pub mod head;
pub mod lora;
pub mod norm;
pub mod ops;
pub mod patch;
pub mod pooling;
pub mod pre_ln;
pub mod vit;

pub use bert::Bert;
pub use bert_config::BertConfig;
pub use branch::{Branch, NoBranch};
pub use clip::Clip;
pub use clip_config::ClipConfig;
pub use config::VitConfig;
pub use encoder::{Backbone, Encoder, InputKind, Numerics};
pub use head::{Head, PromptHead, PrototypeHead};
pub use pooling::Pooling;
pub use vit::Vit;

/// The largest absolute element-wise difference of two tensors of the same shape (tests).
#[cfg(test)]
pub(crate) fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_bert;
#[cfg(test)]
mod tests_clip;
