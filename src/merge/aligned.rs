//! A merge operator as the comparisons name it: a [`MergeMethod`] with an optional `+align`
//! (LoRA Align before factor averaging), e.g. `factor+align` or `ties:density=0.3,lambda=1`.
//! The `multitask` command and the analyses' multi-task measure both parse and apply it here.

use super::{merge_with_report, MergeMethod, MergeOptions, MergeOutcome};
use crate::adapter::Adapter;
use anyhow::{bail, Result};
use std::fmt;

/// A merge operator of the comparison: a [`MergeMethod`], optionally with LoRA Align first.
#[derive(Clone, Debug, PartialEq)]
pub struct Operator {
    /// The merge method.
    pub method: MergeMethod,
    /// Run LoRA Align before factor averaging (only meaningful for `factor`).
    pub align: bool,
}

impl fmt::Display for Operator {
    /// `factor`, `factor+align`, `task-arithmetic:lambda=0.3`, … (what [`Operator::parse`] reads).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.method, if self.align { "+align" } else { "" })
    }
}

impl Operator {
    /// The default comparison, [`crate::merge::registry::DEFAULT_COMPARISON`].
    pub fn defaults() -> Vec<Operator> {
        Operator::parse_list(crate::merge::registry::DEFAULT_COMPARISON).expect("the default comparison parses")
    }

    /// Parses a merge method name (see [`MergeMethod::parse`]) with an optional `+align`
    /// (alias `+la`) suffix, e.g. `factor+align` or `ties:density=0.3,lambda=1`.
    pub fn parse(s: &str) -> Result<Operator> {
        let t = s.trim().to_ascii_lowercase();
        let (name, align) = match t.strip_suffix("+align").or_else(|| t.strip_suffix("+la")) {
            Some(n) => (n.to_string(), true),
            None => (t.clone(), false),
        };
        let method = MergeMethod::parse(&name)?;
        if align && !method.uses_align() {
            bail!("operator `{s}`: LoRA Align (+align) only applies to factor averaging; write `factor+align`");
        }
        Ok(Operator { method, align })
    }

    /// Parses a comma-separated list; a `key=value` item without a name continues the previous
    /// operator's parameters, so `factor,ties:density=0.2,lambda=1` is two operators.
    pub fn parse_list(s: &str) -> Result<Vec<Operator>> {
        let mut items: Vec<String> = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match items.last_mut() {
                Some(prev) if part.contains('=') && !part.contains(':') => {
                    prev.push(',');
                    prev.push_str(part);
                }
                _ => items.push(part.to_string()),
            }
        }
        if items.is_empty() {
            bail!("no merge operators given; use e.g. --operators factor,delta-svd,stack,factor+align");
        }
        items.iter().map(|i| Operator::parse(i)).collect()
    }
}

impl Operator {
    /// The operator with its parameter `name` set to `value` (its other parameters kept), or
    /// `None` when the operator has no such parameter (e.g. `lambda` of `factor`).
    pub fn with_param(&self, name: &str, value: f64) -> Result<Option<Operator>> {
        let op = self.method.operator();
        let info = op.info();
        if !info.params.iter().any(|p| p.name == name) {
            return Ok(None);
        }
        let mut params = super::operator::Params::defaults(info.params);
        for (p, v) in info.params.iter().zip(op.params()) {
            params.set(info.name, p.name, v)?;
        }
        params.set(info.name, name, value)?;
        Ok(Some(Operator { method: (info.build)(&params)?, align: self.align }))
    }

    /// Merges `adapters` at equal (default) weights with `base` options and this operator's
    /// LoRA Align setting.
    pub fn merge(&self, adapters: &[&Adapter], base: &MergeOptions) -> Result<MergeOutcome> {
        merge_with_report(adapters, &[], &self.method, &MergeOptions { align: self.align, ..base.clone() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_lambda_keeps_the_other_parameters_and_skips_operators_without_it() {
        let ties = Operator::parse("ties:density=0.3,lambda=1").unwrap();
        let half = ties.with_param("lambda", 0.5).unwrap().unwrap();
        assert_eq!(half, Operator::parse("ties:density=0.3,lambda=0.5").unwrap());
        let ta = Operator::parse("ta").unwrap().with_param("lambda", 0.2).unwrap().unwrap();
        assert_eq!(ta.to_string(), "task-arithmetic:lambda=0.2");
        assert!(Operator::parse("factor+align").unwrap().with_param("lambda", 0.5).unwrap().is_none());
        assert!(ties.with_param("lambda", f64::NAN).is_err());
    }
}
