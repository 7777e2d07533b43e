//! Tests of the backbone, LoRA branch and checkpoint format on a tiny random ViT.

use super::checkpoint;
use super::lora::{LoraVars, TrainingBranch};
use super::VitConfig;
use super::{Backbone, NoBranch, Numerics};
use crate::adapter::{LoraSpec, ModuleKey, TargetModule};
use crate::util::rng_for;
use candle_core::{Device, Tensor};
use std::collections::BTreeSet;

fn tiny() -> VitConfig {
    VitConfig {
        hidden_size: 16,
        num_hidden_layers: 3,
        num_attention_heads: 2,
        intermediate_size: 24,
        image_size: 16,
        patch_size: 4,
        ..VitConfig::tiny()
    }
}

fn images(n: usize, cfg: &VitConfig, seed: u64) -> Tensor {
    use rand::Rng;
    let mut rng = rng_for(seed, "test-images");
    let len = n * cfg.num_channels * cfg.image_size * cfg.image_size;
    let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, (n, cfg.num_channels, cfg.image_size, cfg.image_size), &Device::Cpu).unwrap()
}

use super::max_abs_diff;

fn lora_with_nonzero_b(bb: &Backbone, spec: &LoraSpec) -> LoraVars {
    let mut rng = rng_for(3, "init");
    let blocks: Vec<usize> = (0..bb.num_blocks()).collect();
    let lora = LoraVars::init(spec, bb, &blocks, &mut rng, &Device::Cpu).unwrap();
    for (_, b) in lora.vars.values() {
        let t = b.as_tensor();
        let fill = Tensor::ones(t.dims(), t.dtype(), t.device()).unwrap().affine(0.05, 0.0).unwrap();
        b.set(&fill).unwrap();
    }
    lora
}

#[test]
fn fused_and_differentiable_paths_agree() {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let x = images(4, &cfg, 2);
    let a = bb.features(&x, &NoBranch, Numerics::Fused).unwrap();
    let b = bb.features(&x, &NoBranch, Numerics::Differentiable).unwrap();
    assert_eq!(a.dims(), &[4, 16]);
    assert!(max_abs_diff(&a, &b) < 1e-4);
}

#[test]
fn every_active_lora_factor_gets_a_nonzero_gradient() {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let spec = LoraSpec { targets: TargetModule::ALL.to_vec(), ..Default::default() };
    let lora = lora_with_nonzero_b(&bb, &spec);
    // Blocks 1 and 2 active, block 0 inactive.
    let active: BTreeSet<ModuleKey> = lora.vars.keys().filter(|k| k.block >= 1).copied().collect();
    let mut rng = rng_for(4, "dropout");
    let branch = TrainingBranch::new(&lora, &active, 0.25, &mut rng);
    let feats = bb.features(&images(4, &cfg, 5), &branch, Numerics::Differentiable).unwrap();
    let loss = feats.sqr().unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert_only_active_factors_get_gradients(&lora, &active, &grads);
}

/// Every factor of an active module has a non-zero gradient; inactive modules have none.
pub(super) fn assert_only_active_factors_get_gradients(
    lora: &LoraVars,
    active: &BTreeSet<ModuleKey>,
    grads: &candle_core::backprop::GradStore,
) {
    for (key, (a, b)) in &lora.vars {
        for (name, v) in [("A", a), ("B", b)] {
            let g = grads.get(v.as_tensor());
            if active.contains(key) {
                let g = g.unwrap_or_else(|| panic!("no gradient for active {key} {name}"));
                let norm = g.sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap();
                assert!(norm > 0.0, "zero gradient for active {key} {name}");
            } else {
                assert!(g.is_none(), "inactive {key} {name} received a gradient");
            }
        }
    }
}

#[test]
fn fused_numerics_would_cut_gradients() {
    // Documents the candle trap: the fused kernels have no backward.
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let lora = lora_with_nonzero_b(&bb, &LoraSpec::default());
    let active: BTreeSet<ModuleKey> = lora.vars.keys().copied().collect();
    let mut rng = rng_for(4, "dropout");
    let branch = TrainingBranch::new(&lora, &active, 0.0, &mut rng);
    let feats = bb.features(&images(2, &cfg, 5), &branch, Numerics::Fused).unwrap();
    let grads = feats.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let with_grad = lora.vars.values().filter(|(a, _)| grads.get(a.as_tensor()).is_some()).count();
    assert!(with_grad < lora.vars.len(), "fused path unexpectedly propagated every gradient");
}

#[test]
fn inverse_p_rescaling_makes_the_expected_block_output_the_all_on_output() {
    use crate::train::schedule::{inclusion_probability, Rescale};
    // Adapters on fc2 only: fc2's output enters the residual stream linearly, so a block's
    // output is affine in its group's mask m and E_m[block] is the π-weighted mix of on and off.
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let spec = LoraSpec { targets: vec![TargetModule::Fc2], ..Default::default() };
    let lora = lora_with_nonzero_b(&bb, &spec);
    let block = 1;
    let key = *lora.vars.keys().find(|k| k.block == block).unwrap();
    let only: BTreeSet<ModuleKey> = [key].into();
    let h = bb.frozen_block_inputs(&images(3, &cfg, 8), 3).unwrap().swap_remove(block);
    let groups = cfg.num_hidden_layers;
    let out = |scale: f64| {
        let mut rng = rng_for(4, "dropout");
        let branch = TrainingBranch::new(&lora, &only, 0.0, &mut rng).with_active_scale(scale);
        bb.block(block, &h, &branch, Numerics::Differentiable).unwrap()
    };
    let off = bb.block(block, &h, &NoBranch, Numerics::Differentiable).unwrap();
    let all_on = out(1.0);
    for p in [0.0, 0.3, 0.8] {
        let pi = inclusion_probability(p, groups);
        let expected = |scale: f64| ((out(scale) * pi).unwrap() + (&off * (1.0 - pi)).unwrap()).unwrap();
        let rescaled = expected(Rescale::InverseP.active_scale(p, groups));
        assert!(max_abs_diff(&rescaled, &all_on) < 1e-5, "p {p}: {}", max_abs_diff(&rescaled, &all_on));
        // Without rescaling the expectation falls short of the all-on output by (1 − π)·(on − off).
        let gap = (1.0 - pi) as f32 * max_abs_diff(&all_on, &off);
        assert!(gap > 1e-4 && max_abs_diff(&expected(1.0), &all_on) > 0.9 * gap, "p {p}");
    }
}

#[test]
fn merged_weights_equal_the_branch_forward() {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let spec =
        LoraSpec { targets: vec![TargetModule::Query, TargetModule::Value, TargetModule::Fc2], ..Default::default() };
    let lora = lora_with_nonzero_b(&bb, &spec);
    let active: BTreeSet<ModuleKey> = lora.vars.keys().copied().collect();
    let mut rng = rng_for(4, "dropout");
    let branch = TrainingBranch::new(&lora, &active, 0.0, &mut rng);
    let x = images(3, &cfg, 6);
    let via_branch = bb.features(&x, &branch, Numerics::Differentiable).unwrap();
    let merged = bb.with_deltas(&lora.to_adapter().unwrap().deltas()).unwrap();
    let via_merge = merged.features(&x, &NoBranch, Numerics::Fused).unwrap();
    assert!(max_abs_diff(&via_branch, &via_merge) < 1e-4);
}

#[test]
fn starting_at_a_cached_block_equals_the_full_forward() {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let x = images(5, &cfg, 7);
    let cache = bb.frozen_block_inputs(&x, 2).unwrap();
    assert_eq!(cache.len(), cfg.num_hidden_layers + 1);
    let full = bb.features(&x, &NoBranch, Numerics::Fused).unwrap();
    for (start, input) in cache.iter().enumerate() {
        let part = bb.forward_from(start, input, &NoBranch, Numerics::Fused).unwrap();
        assert!(max_abs_diff(&full, &part) < 1e-5, "start {start}");
    }
}

#[test]
fn checkpoint_round_trip_and_clear_errors() {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 9, &Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("copra-ckpt-{}", std::process::id()));
    checkpoint::save_dir(&bb, &dir).unwrap();
    let back = checkpoint::load_dir(&dir, &Device::Cpu).unwrap();
    let x = images(2, &cfg, 1);
    let a = bb.features(&x, &NoBranch, Numerics::Fused).unwrap();
    let b = back.features(&x, &NoBranch, Numerics::Fused).unwrap();
    assert_eq!(max_abs_diff(&a, &b), 0.0);
    assert_eq!(checkpoint::fingerprint(&bb).unwrap(), checkpoint::fingerprint(&back).unwrap());

    // Wrong shape: config.json says wider than the weights.
    let wrong = VitConfig { hidden_size: 32, ..cfg.clone() };
    std::fs::write(dir.join("config.json"), wrong.to_hf_json()).unwrap();
    let err = checkpoint::load_dir(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("has shape") && err.contains("do not match"), "{err}");
    std::fs::write(dir.join("config.json"), cfg.to_hf_json()).unwrap();

    // Truncated weights.
    let p = dir.join("model.safetensors");
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() / 3]).unwrap();
    let err = checkpoint::load_dir(&dir, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("truncated or corrupt"), "{err}");

    // Missing folder.
    let err = checkpoint::load_dir(&dir.join("nope"), &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hf_weight_names_are_exactly_vitmodel_names() {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let names = checkpoint::hf_tensors(&bb).unwrap();
    for n in [
        "embeddings.cls_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "encoder.layer.2.attention.attention.query.weight",
        "encoder.layer.0.attention.attention.value.bias",
        "encoder.layer.1.attention.output.dense.weight",
        "encoder.layer.1.intermediate.dense.weight",
        "encoder.layer.1.output.dense.bias",
        "encoder.layer.0.layernorm_before.weight",
        "encoder.layer.0.layernorm_after.bias",
        "layernorm.weight",
    ] {
        assert!(names.contains_key(n), "missing {n}");
    }
    assert_eq!(names["embeddings.patch_embeddings.projection.weight"].dims(), &[16, 3, 4, 4]);
    // 4 embedding tensors + 16 per block + 2 final.
    assert_eq!(names.len(), 4 + 16 * 3 + 2);
}

#[test]
#[ignore]
fn op_backward_costs() {
    use candle_core::{Device, Tensor, Var, D};
    use std::time::Instant;
    let dev = Device::Cpu;
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, 17, 32), &dev).unwrap()).unwrap();
    let w = Tensor::ones(32, candle_core::DType::F32, &dev).unwrap();
    let b = Tensor::zeros(32, candle_core::DType::F32, &dev).unwrap();
    let s = Var::from_tensor(&Tensor::randn(0f32, 1.0, (128, 4, 17, 17), &dev).unwrap()).unwrap();
    let wm = Tensor::randn(0f32, 1.0, (32, 32), &dev).unwrap();
    for (name, f) in [
        (
            "layer_norm_slow",
            Box::new(|| candle_nn::ops::layer_norm_slow(x.as_tensor(), &w, &b, 1e-12).unwrap())
                as Box<dyn Fn() -> Tensor>,
        ),
        (
            "layer-norm-ours",
            Box::new(|| super::norm::layer_norm_differentiable(x.as_tensor(), &(w.clone(), b.clone()), 1e-12).unwrap()),
        ),
        ("softmax", Box::new(|| candle_nn::ops::softmax(s.as_tensor(), D::Minus1).unwrap())),
        ("softmax-ours", Box::new(|| super::ops::softmax_last_dim(s.as_tensor()).unwrap())),
        ("gelu-ours", Box::new(|| super::ops::gelu_erf(x.as_tensor()).unwrap())),
        ("gelu_erf", Box::new(|| x.as_tensor().gelu_erf().unwrap())),
        ("matmul", Box::new(|| x.as_tensor().reshape((128 * 17, 32)).unwrap().matmul(&wm.t().unwrap()).unwrap())),
        (
            "split-heads",
            Box::new(|| x.as_tensor().reshape((128, 17, 4, 8)).unwrap().transpose(1, 2).unwrap().contiguous().unwrap()),
        ),
    ] {
        let t = Instant::now();
        for _ in 0..10 {
            let _ = f();
        }
        let fwd = t.elapsed() / 10;
        let t = Instant::now();
        for _ in 0..10 {
            let y = f();
            let _ = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        }
        let both = t.elapsed() / 10;
        eprintln!("{name:<16} fwd {fwd:?} fwd+bwd {both:?}");
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    // The analytic gradient of a loss through every custom op (softmax, GELU, frozen linear,
    // layer norm) equals a central finite difference of the forward pass, entry by entry.
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let spec = LoraSpec { targets: TargetModule::ALL.to_vec(), ..Default::default() };
    let lora = lora_with_nonzero_b(&bb, &spec);
    let active: BTreeSet<ModuleKey> = lora.vars.keys().copied().collect();
    let x = images(3, &cfg, 9);
    let target = images(3, &cfg, 10).flatten_from(1).unwrap().narrow(1, 0, cfg.hidden_size).unwrap();
    let loss_of = |numerics: Numerics| -> Tensor {
        let mut rng = rng_for(4, "dropout");
        let branch = TrainingBranch::new(&lora, &active, 0.0, &mut rng);
        let feats = bb.features(&x, &branch, numerics).unwrap();
        (feats * &target).unwrap().sum_all().unwrap()
    };
    let grads = loss_of(Numerics::Differentiable).backward().unwrap();
    let mut checked = 0;
    for (key, (a, b)) in &lora.vars {
        for v in [a, b] {
            let g: Vec<f32> = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let base: Vec<f32> = v.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            let shape = v.as_tensor().shape().clone();
            for i in [0, base.len() / 2, base.len() - 1] {
                let eps = 1e-2f32;
                let eval_at = |delta: f32| -> f32 {
                    let mut w = base.clone();
                    w[i] += delta;
                    v.set(&Tensor::from_vec(w, shape.clone(), &Device::Cpu).unwrap()).unwrap();
                    let l = loss_of(Numerics::Fused).to_scalar::<f32>().unwrap();
                    v.set(&Tensor::from_vec(base.clone(), shape.clone(), &Device::Cpu).unwrap()).unwrap();
                    l
                };
                let numeric = (eval_at(eps) - eval_at(-eps)) / (2.0 * eps);
                let tol = 2e-2 * numeric.abs().max(g[i].abs()).max(0.05);
                assert!((numeric - g[i]).abs() < tol, "{key} entry {i}: analytic {} vs numeric {numeric}", g[i]);
                checked += 1;
            }
        }
    }
    assert!(checked > 0);
}

/// The features of the last block computed for the class-token row alone, bit for bit
/// against the whole block followed by pooling, for batch sizes on both sides of
/// `pre_ln::FIRST_TOKEN_MIN_BATCH` (below it the whole block runs: the GEMM takes another
/// kernel for so few rows, and its sums round differently).
pub(crate) fn assert_first_token_last_block_is_exact(bb: &Backbone, x0: &Tensor) {
    let last = bb.input_blocks() - 1;
    let mut h = x0.clone();
    for i in 0..last {
        h = bb.block(i, &h, &NoBranch, Numerics::Fused).unwrap();
    }
    for n in [1, 3, 8, 16, 63, 64, 65, 100, h.dim(0).unwrap()] {
        let x = h.narrow(0, 0, n).unwrap();
        let full = bb.pool(&bb.block(last, &x, &NoBranch, Numerics::Fused).unwrap(), Numerics::Fused).unwrap();
        let cls = bb.last_block_features(last, &x, &NoBranch, Numerics::Fused).unwrap();
        let (full, cls): (Vec<f32>, Vec<f32>) =
            (full.flatten_all().unwrap().to_vec1().unwrap(), cls.flatten_all().unwrap().to_vec1().unwrap());
        assert_eq!(full, cls, "batch of {n}: class-token-only last block differs from the whole block");
    }
}

#[test]
fn last_block_computed_for_the_class_token_only_gives_identical_features() {
    let cfg = VitConfig::tiny();
    let bb = Backbone::init_random(&cfg, 5, &Device::Cpu).unwrap();
    let x0 = bb.embed(&images(200, &cfg, 2)).unwrap();
    assert_first_token_last_block_is_exact(&bb, &x0);
    // And through forward_from, which uses it.
    let a = bb.forward_from(0, &x0, &NoBranch, Numerics::Fused).unwrap();
    let mut h = x0.clone();
    for i in 0..bb.num_blocks() {
        h = bb.block(i, &h, &NoBranch, Numerics::Fused).unwrap();
    }
    let b = bb.pool(&h, Numerics::Fused).unwrap();
    assert_eq!(a.flatten_all().unwrap().to_vec1::<f32>().unwrap(), b.flatten_all().unwrap().to_vec1::<f32>().unwrap());
    // The comparisons above are not vacuous: from 64 images on, evaluation takes the
    // class-token path (one row per image); training and smaller batches compute every row.
    use super::pre_ln::{Rows, FIRST_TOKEN_MIN_BATCH};
    let vit = super::Vit::init_random(&cfg, 5, &Device::Cpu).unwrap();
    let rows = |n: usize, numerics| {
        let x = x0.narrow(0, 0, n).unwrap();
        vit.layer(11).forward(&x, &NoBranch, numerics, Rows::FirstToken).unwrap().dims()[1]
    };
    let tokens = cfg.num_tokens();
    assert_eq!(rows(FIRST_TOKEN_MIN_BATCH, Numerics::Fused), 1);
    assert_eq!(rows(FIRST_TOKEN_MIN_BATCH - 1, Numerics::Fused), tokens);
    assert_eq!(rows(FIRST_TOKEN_MIN_BATCH, Numerics::Differentiable), tokens);
}

#[test]
fn a_block_asks_its_branch_in_module_order_so_dropout_draws_keep_their_order() {
    // A training branch draws its dropout masks in call order: reordering the modules of a
    // block would silently change every trained adapter.
    struct Recorder(std::cell::RefCell<Vec<TargetModule>>);
    impl super::Branch for Recorder {
        fn output(&self, key: ModuleKey, _x2d: &Tensor) -> anyhow::Result<Option<Tensor>> {
            self.0.borrow_mut().push(key.module);
            Ok(None)
        }
    }
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 1, &Device::Cpu).unwrap();
    let x = bb.embed(&images(2, &cfg, 1)).unwrap();
    for numerics in [Numerics::Differentiable, Numerics::Fused] {
        let rec = Recorder(Default::default());
        bb.block(0, &x, &rec, numerics).unwrap();
        assert_eq!(*rec.0.borrow(), TargetModule::ALL.to_vec(), "{numerics:?}");
    }
}
