//! Intervals that include the test items, from an analysis' per-example predictions: every
//! finished cell's `predictions.parquet` part is merged into the report folder's
//! `predictions.parquet`, and `items.parquet` gives, per evaluated model kind, task, variant
//! and sweep value, the mean accuracy over seeds (or groups of seeds) and test items with its
//! standard error, degrees of freedom and 95% interval, and the same for the paired difference
//! variant − baseline (same seeds, same items).
//!
//! Which procedure a row uses depends on the draws of its test sets:
//! - one shared test set (`data_draw = "fixed"`, and the group cells, which train every run of
//!   a group on the fixed draw): the seeds × items procedure
//!   ([`crate::stats::seeds_items_mean`]), whose `seed_share` and `item_share` split the
//!   variance of the mean;
//! - a test set per replicate (`data_draw = "replicate"`): the replicates are independent
//!   draws of everything, so the seed-level procedure (the delete-one-seed jackknife, the
//!   paired t for single runs) already contains the items; the shares are NaN.

use super::measure::Prediction;
use super::store;
use crate::report::table::{table_row, Table};
use crate::stats::{group_jackknife, seeds_items_mean};
use anyhow::Result;
use std::collections::BTreeMap;
use std::path::Path;

table_row! {
    /// One row of `items.parquet`: an accuracy (or a paired difference of accuracies) with an
    /// interval that includes the test items.
    #[derive(Clone, Debug, PartialEq)]
    pub struct ItemsRow {
        /// What was evaluated (the `evaluated` column of `predictions.parquet`).
        pub evaluated: String,
        /// Task.
        pub task: String,
        /// Variant.
        pub variant: String,
        /// Empty for the variant's own accuracy; the baseline for the difference variant − baseline.
        pub baseline: String,
        /// Value of the swept key (NaN without a sweep).
        pub x: f64,
        /// `seeds × items` (one shared test set) or `seeds` (a test set per replicate).
        pub procedure: String,
        /// Seeds (replicates).
        pub n_seeds: i64,
        /// Seeds per evaluated model (1 for single runs, 2 for a pair's merge or barrier).
        pub k: i64,
        /// Models (groups of seeds) averaged.
        pub groups: i64,
        /// Test items per model.
        pub items: i64,
        /// Mean accuracy (or difference).
        pub mean: f64,
        /// Its standard error.
        pub se: f64,
        /// Degrees of freedom of its t reference.
        pub df: f64,
        /// Lower end of the 95% interval.
        pub lo: f64,
        /// Upper end of the 95% interval.
        pub hi: f64,
        /// Share of `se²` from the seeds (NaN unless `seeds × items`).
        pub seed_share: f64,
        /// Share of `se²` from the test items, their interaction with the seeds included (NaN
        /// unless `seeds × items`).
        pub item_share: f64,
        /// Why the row has no interval (too few seeds, missing groups, ...); empty otherwise.
        pub note: String,
    }
}

/// A quantity: what was evaluated, on which task, by which variant, at which sweep value.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Quantity {
    evaluated: String,
    task: String,
    x_bits: u64,
}

/// The scores of one evaluated model (a run or a group of runs): its test set's draw and
/// whether each example, by id, was right.
#[derive(Clone, Debug, Default)]
struct Scores {
    draw: i64,
    correct: BTreeMap<i64, bool>,
}

/// Predictions indexed by quantity, variant and seeds, in the order they were first seen.
#[derive(Default)]
struct Index {
    order: Vec<Quantity>,
    variants: Vec<String>,
    by: BTreeMap<(Quantity, String), BTreeMap<String, Scores>>,
}

impl Index {
    fn add(&mut self, p: &Prediction) {
        let q = Quantity { evaluated: p.evaluated.clone(), task: p.task.clone(), x_bits: p.x.to_bits() };
        if !self.order.contains(&q) {
            self.order.push(q.clone());
        }
        if !self.variants.contains(&p.variant) {
            self.variants.push(p.variant.clone());
        }
        let unit = self.by.entry((q, p.variant.clone())).or_default().entry(p.seeds.clone()).or_default();
        unit.draw = p.draw;
        unit.correct.insert(p.example, p.correct);
    }
}

/// One interval's numbers: `(procedure, n, k, groups, items, mean, se, df, lo, hi, seed share,
/// item share)`.
type Interval = (&'static str, usize, usize, usize, usize, f64, f64, f64, f64, f64, f64, f64);

/// The per-item scores of one model, by example id, with the draw of its test set.
type Unit = (i64, BTreeMap<i64, f64>);

/// The interval of the models `units` (seeds string → per-item scores, `−1..=1` for a
/// difference, with their draw): seeds × items when every model saw the same items, else the
/// seed-level jackknife of the per-model means.
fn interval(units: &BTreeMap<String, Unit>) -> Result<Interval> {
    let parsed: Vec<(Vec<u64>, &Unit)> = units
        .iter()
        .map(|(s, u)| Ok((s.split('+').map(|v| v.parse::<u64>()).collect::<Result<Vec<_>, _>>()?, u)))
        .collect::<Result<_, std::num::ParseIntError>>()
        .map_err(|e| anyhow::anyhow!("a seeds value is not '+'-separated seeds: {e}"))?;
    let mut seeds: Vec<u64> = parsed.iter().flat_map(|(s, _)| s.iter().copied()).collect();
    seeds.sort_unstable();
    seeds.dedup();
    let index = |s: &u64| seeds.binary_search(s).unwrap_or_default();
    let groups: Vec<Vec<usize>> = parsed
        .iter()
        .map(|(s, _)| {
            let mut g: Vec<usize> = s.iter().map(index).collect();
            g.sort_unstable();
            g
        })
        .collect();
    let n = seeds.len();
    let first = &parsed[0].1;
    let shared = parsed.iter().all(|(_, (draw, c))| *draw == first.0 && c.keys().eq(first.1.keys()));
    if shared {
        let values: Vec<(Vec<usize>, Vec<f64>)> =
            groups.into_iter().zip(&parsed).map(|(g, (_, (_, c)))| (g, c.values().copied().collect())).collect();
        let e = seeds_items_mean(n, &values, 0.95)?;
        let (seed_share, item_share) = e.shares();
        Ok(("seeds × items", n, e.k, e.groups, e.items, e.mean, e.se, e.df, e.lo, e.hi, seed_share, item_share))
    } else {
        let items = parsed.iter().map(|(_, (_, c))| c.len()).min().unwrap_or(0);
        let values: Vec<(Vec<usize>, f64)> = groups
            .into_iter()
            .zip(&parsed)
            .map(|(g, (_, (_, c)))| (g, c.values().sum::<f64>() / c.len().max(1) as f64))
            .collect();
        let e = group_jackknife(n, &values, 0.95)?;
        Ok(("seeds", n, e.k, e.groups, items, e.mean, e.se, e.df, e.lo, e.hi, f64::NAN, f64::NAN))
    }
}

/// The `items.parquet` rows of `predictions`: for every quantity (evaluated, task, x) in the
/// order first seen, each variant's accuracy, then each other variant's paired difference
/// from `baseline` over the seeds (and, on a shared test set, the items) both have.
pub fn items_table(predictions: &[Prediction], baseline: &str) -> Vec<ItemsRow> {
    let mut index = Index::default();
    predictions.iter().for_each(|p| index.add(p));
    items_rows(&index, baseline)
}

fn items_rows(index: &Index, baseline: &str) -> Vec<ItemsRow> {
    let mut rows = Vec::new();
    for q in &index.order {
        let base = index.by.get(&(q.clone(), baseline.to_string()));
        for v in &index.variants {
            let Some(units) = index.by.get(&(q.clone(), v.clone())) else { continue };
            let level: BTreeMap<String, Unit> = units
                .iter()
                .map(|(s, u)| {
                    (s.clone(), (u.draw, u.correct.iter().map(|(i, c)| (*i, f64::from(u8::from(*c)))).collect()))
                })
                .collect();
            rows.push(row(q, v, "", interval(&level)));
            if v == baseline {
                continue;
            }
            let Some(base) = base else { continue };
            // Paired within a seed group and its draw; on a shared test set, item by item.
            let diff: BTreeMap<String, Unit> = units
                .iter()
                .filter_map(|(s, u)| {
                    let b = base.get(s).filter(|b| b.draw == u.draw)?;
                    let d = u
                        .correct
                        .iter()
                        .filter_map(|(i, c)| {
                            b.correct.get(i).map(|bc| (*i, f64::from(u8::from(*c)) - f64::from(u8::from(*bc))))
                        })
                        .collect();
                    Some((s.clone(), (u.draw, d)))
                })
                .collect();
            let result = if diff.is_empty() {
                Err(anyhow::anyhow!("no seeds in common with the baseline {baseline}"))
            } else {
                interval(&diff)
            };
            rows.push(row(q, v, baseline, result));
        }
    }
    rows
}

fn row(q: &Quantity, variant: &str, baseline: &str, result: Result<Interval>) -> ItemsRow {
    let nan = f64::NAN;
    let (procedure, n, k, groups, items, mean, se, df, lo, hi, seed_share, item_share, note) = match result {
        Ok((p, n, k, g, i, m, se, df, lo, hi, ss, is)) => (p, n, k, g, i, m, se, df, lo, hi, ss, is, String::new()),
        Err(e) => ("", 0, 0, 0, 0, nan, nan, nan, nan, nan, nan, nan, format!("{e:#}")),
    };
    ItemsRow {
        evaluated: q.evaluated.clone(),
        task: q.task.clone(),
        variant: variant.into(),
        baseline: baseline.into(),
        x: f64::from_bits(q.x_bits),
        procedure: procedure.into(),
        n_seeds: n as i64,
        k: k as i64,
        groups: groups as i64,
        items: items as i64,
        mean,
        se,
        df,
        lo,
        hi,
        seed_share,
        item_share,
        note,
    }
}

/// Writes per-example prediction rows to `path` (a `.parquet` file; temp file then rename).
pub fn write_predictions(path: &Path, rows: &[Prediction]) -> Result<()> {
    if path.extension().and_then(|e| e.to_str()) != Some("parquet") {
        anyhow::bail!("--predictions {}: name a .parquet file, e.g. predictions.parquet", path.display());
    }
    Table::from_rows(rows).write_parquet(path)
}

/// Merges the per-example predictions of the finished cells `ids` of the analysis in `dir`
/// into `dir/predictions.parquet` and writes `dir/items.parquet` (see the module
/// documentation); returns the items rows. Writes nothing when no cell saved predictions (a
/// report folder from before they were saved).
pub fn write_tables<'a>(dir: &Path, ids: impl IntoIterator<Item = &'a str>, baseline: &str) -> Result<Vec<ItemsRow>> {
    let mut index = Index::default();
    let mut frames = Vec::new();
    for id in ids {
        let part = store::cell_dir(dir, id).join("predictions.parquet");
        if !part.is_file() {
            continue;
        }
        let frame = Table::read_parquet(&part)?;
        Prediction::from_frame(&frame)?.iter().for_each(|p| index.add(p));
        frames.push(frame);
    }
    let Some(mut all) = frames.first().cloned() else { return Ok(Vec::new()) };
    for f in &frames[1..] {
        all.vstack_mut(f).map_err(|e| anyhow::anyhow!("cannot merge the cells' predictions: {e}"))?;
    }
    crate::report::table::write_frame(&mut all, &dir.join("predictions.parquet"))?;
    let rows = items_rows(&index, baseline);
    Table::from_rows(&rows).write_parquet(&dir.join("items.parquet"))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{all_groups, mean_ci};

    fn pred(variant: &str, seeds: &str, draw: i64, example: i64, correct: bool) -> Prediction {
        Prediction {
            cell: format!("c-{variant}-{seeds}"),
            task: "t".into(),
            variant: variant.into(),
            x: f64::NAN,
            replicate: seeds.split('+').next().unwrap().parse().unwrap(),
            seeds: seeds.into(),
            evaluated: "endpoint".into(),
            draw,
            example,
            label: 0,
            prediction: i64::from(!correct),
            correct,
            loss: 0.0,
        }
    }

    #[test]
    fn shared_test_set_gives_the_seeds_by_items_interval_and_the_paired_difference() {
        // Three seeds, four shared items. Baseline right on [1,1,0,0], [1,0,0,0], [1,1,1,0];
        // the variant right on [1,1,1,0], [1,1,0,0], [1,1,1,1].
        let base = [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]];
        let var = [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]];
        let mut p = Vec::new();
        for s in 0..3 {
            for i in 0..4 {
                p.push(pred("lora", &(s + 1).to_string(), 0, i as i64, base[s][i] == 1));
                p.push(pred("copra", &(s + 1).to_string(), 0, i as i64, var[s][i] == 1));
            }
        }
        let rows = items_table(&p, "lora");
        let names: Vec<(&str, &str)> = rows.iter().map(|r| (r.variant.as_str(), r.baseline.as_str())).collect();
        assert_eq!(names, vec![("lora", ""), ("copra", ""), ("copra", "lora")]);
        let f =
            |t: &[[i32; 4]; 3]| t.iter().map(|r| r.iter().map(|&v| f64::from(v)).collect()).collect::<Vec<Vec<f64>>>();
        let want = crate::stats::crossed_mean(&f(&base), 0.95).unwrap();
        let r = &rows[0];
        assert_eq!((r.procedure.as_str(), r.n_seeds, r.k, r.groups, r.items), ("seeds × items", 3, 1, 3, 4));
        assert!((r.mean - want.mean).abs() < 1e-12 && (r.se - want.se).abs() < 1e-12, "{r:?} vs {want:?}");
        // The difference variant − baseline, by seed and item: [0,0,1,0], [0,1,0,0], [0,0,0,1].
        // Every seed gains 0.25 (J_S = 0); item means 0, 1/3, 1/3, 1/3 give J_I = 1/144, so
        // SE = 1/12, all of it from the items. The seed part, estimated as zero from 2 df, still
        // counts in Satterthwaite's df: (1/144)² / ((1/144)²/3 + (1/36)²/6) < 1, so df = 1.
        let r = &rows[2];
        assert!((r.mean - 0.25).abs() < 1e-12 && (r.se - 1.0 / 12.0).abs() < 1e-12, "{r:?}");
        assert!(r.seed_share == 0.0 && (r.item_share - 1.0).abs() < 1e-12 && r.df == 1.0);
    }

    #[test]
    fn per_replicate_draws_use_the_seed_level_t() {
        // Each seed its own draw (data seed = seed): per-seed accuracies 0.5, 0.25, 1 → the t.
        let right = [[1, 0, 1, 0], [0, 0, 1, 0], [1, 1, 1, 1]];
        let mut p = Vec::new();
        for (s, answers) in right.iter().enumerate() {
            for (i, a) in answers.iter().enumerate() {
                p.push(pred("lora", &(s + 1).to_string(), s as i64 + 1, i as i64, *a == 1));
            }
        }
        let r = &items_table(&p, "lora")[0];
        let want = mean_ci(&[0.5, 0.25, 1.0]).unwrap();
        assert_eq!(r.procedure, "seeds");
        assert!((r.mean - want.mean).abs() < 1e-12 && (r.hi - want.hi).abs() < 1e-12, "{r:?}");
        assert!(r.seed_share.is_nan() && r.note.is_empty());
    }

    #[test]
    fn groups_of_seeds_use_every_group_and_incomplete_ones_say_why() {
        // Pairs of 3 seeds on 2 shared items: the hand-computed case of stats::items (SE 0.5).
        let scores = [[1, 0], [1, 1], [0, 0]];
        let mut p = Vec::new();
        for (g, sc) in all_groups(3, 2).unwrap().iter().zip(scores) {
            let seeds = format!("{}+{}", g[0] + 1, g[1] + 1);
            for (i, c) in sc.iter().enumerate() {
                p.push(Prediction {
                    evaluated: "merge factor 1:1".into(),
                    ..pred("copra", &seeds, 0, i as i64, *c == 1)
                });
            }
        }
        let r = &items_table(&p, "lora")[0];
        assert_eq!((r.k, r.groups, r.n_seeds), (2, 3, 3));
        assert!((r.mean - 0.5).abs() < 1e-12 && (r.se - 0.5).abs() < 1e-12, "{r:?}");
        // Cyclic groups of 4 seeds (the committed grids' layout) are balanced: an interval. A
        // set in which one seed is in every group is not: the row says so instead.
        let cyclic: Vec<Prediction> = ["1+2", "2+3", "3+4", "1+4"]
            .iter()
            .flat_map(|s| (0..2).map(move |i| pred("copra", s, 0, i, i == 0)))
            .collect();
        let r = &items_table(&cyclic, "lora")[0];
        assert!(r.se.is_finite() && r.note.is_empty(), "{r:?}");
        let star: Vec<Prediction> =
            ["1+2", "1+3", "1+4"].iter().flat_map(|s| (0..2).map(move |i| pred("copra", s, 0, i, i == 0))).collect();
        let r = &items_table(&star, "lora")[0];
        assert!(r.mean.is_nan() && r.note.contains("balanced"), "{r:?}");
    }
}
