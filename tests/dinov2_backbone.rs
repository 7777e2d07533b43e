//! The DINOv2 backbone against transformers' `Dinov2Model` and PEFT, on the committed random
//! fixture `tests/fixtures/dinov2-tiny` (written by `analyses/dinov2_fixture.py`): the frozen
//! forward at the native size and at two sizes whose position embeddings are interpolated,
//! both PEFT adapters, and copra-lab's own checkpoint and adapter files read back.

use candle_core::{Device, Tensor};
use copra_lab::adapter::{fit, peft, Adapter};
use copra_lab::model::dinov2::Dinov2;
use copra_lab::model::{checkpoint, Backbone, Encoder, NoBranch, Numerics};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Largest absolute difference tolerated between our outputs and PyTorch's (f32).
const TOLERANCE: f32 = 1e-4;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dinov2-tiny")
}

fn expected() -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture().join("expected.safetensors"), &Device::Cpu).unwrap()
}

fn load_concrete(dir: &Path) -> Dinov2 {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    Dinov2::load(dir, &text, tensors, "model.safetensors").unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// `(last_hidden_state, pooler_output)` of `images` through every block of `model` (whose
/// final layer norm is `base`'s).
fn forward(model: &dyn Encoder, base: &Dinov2, images: &Tensor) -> (Tensor, Tensor) {
    let mut h = model.embed(images).unwrap();
    for i in 0..model.num_blocks() {
        h = model.block(i, &h, &NoBranch, Numerics::Fused).unwrap();
    }
    (base.last_hidden_state(&h).unwrap(), model.pool(&h, Numerics::Fused).unwrap())
}

fn read_adapter(name: &str, backbone: &Backbone) -> Adapter {
    let adapter = peft::load_as(&fixture().join(name), backbone.peft_layout()).unwrap();
    fit::check_fits(&adapter, backbone, name).unwrap();
    adapter
}

/// Worst difference over the three input sizes of `prefix`'s outputs, and the worst change from the frozen ones.
fn compare(model: &dyn Encoder, base: &Dinov2, want: &HashMap<String, Tensor>, prefix: &str) -> (f32, f32) {
    let (mut worst, mut effect) = (0f32, 0f32);
    for size in ["30", "22", "rect"] {
        let (hidden, pooled) = forward(model, base, &want[&format!("images_{size}")]);
        let dh = max_abs_diff(&hidden, &want[&format!("{prefix}_hidden_{size}")]);
        let dp = max_abs_diff(&pooled, &want[&format!("{prefix}_pooled_{size}")]);
        eprintln!("{prefix} {size}: max |ours − transformers| hidden {dh:.2e}, pooled {dp:.2e}");
        worst = worst.max(dh).max(dp);
        effect = effect
            .max(max_abs_diff(&want[&format!("{prefix}_pooled_{size}")], &want[&format!("frozen_pooled_{size}")]));
    }
    (worst, effect)
}

#[test]
fn frozen_forward_matches_transformers_at_the_native_and_interpolated_sizes() {
    let model = load_concrete(&fixture().join("model"));
    let want = expected();
    let (worst, _) = compare(&model, &model, &want, "frozen");
    assert!(worst < TOLERANCE, "frozen: {worst}");
    // The interpolated sizes really change the positions (else they would test nothing).
    let native = model.positions_for(30, 30).unwrap();
    assert_eq!(native.dims(), [1, 50, 32]);
    assert_eq!(model.positions_for(22, 22).unwrap().dims(), [1, 26, 32]);
    assert_eq!(model.positions_for(18, 34).unwrap().dims(), [1, 33, 32]);
    // The Backbone path (last block computing the class row only) gives the same features.
    let backbone = checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap();
    assert_eq!(backbone.model_type(), "dinov2");
    let features = backbone.features(&want["images_30"], &NoBranch, Numerics::Fused).unwrap();
    assert!(max_abs_diff(&features, &want["frozen_pooled_30"]) < TOLERANCE);
}

#[test]
fn peft_adapters_written_by_peft_give_pytorchs_outputs() {
    let backbone = checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap();
    let want = expected();
    for (name, prefix, modules) in [("adapter", "adapted", 12), ("adapter-qv-layer1", "qv", 2)] {
        let adapter = read_adapter(name, &backbone);
        assert_eq!(adapter.modules.len(), modules, "{name}");
        let base = load_concrete(&fixture().join("model"));
        let tuned = backbone.with_deltas(&adapter.deltas()).unwrap();
        let (worst, effect) = compare(&*tuned, &base, &want, prefix);
        assert!(effect > 100.0 * TOLERANCE, "{name} barely changes the features ({effect})");
        assert!(worst < TOLERANCE, "{name}: {worst}");
    }
}

#[test]
fn checkpoint_and_adapter_round_trip_through_our_files() {
    let source = fixture().join("model");
    let backbone = checkpoint::load_dir(&source, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("copra-dinov2-{}", std::process::id()));
    checkpoint::save_dir(&backbone, &dir.join("model")).unwrap();
    // The same tensor names as transformers' save_pretrained, and the processor config kept.
    let ours = candle_core::safetensors::load(dir.join("model/model.safetensors"), &Device::Cpu).unwrap();
    let theirs = candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let mut names: Vec<_> = ours.keys().collect();
    let mut want: Vec<_> = theirs.keys().collect();
    names.sort();
    want.sort();
    assert_eq!(names, want);
    for (k, v) in &theirs {
        assert_eq!(max_abs_diff(v, &ours[k]), 0.0, "{k}");
    }
    assert!(dir.join("model/preprocessor_config.json").is_file());
    // Our adapter files: PEFT's names and target_modules, read back exactly.
    let adapter = read_adapter("adapter", &backbone);
    peft::save_as(&adapter, &dir.join("adapter"), "model", backbone.peft_layout()).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter").join(peft::CONFIG_FILE)).unwrap()).unwrap();
    assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"]));
    assert_eq!(cfg["auto_mapping"]["base_model_class"], "Dinov2Model");
    assert_eq!(cfg["layers_pattern"], "layer");
    let theirs = safetensors_names(&fixture().join("adapter").join(peft::WEIGHTS_FILE));
    assert_eq!(safetensors_names(&dir.join("adapter").join(peft::WEIGHTS_FILE)), theirs);
    let back = peft::load_as(&dir.join("adapter"), backbone.peft_layout()).unwrap();
    assert_eq!(back.modules, adapter.modules);
    // A ViT adapter is refused on DINOv2 (and the reverse), by its class.
    let vit = dir.join("vit-adapter");
    peft::save(&adapter, &vit, "builtin").unwrap();
    let err = peft::load_as(&vit, backbone.peft_layout()).unwrap_err().to_string();
    assert!(err.contains("made for a ViTModel") && err.contains("backbone is a Dinov2Model"), "{err}");
    let err = peft::load(&dir.join("adapter")).unwrap_err().to_string();
    assert!(err.contains("made for a Dinov2Model"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

fn safetensors_names(path: &Path) -> Vec<String> {
    let mut names: Vec<String> = candle_core::safetensors::load(path, &Device::Cpu).unwrap().into_keys().collect();
    names.sort();
    names
}

#[test]
fn the_processor_config_gives_the_normalisation_and_the_input_size() {
    use copra_lab::model::dinov2_config::{processor, IMAGENET_MEAN, IMAGENET_STD};
    use copra_lab::model::InputKind;
    let dir = std::env::temp_dir().join(format!("copra-dinov2-processor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // No file: ImageNet's mean and std, no size.
    let p = processor(&dir, 3).unwrap();
    assert_eq!((p.mean, p.std, p.size), (IMAGENET_MEAN.to_vec(), IMAGENET_STD.to_vec(), None));
    let write = |text: &str| std::fs::write(dir.join("preprocessor_config.json"), text).unwrap();
    write(
        r#"{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1.0], "crop_size": {"height": 224, "width": 224}}"#,
    );
    let p = processor(&dir, 3).unwrap();
    assert_eq!((p.mean, p.std, p.size), (vec![0.5; 3], vec![0.25, 0.5, 1.0], Some(224)));
    write(r#"{"crop_size": {"height": 224, "width": 200}}"#);
    assert!(processor(&dir, 3).unwrap_err().to_string().contains("not a square"));
    write(r#"{"image_mean": [0.5], "image_std": [0.5]}"#);
    assert!(processor(&dir, 3).unwrap_err().to_string().contains("3 values"));
    // The fixture's processor crops to its image_size: tasks are made at 30 px.
    let backbone = checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap();
    assert_eq!(backbone.input_kind(), InputKind::Image { size: 30, channels: 3 });
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn image_size_resizes_the_task_and_only_interpolating_backbones_accept_it() {
    use copra_lab::lab::{images_tensor, Lab};
    use copra_lab::progress::Progress;
    use copra_lab::train::{Method, TrainConfig};
    let runs = std::env::temp_dir().join(format!("copra-dinov2-size-{}", std::process::id()));
    let lab = Lab::open(fixture().join("model").to_str().unwrap(), &runs).unwrap();
    let cfg = TrainConfig {
        method: Method::Lora,
        steps: 4,
        shots: 2,
        test_size: 8,
        image_size: Some(22),
        ..TrainConfig::default()
    };
    lab.check_config(&cfg).unwrap();
    let env = lab.task_env(&cfg).unwrap();
    let images = images_tensor(&env.data.test, &Device::Cpu).unwrap();
    assert_eq!(images.dims(), [8, 3, 22, 22]);
    let run = lab.ensure_run(&env, &cfg, false, &Progress::hidden()).unwrap();
    assert!(run.manifest.test.accuracy.is_finite());
    // The backbone's own size is the same run as no size; another is a different run.
    let own = TrainConfig { image_size: Some(30), ..cfg.clone() };
    assert_eq!(lab.normalized(&own), TrainConfig { image_size: None, ..cfg.clone() });
    assert_ne!(lab.normalized(&cfg), lab.normalized(&own));
    let err = lab.check_config(&TrainConfig { image_size: Some(3), ..cfg.clone() }).unwrap_err().to_string();
    assert!(err.contains("--image-size 3") && err.contains("no 4x4 patch"), "{err}");
    // The built-in ViT does not interpolate its positions.
    let vit = Lab::open("builtin", &runs).unwrap();
    let err =
        vit.check_config(&TrainConfig { image_size: Some(16), ..TrainConfig::default() }).unwrap_err().to_string();
    assert!(err.contains("--image-size 16") && err.contains("32-pixel images only"), "{err}");
    std::fs::remove_dir_all(&runs).ok();
}

/// The mean of the patch tokens of transformers' `last_hidden_state` (what
/// `Dinov2ForImageClassification` concatenates to the class token).
fn patch_mean(last_hidden_state: &Tensor) -> Tensor {
    let tokens = last_hidden_state.dim(1).unwrap();
    last_hidden_state.narrow(1, 1, tokens - 1).unwrap().mean(1).unwrap()
}

#[test]
fn mean_pooling_is_the_mean_of_transformers_patch_tokens() {
    use copra_lab::model::Pooling;
    let backbone = checkpoint::load_dir(&fixture().join("model"), &Device::Cpu).unwrap();
    assert_eq!(backbone.pooling(), Pooling::Cls);
    let mean = backbone.with_pooling(Pooling::Mean).unwrap();
    assert_eq!(mean.pooling(), Pooling::Mean);
    let want = expected();
    let adapter = read_adapter("adapter", &backbone);
    let tuned = mean.with_deltas(&adapter.deltas()).unwrap();
    for size in ["30", "22", "rect"] {
        let images = &want[&format!("images_{size}")];
        for (model, prefix) in [(&mean, "frozen"), (&tuned, "adapted")] {
            let reference = patch_mean(&want[&format!("{prefix}_hidden_{size}")]);
            // The full path (the last block computes every row under mean pooling) and the
            // differentiable one.
            for numerics in [Numerics::Fused, Numerics::Differentiable] {
                let got = model.features(images, &NoBranch, numerics).unwrap();
                let d = max_abs_diff(&got, &reference);
                eprintln!("mean pooling, {prefix} {size} {numerics:?}: max |ours − transformers| {d:.1e}");
                assert!(d < TOLERANCE, "{prefix} {size} {numerics:?}: {d}");
            }
            // Not the class token: the two poolings differ.
            let cls = max_abs_diff(&reference, &want[&format!("{prefix}_pooled_{size}")]);
            assert!(cls > 100.0 * TOLERANCE, "{prefix} {size}: mean and class token agree ({cls})");
        }
    }
}

#[test]
fn pooling_changes_the_fingerprint_and_only_bert_and_dinov2_offer_it() {
    use copra_lab::lab::Lab;
    use copra_lab::model::Pooling;
    let runs = std::env::temp_dir().join(format!("copra-dinov2-pool-{}", std::process::id()));
    let open = || Lab::open(fixture().join("model").to_str().unwrap(), &runs).unwrap();
    let own = open().fingerprint;
    // The backbone's own pooling, named, is the same lab; the other is a different one.
    assert_eq!(open().with_pooling(Pooling::Cls).unwrap().fingerprint, own);
    let mean = open().with_pooling(Pooling::Mean).unwrap();
    assert_ne!(mean.fingerprint, own);
    assert_eq!(mean.backbone.pooling(), Pooling::Mean);
    let Err(err) = Lab::open("builtin", &runs).unwrap().with_pooling(Pooling::Mean) else {
        panic!("the built-in ViT accepted mean pooling")
    };
    let err = err.to_string();
    assert!(err.contains("--pooling mean") && err.contains("vit backbone pools by cls only"), "{err}");
    std::fs::remove_dir_all(&runs).ok();
}
