//! Failure behaviour of the `copra-lab` binary (issue 12): divergence is caught and never
//! cached, caches follow the data, adapters that do not fit are refused, duplicate and
//! unbounded inputs are refused before any work, errors name the path, and damaged files
//! or random flag values never make it panic.

mod common;

use common::*;
use copra_lab::adapter::{peft, Adapter, LoraFactors, LoraSpec, ModuleKey, TargetModule};
use copra_lab::data::{write_idx_images, write_idx_labels};
use copra_lab::linalg::Matrix;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::Path;

/// Tiny task settings for the test IDX and folder data sets below.
const TINY: &[&str] = &["--steps", "4", "--test-size", "8", "--shots", "2"];

/// Writes a two-class MNIST-format data set (8×8 images, 6 per class and split); `variant`
/// changes every pixel, so two variants are different data under the same path.
fn write_idx_task(dir: &Path, classes: u8, variant: u8) {
    std::fs::create_dir_all(dir).unwrap();
    for prefix in ["train", "t10k"] {
        let labels: Vec<u8> = (0..12).map(|i| (i % classes as usize) as u8).collect();
        let pixels: Vec<u8> = labels
            .iter()
            .enumerate()
            .flat_map(|(i, &l)| {
                (0..64).map(move |p| {
                    let bright = if l == 0 { p % 8 < 4 } else { p % 8 >= 4 };
                    (if bright { 200u8 } else { 30 }).wrapping_add((i * 7 + p) as u8 % 13).wrapping_add(variant * 17)
                })
            })
            .collect();
        write_idx_images(&dir.join(format!("{prefix}-images-idx3-ubyte")), 12, 8, 8, &pixels, false).unwrap();
        write_idx_labels(&dir.join(format!("{prefix}-labels-idx1-ubyte")), &labels, false).unwrap();
    }
}

/// A one-module adapter on `block` with factors `A` `[r, inp]` and `B` `[out, r]`.
fn adapter_on(block: usize, module: TargetModule, r: usize, inp: usize, out: usize) -> Adapter {
    let a = Matrix::from_vec(r, inp, vec![0.01; r * inp]);
    let b = Matrix::from_vec(out, r, vec![0.01; out * r]);
    let modules = BTreeMap::from([(ModuleKey { block, module }, LoraFactors { a, b })]);
    Adapter { spec: LoraSpec { rank: r, ..LoraSpec::default() }, modules }
}

/// Offset of the first tensor byte of a safetensors file (after the 8-byte length and header).
fn data_offset(bytes: &[u8]) -> usize {
    8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize
}

#[test]
fn divergence_stops_the_run_and_caches_nothing() {
    let root = tmp("diverge");
    let r = root.to_str().unwrap();
    let quick = ["--steps", "30", "--test-size", "100", "--shots", "2"];
    let o = run(bin().args(["--runs-dir", r, "train", "--method", "lora", "--lr", "1e3"]).args(quick));
    assert_one_line_error(&o, "training diverged at step");
    assert!(stderr(&o).contains("lower the learning rate"), "{}", stderr(&o));
    assert!(files_named(&root, "manifest.json").is_empty(), "a diverged run was cached");
    assert!(files_named(&root, ".tmp-").is_empty(), "temporary files left behind");
    // Non-finite settings are refused up front, naming the flag.
    for (flag, value, needle) in
        [("--lr", "inf", "lr must be a finite"), ("--alpha", "nan", "alpha"), ("--logit-scale", "nan", "logit_scale")]
    {
        assert_one_line_error(&run(bin().args(["--runs-dir", r, "train", flag, value]).args(quick)), needle);
    }
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn runs_and_adapters_with_non_finite_values_are_refused_by_name() {
    let root = tmp("nonfinite");
    let r = root.to_str().unwrap();
    let args = ["--runs-dir", r, "train", "--method", "lora"];
    assert!(run(bin().args(args).args(TINY)).status.success());
    let dir = run_dir_of(&root);
    let weights = dir.join(peft::WEIGHTS_FILE);
    let good = std::fs::read(&weights).unwrap();
    let mut bad = good.clone();
    let at = data_offset(&bad);
    bad[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(&weights, &bad).unwrap();
    // The cached run and the adapter folder both say what is wrong and where.
    let o = run(bin().args(args).args(TINY));
    assert_one_line_error(&o, "non-finite");
    assert!(stderr(&o).contains(weights.to_str().unwrap()), "{}", stderr(&o));
    assert_one_line_error(&run(bin().args(["eval", "--adapter", dir.to_str().unwrap()]).args(TINY)), "non-finite");
    // A manifest that stored a NaN as null names the divergence, not just "corrupt".
    std::fs::write(&weights, &good).unwrap();
    let m = dir.join("manifest.json");
    let text = std::fs::read_to_string(&m).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let loss = v["test"]["loss"].to_string();
    std::fs::write(&m, text.replacen(&format!("\"loss\": {loss}"), "\"loss\": null", 1)).unwrap();
    assert_one_line_error(&run(bin().args(args).args(TINY)), "non-finite (null)");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn run_cache_follows_the_data_of_file_tasks() {
    let root = tmp("datakey");
    let data = root.join("digits");
    write_idx_task(&data, 2, 0);
    let task = format!("idx:{}", data.display());
    let runs_root = root.join("runs");
    let args = ["--runs-dir", runs_root.to_str().unwrap(), "train", "--task", &task];
    let o = run(bin().args(args).args(TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("trained now"), "{}", stdout(&o));
    let first = run_dir_of(&root.join("runs"));
    let manifest = std::fs::read(first.join("manifest.json")).unwrap();
    assert!(stdout(&run(bin().args(args).args(TINY))).contains("from cache"));
    // New files under the same path: a new run, and the old one is left as it was.
    write_idx_task(&data, 2, 1);
    let o = run(bin().args(args).args(TINY));
    assert!(stdout(&o).contains("trained now"), "stale cache reused: {}", stdout(&o));
    let runs: Vec<_> = std::fs::read_dir(first.parent().unwrap()).unwrap().collect();
    assert_eq!(runs.len(), 2, "expected a second run directory");
    assert_eq!(std::fs::read(first.join("manifest.json")).unwrap(), manifest);
    // Restoring the first files finds the first run again.
    write_idx_task(&data, 2, 0);
    assert!(stdout(&run(bin().args(args).args(TINY))).contains("from cache"));
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn adapters_that_do_not_fit_the_backbone_are_refused() {
    let root = tmp("fit");
    let eval = |dir: &Path| run(bin().args(["eval", "--adapter", dir.to_str().unwrap()]).args(TINY));
    // A block the 12-block backbone lacks (was an index-out-of-bounds panic).
    let d = root.join("block15");
    peft::save(&adapter_on(15, TargetModule::Query, 2, 32, 32), &d, "builtin").unwrap();
    assert_one_line_error(&eval(&d), "layers.15.attention.q_proj.lora_A.weight");
    // A factor of the wrong width.
    let d = root.join("shape");
    peft::save(&adapter_on(0, TargetModule::Fc1, 2, 32, 32), &d, "builtin").unwrap();
    assert_one_line_error(&eval(&d), "layers.0.mlp.fc1.lora_A.weight");
    // adapter_config.json's r disagrees with the tensors (PEFT refuses this too).
    let d = root.join("rank");
    peft::save(&adapter_on(0, TargetModule::Value, 2, 32, 32), &d, "builtin").unwrap();
    let cfg = d.join(peft::CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg).unwrap().replace("\"r\": 2", "\"r\": 4");
    std::fs::write(&cfg, text).unwrap();
    assert_one_line_error(&eval(&d), "says r = 4");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn duplicate_and_degenerate_inputs_are_refused() {
    let root = tmp("dupes");
    let r = root.to_str().unwrap();
    let conn = |extra: &[&str]| run(bin().args(["--runs-dir", r, "connectivity"]).args(extra));
    assert_one_line_error(&conn(&["--methods", "lora,lora"]), "--methods lists 'lora' twice");
    assert_one_line_error(&conn(&["--seeds", "1,1"]), "--seeds lists '1' twice");
    let o = run(bin().args(["--runs-dir", r, "shapley", "--repetitions", "0"]));
    assert_one_line_error(&o, "--repetitions");
    let o = run(bin().args(["--runs-dir", r, "shapley", "--samples", "0"]));
    assert_one_line_error(&o, "--budget (--samples)");
    let o = run(bin().args(["--runs-dir", r, "--device", "tpu", "train"]).args(TINY));
    assert_one_line_error(&o, "unknown device 'tpu'");
    if cfg!(not(feature = "cuda")) {
        let o = run(bin().args(["--runs-dir", r, "--device", "cuda", "train"]).args(TINY));
        assert_one_line_error(&o, "--features cuda");
    }
    // A task with a single class.
    let one = root.join("one-class");
    write_idx_task(&one, 1, 0);
    let o = run(bin().args(["--runs-dir", r, "train", "--task", &format!("idx:{}", one.display())]).args(TINY));
    assert_one_line_error(&o, "at least two classes");
    assert!(files_named(&root, "manifest.json").is_empty());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn unbounded_inputs_are_bounded_or_need_yes() {
    let root = tmp("bounds");
    let r = root.to_str().unwrap();
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "connectivity", "--alphas", "100000000"])), "out of range");
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "connectivity", "--layer-alphas", "1"])), "out of range");
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "train", "--rank", "10000"])), "from 1 to 32");
    assert_one_line_error(&run(bin().args(["--runs-dir", r, "train", "--steps", "1000000"])), "--yes");
    let o = run(bin().args(["--runs-dir", r, "connectivity", "--alphas", "1001", "--seeds", "1,2,3,4,5"]));
    assert_one_line_error(&o, "--yes");
    let o = run(bin().args(["--runs-dir", r, "shapley", "--players", "module", "--targets", "q,k,v,o,fc1,fc2"]));
    assert_one_line_error(&o, "72 players");
    // 1,000 clients of 200 local steps each is 100x the default federated work.
    let o = run(bin().args(["--runs-dir", r, "federated", "--clients", "1000", "--out", r]));
    assert_one_line_error(&o, "--yes");
    let o = run(bin().args(["--runs-dir", r, "multitask", "--align-steps", "100000", "--out", r]));
    assert_one_line_error(&o, "--align-steps");
    assert!(files_named(&root, "manifest.json").is_empty(), "work started before the check");
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn outputs_are_checked_first_and_errors_name_the_path() {
    let root = tmp("outputs");
    let file = root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let runs = root.join("runs");
    let r = runs.to_str().unwrap();
    // A file where a folder is needed: refused before any training, naming the path.
    let o = run(bin().args(["--runs-dir", r, "shapley", "--out", file.to_str().unwrap()]).args(TINY));
    assert_one_line_error(&o, file.to_str().unwrap());
    assert!(!runs.exists(), "training started before the --out check");
    let o = run(bin().args(["--runs-dir", file.to_str().unwrap(), "train"]).args(TINY));
    assert_one_line_error(&o, file.to_str().unwrap());
    // Negative numbers reach the validation instead of clap's "unexpected argument '-0'".
    assert_one_line_error(&run(bin().args(["train", "--lr", "-0.01"])), "lr > 0");
    assert_one_line_error(&run(bin().args(["train", "--p0", "-0.5"])), "p0 must be in");
    // export-backbone writes world-readable files.
    let out = root.join("bb");
    assert!(run(bin().args(["export-backbone", "--out", out.to_str().unwrap()])).status.success());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join("model.safetensors")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "model.safetensors mode {mode:o}");
    }
    assert!(files_named(&out, ".tmp").is_empty());
    let _ = std::fs::remove_dir_all(root);
}

#[test]
fn every_bad_image_of_a_folder_task_is_reported_at_once() {
    let root = tmp("folder");
    for (class, shade) in [("dark", 20u8), ("light", 230)] {
        let sub = root.join("task").join(class);
        std::fs::create_dir_all(&sub).unwrap();
        for i in 0..4 {
            image::RgbImage::from_pixel(8, 8, image::Rgb([shade, shade, i * 9]))
                .save(sub.join(format!("{i}.png")))
                .unwrap();
        }
    }
    std::fs::write(root.join("task/dark/broken.png"), b"not a png").unwrap();
    std::fs::write(root.join("task/light/empty.jpg"), b"").unwrap();
    let task = format!("folder:{}", root.join("task").display());
    let o = run(bin().args(["--runs-dir", root.join("runs").to_str().unwrap(), "train", "--task", &task]).args(TINY));
    assert_one_line_error(&o, "2 of 10 images");
    assert!(stderr(&o).contains("broken.png") && stderr(&o).contains("empty.jpg"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(root);
}

/// `bytes` truncated at a random point or with one random bit flipped.
fn mutate(bytes: &[u8], rng: &mut rand_chacha::ChaCha8Rng) -> Vec<u8> {
    let mut out = bytes.to_vec();
    if rng.random_bool(0.5) {
        out.truncate(rng.random_range(0..bytes.len()));
    } else {
        let i = rng.random_range(0..bytes.len());
        out[i] ^= 1 << rng.random_range(0..8);
    }
    out
}

#[test]
fn damaged_files_and_random_flags_never_panic() {
    let root = tmp("fuzz");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
    // Adapter safetensors.
    let ad = root.join("adapter");
    peft::save(&adapter_on(3, TargetModule::Value, 2, 32, 32), &ad, "builtin").unwrap();
    let weights = std::fs::read(ad.join(peft::WEIGHTS_FILE)).unwrap();
    for i in 0..12 {
        std::fs::write(ad.join(peft::WEIGHTS_FILE), mutate(&weights, &mut rng)).unwrap();
        let o = run(bin().args(["eval", "--adapter", ad.to_str().unwrap()]).args(TINY));
        assert_no_panic(&o, &format!("adapter mutation {i}"));
    }
    // Backbone safetensors.
    let bb = root.join("backbone");
    assert!(run(bin().args(["export-backbone", "--out", bb.to_str().unwrap()])).status.success());
    let model = std::fs::read(bb.join("model.safetensors")).unwrap();
    for i in 0..6 {
        std::fs::write(bb.join("model.safetensors"), mutate(&model, &mut rng)).unwrap();
        let o = run(bin().args(["--backbone", bb.to_str().unwrap(), "eval"]).args(TINY));
        assert_no_panic(&o, &format!("backbone mutation {i}"));
    }
    // IDX files.
    let idx = root.join("idx");
    write_idx_task(&idx, 2, 0);
    let names =
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];
    let task = format!("idx:{}", idx.display());
    for i in 0..8 {
        let name = names[i % names.len()];
        let original = std::fs::read(idx.join(name)).unwrap();
        std::fs::write(idx.join(name), mutate(&original, &mut rng)).unwrap();
        let o =
            run(bin().args(["--runs-dir", root.join("runs").to_str().unwrap(), "eval", "--task", &task]).args(TINY));
        assert_no_panic(&o, &format!("IDX mutation {i} of {name}"));
        std::fs::write(idx.join(name), original).unwrap();
    }
    // PNG files of a folder task.
    let png_dir = root.join("png");
    for class in ["a", "b"] {
        std::fs::create_dir_all(png_dir.join(class)).unwrap();
        for i in 0..3u8 {
            let img = image::RgbImage::from_pixel(6, 6, image::Rgb([i * 40, 90, 200]));
            img.save(png_dir.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
    let png = std::fs::read(png_dir.join("a/0.png")).unwrap();
    let task = format!("folder:{}", png_dir.display());
    for i in 0..8 {
        std::fs::write(png_dir.join("a/0.png"), mutate(&png, &mut rng)).unwrap();
        let o = run(bin().args(["eval", "--task", &task, "--shots", "2", "--test-size", "4"]));
        assert_no_panic(&o, &format!("PNG mutation {i}"));
    }
    // Random flag values on `eval` (which parses and validates every training flag).
    let flags = [
        "--lr",
        "--rank",
        "--alpha",
        "--shots",
        "--test-size",
        "--dropout",
        "--p0",
        "--batch-size",
        "--logit-scale",
        "--targets",
        "--data-seed",
    ];
    let values = [
        "0",
        "-1",
        "nan",
        "inf",
        "-inf",
        "1e308",
        "abc",
        "",
        "18446744073709551616",
        "0.5",
        "3",
        "q,zz",
        ",",
        "1e-320",
    ];
    for i in 0..30 {
        let mut cmd = bin();
        cmd.args(["eval", "--steps", "2"]);
        let mut used = Vec::new();
        for _ in 0..rng.random_range(1..4) {
            let f = flags[rng.random_range(0..flags.len())];
            if !used.contains(&f) {
                used.push(f);
                cmd.args([f, values[rng.random_range(0..values.len())]]);
            }
        }
        if !used.contains(&"--test-size") {
            cmd.args(["--test-size", "20"]);
        }
        if !used.contains(&"--shots") {
            cmd.args(["--shots", "1"]);
        }
        let o = run(&mut cmd);
        assert_no_panic(&o, &format!("random flags {i}: {cmd:?}"));
    }
    let _ = std::fs::remove_dir_all(root);
}

/// A small analysis grid for the kill test: 2 variants × 4 seeds on one task, 30 steps.
const KILL_SPEC: &str = r#"
name = "kill"
question = "Does analyze survive kill -9?"
baseline = "lora"
seeds = [1, 2, 3, 4]
tasks = ["lighting"]

[base]
steps = 30
shots = 2
test_size = 40
batch_size = 8

[[variant]]
name = "lora"
method = "lora"

[[variant]]
name = "copra"
method = "copra"

[measure.merge]
weights = [[1, 1]]
spaces = ["factor"]
"#;

#[test]
fn analyze_killed_midway_resumes_to_the_same_tables() {
    let root = tmp("kill");
    let spec = root.join("kill.toml");
    std::fs::write(&spec, KILL_SPEC).unwrap();
    let measurements = |dir: &Path| {
        let df = copra_lab::report::table::Table::read_parquet(&dir.join("measurements.parquet")).unwrap();
        copra_lab::study::measure::Measurement::from_frame(&df)
            .unwrap()
            .into_iter()
            .map(|m| {
                format!("{} {} {} {} {} {}", m.cell, m.measure, m.setting, m.metric, m.replicate, m.value.to_bits())
            })
            .collect::<Vec<_>>()
    };
    // Uninterrupted, with its own run cache.
    let whole = root.join("whole");
    let o = run(bin()
        .args(["--runs-dir", root.join("runs-a").to_str().unwrap(), "analyze", spec.to_str().unwrap(), "--out"])
        .arg(&whole));
    assert!(o.status.success(), "{}", stderr(&o));
    // Killed with SIGKILL once some cells exist, then resumed, with a fresh run cache.
    let killed = root.join("killed");
    let runs_b = root.join("runs-b");
    let mut child = bin()
        .args(["--runs-dir", runs_b.to_str().unwrap(), "analyze", spec.to_str().unwrap(), "--out"])
        .arg(&killed)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let cells = killed.join("cells");
    let started = std::time::Instant::now();
    while started.elapsed().as_secs() < 120 {
        let n = std::fs::read_dir(&cells).map(|d| d.filter(|e| e.is_ok()).count()).unwrap_or(0);
        if n >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());
    assert!(!killed.join("README.md").exists(), "the run finished before it could be killed");
    let o = run(bin()
        .args(["--runs-dir", runs_b.to_str().unwrap(), "analyze", spec.to_str().unwrap(), "--out"])
        .arg(&killed));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("already finished"), "{}", stdout(&o));
    assert_eq!(measurements(&killed), measurements(&whole));
    // `report` rebuilds the same README byte for byte.
    let readme = std::fs::read(killed.join("README.md")).unwrap();
    let o = run(bin().arg("report").arg(&killed));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(killed.join("README.md")).unwrap(), readme);
    // Malformed specs and bad shards are one-line errors.
    std::fs::write(&spec, KILL_SPEC.replace("steps = 30", "stepz = 30")).unwrap();
    let o = run(bin().args(["analyze", spec.to_str().unwrap()]));
    assert_one_line_error(&o, "unknown field `stepz`");
    std::fs::write(&spec, KILL_SPEC).unwrap();
    let o = run(bin().args(["analyze", spec.to_str().unwrap(), "--shard", "2/2"]));
    assert_one_line_error(&o, "0 ≤ i < n");
    let o = run(bin().arg("report").arg(root.join("nowhere")));
    assert_one_line_error(&o, "does not exist");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn list_shows_a_tuned_grid_at_its_chosen_values() {
    // Cell ids hash the tuned values: `--list` must read the finished tuning, or every cell of a
    // tuned grid would show as missing even after it ran.
    let root = tmp("list-tuned");
    let spec = root.join("tuned.toml");
    std::fs::write(
        &spec,
        "name = \"tuned\"\nquestion = \"q\"\nbaseline = \"lora\"\nseeds = [1]\ntasks = [\"lighting\"]\n\
         [base]\nsteps = 3\nshots = 2\ntest_size = 12\nbatch_size = 8\n\
         [[variant]]\nname = \"lora\"\nmethod = \"lora\"\n[tune]\nlr = [1e-3, 2e-3]\nseeds = [101]\n",
    )
    .unwrap();
    let out = root.join("out");
    let list = || {
        let o = run(bin().args(["analyze", spec.to_str().unwrap(), "--list", "--out"]).arg(&out));
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let before = list();
    assert!(before.contains("note:") && before.contains("untuned values") && before.contains(" todo "), "{before}");
    let o = run(bin()
        .args(["--runs-dir", root.join("runs").to_str().unwrap(), "analyze", spec.to_str().unwrap(), "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let after = list();
    assert!(!after.contains("note:") && !after.contains(" todo ") && after.contains(" done "), "{after}");
    let _ = std::fs::remove_dir_all(&root);
}
