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
        assert!(max_diff(&run.global, &run.last_uploads[0].1) < 1e-6);
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
    for (key, g) in &run.global.modules {
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
    assert_eq!(run.global.blocks(), [0, 1, 2].into());
    assert_eq!(run.global.modules[&ModuleKey { block: 2, module: TargetModule::Query }].rank(), 4);
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
