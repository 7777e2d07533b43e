//! Failure behaviour, round three (issue 25), through the binary: the run cache under
//! concurrent writers and moved folders, adapters of another architecture or with settings
//! copra-lab does not implement, CLIP prompts that would be cut or collide, labels written
//! two ways, size guards before any work, and errors that name the right thing.

mod common;

use common::*;
use copra_lab::adapter::{peft, Adapter, LoraFactors, LoraSpec, ModuleKey, TargetModule};
use copra_lab::linalg::Matrix;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Tiny training settings on the built-in backbone.
const TINY: &[&str] = &["--steps", "4", "--test-size", "8", "--shots", "2"];
/// Quick settings on the tiny BERT and CLIP fixtures.
const SMALL: &[&str] = &["--steps", "4", "--shots", "4", "--test-size", "12", "--batch-size", "6"];

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

fn tiny_bert() -> String {
    fixture("bert-tiny/model").display().to_string()
}

/// A three-class Orange `.tab` file in the BERT fixture tokenizer's vocabulary.
fn write_news(dir: &Path, long: usize) -> PathBuf {
    write_news_named(dir, "news.tab", 14, long)
}

/// [`write_news`] with `per_class` documents per class in `name`; `long` makes the first
/// document about `long` bytes.
fn write_news_named(dir: &Path, name: &str, per_class: usize, long: usize) -> PathBuf {
    let topics = [
        ("sports", "team ball goal win match season player score game"),
        ("space", "orbit launch rocket nasa shuttle planet mission earth moon"),
        ("computer", "disk drive file program code data memory screen software"),
    ];
    let mut s = String::from("Category\tText\nd\tstring\nclass\t\n");
    for i in 0..per_class {
        for (label, words) in topics {
            let w: Vec<&str> = words.split(' ').collect();
            let doc: Vec<&str> = (0..4 + i % 5).map(|j| w[(i * 7 + j * 3) % w.len()]).collect();
            let mut text = format!("the {} and the {}", doc.join(" "), w[i % w.len()]);
            if i == 0 && label == "sports" && long > 0 {
                while text.len() < long {
                    text.push_str(" team ball goal  win\u{3000}match ");
                }
            }
            s.push_str(&format!("{label}\t{text}\n"));
        }
    }
    let path = dir.join(name);
    std::fs::write(&path, s).unwrap();
    path
}

/// A one-module adapter with factors `A` `[r, inp]` and `B` `[out, r]`.
fn adapter_on(block: usize, module: TargetModule, r: usize, inp: usize, out: usize) -> Adapter {
    let a = Matrix::from_vec(r, inp, vec![0.01; r * inp]);
    let b = Matrix::from_vec(out, r, vec![0.01; out * r]);
    let modules = BTreeMap::from([(ModuleKey { block, module }, LoraFactors { a, b })]);
    Adapter { spec: LoraSpec { rank: r, ..LoraSpec::default() }, modules }
}

/// Copies the files of folder `from` into a fresh folder `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Replaces `from` by `to` in `file`.
fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "'{from}' not in {}", file.display());
    std::fs::write(file, text.replace(from, to)).unwrap();
}

/// Item 9: concurrent writers of one run key all succeed and leave one complete run.
#[test]
fn concurrent_trains_of_one_run_all_succeed_and_leave_one_complete_run() {
    let root = tmp("race");
    let runs = root.join("runs");
    for force in [false, true] {
        let children: Vec<_> = (0..8)
            .map(|_| {
                let mut c = bin();
                c.args(["--runs-dir", runs.to_str().unwrap(), "train", "--method", "lora"]).args(TINY);
                if force {
                    c.arg("--force");
                }
                c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
            })
            .collect();
        for child in children {
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "force {force}: {}", stderr(&o));
        }
        let method_dir = runs.join("lighting").join("lora");
        let entries: Vec<String> =
            std::fs::read_dir(&method_dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into()).collect();
        assert_eq!(entries.len(), 1, "force {force}: {entries:?}");
        let dir = method_dir.join(&entries[0]);
        for f in ["manifest.json", "train_log.parquet", peft::WEIGHTS_FILE, peft::CONFIG_FILE] {
            assert!(dir.join(f).is_file(), "force {force}: {f} missing");
        }
        let o = run(bin().args(["--runs-dir", runs.to_str().unwrap(), "train", "--method", "lora"]).args(TINY));
        assert!(stdout(&o).contains("from cache"), "{}", stdout(&o));
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Item 12: a temporary run folder left by a writer that died (`kill -9`) is cleaned up by
/// the next write in its folder; a live writer's is not.
#[test]
fn stale_temporary_run_folders_are_cleaned_and_live_ones_kept() {
    let root = tmp("stale");
    let runs = root.join("runs");
    let method_dir = runs.join("lighting").join("lora");
    std::fs::create_dir_all(&method_dir).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).take(40).collect();
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let stale = method_dir.join(format!(".tmp-seed1-0123456789ab~{host}~{dead}~0"));
    let live = method_dir.join(format!(".tmp-seed2-0123456789ab~{host}~{}~0", std::process::id()));
    for d in [&stale, &live] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("adapter_model.safetensors"), b"half").unwrap();
    }
    let o = run(bin().args(["--runs-dir", runs.to_str().unwrap(), "train", "--method", "lora"]).args(TINY));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stale.exists(), "a dead writer's temporary folder was left behind");
    assert!(live.exists(), "a live writer's temporary folder was removed");
    // Also when every run is reused from the cache (nothing is written).
    std::fs::create_dir_all(&stale).unwrap();
    let o = run(bin().args(["--runs-dir", runs.to_str().unwrap(), "train", "--method", "lora"]).args(TINY));
    assert!(stdout(&o).contains("from cache"), "{}", stdout(&o));
    assert!(!stale.exists(), "a dead writer's temporary folder was left behind by a cached run");
    assert!(live.exists());
    let _ = std::fs::remove_dir_all(root);
}

/// Item 4: a run folder is trusted only when its manifest is the run asked for; a broken
/// link where a run goes fails before training.
#[test]
fn the_run_cache_checks_manifests_not_folder_names() {
    let root = tmp("moved");
    let runs = root.join("runs");
    let r = runs.to_str().unwrap();
    for method in ["lora", "copra"] {
        assert!(run(bin().args(["--runs-dir", r, "train", "--method", method]).args(TINY)).status.success());
    }
    let only =
        |method: &str| std::fs::read_dir(runs.join("lighting").join(method)).unwrap().next().unwrap().unwrap().path();
    let (lora, copra) = (only("lora"), only("copra"));
    // A LoRA run placed under the CopRA key.
    std::fs::remove_dir_all(&copra).unwrap();
    copy_dir(&lora, &copra);
    let o = run(bin().args(["--runs-dir", r, "train", "--method", "copra"]).args(TINY));
    assert_one_line_error(&o, "holds another run");
    assert!(stderr(&o).contains("method") && stderr(&o).contains("lora"), "{}", stderr(&o));
    // A broken symbolic link where the run goes: refused before training, naming the link.
    std::fs::remove_dir_all(&copra).unwrap();
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("nowhere"), &copra).unwrap();
        let o = run(bin().args(["--runs-dir", r, "train", "--method", "copra"]).args(TINY));
        assert_one_line_error(&o, "is a broken symbolic link");
        assert!(stderr(&o).contains(copra.to_str().unwrap()), "{}", stderr(&o));
        assert!(files_named(&runs, ".tmp-").is_empty());
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Item 12: settings a backbone ignores do not change the run's key (no retraining).
#[test]
fn settings_a_vit_ignores_reuse_the_run() {
    let root = tmp("ignored");
    let r = root.to_str().unwrap();
    let o = run(bin().args(["--runs-dir", r, "train"]).args(TINY));
    assert!(stdout(&o).contains("trained now"), "{}", stderr(&o));
    for extra in [
        &["--prompt-template", "a drawing of {}"][..],
        &["--grouping", "layer"],
        &["--max-length", "64"],
        &["--prompt-template", "x {}", "--grouping", "layer"],
    ] {
        let o = run(bin().args(["--runs-dir", r, "train"]).args(TINY).args(extra));
        assert!(stdout(&o).contains("from cache"), "{extra:?} retrained: {}{}", stdout(&o), stderr(&o));
    }
    // A setting that matters still trains a new run.
    let o = run(bin().args(["--runs-dir", r, "train", "--grouping", "module"]).args(TINY));
    assert!(stdout(&o).contains("trained now"), "{}", stdout(&o));
    // LoRA never reads p0 or stage1_ratio (p is 1 throughout); CopRA does.
    let lora = |extra: &[&str]| run(bin().args(["--runs-dir", r, "train", "--method", "lora"]).args(TINY).args(extra));
    assert!(stdout(&lora(&[])).contains("trained now"));
    assert!(stdout(&lora(&["--p0", "0.3"])).contains("from cache"), "p0 changed a LoRA run's key");
    let o = run(bin().args(["--runs-dir", r, "train", "--p0", "0.3"]).args(TINY));
    assert!(stdout(&o).contains("trained now"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(root);
}

/// Items 2 and 3: adapters are read in their own architecture's layout and refused on another.
#[test]
fn adapters_are_matched_to_the_backbone_architecture() {
    let root = tmp("arch");
    let bert_adapter = fixture("bert-tiny/adapter");
    let clip_adapter = fixture("clip-tiny/adapter");
    let shapes = format!("folder:{}", write_shape_folder(&root, 6).display());
    let news = format!("tab:{}", write_news(&root, 0).display());
    let eval = |backbone: &str, task: &str, adapter: &Path| {
        run(bin()
            .args(["--backbone", backbone, "--runs-dir", root.join("runs").to_str().unwrap(), "eval", "--task", task])
            .arg("--adapter")
            .arg(adapter)
            .args(SMALL))
    };
    // A BertModel adapter whose shapes fit the built-in ViT (32 wide, 64 MLP, 3 of 12 blocks).
    let o = eval("builtin", "lighting", &bert_adapter);
    assert_one_line_error(&o, "made for a BertModel");
    // ... and on CLIP.
    assert_one_line_error(&eval(&tiny_clip(), &shapes, &bert_adapter), "made for a BertModel");
    // A CLIP adapter evaluates on CLIP (it was refused: read with the ViT layout) ...
    let o = eval(&tiny_clip(), &shapes, &clip_adapter);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("adapter "), "{}", stdout(&o));
    let o = eval(&tiny_clip(), &shapes, &fixture("clip-tiny/adapter-vision-qkv"));
    assert!(o.status.success(), "{}", stderr(&o));
    // ... and is refused on ViT and BERT.
    assert_one_line_error(&eval("builtin", "lighting", &clip_adapter), "made for a CLIPModel");
    assert_one_line_error(&eval(&tiny_bert(), &news, &clip_adapter), "made for a CLIPModel");
    // A ViT adapter on BERT.
    let vit = root.join("vit-adapter");
    peft::save(&adapter_on(0, TargetModule::Query, 2, 32, 32), &vit, "builtin").unwrap();
    assert_one_line_error(&eval(&tiny_bert(), &news, &vit), "made for a ViTModel");
    // The BERT adapter evaluates on BERT; its errors quote the file's own tensor keys.
    let o = eval(&tiny_bert(), &news, &bert_adapter);
    assert!(o.status.success(), "{}", stderr(&o));
    let edited = root.join("bert-rank");
    copy_dir(&bert_adapter, &edited);
    edit(&edited.join(peft::CONFIG_FILE), "\"r\": 2", "\"r\": 3");
    let o = eval(&tiny_bert(), &news, &edited);
    assert_one_line_error(&o, "'base_model.model.encoder.layer.0.attention.self.query.lora_A.weight' has rank 2");
    // Run folders copra-lab wrote evaluate on their own backbone: a one-tower CLIP run (its
    // target_modules is a regular expression) and a BERT run of the MLP output without the
    // attention output (also a regular expression).
    let runs = root.join("runs");
    for (backbone, task, targets) in [(tiny_clip(), shapes.as_str(), "q,v,fc1"), (tiny_bert(), news.as_str(), "q,fc2")]
    {
        let mut extra = vec!["--targets", targets, "--method", "lora"];
        if backbone == tiny_clip() {
            extra.extend(["--encoder", "vision"]);
        }
        let o = run(bin()
            .args(["--backbone", &backbone, "--runs-dir", runs.to_str().unwrap(), "train", "--task", task])
            .args(&extra)
            .args(SMALL));
        assert!(o.status.success(), "{}", stderr(&o));
        let dir = stdout(&o).lines().find_map(|l| l.trim().strip_prefix("run: ").map(PathBuf::from)).unwrap();
        let o = eval(&backbone, task, &dir);
        assert!(o.status.success(), "{targets}: {}", stderr(&o));
    }
    // A file where the adapter folder goes.
    let o = eval("builtin", "lighting", &edited.join(peft::CONFIG_FILE));
    assert_one_line_error(&o, "is a file, not an adapter folder");
    let _ = std::fs::remove_dir_all(root);
}

/// Item 7: PEFT settings that change what the weights mean are refused, naming the key.
#[test]
fn peft_settings_copra_lab_does_not_implement_are_refused() {
    let root = tmp("peftkeys");
    let news = format!("tab:{}", write_news(&root, 0).display());
    let bert_adapter = fixture("bert-tiny/adapter");
    for (i, (from, to, needle)) in [
        ("\"use_dora\": false", "\"use_dora\": true", "use_dora"),
        ("\"fan_in_fan_out\": false", "\"fan_in_fan_out\": true", "fan_in_fan_out"),
        ("\"bias\": \"none\"", "\"bias\": \"all\"", "bias"),
        ("\"modules_to_save\": null", "\"modules_to_save\": [\"pooler\"]", "modules_to_save"),
        ("\"layers_to_transform\": null", "\"layers_to_transform\": [0, 1]", "layers_to_transform"),
        (
            "\"layers_pattern\": null,\n  \"layers_to_transform\": null",
            "\"layers_pattern\": \"blocks\",\n  \"layers_to_transform\": [0, 1, 2]",
            "layers_pattern",
        ),
        ("\"value\"\n", "\"value\", \"word_embeddings\"\n", "'word_embeddings'"),
        ("\"dense\",\n", "", "target_modules does not select"),
        ("\"use_rslora\": false", "\"use_rslora\": false, \"alpha_pattern\": {\"query\": 8}", "alpha_pattern"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = root.join(format!("adapter{i}"));
        copy_dir(&bert_adapter, &dir);
        edit(&dir.join(peft::CONFIG_FILE), from, to);
        let o = run(bin()
            .args(["--backbone", &tiny_bert(), "--runs-dir", root.join("runs").to_str().unwrap(), "eval"])
            .args(["--task", &news, "--adapter", dir.to_str().unwrap()])
            .args(SMALL));
        assert_one_line_error(&o, needle);
    }
    let _ = std::fs::remove_dir_all(root);
}

/// Item 6: CLIP prompts longer than the text tower reads, or two classes with one prompt.
#[test]
fn clip_prompts_that_would_be_cut_or_collide_are_refused() {
    let root = tmp("prompts");
    let shapes = write_shape_folder(&root, 6);
    let task = format!("folder:{}", shapes.display());
    let train = |extra: &[&str]| {
        run(bin()
            .args(["--backbone", &tiny_clip(), "--runs-dir", root.join("runs").to_str().unwrap(), "train"])
            .args(["--task", &task, "--method", "lora"])
            .args(SMALL)
            .args(extra))
    };
    // The tiny CLIP's text tower reads 16 positions; this template alone is longer.
    let long = "a photo of a {} which is a very small and rather simple shape drawn on grey";
    let o = train(&["--prompt-template", long]);
    assert_one_line_error(&o, "more than 16 tokens");
    assert!(files_named(&root.join("runs"), "manifest.json").is_empty());
    // Class folders that differ only by '_' versus a space, or by case.
    for twin in ["red square", "Red_Square"] {
        copy_dir(&shapes.join("red_square"), &shapes.join(twin));
        let o = train(&[]);
        assert_one_line_error(&o, "tokenize the same");
        assert!(stderr(&o).contains("red square"), "{}", stderr(&o));
        std::fs::remove_dir_all(shapes.join(twin)).unwrap();
    }
    let o = train(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(root);
}

/// Item 7: JSON-lines labels written two ways (1, 1.0, "1") or null are refused; so are CSV
/// labels that are one number written two ways.
#[test]
fn labels_written_two_ways_or_null_are_refused() {
    let root = tmp("labels");
    let words = ["team ball goal win", "orbit launch rocket moon", "disk drive file code"];
    let jsonl = |labels: &[&str]| {
        let mut s = String::new();
        for i in 0..60 {
            let label = labels[i % labels.len()];
            s.push_str(&format!("{{\"label\": {label}, \"text\": \"the {} {i}\"}}\n", words[i % words.len()]));
        }
        s
    };
    let train = |file: &Path| {
        run(bin()
            .args(["--backbone", &tiny_bert(), "--runs-dir", root.join("runs").to_str().unwrap(), "train"])
            .args(["--task", &format!("text:{}", file.display())])
            .args(SMALL))
    };
    let cases: [(&[&str], &str); 4] = [
        (&["1", "1.0", "2"], "write every label one way"),
        (&["1", "\"1\"", "2"], "write every label one way"),
        (&["1", "null", "2"], "null label"),
        (&["1", "[1]", "2"], "must be a string or a number"),
    ];
    for (labels, needle) in cases {
        let f = root.join("data.jsonl");
        std::fs::write(&f, jsonl(labels)).unwrap();
        assert_one_line_error(&train(&f), needle);
    }
    let f = root.join("data.csv");
    let mut csv = String::from("label,text\n");
    for i in 0..60 {
        csv.push_str(&format!("{},the {} {i}\n", ["1", "1.0", "2"][i % 3], words[i % 3]));
    }
    std::fs::write(&f, csv).unwrap();
    assert_one_line_error(&train(&f), "same number written two ways");
    // One way throughout trains.
    let f = root.join("good.jsonl");
    std::fs::write(&f, jsonl(&["\"a\"", "\"b\"", "\"c\""])).unwrap();
    let o = train(&f);
    assert!(o.status.success(), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(root);
}

/// Item 10: pretrain and prune ask for --yes (or refuse what memory cannot hold) before any work.
#[test]
fn pretrain_and_prune_are_bounded_before_any_work() {
    let root = tmp("guards");
    let out = root.join("bb");
    let o = run(bin().args(["pretrain", "--hidden-size", "1000000", "--out", out.to_str().unwrap()]));
    assert_one_line_error(&o, "GB of memory");
    let o = run(bin().args(["pretrain", "--hidden-size", "1000000", "--yes", "--out", out.to_str().unwrap()]));
    assert_one_line_error(&o, "GB of memory");
    let o = run(bin().args(["pretrain", "--layers", "100000000", "--out", out.to_str().unwrap()]));
    assert_one_line_error(&o, "GB of memory");
    let o = run(bin().args(["pretrain", "--layers", "400", "--out", out.to_str().unwrap()]));
    assert_one_line_error(&o, "--yes");
    let o = run(bin().args(["pretrain", "--steps", "1000000", "--out", out.to_str().unwrap()]));
    assert_one_line_error(&o, "--yes");
    let o = run(bin().args(["pretrain", "--hidden-size", "30", "--out", out.to_str().unwrap()]));
    assert_one_line_error(&o, "--hidden-size 30");
    assert!(!out.exists(), "pretrain wrote its output before the checks");
    let r = root.join("runs");
    let o = run(bin()
        .args(["--runs-dir", r.to_str().unwrap(), "prune", "--random-orders", "1000000000", "--out"])
        .arg(root.join("prune"))
        .args(TINY));
    assert_one_line_error(&o, "--random-orders");
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    // shapley --budget below one sample: refused before training.
    let o = run(bin()
        .args(["--runs-dir", r.to_str().unwrap(), "shapley", "--budget", "1", "--out"])
        .arg(root.join("shap"))
        .args(TINY));
    assert_one_line_error(&o, "--budget 1");
    // A product of flags that wrapped around (usize) to a tiny estimate passed the guard and ran
    // 4.6e15 rounds; bench and shapley-bench had no guard.
    let o = run_for(
        bin()
            .args(["--runs-dir", r.to_str().unwrap(), "federated", "--rounds", "4611686018427388", "--out"])
            .arg(root.join("fed")),
        60,
    );
    assert_one_line_error(&o, "--yes");
    let o =
        run_for(bin().args(["--runs-dir", r.to_str().unwrap(), "bench", "train", "--bench-steps", "100000000"]), 60);
    assert_one_line_error(&o, "--bench-steps");
    let o = run_for(bin().args(["shapley-bench", "--table", "none.parquet", "--seeds", "1000000000"]), 60);
    assert_one_line_error(&o, "--yes");
    assert!(files_named(&root, "manifest.json").is_empty(), "work started before the checks");
    let _ = std::fs::remove_dir_all(root);
}

/// Runs a command, killing it (and failing) after `seconds`.
fn run_for(cmd: &mut Command, seconds: u64) -> std::process::Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed().as_secs() > seconds {
            child.kill().unwrap();
            panic!("{cmd:?} still ran after {seconds} s: the guard did not stop it");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Item 11: a path of the wrong kind is named as such, not as missing; `tasks --preview`
/// names its path.
#[test]
fn paths_of_the_wrong_kind_are_named_as_such() {
    let root = tmp("kinds");
    let file = root.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let f = file.to_str().unwrap();
    let r = root.join("runs");
    let train = |args: &[&str]| run(bin().args(["--runs-dir", r.to_str().unwrap()]).args(args).args(TINY));
    let o = train(&["train", "--task", &format!("folder:{f}")]);
    assert_one_line_error(&o, "is a file, not a folder");
    let o = train(&["train", "--task", &format!("idx:{f}")]);
    assert_one_line_error(&o, "is a file, not a folder");
    let o = train(&["--backbone", f, "train"]);
    assert_one_line_error(&o, "is a file, not a folder");
    let o = train(&["--backbone", &tiny_bert(), "train", "--task", &format!("text:{}", root.display())]);
    assert_one_line_error(&o, "is a folder, not a file");
    let o = run(bin().args(["tasks", "--task", "lighting", "--preview", f]));
    assert_one_line_error(&o, f);
    // An analysis spec that is a folder, and a report folder that is a file.
    let o = run(bin().args(["analyze", root.to_str().unwrap()]));
    assert_one_line_error(&o, "is a folder, not a file");
    let o = run(bin().args(["report", f]));
    assert_one_line_error(&o, "is a file, not a folder");
    // A broken symbolic link as the runs directory.
    #[cfg(unix)]
    {
        let link = root.join("runs-link");
        std::os::unix::fs::symlink(root.join("gone"), &link).unwrap();
        let o = run(bin().args(["--runs-dir", link.to_str().unwrap(), "train"]).args(TINY));
        assert_one_line_error(&o, "is a broken symbolic link");
    }
    // A backbone folder whose model.safetensors is a folder.
    let bb = root.join("bert");
    copy_dir(Path::new(&tiny_bert()), &bb);
    std::fs::remove_file(bb.join("model.safetensors")).unwrap();
    std::fs::create_dir_all(bb.join("model.safetensors")).unwrap();
    let o = train(&["--backbone", bb.to_str().unwrap(), "eval"]);
    assert_one_line_error(&o, "is a folder, not a file");
    let _ = std::fs::remove_dir_all(root);
}

/// Item 11: a full disk is named as such, never blamed on the values or the Parquet encoder.
/// Needs root to mount a tiny tmpfs; skipped otherwise.
#[test]
fn a_full_disk_is_named_in_every_write() {
    let root = tmp("diskfull");
    let mnt = root.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let mut checked = 0;
    for kib in (8..=96).step_by(4) {
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(&mnt)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: cannot mount a tmpfs (needs root)");
            break;
        }
        let o = run(bin().args(["--runs-dir", mnt.to_str().unwrap(), "train", "--method", "lora"]).args(TINY));
        let _ = Command::new("umount").arg(&mnt).status();
        checked += 1;
        if o.status.success() {
            continue;
        }
        let err = stderr(&o);
        assert_one_line_error(&o, "");
        assert!(
            (err.contains("No space left on device") || err.contains("disk is full"))
                && !err.contains("column values")
                && !err.contains("thrift"),
            "{kib} KiB: {err}"
        );
    }
    eprintln!("checked {checked} disk sizes");
    let _ = std::fs::remove_dir_all(root);
}

/// Item 12: a 12 MB document is cut before tokenizing (the peak memory stays small), with
/// the tokens a whole-text tokenization gives.
#[test]
fn a_huge_document_is_cut_before_tokenizing() {
    let root = tmp("huge");
    // A test file small enough that every document is sampled (and tokenized).
    write_news_named(&root, "news-test.tab", 3, 12_000_000);
    let task = format!("tab:{}", write_news_named(&root, "news-train.tab", 14, 0).display());
    let mut child = bin()
        .args(["--backbone", &tiny_bert(), "--runs-dir", root.join("runs").to_str().unwrap(), "train"])
        .args(["--task", &task, "--max-length", "64"])
        .args(SMALL)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = PathBuf::from(format!("/proc/{}/status", child.id()));
    let mut peak_kib = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(v) = s.lines().find(|l| l.starts_with("VmHWM:")) {
                peak_kib = peak_kib.max(v.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0));
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    eprintln!("peak resident memory {} MiB", peak_kib / 1024);
    assert!(peak_kib < 400 * 1024, "peak resident memory {} MiB", peak_kib / 1024);
    let _ = std::fs::remove_dir_all(root);
}
