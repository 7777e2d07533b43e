//! The BERT backbone end to end: the tiny random BERT fixture (with its tiny tokenizer)
//! through the binary on a text task, one-line errors for mismatched tasks and
//! backbones, and (when `analyses/fetch-assets.sh` has run) all-MiniLM-L6-v2's frozen
//! sentence embeddings against the values sentence-transformers computes.

mod common;

use common::*;
use copra_lab::data::text::tokenize;
use copra_lab::model::{checkpoint, head::l2_normalize, NoBranch, Numerics};
use std::path::PathBuf;

const TEXT_QUICK: &[&str] = &["--steps", "8", "--shots", "4", "--test-size", "12", "--batch-size", "6"];

#[test]
fn a_text_task_trains_on_bert_and_every_analysis_runs() {
    let root = tmp("bert-e2e");
    std::fs::create_dir_all(&root).unwrap();
    let task = format!("tab:{}", write_news(&root).display());
    let runs = root.join("runs");
    let base = |cmd: &str| {
        let mut c = bin();
        c.args(["--backbone", &tiny_bert(), "--runs-dir", runs.to_str().unwrap(), cmd, "--task", &task]);
        c
    };
    let o = run(base("train").args(["--method", "copra", "--seed", "1"]).args(TEXT_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let dir = run_dir_of(&runs);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(cfg["layers_pattern"], "layer");
    let names = std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    let names = String::from_utf8_lossy(&names[..4096.min(names.len())]).into_owned();
    assert!(names.contains("base_model.model.encoder.layer.0.attention.self.query.lora_A.weight"), "{names}");
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["model_type"], "bert");

    let out = root.join("conn");
    let o = run(base("connectivity").args(["--seeds", "1,2", "--out", out.to_str().unwrap()]).args(TEXT_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!files_named(&out, ".parquet").is_empty() && !files_named(&out, ".svg").is_empty());
    let out = root.join("shap");
    let o = run(base("shapley").args(["--out", out.to_str().unwrap()]).args(TEXT_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!files_named(&out, ".parquet").is_empty());
    let out = root.join("prune");
    let o = run(base("prune").args(["--out", out.to_str().unwrap()]).args(TEXT_QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn mismatched_tasks_and_backbones_are_one_line_errors() {
    let root = tmp("bert-errors");
    std::fs::create_dir_all(&root).unwrap();
    let task = format!("tab:{}", write_news(&root).display());
    let o = run(bin().args(["train", "--task", &task]).args(TEXT_QUICK));
    assert_one_line_error(&o, "is a text task but the backbone builtin reads images");
    let o = run(bin().args(["train", "--backbone", &tiny_bert(), "--task", "lighting"]).args(TEXT_QUICK));
    assert_one_line_error(&o, "is an image task but the backbone");
    let o = run(bin().args(["train", "--backbone", &tiny_bert(), "--task", "tab:/nonexistent/x.tab"]).args(TEXT_QUICK));
    assert_one_line_error(&o, "does not exist");
    let _ = std::fs::remove_dir_all(&root);
}

/// The all-MiniLM-L6-v2 folder `analyses/fetch-assets.sh` writes, if it is there.
fn minilm() -> Option<PathBuf> {
    let root = match std::env::var_os("COPRA_LAB_ASSETS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/copra-lab/assets"),
    };
    let dir = root.join("all-MiniLM-L6-v2");
    dir.join("model.safetensors").is_file().then_some(dir)
}

#[test]
fn minilm_sentence_embeddings_match_sentence_transformers() {
    let Some(dir) = minilm() else {
        let note = "all-MiniLM-L6-v2 not found; run analyses/fetch-assets.sh (or set COPRA_LAB_ASSETS)";
        assert!(std::env::var_os("COPRA_LAB_REQUIRE_ASSETS").is_none(), "{note}");
        eprintln!("skipped: {note}");
        return;
    };
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/minilm/reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let sentences = reference["sentences"].as_array().unwrap();
    let texts: Vec<&str> = sentences.iter().map(|s| s["text"].as_str().unwrap()).collect();
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let (ids, width) = tokenize(&texts, &dir.join("tokenizer.json"), 128).unwrap();
    for (row, s) in sentences.iter().enumerate() {
        let want: Vec<u32> = s["input_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got: Vec<u32> = ids[row * width..(row + 1) * width].iter().map(|&v| v as u32).filter(|&v| v != 0).collect();
        assert_eq!(got, want, "token ids of sentence {row}");
    }
    let bb = checkpoint::load_dir(&dir, &candle_core::Device::Cpu).unwrap();
    let input = candle_core::Tensor::from_vec(ids, (texts.len(), width), &candle_core::Device::Cpu).unwrap();
    let pooled = bb.features(&input, &NoBranch, Numerics::Fused).unwrap();
    let embedded: Vec<Vec<f32>> = l2_normalize(&pooled).unwrap().to_vec2().unwrap();
    let pooled: Vec<Vec<f32>> = pooled.to_vec2().unwrap();
    let mut worst = (0f32, 0f32);
    for (row, s) in sentences.iter().enumerate() {
        for (a, b) in embedded[row].iter().zip(floats(&s["embedding"])) {
            worst.0 = worst.0.max((a - b).abs());
        }
        for (a, b) in pooled[row].iter().zip(floats(&s["mean_pooled"])) {
            worst.1 = worst.1.max((a - b).abs());
        }
    }
    eprintln!("max |diff| vs sentence-transformers: embedding {:.2e}, mean-pooled {:.2e}", worst.0, worst.1);
    assert!(worst.0 < 1e-5 && worst.1 < 1e-4, "{worst:?}");
}
