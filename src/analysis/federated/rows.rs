//! The rows of the federated tables.

use super::simulation::{ClientRecord, RoundRecord};
use crate::report::table::table_row;
use crate::stats::MeanCi;
use std::collections::BTreeMap;

/// A metric's mean and CI over seeds per (method, round).
pub type RoundCis = BTreeMap<(String, i64), MeanCi>;

table_row! {
    /// The global model after one round: a row of `federated_rounds.parquet`.
    pub struct RoundRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// Round (0 = the common initialisation).
        pub round: i64,
        /// Clients drawn this round.
        pub clients_selected: i64,
        /// Test loss of the global adapter.
        pub test_loss: f64,
        /// Test accuracy of the global adapter.
        pub test_accuracy: f64,
        /// Wall time of the round, seconds.
        pub wall_seconds: f64,
    }
}

table_row! {
    /// Training images of one class held by one client: a row of `federated_label_histogram.parquet`.
    pub struct HistRow {
        /// Run seed (the split depends on it).
        pub seed: i64,
        /// Client index.
        pub client: i64,
        /// Class index.
        pub class: i64,
        /// Class name.
        pub class_name: String,
        /// Images of the class the client holds.
        pub count: i64,
    }
}

table_row! {
    /// One client's local model in one round: a row of `federated_clients.parquet`.
    pub struct ClientRow {
        /// Method name.
        pub method: String,
        /// Run seed.
        pub seed: i64,
        /// Round.
        pub round: i64,
        /// Client index.
        pub client: i64,
        /// Training images the client holds.
        pub examples: i64,
        /// The client's aggregation weight.
        pub weight: f64,
        /// The client's LoRA rank.
        pub rank: i64,
        /// The lowest block the client adapts.
        pub first_block: i64,
        /// Loss of the local model after local training on the global test set (null when
        /// clients are not evaluated).
        pub test_loss: Option<f64>,
        /// Accuracy of the local model on the global test set (null when clients are not
        /// evaluated).
        pub test_accuracy: Option<f64>,
        /// Loss on the client's label distribution: the global test set's per-class losses
        /// weighted by the client's training class counts (the split holds no local test data).
        pub local_test_loss: Option<f64>,
        /// Accuracy on the client's label distribution (per-class test accuracies weighted by
        /// the client's training class counts).
        pub local_test_accuracy: Option<f64>,
        /// Loss of the local model on the client's own training examples.
        pub train_loss: Option<f64>,
        /// Accuracy of the local model on the client's own training examples.
        pub train_accuracy: Option<f64>,
    }
}

table_row! {
    /// One (method, round, metric) over seeds: a row of `federated_summary.parquet`.
    pub struct SummaryRow {
        /// Method name.
        pub method: String,
        /// Round.
        pub round: i64,
        /// `global_accuracy`, or a mean over the round's evaluated clients:
        /// `mean_client_accuracy` (global test set), `mean_client_local_accuracy` (their label
        /// distributions), `mean_client_train_accuracy` (their training examples).
        pub metric: String,
        /// The metric over seeds.
        pub ci: MeanCi,
    }
}

impl RoundRow {
    /// The row of round `r` of `method`'s simulation with run seed `seed`.
    pub fn new(method: &str, seed: u64, r: &RoundRecord) -> Self {
        RoundRow {
            method: method.to_string(),
            seed: seed as i64,
            round: r.round as i64,
            clients_selected: r.selected.len() as i64,
            test_loss: r.test.loss,
            test_accuracy: r.test.accuracy,
            wall_seconds: r.wall_seconds,
        }
    }
}

impl ClientRow {
    /// The row of participation `c` in `method`'s simulation with run seed `seed`.
    pub fn new(method: &str, seed: u64, c: &ClientRecord) -> Self {
        ClientRow {
            method: method.to_string(),
            seed: seed as i64,
            round: c.round as i64,
            client: c.client as i64,
            examples: c.examples as i64,
            weight: c.weight,
            rank: c.rank as i64,
            first_block: c.first_block as i64,
            test_loss: c.test.map(|m| m.loss),
            test_accuracy: c.test.map(|m| m.accuracy),
            local_test_loss: c.local_test.map(|m| m.loss),
            local_test_accuracy: c.local_test.map(|m| m.accuracy),
            train_loss: c.train.map(|m| m.loss),
            train_accuracy: c.train.map(|m| m.accuracy),
        }
    }
}

impl HistRow {
    /// The rows of a client × class `histogram` of the split of run seed `seed`.
    pub fn of_split(seed: u64, histogram: &[Vec<usize>], class_names: &[String]) -> Vec<Self> {
        let mut rows = Vec::new();
        for (c, row) in histogram.iter().enumerate() {
            for (k, &n) in row.iter().enumerate() {
                rows.push(HistRow {
                    seed: seed as i64,
                    client: c as i64,
                    class: k as i64,
                    class_name: class_names[k].clone(),
                    count: n as i64,
                });
            }
        }
        rows
    }
}

impl SummaryRow {
    /// The summary rows of `(metric, CIs per (method, round))` pairs, metric by metric.
    pub fn of_cis(metrics: &[(&str, &RoundCis)]) -> Vec<Self> {
        metrics
            .iter()
            .flat_map(|(metric, cis)| {
                cis.iter().map(|((m, r), c)| SummaryRow {
                    method: m.clone(),
                    round: *r,
                    metric: metric.to_string(),
                    ci: c.clone(),
                })
            })
            .collect()
    }
}
