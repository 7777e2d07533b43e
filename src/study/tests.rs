use super::*;
use crate::report::table::Table;

/// A grid small enough for the test suite: 2 variants × 2 tasks × 3 seeds, 4 steps each.
const TINY: &str = r#"
name = "tiny"
question = "Does the pipeline run?"
baseline = "lora"
seeds = [1, 2, 3]
tasks = ["lighting", "hue"]

[base]
steps = 4
shots = 2
test_size = 24
batch_size = 8

[[variant]]
name = "lora"
method = "lora"

[[variant]]
name = "copra"
method = "copra"
p0 = 0.1

[measure.prune]
structures = ["every-other-odd"]

[measure.merge]
weights = [[1, 1], [1, 1, 1]]

[measure.barrier]
points = 3

[measure.multitask]
operators = ["factor"]

[measure.curves]
every = 2

[measure.multilinear]
p = [0.5]
samples = 2

[measure.trajectory]
variants = ["copra"]
fractions = [0.5, 1.0]
samples = 2
budget = 24

[report]
matched_fit = ["prune/every-other-odd/accuracy"]

[[report.primary]]
claim = "two CopRA seeds merge better than two LoRA seeds"
quantity = "merge/factor 1:1/accuracy"
variant = "copra"
expect = "higher"

[[report.primary]]
claim = "CopRA is as accurate on hue"
quantity = "accuracy//test_accuracy"
variant = "copra"
expect = "lower"
tasks = ["hue"]

[[report.primary]]
claim = "two LoRA seeds merge better than two CopRA seeds"
quantity = "merge/factor 1:1/accuracy"
variant = "lora"
against = "copra"
expect = "higher"
"#;

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("copra-study-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn lab(root: &std::path::Path) -> Lab {
    Lab::open("builtin", &root.join("runs")).unwrap()
}

fn frame(dir: &std::path::Path, name: &str) -> polars::prelude::DataFrame {
    Table::read_parquet(&dir.join(name)).unwrap()
}

/// The primary tests of the tiny grid recomputed by hand from `measurements.parquet`: pooled
/// over tasks per group of seeds, averaged over every pair, the delete-one-seed jackknife.
fn check_primary_by_hand(dir: &std::path::Path) {
    let m = frame(dir, "measurements.parquet");
    let col = |n: &str| -> Vec<String> {
        m.column(n).unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect()
    };
    let (measure, setting, metric, variant, seeds) =
        (col("measure"), col("setting"), col("metric"), col("variant"), col("seeds"));
    let value: Vec<f64> = m.column("value").unwrap().f64().unwrap().iter().map(|v| v.unwrap()).collect();
    // Per pair of seeds: the copra − lora difference, mean over the two tasks.
    let mut by_pair: std::collections::BTreeMap<String, f64> = Default::default();
    for i in 0..value.len() {
        if measure[i] == "merge" && setting[i] == "factor 1:1" && metric[i] == "accuracy" {
            let sign = if variant[i] == "copra" { 1.0 } else { -1.0 };
            *by_pair.entry(seeds[i].clone()).or_default() += sign * value[i] / 2.0;
        }
    }
    assert_eq!(by_pair.keys().cloned().collect::<Vec<_>>(), ["1+2", "1+3", "2+3"]);
    let d: Vec<f64> = by_pair.values().copied().collect();
    let mean = d.iter().sum::<f64>() / 3.0;
    // Deleting seed 1 leaves pair (2,3), seed 2 leaves (1,3), seed 3 leaves (1,2).
    let left = [d[2], d[1], d[0]];
    let centre = left.iter().sum::<f64>() / 3.0;
    let se = (2.0 / 3.0 * left.iter().map(|t| (t - centre).powi(2)).sum::<f64>()).sqrt();
    let p = frame(dir, "primary.parquet");
    let get = |n: &str| p.column(n).unwrap().f64().unwrap().get(0).unwrap();
    assert!((get("mean_diff") - mean).abs() < 1e-12, "{} vs {mean}", get("mean_diff"));
    assert!((get("se") - se).abs() < 1e-12 || (se == 0.0 && get("se") == 0.0), "{} vs {se}", get("se"));
    assert_eq!(p.column("tasks").unwrap().str().unwrap().get(0), Some("lighting,hue"));
    assert_eq!(p.column("tasks").unwrap().str().unwrap().get(1), Some("hue"));
    assert_eq!(p.column("k").unwrap().i64().unwrap().get(0), Some(2));
    assert_eq!(p.column("groups").unwrap().i64().unwrap().get(0), Some(3));
    // The third test swaps the two variants (`against`): the same differences, negated.
    let mean_of = |i: usize| p.column("mean_diff").unwrap().f64().unwrap().get(i).unwrap();
    assert!((mean_of(2) + mean).abs() < 1e-12, "{} vs {}", mean_of(2), -mean);
    let base: Vec<Option<&str>> = p.column("baseline").unwrap().str().unwrap().iter().collect();
    assert_eq!(base, [Some("lora"), Some("lora"), Some("copra")]);
    // Holm over the three primary tests: sorted p, (m − rank)·p, running maximum, capped at 1.
    let (raw, adj) = (p.column("p_value").unwrap().f64().unwrap(), p.column("p_holm").unwrap().f64().unwrap());
    let raw: Vec<f64> = (0..3).map(|i| raw.get(i).unwrap()).collect();
    if raw.iter().all(|r| r.is_finite()) {
        let mut order: Vec<usize> = (0..3).collect();
        order.sort_by(|&a, &b| raw[a].total_cmp(&raw[b]));
        let mut running: f64 = 0.0;
        for (rank, &i) in order.iter().enumerate() {
            running = running.max(((3 - rank) as f64 * raw[i]).min(1.0));
            assert!((adj.get(i).unwrap() - running).abs() < 1e-12, "test {i}");
        }
    }
    // The summary of a merge uses every pair; a single run's accuracy, the t over seeds.
    let s = frame(dir, "summary.parquet");
    let methods: Vec<String> =
        s.column("method").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect();
    assert!(
        methods.iter().any(|x| x == "seed jackknife over all groups") && methods.iter().any(|x| x == "t over seeds")
    );
}

#[test]
fn tiny_grid_end_to_end_shards_resume_and_report_reproduce() {
    let root = scratch("e2e");
    let lab = lab(&root);
    let spec = Spec::parse(TINY).unwrap();
    let all = cells(&spec).unwrap();
    // 2 variants × (3 seeds × 2 tasks runs + 2 tasks × (3 pairs + 1 triple) + 3 multitask), +
    // copra's 3 × 2 trajectories.
    assert_eq!(all.len(), 2 * (3 * 2 + 2 * 4 + 3) + 3 * 2);
    // Cell ids are unique and stable.
    let mut ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
    assert_eq!(cells(&spec).unwrap()[7].id, all[7].id);

    // Uninterrupted run.
    let whole = root.join("whole");
    let s = analyze(&lab, &spec, &whole, Shard::default(), &Progress::hidden()).unwrap();
    assert_eq!((s.ran, s.skipped, s.missing), (all.len(), 0, 0));
    let readme = std::fs::read_to_string(s.report.unwrap()).unwrap();
    assert!(readme.contains("## Exploratory: every variant against `lora` per task"), "{readme}");
    assert!(readme.contains("two CopRA seeds merge better than two LoRA seeds"), "{readme}");
    check_primary_by_hand(&whole);
    // Matched fit: one regression (copra against lora) over 2 variants × 3 seeds × 2 tasks.
    let mf = frame(&whole, "matched_fit.parquet");
    assert_eq!((mf.height(), mf.column("rows").unwrap().i64().unwrap().get(0)), (1, Some(12)));
    assert!(readme.contains("## At matched fit"), "{readme}");
    assert!(readme.contains("fig-curves.svg"));
    let m = frame(&whole, "measurements.parquet");
    let metrics: Vec<String> =
        m.column("metric").unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect();
    for want in ["test_accuracy", "share_of_gain", "loss_barrier", "normalized_accuracy", "gap", "block03_se"] {
        assert!(metrics.iter().any(|x| x == want), "missing metric {want}");
    }
    check_predictions(&whole, &m);
    // report on the tables alone gives the same README, byte for byte, and the same tables.
    let before = std::fs::read(whole.join("README.md")).unwrap();
    let summary_before = frame(&whole, "summary.parquet");
    report::write_report(&whole).unwrap();
    assert_eq!(std::fs::read(whole.join("README.md")).unwrap(), before);
    assert!(frame(&whole, "summary.parquet").equals_missing(&summary_before));

    // Two shards into another folder: the first leaves the grid incomplete, the second
    // completes it and writes the same measurement tables.
    let sharded = root.join("sharded");
    let s0 = analyze(&lab, &spec, &sharded, Shard::parse("0/2").unwrap(), &Progress::hidden()).unwrap();
    assert!(s0.report.is_none() && s0.missing > 0);
    assert!(report::write_report(&sharded).unwrap_err().to_string().contains("not finished"));
    let s1 = analyze(&lab, &spec, &sharded, Shard::parse("1/2").unwrap(), &Progress::hidden()).unwrap();
    assert_eq!(s0.ran + s1.ran, all.len());
    assert!(s1.report.is_some());
    assert!(frame(&sharded, "measurements.parquet").equals_missing(&m));
    assert!(frame(&sharded, "paired.parquet").equals_missing(&frame(&whole, "paired.parquet")));
    assert!(frame(&sharded, "predictions.parquet").equals_missing(&frame(&whole, "predictions.parquet")));
    assert!(frame(&sharded, "items.parquet").equals_missing(&frame(&whole, "items.parquet")));

    // A crash: some cells lost, a half-written temporary left behind. Rerunning redoes exactly
    // the lost cells and gives the same tables.
    for c in all.iter().step_by(4) {
        std::fs::remove_dir_all(store::cell_dir(&whole, &c.id)).unwrap();
    }
    std::fs::create_dir_all(whole.join("cells").join(".tmp-half-written-1")).unwrap();
    let again = analyze(&lab, &spec, &whole, Shard::default(), &Progress::hidden()).unwrap();
    assert_eq!(again.ran, all.len().div_ceil(4));
    assert!(frame(&whole, "measurements.parquet").equals_missing(&m));
    // A folder of one backbone refuses cells of another.
    std::fs::write(whole.join("backbone.txt"), "other 0123\n").unwrap();
    let err = analyze(&lab, &spec, &whole, Shard::default(), &Progress::hidden()).unwrap_err().to_string();
    assert!(err.contains("pass another --out"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}

/// The per-example predictions of the TINY grid (data drawn per replicate): every evaluated
/// model kind is there with 24 rows per model, each run's endpoint rows agree with its test
/// accuracy and lie on its own draw, group cells lie on the fixed draw, and `items.parquet`
/// has seeds-level intervals for the runs and seeds × items ones for the pairs.
fn check_predictions(dir: &std::path::Path, m: &polars::prelude::DataFrame) {
    use super::measure::{Measurement, Prediction};
    let preds = Prediction::from_frame(&frame(dir, "predictions.parquet")).unwrap();
    let kinds: std::collections::BTreeSet<&str> = preds.iter().map(|p| p.evaluated.as_str()).collect();
    for want in [
        "endpoint",
        "prune every-other-odd",
        "merge factor 1:1",
        "merge delta 1:1:1",
        "barrier factor alpha=0.5",
        "multitask factor",
    ] {
        assert!(kinds.contains(want), "no predictions of {want}: {kinds:?}");
    }
    for row in Measurement::from_frame(m).unwrap().iter().filter(|r| r.metric == "test_accuracy") {
        let mine: Vec<&Prediction> = preds.iter().filter(|p| p.cell == row.cell && p.evaluated == "endpoint").collect();
        assert_eq!(mine.len(), 24, "{}", row.cell);
        assert!(mine.iter().all(|p| p.draw == row.replicate && p.correct == (p.label == p.prediction)));
        let acc = mine.iter().filter(|p| p.correct).count() as f64 / 24.0;
        assert!(
            (acc - row.value).abs() < 1e-6,
            "{}: endpoint predictions give {acc}, test_accuracy {}",
            row.cell,
            row.value
        );
        assert!(mine.iter().all(|p| p.loss.is_finite() && p.loss >= 0.0));
    }
    assert!(preds.iter().filter(|p| p.evaluated.starts_with("merge")).all(|p| p.draw == 0), "groups on the fixed draw");
    let items = Table::read_parquet(&dir.join("items.parquet")).unwrap();
    let col = |name: &str| -> Vec<String> {
        items.column(name).unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect()
    };
    let (evaluated, procedure, baseline, note) = (col("evaluated"), col("procedure"), col("baseline"), col("note"));
    let at = |e: &str, b: &str| (0..evaluated.len()).find(|&i| evaluated[i] == e && baseline[i] == b).unwrap();
    assert_eq!(procedure[at("endpoint", "")], "seeds");
    assert_eq!(procedure[at("endpoint", "lora")], "seeds");
    assert_eq!(procedure[at("merge factor 1:1", "lora")], "seeds × items");
    assert!(note[at("merge factor 1:1:1", "")].contains("at least 4 seeds"), "{}", note[at("merge factor 1:1:1", "")]);
}

#[test]
fn malformed_specs_get_one_line_errors_with_the_key_and_line() {
    let cases = [
        (TINY.replace("shots = 2", "shotz = 2"), "shotz"),
        (TINY.replace("seeds = [1, 2, 3]", "seeds = \"1\""), "line 5"),
        (TINY.replace("seeds = [1, 2, 3]", "seeds = []"), "seeds"),
        (TINY.replace("tasks = [\"lighting\", \"hue\"]", "tasks = []"), "grid is empty"),
        (TINY.replace("baseline = \"lora\"", "baseline = \"lorax\""), "lorax"),
        (TINY.replace("structures = [\"every-other-odd\"]", "structures = [\"odd\"]"), "every-other-even"),
        (TINY.replace("[measure.curves]", "[measure.curvez]"), "curvez"),
        (TINY.replace("method = \"copra\"", "method = \"coprra\""), "unknown method"),
        (TINY.replace("weights = [[1, 1], [1, 1, 1]]", "weights = [[1, 1, 1, 1]]"), "merges 4 seeds"),
        (TINY.replace("against = \"copra\"", "against = \"copr\""), "against: 'copr' is not a variant"),
        (TINY.replace("against = \"copra\"", "against = \"lora\""), "compared against ('lora')"),
    ];
    for (text, want) in cases {
        let err = Spec::parse(&text).unwrap_err().to_string();
        assert!(err.contains(want), "want '{want}' in: {err}");
        assert!(err.starts_with("line "), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
    // The unknown key's line is the line it is on.
    let err = Spec::parse(&TINY.replace("shots = 2", "shotz = 2")).unwrap_err().to_string();
    let line = TINY.lines().position(|l| l.starts_with("shots")).unwrap() + 1;
    assert!(err.contains(&format!("line {line}")), "{err}");
}

#[test]
fn shards_partition_the_grid_and_follow_slurm() {
    let s = Shard::parse("1/3").unwrap();
    assert!((0..30).filter(|i| s.owns(*i)).eq((0..30).filter(|i| i % 3 == 1)));
    assert!(Shard::parse("3/3").is_err() && Shard::parse("a/2").is_err() && Shard::parse("1").is_err());
    let env = |pairs: &'static [(&'static str, &'static str)]| {
        move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    assert_eq!(Shard::from_slurm(env(&[])).unwrap(), None);
    let got = Shard::from_slurm(env(&[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4")])).unwrap();
    assert_eq!(got, Some(Shard { index: 2, count: 4 }));
    // Arrays numbered from 1 (--array=1-4) map onto shards 0..4.
    let one_based = Shard::from_slurm(env(&[
        ("SLURM_ARRAY_TASK_ID", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
    ]))
    .unwrap();
    assert_eq!(one_based, Some(Shard { index: 3, count: 4 }));
    assert!(Shard::from_slurm(env(&[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "4")])).is_err());
    // A stepped array (--array=0-4:2: tasks 0, 2, 4) runs every shard once.
    let stepped: Vec<Shard> = ["0", "2", "4"]
        .iter()
        .map(|id| {
            let vars = [
                ("SLURM_ARRAY_TASK_ID", id.to_string()),
                ("SLURM_ARRAY_TASK_COUNT", "3".to_string()),
                ("SLURM_ARRAY_TASK_MIN", "0".to_string()),
                ("SLURM_ARRAY_TASK_STEP", "2".to_string()),
            ];
            Shard::from_slurm(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())).unwrap().unwrap()
        })
        .collect();
    assert_eq!(stepped, (0..3).map(|index| Shard { index, count: 3 }).collect::<Vec<_>>());
    // Errors from the Slurm variables name them, not a --shard the user never passed.
    let err = Shard::from_slurm(env(&[("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_COUNT", "4")]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SLURM_ARRAY_TASK_COUNT 4") && !err.contains("--shard 5/4"), "{err}");
}

/// Shards from Slurm's array variables `(name, value)`.
fn slurm_shard(vars: &[(&str, String)]) -> Result<Option<Shard>> {
    Shard::from_slurm(|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
}

#[test]
fn a_slurm_list_array_is_refused_by_every_task() {
    let vars = |id: usize, min: usize, max: usize, step: usize, count: usize| {
        [
            ("SLURM_ARRAY_TASK_ID", id.to_string()),
            ("SLURM_ARRAY_TASK_MIN", min.to_string()),
            ("SLURM_ARRAY_TASK_MAX", max.to_string()),
            ("SLURM_ARRAY_TASK_STEP", step.to_string()),
            ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
        ]
    };
    // Ranges, as real Slurm 22.05 sets them: --array=0-5:2 (tasks 0, 2, 4: MAX is the last
    // task, 4), --array=1-7:3, and a lone task --array=3 (an array of one: the whole grid).
    for (ids, min, max, step) in [(vec![0, 2, 4], 0, 4, 2), (vec![1, 4, 7], 1, 7, 3)] {
        let got: Vec<Shard> =
            ids.iter().map(|&id| slurm_shard(&vars(id, min, max, step, 3)).unwrap().unwrap()).collect();
        assert_eq!(got, (0..3).map(|index| Shard { index, count: 3 }).collect::<Vec<_>>());
    }
    assert_eq!(slurm_shard(&vars(3, 3, 3, 1, 1)).unwrap(), Some(Shard { index: 0, count: 1 }));
    // A list with gaps, --array=0,2,4: Slurm sets MIN 0, MAX 4, STEP 1, COUNT 3, which tells no
    // task its rank. Tasks 0 and 2 used to run shards 0 and 2 of 3 and succeed while shard 1
    // never ran (only task 4 failed, called "task 5"); now every task refuses, naming the fix.
    for id in [0, 2, 4] {
        let err = slurm_shard(&vars(id, 0, 4, 1, 3)).unwrap_err().to_string();
        assert!(err.contains("SLURM_ARRAY_TASK_MAX 4") && err.contains("a range such as --array=0-2"), "{err}");
    }
}

#[test]
fn variants_sweeps_and_seeds_build_the_expected_configs() {
    let text = TINY.replace("[measure.prune]", "[sweep]\nkey = \"lora.rank\"\nvalues = [1, 4]\n\n[measure.prune]");
    let spec = Spec::parse(&text).unwrap();
    let copra = &spec.variants[1];
    let cfg = spec.config(copra, 1, 3, "hue").unwrap();
    assert_eq!(
        (cfg.method, cfg.p0, cfg.seed, cfg.lora.rank, cfg.steps, cfg.task.as_str()),
        (crate::train::Method::Copra, 0.1, 3, 4, 4, "hue")
    );
    assert_eq!(spec.x(1), 4.0);
    // Group cells: every group of each size a measure asks for (pairs for the barrier and the
    // 1:1 merge, the triple for 1:1:1), each sorted, once per task, variant and point.
    let all = cells(&spec).unwrap();
    let groups: Vec<Vec<u64>> = all
        .iter()
        .filter(|c| c.task == "hue" && c.variant == "copra" && c.x == 4.0)
        .filter_map(|c| match &c.kind {
            CellKind::Group { cfgs } => Some(cfgs.iter().map(|c| c.seed).collect()),
            _ => None,
        })
        .collect();
    assert_eq!(groups, vec![vec![1, 2], vec![1, 3], vec![2, 3], vec![1, 2, 3]]);
}

#[test]
fn snapshots_do_not_change_training_and_the_last_is_the_final_adapter() {
    let lab = Lab::open("builtin", &std::env::temp_dir().join("copra-study-unused-runs")).unwrap();
    let cfg = crate::train::TrainConfig { steps: 6, shots: 2, test_size: 8, batch_size: 8, ..Default::default() };
    let env = lab.task_env(&cfg).unwrap();
    let plain = crate::train::train_adapter(
        &lab.backbone,
        &env.head,
        &env.train_inputs,
        &env.data.train.labels,
        &cfg,
        None,
        |_| {},
    )
    .unwrap();
    let (out, snaps) = crate::train::train_adapter_snapshots(
        &lab.backbone,
        &env.head,
        &env.train_inputs,
        &env.data.train.labels,
        &cfg,
        &[3, 6],
    )
    .unwrap();
    assert_eq!(out.adapter, plain.adapter);
    assert_eq!(snaps.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![3, 6]);
    assert_eq!(snaps[1].1, plain.adapter);
    assert_ne!(snaps[0].1, plain.adapter);
}

#[test]
fn long_task_and_variant_names_keep_cell_ids_unique() {
    let text = TINY
        .replace(
            "tasks = [\"lighting\", \"hue\"]",
            "tasks = [\"idx:/a/very/long/path/to/a/data/set/called/fashion-mnist\", \"idx:/a/very/long/path/to/a/data/set/called/kmnist\"]",
        )
        .replace("name = \"copra\"", "name = \"stochastic-depth-with-a-long-name-0.5\"")
        .replace("variants = [\"copra\"]", "variants = [\"stochastic-depth-with-a-long-name-0.5\"]")
        .replace("variant = \"copra\"", "variant = \"stochastic-depth-with-a-long-name-0.5\"")
        .replace("against = \"copra\"", "against = \"stochastic-depth-with-a-long-name-0.5\"")
        .replace("tasks = [\"hue\"]", "tasks = []");
    let spec = Spec::parse(&text).unwrap();
    let all = cells(&spec).unwrap();
    let mut ids: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all.len());
}

#[test]
fn the_committed_reports_keep_their_cell_ids() {
    // Cell ids hash the cell's work; a field added to the configs must not move existing ids,
    // or `analyze` would redo committed grids. Every committed analysis spec is checked.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let names = [
        "claims",
        "claims-10",
        "oq1-multilinear",
        "oq1-learning-rate",
        "oq2-iterations",
        "oq3-heterogeneous",
        "minilm",
        "dinov2",
    ];
    for name in names {
        let report = root.join(format!("reports/{name}"));
        // A tuned grid's ids hash its chosen values, read from its committed tuning records.
        let spec =
            super::tune::resolve(&report, Spec::read(&root.join(format!("analyses/{name}.toml"))).unwrap()).unwrap();
        let dir = report.join("cells");
        for cell in super::cell::cells(&spec).unwrap() {
            assert!(dir.join(&cell.id).is_dir(), "{name}: cell {} is not in {}", cell.id, dir.display());
        }
    }
}

/// The smallest grid: one variant, one task, one seed, a few steps, no measures.
const MINI: &str = r#"
name = "mini"
question = "Does one cell run?"
baseline = "lora"
seeds = [1]
tasks = ["lighting"]

[base]
steps = 3
shots = 2
test_size = 12
batch_size = 8

[[variant]]
name = "lora"
method = "lora"
"#;

/// The line of `needle` in `text` (1-based).
fn line_with(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

#[test]
fn keys_the_grid_would_ignore_or_duplicate_are_refused_with_their_key_and_line() {
    let sweep = |key: &str, values: &str| format!("{TINY}\n[sweep]\nkey = \"{key}\"\nvalues = {values}\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (sweep("seed", "[1, 2]"), "key = \"seed\"", "seeds"),
        (TINY.replace("[base]\n", "[base]\nseed = 7\n"), "seed = 7", "seeds"),
        (TINY.replace("[base]\n", "[base]\ntask = \"hue\"\n"), "task = \"hue\"", "tasks"),
        (TINY.replace("p0 = 0.1", "p0 = 0.1\nseed = 3"), "seed = 3", "seeds"),
        (TINY.replace("tasks = [\"lighting\", \"hue\"]", "tasks = [\"hue\", \"hue\"]"), "tasks = [", "twice"),
        (sweep("lr", "[1e-3, 1e-3]"), "values = [", "twice"),
        (
            TINY.replace("operators = [\"factor\"]", "operators = [\"factor\"]\ntasks = [\"hue\", \"hue\"]"),
            "tasks = [\"hue\", \"hue\"]",
            "twice",
        ),
        (
            TINY.replace("operators = [\"factor\"]", "operators = [\"factor\"]\ntasks = [\"hue\"]"),
            "tasks = [\"hue\"]",
            "at least two",
        ),
        (TINY.replace("[report]\n", "[report]\nheadline = [\"acuracy//test_accuracy\"]\n"), "headline = ", "acuracy"),
        (TINY.replace("matched_fit = [\"prune/", "matched_fit = [\"prun/"), "matched_fit = ", "prun/"),
        (
            TINY.replace("name = \"lora\"\nmethod", "name = \"α\"\nmethod")
                .replace("name = \"copra\"", "name = \"β\"")
                .replace("baseline = \"lora\"", "baseline = \"α\"")
                .replace("variants = [\"copra\"]", "variants = [\"β\"]")
                .replace("variant = \"copra\"", "variant = \"β\""),
            "name = \"β\"",
            "same in cell ids",
        ),
        (
            TINY.replace(
                "structures = [\"every-other-odd\"]",
                "structures = [\"every-other-odd\", \"every-other-odd\"]",
            ),
            "structures",
            "twice",
        ),
        (TINY.replace("p0 = 0.1", "p0 = 0.1\nsteps = 0"), "steps = 0", "steps"),
        (TINY.replace("quantity = \"merge/", "quantity = \"merj/"), "quantity = \"merj/", "merj"),
        (TINY.replace("expect = \"lower\"", "expect = \"lower\"\nx = 3.0"), "x = 3.0", "sweep"),
        (TINY.replace("tasks = [\"hue\"]", "tasks = [\"hew\"]"), "tasks = [\"hew\"]", "hew"),
        (sweep("steps", "[4, 20.5]"), "values = [", "20.5"),
    ];
    for (text, line_of, want) in cases {
        let err = Spec::parse(&text).unwrap_err().to_string();
        let line = line_with(&text, line_of);
        assert!(err.starts_with(&format!("line {line}: ")), "want line {line} ({line_of}): {err}");
        assert!(err.contains(want), "want '{want}' in: {err}");
        assert!(!err.contains('\n'), "{err}");
    }
    // A bad value names its own key, not the variant's first one.
    let err = Spec::parse(&TINY.replace("p0 = 0.1", "p0 = 0.1\nsteps = 0")).unwrap_err().to_string();
    assert!(err.contains(": steps: "), "{err}");
    let err = Spec::parse(&sweep("steps", "[4, 20.5]")).unwrap_err().to_string();
    assert!(err.contains(": values: "), "{err}");
    // factor+align is a multi-task operator in specs as in `copra-lab multitask`.
    let spec = Spec::parse(&TINY.replace("operators = [\"factor\"]", "operators = [\"factor+align\"]")).unwrap();
    assert!(format!("{:?}", spec.measures).contains("align: true"));
}

#[test]
fn specs_far_beyond_the_defaults_need_yes_before_any_work() {
    let seeds: Vec<String> = (1..=20_000).map(|s| s.to_string()).collect();
    let cases = [
        (MINI.replace("steps = 3", "steps = 100000000"), "steps"),
        (MINI.replace("seeds = [1]", &format!("seeds = [{}]", seeds.join(", "))), "grid"),
        (TINY.replace("points = 3", "points = 100000000"), "measure.barrier"),
        (
            TINY.replace("samples = 2\n\n[measure.trajectory]", "samples = 1000000000000\n\n[measure.trajectory]"),
            "measure.multilinear",
        ),
        (MINI.replace("test_size = 12", "test_size = 10000000"), "test_size"),
    ];
    for (text, want) in cases {
        let spec = Spec::parse(&text).unwrap();
        let err = check_costs(&spec, false).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("--yes"), "want '{want}': {err}");
        check_costs(&spec, true).unwrap();
    }
    // The committed specs and the test grids pass without --yes.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in
        ["claims", "clip-lora", "minilm", "oq1-multilinear", "oq1-learning-rate", "oq2-iterations", "oq3-heterogeneous"]
    {
        let spec = Spec::read(&root.join(format!("analyses/{name}.toml"))).unwrap();
        check_costs(&spec, false).unwrap();
    }
    check_costs(&Spec::parse(TINY).unwrap(), false).unwrap();
}

#[test]
fn damaged_cells_are_redone_and_run_cells_record_their_training_time() {
    let root = scratch("damaged");
    let lab = lab(&root);
    let spec = Spec::parse(MINI).unwrap();
    let out = root.join("out");
    analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
    let id = cells(&spec).unwrap()[0].id.clone();
    let dir = store::cell_dir(&out, &id);
    // The run cell trained its run: its wall time includes that training.
    let record: store::CellRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cell.json")).unwrap()).unwrap();
    let cfg = spec.config(&spec.variants[0], 0, 1, "lighting").unwrap();
    let run = lab.ensure_run(&lab.task_env(&cfg).unwrap(), &cfg, false, &Progress::hidden()).unwrap();
    let training = record.training_seconds.unwrap();
    assert!(training >= run.manifest.wall_seconds, "{record:?} vs training {}", run.manifest.wall_seconds);
    assert!(record.wall_seconds >= training);
    let before = frame(&out, "measurements.parquet");
    // A deleted part (what a Parquet error advises) or a corrupt record: the cell is redone.
    for damage in ["measurements.parquet", "cell.json"] {
        if damage == "cell.json" {
            std::fs::write(dir.join(damage), "{ not json").unwrap();
        } else {
            std::fs::remove_file(dir.join(damage)).unwrap();
        }
        assert!(!store::is_done(&out, &id));
        let s = analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
        assert_eq!((s.ran, s.missing), (1, 0), "after damaging {damage}");
        assert!(frame(&out, "measurements.parquet").equals_missing(&before));
    }
    // The cached run costs nothing the second time.
    let again: store::CellRecord =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cell.json")).unwrap()).unwrap();
    assert_eq!(again.training_seconds, Some(0.0));
    // A folder with cells but no backbone.txt does not adopt them.
    std::fs::remove_file(out.join("backbone.txt")).unwrap();
    let err = analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap_err().to_string();
    assert!(err.contains("no backbone.txt"), "{err}");
    // The marker names the weights' fingerprint; the path they were loaded from may differ.
    std::fs::write(out.join("backbone.txt"), format!("./some/other/path/ {}\n", lab.fingerprint)).unwrap();
    analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn federated_client_ranks_beyond_the_module_width_are_refused_before_any_work() {
    let root = scratch("fed-rank");
    let lab = lab(&root);
    let text = format!(
        "{MINI}\n[measure.federated]\nclients = 2\nlocal_steps = 2\nsplits = [\"iid\"]\naggregators = [\"factor\"]\n[[measure.federated.heterogeneity]]\nname = \"wide\"\nranks = [1, 4096]\n"
    );
    let spec = Spec::parse(&text).unwrap();
    let out = root.join("out");
    let err = analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap_err().to_string();
    assert!(err.contains("client rank 4096") && err.contains("wide"), "{err}");
    assert!(!out.join("cells").exists(), "no cell may start");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn federated_cells_record_client_accuracies_and_run_each_aggregator_past_one_round() {
    let root = scratch("fed-rounds");
    let lab = lab(&root);
    let fed = |rounds: &str| {
        format!(
            "{MINI}\n[measure.federated]\nclients = 2\nlocal_steps = 3\nsplits = [\"iid\"]\naggregators = [\"stack\", \"fedex\"]\n{rounds}[[measure.federated.heterogeneity]]\nname = \"all\"\n"
        )
    };
    let ids = |text: &str| cells(&Spec::parse(text).unwrap()).unwrap().into_iter().map(|c| c.id).collect::<Vec<_>>();
    // One round written out is the default: the same cells; two rounds are other work.
    assert_eq!(ids(&fed("rounds = 1\n")), ids(&fed("")));
    assert_ne!(ids(&fed("rounds = 2\n")), ids(&fed("")));
    let value = |out: &std::path::Path, setting: &str, metric: &str| -> f64 {
        let m = frame(out, "measurements.parquet");
        let col =
            |n: &str| m.column(n).unwrap().str().unwrap().iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>();
        let (settings, metrics) = (col("setting"), col("metric"));
        let values = m.column("value").unwrap().f64().unwrap();
        let i = (0..m.height()).find(|&i| settings[i] == setting && metrics[i] == metric);
        values.get(i.unwrap_or_else(|| panic!("no {setting} / {metric} row"))).unwrap()
    };
    for (rounds, name) in [("", "one"), ("rounds = 2\n", "two")] {
        let out = root.join(name);
        analyze(&lab, &Spec::parse(&fed(rounds)).unwrap(), &out, Shard::default(), &Progress::hidden()).unwrap();
        for agg in ["stack", "fedex"] {
            for metric in ["accuracy", "client_train_accuracy", "client_test_accuracy", "client_local_accuracy"] {
                let v = value(&out, &format!("iid all {agg}"), metric);
                assert!((0.0..=1.0).contains(&v), "{name} {agg} {metric}: {v}");
            }
        }
        if name == "one" {
            // One round: both aggregators merge the same uploads into the exact mean ΔW, and the
            // clients they report are the same clients.
            assert_eq!(value(&out, "iid all stack", "accuracy"), value(&out, "iid all fedex", "accuracy"));
            assert_eq!(
                value(&out, "iid all stack", "client_train_accuracy"),
                value(&out, "iid all fedex", "client_train_accuracy")
            );
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn cell_ids_are_canonical_and_legacy_folders_are_adopted_losslessly() {
    // Ids hash each config as JSON with its defaults left out: a default written out changes
    // nothing, and a setting that does change the work changes the id.
    let spec = Spec::parse(TINY).unwrap();
    let written = Spec::parse(&TINY.replace("[base]\n", "[base]\nmin_lr = 1e-6\n")).unwrap();
    assert_eq!(crate::train::TrainConfig::default().min_lr, 1e-6, "the test writes out a default");
    let ids = |s: &Spec| cells(s).unwrap().into_iter().map(|c| c.id).collect::<Vec<_>>();
    assert_eq!(ids(&written), ids(&spec));
    let other = Spec::parse(&TINY.replace("[base]\n", "[base]\nmin_lr = 1e-5\n")).unwrap();
    assert!(ids(&other).iter().zip(ids(&spec)).all(|(a, b)| *a != b));
    let json = super::cell::config_json(&crate::train::TrainConfig::default());
    assert_eq!(json, "{}", "a default config describes nothing");

    // A report folder written with the legacy ids (as every report before canonical ids):
    // report and analyze adopt its cells without computing anything, and every row is kept.
    let root = scratch("legacy");
    let lab = lab(&root);
    let out = root.join("out");
    analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
    let m = frame(&out, "measurements.parquet");
    let p = frame(&out, "predictions.parquet");
    let all = cells(&spec).unwrap();
    assert!(all.iter().all(|c| c.legacy_id != c.id), "the ids moved");
    for c in &all {
        let (mut record, mut rows, mut curves) = store::read_cell(&out, &c.id).unwrap();
        let mut predictions = store::read_predictions(&out, &c.id).unwrap();
        record.id = c.legacy_id.clone();
        rows.iter_mut().for_each(|r| r.cell = c.legacy_id.clone());
        curves.iter_mut().for_each(|r| r.cell = c.legacy_id.clone());
        predictions.iter_mut().for_each(|r| r.cell = c.legacy_id.clone());
        let output = super::cell::CellOutput { measurements: rows, curves, predictions };
        store::write_cell(&out, &record, &output).unwrap();
        std::fs::remove_dir_all(store::cell_dir(&out, &c.id)).unwrap();
    }
    report::write_report(&out).unwrap();
    assert!(all.iter().all(|c| store::is_done(&out, &c.id) && !store::cell_dir(&out, &c.legacy_id).exists()));
    assert!(frame(&out, "measurements.parquet").equals_missing(&m), "rows changed in the migration");
    assert!(frame(&out, "predictions.parquet").equals_missing(&p), "predictions changed in the migration");
    let again = analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
    assert_eq!((again.ran, again.skipped), (0, all.len()));

    // A legacy folder computed under other settings is never adopted: its legacy id differs.
    let stale = &all[0];
    let (mut record, rows, _) = store::read_cell(&out, &stale.id).unwrap();
    let other_cells = cells(&other).unwrap();
    record.id = stale.legacy_id.clone();
    store::write_cell(&out, &record, &super::cell::CellOutput { measurements: rows, ..Default::default() }).unwrap();
    assert_eq!(store::migrate_legacy(&root.join("out"), other_cells.iter()).unwrap(), 0);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn barriers_in_specs_walk_gauge_aligned_factor_lines_too() {
    // `[measure.barrier] spaces` takes the connectivity command's aligned lines; the aligned
    // orthogonal line to a rotated copy of a run would be flat, and on two seeds it gives
    // finite barriers of its own setting. A misspelt path is refused by key.
    let text = MINI.replace("seeds = [1]", "seeds = [1, 2]")
        + "\n[measure.barrier]\npoints = 3\nspaces = [\"factor\", \"factor-aligned-orth\", \"delta\"]\n";
    let spec = Spec::parse(&text).unwrap();
    let root = scratch("aligned");
    let lab = lab(&root);
    let out = root.join("out");
    analyze(&lab, &spec, &out, Shard::default(), &Progress::hidden()).unwrap();
    let m = frame(&out, "measurements.parquet");
    let settings: Vec<String> =
        m.column("setting").unwrap().str().unwrap().iter().map(|v| v.unwrap_or_default().to_string()).collect();
    for want in ["factor", "factor-aligned-orth", "delta"] {
        assert_eq!(settings.iter().filter(|s| *s == want).count(), 3, "{want}: the one pair × 3 metrics");
    }
    let bad =
        MINI.replace("seeds = [1]", "seeds = [1, 2]") + "\n[measure.barrier]\nspaces = [\"factor-aligned-rot\"]\n";
    let err = Spec::parse(&bad).unwrap_err().to_string();
    assert!(err.contains("spaces") && err.contains("factor-aligned-orth"), "{err}");
    let _ = std::fs::remove_dir_all(&root);
}
