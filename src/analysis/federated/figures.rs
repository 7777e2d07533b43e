//! The federated figures: accuracy per round, the clients' local models, the label split.

use super::rows::{ClientRow, RoundRow};
use super::FederatedOptions;
use crate::analysis::summary::{ci_series, ordered_unique};
use crate::federated::split::SplitMethod;
use crate::report::plot::{Bar, BarGroup, BarPlot, Heatmap, LinePlot};
use crate::stats::MeanCi;
use anyhow::Result;
use std::collections::BTreeMap;

/// How the split reads in a figure title.
fn split_label(split: &SplitMethod) -> String {
    match split {
        SplitMethod::Iid => "IID split".into(),
        SplitMethod::Dirichlet { alpha, .. } => format!("Dirichlet(α = {alpha}) label skew"),
    }
}

/// Global test accuracy (and the clients' mean local accuracy) per round, per method.
pub(super) fn rounds_figure(
    methods: &[String],
    global: &BTreeMap<(String, i64), MeanCi>,
    clients: &BTreeMap<(String, i64), MeanCi>,
    opts: &FederatedOptions,
) -> Result<String> {
    let mut series = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let pts: Vec<(f64, MeanCi)> =
            global.iter().filter(|((mm, _), _)| mm == m).map(|((_, r), c)| (*r as f64, c.clone())).collect();
        series.push(ci_series(&format!("{m} global"), &pts, false, Some(i % 10)));
        let pts: Vec<(f64, MeanCi)> =
            clients.iter().filter(|((mm, _), _)| mm == m).map(|((_, r), c)| (*r as f64, c.clone())).collect();
        if !pts.is_empty() {
            series.push(ci_series(&format!("{m} mean client (local model)"), &pts, true, Some(i % 10)));
        }
    }
    let frozen =
        global.iter().find(|((_, r), _)| *r == 0).map(|(_, c)| (c.mean, "frozen backbone (round 0)".to_string()));
    crate::report::plot::line_plot_svg(&LinePlot {
        title: format!(
            "Federated {} ({} clients, {}, {} per round): global test accuracy per round (band = 95% t-CI over seeds)",
            opts.aggregator,
            opts.clients,
            split_label(&opts.split),
            opts.clients_per_round()
        ),
        x_label: "round (0 = common initialisation)".into(),
        y_label: "test accuracy".into(),
        series,
        reference_y: frozen,
        ..Default::default()
    })
}

/// Every client's local model and the merged global model in round `round` of seed `seed`.
pub(super) fn clients_figure(
    methods: &[String],
    cr: &[ClientRow],
    rr: &[RoundRow],
    seed: u64,
    round: i64,
) -> Result<String> {
    let seed = seed as i64;
    let mut groups = Vec::new();
    let ids = ordered_unique(cr.iter().filter(|c| c.seed == seed && c.round == round).map(|c| c.client.to_string()));
    for id in ids {
        let mut bars = Vec::new();
        let mut n = 0;
        for m in methods {
            if let Some(c) =
                cr.iter().find(|c| &c.method == m && c.seed == seed && c.round == round && c.client.to_string() == id)
            {
                n = c.examples;
                if let Some(a) = c.test_accuracy {
                    bars.push(Bar { series: m.clone(), value: a, err: None });
                }
            }
        }
        groups.push(BarGroup { label: format!("{id} (n={n})"), bars });
    }
    let bars = methods
        .iter()
        .filter_map(|m| {
            rr.iter().find(|r| &r.method == m && r.seed == seed && r.round == round).map(|r| Bar {
                series: m.clone(),
                value: r.test_accuracy,
                err: None,
            })
        })
        .collect();
    groups.push(BarGroup { label: "global".into(), bars });
    crate::report::plot::bar_plot_svg(&BarPlot {
        title: format!(
            "Local models of the clients and the merged global model, round {round}, seed {seed}: test accuracy"
        ),
        x_label: "client (training images held); global = the merged adapter".into(),
        y_label: "test accuracy".into(),
        groups,
        ..Default::default()
    })
}

/// Training images per client and class of the split `h` (seed `seed`).
pub(super) fn histogram_figure(h: &[Vec<usize>], classes: &[String], seed: u64, split: &SplitMethod) -> Result<String> {
    crate::report::plot::heatmap_svg(&Heatmap {
        title: format!("Training images per client and class ({}, seed {seed})", split_label(split)),
        x_label: "class".into(),
        y_label: "client".into(),
        x_ticks: classes.to_vec(),
        y_ticks: (0..h.len()).map(|c| c.to_string()).collect(),
        values: h.iter().map(|r| r.iter().map(|v| *v as f64).collect()).collect(),
        annotate: true,
        ..Default::default()
    })
}
