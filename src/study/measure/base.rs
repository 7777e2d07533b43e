//! The [`Measure`] trait: one measurement of an analysis grid. Each measure is one file in
//! this folder and one line in [`super::MEASURES`]; the spec parser, the cell layout and the
//! cell runner loop over that list (the pattern of burn-train's metrics).

use super::rows::{CurvePoint, Measurement, Prediction, Tag};
use crate::lab::{Lab, Run, TaskEnv};
use crate::study::cell::Envs;
use crate::study::spec::Spec;
use crate::train::TrainConfig;
use anyhow::Result;
use std::fmt;

/// What a measure takes its numbers on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Every trained run of the grid (one per task, variant, sweep point and seed); the run
    /// cells are shared by every measure of this unit.
    Run,
    /// Every group of `k` seeds (all `C(n, k)` of them, each sorted) of every task, variant and
    /// point, for each size `k` in [`Measure::group_sizes`]; the group cells of one size are
    /// shared by every measure of this unit that asks for that size.
    Group,
    /// Cells of its own, laid out by [`Measure::cells`].
    Own,
}

/// One cell a measure of [`Unit::Own`] lays out for itself.
#[derive(Clone, Debug)]
pub struct OwnCell {
    /// The readable start of the cell id (`multitask`, `trajectory`, `fed-iid-ranks`).
    pub label: String,
    /// Task (`all` for cells over several tasks).
    pub task: String,
    /// Variant name.
    pub variant: String,
    /// Sweep value (NaN without a sweep).
    pub x: f64,
    /// Replicate (the run seed).
    pub replicate: u64,
    /// Cached runs the cell reads (trained beforehand, with the grid's other runs).
    pub runs: Vec<TrainConfig>,
    /// Configs whose task environments the cell needs besides those of `runs` (it trains or
    /// simulates them itself).
    pub configs: Vec<TrainConfig>,
    /// Indices into the measure's own settings (for example its split and heterogeneity).
    pub setting: Vec<usize>,
    /// Everything that defines the cell's work, hashed into its id: canonical, configs as
    /// [`crate::study::cell::config_json`].
    pub what: String,
    /// The description ids hashed before they were canonical (configs in `Debug` form), to adopt
    /// report folders written then.
    pub legacy_what: String,
}

/// The work a measure is handed, by [`Unit`].
pub enum Input<'a> {
    /// One trained run and its task environment.
    Run {
        /// The identity its rows carry.
        tag: &'a Tag,
        /// The run's config.
        cfg: &'a TrainConfig,
        /// The run.
        run: &'a Run,
        /// Its task environment.
        env: &'a TaskEnv,
    },
    /// The runs of one group of seeds (same task, variant and point) and their task environment.
    Group {
        /// The identity its rows carry (seeds of the whole group; a measure that reads fewer
        /// runs names just those in its rows' `seeds`).
        tag: &'a Tag,
        /// The runs' configs, in merge order.
        cfgs: &'a [TrainConfig],
        /// The runs.
        runs: &'a [Run],
        /// Their task environment.
        env: &'a TaskEnv,
        /// The group sizes to take on this cell, each on its first runs (the cell's own size;
        /// every size up to it in a cyclic grid).
        sizes: &'a [usize],
    },
    /// One of the measure's own cells.
    Own {
        /// The identity its rows carry.
        tag: &'a Tag,
        /// The cell.
        cell: &'a OwnCell,
        /// The cached runs of [`OwnCell::runs`], in order.
        runs: &'a [Run],
        /// Task environments of every config of the cell ([`Envs::built`]).
        envs: &'a Envs,
        /// The backbone and run cache.
        lab: &'a Lab,
    },
}

impl Input<'_> {
    /// The tag of the rows.
    pub fn tag(&self) -> &Tag {
        match self {
            Input::Run { tag, .. } | Input::Group { tag, .. } | Input::Own { tag, .. } => tag,
        }
    }
}

/// What a measure wrote for one cell.
#[derive(Default)]
pub struct Rows {
    /// Measurement rows.
    pub measurements: Vec<Measurement>,
    /// Loss-curve points.
    pub curves: Vec<CurvePoint>,
    /// Per-example predictions of every model it evaluated on a test set.
    pub predictions: Vec<Prediction>,
}

impl From<Vec<Measurement>> for Rows {
    fn from(measurements: Vec<Measurement>) -> Rows {
        Rows { measurements, ..Rows::default() }
    }
}

impl Rows {
    /// Measurement rows with the per-example predictions behind them.
    pub fn with_predictions(measurements: Vec<Measurement>, predictions: Vec<Prediction>) -> Rows {
        Rows { measurements, curves: Vec::new(), predictions }
    }
}

/// Work a measure asks for per cell, against its default, checked before any work
/// ([`crate::util::check_cost`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Cost {
    /// The setting that asks for it (`measure.barrier points × spaces`).
    pub what: String,
    /// Its work (evaluations, coalitions or steps per cell).
    pub estimate: f64,
    /// The work of the documented default, in the same unit.
    pub default: f64,
}

impl Cost {
    /// A cost of `what`.
    pub fn new(what: &str, estimate: f64, default: f64) -> Cost {
        Cost { what: what.into(), estimate, default }
    }
}

/// What a measure's parser may check its options against, and how it reports a bad key.
pub struct ParseContext<'a> {
    /// Run seeds of the grid.
    pub seeds: &'a [u64],
    /// Tasks of the grid.
    pub tasks: &'a [String],
    /// Variant names.
    pub variants: &'a [String],
    /// `at(key, message)`: the one-line error naming `key` of this measure's table and its line.
    pub at: &'a dyn Fn(&str, String) -> anyhow::Error,
}

/// A measure's registry entry: its table name and its parser.
pub struct MeasureInfo {
    /// The `[measure.NAME]` table.
    pub name: &'static str,
    /// Parses and checks the table; errors come from [`ParseContext::at`].
    pub parse: fn(&toml::Value, &ParseContext) -> Result<Box<dyn Measure>>,
}

/// One measurement of an analysis (see the module documentation).
///
/// # Example: a new measurement
///
/// The Frobenius norm of each run's `ΔW`. A real measure goes in its own file under
/// `src/study/measure/` with an `INFO` entry and one line in [`super::MEASURES`], which makes
/// `[measure.norm]` parse in specs, lays out its cells and puts its rows in the report.
///
/// ```
/// use anyhow::{bail, Result};
/// use copra_lab::lab::Lab;
/// use copra_lab::progress::Progress;
/// use copra_lab::study::measure::{Input, Measure, MeasureInfo, ParseContext, Rows, Tag, Unit};
/// use copra_lab::train::TrainConfig;
///
/// #[derive(Debug)]
/// struct Norm;
///
/// impl Measure for Norm {
///     fn name(&self) -> &'static str {
///         "norm"
///     }
///     fn options_json(&self) -> Result<Option<String>> {
///         Ok(None) // no options: nothing to hash into the cell ids
///     }
///     fn unit(&self) -> Unit {
///         Unit::Run
///     }
///     fn measure(&self, input: &Input<'_>) -> Result<Rows> {
///         let Input::Run { tag, run, .. } = input else { bail!("norm is measured on runs") };
///         let squares: f64 = run.adapter.deltas().values().map(|d| d.frobenius_norm().powi(2)).sum();
///         Ok(vec![tag.row(self.name(), "", "delta_norm", squares.sqrt())].into())
///     }
/// }
///
/// static INFO: MeasureInfo = MeasureInfo { name: "norm", parse: |_, _| Ok(Box::new(Norm) as Box<dyn Measure>) };
///
/// // What the spec parser does with a `[measure.norm]` table.
/// let (tasks, variants) = (["lighting".to_string()], ["copra".to_string()]);
/// let at = |key: &str, msg: String| anyhow::anyhow!("measure.norm {key}: {msg}");
/// let ctx = ParseContext { seeds: &[1], tasks: &tasks, variants: &variants, at: &at };
/// let measure = (INFO.parse)(&toml::Value::Table(Default::default()), &ctx)?;
///
/// // What a run cell does: a short run of the built-in default, then the measure on it.
/// let runs = std::env::temp_dir().join(format!("copra-measure-doc-{}", std::process::id()));
/// let lab = Lab::open("builtin", &runs)?;
/// let cfg = TrainConfig { steps: 5, test_size: 20, ..TrainConfig::default() };
/// let env = lab.task_env(&cfg)?;
/// let run = lab.ensure_run(&env, &cfg, false, &Progress::hidden())?;
/// let tag = Tag {
///     cell: "run-lighting-copra-r1".into(),
///     task: cfg.task.clone(),
///     variant: "copra".into(),
///     x: f64::NAN,
///     replicate: 1,
///     seeds: "1".into(),
/// };
/// let rows = measure.measure(&Input::Run { tag: &tag, cfg: &cfg, run: &run, env: &env })?;
/// std::fs::remove_dir_all(&runs)?;
/// assert_eq!(rows.measurements.len(), 1);
/// assert_eq!(rows.measurements[0].metric, "delta_norm");
/// assert!(rows.measurements[0].value > 0.0, "five steps move B away from zero");
/// # Ok::<(), anyhow::Error>(())
/// ```
pub trait Measure: Send + Sync + fmt::Debug {
    /// The `[measure.NAME]` table and the `measure` column of its rows.
    fn name(&self) -> &'static str;

    /// The options as written, as JSON; hashed into the ids of the cells, so that changing
    /// them redoes those cells. `None` for a measure that is always taken with fixed options.
    fn options_json(&self) -> Result<Option<String>>;

    /// What it is measured on.
    fn unit(&self) -> Unit;

    /// The group sizes a [`Unit::Group`] measure is taken on (2 for a barrier, the lengths of
    /// the weight lists for merges); empty for the other units.
    fn group_sizes(&self) -> Vec<usize> {
        Vec::new()
    }

    /// The `measure` column values of its rows (its name, unless it writes several kinds).
    fn row_measures(&self) -> Vec<&'static str> {
        vec![self.name()]
    }

    /// True when the grid's single runs are not trained at all (the measure simulates its own
    /// trainings instead, like the federated one).
    fn replaces_runs(&self) -> bool {
        false
    }

    /// The work it asks for per cell, against its defaults (empty when it is small).
    fn costs(&self) -> Vec<Cost> {
        Vec::new()
    }

    /// The cells of a [`Unit::Own`] measure, in order.
    fn cells(&self, _spec: &Spec) -> Result<Vec<OwnCell>> {
        Ok(Vec::new())
    }

    /// Checks one of its own cells against the backbone before any work (for example client
    /// ranks against the module widths); nothing to check by default.
    fn check_cell(&self, _lab: &Lab, _cell: &OwnCell) -> Result<()> {
        Ok(())
    }

    /// The rows of one unit of work.
    fn measure(&self, input: &Input<'_>) -> Result<Rows>;
}

/// Deserialises a measure's table into its options, with unknown keys and wrong types named.
pub fn options<T: serde::de::DeserializeOwned>(value: &toml::Value, ctx: &ParseContext) -> Result<T> {
    value.clone().try_into().map_err(|e: toml::de::Error| {
        let msg = e.message().replace('\n', " ").trim().to_string();
        let key = crate::study::spec::backticked(&msg).unwrap_or_default();
        (ctx.at)(&key, msg)
    })
}
