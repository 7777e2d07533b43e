//! Interoperability with the Python stack (transformers `ViTModel`, PEFT), in both directions,
//! through `analyses/hf_interop.py` (see the README).
//!
//! 1. `write_interop_fixture` (ignored: it writes files for Python) writes our backbone (HF
//!    layout), a trained adapter (PEFT layout) and our CLS features for a few images; the Python
//!    script loads both with transformers and PEFT and compares its features with ours.
//! 2. `reads_checkpoint_and_adapter_written_by_transformers_and_peft` loads a random `ViTModel`
//!    and LoRA adapter that transformers 5.24 and PEFT 0.21.2 saved (`tests/fixtures/transformers5`,
//!    written by the script), and checks that our forward gives the features PyTorch computed.
//! 3. `write_bert_interop_fixture` and `write_clip_interop_fixture` (ignored) write the same
//!    exchange for the tiny BERT and CLIP fixtures; the CLIP one trains a run through `Lab`
//!    (both towers, or the encoders `$COPRA_CLIP_ENCODER` names) and writes its adapter as
//!    the run folder holds it. The other direction for those two is checked on every test run
//!    (`src/model/tests_bert.rs`, `src/model/tests_clip.rs`).
//! 4. `write_dinov2_interop_fixture` (ignored) trains a CopRA run on the tiny random DINOv2
//!    and writes its backbone, adapter and pooled features; the other direction is
//!    `tests/dinov2_backbone.rs`.

mod common;

use candle_core::{Device, Tensor};
use copra_lab::adapter::peft;
use copra_lab::lab::{frozen_features, images_tensor, Lab, Run, TaskEnv};
use copra_lab::model::{checkpoint, Backbone};
use copra_lab::progress::Progress;
use copra_lab::train::{AdaptedEncoders, Method, TrainConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest absolute difference tolerated between our features and PyTorch's (f32, 12 blocks).
const TOLERANCE: f32 = 1e-4;

/// The exchange folder: `$COPRA_INTEROP_DIR`, else the committed transformers-5 fixture.
fn interop_dir() -> PathBuf {
    match std::env::var("COPRA_INTEROP_DIR") {
        Ok(dir) => PathBuf::from(dir),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/transformers5"),
    }
}

fn cls_features(backbone: &Backbone, images: &Tensor) -> Tensor {
    frozen_features(backbone, images).unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// The exchange of a trained run on `backbone` (a model folder) in `dir`: a short CopRA run
/// (40 steps, 4 shots, every module, the encoders `encoders` names) on a folder task of shapes
/// written there, our copy of the backbone in `dir/backbone` and the run's adapter files, as
/// the run folder holds them, in `dir/adapter`. Returns the lab, the task and the run.
fn export_shape_run(backbone: &str, encoders: AdaptedEncoders, dir: &Path) -> (Lab, TaskEnv, Run) {
    std::fs::create_dir_all(dir).unwrap();
    let task = format!("folder:{}", common::write_shape_folder(dir, 10).display());
    let lab = Lab::open(backbone, &dir.join("runs")).unwrap();
    let cfg = TrainConfig {
        task,
        method: Method::Copra,
        steps: 40,
        shots: 4,
        test_size: 12,
        batch_size: 6,
        lr: 2e-2,
        encoders,
        lora: copra_lab::adapter::LoraSpec {
            targets: copra_lab::adapter::TargetModule::ALL.to_vec(),
            ..Default::default()
        },
        ..TrainConfig::default()
    };
    let env = lab.task_env(&cfg).unwrap();
    let run = lab.ensure_run(&env, &cfg, false, &Progress::hidden()).unwrap();
    checkpoint::save_dir(&lab.backbone, &dir.join("backbone")).unwrap();
    let adapter_dir = dir.join("adapter");
    std::fs::create_dir_all(&adapter_dir).unwrap();
    for name in [peft::WEIGHTS_FILE, peft::CONFIG_FILE] {
        std::fs::copy(run.dir.join(name), adapter_dir.join(name)).unwrap();
    }
    (lab, env, run)
}

/// Writes `dir/fixture.safetensors`: `images`, and the pooled features of the `frozen`
/// backbone (`frozen`) and of the backbone with the adapter merged (`adapted`).
fn save_feature_fixture(dir: &Path, images: &Tensor, frozen: &Backbone, tuned: &Backbone) {
    let tensors: HashMap<String, Tensor> = [
        ("images".to_string(), images.clone()),
        ("frozen".to_string(), cls_features(frozen, images)),
        ("adapted".to_string(), cls_features(tuned, images)),
    ]
    .into();
    candle_core::safetensors::save(&tensors, dir.join("fixture.safetensors")).unwrap();
}

#[test]
#[ignore]
fn write_interop_fixture() {
    let dir = interop_dir();
    let runs = dir.join("runs");
    let lab = Lab::open("builtin", &runs).unwrap();
    let cfg = TrainConfig { method: Method::Lora, steps: 100, test_size: 32, ..TrainConfig::default() };
    let env = lab.task_env(&cfg).unwrap();
    let run = lab.ensure_run(&env, &cfg, false, &Progress::hidden()).unwrap();
    checkpoint::save_dir(&lab.backbone, &dir.join("backbone")).unwrap();
    peft::save(&run.adapter, &dir.join("adapter"), "backbone").unwrap();
    let images = images_tensor(&env.data.test, &Device::Cpu).unwrap();
    let tuned = lab.backbone.with_deltas(&run.adapter.deltas()).unwrap();
    save_feature_fixture(&dir, &images, &lab.backbone, &tuned);
    std::fs::remove_dir_all(&runs).unwrap();
}

/// The BERT exchange: our copy of the tiny random BERT (HF layout, with its tokenizer), a
/// random adapter on query, value and the MLP output (`output.dense`, which PEFT's suffix
/// matching cannot tell from `attention.output.dense`, so `target_modules` is a regular
/// expression) in the PEFT layout, and our mean-pooled features of a few tokenized texts.
#[test]
#[ignore]
fn write_bert_interop_fixture() {
    use copra_lab::adapter::{LoraFactors, LoraSpec, ModuleKey, PeftLayout, TargetModule};
    use copra_lab::linalg::Matrix;
    use copra_lab::model::{NoBranch, Numerics};
    let dir = interop_dir();
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny/model");
    let backbone = checkpoint::load_dir(&source, &Device::Cpu).unwrap();
    checkpoint::save_dir(&backbone, &dir.join("backbone")).unwrap();
    let targets = vec![TargetModule::Query, TargetModule::Value, TargetModule::Fc2];
    let spec = LoraSpec { rank: 2, alpha: 4.0, targets: targets.clone(), ..LoraSpec::default() };
    let mut modules = std::collections::BTreeMap::new();
    let mut next = 0u32;
    let mut value = || {
        next += 1;
        ((next as f32 * 0.618).fract() - 0.5) * 0.6
    };
    for block in [0, 2] {
        for &module in &targets {
            let (out, inp) = backbone.module_shape(block, module);
            let a = Matrix::from_vec(2, inp, (0..2 * inp).map(|_| value()).collect());
            let b = Matrix::from_vec(out, 2, (0..2 * out).map(|_| value()).collect());
            modules.insert(ModuleKey { block, module }, LoraFactors { a, b });
        }
    }
    let adapter = copra_lab::adapter::Adapter { spec, modules };
    peft::save_as(&adapter, &dir.join("adapter"), "backbone", PeftLayout::single(&copra_lab::model::bert::NAMES))
        .unwrap();
    let texts = ["the cat chases a mouse", "rockets launch into orbit from earth", "disk", "the team wins the match"];
    let (ids, width) = copra_lab::data::text::tokenize(&texts, &source.join("tokenizer.json"), 64).unwrap();
    let ids = Tensor::from_vec(ids, (texts.len(), width), &Device::Cpu).unwrap();
    let mask = ids.ne(0f32).unwrap().to_dtype(candle_core::DType::F32).unwrap();
    let tuned = backbone.with_deltas(&adapter.deltas()).unwrap();
    let features = |bb: &Backbone| bb.features(&ids, &NoBranch, Numerics::Fused).unwrap();
    let tensors: HashMap<String, Tensor> = [
        ("input_ids".to_string(), ids.clone()),
        ("attention_mask".to_string(), mask),
        ("frozen".to_string(), features(&backbone)),
        ("adapted".to_string(), features(&tuned)),
    ]
    .into();
    candle_core::safetensors::save(&tensors, dir.join("fixture.safetensors")).unwrap();
    std::fs::write(dir.join("pooling.txt"), "mean\n").unwrap();
}

/// The CLIP exchange: our copy of the tiny random CLIP (HF layout, with its tokenizer), the
/// adapter of a short CopRA run on a folder task of shapes (as the run folder holds it), and
/// our image embeddings of the test images and text embeddings of the class prompts.
#[test]
#[ignore]
fn write_clip_interop_fixture() {
    use copra_lab::model::head::Head;
    use copra_lab::model::{NoBranch, Numerics};
    let dir = interop_dir();
    let encoders = match std::env::var("COPRA_CLIP_ENCODER").as_deref() {
        Ok("vision") => AdaptedEncoders::Vision,
        Ok("text") => AdaptedEncoders::Text,
        _ => AdaptedEncoders::Both,
    };
    let (lab, env, run) = export_shape_run(&common::tiny_clip(), encoders, &dir);
    let Head::Prompts(head) = &env.head else { panic!("a CLIP backbone has a prompt head") };
    let images = images_tensor(&env.data.test, &Device::Cpu).unwrap();
    let tuned = lab.backbone.with_deltas(&run.adapter.deltas()).unwrap();
    let image = |bb: &Backbone| bb.features(&images, &NoBranch, Numerics::Fused).unwrap();
    let text = |bb: &Backbone| bb.encode_prompts(&head.prompts, &NoBranch, Numerics::Fused).unwrap();
    let tensors: HashMap<String, Tensor> = [
        ("images".to_string(), images.clone()),
        ("input_ids".to_string(), head.prompts.ids.to_dtype(candle_core::DType::F32).unwrap()),
        ("frozen_image_embeds".to_string(), image(&lab.backbone)),
        ("adapted_image_embeds".to_string(), image(&tuned)),
        ("frozen_text_embeds".to_string(), text(&lab.backbone)),
        ("adapted_text_embeds".to_string(), text(&tuned)),
    ]
    .into();
    candle_core::safetensors::save(&tensors, dir.join("fixture.safetensors")).unwrap();
    eprintln!("run {}: test accuracy {:.3}", run.dir.display(), run.manifest.test.accuracy);
}

/// The DINOv2 exchange: our copy of the tiny random `Dinov2Model` (HF layout, with its
/// processor config), the adapter of a short CopRA run on every module of a folder task of
/// shapes (as the run folder holds it), and our pooled features (`pooler_output`) of the test
/// images. The other direction is `tests/dinov2_backbone.rs`.
#[test]
#[ignore]
fn write_dinov2_interop_fixture() {
    let dir = interop_dir();
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dinov2-tiny/model");
    let (lab, env, run) = export_shape_run(model.to_str().unwrap(), AdaptedEncoders::Both, &dir);
    let images = images_tensor(&env.data.test, &Device::Cpu).unwrap();
    let tuned = lab.backbone.with_deltas(&run.adapter.deltas()).unwrap();
    save_feature_fixture(&dir, &images, &lab.backbone, &tuned);
    eprintln!("run {}: test accuracy {:.3}", run.dir.display(), run.manifest.test.accuracy);
}

#[test]
fn reads_checkpoint_and_adapter_written_by_transformers_and_peft() {
    let dir = interop_dir();
    let backbone = checkpoint::load_dir(&dir.join("hf_random"), &Device::Cpu).unwrap();
    let adapter = peft::load(&dir.join("peft_random")).unwrap();
    assert!(adapter.num_parameters() > 0);
    let want = candle_core::safetensors::load(dir.join("reverse.safetensors"), &Device::Cpu).unwrap();
    let images = &want["images"];
    let frozen = max_abs_diff(&cls_features(&backbone, images), &want["frozen"]);
    let tuned = backbone.with_deltas(&adapter.deltas()).unwrap();
    let adapted = max_abs_diff(&cls_features(&tuned, images), &want["adapted"]);
    // The adapter must matter, or the second comparison would prove nothing.
    let effect = max_abs_diff(&want["frozen"], &want["adapted"]);
    eprintln!(
        "max |ours − transformers|: frozen {frozen:.2e}, with PEFT adapter {adapted:.2e} (adapter effect {effect:.2e})"
    );
    assert!(effect > 100.0 * TOLERANCE, "the Python adapter barely changes the features ({effect})");
    assert!(frozen < TOLERANCE && adapted < TOLERANCE, "frozen {frozen}, adapted {adapted}");
}
