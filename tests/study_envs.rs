//! Analysis grids build one task environment per setting that defines it: variants that differ
//! only in how the task is tokenised (`max_length`, BERT) or prompted (`prompt_template`, CLIP)
//! must each train and evaluate exactly as their standalone run does, whatever their order.

mod common;

use common::*;
use copra_lab::lab::Lab;
use copra_lab::progress::Progress;
use copra_lab::study::{self, Shard, Spec};
use std::path::Path;

/// A one-seed grid of two variants that differ only in `key` (values written as TOML).
fn spec(task: &str, key: &str, values: [&str; 2]) -> Spec {
    let text = format!(
        r#"
name = "envs"
question = "Does each variant get its own task environment?"
baseline = "a"
seeds = [1]
tasks = ["{task}"]

[base]
method = "lora"
steps = 6
shots = 4
test_size = 12
batch_size = 6

[[variant]]
name = "a"
{key} = {}

[[variant]]
name = "b"
{key} = {}
"#,
        values[0], values[1]
    );
    Spec::parse(&text).unwrap()
}

/// Runs the grid into `root/grid`, then trains every variant alone in a fresh run cache and
/// checks that the grid's cached run is the same run: same adapter, same test metrics.
fn each_variant_equals_its_standalone_run(backbone: &str, spec: &Spec, root: &Path) {
    let grid = Lab::open(backbone, &root.join("runs-grid")).unwrap();
    let s = study::analyze(&grid, spec, &root.join("grid"), Shard::default(), &Progress::hidden()).unwrap();
    assert_eq!(s.missing, 0);
    for variant in &spec.variants {
        let cfg = spec.config(variant, 0, 1, &spec.tasks[0]).unwrap();
        let from_grid = grid.ensure_run(&grid.task_env(&cfg).unwrap(), &cfg, false, &Progress::hidden()).unwrap();
        assert!(from_grid.reused, "variant {}: the grid left no cached run", variant.name);
        let alone = Lab::open(backbone, &root.join(format!("runs-{}", variant.name))).unwrap();
        let own = alone.ensure_run(&alone.task_env(&cfg).unwrap(), &cfg, false, &Progress::hidden()).unwrap();
        assert!(!own.reused);
        assert_eq!(from_grid.manifest.test, own.manifest.test, "variant {}: test metrics differ", variant.name);
        assert_eq!(from_grid.manifest.frozen_test, own.manifest.frozen_test, "variant {}", variant.name);
        assert_eq!(from_grid.adapter, own.adapter, "variant {}: adapters differ", variant.name);
    }
}

#[test]
fn text_variants_that_differ_only_in_max_length_match_their_standalone_runs() {
    let root = tmp("study-envs-text");
    let task = format!("tab:{}", write_news(&root).display());
    // The fixture's documents are 8 to 14 tokens long: 4 truncates them, 32 does not.
    for values in [["4", "32"], ["32", "4"]] {
        let dir = root.join(values[0]);
        each_variant_equals_its_standalone_run(&tiny_bert(), &spec(&task, "max_length", values), &dir);
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn clip_variants_that_differ_only_in_prompt_template_match_their_standalone_runs() {
    let root = tmp("study-envs-clip");
    let task = format!("folder:{}", write_shape_folder(&root, 8).display());
    let values = ["\"a photo of a {}.\"", "\"{} drawn on grey\""];
    each_variant_equals_its_standalone_run(&tiny_clip(), &spec(&task, "prompt_template", values), &root);
    let _ = std::fs::remove_dir_all(&root);
}
