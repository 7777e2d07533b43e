//! `copra-lab pretrain`.

use super::common::check_cost;
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::model::checkpoint;
use copra_lab::pretrain::{pretrain, PretrainConfig};
use std::path::PathBuf;

/// Arguments of `pretrain`.
#[derive(clap::Args, Debug)]
pub struct PretrainArgs {
    /// Output folder (Hugging Face layout: config.json + model.safetensors).
    #[arg(long, default_value = "backbone-pretrained")]
    pub out: PathBuf,
    /// Optimizer steps.
    #[arg(long, default_value_t = PretrainConfig::default().steps)]
    pub steps: usize,
    /// Images per step.
    #[arg(long, default_value_t = PretrainConfig::default().batch_size)]
    pub batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = PretrainConfig::default().lr, allow_negative_numbers = true)]
    pub lr: f64,
    /// Seed (initialisation and data).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Width of the residual stream.
    #[arg(long, default_value_t = copra_lab::model::VitConfig::tiny().hidden_size)]
    pub hidden_size: usize,
    /// Number of transformer blocks.
    #[arg(long, default_value_t = copra_lab::model::VitConfig::tiny().num_hidden_layers)]
    pub layers: usize,
    /// Input image side in pixels (tasks are rendered at this size).
    #[arg(long, default_value_t = copra_lab::model::VitConfig::tiny().image_size)]
    pub image_size: usize,
    /// Patch side in pixels (must divide the image size).
    #[arg(long, default_value_t = copra_lab::model::VitConfig::tiny().patch_size)]
    pub patch_size: usize,
    /// Run even when the requested work is far (over 20×) beyond the defaults.
    #[arg(long)]
    pub yes: bool,
}

/// Refuses, before any work, a backbone whose memory this machine lacks (whatever `--yes`
/// says) and work or size far beyond the default pretraining (unless `yes`).
fn check_pretrain_cost(cfg: &PretrainConfig, yes: bool) -> Result<()> {
    let cost = cfg.cost();
    let default = PretrainConfig::default().cost();
    if let Some(total) = total_memory_bytes().filter(|t| cost.memory_bytes > 0.8 * t) {
        anyhow::bail!(
            "pretraining {} blocks × {} wide needs about {:.1} GB of memory but this machine has {:.1} GB; lower --hidden-size, --layers, --image-size or --batch-size",
            cfg.model.num_hidden_layers,
            cfg.model.hidden_size,
            cost.memory_bytes / 1e9,
            total / 1e9
        );
    }
    check_cost("--hidden-size × --layers (parameters)", cost.parameters, default.parameters, yes)?;
    check_cost("--batch-size × --image-size (memory)", cost.memory_bytes, default.memory_bytes, yes)?;
    check_cost("--steps × --batch-size × model size", cost.work, default.work, yes)
}

/// This machine's memory in bytes (`MemTotal` of `/proc/meminfo`), where it can be read.
fn total_memory_bytes() -> Option<f64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Runs `pretrain`.
pub fn run(global: &GlobalArgs, a: PretrainArgs) -> Result<()> {
    let mut cfg =
        PretrainConfig { steps: a.steps, batch_size: a.batch_size, lr: a.lr, seed: a.seed, ..Default::default() };
    cfg.model.hidden_size = a.hidden_size;
    cfg.model.num_hidden_layers = a.layers;
    cfg.model.intermediate_size = 2 * a.hidden_size;
    if a.patch_size == 0 || !a.image_size.is_multiple_of(a.patch_size) {
        anyhow::bail!(
            "--patch-size {} must divide --image-size {}; pick a divisor such as 4 or 8",
            a.patch_size,
            a.image_size
        );
    }
    cfg.model.image_size = a.image_size;
    cfg.model.patch_size = a.patch_size;
    cfg.warmup = cfg.warmup.min(cfg.steps / 4);
    let heads = cfg.model.num_attention_heads;
    if a.hidden_size == 0 || a.layers == 0 || !a.hidden_size.is_multiple_of(heads) {
        anyhow::bail!(
            "--hidden-size {} and --layers {} must be positive, and --hidden-size a multiple of the {heads} attention heads",
            a.hidden_size,
            a.layers
        );
    }
    cfg.model.validate()?;
    check_pretrain_cost(&cfg, a.yes)?;
    super::common::check_output_dir(&a.out)?;
    let (backbone, report) = pretrain(&cfg, &global.progress())?;
    checkpoint::save_dir(&backbone, &a.out)?;
    copra_lab::report::atomic::write_atomic(
        &a.out.join("pretrain.json"),
        serde_json::to_string_pretty(&serde_json::json!({"config": cfg, "report": report}))?.as_bytes(),
    )?;
    println!(
        "pretrained {} blocks × {} wide in {:.0} s; held-out source accuracy {:.1}% (loss {:.3}); wrote {}",
        cfg.model.num_hidden_layers,
        cfg.model.hidden_size,
        report.wall_seconds,
        100.0 * report.source_accuracy,
        report.source_loss,
        a.out.display()
    );
    Ok(())
}

/// Arguments of `export-backbone`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Output folder (config.json + model.safetensors, loadable by `ViTModel.from_pretrained`).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `export-backbone`.
pub fn export(global: &GlobalArgs, a: ExportArgs) -> Result<()> {
    super::common::check_output_dir(&a.out)?;
    let backbone = checkpoint::load_backbone(&global.backbone, &candle_core::Device::Cpu)?;
    checkpoint::save_dir(&backbone, &a.out)?;
    println!("wrote {} (config.json + model.safetensors)", a.out.display());
    Ok(())
}
