//! Analyses on a tiny random ViT: the fast coalition paths agree with a plain forward,
//! and interpolation endpoints reproduce each run's own evaluation.

use super::connectivity::space::PathSpace;
use super::connectivity::{analyze, ConnectivityOptions, SeedRun};
use super::layer_game::{GameValue, LayerGame};
use crate::adapter::{Adapter, Grouping, LoraFactors, LoraSpec, ModuleKey, TargetModule};
use crate::connectivity::interpolate::{interpolate, Space};
use crate::eval::Evaluator;
use crate::linalg::Matrix;
use crate::model::head::{Head, PrototypeHead};
use crate::model::{Backbone, NoBranch, Numerics, VitConfig};
use crate::progress::Progress;
use crate::shapley::Game;
use crate::util::rng_for;
use candle_core::{Device, Tensor};
use rand::Rng;
use std::collections::BTreeMap;

fn tiny() -> VitConfig {
    VitConfig {
        hidden_size: 16,
        num_hidden_layers: 4,
        num_attention_heads: 2,
        intermediate_size: 24,
        image_size: 16,
        patch_size: 4,
        ..VitConfig::tiny()
    }
}

fn setup() -> (Backbone, Evaluator) {
    let cfg = tiny();
    let bb = Backbone::init_random(&cfg, 5, &Device::Cpu).unwrap();
    let mut rng = rng_for(1, "images");
    let n = 40;
    let v: Vec<f32> = (0..n * 3 * 16 * 16).map(|_| rng.random_range(-1.0..1.0)).collect();
    let images = Tensor::from_vec(v, (n, 3, 16, 16), &Device::Cpu).unwrap();
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 4).collect();
    let feats = bb.features(&images, &NoBranch, Numerics::Fused).unwrap();
    let head = Head::Prototype(PrototypeHead::from_features(&feats, &labels, 4, 20.0).unwrap());
    let ev = Evaluator::new(&bb, &head, &images, &labels, 16).unwrap();
    (bb, ev)
}

fn random_adapter(bb: &Backbone, seed: u64, scale: f32) -> Adapter {
    let mut rng = rng_for(seed, "adapter");
    let mut modules = BTreeMap::new();
    for block in 0..bb.num_blocks() {
        for module in [TargetModule::Query, TargetModule::Key, TargetModule::Value] {
            let mut m = |r, c| Matrix::from_vec(r, c, (0..r * c).map(|_| rng.random_range(-scale..scale)).collect());
            modules.insert(ModuleKey { block, module }, LoraFactors { a: m(2, 16), b: m(16, 2) });
        }
    }
    Adapter { spec: LoraSpec::default(), modules }
}

#[test]
fn fast_coalition_paths_equal_the_plain_forward_for_every_coalition() {
    let (bb, ev) = setup();
    let adapter = random_adapter(&bb, 2, 1.0);
    for value in [GameValue::Accuracy, GameValue::NegLoss] {
        let game = LayerGame::new(&ev, &adapter, Grouping::Block, value, "t").unwrap();
        let n = game.n_players();
        assert_eq!(n, 4);
        let all = game.enumerate_all().unwrap();
        let coalitions: Vec<u64> = (0..1u64 << n).collect();
        let fast = game.evaluate(&coalitions).unwrap();
        for s in coalitions {
            let plain = game.value_plain(s).unwrap();
            assert!(
                (plain - fast[s as usize]).abs() < 1e-5,
                "coalition {s:b}: plain {plain} fast {}",
                fast[s as usize]
            );
            assert!((plain - all[s as usize]).abs() < 1e-5, "coalition {s:b}: plain {plain} walk {}", all[s as usize]);
        }
        // v(∅) is the frozen backbone; v(N) is the full adapter.
        let frozen = ev.evaluate(&Default::default()).unwrap();
        let full = ev.evaluate(&adapter.deltas()).unwrap();
        let pick = |m: crate::eval::Metrics| if value == GameValue::Accuracy { m.accuracy } else { -m.loss };
        assert!((all[0] - pick(frozen)).abs() < 1e-6);
        assert!((all[(1 << n) - 1] - pick(full)).abs() < 1e-5);
    }
}

#[test]
fn module_players_also_enumerate_exactly() {
    let (bb, ev) = setup();
    let mut adapter = random_adapter(&bb, 3, 1.0);
    adapter.modules.retain(|k, _| k.block >= 2);
    let game = LayerGame::new(&ev, &adapter, Grouping::Module, GameValue::NegLoss, "t").unwrap();
    assert_eq!(game.n_players(), 6);
    let all = game.enumerate_all().unwrap();
    for s in [0u64, 1, 5, 17, 42, 63] {
        assert!((game.value_plain(s).unwrap() - all[s as usize]).abs() < 1e-5);
    }
}

#[test]
fn interpolation_endpoints_reproduce_each_runs_own_evaluation() {
    let (bb, ev) = setup();
    let a = random_adapter(&bb, 4, 0.5);
    let b = random_adapter(&bb, 5, 0.5);
    let own_a = ev.evaluate(&a.deltas()).unwrap();
    let own_b = ev.evaluate(&b.deltas()).unwrap();
    for space in Space::ALL {
        assert_eq!(ev.evaluate(&interpolate(&a, &b, 0.0, space).unwrap()).unwrap(), own_a, "{space:?} α=0");
        assert_eq!(ev.evaluate(&interpolate(&a, &b, 1.0, space).unwrap()).unwrap(), own_b, "{space:?} α=1");
        // A run interpolated with itself is constant along the path.
        for alpha in [0.25, 0.5, 0.9] {
            let m = ev.evaluate(&interpolate(&a, &a, alpha, space).unwrap()).unwrap();
            assert!((m.loss - own_a.loss).abs() < 1e-5 && m.accuracy == own_a.accuracy, "{space:?} α={alpha}");
        }
    }
}

#[test]
fn evaluator_with_a_base_matches_the_frozen_evaluator() {
    let (bb, ev) = setup();
    let a = random_adapter(&bb, 6, 0.5);
    let b = random_adapter(&bb, 7, 0.5);
    let based = ev.with_base(&a.deltas()).unwrap();
    let set = std::collections::BTreeSet::from([2usize]);
    let d = crate::connectivity::interpolate::interpolate_blocks(&a, &b, 0.5, Space::Delta, &set).unwrap();
    assert_eq!(based.first_differing_block(&d), 2);
    let m1 = based.evaluate(&d).unwrap();
    let m2 = ev.evaluate(&d).unwrap();
    assert!((m1.loss - m2.loss).abs() < 1e-5 && m1.accuracy == m2.accuracy);
}

#[test]
fn connectivity_analysis_writes_every_table_and_rejects_a_single_seed() {
    let (bb, ev) = setup();
    let adapters: Vec<Adapter> = (0..3).map(|s| random_adapter(&bb, 10 + s, 0.3)).collect();
    let runs: Vec<SeedRun> = adapters
        .iter()
        .enumerate()
        .map(|(i, a)| SeedRun { method: "lora".into(), seed: i as u64 + 1, adapter: a })
        .collect();
    let opts = ConnectivityOptions { alphas: 5, layer_alphas: 3, spaces: PathSpace::LINES.to_vec(), layerwise: true };
    let (out, summaries, _) = analyze(&ev, &ev, &runs, &opts, None, &Progress::hidden()).unwrap();
    let names: Vec<&str> = out.tables.iter().map(|(n, _)| n.as_str()).collect();
    for t in [
        "connectivity_paths.parquet",
        "connectivity_barriers.parquet",
        "connectivity_barrier_ci.parquet",
        "connectivity_distances.parquet",
        "connectivity_merge_all.parquet",
    ] {
        assert!(names.contains(&t), "missing {t}");
    }
    // 3 pairs × 5 straight paths (factor, delta, three aligned) × 2 splits × 5 alphas.
    let paths = &out.tables.iter().find(|(n, _)| n == "connectivity_paths.parquet").unwrap().1;
    assert_eq!(paths.len(), 3 * 5 * 2 * 5);
    assert_eq!(summaries.len(), 5);
    // The merge of all seeds is a plain factor or delta average (no aligned variant).
    assert!(summaries.iter().all(|s| s.merge_all_accuracy.is_some() == s.space.plain().is_some()));
    assert!(analyze(&ev, &ev, &runs[..1], &opts, None, &Progress::hidden()).is_err());
}

#[test]
fn prefix_sweep_equals_evaluating_each_cumulative_interpolation() {
    use crate::connectivity::interpolate::interpolate_blocks;
    let (bb, ev) = setup();
    let (a, b) = (random_adapter(&bb, 3, 0.8), random_adapter(&bb, 4, 0.8));
    let base = a.deltas();
    let based = ev.with_base(&base).unwrap();
    for space in Space::ALL {
        let all = interpolate(&a, &b, 0.4, space).unwrap();
        let swept = based.prefix_sweep(&all, &base).unwrap();
        assert_eq!(swept.len(), bb.num_blocks());
        for (l, m) in swept.iter().enumerate() {
            let blocks = (0..=l).collect();
            let plain = ev.evaluate(&interpolate_blocks(&a, &b, 0.4, space, &blocks).unwrap()).unwrap();
            assert!((m.loss - plain.loss).abs() < 1e-5, "{space:?} block {l}: {} vs {}", m.loss, plain.loss);
            assert_eq!(m.accuracy, plain.accuracy, "{space:?} block {l}");
        }
    }
}

#[test]
fn shapley_values_are_exact_up_to_twenty_players() {
    assert!(super::exact_shapley(1) && super::exact_shapley(20));
    assert!(!super::exact_shapley(21) && !super::exact_shapley(63));
}

#[test]
fn a_failed_write_leaves_the_previous_outputs_whole() {
    use super::Outputs;
    use crate::report::table::Table;
    let dir = std::env::temp_dir().join(format!("copra-analysis-outputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let table = |v: f64| {
        let mut t = Table::new();
        t.f64_col("x", vec![v]);
        t
    };
    let bytes = |n: &str| std::fs::read(dir.join(n)).unwrap();
    let entries = || {
        let mut names: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    };
    let old = Outputs {
        tables: vec![("a.parquet".into(), table(1.0)), ("b.parquet".into(), table(2.0))],
        figures: vec![("f.svg".into(), "<svg>old</svg>".into())],
    };
    old.write_all(&dir).unwrap();
    let (a0, b0, f0) = (bytes("a.parquet"), bytes("b.parquet"), bytes("f.svg"));
    // The last file of the new set cannot be written: a directory holds its name.
    std::fs::create_dir_all(dir.join("z.svg/inner")).unwrap();
    let new = Outputs {
        tables: vec![("a.parquet".into(), table(10.0)), ("b.parquet".into(), table(20.0))],
        figures: vec![("f.svg".into(), "<svg>new</svg>".into()), ("z.svg".into(), "<svg>new</svg>".into())],
    };
    let err = new.write_all(&dir).unwrap_err().to_string();
    assert!(err.contains("z.svg"), "{err}");
    let untouched = bytes("a.parquet") == a0 && bytes("b.parquet") == b0 && bytes("f.svg") == f0;
    assert!(untouched, "a failed write replaced files of the previous set");
    // A table that cannot be encoded (two columns of one name) fails the set the same way.
    std::fs::remove_dir_all(dir.join("z.svg")).unwrap();
    let mut bad = Table::new();
    bad.f64_col("x", vec![1.0]).f64_col("x", vec![2.0]);
    let new_bad =
        Outputs { tables: vec![("a.parquet".into(), table(10.0)), ("c.parquet".into(), bad)], figures: vec![] };
    assert!(new_bad.write_all(&dir).is_err());
    assert!(bytes("a.parquet") == a0, "a failed table replaced a.parquet");
    assert_eq!(entries(), ["a.parquet", "b.parquet", "f.svg"], "no new file and no staging folder left");
    // A set that can be written replaces the old files.
    new.write_all(&dir).unwrap();
    assert!(bytes("a.parquet") != a0, "the new set replaced a.parquet");
    assert_eq!(bytes("f.svg"), b"<svg>new</svg>");
    assert_eq!(entries(), ["a.parquet", "b.parquet", "f.svg", "z.svg"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `adapter` re-parameterised in every module as `(B·Q, Qᵀ·A)` with the 2×2 orthogonal `q`
/// (row-major): the same `ΔW`, other factors.
fn gauge_transformed(adapter: &Adapter, q: [f32; 4]) -> Adapter {
    let q = Matrix::from_vec(2, 2, q.to_vec());
    let mut out = adapter.clone();
    for f in out.modules.values_mut() {
        *f = LoraFactors { a: q.transpose().matmul(&f.a), b: f.b.matmul(&q) };
    }
    out
}

/// The whole-adapter test barrier rows of `space` in `out`'s barrier table, as (quantity, linear).
fn main_barriers(out: &super::Outputs, space: &str) -> Vec<(String, f64)> {
    let t = &out.tables.iter().find(|(n, _)| n == "connectivity_barriers.parquet").unwrap().1;
    let df = t.to_dataframe().unwrap();
    let col = |c: &str| df.column(c).unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>();
    let (spaces, splits, scopes, qs) = (col("space"), col("split"), col("scope"), col("quantity"));
    let lin: Vec<f64> = df.column("barrier_linear_ref").unwrap().f64().unwrap().iter().map(|v| v.unwrap()).collect();
    (0..lin.len())
        .filter(|&i| spaces[i] == space && splits[i] == "test" && scopes[i] == "all")
        .map(|i| (qs[i].clone(), lin[i]))
        .collect()
}

#[test]
fn an_aligned_path_to_a_gauge_transformed_copy_has_no_barrier() {
    use crate::connectivity::gauge::Gauge;
    let (bb, ev) = setup();
    let a = random_adapter(&bb, 21, 0.8);
    let (c, s) = (0.6f32, 0.8f32);
    // A rotation (orthogonal, not a signed permutation) and a signed permutation.
    for (q, gauges) in [
        ([c, -s, s, c], vec![Gauge::Orthogonal]),
        ([0.0, -1.0, 1.0, 0.0], vec![Gauge::Orthogonal, Gauge::SignedPermutation]),
    ] {
        let b = gauge_transformed(&a, q);
        let runs = [
            SeedRun { method: "lora".into(), seed: 1, adapter: &a },
            SeedRun { method: "lora".into(), seed: 2, adapter: &b },
        ];
        let mut spaces = vec![PathSpace::Factor];
        spaces.extend(gauges.iter().map(|g| PathSpace::Aligned(*g)));
        let opts = ConnectivityOptions { alphas: 5, layer_alphas: 3, spaces, layerwise: false };
        let (out, _, _) = analyze(&ev, &ev, &runs, &opts, None, &Progress::hidden()).unwrap();
        // The plain factor line leaves the copy's ΔW along the way; the aligned lines do not.
        let plain = main_barriers(&out, "factor");
        assert!(plain.iter().any(|(_, v)| v.abs() > 1e-4), "{plain:?}");
        for g in gauges {
            let name = PathSpace::Aligned(g).name();
            let rows = main_barriers(&out, name);
            assert_eq!(rows.len(), 2, "{name}");
            for (q, v) in rows {
                assert!(v.abs() < 1e-4, "{name} {q} barrier {v}");
            }
        }
    }
}

#[test]
fn a_trained_curve_runs_through_both_runs() {
    use super::connectivity::curves::CurveTraining;
    use crate::analysis::test_support::tiny_env;
    use crate::train::curve::CurveKind;
    use crate::train::{train_adapter, Method, TrainConfig};
    let (bb, env) = tiny_env(2, 3, 24, 24);
    let cfg = TrainConfig { method: Method::Lora, steps: 8, lr: 2e-2, batch_size: 8, ..TrainConfig::default() };
    let run = |seed| {
        let c = TrainConfig { seed, ..cfg.clone() };
        train_adapter(&bb, &env.head, &env.train_inputs, &env.data.train.labels, &c, None, |_| {}).unwrap().adapter
    };
    let (a, b) = (run(1), run(2));
    let runs = [
        SeedRun { method: "lora".into(), seed: 1, adapter: &a },
        SeedRun { method: "lora".into(), seed: 2, adapter: &b },
    ];
    let curves = CurveTraining {
        kinds: vec![CurveKind::Bezier, CurveKind::Polychain],
        head: &env.head,
        train_inputs: &env.train_inputs,
        labels: &env.data.train.labels,
        configs: [("lora".to_string(), TrainConfig { steps: 6, ..cfg.clone() })].into(),
    };
    let opts = ConnectivityOptions { alphas: 5, layer_alphas: 3, spaces: vec![PathSpace::Factor], layerwise: false };
    let (out, summaries, _) = analyze(&env.test, &env.train, &runs, &opts, Some(&curves), &Progress::hidden()).unwrap();
    assert_eq!(summaries.len(), 3);
    let paths = out.tables.iter().find(|(n, _)| n == "connectivity_paths.parquet").unwrap().1.to_dataframe().unwrap();
    let strs = |c: &str| -> Vec<String> {
        paths.column(c).unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect()
    };
    let nums = |c: &str| -> Vec<f64> { paths.column(c).unwrap().f64().unwrap().iter().map(|v| v.unwrap()).collect() };
    let (space, kind, split, alpha, acc) =
        (strs("space"), strs("path_kind"), strs("split"), nums("alpha"), nums("accuracy"));
    for (split_name, ev) in [("test", &env.test), ("train", &env.train)] {
        let (acc_a, acc_b) = (ev.evaluate(&a.deltas()).unwrap().accuracy, ev.evaluate(&b.deltas()).unwrap().accuracy);
        for curve in ["curve-bezier", "curve-polychain"] {
            let at = |x: f64| {
                (0..acc.len())
                    .find(|&i| space[i] == curve && split[i] == split_name && alpha[i] == x)
                    .map(|i| (kind[i].clone(), acc[i]))
                    .unwrap()
            };
            assert_eq!(at(0.0), ("curve".to_string(), acc_a), "{curve} {split_name}");
            assert_eq!(at(1.0), ("curve".to_string(), acc_b), "{curve} {split_name}");
        }
    }
    let names: Vec<&str> = out.tables.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"connectivity_curves.parquet"), "{names:?}");
}
