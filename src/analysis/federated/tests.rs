//! Tests of the federated simulation.

use super::*;
use crate::adapter::Adapter;
use crate::adapter::{ModuleKey, TargetModule};
use crate::analysis::test_support::tiny_env;
use crate::federated::split::SplitMethod;
use crate::linalg::Matrix;
use crate::merge::MergeMethod;

fn tiny_cfg(method: Method) -> TrainConfig {
    let mut cfg = TrainConfig { method, steps: 3, batch_size: 8, lr: 1e-2, seed: 5, ..TrainConfig::default() };
    cfg.lora.targets = vec![TargetModule::Query, TargetModule::Value];
    cfg
}

fn max_diff(a: &Adapter, b: &Adapter) -> f32 {
    assert_eq!(a.keys(), b.keys());
    a.modules
        .iter()
        .flat_map(|(k, f)| {
            let g = &b.modules[k];
            f.a.data
                .iter()
                .zip(&g.a.data)
                .chain(f.b.data.iter().zip(&g.b.data))
                .map(|(x, y)| (x - y).abs())
                .collect::<Vec<_>>()
        })
        .fold(0.0, f32::max)
}

#[test]
fn one_client_one_round_factor_average_is_that_client() {
    let (bb, env) = tiny_env(3, 3, 24, 12);
    let opts = FederatedOptions { clients: 1, split: SplitMethod::Iid, ..Default::default() };
    for method in [Method::Lora, Method::Copra] {
        let run = run_federated(&bb, &env, &tiny_cfg(method), &opts, || {}).unwrap();
        assert_eq!(run.split, vec![(0..24).collect::<Vec<_>>()]);
        assert_eq!(run.last_uploads.len(), 1);
        assert!(max_diff(&run.global.adapter, &run.last_uploads[0].1) < 1e-6);
        assert!(run.global.residual.is_empty());
        assert_eq!(run.rounds.len(), 2);
        assert_eq!(run.rounds[1].test, run.clients[0].test.unwrap());
        assert_eq!(run.clients[0].weight, 1.0);
    }
}

#[test]
fn aggregation_weights_are_client_sizes() {
    let (bb, env) = tiny_env(2, 3, 30, 12);
    let opts = FederatedOptions {
        clients: 3,
        split: SplitMethod::Dirichlet { alpha: 0.5, min_size: 4 },
        ..Default::default()
    };
    let run = run_federated(&bb, &env, &tiny_cfg(Method::Lora), &opts, || {}).unwrap();
    let sizes: Vec<usize> = run.split.iter().map(Vec::len).collect();
    assert_eq!(sizes.iter().sum::<usize>(), 30);
    assert_eq!(aggregation_weights(&run.split, &[0, 1, 2]), sizes.iter().map(|s| *s as f64).collect::<Vec<_>>());
    for c in &run.clients {
        assert_eq!(c.examples, sizes[c.client]);
        assert!((c.weight - sizes[c.client] as f64 / 30.0).abs() < 1e-12);
    }
    // The global factors are the size-weighted mean of the uploads (FedIT).
    for (key, g) in &run.global.adapter.modules {
        let mut a = Matrix::zeros(g.a.rows, g.a.cols);
        for (c, up) in &run.last_uploads {
            a = a.add(&up.modules[key].a.scale(sizes[*c] as f32 / 30.0));
        }
        let diff = a.data.iter().zip(&g.a.data).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-5, "{key}: {diff}");
    }
    // The histogram counts every example once.
    let per_client: Vec<usize> = run.histogram.iter().map(|r| r.iter().sum()).collect();
    assert_eq!(per_client, sizes);
}

#[test]
fn heterogeneous_clients_ranks_and_top_blocks() {
    let (bb, env) = tiny_env(3, 3, 24, 12);
    let opts = FederatedOptions {
        clients: 2,
        split: SplitMethod::Iid,
        rounds: 2,
        client_ranks: vec![1, 3],
        client_top_blocks: vec![1, 3],
        aggregator: MergeMethod::parse("stack").unwrap(),
        ..Default::default()
    };
    let run = run_federated(&bb, &env, &tiny_cfg(Method::Copra), &opts, || {}).unwrap();
    assert_eq!(run.rounds.len(), 3);
    let (_, small) = &run.last_uploads[0];
    assert!(small.modules.keys().all(|k| k.block == 2));
    assert!(small.modules.values().all(|f| f.rank() == 1));
    let (_, big) = &run.last_uploads[1];
    assert_eq!(big.blocks(), [0, 1, 2].into());
    assert!(big.modules.values().all(|f| f.rank() == 3));
    // Stacking keeps the union of modules: blocks 0, 1 only from the full client.
    assert_eq!(run.global.adapter.blocks(), [0, 1, 2].into());
    assert_eq!(run.global.adapter.modules[&ModuleKey { block: 2, module: TargetModule::Query }].rank(), 4);
    assert_eq!(run.clients.iter().map(|c| c.first_block).collect::<Vec<_>>(), vec![2, 0, 2, 0]);
}

#[test]
fn seeds_and_draws_are_deterministic() {
    assert_eq!(client_seed(1, 2, 3), client_seed(1, 2, 3));
    assert_ne!(client_seed(1, 2, 3), client_seed(1, 3, 2));
    assert_eq!(draw_clients(10, 10, 1, 1), (0..10).collect::<Vec<_>>());
    let d = draw_clients(10, 3, 1, 1);
    assert_eq!(d.len(), 3);
    assert_eq!(d, draw_clients(10, 3, 1, 1));
    let opts = FederatedOptions { client_fraction: 0.25, ..Default::default() };
    assert_eq!(opts.clients_per_round(), 3);
    assert!(FederatedOptions { client_top_blocks: vec![13], ..Default::default() }.validate(12).is_err());
    assert!(FederatedOptions { client_fraction: 0.0, ..Default::default() }.validate(12).is_err());
    assert_eq!(FederatedOptions { client_top_blocks: vec![4], ..Default::default() }.first_block_of(7, 12), 8);
}

/// Largest absolute entry difference between two delta maps with the same keys.
fn max_delta_diff(x: &crate::eval::Deltas, y: &crate::eval::Deltas) -> f32 {
    assert_eq!(x.keys().collect::<Vec<_>>(), y.keys().collect::<Vec<_>>());
    x.iter()
        .flat_map(|(k, m)| m.data.iter().zip(&y[k].data).map(|(a, b)| (a - b).abs()).collect::<Vec<_>>())
        .fold(0.0, f32::max)
}

#[test]
fn fedex_global_model_is_the_weighted_mean_of_the_uploads_and_carries_its_residual() {
    // Three label-skewed clients with ranks 1, 2, 3 in one round: the global model (residual +
    // averaged factors) is exactly the size-weighted mean of the uploads' ΔW; FedAvg of the
    // factors is not. A second round keeps the first round's residual in the frozen weights.
    let (bb, env) = tiny_env(2, 3, 30, 12);
    let mut cfg = tiny_cfg(Method::Lora);
    cfg.lr = 5e-2;
    let opts = FederatedOptions {
        clients: 3,
        split: SplitMethod::Dirichlet { alpha: 0.5, min_size: 4 },
        client_ranks: vec![1, 2, 3],
        aggregator: MergeMethod::parse("fedex").unwrap(),
        ..Default::default()
    };
    let run = run_federated(&bb, &env, &cfg, &opts, || {}).unwrap();
    let refs: Vec<&Adapter> = run.last_uploads.iter().map(|(_, a)| a).collect();
    let weights = aggregation_weights(&run.split, &[0, 1, 2]);
    let mean = crate::merge::delta_mean(&refs, &weights).unwrap();
    assert!(max_delta_diff(&run.global.deltas(), &mean) < 1e-6, "{}", max_delta_diff(&run.global.deltas(), &mean));
    assert!(max_delta_diff(&run.global.adapter.deltas(), &mean) > 1e-5, "the residual should not vanish");
    assert_eq!(run.rounds[1].test, env.test.evaluate(&run.global.deltas()).unwrap());
    let two = run_federated(&bb, &env, &cfg, &FederatedOptions { rounds: 2, ..opts.clone() }, || {}).unwrap();
    let first = run.global.residual.clone();
    let refs: Vec<&Adapter> = two.last_uploads.iter().map(|(_, a)| a).collect();
    let second = crate::eval::sum_deltas(&first, &crate::merge::delta_mean(&refs, &weights).unwrap());
    assert!(max_delta_diff(&two.global.deltas(), &second) < 1e-5, "{}", max_delta_diff(&two.global.deltas(), &second));
    // Round-2 clients hold the first residual in their frozen weights.
    for (c, (_, up)) in two.clients[3..].iter().zip(&two.last_uploads) {
        assert_eq!(c.round, 2);
        assert_eq!(c.test.unwrap(), env.test.evaluate(&crate::eval::sum_deltas(&first, &up.deltas())).unwrap());
    }
}

#[test]
fn clients_record_global_local_and_train_metrics() {
    // Every evaluated client has all three metrics; its train accuracy is its local model's
    // accuracy on its own shots, and with one IID client holding all shots the local
    // (label-weighted) metrics on the balanced test set equal the global ones.
    let (bb, env) = tiny_env(2, 3, 24, 12);
    let opts = FederatedOptions { clients: 1, split: SplitMethod::Iid, ..Default::default() };
    let run = run_federated(&bb, &env, &tiny_cfg(Method::Lora), &opts, || {}).unwrap();
    let c = &run.clients[0];
    let (test, local, train) = (c.test.unwrap(), c.local_test.unwrap(), c.train.unwrap());
    assert!((local.accuracy - test.accuracy).abs() < 1e-12, "{local:?} vs {test:?}");
    assert!((local.loss - test.loss).abs() < 1e-4 * test.loss.max(1.0), "{local:?} vs {test:?}");
    assert_eq!(train, env.train.evaluate(&run.global.deltas()).unwrap());
    let opts = FederatedOptions { clients: 3, split: SplitMethod::Dirichlet { alpha: 0.3, min_size: 4 }, ..opts };
    let run = run_federated(&bb, &env, &tiny_cfg(Method::Lora), &opts, || {}).unwrap();
    for (c, up) in run.clients.iter().zip(&run.last_uploads) {
        let train = env.train.subset(&run.split[c.client]).unwrap().evaluate(&up.1.deltas()).unwrap();
        assert_eq!(c.train.unwrap(), train);
        assert!(c.local_test.is_some());
    }
    let row = ClientRow::new("lora", 5, &run.clients[0]);
    assert_eq!(row.train_accuracy, run.clients[0].train.map(|m| m.accuracy));
    assert_eq!(row.local_test_loss, run.clients[0].local_test.map(|m| m.loss));
    let off = FederatedOptions { evaluate_clients: false, ..opts };
    let run = run_federated(&bb, &env, &tiny_cfg(Method::Lora), &off, || {}).unwrap();
    assert!(run.clients.iter().all(|c| c.test.is_none() && c.local_test.is_none() && c.train.is_none()));
}
