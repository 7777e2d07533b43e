//! End-to-end tests of the `copra-lab` binary: training and the run cache, determinism,
//! real data, and one-line errors for bad input.

mod common;

use common::*;
use std::path::Path;

#[test]
fn train_writes_artifacts_reuses_the_cache_and_is_bit_identical() {
    let a = tmp("det-a");
    let b = tmp("det-b");
    for root in [&a, &b] {
        let o = run(bin()
            .args(["--runs-dir", root.to_str().unwrap(), "train", "--method", "copra", "--seed", "3"])
            .args(QUICK));
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stdout(&o).contains("trained"), "{}", stdout(&o));
    }
    let (da, db) = (run_dir_of(&a), run_dir_of(&b));
    for f in ["adapter_model.safetensors", "adapter_config.json", "train_log.parquet", "manifest.json"] {
        assert!(da.join(f).is_file(), "missing {f}");
    }
    let wa = std::fs::read(da.join("adapter_model.safetensors")).unwrap();
    let wb = std::fs::read(db.join("adapter_model.safetensors")).unwrap();
    assert_eq!(wa, wb, "same seed and config must give a bit-identical adapter");

    // Second call reuses the run.
    let o =
        run(bin().args(["--runs-dir", a.to_str().unwrap(), "train", "--method", "copra", "--seed", "3"]).args(QUICK));
    assert!(stdout(&o).contains("reused"), "{}", stdout(&o));

    // A different seed gives a different adapter.
    let c = tmp("det-c");
    let o =
        run(bin().args(["--runs-dir", c.to_str().unwrap(), "train", "--method", "copra", "--seed", "4"]).args(QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let wc = std::fs::read(run_dir_of(&c).join("adapter_model.safetensors")).unwrap();
    assert_ne!(wa, wc);

    // `eval` reads the PEFT folder back and reports the manifest's accuracy.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(da.join("manifest.json")).unwrap()).unwrap();
    let acc = manifest["test"]["accuracy"].as_f64().unwrap();
    let o = run(bin().args(["eval", "--adapter", da.to_str().unwrap()]).args(QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains(&format!("test accuracy {:.2}%", 100.0 * acc)), "{} vs {acc}", stdout(&o));
    // `--split validation` scores the held-out validation split instead; train prints it too.
    let o = run(bin()
        .args(["eval", "--adapter", da.to_str().unwrap(), "--split", "validation", "--valid-size", "30"])
        .args(QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("(30 validation examples)") && stdout(&o).contains("validation accuracy"),
        "{}",
        stdout(&o)
    );
    let o = run(bin()
        .args(["--runs-dir", a.to_str().unwrap(), "train", "--method", "copra", "--seed", "3", "--valid-size", "30"])
        .args(QUICK));
    assert!(
        stdout(&o).contains("reused") && stdout(&o).contains("(30 images)"),
        "the validation size keeps the run: {}",
        stdout(&o)
    );
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn trains_on_fashion_mnist_from_debian_package() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.is_dir() {
        eprintln!("skipping: {} not installed (apt-get install dataset-fashion-mnist)", dir.display());
        return;
    }
    let root = tmp("fmnist");
    let task = format!("idx:{}", dir.display());
    let o = run(bin()
        .args(["--runs-dir", root.to_str().unwrap(), "train", "--method", "lora", "--task", &task])
        .args(QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir_of(&root).join("manifest.json")).unwrap()).unwrap();
    let acc = manifest["test"]["accuracy"].as_f64().unwrap();
    // 10 classes: well above chance even with 4 shots.
    assert!(acc > 0.3, "Fashion-MNIST accuracy {acc}");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn bad_input_gives_one_line_errors() {
    let d = tmp("errors");
    // Missing backbone folder.
    let o = run(bin().args(["--backbone", d.join("nope").to_str().unwrap(), "eval"]));
    assert_one_line_error(&o, "does not exist");
    // Corrupt safetensors.
    std::fs::write(d.join("config.json"), r#"{"hidden_size":32,"num_hidden_layers":12,"num_attention_heads":4,"intermediate_size":64,"image_size":32,"patch_size":8}"#).unwrap();
    std::fs::write(d.join("model.safetensors"), b"not a safetensors file").unwrap();
    let o = run(bin().args(["--backbone", d.to_str().unwrap(), "eval"]));
    assert_one_line_error(&o, "truncated or corrupt");
    // Wrong shape: export the built-in and claim a wider model.
    let o = run(bin().args(["export-backbone", "--out", d.to_str().unwrap()]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text =
        std::fs::read_to_string(d.join("config.json")).unwrap().replace("\"hidden_size\": 32", "\"hidden_size\": 48");
    std::fs::write(d.join("config.json"), text).unwrap();
    let o = run(bin().args(["--backbone", d.to_str().unwrap(), "eval"]));
    assert_one_line_error(&o, "do not match");
    // Unknown task, bad method, bad numbers, missing config and adapter files.
    assert_one_line_error(&run(bin().args(["train", "--task", "cifar"])), "unknown");
    assert_one_line_error(&run(bin().args(["train", "--method", "sgd"])), "unknown method");
    assert_one_line_error(&run(bin().args(["train", "--config", "/nonexistent.toml"])), "cannot read config file");
    assert_one_line_error(&run(bin().args(["eval", "--adapter", "/nonexistent"])), "adapter_config.json");
    assert_one_line_error(&run(bin().args(["train", "--steps", "0"])), "steps");
    assert_one_line_error(&run(bin().args(["connectivity", "--seeds", "1"])), "at least two seeds");
    // Nonsense flag: clap's own error, exit code 2, no panic.
    let o = run(bin().args(["train", "--nonsense"]));
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"));
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn every_command_has_help() {
    for cmd in ["pretrain", "train", "eval", "tasks", "connectivity", "shapley", "bench", "export-backbone"] {
        let o = run(bin().args([cmd, "--help"]));
        assert!(o.status.success(), "{cmd} --help failed");
        assert!(stdout(&o).contains("Usage"), "{cmd}");
    }
}

#[test]
fn tasks_lists_every_source_of_the_registry() {
    let o = run(bin().arg("tasks"));
    assert!(o.status.success());
    let out = stdout(&o);
    for usage in ["idx:DIR", "folder:DIR", "tab:FILE", "text:FILE"] {
        assert!(out.lines().any(|l| l.trim_start().starts_with(usage)), "{usage} not listed:\n{out}");
    }
}

#[test]
#[cfg(unix)]
fn a_closed_pipe_ends_the_command_quietly() {
    // `copra-lab tasks | head -0`: the reader is gone before the command prints. Rust ignores
    // SIGPIPE, so the print used to panic (exit 101, "failed printing to stdout: Broken pipe");
    // like any Unix tool it must end quietly, killed by SIGPIPE.
    use std::os::unix::process::ExitStatusExt;
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin().arg("tasks").stdout(writer).stderr(std::process::Stdio::piped()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.signal(), Some(13), "status {:?}, stderr {stderr}", out.status);
}

/// The string column `c` of `df`.
fn strings(df: &polars::prelude::DataFrame, c: &str) -> Vec<String> {
    df.column(c).unwrap().str().unwrap().iter().map(|v| v.unwrap_or_default().to_string()).collect()
}

/// The float column `c` of `df`.
fn floats(df: &polars::prelude::DataFrame, c: &str) -> Vec<f64> {
    df.column(c).unwrap().f64().unwrap().iter().map(|v| v.unwrap_or(f64::NAN)).collect()
}

#[test]
fn connectivity_reports_aligned_lines_curves_and_the_decomposition() {
    use copra_lab::report::table::Table;
    let root = tmp("conn-gauge");
    let out = root.join("out");
    let r = root.to_str().unwrap();
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "connectivity", "--curve", "spline"])), "unknown curve");
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "connectivity", "--spaces", "curve-bezier"])), "--curve");
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "connectivity", "--spaces", "factor,factor"])), "twice");
    let o = run(bin()
        .args(["--runs-dir", root.to_str().unwrap(), "connectivity", "--seeds", "1,2", "--out", out.to_str().unwrap()])
        .args(["--alphas", "3", "--layer-alphas", "2", "--curve-steps", "4"])
        .args(QUICK));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("factor-aligned-orth") && stdout(&o).contains("curve-bezier"), "{}", stdout(&o));
    let dir = out.join("lighting");
    let read = |n: &str| Table::read_parquet(&dir.join(n)).unwrap();
    // Every path space, each with its kind, on the same α grid.
    let paths = read("connectivity_paths.parquet");
    let (space, kind) = (strings(&paths, "space"), strings(&paths, "path_kind"));
    for (s, k) in [
        ("factor", "line"),
        ("delta", "line"),
        ("factor-aligned-orth", "aligned"),
        ("factor-aligned-gl", "aligned"),
        ("factor-aligned-perm", "aligned"),
        ("curve-bezier", "curve"),
    ] {
        // 2 methods × 1 pair × 2 splits × 3 α.
        let n = space.iter().zip(&kind).filter(|(x, y)| *x == s && *y == k).count();
        assert_eq!(n, 12, "{s} ({k})");
    }
    // Procrustes can only shrink the factor distance: after ≤ before for every module and total.
    let al = read("connectivity_alignment.parquet");
    let (before, after, al_space) =
        (floats(&al, "distance_before"), floats(&al, "distance_after"), strings(&al, "space"));
    let orth: Vec<usize> = (0..before.len()).filter(|&i| al_space[i] == "factor-aligned-orth").collect();
    assert!(!orth.is_empty());
    for i in orth {
        assert!(after[i] <= before[i] * (1.0 + 1e-5) + 1e-6, "row {i}: {} > {}", after[i], before[i]);
    }
    for (name, cols) in [
        ("connectivity_decomposition.parquet", &["endpoints_accuracy", "cross_relative"][..]),
        ("connectivity_curves.parquet", &["control_distance", "control_relative"][..]),
        ("connectivity_summary.parquet", &["mean", "ci95_lo"][..]),
    ] {
        let t = read(name);
        for c in cols {
            assert!(t.column(c).is_ok(), "{name} lacks {c}");
        }
        assert!(t.height() > 0, "{name} is empty");
    }
    let curves = read("connectivity_curves.parquet");
    assert_eq!(curves.height(), 2, "one bezier curve per method");
    for m in ["lora", "copra"] {
        for f in [format!("connectivity_paths_{m}.svg"), format!("connectivity_decomposition_{m}.svg")] {
            assert!(dir.join(&f).is_file(), "missing {f}");
        }
    }
    let _ = std::fs::remove_dir_all(root);
}
