//! Tests of the BERT encoder: agreement with transformers (a random-weight fixture written
//! by `analyses/bert_fixture.py`), padding invariance, the fast paths, gradients, and the
//! checkpoint round trip.

use super::bert::Bert;
use super::bert_config::BertConfig;
use super::checkpoint;
use super::lora::{LoraVars, TrainingBranch};
use super::pooling::Pooling;
use super::{Backbone, NoBranch, Numerics};
use crate::adapter::{peft, LoraSpec, ModuleKey, TargetModule};
use crate::util::rng_for;
use candle_core::{DType, Device, IndexOp, Tensor};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny")
}

fn expected(name: &str) -> Tensor {
    let t = candle_core::safetensors::load(fixture().join("expected.safetensors"), &Device::Cpu).unwrap();
    t[name].clone()
}

/// The fixture's ids `[5, 12]` as copra-lab's f32 token rows (0 = padding).
fn fixture_ids() -> Tensor {
    expected("input_ids").to_dtype(DType::F32).unwrap()
}

use super::max_abs_diff;

fn with_pooling(bb: &Backbone, pooling: Pooling) -> Backbone {
    let tensors = bb.hf_tensors().unwrap();
    let cfg = tiny_config();
    Backbone::new(Bert::from_hf_tensors(&cfg, pooling, tensors, "test").unwrap())
}

fn tiny_config() -> BertConfig {
    let text = std::fs::read_to_string(fixture().join("model/config.json")).unwrap();
    BertConfig::parse(&text, &fixture().join("model/config.json")).unwrap()
}

fn random_bert(pooling: Pooling) -> Backbone {
    Backbone::new(Bert::init_random(&tiny_config(), pooling, 3, &Device::Cpu).unwrap())
}

#[test]
fn frozen_and_adapted_outputs_match_transformers_and_peft() {
    let bb = checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap();
    assert_eq!(bb.model_type(), "bert");
    assert_eq!(bb.num_blocks(), 3);
    let ids = fixture_ids();
    let mean = bb.features(&ids, &NoBranch, Numerics::Fused).unwrap();
    let d = max_abs_diff(&mean, &expected("frozen_mean"));
    assert!(d < 1e-5, "frozen mean pooling differs from transformers by {d}");
    let cls = with_pooling(&bb, Pooling::Cls).features(&ids, &NoBranch, Numerics::Fused).unwrap();
    assert!(max_abs_diff(&cls, &expected("frozen_cls")) < 1e-5);

    let adapter = peft::load_as(&fixture().join("adapter"), bb.peft_layout()).unwrap();
    assert_eq!(adapter.modules.len(), 18, "query, key, value and the three dense layers of 3 blocks");
    let adapted = bb.with_deltas(&adapter.deltas()).unwrap();
    let got = adapted.features(&ids, &NoBranch, Numerics::Fused).unwrap();
    let effect = max_abs_diff(&expected("adapted_mean"), &expected("frozen_mean"));
    let d = max_abs_diff(&got, &expected("adapted_mean"));
    assert!(effect > 0.05 && d < 1e-5, "adapted differs from PEFT by {d} (adapter effect {effect})");
    let got = with_pooling(&adapted, Pooling::Cls).features(&ids, &NoBranch, Numerics::Fused).unwrap();
    assert!(max_abs_diff(&got, &expected("adapted_cls")) < 1e-5);
}

#[test]
fn a_text_gets_the_same_features_alone_and_padded_in_a_batch() {
    let bb = random_bert(Pooling::Mean);
    let ids = fixture_ids();
    let batch = bb.features(&ids, &NoBranch, Numerics::Fused).unwrap();
    for row in [1usize, 3] {
        // Row alone (embed cuts it to its own length) and row with extra padding columns.
        let alone = bb.features(&ids.i(row..row + 1).unwrap(), &NoBranch, Numerics::Fused).unwrap();
        let padded =
            Tensor::cat(&[ids.i(row..row + 1).unwrap(), Tensor::zeros((1, 20), DType::F32, &Device::Cpu).unwrap()], 1)
                .unwrap();
        let padded = bb.features(&padded, &NoBranch, Numerics::Fused).unwrap();
        assert!(max_abs_diff(&alone, &batch.i(row..row + 1).unwrap()) < 1e-5, "row {row}");
        assert!(max_abs_diff(&alone, &padded) < 1e-6, "row {row} with padding");
    }
}

#[test]
fn starting_at_a_cached_block_equals_the_full_forward() {
    for pooling in [Pooling::Mean, Pooling::Cls] {
        let bb = random_bert(pooling);
        let ids = fixture_ids();
        let cache = bb.frozen_block_inputs(&ids, 2).unwrap();
        assert_eq!(cache.len(), 4);
        assert_eq!(cache[0].dims(), &[5, 12, 33], "features plus the mask channel");
        let full = bb.features(&ids, &NoBranch, Numerics::Fused).unwrap();
        for (start, input) in cache.iter().enumerate() {
            let part = bb.forward_from(start, input, &NoBranch, Numerics::Fused).unwrap();
            assert!(max_abs_diff(&full, &part) < 1e-5, "start {start}");
            // A batch of short rows of the cache, cut to its own length, agrees too.
            let short = input.i(3..5).unwrap();
            let part = bb.forward_from(start, &short, &NoBranch, Numerics::Fused).unwrap();
            assert!(max_abs_diff(&full.i(3..5).unwrap(), &part) < 1e-5, "start {start}, short rows");
        }
        let diff = bb.features(&ids, &NoBranch, Numerics::Differentiable).unwrap();
        assert!(max_abs_diff(&full, &diff) < 1e-4, "fused and differentiable numerics agree");
    }
}

#[test]
fn every_active_lora_factor_gets_a_nonzero_gradient() {
    let bb = random_bert(Pooling::Mean);
    let spec = LoraSpec { targets: TargetModule::ALL.to_vec(), ..Default::default() };
    let blocks: Vec<usize> = (0..bb.num_blocks()).collect();
    let lora = LoraVars::init(&spec, &bb, &blocks, &mut rng_for(3, "init"), &Device::Cpu).unwrap();
    for (_, b) in lora.vars.values() {
        b.set(&Tensor::ones(b.as_tensor().dims(), DType::F32, &Device::Cpu).unwrap().affine(0.05, 0.0).unwrap())
            .unwrap();
    }
    let active: BTreeSet<ModuleKey> = lora.vars.keys().filter(|k| k.block >= 1).copied().collect();
    let mut rng = rng_for(4, "dropout");
    let branch = TrainingBranch::new(&lora, &active, 0.1, &mut rng);
    let feats = bb.features(&fixture_ids(), &branch, Numerics::Differentiable).unwrap();
    let grads = feats.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    super::tests::assert_only_active_factors_get_gradients(&lora, &active, &grads);
}

#[test]
fn checkpoint_round_trip_keeps_weights_pooling_and_tokenizer() {
    let bb = checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("copra-bert-ckpt-{}", std::process::id()));
    checkpoint::save_dir(&bb, &dir).unwrap();
    assert!(dir.join("tokenizer.json").is_file() && dir.join("1_Pooling/config.json").is_file());
    let back = checkpoint::load_dir(&dir, &Device::Cpu).unwrap();
    assert_eq!(checkpoint::fingerprint(&bb).unwrap(), checkpoint::fingerprint(&back).unwrap());
    let ids = fixture_ids();
    let (a, b) = (
        bb.features(&ids, &NoBranch, Numerics::Fused).unwrap(),
        back.features(&ids, &NoBranch, Numerics::Fused).unwrap(),
    );
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unsupported_model_types_and_bad_ids_are_refused() {
    let dir = std::env::temp_dir().join(format!("copra-gpt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = checkpoint::load_dir(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("model_type 'gpt2' is not supported") && err.contains("vit, bert"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
    let bb = random_bert(Pooling::Mean);
    let ids = Tensor::new(&[[2f32, 500.0, 3.0]], &Device::Cpu).unwrap();
    let err = bb.features(&ids, &NoBranch, Numerics::Fused).unwrap_err().to_string();
    assert!(err.contains("token id 500 is outside the vocabulary of 200"), "{err}");
}
