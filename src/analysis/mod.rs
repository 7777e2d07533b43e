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
    /// Writes everything into `dir` (each file atomically); returns the paths written.
    pub fn write_all(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = Vec::new();
        for (name, t) in &self.tables {
            let p = dir.join(name);
            t.write_parquet(&p)?;
            written.push(p);
        }
        for (name, svg) in &self.figures {
            let p = dir.join(name);
            crate::report::plot::write_svg(&p, svg)?;
            written.push(p);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod schemas;
#[cfg(test)]
mod tests;
