//! The experiment context shared by every command: the backbone, the task
//! environment (data, fixed head, cached frozen activations) and the run cache.

use crate::adapter::fit::ModuleShapes;
use crate::adapter::{fit, Adapter, Grouping};
use crate::choice::Choice;
use crate::data::{self, ImageSet, TaskData, TaskOptions, TaskSource};
use crate::eval::{Evaluator, Metrics};
use crate::model::checkpoint;
use crate::model::head::{class_prompt, Head, PromptHead, PrototypeHead};
use crate::model::{Backbone, InputKind, NoBranch, Numerics, Pooling};
use crate::progress::Progress;
use crate::report::atomic_dir::Installed;
use crate::runs::{self, Manifest};
use crate::train::{train_grid, Method, Rescale, TrainConfig, TrainOutput};
use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Batch size of frozen-activation and evaluation passes.
pub const EVAL_BATCH: usize = 500;

/// A loaded backbone plus where runs live.
pub struct Lab {
    /// Compute device.
    pub device: Device,
    /// The frozen backbone.
    pub backbone: Backbone,
    /// `builtin` or the backbone directory.
    pub backbone_name: String,
    /// Fingerprint of the backbone weights (part of every run's cache key).
    pub fingerprint: String,
    /// Root of the run cache.
    pub runs_dir: PathBuf,
}

/// Everything about one task that does not depend on the adapter.
pub struct TaskEnv {
    /// The images.
    pub data: TaskData,
    /// The head: frozen class means of the training shots, or (CLIP) the class prompts.
    pub head: Head,
    /// Frozen hidden states entering every block, for the training shots.
    pub train_inputs: Vec<Tensor>,
    /// Evaluator on the test split.
    pub test: Evaluator,
    /// Evaluator on the training shots.
    pub train: Evaluator,
    /// Evaluator on the validation split, built on first use ([`TaskEnv::valid`]).
    pub(crate) valid_eval: OnceLock<Evaluator>,
    /// Fingerprint of the decoded data of an `idx:` or `folder:` task (part of its runs'
    /// cache key); `None` for built-in tasks, whose data the config and code pin.
    pub data_fingerprint: Option<String>,
}

impl TaskEnv {
    /// The evaluator on the validation split (built from the frozen backbone and the head on
    /// first use, so commands that never validate never pay for it).
    pub fn valid(&self) -> Result<&Evaluator> {
        if let Some(ev) = self.valid_eval.get() {
            return Ok(ev);
        }
        let backbone = self.test.backbone();
        let images = images_tensor(&self.data.valid, backbone.device())?;
        let ev = Evaluator::new(backbone, &self.head, &images, &self.data.valid.labels, EVAL_BATCH)?;
        let _ = self.valid_eval.set(ev);
        self.valid_eval.get().ok_or_else(|| anyhow::anyhow!("internal: the validation evaluator was not kept"))
    }

    /// The evaluator of `split`.
    pub fn evaluator(&self, split: Split) -> Result<&Evaluator> {
        match split {
            Split::Test => Ok(&self.test),
            Split::Validation => self.valid(),
            Split::Train => Ok(&self.train),
        }
    }
}

/// A split of a task that can be evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The test split: final numbers only.
    Test,
    /// The validation split: what tuning reads.
    Validation,
    /// The training shots.
    Train,
}

impl crate::choice::Choice for Split {
    const WHAT: &'static str = "split";
    const VARIANTS: &'static [(&'static str, &'static str, Self)] = &[
        ("test", "the test split (final numbers only)", Split::Test),
        ("validation", "the validation split (disjoint from shots and test; what tuning reads)", Split::Validation),
        ("train", "the training shots", Split::Train),
    ];
}

impl Split {
    /// Name in commands and tables.
    pub fn name(self) -> &'static str {
        crate::choice::Choice::choice_name(self)
    }
}

/// The settings of a [`TrainConfig`] that its task environment is built from, and nothing
/// else: [`Lab::task_env_of`] reads only these, so two configs with equal keys share one
/// environment (data, tokenisation, head and frozen activations). Caches of environments
/// (the analyses' grids) are keyed on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskEnvKey {
    /// Task name.
    pub task: String,
    /// Training shots per class.
    pub shots: usize,
    /// Test examples.
    pub test_size: usize,
    /// Validation examples (resolved: the test size when the config leaves it unset).
    pub valid_size: usize,
    /// Data seed.
    pub data_seed: u64,
    /// Longest token sequence of a text example (text backbones).
    pub max_length: usize,
    /// Class prompt template (CLIP backbones' prompt head).
    pub prompt_template: String,
    /// Image side the task is made at, when not the backbone's own.
    pub image_size: Option<usize>,
    /// Bits of the prototype head's fixed logit scale (bits, so that the key is `Eq` and `Hash`).
    logit_scale_bits: u64,
}

impl TaskEnvKey {
    /// The key of `cfg`.
    pub fn of(cfg: &TrainConfig) -> TaskEnvKey {
        TaskEnvKey {
            task: cfg.task.clone(),
            shots: cfg.shots,
            test_size: cfg.test_size,
            valid_size: cfg.valid_size.unwrap_or(cfg.test_size),
            data_seed: cfg.data_seed,
            max_length: cfg.max_length,
            prompt_template: cfg.prompt_template.clone(),
            image_size: cfg.image_size,
            logit_scale_bits: cfg.logit_scale.to_bits(),
        }
    }

    /// The prototype head's fixed logit scale.
    pub fn logit_scale(&self) -> f64 {
        f64::from_bits(self.logit_scale_bits)
    }
}

/// A trained (or reused) run.
pub struct Run {
    /// Its directory.
    pub dir: PathBuf,
    /// The adapter.
    pub adapter: Adapter,
    /// Its manifest.
    pub manifest: Manifest,
    /// True when it came from the cache.
    pub reused: bool,
}

/// Converts a set to its input tensor: `[N, C, H, W]` images or `[N, L]` token ids.
pub fn images_tensor(set: &ImageSet, device: &Device) -> Result<Tensor> {
    Ok(Tensor::from_slice(&set.images, set.tensor_shape(), device)?)
}

impl Lab {
    /// Loads the backbone (`builtin` or a Hugging Face directory) on the CPU.
    pub fn open(backbone: &str, runs_dir: &Path) -> Result<Lab> {
        Self::open_on(backbone, runs_dir, &Device::Cpu)
    }

    /// Loads the backbone onto `device` (see [`device_named`]).
    pub fn open_on(backbone: &str, runs_dir: &Path, device: &Device) -> Result<Lab> {
        let device = device.clone();
        let bb = checkpoint::load_backbone(backbone, &device)?;
        let fingerprint = checkpoint::fingerprint(&bb)?;
        Ok(Lab {
            device,
            backbone: bb,
            backbone_name: backbone.to_string(),
            fingerprint,
            runs_dir: runs_dir.to_path_buf(),
        })
    }

    /// The same lab with the backbone pooling its output by `pooling` (`--pooling`). When that is
    /// not the backbone's own pooling the fingerprint changes too, so runs and report folders of
    /// the two feature definitions never mix; the backbone's own pooling leaves the lab as it is.
    pub fn with_pooling(mut self, pooling: Pooling) -> Result<Lab> {
        if pooling != self.backbone.pooling() {
            self.backbone = self.backbone.with_pooling(pooling)?;
            let mut h = crate::util::Fnv64::new();
            h.update(format!("{}|pooling:{}", self.fingerprint, pooling.choice_name()).as_bytes());
            self.fingerprint = h.hex();
        }
        Ok(self)
    }

    /// Data options implied by a training config and this backbone.
    pub fn task_options(&self, cfg: &TrainConfig) -> TaskOptions {
        self.key_options(&TaskEnvKey::of(cfg))
    }

    /// Data options implied by a task-environment key and this backbone.
    fn key_options(&self, key: &TaskEnvKey) -> TaskOptions {
        let base = TaskOptions {
            shots: key.shots,
            test_size: key.test_size,
            valid_size: Some(key.valid_size),
            seed: key.data_seed,
            max_length: key.max_length,
            ..TaskOptions::default()
        };
        match self.backbone.input_kind() {
            InputKind::Image { size, channels } => {
                TaskOptions { image_size: key.image_size.unwrap_or(size), channels, ..base }
            }
            InputKind::Text { .. } => TaskOptions { tokenizer: self.backbone.tokenizer(), ..base },
        }
    }

    /// Errors when `source` is an image task and the backbone reads text, or the other way round.
    pub fn check_task_kind(&self, source: &TaskSource, spec: &str) -> Result<()> {
        match (self.backbone.input_kind(), source.is_text()) {
            (InputKind::Image { .. }, true) => bail!(
                "task '{spec}' is a text task but the backbone {} reads images; pass --backbone with a BERT folder (analyses/fetch-assets.sh fetches all-MiniLM-L6-v2)",
                self.backbone_name
            ),
            (InputKind::Text { .. }, false) => bail!(
                "task '{spec}' is an image task but the backbone {} reads text; use a {} task, or an image backbone",
                self.backbone_name,
                data::registry::usages(Some(data::registry::Modality::Text))
            ),
            (InputKind::Text { .. }, true) if self.backbone.tokenizer().is_none() => bail!(
                "the text backbone {} has no tokenizer.json next to its config.json; copy the model's tokenizer.json there",
                self.backbone_name
            ),
            _ => Ok(()),
        }
    }

    /// Checks `cfg` against this backbone: the adapted encoders exist and the LoRA rank fits
    /// every target module.
    pub fn check_config(&self, cfg: &TrainConfig) -> Result<()> {
        cfg.validate()?;
        cfg.encoders.blocks(&self.backbone)?;
        if let Some(size) = cfg.image_size {
            self.backbone.check_image_size(size)?;
        }
        for &m in &cfg.lora.targets {
            let limit = fit::max_rank(&self.backbone, m);
            if cfg.lora.rank > limit {
                bail!(
                    "--rank {} is larger than the {} layer's smaller dimension {limit} on this backbone; use a rank from 1 to {limit}",
                    cfg.lora.rank,
                    self.backbone.peft_layout().module_path(m)
                );
            }
        }
        Ok(())
    }

    /// Checks that an adapter read from `origin` fits this backbone (blocks, modules, shapes).
    pub fn check_adapter(&self, adapter: &Adapter, origin: &Path) -> Result<()> {
        fit::check_fits(adapter, &self.backbone, &origin.display().to_string())
    }

    /// Loads the task named in `cfg`, builds its head and caches frozen activations. The
    /// environment depends on `cfg` only through [`TaskEnvKey::of`]; the rest of `cfg` is
    /// checked against the backbone ([`Lab::check_config`]).
    pub fn task_env(&self, cfg: &TrainConfig) -> Result<TaskEnv> {
        self.check_config(cfg)?;
        self.task_env_of(&TaskEnvKey::of(cfg))
    }

    /// The task environment of `key`: everything it reads comes from the key, so equal keys
    /// give equal environments (callers may share one).
    pub fn task_env_of(&self, key: &TaskEnvKey) -> Result<TaskEnv> {
        let source = data::parse_task(&key.task)?;
        self.check_task_kind(&source, &key.task)?;
        let data = data::load_task(&source, &self.key_options(key))?;
        let data_fingerprint = source.is_file().then(|| data.fingerprint());
        let train_images = images_tensor(&data.train, &self.device)?;
        let test_images = images_tensor(&data.test, &self.device)?;
        let train_inputs = self.backbone.frozen_block_inputs(&train_images, EVAL_BATCH)?;
        let head = match self.backbone.logit_scale() {
            Some(logit_scale) => {
                let texts: Vec<String> =
                    data.class_names.iter().map(|c| class_prompt(&key.prompt_template, c)).collect();
                Head::Prompts(PromptHead { prompts: self.backbone.tokenize_prompts(&texts)?, logit_scale })
            }
            None => {
                let encoded = &train_inputs[self.backbone.input_blocks()];
                let feats = self.backbone.cls_feature(encoded, Numerics::Fused)?;
                let classes = data.class_names.len();
                Head::Prototype(PrototypeHead::from_features(&feats, &data.train.labels, classes, key.logit_scale())?)
            }
        };
        let test = Evaluator::new(&self.backbone, &head, &test_images, &data.test.labels, EVAL_BATCH)?;
        let train = Evaluator::new(&self.backbone, &head, &train_images, &data.train.labels, EVAL_BATCH)?;
        Ok(TaskEnv { data, head, train_inputs, test, train, valid_eval: OnceLock::new(), data_fingerprint })
    }

    /// The run directory `cfg` maps to on the task `env`: keyed on the config, the backbone's
    /// weights and, for file tasks, the decoded data.
    pub fn run_dir(&self, env: &TaskEnv, cfg: &TrainConfig) -> PathBuf {
        let key = match &env.data_fingerprint {
            Some(d) => format!("{}|data:{d}", self.fingerprint),
            None => self.fingerprint.clone(),
        };
        runs::run_dir(&self.runs_dir, &self.normalized(cfg), &key)
    }

    /// `cfg` with the settings this backbone and method ignore set to their defaults, so they do
    /// not change a run's cache key: the prompt template without a text tower, `logit_scale`
    /// with one (CLIP's head uses the checkpoint's scale), `max_length` on an image backbone,
    /// `image_size` equal to the backbone's own,
    /// the `layer` grouping (the same as `block`) on a single-encoder one, and `p0` and
    /// `stage1_ratio` for LoRA and stochastic depth (constant p), and `valid_size` always
    /// (training never reads the validation split, and adding it leaves the shots as they are).
    pub fn normalized(&self, cfg: &TrainConfig) -> TrainConfig {
        let defaults = TrainConfig::default();
        let mut cfg = cfg.clone();
        cfg.valid_size = None;
        match self.backbone.logit_scale() {
            None => cfg.prompt_template = defaults.prompt_template.clone(),
            // The prompt head takes the checkpoint's scale; `logit_scale` is the prototype head's.
            Some(_) => cfg.logit_scale = defaults.logit_scale,
        }
        // Schedules without a rising phase never read p0 or stage1_ratio.
        if matches!(cfg.method, Method::Lora | Method::StochasticDepth { .. }) {
            cfg.p0 = defaults.p0;
            cfg.stage1_ratio = defaults.stage1_ratio;
        }
        // A schedule that never drops a group has nothing to rescale.
        if matches!(cfg.method, Method::Lora) || cfg.method == (Method::StochasticDepth { p: 1.0 }) {
            cfg.rescale = Rescale::None;
        }
        if let InputKind::Image { size, .. } = self.backbone.input_kind() {
            cfg.max_length = defaults.max_length;
            // The backbone's own size, named, is the same run as leaving it out.
            if cfg.image_size == Some(size) {
                cfg.image_size = None;
            }
        }
        let bb = &self.backbone;
        let single_encoder = (0..ModuleShapes::num_blocks(bb))
            .all(|b| ModuleShapes::place(bb, b).encoder == ModuleShapes::place(bb, 0).encoder);
        if single_encoder && cfg.grouping == Grouping::Layer {
            cfg.grouping = Grouping::Block;
        }
        cfg
    }

    /// Returns the cached run for `cfg`, or trains it and writes its artifacts.
    pub fn ensure_run(&self, env: &TaskEnv, cfg: &TrainConfig, force: bool, progress: &Progress) -> Result<Run> {
        let mut runs = self.ensure_runs(env, std::slice::from_ref(cfg), force, progress)?;
        Ok(runs.pop().expect("one run per config"))
    }

    /// The runs of a grid on the task `env`, in `cfgs` order: cached ones are read, the
    /// others trained together ([`train_grid`]: one per core, each bit-identical to training
    /// it alone) and written as they are gathered. If a run fails, the runs that succeeded are
    /// still written before the first error is returned.
    pub fn ensure_runs(
        &self,
        env: &TaskEnv,
        cfgs: &[TrainConfig],
        force: bool,
        progress: &Progress,
    ) -> Result<Vec<Run>> {
        let mut runs: Vec<Option<Run>> = Vec::with_capacity(cfgs.len());
        let mut missing = Vec::new();
        let mut cleaned = std::collections::BTreeSet::new();
        for cfg in cfgs {
            self.check_config(cfg)?;
            let dir = self.run_dir(env, cfg);
            runs::check_run_slot(&dir)?;
            // Temporary folders of writers that died (`kill -9`), once per folder touched.
            if let Some(parent) = dir.parent().filter(|p| cleaned.insert(p.to_path_buf())) {
                crate::report::atomic_dir::clean_stale_temps(parent);
            }
            if !force && runs::is_complete_run(&dir) {
                runs.push(Some(self.read_cached(env, cfg, &dir)?));
            } else {
                if let Some(parent) = dir.parent() {
                    crate::report::atomic::ensure_writable_dir(parent)
                        .with_context(|| format!("runs directory {}", self.runs_dir.display()))?;
                }
                missing.push(runs.len());
                runs.push(None);
            }
        }
        // Chunks of one run per core, each written before the next starts.
        for missing in missing.chunks(rayon::current_num_threads().max(1)) {
            let todo: Vec<TrainConfig> = missing.iter().map(|&i| self.normalized(&cfgs[i])).collect();
            let label = match todo.as_slice() {
                [cfg] => format!("train {} {} seed {}", cfg.task, cfg.method.name(), cfg.seed),
                _ => format!("train {} runs on {}", todo.len(), todo[0].task),
            };
            let bar = progress.bar(todo.iter().map(|c| c.steps as u64).sum(), &label);
            let outs =
                train_grid(&self.backbone, &env.head, &env.train_inputs, &env.data.train.labels, &todo, |_, r| {
                    bar.inc(1);
                    if todo.len() == 1 && r.step % 20 == 0 {
                        bar.set_message(format!("loss {:.3} p {:.2}", r.loss, r.p));
                    }
                });
            bar.finish_and_clear();
            let mut first_error = None;
            for ((&i, cfg), out) in missing.iter().zip(&todo).zip(outs) {
                match out.and_then(|out| self.write_trained(env, cfg, out, force)) {
                    Ok(run) => runs[i] = Some(run),
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }
        Ok(runs.into_iter().map(|r| r.expect("every run read or trained")).collect())
    }

    /// Reads the cached run in `dir` and checks that it is the run `cfg` asks for: its
    /// manifest's config, backbone and data match (a folder copied or renamed under another
    /// run's key is refused, never reused) and its adapter fits the backbone.
    fn read_cached(&self, env: &TaskEnv, cfg: &TrainConfig, dir: &Path) -> Result<Run> {
        let (adapter, manifest) = runs::read_run(dir, self.backbone.peft_layout())?;
        let key = self.normalized(cfg);
        runs::check_manifest_matches(&manifest, &key, &self.fingerprint, env.data_fingerprint.as_deref(), dir)?;
        self.check_adapter(&adapter, dir)?;
        Ok(Run { dir: dir.to_path_buf(), adapter, manifest, reused: true })
    }

    /// Evaluates a trained adapter and writes its run folder. When another writer installed
    /// the same run first (concurrent commands), that run is kept and returned.
    fn write_trained(&self, env: &TaskEnv, cfg: &TrainConfig, out: TrainOutput, force: bool) -> Result<Run> {
        let dir = self.run_dir(env, cfg);
        let deltas = out.adapter.deltas();
        let manifest = Manifest {
            config: self.normalized(cfg),
            backbone: self.backbone_name.clone(),
            backbone_fingerprint: self.fingerprint.clone(),
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
            run_format: runs::RUN_FORMAT,
            wall_seconds: out.wall_seconds,
            images_per_second: (cfg.steps * cfg.batch_size.min(env.data.train.len())) as f64
                / out.wall_seconds.max(1e-9),
            test: env.test.evaluate(&deltas)?,
            train: env.train.evaluate(&deltas)?,
            frozen_test: frozen_metrics(env)?,
            trainable_parameters: out.adapter.num_parameters(),
            data_fingerprint: env.data_fingerprint.clone(),
            model_type: self.backbone.model_type().to_string(),
        };
        match runs::write_run(&dir, &out.adapter, &out.log, &manifest, self.backbone.peft_layout(), force)? {
            Installed::New => Ok(Run { dir, adapter: out.adapter, manifest, reused: false }),
            Installed::KeptExisting => self.read_cached(env, cfg, &dir),
        }
    }
}

/// The compute device called `name`: `cpu`, or `cuda` / `cuda:N` (GPU N) in a build with
/// the `cuda` feature. The CPU path has fused kernels; on CUDA the model runs candle's own
/// ops. Errors say how to get a working device.
pub fn device_named(name: &str) -> Result<Device> {
    let name = name.trim();
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(rest) = name.strip_prefix("cuda") else {
        anyhow::bail!("unknown device '{name}': use cpu, cuda or cuda:N (GPU number N)");
    };
    let ordinal = match rest.strip_prefix(':') {
        Some(n) => {
            n.parse::<usize>().map_err(|_| anyhow::anyhow!("device '{name}': N in cuda:N must be a GPU number"))?
        }
        None if rest.is_empty() => 0,
        None => anyhow::bail!("unknown device '{name}': use cpu, cuda or cuda:N (GPU number N)"),
    };
    if !candle_core::utils::cuda_is_available() {
        anyhow::bail!(
            "device '{name}': this copra-lab was built without CUDA; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit), or use --device cpu"
        );
    }
    Device::new_cuda(ordinal).map_err(|e| {
        anyhow::anyhow!("device '{name}': no usable CUDA GPU {ordinal} ({e}); check the driver, or use --device cpu")
    })
}

/// Test metrics of the frozen backbone with the task's head.
pub fn frozen_metrics(env: &TaskEnv) -> Result<Metrics> {
    env.test.evaluate(&Default::default())
}

/// Frozen CLS features of images (for tests and diagnostics).
pub fn frozen_features(backbone: &Backbone, images: &Tensor) -> Result<Tensor> {
    backbone.features(images, &NoBranch, Numerics::Fused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::{train_adapter, Method};

    fn lab() -> Lab {
        Lab::open("builtin", &std::env::temp_dir().join("copra-lab-unused-runs")).unwrap()
    }

    #[test]
    fn devices_are_chosen_at_run_time_with_clear_errors() {
        assert!(device_named("cpu").unwrap().is_cpu());
        let err = device_named("tpu").unwrap_err().to_string();
        assert!(err.contains("use cpu, cuda"), "{err}");
        let err = device_named("cuda:x").unwrap_err().to_string();
        assert!(err.contains("GPU number"), "{err}");
        if !candle_core::utils::cuda_is_available() {
            let err = device_named("cuda").unwrap_err().to_string();
            assert!(err.contains("--features cuda"), "{err}");
        }
    }

    #[test]
    fn task_env_keys_hold_what_the_environment_reads_and_nothing_else() {
        let base = TrainConfig::default();
        let key = TaskEnvKey::of(&base);
        // Settings of training alone share the environment.
        let training = TrainConfig { seed: 9, lr: 1e-4, steps: 3, method: Method::Lora, ..base.clone() };
        assert_eq!(TaskEnvKey::of(&training), key);
        // Every setting the environment reads makes a new one.
        for other in [
            TrainConfig { task: "hue".into(), ..base.clone() },
            TrainConfig { shots: 2, ..base.clone() },
            TrainConfig { test_size: 7, ..base.clone() },
            TrainConfig { valid_size: Some(7), ..base.clone() },
            TrainConfig { data_seed: 5, ..base.clone() },
            TrainConfig { max_length: 16, ..base.clone() },
            TrainConfig { prompt_template: "{} here".into(), ..base.clone() },
            TrainConfig { logit_scale: 10.0, ..base.clone() },
            TrainConfig { image_size: Some(16), ..base.clone() },
        ] {
            assert_ne!(TaskEnvKey::of(&other), key, "{other:?}");
        }
        assert_eq!(key.logit_scale(), base.logit_scale);
    }

    #[test]
    fn the_validation_size_never_changes_a_run_key_and_validation_is_evaluated() {
        let lab = lab();
        let base = TrainConfig { test_size: 40, steps: 3, ..TrainConfig::default() };
        let with = TrainConfig { valid_size: Some(24), ..base.clone() };
        assert_eq!(lab.normalized(&with), lab.normalized(&base));
        let (env, env_with) = (lab.task_env(&base).unwrap(), lab.task_env(&with).unwrap());
        assert_eq!(lab.run_dir(&env, &base), lab.run_dir(&env_with, &with));
        assert_eq!((env.data.valid.len(), env_with.data.valid.len()), (40, 24));
        assert_eq!(env.data.train, env_with.data.train);
        let valid = env_with.evaluator(Split::Validation).unwrap();
        assert_eq!(valid.len(), 24);
        let acc = valid.evaluate(&Default::default()).unwrap().accuracy;
        assert!((0.0..=1.0).contains(&acc));
    }

    #[test]
    fn default_tasks_leave_room_for_adaptation() {
        // The frozen built-in backbone must beat chance on every default task (its
        // features carry the factor) without solving it (the factor is what pretraining
        // taught it to discount).
        let lab = lab();
        for info in data::builtin_tasks() {
            let cfg = TrainConfig { task: info.name.into(), test_size: 400, ..TrainConfig::default() };
            let acc = frozen_metrics(&lab.task_env(&cfg).unwrap()).unwrap().accuracy;
            let chance = 1.0 / info.num_classes as f64;
            eprintln!("{:10} frozen {acc:.3} (chance {chance:.3})", info.name);
            assert!(acc > 1.5 * chance && acc < 0.75, "{}: frozen accuracy {acc}", info.name);
        }
    }

    #[test]
    fn lora_gains_ten_points_on_the_default_task() {
        // The bar, on a shortened run: 200 of the default 500 steps on the default
        // task already lift test accuracy by well over ten points above the frozen head.
        let lab = lab();
        let cfg = TrainConfig { method: Method::Lora, steps: 200, test_size: 400, ..TrainConfig::default() };
        let env = lab.task_env(&cfg).unwrap();
        let frozen = frozen_metrics(&env).unwrap().accuracy;
        let out =
            train_adapter(&lab.backbone, &env.head, &env.train_inputs, &env.data.train.labels, &cfg, None, |_| {})
                .unwrap();
        let tuned = env.test.evaluate(&out.adapter.deltas()).unwrap().accuracy;
        eprintln!("{}: frozen {frozen:.3}, LoRA {tuned:.3}", cfg.task);
        assert!(tuned > frozen + 0.10, "LoRA {tuned} vs frozen {frozen}");
    }
}
