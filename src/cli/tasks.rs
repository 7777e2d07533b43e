//! `copra-lab tasks`.

use super::common::RunArgs;
use super::GlobalArgs;
use anyhow::{Context, Result};
use copra_lab::data;
use copra_lab::lab::Lab;
use copra_lab::model::InputKind;
use std::path::PathBuf;

/// Arguments of `tasks`.
#[derive(clap::Args, Debug)]
pub struct TasksArgs {
    /// Write a PNG contact sheet of each (image) task into this folder.
    #[arg(long)]
    pub preview: Option<PathBuf>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// The folder `analyses/fetch-assets.sh` puts the text data sets in.
fn text_assets_dir() -> Option<PathBuf> {
    let root = match std::env::var_os("COPRA_LAB_ASSETS") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/copra-lab/assets"),
    };
    Some(root.join("orange-text"))
}

/// Runs `tasks`.
pub fn run(global: &GlobalArgs, a: TasksArgs) -> Result<()> {
    let base = a.run.base_config()?;
    if let Some(dir) = &a.preview {
        copra_lab::report::atomic::ensure_writable_dir(dir).context("--preview")?;
    }
    let lab = Lab::open(&global.backbone, &global.runs_dir)?;
    let opts = lab.task_options(&base);
    let text_backbone = matches!(lab.backbone.input_kind(), InputKind::Text { .. });
    println!("{:<14} {:<8} {:>7} {:>6} {:>6}  description", "task", "set", "classes", "train", "test");
    let listed: Vec<(data::BuiltinInfo, &str)> = data::builtin_tasks()
        .into_iter()
        .map(|t| (t, "default"))
        .chain(data::family_tasks().into_iter().map(|t| (t, "family")))
        .collect();
    let mut names: Vec<String> =
        if text_backbone { Vec::new() } else { listed.iter().map(|(t, _)| t.name.to_string()).collect() };
    if let Some(t) = &a.run.task {
        names = vec![t.clone()];
    }
    for name in names {
        let source = data::parse_task(&name)?;
        lab.check_task_kind(&source, &name)?;
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
        if let (Some(dir), false) = (&a.preview, source.is_text()) {
            data::write_preview(&task, &dir.join(format!("{}.png", copra_lab::runs::sanitize(&name))), 8)?;
        }
    }
    if a.run.task.is_none() {
        list_text_tasks(text_backbone);
        list_sources();
    }
    Ok(())
}

/// Lists the kinds of task read from a path (the task-source registry).
fn list_sources() {
    println!("\ntasks read from a path (--task PREFIX:PATH):");
    for kind in data::registry::SOURCES {
        println!("  {:<14} {}", kind.usage(), kind.help);
    }
}

/// Lists the text data files fetched by `analyses/fetch-assets.sh`, if present.
fn list_text_tasks(text_backbone: bool) {
    let Some(dir) = text_assets_dir() else { return };
    let found = data::text::find_tab_tasks(&dir);
    if found.is_empty() {
        if text_backbone {
            println!(
                "\nno text data sets in {}; run analyses/fetch-assets.sh, or pass --task tab:FILE / text:FILE",
                dir.display()
            );
        }
        return;
    }
    let note = if text_backbone { "" } else { " (need a text backbone: --backbone <BERT folder>)" };
    println!("\ntext tasks in {}{note}:", dir.display());
    for t in found {
        let split = if t.has_test_file { "train/test files" } else { "split from one file" };
        println!("  {}  {} documents, {} classes, {split}", t.spec, t.documents, t.classes);
    }
}
