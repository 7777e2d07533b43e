//! The CLIP backbone end to end through the binary: the tiny random `CLIPModel` fixture
//! (`tests/fixtures/clip-tiny`, written by transformers) on a folder task whose class names
//! become the text classifier's prompts. Training adapts both towers (or one), writes
//! PEFT's `CLIPModel` names, and connectivity, Shapley (by block of each tower and by
//! shared layer), federated merging and pruning run on such runs.

mod common;

use common::*;
use std::path::Path;

const CLIP_QUICK: &[&str] = &["--steps", "8", "--shots", "4", "--test-size", "12", "--batch-size", "6"];

/// The tensor names of a run's adapter.
fn adapter_names(dir: &Path) -> Vec<String> {
    let bytes = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.names().into_iter().map(String::from).collect()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn clip_trains_both_towers_and_every_analysis_runs() {
    let root = tmp("clip-e2e");
    let task = format!("folder:{}", write_shape_folder(&root, 8).display());
    let runs = root.join("runs");
    let base = |cmd: &str| {
        let mut c = bin();
        c.args(["--backbone", &tiny_clip(), "--runs-dir", runs.to_str().unwrap(), cmd, "--task", &task]);
        c
    };
    let o = run(base("train").args(["--encoder", "both", "--method", "copra", "--seed", "1"]).args(CLIP_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = run_dir_of(&runs);
    let names = adapter_names(&dir);
    // 3 vision + 2 text blocks × q, k, v × A, B.
    assert_eq!(names.len(), 30, "{names:?}");
    for name in [
        "base_model.model.vision_model.encoder.layers.2.self_attn.q_proj.lora_A.weight",
        "base_model.model.text_model.encoder.layers.1.self_attn.v_proj.lora_B.weight",
    ] {
        assert!(names.iter().any(|n| n == name), "{name} missing from {names:?}");
    }
    let cfg = json(&dir.join("adapter_config.json"));
    assert_eq!(cfg["target_modules"], serde_json::json!(["q_proj", "k_proj", "v_proj"]));
    assert!(cfg["layers_to_transform"].is_null(), "a list covers every block of both towers");
    let manifest = json(&dir.join("manifest.json"));
    assert_eq!(manifest["model_type"], "clip");
    assert_eq!(manifest["trainable_parameters"], 3 * 3 * 2 * (32 + 32) + 2 * 3 * 2 * (24 + 24));
    let acc = manifest["test"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc), "{acc}");

    let out = root.join("conn");
    let o = run(base("connectivity")
        .args(["--seeds", "1,2", "--alphas", "3", "--layer-alphas", "2", "--out", out.to_str().unwrap()])
        .args(CLIP_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!files_named(&out, ".parquet").is_empty() && !files_named(&out, ".svg").is_empty());
    for players in ["block", "layer"] {
        let out = root.join(format!("shap-{players}"));
        let o = run(base("shapley").args(["--players", players, "--out", out.to_str().unwrap()]).args(CLIP_QUICK));
        assert!(o.status.success(), "{players}: {}", stderr(&o));
        assert!(!files_named(&out, ".parquet").is_empty(), "{players}");
        let printed = stdout(&o);
        let label = if players == "block" { "text.b1" } else { "l2" };
        assert!(printed.contains(label), "{players}: no player {label} in {printed}");
    }
    // 30 players (six modules of 5 blocks) are beyond exact enumeration: the estimators run.
    let out = root.join("shap-module");
    let o = run(base("shapley")
        .args(["--players", "module", "--targets", "q,k,v,o,fc1,fc2", "--out", out.to_str().unwrap()])
        .args(CLIP_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("text.b1.fc2") && stdout(&o).contains("coalitions evaluated with the model"));
    let out = root.join("fed");
    let o = run(base("federated")
        .args(["--clients", "2", "--iid", "--rounds", "2", "--out", out.to_str().unwrap()])
        .args(CLIP_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = root.join("prune");
    let o = run(base("prune").args(["--out", out.to_str().unwrap()]).args(CLIP_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn one_tower_runs_write_a_regular_expression_peft_reads() {
    let root = tmp("clip-vision");
    let task = format!("folder:{}", write_shape_folder(&root, 6).display());
    let runs = root.join("runs");
    let o = run(bin()
        .args(["--backbone", &tiny_clip(), "--runs-dir", runs.to_str().unwrap(), "train", "--task", &task])
        .args(["--encoder", "vision", "--method", "lora", "--targets", "q,v,fc1"])
        .args(CLIP_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = run_dir_of(&runs);
    let names = adapter_names(&dir);
    assert_eq!(names.len(), 3 * 3 * 2);
    assert!(names.iter().all(|n| n.starts_with("base_model.model.vision_model.")), "{names:?}");
    let cfg = json(&dir.join("adapter_config.json"));
    assert_eq!(
        cfg["target_modules"],
        r"(vision_model\.encoder\.layers\.(0|1|2))\.(self_attn\.q_proj|self_attn\.v_proj|mlp\.fc1)"
    );
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn clip_options_on_other_backbones_and_bad_templates_are_one_line_errors() {
    let o = run(bin().args(["train", "--encoder", "text"]).args(CLIP_QUICK));
    assert_one_line_error(&o, "this backbone has no text encoder");
    let root = tmp("clip-errors");
    let task = format!("folder:{}", write_shape_folder(&root, 6).display());
    let o = run(bin()
        .args(["--backbone", &tiny_clip(), "train", "--task", &task, "--prompt-template", "a photo"])
        .args(CLIP_QUICK));
    assert_one_line_error(&o, "has no {} where the class name goes");
    let _ = std::fs::remove_dir_all(&root);
}
