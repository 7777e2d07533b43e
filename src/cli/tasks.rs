//! `copra-lab tasks`.

use super::common::RunArgs;
use super::GlobalArgs;
use anyhow::Result;
use copra_lab::data;
use std::path::PathBuf;

/// Arguments of `tasks`.
#[derive(clap::Args, Debug)]
pub struct TasksArgs {
    /// Write a PNG contact sheet of each task into this folder.
    #[arg(long)]
    pub preview: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `tasks`.
pub fn run(_global: &GlobalArgs, a: TasksArgs) -> Result<()> {
    let base = a.run.base_config()?;
    let cfg = copra_lab::model::VitConfig::tiny();
    let opts = data::TaskOptions {
        image_size: cfg.image_size,
        channels: cfg.num_channels,
        shots: base.shots,
        test_size: base.test_size,
        seed: base.data_seed,
    };
    println!("{:<14} {:<8} {:>7} {:>6} {:>6}  description", "task", "set", "classes", "train", "test");
    let listed: Vec<(data::BuiltinInfo, &str)> = data::builtin_tasks()
        .into_iter()
        .map(|t| (t, "default"))
        .chain(data::family_tasks().into_iter().map(|t| (t, "family")))
        .collect();
    let mut names: Vec<String> = listed.iter().map(|(t, _)| t.name.to_string()).collect();
    if let Some(t) = &a.run.task {
        names = vec![t.clone()];
    }
    for name in names {
        let source = data::parse_task(&name)?;
        let task = data::load_task(&source, &opts)?;
        let (set, desc) =
            listed.iter().find(|(t, _)| t.name == name).map(|(t, set)| (*set, t.description)).unwrap_or(("", ""));
        println!(
            "{:<14} {:<8} {:>7} {:>6} {:>6}  {}",
            name,
            set,
            task.class_names.len(),
            task.train.len(),
            task.test.len(),
            desc
        );
        if let Some(dir) = &a.preview {
            std::fs::create_dir_all(dir)?;
            data::write_preview(&task, &dir.join(format!("{}.png", copra_lab::runs::sanitize(&name))), 8)?;
        }
    }
    Ok(())
}
