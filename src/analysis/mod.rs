//! Analyses that read trained adapters and produce tables and figures. They know
//! nothing of the command line; commands hand them runs and write their outputs.

pub mod connectivity;
pub mod federated;
pub mod game_cache;
pub mod layer_game;
pub mod multitask;
pub mod prune;
pub mod shapley;
pub mod shapley_bench;
pub(crate) mod summary;
#[cfg(test)]
pub(crate) mod test_support;

use crate::report::file_set::{write_file_set, FileWriter};
use crate::report::table::Table;
use anyhow::Result;
use std::path::Path;

/// The one rule every analysis follows for a game of `n_players`: its Shapley values are
/// exact (all `2^n` coalitions enumerated) when `n ≤ 20` ([`crate::shapley::MAX_EXACT_PLAYERS`]),
/// and sampled otherwise.
pub fn exact_shapley(n_players: usize) -> bool {
    n_players <= crate::shapley::MAX_EXACT_PLAYERS
}

/// Tables and figures an analysis produced, by file name.
#[derive(Default)]
pub struct Outputs {
    /// Parquet tables.
    pub tables: Vec<(String, Table)>,
    /// SVG figures.
    pub figures: Vec<(String, String)>,
}

impl std::fmt::Debug for Outputs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tables: Vec<&str> = self.tables.iter().map(|(n, _)| n.as_str()).collect();
        let figures: Vec<&str> = self.figures.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Outputs").field("tables", &tables).field("figures", &figures).finish()
    }
}

impl Outputs {
    /// Writes every table and figure into `dir` as one set
    /// ([`crate::report::file_set::write_file_set`]): all files are written into a staging
    /// folder first and renamed in only when every one succeeded, so a failed write leaves the
    /// previous outputs whole instead of mixing old and new files. Returns the paths written.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        let mut files: Vec<(String, FileWriter)> = Vec::new();
        for (name, t) in &self.tables {
            files.push((name.clone(), Box::new(move |p: &Path| t.write_parquet(p))));
        }
        for (name, svg) in &self.figures {
            files.push((name.clone(), Box::new(move |p: &Path| crate::report::plot::write_svg(p, svg))));
        }
        write_file_set(dir, &files)
    }
}

#[cfg(test)]
mod schemas;
#[cfg(test)]
mod tests;
