//! Test fixtures shared by the analyses' tests: a tiny random backbone, random images, a
//! prototype head built from its frozen features, and random adapters.

use crate::adapter::fit::ModuleShapes;
use crate::adapter::{Adapter, LoraFactors, LoraSpec, ModuleKey, TargetModule};
use crate::data::{ImageSet, TaskData};
use crate::eval::Evaluator;
use crate::lab::TaskEnv;
use crate::linalg::Matrix;
use crate::model::head::{Head, PrototypeHead};
use crate::model::{Backbone, Numerics, VitConfig};
use crate::util::rng_for;
use candle_core::Device;
use rand::Rng;

/// A tiny ViT with `blocks` blocks.
pub fn tiny_config(blocks: usize) -> VitConfig {
    VitConfig {
        hidden_size: 16,
        num_hidden_layers: blocks,
        num_attention_heads: 2,
        intermediate_size: 24,
        image_size: 16,
        patch_size: 4,
        ..VitConfig::tiny()
    }
}

/// Random images in [-1, 1] with labels `i % classes`.
pub fn image_set(n: usize, classes: usize, cfg: &VitConfig, seed: u64) -> ImageSet {
    let mut rng = rng_for(seed, "test-images");
    let len = n * cfg.num_channels * cfg.image_size * cfg.image_size;
    ImageSet {
        images: (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        labels: (0..n).map(|i| (i % classes) as u32).collect(),
        channels: cfg.num_channels,
        height: cfg.image_size,
        width: cfg.image_size,
        tokens: false,
    }
}

/// A task environment on a tiny random backbone: random train and test images, the head
/// from the frozen features of the training images.
pub fn tiny_env(blocks: usize, classes: usize, train: usize, test: usize) -> (Backbone, TaskEnv) {
    let cfg = tiny_config(blocks);
    let device = Device::Cpu;
    let bb = Backbone::init_random(&cfg, 1, &device).unwrap();
    let train_set = image_set(train, classes, &cfg, 2);
    let test_set = image_set(test, classes, &cfg, 3);
    let train_images = crate::lab::images_tensor(&train_set, &device).unwrap();
    let test_images = crate::lab::images_tensor(&test_set, &device).unwrap();
    let train_inputs = bb.frozen_block_inputs(&train_images, 64).unwrap();
    let feats = bb.cls_feature(&train_inputs[bb.num_blocks()], Numerics::Fused).unwrap();
    let head = Head::Prototype(PrototypeHead::from_features(&feats, &train_set.labels, classes, 20.0).unwrap());
    let test_ev = Evaluator::new(&bb, &head, &test_images, &test_set.labels, 64).unwrap();
    let train_ev = Evaluator::new(&bb, &head, &train_images, &train_set.labels, 64).unwrap();
    let data = TaskData {
        name: "tiny".into(),
        class_names: (0..classes).map(|c| format!("c{c}")).collect(),
        train: train_set,
        valid: image_set(test, classes, &cfg, 4),
        test: test_set,
    };
    let env = TaskEnv {
        data,
        head,
        train_inputs,
        test: test_ev,
        train: train_ev,
        valid_eval: Default::default(),
        data_fingerprint: None,
    };
    (bb.clone(), env)
}

/// A random adapter with large factors on every block of `cfg` and the `targets`.
pub fn random_adapter(shapes: &dyn ModuleShapes, targets: &[TargetModule], rank: usize, seed: u64) -> Adapter {
    let mut rng = rng_for(seed, "test-adapter");
    let spec = LoraSpec { rank, targets: targets.to_vec(), ..LoraSpec::default() };
    let mut modules = std::collections::BTreeMap::new();
    for block in 0..shapes.num_blocks() {
        for &module in targets {
            let (out, inp) = shapes.module_shape(block, module);
            let mut m = |r: usize, c: usize| {
                Matrix::from_vec(r, c, (0..r * c).map(|_| rng.random_range(-1.0f32..1.0)).collect())
            };
            modules.insert(ModuleKey { block, module }, LoraFactors { a: m(rank, inp), b: m(out, rank) });
        }
    }
    Adapter { spec, modules }
}
