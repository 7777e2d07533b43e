//! The list of Shapley estimators: name parsing and help text come from it.
//!
//! Adding an estimator means writing its file (a type implementing
//! [`ShapleyEstimator`](crate::shapley::ShapleyEstimator) plus an [`Entry`])
//! and adding that entry to [`ESTIMATORS`]; nothing else changes.

use anyhow::{bail, Result};

use crate::shapley::estimator::Estimator;
use crate::shapley::{exact, kadd, kernel, leverage, owen, permutation, stratified};

/// One family of estimators in the registry.
pub struct Entry {
    /// The names the family accepts, for help text (e.g. `permutation[-antithetic]`).
    pub names: &'static str,
    /// One line on what it does.
    pub about: &'static str,
    /// Parses a normalised name (lowercase, `-`-separated); `None` when not this family's.
    pub parse: fn(&str) -> Option<Estimator>,
    /// The family's variants with default settings, for studies and tests.
    pub defaults: fn() -> Vec<Estimator>,
}

/// Every estimator family, in the order help text lists them.
pub const ESTIMATORS: &[Entry] =
    &[exact::ENTRY, permutation::ENTRY, owen::ENTRY, kernel::ENTRY, leverage::ENTRY, kadd::ENTRY, stratified::ENTRY];

/// `name` lowercased and trimmed, with `_` written as `-`.
pub fn normalise(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('_', "-")
}

/// Parses an estimator name through [`ESTIMATORS`].
pub fn parse(name: &str) -> Result<Estimator> {
    let norm = normalise(name);
    match ESTIMATORS.iter().find_map(|entry| (entry.parse)(&norm)) {
        Some(e) => Ok(e),
        None => bail!("unknown estimator '{name}': use one of {}", accepted()),
    }
}

/// The accepted names, comma-separated.
pub fn accepted() -> String {
    ESTIMATORS.iter().map(|e| e.names).collect::<Vec<_>>().join(", ")
}

/// One line per family: names, then what it does (for `--help`).
pub fn help() -> String {
    ESTIMATORS.iter().map(|e| format!("{}: {}", e.names, e.about)).collect::<Vec<_>>().join("\n")
}

/// Splits an optional `-antithetic` / `-paired` style suffix off a normalised name.
pub(crate) fn strip_flag<'a>(name: &'a str, suffix: &str) -> (&'a str, bool) {
    match name.strip_suffix(suffix) {
        Some(base) => (base, true),
        None => (name, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_default_round_trips_and_names_are_unique() {
        let mut seen = HashSet::new();
        for entry in ESTIMATORS {
            for e in (entry.defaults)() {
                assert_eq!(parse(&e.name()).unwrap(), e, "{}", e.name());
                assert!(seen.insert(e.name()), "duplicate name {}", e.name());
            }
        }
        assert!(seen.len() >= 12);
        assert!(help().lines().count() == ESTIMATORS.len());
        let err = parse("nope").unwrap_err().to_string();
        assert!(err.contains("use one of") && err.contains("kernel"), "{err}");
    }
}
