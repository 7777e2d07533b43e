//! Interoperability with the Python stack (transformers `ViTModel`, PEFT), in both directions,
//! through `analyses/hf_interop.py` (see the README).
//!
//! 1. `write_interop_fixture` (ignored: it writes files for Python) writes our backbone (HF
//!    layout), a trained adapter (PEFT layout) and our CLS features for a few images; the Python
//!    script loads both with transformers and PEFT and compares its features with ours.
//! 2. `reads_checkpoint_and_adapter_written_by_transformers_and_peft` loads a random `ViTModel`
//!    and LoRA adapter that transformers 5.24 and PEFT 0.21.2 saved (`tests/fixtures/transformers5`,
//!    written by the script), and checks that our forward gives the features PyTorch computed.

use candle_core::{Device, Tensor};
use copra_lab::adapter::peft;
use copra_lab::lab::{frozen_features, images_tensor, Lab};
use copra_lab::model::{checkpoint, Backbone};
use copra_lab::progress::Progress;
use copra_lab::train::{Method, TrainConfig};
use std::collections::HashMap;
use std::path::PathBuf;

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
    let tensors: HashMap<String, Tensor> = [
        ("images".to_string(), images.clone()),
        ("frozen".to_string(), cls_features(&lab.backbone, &images)),
        ("adapted".to_string(), cls_features(&tuned, &images)),
    ]
    .into();
    candle_core::safetensors::save(&tensors, dir.join("fixture.safetensors")).unwrap();
    std::fs::remove_dir_all(&runs).unwrap();
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
