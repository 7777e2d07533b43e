//! Tests of the pruning analysis on a tiny random backbone.

use super::removal::{block_scores, known_table};
use super::*;
use crate::adapter::TargetModule;
use crate::adapter::TargetModule::{Key, Query, Value};
use crate::analysis::test_support::*;
use crate::prune::magnitude::{prune_adapter_deltas, prune_factor_deltas};
use crate::shapley::{self, EstimateConfig, Estimator, Game, Memo, PermutationEstimator};
use std::collections::BTreeSet;

fn keys_of(d: &Deltas) -> Vec<(usize, TargetModule)> {
    d.keys().map(|k| (k.block, k.module)).collect()
}

#[test]
fn structured_selections_pick_the_right_modules() {
    let cfg = tiny_config(12);
    let adapter = random_adapter(&cfg, &[Query, Key, Value], 1, 1);
    let d = adapter.deltas();
    assert_eq!(d.len(), 36);
    let blocks_of = |s: Structure| -> BTreeSet<usize> { select(&d, &s, &cfg).keys().map(|k| k.block).collect() };
    let count = |s: Structure| select(&d, &s, &cfg).len();
    assert_eq!(blocks_of(Structure::EveryOtherEven), [0, 2, 4, 6, 8, 10].into());
    assert_eq!(blocks_of(Structure::EveryOtherOdd), [1, 3, 5, 7, 9, 11].into());
    assert_eq!(blocks_of(Structure::LowerThird), (0..4).collect());
    assert_eq!(blocks_of(Structure::MiddleThird), (4..8).collect());
    assert_eq!(blocks_of(Structure::UpperThird), (8..12).collect());
    for s in [Structure::EveryOtherEven, Structure::EveryOtherOdd] {
        assert_eq!(count(s), 18);
    }
    for s in [Structure::LowerThird, Structure::MiddleThird, Structure::UpperThird] {
        assert_eq!(count(s), 12);
    }
    for m in [Query, Key, Value] {
        let kept = select(&d, &Structure::Only(m), &cfg);
        assert_eq!(kept.len(), 12);
        assert!(kept.keys().all(|k| k.module == m));
        assert_eq!(kept.keys().map(|k| k.block).collect::<BTreeSet<_>>(), (0..12).collect());
    }
    assert_eq!(keys_of(&select(&d, &Structure::All, &cfg)), keys_of(&d));
    assert!(select(&d, &Structure::None, &cfg).is_empty());
    // Thirds partition the blocks; the names are stable.
    let names: Vec<String> = Structure::standard(&[Value, Query, Key], &cfg).iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "all",
            "every-other-even",
            "every-other-odd",
            "lower-third",
            "middle-third",
            "upper-third",
            "q-only",
            "k-only",
            "v-only",
            "none"
        ]
    );
    assert_eq!((0..7).map(|b| third_of(b, 7)).collect::<Vec<_>>(), vec![0, 0, 0, 1, 1, 2, 2]);
}

/// CLIP's numbering: 6 vision blocks, then 3 text blocks.
struct TwoTowers;

impl crate::adapter::fit::ModuleShapes for TwoTowers {
    fn num_blocks(&self) -> usize {
        9
    }
    fn module_shape(&self, _block: usize, _module: TargetModule) -> (usize, usize) {
        (4, 4)
    }
    fn place(&self, block: usize) -> crate::adapter::BlockPlace {
        match block {
            0..6 => crate::adapter::BlockPlace { encoder: "vision", layer: block },
            _ => crate::adapter::BlockPlace { encoder: "text", layer: block - 6 },
        }
    }
}

#[test]
fn structures_count_blocks_within_each_encoder_and_can_keep_one_encoder() {
    let adapter = random_adapter(&TwoTowers, &[Query], 1, 1);
    let d = adapter.deltas();
    let blocks_of = |s: Structure| -> Vec<usize> { select(&d, &s, &TwoTowers).keys().map(|k| k.block).collect() };
    assert_eq!(blocks_of(Structure::LowerThird), [0, 1, 6]);
    assert_eq!(blocks_of(Structure::UpperThird), [4, 5, 8]);
    assert_eq!(blocks_of(Structure::EveryOtherOdd), [1, 3, 5, 7]);
    assert_eq!(blocks_of(Structure::Encoder("vision")), (0..6).collect::<Vec<_>>());
    assert_eq!(blocks_of(Structure::Encoder("text")), [6, 7, 8]);
    let names: Vec<String> = Structure::standard(&[Query], &TwoTowers).iter().map(|s| s.name()).collect();
    assert!(names.ends_with(&["q-only".into(), "vision-only".into(), "text-only".into(), "none".into()]), "{names:?}");
}

#[test]
fn sparsity_zero_is_identity_and_one_is_frozen() {
    let (bb, env) = tiny_env(3, 3, 12, 30);
    let adapter = random_adapter(&bb, &[Query, Value], 2, 4);
    let full = env.test.evaluate(&adapter.deltas()).unwrap();
    let frozen = env.test.evaluate(&Deltas::new()).unwrap();
    assert!((full.loss - frozen.loss).abs() > 1e-6, "the adapter must change the model for this test to mean anything");
    for ranking in [Ranking::PerModule, Ranking::Global] {
        let d0 = prune_adapter_deltas(&adapter, 0.0, ranking).unwrap();
        let f0 = prune_factor_deltas(&adapter, 0.0, ranking).unwrap();
        assert_eq!(d0, adapter.deltas());
        assert_eq!(env.test.evaluate(&d0).unwrap(), full);
        assert_eq!(env.test.evaluate(&f0).unwrap(), full);
        for pruned in [
            prune_adapter_deltas(&adapter, 1.0, ranking).unwrap(),
            prune_factor_deltas(&adapter, 1.0, ranking).unwrap(),
        ] {
            let m = env.test.evaluate(&pruned).unwrap();
            assert!((m.accuracy - frozen.accuracy).abs() < 1e-12);
            assert!((m.loss - frozen.loss).abs() < 1e-5, "{} vs {}", m.loss, frozen.loss);
        }
    }
}

#[test]
fn removal_curves_run_from_full_to_frozen() {
    let (bb, env) = tiny_env(4, 3, 12, 30);
    let adapter = random_adapter(&bb, &[Query, Value], 2, 5);
    let full = env.test.evaluate(&adapter.deltas()).unwrap();
    let frozen = env.test.evaluate(&Deltas::new()).unwrap();
    let game = LayerGame::new(&env.test, &adapter, Grouping::Block, GameValue::Accuracy, "t").unwrap();
    let opts = PruneOptions::default();
    let table = known_table(&game, true, None).unwrap().expect("4 blocks are enumerated");
    let memo = Memo::unlimited(&table);
    let scores = block_scores(&game, &memo, Some(&table), &adapter, &opts, 0).unwrap();
    assert_eq!(scores.blocks, vec![0, 1, 2, 3]);
    assert_eq!(scores.shapley_source, "exact");
    // Efficiency of the exact values: Σφ = v(N) − v(∅).
    let sum: f64 = scores.shapley.iter().sum();
    assert!((sum - (full.accuracy - frozen.accuracy)).abs() < 1e-9);
    for order in RemovalOrder::ALL {
        let orders = match scores.scores(order) {
            Some(s) => vec![removal_order(s)],
            None => random_orders(4, 3, 0),
        };
        for o in orders {
            let curve = removal_curve(&o, 4);
            assert_eq!(curve.len(), 5);
            assert_eq!(curve.iter().map(|p| p.kept).collect::<Vec<_>>(), vec![4, 3, 2, 1, 0]);
            assert_eq!(memo.value(curve[0].coalition).unwrap(), full.accuracy);
            assert_eq!(memo.value(curve[4].coalition).unwrap(), frozen.accuracy);
            let removed: BTreeSet<usize> = curve.iter().filter_map(|p| p.removed).collect();
            assert_eq!(removed.len(), 4);
        }
    }
    // A wrong cached table (wrong endpoints, or a non-finite value) is ignored; the right one
    // is used as is.
    let exact = coalition_table(&env.test, &adapter).unwrap();
    assert_eq!(table.values(), &exact[..]);
    let from_bad = known_table(&game, true, Some(&[0.5; 16])).unwrap().unwrap();
    assert_eq!(from_bad.values(), &exact[..]);
    let mut doctored = exact.clone();
    doctored[5] = 9.0;
    let from_cache = known_table(&game, true, Some(&doctored)).unwrap().unwrap();
    assert_eq!(from_cache.values(), &doctored[..]);
    doctored[6] = f64::NAN;
    assert_eq!(known_table(&game, true, Some(&doctored)).unwrap().unwrap().values(), &exact[..]);
    // The whole analysis agrees: every curve starts at the full accuracy and ends frozen.
    let inputs = [PruneInput { method: "lora".into(), seed: 1, adapter: &adapter, table: Some(exact) }];
    let opts = PruneOptions { sparsities: vec![0.0, 0.5, 1.0], random_orders: 2, ..Default::default() };
    let (out, summaries) = analyze(&env.test, &inputs, &opts, &Progress::hidden()).unwrap();
    assert_eq!(summaries.len(), 1);
    let s = &summaries[0];
    let get = |name: &str| s.structured.iter().find(|(n, _)| n == name).unwrap().1.mean;
    assert_eq!(get("all"), full.accuracy);
    assert_eq!(get("none"), frozen.accuracy);
    let at = |t: Target, x: f64| {
        s.unstructured.iter().find(|(tt, sp, _)| *tt == t && (*sp - x).abs() < 1e-9).unwrap().2.mean
    };
    assert_eq!(at(Target::Delta, 0.0), full.accuracy);
    assert_eq!(at(Target::Factors, 1.0), frozen.accuracy);
    let names: Vec<&str> = out.tables.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "prune_structured.parquet",
            "prune_structured_summary.parquet",
            "prune_removal.parquet",
            "prune_removal_summary.parquet",
            "prune_block_scores.parquet",
            "prune_unstructured.parquet",
            "prune_unstructured_summary.parquet"
        ]
    );
    // 4 scored-or-random orders: shapley, norm, leave-one-out once, random twice; 5 points each.
    assert_eq!(out.tables[2].1.len(), (3 + 2) * 5);
    assert_eq!(out.figures.len(), 3);
    // Without the Shapley order nothing is enumerated; the curves still run full → frozen.
    let cheap =
        PruneOptions { orders: vec![RemovalOrder::Norm, RemovalOrder::Random], random_orders: 2, ..Default::default() };
    assert!(known_table(&game, false, None).unwrap().is_none());
    let memo = Memo::unlimited(&game);
    let scores = block_scores(&game, &memo, None, &adapter, &cheap, 0).unwrap();
    assert!(scores.shapley.iter().all(|v| v.is_nan()));
    assert_eq!(scores.shapley_source, "not computed");
    assert_eq!(memo.evaluations(), 5, "only the grand coalition and the four leave-one-out ones");
    let curve = removal_curve(&removal_order(&scores.norm), 4);
    assert_eq!(memo.value(curve[0].coalition).unwrap(), full.accuracy);
    assert_eq!(memo.value(curve[4].coalition).unwrap(), frozen.accuracy);
    let inputs = [PruneInput { method: "copra".into(), seed: 2, adapter: &adapter, table: None }];
    let (_, summaries) = analyze(&env.test, &inputs, &cheap, &Progress::hidden()).unwrap();
    let orders: Vec<RemovalOrder> = summaries[0].removal_area.iter().map(|(o, _)| *o).collect();
    assert_eq!(orders, vec![RemovalOrder::Norm, RemovalOrder::Random]);
}

#[test]
fn more_than_twenty_blocks_are_sampled_through_the_shared_memo() {
    let (bb, env) = tiny_env(21, 3, 12, 20);
    let adapter = random_adapter(&bb, &[Query], 1, 6);
    let game = LayerGame::new(&env.test, &adapter, Grouping::Block, GameValue::Accuracy, "t").unwrap();
    assert_eq!(game.n_players(), 21);
    assert!(known_table(&game, true, None).unwrap().is_none(), "21 blocks are not enumerated");
    let opts = PruneOptions { shapley_budget: 80, ..Default::default() };
    let memo = Memo::unlimited(&game);
    let scores = block_scores(&game, &memo, None, &adapter, &opts, 3).unwrap();
    // The same values as a fresh estimate with the run seed and the budget.
    let cfg = EstimateConfig::new(Estimator::new(PermutationEstimator::default()), 80, 3);
    let fresh = shapley::estimate(&game, &cfg).unwrap();
    assert_eq!(scores.shapley_source, fresh.estimator);
    assert_eq!(scores.shapley, fresh.values);
    // Leave-one-out reuses what sampling evaluated: at most 22 more than the budget.
    assert!(memo.evaluations() <= 80 + 22, "{}", memo.evaluations());
    let full = env.test.evaluate(&adapter.deltas()).unwrap().accuracy;
    let without_0 = game.evaluate(&[coalition_without(21, 0)]).unwrap()[0];
    assert_eq!(scores.leave_one_out[0], full - without_0);
}

/// The grand coalition of `n` players without player `i`.
fn coalition_without(n: usize, i: usize) -> u64 {
    crate::shapley::coalition::remove(crate::shapley::coalition::grand(n), i)
}

#[test]
fn removal_order_sorts_lowest_first_with_stable_ties() {
    assert_eq!(removal_order(&[0.3, -0.1, 0.3, 0.0]), vec![1, 3, 0, 2]);
    let a = random_orders(6, 3, 9);
    assert_eq!(a, random_orders(6, 3, 9));
    assert!(a.iter().all(|o| o.iter().copied().collect::<BTreeSet<_>>() == (0..6).collect()));
    assert!(PruneOptions { sparsities: vec![1.5], ..Default::default() }.validate().is_err());
    assert!(PruneOptions { sparsities: vec![], ..Default::default() }.validate().is_err());
    assert!(PruneOptions { random_orders: 0, ..Default::default() }.validate().is_err());
    for o in RemovalOrder::ALL {
        assert_eq!(RemovalOrder::parse(o.name()).unwrap(), o);
    }
    assert_eq!(RemovalOrder::parse("LOO").unwrap(), RemovalOrder::LeaveOneOut);
    assert!(RemovalOrder::parse("magnitude").is_err());
}

#[test]
fn typed_keys_sort_as_their_table_names() {
    // Summary tables are keyed by these enums; their rows must keep the order of the names.
    let mut by_type = Target::ALL.to_vec();
    by_type.sort();
    let mut names: Vec<&str> = Target::ALL.iter().map(|t| t.name()).collect();
    names.sort();
    assert_eq!(by_type.iter().map(|t| t.name()).collect::<Vec<_>>(), names);
    let mut orders: Vec<removal::OrderByName> = RemovalOrder::ALL.iter().map(|&o| removal::OrderByName(o)).collect();
    orders.sort();
    let sorted: Vec<&str> = orders.iter().map(|o| o.0.name()).collect();
    assert_eq!(sorted, ["leave-one-out", "norm", "random", "shapley"]);
}
