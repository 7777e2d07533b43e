//! Coalition tables of a run's layer game, cached in the run folder.
//!
//! Enumerating all `2^n` coalitions of a 12-block game costs minutes; the table depends
//! only on the run (whose folder name pins task, data, head and backbone), the grouping
//! and the game value. `shapley` writes it and `prune` reads it, or the other way round.

use crate::adapter::Grouping;
use crate::analysis::layer_game::{GameValue, LayerGame};
use crate::eval::Evaluator;
use crate::lab::Run;
use crate::report::atomic::write_atomic;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// On-disk form: every coalition's value, indexed by player bitmask.
#[derive(Serialize, Deserialize)]
struct TableFile {
    players: usize,
    values: Vec<f64>,
}

/// The cache file of a game inside a run directory, e.g. `cache_block_game_test_accuracy.json`.
pub fn table_path(run_dir: &Path, grouping: Grouping, value: GameValue) -> PathBuf {
    let group = match grouping {
        Grouping::Block => "block",
        Grouping::Module => "module",
        Grouping::Layer => "layer",
    };
    run_dir.join(format!("cache_{group}_game_test_{}.json", value.name()))
}

/// The cached table, if present, readable and of the right size for `players`.
pub fn read_table(path: &Path, players: usize) -> Option<Vec<f64>> {
    let text = std::fs::read_to_string(path).ok()?;
    let t: TableFile = serde_json::from_str(&text).ok()?;
    (t.players == players && t.values.len() == 1usize << players).then_some(t.values)
}

/// Writes a table atomically; a failure only costs a recomputation later, so it is reported
/// as a warning and not returned.
pub fn write_table(path: &Path, players: usize, values: &[f64]) {
    let write = || -> Result<()> {
        let text = serde_json::to_string(&TableFile { players, values: values.to_vec() })?;
        write_atomic(path, text.as_bytes())
    };
    if let Err(e) = write() {
        eprintln!("warning: cannot cache the coalition table in {} ({e}); it will be recomputed", path.display());
    }
}

/// The cached table, or `compute()` (then cached). Returns the table and whether it was cached.
pub fn table_or_compute(
    path: &Path,
    players: usize,
    compute: impl FnOnce() -> Result<Vec<f64>>,
) -> Result<(Vec<f64>, bool)> {
    if let Some(t) = read_table(path, players) {
        return Ok((t, true));
    }
    let values = compute()?;
    write_table(path, players, &values);
    Ok((values, false))
}

/// Every coalition's value in the run's layer game (players by `grouping`, v = `value` on
/// `test`), from the run folder's cache, or enumerated by the prefix walk and cached when
/// `compute`. `None` with more than 20 players, or when not cached and `!compute`. The run
/// directory's name pins task, data seed, test size, head and backbone, so `shapley` and
/// `prune` can share the table.
pub fn run_table(
    test: &Evaluator,
    run: &Run,
    grouping: Grouping,
    value: GameValue,
    label: &str,
    compute: bool,
) -> Result<Option<Vec<f64>>> {
    let n = run.adapter.groups(grouping, test.backbone()).len();
    if !super::exact_shapley(n) {
        return Ok(None);
    }
    let path = table_path(&run.dir, grouping, value);
    if !compute {
        return Ok(read_table(&path, n));
    }
    let t0 = Instant::now();
    let (table, cached) = table_or_compute(&path, n, || {
        eprintln!("{label}: enumerating all {} coalitions (prefix walk; cached in the run folder)", 1usize << n);
        LayerGame::new(test, &run.adapter, grouping, value, label)?.enumerate_all()
    })?;
    if cached {
        eprintln!("{label}: coalition table read from {}", path.display());
    } else {
        let secs = t0.elapsed().as_secs_f64();
        eprintln!("{label}: {} coalitions in {secs:.1} s ({:.1}/s)", table.len(), table.len() as f64 / secs);
    }
    Ok(Some(table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size_check() {
        let dir = std::env::temp_dir().join(format!("copra-game-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = table_path(&dir, Grouping::Block, GameValue::Accuracy);
        assert!(path.ends_with("cache_block_game_test_accuracy.json"));
        assert!(read_table(&path, 2).is_none());
        let mut calls = 0;
        let (t, cached) = table_or_compute(&path, 2, || {
            calls += 1;
            Ok(vec![0.1, 0.2, 0.3, 0.4])
        })
        .unwrap();
        assert_eq!((t.clone(), cached), (vec![0.1, 0.2, 0.3, 0.4], false));
        let (t2, cached) = table_or_compute(&path, 2, || unreachable!()).unwrap();
        assert_eq!((t2, cached, calls), (t, true, 1));
        // A table of another size is ignored, not misused.
        assert!(read_table(&path, 3).is_none());
        std::fs::write(&path, "{not json").unwrap();
        assert!(read_table(&path, 2).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
