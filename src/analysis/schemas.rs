//! The Parquet schema (file names, column names, order and types) of every table the
//! analyses write, pinned: each analysis runs on a tiny random backbone and every table it
//! returns must match its entry here.

use super::test_support::{random_adapter, tiny_env};
use super::Outputs;
use crate::adapter::TargetModule::{Query, Value};
use crate::analysis::layer_game::GameValue;
use crate::progress::Progress;
use crate::train::{Method, TrainConfig};

/// A pinned schema: file name and `(column, type)` in order (types as
/// [`crate::report::table::Table::describe_schema`] names them).
type Schema = (&'static str, &'static [(&'static str, &'static str)]);

/// Checks that `out` holds exactly the tables `pinned`, in order, each with its pinned schema.
fn check(out: &Outputs, pinned: &[Schema]) {
    let dump: Vec<String> = out
        .tables
        .iter()
        .map(|(n, t)| {
            let cols: Vec<String> = t.describe_schema().iter().map(|(c, ty)| format!("(\"{c}\", \"{ty}\")")).collect();
            format!("(\"{n}\", &[{}]),", cols.join(", "))
        })
        .collect();
    let names: Vec<&str> = out.tables.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<&str> = pinned.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, expected, "table files; found:\n{}", dump.join("\n"));
    for ((name, table), (_, columns)) in out.tables.iter().zip(pinned) {
        let got: Vec<(String, &str)> = table.describe_schema();
        let want: Vec<(String, &str)> = columns.iter().map(|(c, t)| (c.to_string(), *t)).collect();
        assert_eq!(got, want, "schema of {name}");
    }
}

fn connectivity_outputs() -> Outputs {
    use super::connectivity::space::PathSpace;
    use super::connectivity::{analyze, ConnectivityOptions, SeedRun};
    let (bb, env) = tiny_env(2, 3, 12, 12);
    let adapters: Vec<_> = (1..=3).map(|s| random_adapter(&bb, &[Query, Value], 2, s)).collect();
    let runs: Vec<SeedRun> =
        adapters.iter().zip(1..).map(|(a, s)| SeedRun { method: "lora".into(), seed: s, adapter: a }).collect();
    let opts = ConnectivityOptions { alphas: 3, layer_alphas: 2, spaces: PathSpace::LINES.to_vec(), layerwise: true };
    let curves = super::connectivity::curves::CurveTraining {
        kinds: vec![crate::train::curve::CurveKind::Bezier],
        head: &env.head,
        train_inputs: &env.train_inputs,
        labels: &env.data.train.labels,
        configs: [("lora".to_string(), TrainConfig { steps: 2, batch_size: 4, ..TrainConfig::default() })].into(),
    };
    analyze(&env.test, &env.train, &runs, &opts, Some(&curves), &Progress::hidden()).unwrap().0
}

fn multitask_outputs() -> Outputs {
    use super::multitask::{analyze, MultitaskOptions, Operator, TaskAdapter, TaskInput};
    let (bb, env_a) = tiny_env(2, 3, 12, 12);
    let (_, env_b) = tiny_env(2, 3, 12, 12);
    let tasks = [TaskInput { name: "a".into(), test: &env_a.test }, TaskInput { name: "b".into(), test: &env_b.test }];
    let ad = [random_adapter(&bb, &[Query, Value], 2, 1), random_adapter(&bb, &[Query, Value], 2, 2)];
    let inputs: Vec<TaskAdapter> = ad
        .iter()
        .enumerate()
        .map(|(t, a)| TaskAdapter { method: "lora".into(), seed: 1, task: t, adapter: a })
        .collect();
    let ops = Operator::parse_list("factor,factor+align").unwrap();
    analyze(&tasks, &inputs, &ops, &MultitaskOptions::default(), &Progress::hidden()).unwrap().0
}

fn federated_outputs() -> Outputs {
    use super::federated::{analyze, FederatedOptions};
    use crate::federated::split::SplitMethod;
    let (bb, env) = tiny_env(2, 3, 24, 12);
    let mut base = TrainConfig { steps: 2, batch_size: 8, lr: 1e-2, ..TrainConfig::default() };
    base.lora.targets = vec![Query, Value];
    let opts = FederatedOptions { clients: 2, split: SplitMethod::Iid, ..Default::default() };
    analyze(&bb, &env, &base, &[Method::Lora], &[1], &opts, &Progress::hidden()).unwrap().0
}

fn prune_outputs() -> Outputs {
    use super::prune::{analyze, PruneInput, PruneOptions};
    let (bb, env) = tiny_env(2, 3, 12, 12);
    let adapter = random_adapter(&bb, &[Query, Value], 2, 1);
    let inputs = [PruneInput { method: "lora".into(), seed: 1, adapter: &adapter, table: None }];
    let opts = PruneOptions { sparsities: vec![0.0, 0.5], random_orders: 1, ..Default::default() };
    analyze(&env.test, &inputs, &opts, &Progress::hidden()).unwrap().0
}

fn shapley_outputs() -> Outputs {
    use super::shapley::{analyze, ShapleyInput, ShapleyOptions};
    use crate::adapter::Grouping;
    use crate::shapley::Estimator;
    let (bb, env) = tiny_env(2, 3, 12, 12);
    let adapter = random_adapter(&bb, &[Query, Value], 2, 1);
    let inputs =
        [ShapleyInput { method: "lora".into(), task: "tiny".into(), run_seed: 1, adapter: &adapter, table: None }];
    let opts = ShapleyOptions {
        budget: 8,
        estimators: Estimator::parse_list("permutation").unwrap(),
        seed: 1,
        grouping: Grouping::Block,
        value: GameValue::Accuracy,
        repetitions: 1,
        top_k: 1,
        target_precision: None,
    };
    analyze(&env.test, &inputs, &opts).unwrap().0
}

fn shapley_bench_outputs() -> Outputs {
    use super::shapley_bench::{bench, interactions_outputs, BenchOptions, TableEntry};
    use crate::shapley::Estimator;
    let values: Vec<f64> = (0..8u64).map(|c| c.count_ones() as f64 + 0.1 * (c & 1) as f64).collect();
    let games = [TableEntry { name: "tiny/lora".into(), n: 3, values }];
    let opts = BenchOptions { estimators: Estimator::parse_list("permutation").unwrap(), budgets: vec![8], seeds: 1 };
    let mut out = interactions_outputs(&games).unwrap();
    out.tables.push(("shapley_bench.parquet".into(), bench(&games, &opts).unwrap().0));
    out
}

/// One test per analysis, `name: outputs => PINNED`: the tables `outputs()` returns match
/// the pinned schemas.
macro_rules! schema_tests {
    ($($test:ident: $outputs:ident => $pinned:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                check(&$outputs(), $pinned);
            }
        )*
    };
}

schema_tests! {
    shapley_bench_tables_keep_their_schema: shapley_bench_outputs => SHAPLEY_BENCH,
    connectivity_tables_keep_their_schema: connectivity_outputs => CONNECTIVITY,
    multitask_tables_keep_their_schema: multitask_outputs => MULTITASK,
    federated_tables_keep_their_schema: federated_outputs => FEDERATED,
    prune_tables_keep_their_schema: prune_outputs => PRUNE,
    shapley_tables_keep_their_schema: shapley_outputs => SHAPLEY,
}

const CONNECTIVITY: &[Schema] = &[
    (
        "connectivity_paths.parquet",
        &[
            ("method", "String"),
            ("seed_a", "Int64"),
            ("seed_b", "Int64"),
            ("space", "String"),
            ("path_kind", "String"),
            ("alpha", "Float64"),
            ("split", "String"),
            ("loss", "Float64"),
            ("accuracy", "Float64"),
        ],
    ),
    (
        "connectivity_barriers.parquet",
        &[
            ("method", "String"),
            ("seed_a", "Int64"),
            ("seed_b", "Int64"),
            ("space", "String"),
            ("path_kind", "String"),
            ("split", "String"),
            ("quantity", "String"),
            ("scope", "String"),
            ("block", "Int64"),
            ("barrier_linear_ref", "Float64"),
            ("barrier_mean_ref", "Float64"),
            ("barrier_worst_ref", "Float64"),
            ("midpoint_gap", "Float64"),
            ("alpha_of_linear_max", "Float64"),
        ],
    ),
    (
        "connectivity_barrier_ci.parquet",
        &[
            ("method", "String"),
            ("space", "String"),
            ("split", "String"),
            ("quantity", "String"),
            ("scope", "String"),
            ("block", "Int64"),
            ("convention", "String"),
            ("n_pairs", "Int64"),
            ("mean", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
        ],
    ),
    (
        "connectivity_distances.parquet",
        &[
            ("method", "String"),
            ("seed_a", "Int64"),
            ("seed_b", "Int64"),
            ("space", "String"),
            ("block", "Int64"),
            ("euclidean", "Float64"),
            ("cosine", "Float64"),
        ],
    ),
    (
        "connectivity_merge_all.parquet",
        &[
            ("method", "String"),
            ("space", "String"),
            ("split", "String"),
            ("n_seeds", "Int64"),
            ("loss", "Float64"),
            ("accuracy", "Float64"),
        ],
    ),
    (
        "connectivity_alignment.parquet",
        &[
            ("method", "String"),
            ("seed_a", "Int64"),
            ("seed_b", "Int64"),
            ("space", "String"),
            ("block", "Int64"),
            ("module", "String"),
            ("distance_before", "Float64"),
            ("distance_after", "Float64"),
            ("distance_ratio", "Float64"),
            ("midpoint_gap_before", "Float64"),
            ("midpoint_gap_after", "Float64"),
        ],
    ),
    (
        "connectivity_decomposition.parquet",
        &[
            ("method", "String"),
            ("seed_a", "Int64"),
            ("seed_b", "Int64"),
            ("alpha", "Float64"),
            ("delta_loss", "Float64"),
            ("delta_accuracy", "Float64"),
            ("factor_loss", "Float64"),
            ("factor_accuracy", "Float64"),
            ("endpoints_loss", "Float64"),
            ("endpoints_accuracy", "Float64"),
            ("cross_norm", "Float64"),
            ("path_norm", "Float64"),
            ("cross_relative", "Float64"),
        ],
    ),
    (
        "connectivity_curves.parquet",
        &[
            ("method", "String"),
            ("seed_a", "Int64"),
            ("seed_b", "Int64"),
            ("curve", "String"),
            ("trained_with", "String"),
            ("steps", "Int64"),
            ("curve_seed", "Int64"),
            ("final_train_loss", "Float64"),
            ("control_distance", "Float64"),
            ("endpoint_distance", "Float64"),
            ("control_relative", "Float64"),
            ("wall_seconds", "Float64"),
        ],
    ),
    (
        "connectivity_summary.parquet",
        &[
            ("method", "String"),
            ("space", "String"),
            ("quantity", "String"),
            ("statistic", "String"),
            ("n_seeds", "Int64"),
            ("n_pairs", "Int64"),
            ("mean", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
            ("p_value", "Float64"),
        ],
    ),
];
const MULTITASK: &[Schema] = &[
    (
        "multitask_accuracy.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("operator", "String"),
            ("task", "String"),
            ("test_loss", "Float64"),
            ("test_accuracy", "Float64"),
            ("own_accuracy", "Float64"),
            ("frozen_accuracy", "Float64"),
            ("normalized_accuracy", "Float64"),
        ],
    ),
    (
        "multitask_summary.parquet",
        &[
            ("method", "String"),
            ("operator", "String"),
            ("task", "String"),
            ("metric", "String"),
            ("n", "Int64"),
            ("mean", "Float64"),
            ("std", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
        ],
    ),
    (
        "multitask_align.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("block", "Int64"),
            ("module", "String"),
            ("gap_before", "Float64"),
            ("gap_after", "Float64"),
            ("mixture_norm", "Float64"),
            ("mean_abs_p", "Float64"),
        ],
    ),
];
const FEDERATED: &[Schema] = &[
    (
        "federated_rounds.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("round", "Int64"),
            ("clients_selected", "Int64"),
            ("test_loss", "Float64"),
            ("test_accuracy", "Float64"),
            ("wall_seconds", "Float64"),
        ],
    ),
    (
        "federated_clients.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("round", "Int64"),
            ("client", "Int64"),
            ("examples", "Int64"),
            ("weight", "Float64"),
            ("rank", "Int64"),
            ("first_block", "Int64"),
            ("test_loss", "Float64 (nullable)"),
            ("test_accuracy", "Float64 (nullable)"),
            ("local_test_loss", "Float64 (nullable)"),
            ("local_test_accuracy", "Float64 (nullable)"),
            ("train_loss", "Float64 (nullable)"),
            ("train_accuracy", "Float64 (nullable)"),
        ],
    ),
    (
        "federated_label_histogram.parquet",
        &[("seed", "Int64"), ("client", "Int64"), ("class", "Int64"), ("class_name", "String"), ("count", "Int64")],
    ),
    (
        "federated_summary.parquet",
        &[
            ("method", "String"),
            ("round", "Int64"),
            ("metric", "String"),
            ("n", "Int64"),
            ("mean", "Float64"),
            ("std", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
        ],
    ),
];
const PRUNE: &[Schema] = &[
    (
        "prune_structured.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("strategy", "String"),
            ("modules_kept", "Int64"),
            ("modules_total", "Int64"),
            ("params_kept_fraction", "Float64"),
            ("test_loss", "Float64"),
            ("test_accuracy", "Float64"),
            ("full_accuracy", "Float64"),
            ("frozen_accuracy", "Float64"),
        ],
    ),
    (
        "prune_structured_summary.parquet",
        &[
            ("method", "String"),
            ("strategy", "String"),
            ("n", "Int64"),
            ("mean", "Float64"),
            ("std", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
        ],
    ),
    (
        "prune_removal.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("order", "String"),
            ("repeat", "Int64"),
            ("step", "Int64"),
            ("blocks_kept", "Int64"),
            ("removed_block", "Int64"),
            ("test_accuracy", "Float64"),
        ],
    ),
    (
        "prune_removal_summary.parquet",
        &[
            ("method", "String"),
            ("order", "String"),
            ("blocks_kept", "Int64"),
            ("n", "Int64"),
            ("mean", "Float64"),
            ("std", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
        ],
    ),
    (
        "prune_block_scores.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("player", "Int64"),
            ("block", "Int64"),
            ("shapley", "Float64"),
            ("shapley_source", "String"),
            ("norm", "Float64"),
            ("leave_one_out", "Float64"),
        ],
    ),
    (
        "prune_unstructured.parquet",
        &[
            ("method", "String"),
            ("seed", "Int64"),
            ("target", "String"),
            ("ranking", "String"),
            ("sparsity", "Float64"),
            ("test_loss", "Float64"),
            ("test_accuracy", "Float64"),
        ],
    ),
    (
        "prune_unstructured_summary.parquet",
        &[
            ("method", "String"),
            ("target", "String"),
            ("sparsity", "Float64"),
            ("n", "Int64"),
            ("mean", "Float64"),
            ("std", "Float64"),
            ("ci95_lo", "Float64"),
            ("ci95_hi", "Float64"),
        ],
    ),
];
const SHAPLEY: &[Schema] = &[
    (
        "shapley_values.parquet",
        &[
            ("method", "String"),
            ("task", "String"),
            ("run_seed", "Int64"),
            ("player", "Int64"),
            ("player_label", "String"),
            ("estimator", "String"),
            ("value", "Float64"),
            ("std_error", "Float64"),
            ("evaluations", "Int64"),
            ("samples", "Int64"),
            ("exact_value", "Float64 (nullable)"),
        ],
    ),
    (
        "shapley_convergence.parquet",
        &[
            ("method", "String"),
            ("estimator", "String"),
            ("budget", "Int64"),
            ("repetition_seed", "Int64"),
            ("evaluations", "Int64"),
            ("mse", "Float64"),
            ("max_error", "Float64"),
            ("kendall_tau", "Float64"),
            ("precision_at_k", "Float64"),
            ("k", "Int64"),
        ],
    ),
    (
        "shapley_coalitions.parquet",
        &[
            ("method", "String"),
            ("coalition", "Int64"),
            ("players", "List(Int64)"),
            ("size", "Int64"),
            ("value", "Float64"),
        ],
    ),
    (
        "multilinear_extension.parquet",
        &[("method", "String"), ("q", "Float64"), ("value", "Float64"), ("std_error", "Float64"), ("source", "String")],
    ),
    (
        "shapley_efficiency.parquet",
        &[
            ("method", "String"),
            ("estimator", "String"),
            ("sum_of_values", "Float64"),
            ("v_full_minus_v_empty", "Float64"),
            ("gap", "Float64"),
        ],
    ),
];
const SHAPLEY_BENCH: &[Schema] = &[
    (
        "layer_interactions.parquet",
        &[("game", "String"), ("player_i", "Int64"), ("player_j", "Int64"), ("shapley_interaction", "Float64")],
    ),
    (
        "layer_players.parquet",
        &[("game", "String"), ("player", "Int64"), ("shapley", "Float64"), ("banzhaf", "Float64")],
    ),
    (
        "layer_additivity.parquet",
        &[
            ("game", "String"),
            ("variance_explained_order1", "Float64"),
            ("variance_explained_order2", "Float64"),
            ("moebius_abs_mass_order1", "Float64"),
            ("moebius_abs_mass_order2", "Float64"),
            ("moebius_abs_mass_order3plus", "Float64"),
        ],
    ),
    (
        "shapley_bench.parquet",
        &[
            ("game", "String"),
            ("estimator", "String"),
            ("budget", "Int64"),
            ("seed", "Int64"),
            ("evaluations", "Int64"),
            ("block_passes", "Int64"),
            ("mse", "Float64"),
            ("coverage_95", "Float64"),
            ("seconds", "Float64"),
        ],
    ),
];

/// The per-example predictions of an analysis (`predictions.parquet`, also what
/// `copra-lab eval --predictions` writes) and the intervals with the test items computed from
/// them (`items.parquet`).
const STUDY_ITEMS: &[Schema] = &[
    (
        "predictions.parquet",
        &[
            ("cell", "String"),
            ("task", "String"),
            ("variant", "String"),
            ("x", "Float64"),
            ("replicate", "Int64"),
            ("seeds", "String"),
            ("evaluated", "String"),
            ("draw", "Int64"),
            ("example", "Int64"),
            ("label", "Int64"),
            ("prediction", "Int64"),
            ("correct", "Boolean"),
            ("loss", "Float64"),
        ],
    ),
    (
        "items.parquet",
        &[
            ("evaluated", "String"),
            ("task", "String"),
            ("variant", "String"),
            ("baseline", "String"),
            ("x", "Float64"),
            ("procedure", "String"),
            ("n_seeds", "Int64"),
            ("k", "Int64"),
            ("groups", "Int64"),
            ("items", "Int64"),
            ("mean", "Float64"),
            ("se", "Float64"),
            ("df", "Float64"),
            ("lo", "Float64"),
            ("hi", "Float64"),
            ("seed_share", "Float64"),
            ("item_share", "Float64"),
            ("note", "String"),
        ],
    ),
];

#[test]
fn study_prediction_tables_keep_their_schema() {
    use crate::report::table::Table;
    use crate::study::items::ItemsRow;
    use crate::study::measure::Prediction;
    let out = Outputs {
        tables: vec![
            ("predictions.parquet".into(), Table::from_rows::<Prediction>(&[])),
            ("items.parquet".into(), Table::from_rows::<ItemsRow>(&[])),
        ],
        figures: Vec::new(),
    };
    check(&out, STUDY_ITEMS);
}
