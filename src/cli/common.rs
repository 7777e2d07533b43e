//! Options shared by every command that trains or reuses runs.

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use copra_lab::adapter::{Grouping, TargetModule};
use copra_lab::choice::Choice;
use copra_lab::train::{AdaptedEncoders, Method, Rescale, TrainConfig};
use std::path::PathBuf;

/// How runs are configured: a TOML file and/or flags (flags win).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// TOML file with training settings (keys as in `TrainConfig`; flags override it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Task: a built-in name, or `idx:DIR`, `folder:DIR`, `tab:FILE`, `text:FILE` (see `copra-lab tasks`).
    #[arg(long)]
    pub task: Option<String>,
    /// Optimizer steps.
    #[arg(long)]
    pub steps: Option<usize>,
    /// Training shots per class.
    #[arg(long)]
    pub shots: Option<usize>,
    /// Test images.
    #[arg(long)]
    pub test_size: Option<usize>,
    /// Validation images, held out disjoint from the shots and the test set (default: the test size).
    #[arg(long)]
    pub valid_size: Option<usize>,
    /// Data seed (which images; shared by every run being compared).
    #[arg(long)]
    pub data_seed: Option<u64>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Peak learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// LoRA rank.
    #[arg(long)]
    pub rank: Option<usize>,
    /// LoRA alpha.
    #[arg(long, allow_negative_numbers = true)]
    pub alpha: Option<f64>,
    /// LoRA scaling: alpha/sqrt(r) (`rslora`) or alpha/r (`standard`).
    #[arg(long, value_enum)]
    pub scaling: Option<ScalingArg>,
    /// LoRA input dropout.
    #[arg(long, allow_negative_numbers = true)]
    pub dropout: Option<f64>,
    /// Adapted modules, comma-separated: q,k,v,o,fc1,fc2.
    #[arg(long)]
    pub targets: Option<String>,
    /// Players / Bernoulli groups.
    #[arg(long, value_parser = choice::<Grouping>())]
    pub grouping: Option<Grouping>,
    /// Scaling of active adapters while groups are dropped: none (CopRA as published) or
    /// inverse-p (inverted dropout: divide by the group's inclusion probability).
    #[arg(long, value_parser = choice::<Rescale>())]
    pub rescale: Option<Rescale>,
    /// CopRA starting probability p0 (0 paper, 0.1 CoTo code).
    #[arg(long, allow_negative_numbers = true)]
    pub p0: Option<f64>,
    /// Fixed logit scale of the prototype head (CLIP backbones use their own logit_scale).
    #[arg(long, allow_negative_numbers = true)]
    pub logit_scale: Option<f64>,
    /// Longest token sequence of a text example, in tokens (text backbones; default 128).
    #[arg(long)]
    pub max_length: Option<usize>,
    /// Side in pixels image tasks are resized to (DINOv2 backbones, whose position embeddings
    /// are interpolated; default the backbone's own, e.g. the processor's crop size).
    #[arg(long)]
    pub image_size: Option<usize>,
    /// Which encoders of a CLIP backbone carry adapters (default both).
    #[arg(long, value_parser = choice::<AdaptedEncoders>())]
    pub encoder: Option<AdaptedEncoders>,
    /// Class prompt of a CLIP backbone's text classifier; {} is the class name, underscores
    /// become spaces (default "a photo of a {}.").
    #[arg(long)]
    pub prompt_template: Option<String>,
    /// Run even when the requested work is far (over 20×) beyond the defaults.
    #[arg(long)]
    pub yes: bool,
}

impl RunArgs {
    /// The base config: defaults, then the TOML file, then flags.
    pub fn base_config(&self) -> Result<TrainConfig> {
        let mut cfg = match &self.config {
            Some(p) => {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read config file {}", p.display()))?;
                TrainConfig::from_toml(&text).with_context(|| format!("in {}", p.display()))?
            }
            None => TrainConfig::default(),
        };
        macro_rules! set {
            ($field:ident) => {
                if let Some(v) = &self.$field {
                    cfg.$field = v.clone();
                }
            };
        }
        set!(task);
        set!(steps);
        set!(shots);
        set!(test_size);
        if let Some(v) = self.valid_size {
            cfg.valid_size = Some(v);
        }
        set!(data_seed);
        set!(batch_size);
        set!(lr);
        set!(p0);
        set!(logit_scale);
        set!(max_length);
        set!(prompt_template);
        if let Some(size) = self.image_size {
            cfg.image_size = Some(size);
        }
        if let Some(e) = self.encoder {
            cfg.encoders = e;
        }
        if let Some(g) = self.grouping {
            cfg.grouping = g;
        }
        if let Some(r) = self.rescale {
            cfg.rescale = r;
        }
        if let Some(r) = self.rank {
            cfg.lora.rank = r;
        }
        if let Some(a) = self.alpha {
            cfg.lora.alpha = a;
        }
        if let Some(d) = self.dropout {
            cfg.lora.dropout = d;
        }
        if let Some(s) = self.scaling {
            cfg.lora.scaling = s.into();
        }
        if let Some(t) = &self.targets {
            cfg.lora.targets = parse_targets(t)?;
        }
        cfg.validate()?;
        let defaults = TrainConfig::default();
        check_cost(
            "--steps × --batch-size",
            cfg.steps.saturating_mul(cfg.batch_size) as f64,
            (defaults.steps * defaults.batch_size) as f64,
            self.yes,
        )?;
        check_cost("--shots", cfg.shots as f64, defaults.shots as f64, self.yes)?;
        check_cost("--test-size", cfg.test_size as f64, defaults.test_size as f64, self.yes)?;
        Ok(cfg)
    }

    /// The config of one (method, seed) run.
    pub fn run_config(&self, method: Method, seed: u64) -> Result<TrainConfig> {
        Ok(TrainConfig { method, seed, ..self.base_config()? })
    }
}

/// The argument parser of a library [`Choice`] enum: its names as clap's possible values, with
/// their descriptions in `--help`.
pub fn choice<T: Choice + Clone + Send + Sync>() -> impl TypedValueParser<Value = T> {
    let values = T::VARIANTS.iter().map(|&(name, help, _)| PossibleValue::new(name).help(help));
    PossibleValuesParser::new(values).try_map(|s| T::parse_choice(&s))
}

pub use copra_lab::util::check_cost;

/// Checks, before any work, that an output folder is writable (created when missing).
pub fn check_output_dir(dir: &std::path::Path) -> Result<()> {
    copra_lab::report::atomic::ensure_writable_dir(dir).context("--out")
}

/// Refuses a list that names an item twice (self-pairs would bias every average).
pub fn check_distinct<T: PartialEq + std::fmt::Display>(items: &[T], flag: &str) -> Result<()> {
    for (i, x) in items.iter().enumerate() {
        if items[..i].contains(x) {
            bail!("{flag} lists '{x}' twice; give each value once");
        }
    }
    Ok(())
}

/// Parses `q,k,v` into modules.
pub fn parse_targets(s: &str) -> Result<Vec<TargetModule>> {
    let mut out = Vec::new();
    for part in s.split(',').filter(|p| !p.trim().is_empty()) {
        match TargetModule::parse(part) {
            Some(m) if !out.contains(&m) => out.push(m),
            Some(_) => {}
            None => bail!("unknown target module '{part}': use q, k, v, o, fc1, fc2"),
        }
    }
    if out.is_empty() {
        bail!("--targets is empty: name at least one of q, k, v, o, fc1, fc2");
    }
    out.sort();
    Ok(out)
}

/// Parses a comma-separated list of seeds such as `1,2,3`.
pub fn parse_seeds(s: &str) -> Result<Vec<u64>> {
    let seeds: Vec<u64> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            p.trim()
                .parse::<u64>()
                .map_err(|_| anyhow::anyhow!("bad seed '{p}' in --seeds: use comma-separated integers like 1,2"))
        })
        .collect::<Result<_>>()?;
    if seeds.is_empty() {
        bail!("--seeds is empty: give at least one seed, e.g. --seeds 1,2");
    }
    check_distinct(&seeds, "--seeds")?;
    Ok(seeds)
}

/// Parses a comma-separated list of methods such as `lora,copra`.
pub fn parse_methods(s: &str) -> Result<Vec<Method>> {
    let methods: Vec<Method> =
        s.split(',').filter(|p| !p.trim().is_empty()).map(Method::parse).collect::<Result<_>>()?;
    if methods.is_empty() {
        bail!("--methods is empty: give e.g. lora,copra");
    }
    let names: Vec<String> = methods.iter().map(|m| m.name()).collect();
    check_distinct(&names, "--methods")?;
    Ok(methods)
}

/// The runs of every method × seed on `env` (trained together where not cached), with a
/// line per run naming its test accuracy; `(method name, seed, run)` in method-major order.
pub fn method_seed_runs(
    lab: &copra_lab::lab::Lab,
    env: &copra_lab::lab::TaskEnv,
    run: &RunArgs,
    methods: &[Method],
    seeds: &[u64],
    progress: &copra_lab::progress::Progress,
) -> Result<Vec<(String, u64, copra_lab::lab::Run)>> {
    let grid: Vec<(Method, u64)> = methods.iter().flat_map(|m| seeds.iter().map(move |&s| (*m, s))).collect();
    let cfgs = grid.iter().map(|&(m, s)| run.run_config(m, s)).collect::<Result<Vec<_>>>()?;
    let runs = lab.ensure_runs(env, &cfgs, false, progress)?;
    Ok(grid
        .into_iter()
        .zip(runs)
        .map(|((m, s), run)| {
            println!(
                "{} seed {s}: test accuracy {:.2}% ({})",
                m.name(),
                100.0 * run.manifest.test.accuracy,
                if run.reused { "cached" } else { "trained" }
            );
            (m.name(), s, run)
        })
        .collect())
}

/// `--scaling`: the LoRA scaling rule, spelled `rslora` or `standard`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScalingArg {
    /// alpha/sqrt(r).
    Rslora,
    /// alpha/r.
    Standard,
}

impl From<ScalingArg> for copra_lab::adapter::Scaling {
    fn from(s: ScalingArg) -> Self {
        match s {
            ScalingArg::Rslora => copra_lab::adapter::Scaling::Rslora,
            ScalingArg::Standard => copra_lab::adapter::Scaling::Standard,
        }
    }
}
