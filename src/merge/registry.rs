//! Lookup, parsing and help texts over [`OPERATORS`], the list of merge operators (kept in
//! `merge/mod.rs` next to the operators' `mod` lines, so a new operator is its own file plus two
//! adjacent lines there), and the commands' default operator choices.

use super::operator::{MergeMethod, OperatorInfo, Params};
pub use super::OPERATORS;
use anyhow::{bail, Context, Result};

/// The operators `multitask` compares by default (a list [`MergeMethod::parse`] items with an
/// optional `+align`): task arithmetic at λ = 0.3 (an untuned common choice), TIES at the
/// paper's density 0.2.
pub const DEFAULT_COMPARISON: &str =
    "factor,delta-svd,stack,task-arithmetic:lambda=0.3,ties:density=0.2,lambda=1,factor+align";

/// The server aggregation `federated` uses by default (FedAvg of the factors).
pub const DEFAULT_AGGREGATOR: &str = "factor";

/// The registry entry named `name` (canonical or alias; case-insensitive, `_` = `-`).
pub fn find(name: &str) -> Option<&'static OperatorInfo> {
    let name = name.trim().to_ascii_lowercase().replace('_', "-");
    OPERATORS.iter().copied().find(|op| op.answers_to(&name))
}

/// The canonical names, in registry order.
pub fn names() -> Vec<&'static str> {
    OPERATORS.iter().map(|op| op.name).collect()
}

/// `factor (FedAvg / FedIT), ..., ties[:density=DENSITY,lambda=LAMBDA] (TIES)`, for help texts.
pub fn usage() -> String {
    OPERATORS.iter().map(|op| op.usage()).collect::<Vec<_>>().join(", ")
}

/// Parses `name` or `name:key=value,key=value`; unknown names and keys, non-numeric values and
/// invalid values are errors naming the fix.
pub fn parse(s: &str) -> Result<MergeMethod> {
    let s = s.trim().to_ascii_lowercase().replace('_', "-");
    let (name, args) = match s.split_once(':') {
        Some((n, p)) => (n.trim(), p.trim()),
        None => (s.as_str(), ""),
    };
    let Some(info) = find(name) else {
        bail!("unknown merge method `{name}`; use one of {}", names().join(", "));
    };
    let mut params = Params::defaults(info.params);
    for part in args.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            bail!("merge method parameter `{part}` is not key=value; write e.g. `ties:density=0.2,lambda=1`");
        };
        let value: f64 = v.trim().parse().with_context(|| {
            format!("merge method parameter `{}` has non-numeric value `{}`; give a number", k.trim(), v.trim())
        })?;
        params.set(name, k.trim(), value)?;
    }
    (info.build)(&params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_every_entry_parses_and_round_trips() {
        let mut all: Vec<&str> =
            OPERATORS.iter().flat_map(|op| std::iter::once(op.name).chain(op.aliases.iter().copied())).collect();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "a name or alias is used twice");
        for op in OPERATORS {
            let m = parse(op.name).unwrap();
            assert_eq!(m.name(), op.name);
            assert_eq!(parse(&m.to_string()).unwrap(), m);
            for alias in op.aliases {
                assert_eq!(parse(alias).unwrap(), m, "{alias}");
            }
            assert!(usage().contains(op.name));
        }
    }

    #[test]
    fn defaults_parse() {
        assert_eq!(parse(DEFAULT_AGGREGATOR).unwrap().name(), "factor");
        assert!(find("FedAvg").is_some() && find("no-such").is_none());
    }
}
