//! Estimator benchmark and exact interactions on exported coalition tables
//! (`shapley_coalitions.parquet`): every estimator at every budget over
//! several seeds against the exact values, with cost in evaluations, block
//! passes and seconds; and the game's Möbius/Shapley-interaction/Banzhaf
//! structure with a heatmap of pairwise interactions per method.

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::Outputs;
use crate::report::plot::Heatmap;
use crate::report::table::{table_row, Table};
use crate::shapley::{self, coalition, interactions, EstimateConfig, Estimator, Memo, TableGame};

/// One fully enumerated game read from a coalition table.
#[derive(Debug, Clone, PartialEq)]
pub struct TableEntry {
    /// Game name: `<file stem or task>/<method>`.
    pub name: String,
    /// Number of players.
    pub n: usize,
    /// `values[S] = v(S)` for every coalition bitmask.
    pub values: Vec<f64>,
}

/// Reads every method's full table from a `shapley_coalitions.parquet`
/// (columns `method`, `coalition`, `value`); `label` prefixes the names.
pub fn read_coalition_tables(path: &Path, label: &str) -> Result<Vec<TableEntry>> {
    let df = Table::read_parquet(path)?;
    let col_err = |c: &str| format!("{} lacks column '{c}': pass a shapley_coalitions.parquet", path.display());
    let methods: Vec<String> = df
        .column("method")
        .with_context(|| col_err("method"))?
        .str()?
        .iter()
        .map(|m| m.unwrap_or("").to_string())
        .collect();
    let masks: Vec<i64> =
        df.column("coalition").with_context(|| col_err("coalition"))?.i64()?.iter().map(|c| c.unwrap_or(-1)).collect();
    let values: Vec<f64> =
        df.column("value").with_context(|| col_err("value"))?.f64()?.iter().map(|v| v.unwrap_or(f64::NAN)).collect();
    let mut names: Vec<String> = Vec::new();
    for m in &methods {
        if !names.contains(m) {
            names.push(m.clone());
        }
    }
    names
        .into_iter()
        .map(|method| {
            let rows: Vec<usize> = (0..methods.len()).filter(|&r| methods[r] == method).collect();
            let n = rows.len().trailing_zeros() as usize;
            if rows.len() != 1usize << n || n > shapley::MAX_EXACT_PLAYERS {
                bail!(
                    "{}: method '{method}' has {} coalitions, not a full table of 2^n (n <= 20): export it from `copra-lab shapley` with n <= 20 players",
                    path.display(),
                    rows.len()
                );
            }
            let mut table = vec![f64::NAN; 1usize << n];
            for r in rows {
                let c = masks[r];
                if c < 0 || c as usize >= table.len() {
                    bail!("{}: coalition {c} of '{method}' is outside 0..2^{n}: the table is corrupt", path.display());
                }
                table[c as usize] = values[r];
            }
            if table.iter().any(|v| !v.is_finite()) {
                bail!("{}: '{method}' lacks some coalitions or has non-finite values: re-export the table", path.display());
            }
            Ok(TableEntry { name: format!("{label}/{method}"), n, values: table })
        })
        .collect()
}

/// Block passes to evaluate `c` alone in the layer game: every block from the
/// lowest active one up (`n − min S`; `∅` reuses the frozen features, 0).
pub fn block_passes(c: u64, n: usize) -> usize {
    if c == 0 {
        0
    } else {
        n - c.trailing_zeros() as usize
    }
}

/// Benchmark settings.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Estimators to compare.
    pub estimators: Vec<Estimator>,
    /// Budgets in evaluations.
    pub budgets: Vec<usize>,
    /// Seeds `0..seeds` per budget.
    pub seeds: u64,
}

/// Mean MSE of one estimator at one budget on one game, for the printout.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchCell {
    /// Game name.
    pub game: String,
    /// Estimator name.
    pub estimator: String,
    /// Budget.
    pub budget: usize,
    /// Mean squared error against exact, averaged over seeds.
    pub mse: f64,
    /// Fraction of (player, seed) pairs whose exact value lies within 1.96 SE.
    pub coverage: f64,
    /// Mean seconds per estimate.
    pub seconds: f64,
}

/// Runs every estimator at every budget and seed on every game.
pub fn bench(games: &[TableEntry], opts: &BenchOptions) -> Result<(Table, Vec<BenchCell>)> {
    let mut rows: Vec<BenchRow> = Vec::new();
    let mut cells = Vec::new();
    for g in games {
        let exact = shapley::shapley_from_table(&g.values, g.n)?;
        let game = TableGame::new(g.n, g.values.clone())?.with_name(g.name.clone());
        for e in &opts.estimators {
            for &budget in &opts.budgets {
                if budget < e.min_budget(g.n) {
                    continue;
                }
                let (mut mse_sum, mut covered, mut secs) = (0.0, 0usize, 0.0);
                for seed in 0..opts.seeds {
                    let cfg = EstimateConfig::new(e.clone(), budget, seed);
                    let memo = Memo::new(&game, cfg.memo_budget());
                    let started = Instant::now();
                    let est = shapley::estimate_with_memo(&memo, &cfg)?;
                    let seconds = started.elapsed().as_secs_f64();
                    let mse = shapley::mse(&est.values, &exact)?;
                    let cov = est
                        .values
                        .iter()
                        .zip(&exact)
                        .zip(&est.std_errors)
                        .filter(|((v, x), s)| (*v - *x).abs() <= 1.96 * **s)
                        .count();
                    let passes: usize = memo.cached().iter().map(|(c, _)| block_passes(*c, g.n)).sum();
                    rows.push(BenchRow {
                        game: g.name.clone(),
                        estimator: est.estimator.clone(),
                        budget: budget as i64,
                        seed: seed as i64,
                        evaluations: est.evaluations as i64,
                        block_passes: passes as i64,
                        mse,
                        coverage_95: cov as f64 / g.n as f64,
                        seconds,
                    });
                    mse_sum += mse;
                    covered += cov;
                    secs += seconds;
                }
                let runs = opts.seeds.max(1) as f64;
                cells.push(BenchCell {
                    game: g.name.clone(),
                    estimator: e.name(),
                    budget,
                    mse: mse_sum / runs,
                    coverage: covered as f64 / (runs * g.n as f64),
                    seconds: secs / runs,
                });
            }
        }
    }
    Ok((Table::from_rows(&rows), cells))
}

table_row! {
    /// One estimate of one game at one budget and seed: a row of the benchmark table.
    pub struct BenchRow {
        /// Game name.
        pub game: String,
        /// Estimator name.
        pub estimator: String,
        /// Evaluation budget.
        pub budget: i64,
        /// Estimator seed.
        pub seed: i64,
        /// Coalition evaluations spent.
        pub evaluations: i64,
        /// Block passes the evaluated coalitions cost on a model.
        pub block_passes: i64,
        /// Mean squared error against exact.
        pub mse: f64,
        /// Fraction of players whose exact value lies within 1.96 SE.
        pub coverage_95: f64,
        /// Seconds of the estimate.
        pub seconds: f64,
    }
}

table_row! {
    /// The Shapley interaction index of one pair of players: a row of `layer_interactions.parquet`.
    pub struct InteractionRow {
        /// Game name.
        pub game: String,
        /// First player.
        pub player_i: i64,
        /// Second player (> `player_i`).
        pub player_j: i64,
        /// Pairwise Shapley interaction index.
        pub shapley_interaction: f64,
    }
}

table_row! {
    /// One player's values: a row of `layer_players.parquet`.
    pub struct PlayerRow {
        /// Game name.
        pub game: String,
        /// Player index.
        pub player: i64,
        /// Shapley value.
        pub shapley: f64,
        /// Banzhaf value.
        pub banzhaf: f64,
    }
}

table_row! {
    /// How additive one game is: a row of `layer_additivity.parquet`.
    pub struct AdditivityRow {
        /// Game name.
        pub game: String,
        /// Variance explained by the best order-1 approximation.
        pub variance_explained_order1: f64,
        /// Variance explained by the best order-2 approximation.
        pub variance_explained_order2: f64,
        /// Absolute Möbius mass of the singletons.
        pub moebius_abs_mass_order1: f64,
        /// Absolute Möbius mass of the pairs.
        pub moebius_abs_mass_order2: f64,
        /// Absolute Möbius mass of the coalitions of 3 or more players.
        pub moebius_abs_mass_order3plus: f64,
    }
}

/// Exact interaction structure of each game: tables `layer_interactions.parquet`
/// (pairwise Shapley interaction index per pair), `layer_players.parquet`
/// (Shapley and Banzhaf values per player), `layer_additivity.parquet` (variance
/// explained by the best order-1 and order-2 approximations, Möbius mass by
/// order), and one heatmap `interactions_<game>.svg` per game.
pub fn interactions_outputs(games: &[TableEntry]) -> Result<Outputs> {
    let mut out = Outputs::default();
    let (mut pairs, mut players, mut additivity) = (Vec::new(), Vec::new(), Vec::new());
    for g in games {
        let sii = interactions::shapley_interactions(&g.values, g.n)?;
        let phi = shapley::shapley_from_table(&g.values, g.n)?;
        let bz = interactions::banzhaf(&g.values, g.n)?;
        let share = interactions::variance_explained(&g.values, g.n, 2)?;
        let m = interactions::moebius(&g.values, g.n)?;
        let mut mass = [0.0f64; 3];
        for (t, x) in m.iter().enumerate().skip(1) {
            mass[(coalition::size(t as u64)).min(3) - 1] += x.abs();
        }
        for i in 0..g.n {
            for (j, &value) in sii[i].iter().enumerate().skip(i + 1) {
                pairs.push(InteractionRow {
                    game: g.name.clone(),
                    player_i: i as i64,
                    player_j: j as i64,
                    shapley_interaction: value,
                });
            }
            players.push(PlayerRow { game: g.name.clone(), player: i as i64, shapley: phi[i], banzhaf: bz[i] });
        }
        additivity.push(AdditivityRow {
            game: g.name.clone(),
            variance_explained_order1: share[0],
            variance_explained_order2: share[1],
            moebius_abs_mass_order1: mass[0],
            moebius_abs_mass_order2: mass[1],
            moebius_abs_mass_order3plus: mass[2],
        });
        let ticks: Vec<String> = (0..g.n).map(|i| format!("B{i}")).collect();
        let heat = Heatmap {
            title: format!("Pairwise Shapley interaction index: {}", g.name),
            x_label: "block".into(),
            y_label: "block".into(),
            x_ticks: ticks.clone(),
            y_ticks: ticks,
            values: sii
                .iter()
                .enumerate()
                .map(|(i, row)| row.iter().enumerate().map(|(j, v)| if i == j { f64::NAN } else { *v }).collect())
                .collect(),
            annotate: false,
            ..Heatmap::default()
        };
        let file = format!("interactions_{}.svg", crate::runs::sanitize(&g.name.replace('/', "_")));
        out.figures.push((file, crate::report::plot::heatmap_svg(&heat)?));
    }
    out.tables.push(("layer_interactions.parquet".into(), Table::from_rows(&pairs)));
    out.tables.push(("layer_players.parquet".into(), Table::from_rows(&players)));
    out.tables.push(("layer_additivity.parquet".into(), Table::from_rows(&additivity)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapley::synthetic::SaturatingGame;

    #[test]
    fn block_passes_count_from_the_lowest_active_block() {
        assert_eq!(block_passes(0, 12), 0);
        assert_eq!(block_passes(1, 12), 12);
        assert_eq!(block_passes(0b1000_0000_0000, 12), 1);
        assert_eq!(block_passes(0b0110_0000, 12), 7);
    }

    #[test]
    fn bench_runs_and_exact_tables_round_trip() {
        let g = SaturatingGame::random(8, 2).unwrap();
        let values = shapley::enumerate(&g).unwrap();
        let games = vec![TableEntry { name: "t/sat".into(), n: 8, values }];
        let opts = BenchOptions {
            estimators: Estimator::parse_list("permutation,stratified-cv").unwrap(),
            budgets: vec![64, 128],
            seeds: 3,
        };
        let (table, cells) = bench(&games, &opts).unwrap();
        assert_eq!(table.len(), 2 * 2 * 3);
        assert_eq!(cells.len(), 4);
        assert!(cells.iter().all(|c| c.mse.is_finite() && (0.0..=1.0).contains(&c.coverage)));
        let out = interactions_outputs(&games).unwrap();
        assert_eq!(out.tables.len(), 3);
        assert_eq!(out.figures.len(), 1);
    }
}
