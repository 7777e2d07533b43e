//! The merge-operator interface: every operator implements [`MergeOperator`] in its own file and
//! describes itself with an [`OperatorInfo`] (name, aliases, parameters, constructor) that the
//! [registry](super::registry) lists. [`MergeMethod`] is the cloneable, comparable handle the
//! analyses hold; it parses and prints the `name:key=value,...` spelling through the registry.

use super::{Adapter, MergeOptions, MergeOutcome, ModuleKey, WeightRule};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One numeric parameter of an operator.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Param {
    /// The key in `name:key=value`.
    pub name: &'static str,
    /// The value when the key is not given.
    pub default: f64,
    /// One line for the help text.
    pub help: &'static str,
}

/// Parameter values of one operator in the order of [`OperatorInfo::params`], defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    values: Vec<(&'static str, f64)>,
}

impl Params {
    /// The defaults of `params`.
    pub fn defaults(params: &'static [Param]) -> Params {
        Params { values: params.iter().map(|p| (p.name, p.default)).collect() }
    }

    /// Sets `name` to `value`; errors when the operator has no such parameter.
    pub fn set(&mut self, operator: &str, name: &str, value: f64) -> Result<()> {
        match self.values.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = value,
            None => {
                let allowed: Vec<&str> = self.values.iter().map(|(n, _)| *n).collect();
                let allowed = if allowed.is_empty() { "none".to_string() } else { allowed.join(", ") };
                bail!("merge method `{operator}` has no parameter `{name}`; allowed: {allowed}");
            }
        }
        Ok(())
    }

    /// The value of `name`; panics when the operator does not declare it (a programming error).
    pub fn get(&self, name: &str) -> f64 {
        self.values.iter().find(|(n, _)| *n == name).map(|(_, v)| *v).expect("parameter declared by the operator")
    }
}

/// What the registry knows about an operator.
#[derive(Debug)]
pub struct OperatorInfo {
    /// Canonical name (what [`MergeMethod`] prints).
    pub name: &'static str,
    /// Other accepted names.
    pub aliases: &'static [&'static str],
    /// A few words for the help text, e.g. `FedAvg / FedIT`.
    pub label: &'static str,
    /// The numeric parameters, in printing order.
    pub params: &'static [Param],
    /// Builds the operator from parameter values (validating them).
    pub build: fn(&Params) -> Result<MergeMethod>,
}

impl OperatorInfo {
    /// Whether `name` (already lower-cased, `_` as `-`) names this operator.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.contains(&name)
    }

    /// `name[:key=K,...] (label)` for help texts.
    pub fn usage(&self) -> String {
        let keys: Vec<String> =
            self.params.iter().map(|p| format!("{}={}", p.name, p.name.to_ascii_uppercase())).collect();
        let keys = if keys.is_empty() { String::new() } else { format!("[:{}]", keys.join(",")) };
        format!("{}{keys} ({})", self.name, self.label)
    }
}

/// Everything an operator's [`MergeOperator::merge`] gets, checked by [`super::merge_with_report`].
pub struct MergeInput<'a> {
    /// The adapters (at least one).
    pub adapters: &'a [&'a Adapter],
    /// One weight per adapter, already resolved by the operator's [`WeightRule`].
    pub weights: Vec<f64>,
    /// `ΔW` shape `(out, in)` of every module in the union of the adapters.
    pub shapes: BTreeMap<ModuleKey, (usize, usize)>,
    /// Shared options.
    pub opts: &'a MergeOptions,
}

/// A merge operator. Implementations live one per file under `src/merge/` and are listed in
/// [`super::registry::OPERATORS`].
///
/// # Example: a new operator
///
/// "Keep the heaviest": the adapter with the largest weight, unchanged. A real operator goes in
/// its own file with a `pub static INFO: OperatorInfo` and one line in
/// [`OPERATORS`](super::OPERATORS), which makes it parse (`--operators heaviest`), print and
/// appear in the help texts.
///
/// ```
/// use anyhow::Result;
/// use copra_lab::adapter::{Adapter, LoraFactors, LoraSpec, ModuleKey, TargetModule};
/// use copra_lab::linalg::Matrix;
/// use copra_lab::merge::{merge, MergeInput, MergeMethod, MergeOperator, MergeOptions, OperatorInfo};
/// use copra_lab::merge::{MergeOutcome, Merged, Params};
/// use std::collections::BTreeMap;
///
/// static INFO: OperatorInfo = OperatorInfo {
///     name: "heaviest",
///     aliases: &[],
///     label: "the adapter with the largest weight",
///     params: &[],
///     build: |_: &Params| Ok(MergeMethod::new(Heaviest)),
/// };
///
/// #[derive(Debug)]
/// struct Heaviest;
///
/// impl MergeOperator for Heaviest {
///     fn info(&self) -> &'static OperatorInfo {
///         &INFO
///     }
///     fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome> {
///         // The weights arrive checked and normalised (the default `WeightRule`).
///         let best = (0..input.weights.len()).fold(0, |b, k| if input.weights[k] > input.weights[b] { k } else { b });
///         let merged = Merged::Adapter(input.adapters[best].clone());
///         Ok(MergeOutcome { merged, align: BTreeMap::new() })
///     }
/// }
///
/// // Two one-module adapters with ΔW = s·B·A of shape [2, 3] (rank 1).
/// let adapter = |x: f32| {
///     let key = ModuleKey { block: 0, module: TargetModule::Query };
///     let factors = LoraFactors { a: Matrix::from_vec(1, 3, vec![x, 0.0, 1.0]), b: Matrix::from_vec(2, 1, vec![1.0, x]) };
///     Adapter { spec: LoraSpec { rank: 1, ..LoraSpec::default() }, modules: BTreeMap::from([(key, factors)]) }
/// };
/// let (a, b) = (adapter(1.0), adapter(2.0));
/// let merged = merge(&[&a, &b], &[1.0, 3.0], &MergeMethod::new(Heaviest), &MergeOptions::default())?;
/// assert_eq!(merged.adapter(), Some(&b));
/// # Ok::<(), anyhow::Error>(())
/// ```
pub trait MergeOperator: fmt::Debug + Send + Sync {
    /// The registry entry of this operator.
    fn info(&self) -> &'static OperatorInfo;
    /// Current parameter values, in the order of [`OperatorInfo::params`] (default: none).
    fn params(&self) -> Vec<f64> {
        Vec::new()
    }
    /// How the caller's weights are checked and transformed before [`MergeOperator::merge`]
    /// (default: normalised to sum to one).
    fn weight_rule(&self) -> WeightRule {
        WeightRule::Normalised
    }
    /// Whether the natural output is an adapter (true, the default) or dense deltas (false).
    fn keeps_low_rank(&self) -> bool {
        true
    }
    /// Whether [`MergeOptions::align`] (LoRA Align) applies to this operator.
    fn uses_align(&self) -> bool {
        false
    }
    /// Checks the parameter values.
    fn validate(&self) -> Result<()> {
        Ok(())
    }
    /// Merges the checked input.
    fn merge(&self, input: &MergeInput<'_>) -> Result<MergeOutcome>;
}

/// A merge operator with its parameters: a cheap, cloneable handle that compares by name and
/// parameter values and prints the spelling [`MergeMethod::parse`] reads back.
#[derive(Clone, Debug)]
pub struct MergeMethod(Arc<dyn MergeOperator>);

impl MergeMethod {
    /// Wraps an operator.
    pub fn new(op: impl MergeOperator + 'static) -> MergeMethod {
        MergeMethod(Arc::new(op))
    }

    /// Parses `name` or `name:key=value,key=value` through the registry (names are
    /// case-insensitive, `_` = `-`; see [`super::registry::OPERATORS`]).
    pub fn parse(s: &str) -> Result<MergeMethod> {
        super::registry::parse(s)
    }

    /// The operator.
    pub fn operator(&self) -> &dyn MergeOperator {
        &*self.0
    }

    /// The canonical name.
    pub fn name(&self) -> &'static str {
        self.0.info().name
    }

    /// Whether the natural output is an adapter (true) or dense deltas (false).
    pub fn keeps_low_rank(&self) -> bool {
        self.0.keeps_low_rank()
    }

    /// Whether LoRA Align ([`MergeOptions::align`]) applies.
    pub fn uses_align(&self) -> bool {
        self.0.uses_align()
    }

    /// Checks the hyper-parameters.
    pub fn validate(&self) -> Result<()> {
        self.0.validate()
    }
}

impl PartialEq for MergeMethod {
    fn eq(&self, other: &Self) -> bool {
        self.name() == other.name() && self.0.params() == other.0.params()
    }
}

impl fmt::Display for MergeMethod {
    /// Writes the form [`MergeMethod::parse`] reads back, e.g. `ties:density=0.2,lambda=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        let info = self.0.info();
        for (i, (p, v)) in info.params.iter().zip(self.0.params()).enumerate() {
            write!(f, "{}{}={v}", if i == 0 { ':' } else { ',' }, p.name)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for MergeMethod {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        MergeMethod::parse(s)
    }
}
