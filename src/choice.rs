//! Enums spelled by fixed names in TOML configs and on the command line. The library lists the
//! names; the binary turns the list into its argument parser, so no library type depends on clap.

use anyhow::{bail, Result};

/// An enum whose variants have fixed kebab-case names.
pub trait Choice: Copy + PartialEq + 'static {
    /// What the value selects, for error messages (e.g. "player grouping").
    const WHAT: &'static str;
    /// Every variant as (name, one-line description, value), in display order.
    const VARIANTS: &'static [(&'static str, &'static str, Self)];

    /// The variant's name.
    fn choice_name(self) -> &'static str {
        Self::VARIANTS.iter().find(|v| v.2 == self).map(|v| v.0).expect("every variant is listed in VARIANTS")
    }

    /// Parses a name (case-insensitive, surrounding space ignored).
    fn parse_choice(s: &str) -> Result<Self> {
        let want = s.trim().to_ascii_lowercase();
        match Self::VARIANTS.iter().find(|v| v.0 == want) {
            Some(v) => Ok(v.2),
            None => {
                let names: Vec<&str> = Self::VARIANTS.iter().map(|v| v.0).collect();
                bail!("unknown {} '{}': use one of {}", Self::WHAT, s.trim(), names.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapter::Grouping;
    use crate::analysis::layer_game::GameValue;
    use crate::prune::magnitude::Ranking;

    fn round_trips<T: Choice + std::fmt::Debug>() {
        for &(name, help, value) in T::VARIANTS {
            assert!(!help.is_empty(), "{name} has no description");
            assert_eq!(value.choice_name(), name);
            assert_eq!(T::parse_choice(name).unwrap(), value);
            assert_eq!(T::parse_choice(&format!(" {} ", name.to_ascii_uppercase())).unwrap(), value);
        }
    }

    #[test]
    fn names_round_trip_and_keep_the_cli_spellings() {
        round_trips::<Grouping>();
        round_trips::<GameValue>();
        round_trips::<Ranking>();
        round_trips::<crate::train::AdaptedEncoders>();
        // The spellings clap's ValueEnum derive gave before the move must still parse.
        assert_eq!(GameValue::parse_choice("neg-loss").unwrap(), GameValue::NegLoss);
        assert_eq!(Ranking::parse_choice("per-module").unwrap(), Ranking::PerModule);
        assert_eq!(Grouping::parse_choice("module").unwrap(), Grouping::Module);
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let err = Grouping::parse_choice("tower").unwrap_err().to_string();
        assert_eq!(err, "unknown player grouping 'tower': use one of block, module, layer");
    }
}
