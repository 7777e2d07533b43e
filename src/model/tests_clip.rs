//! Tests of the CLIP encoder against transformers and PEFT (the random-weight fixture
//! `analyses/clip_fixture.py` writes into `tests/fixtures/clip-tiny`): image and text
//! embeddings, logits, both PEFT adapters, the tokenizer, gradients of both towers' LoRA
//! factors, the PEFT round trip and the checkpoint round trip.

use super::checkpoint;
use super::head::{Head, PromptHead};
use super::lora::{LoraVars, TrainingBranch};
use super::{Backbone, NoBranch, Numerics};
use crate::adapter::{peft, BlockPlace, ModuleKey, PeftLayout};
use crate::util::rng_for;
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip-tiny")
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("expected.safetensors"), &Device::Cpu).unwrap()
}

use super::max_abs_diff;

fn clip() -> Backbone {
    checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap()
}

fn class_prompts() -> (Vec<String>, Vec<Vec<u32>>) {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("prompts.json")).unwrap()).unwrap();
    let prompts = json["prompts"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_string()).collect();
    let ids = json["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect())
        .collect();
    (prompts, ids)
}

fn head(bb: &Backbone) -> Head {
    let prompts = bb.tokenize_prompts(&class_prompts().0).unwrap();
    Head::Prompts(PromptHead { prompts, logit_scale: bb.logit_scale().unwrap() })
}

/// Image embeddings, text embeddings and logits of `model` on the fixture's images.
fn outputs(model: &Backbone, head: &Head) -> [Tensor; 3] {
    let images = &expected()["images"];
    let image = model.features(images, &NoBranch, Numerics::Fused).unwrap();
    let Head::Prompts(p) = head else { unreachable!() };
    let text = model.encode_prompts(&p.prompts, &NoBranch, Numerics::Fused).unwrap();
    let logits = head.classifier(model, &NoBranch, Numerics::Fused).unwrap().logits(&image).unwrap();
    [image, text, logits]
}

fn assert_agrees(model: &Backbone, head: &Head, prefix: &str, tolerance: f32) -> f32 {
    let e = expected();
    let mut worst = 0f32;
    for (got, name) in outputs(model, head).iter().zip(["image_embeds", "text_embeds", "logits_per_image"]) {
        let d = max_abs_diff(got, &e[&format!("{prefix}_{name}")]);
        assert!(d < tolerance, "{prefix} {name} differs from transformers by {d}");
        worst = worst.max(d);
    }
    eprintln!("{prefix}: largest |copra-lab − transformers| over embeddings and logits {worst:.1e}");
    worst
}

#[test]
fn tokenizer_matches_transformers_and_pools_at_the_end_of_text() {
    let bb = clip();
    let (texts, ids) = class_prompts();
    let prompts = bb.tokenize_prompts(&texts).unwrap();
    let rows: Vec<Vec<u32>> = prompts.ids.to_vec2().unwrap();
    let at: Vec<u32> = prompts.pool_at.to_vec1().unwrap();
    for ((row, want), at) in rows.iter().zip(&ids).zip(at) {
        assert_eq!(&row[..want.len()], &want[..]);
        assert_eq!(at as usize, want.len() - 1, "pooled at the end-of-text token");
    }
    let want_at: Vec<i64> = expected()["eos_index"].to_vec1().unwrap();
    assert_eq!(want_at, prompts.pool_at.to_vec1::<u32>().unwrap().iter().map(|&v| v as i64).collect::<Vec<_>>());
}

#[test]
fn frozen_and_adapted_outputs_match_transformers_and_peft() {
    let bb = clip();
    assert_eq!((bb.model_type(), bb.num_blocks(), bb.input_blocks()), ("clip", 5, 3));
    assert_eq!(bb.place(3), BlockPlace { encoder: "text", layer: 0 });
    assert_eq!(bb.module_shape(4, crate::adapter::TargetModule::Fc1), (48, 24));
    let scale = bb.logit_scale().unwrap();
    assert!((scale - 2.6592f64.exp()).abs() < 1e-3, "logit scale {scale}");
    let head = head(&bb);
    assert_agrees(&bb, &head, "frozen", 1e-5);
    for (dir, prefix, modules) in [("adapter", "adapted", 30), ("adapter-vision-qkv", "vision_qkv", 9)] {
        let adapter = peft::load_as(&fixture().join(dir), bb.peft_layout()).unwrap();
        assert_eq!(adapter.modules.len(), modules, "{dir}");
        let merged = bb.with_deltas(&adapter.deltas()).unwrap();
        assert_agrees(&merged, &head, prefix, 1e-5);
    }
    let err = peft::load(&fixture().join("adapter")).unwrap_err().to_string();
    assert!(err.contains("made for a CLIPModel") && err.contains("use it with a CLIP folder"), "{err}");
}

#[test]
fn the_lora_branch_equals_merged_weights_on_both_towers() {
    let bb = clip();
    let adapter = peft::load_as(&fixture().join("adapter"), bb.peft_layout()).unwrap();
    let lora = LoraVars::from_adapter(&adapter, &Device::Cpu).unwrap();
    let all: BTreeSet<ModuleKey> = lora.vars.keys().copied().collect();
    let mut rng = rng_for(1, "unused");
    let branch = TrainingBranch::new(&lora, &all, 0.0, &mut rng);
    let head = head(&bb);
    let images = &expected()["images"];
    let feats = bb.features(images, &branch, Numerics::Differentiable).unwrap();
    let logits = head.classifier(&bb, &branch, Numerics::Differentiable).unwrap().logits(&feats).unwrap();
    let d = max_abs_diff(&logits, &expected()["adapted_logits_per_image"]);
    assert!(d < 1e-4, "branch logits differ from PEFT's by {d}");
}

#[test]
fn every_active_lora_factor_of_both_towers_gets_a_gradient() {
    let bb = clip();
    let adapter = peft::load_as(&fixture().join("adapter"), bb.peft_layout()).unwrap();
    let lora = LoraVars::from_adapter(&adapter, &Device::Cpu).unwrap();
    // Vision blocks 1 and 2 and text block 1 (global 4): the others must get no gradient.
    let active: BTreeSet<ModuleKey> = lora.vars.keys().filter(|k| [1, 2, 4].contains(&k.block)).copied().collect();
    let mut rng = rng_for(4, "dropout");
    let branch = TrainingBranch::new(&lora, &active, 0.1, &mut rng);
    let head = head(&bb);
    let feats = bb.features(&expected()["images"], &branch, Numerics::Differentiable).unwrap();
    let logits = head.classifier(&bb, &branch, Numerics::Differentiable).unwrap().logits(&feats).unwrap();
    let labels = Tensor::new(&[0u32, 1, 2, 0], &Device::Cpu).unwrap();
    let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
    let grads = loss.backward().unwrap();
    assert!(active.iter().any(|k| bb.place(k.block).encoder == "text"), "a text-tower module is active");
    super::tests::assert_only_active_factors_get_gradients(&lora, &active, &grads);
}

#[test]
fn peft_round_trip_writes_peft_names_and_configs() {
    let bb = clip();
    let layout = bb.peft_layout();
    assert_eq!(layout, PeftLayout::two_towers(&super::clip::NAMES, 3, 2));
    let dir = std::env::temp_dir().join(format!("copra-clip-peft-{}", std::process::id()));
    for (name, list) in [("adapter", true), ("adapter-vision-qkv", false)] {
        let theirs = peft::load_as(&fixture().join(name), layout).unwrap();
        peft::save_as(&theirs, &dir, "clip-tiny", layout).unwrap();
        let ours = peft::load_as(&dir, layout).unwrap();
        assert_eq!(ours.modules, theirs.modules, "{name}");
        let names = |d: &std::path::Path| -> BTreeSet<String> {
            let bytes = std::fs::read(d.join(peft::WEIGHTS_FILE)).unwrap();
            safetensors::SafeTensors::deserialize(&bytes).unwrap().names().into_iter().map(String::from).collect()
        };
        assert_eq!(names(&dir), names(&fixture().join(name)), "{name}: tensor names as PEFT writes them");
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(peft::CONFIG_FILE)).unwrap()).unwrap();
        assert_eq!(cfg["use_rslora"], true);
        assert_eq!(cfg["target_modules"].is_array(), list, "{name}: {}", cfg["target_modules"]);
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn checkpoint_round_trip_keeps_weights_config_and_tokenizer() {
    let bb = clip();
    let dir = std::env::temp_dir().join(format!("copra-clip-ckpt-{}", std::process::id()));
    checkpoint::save_dir(&bb, &dir).unwrap();
    assert!(dir.join("tokenizer.json").is_file());
    let back = checkpoint::load_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(checkpoint::fingerprint(&bb).unwrap(), checkpoint::fingerprint(&back).unwrap());
    let head = head(&back);
    assert_agrees(&back, &head, "frozen", 1e-5);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn wrong_images_and_text_blocks_on_the_input_path_are_refused() {
    let bb = clip();
    let images = Tensor::zeros((1, 3, 16, 16), DType::F32, &Device::Cpu).unwrap();
    let err = bb.features(&images, &NoBranch, Numerics::Fused).unwrap_err().to_string();
    assert!(err.contains("reads [3, 32, 32]"), "{err}");
    let err = bb.block(3, &images, &NoBranch, Numerics::Fused).unwrap_err().to_string();
    assert!(err.contains("text-tower block"), "{err}");
}

#[test]
fn last_vision_block_for_the_class_token_only_gives_identical_features() {
    let bb = clip();
    let images = &expected()["images"];
    let x0 = bb.embed(&Tensor::cat(&[images; 40], 0).unwrap()).unwrap();
    super::tests::assert_first_token_last_block_is_exact(&bb, &x0);
}
