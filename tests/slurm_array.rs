//! Slurm for real: a private single-node Slurm (tests/slurm/cluster.sh) runs a small analysis
//! spec as job arrays through the user's script, analyses/slurm-array.sbatch, one array
//! contiguous from 1 and one stepped (`--array=0-4:2`). Each array must run every shard once,
//! and the report built from its shards must hold the tables of an unsharded run, value for
//! value. Needs root and Debian's slurmctld, slurmd, slurm-client and munge; where the cluster
//! cannot start the test skips with a note, unless COPRA_LAB_REQUIRE_SLURM=1 (CI) makes that a
//! failure. COPRA_LAB_SLURM_DIR, when set, is where the daemons keep their files, so that a
//! caller can stop them by pid (`tests/slurm/cluster.sh stop DIR`) whatever happens here.

mod common;

use common::*;
use copra_lab::report::table::Table;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The script that starts and stops the private cluster.
const CLUSTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/cluster.sh");
/// The job script users submit, and this test with them.
const SBATCH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/analyses/slurm-array.sbatch");
/// The grid the arrays run: 6 run cells and 6 merge cells.
const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/slurm/tiny.toml");
/// Cells of [`SPEC`]'s grid.
const CELLS: usize = 12;
/// Longest wait for one array before the test gives up (the arrays take seconds).
const DEADLINE: Duration = Duration::from_secs(300);
/// Slurm's job-array variables, kept away from the unsharded reference run.
const ARRAY_VARS: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
];

/// The running daemons; dropping it stops them by pid, also when an assertion fails.
struct Cluster {
    dir: PathBuf,
}

impl Cluster {
    /// Starts munged, slurmctld and slurmd with their files under `dir`, on two free loopback
    /// ports; the error is the script's own message.
    fn start(dir: &Path) -> Result<Cluster, String> {
        // The guard exists before the daemons do, so that a half-started cluster is stopped too.
        let cluster = Cluster { dir: dir.to_path_buf() };
        let (ctld, slurmd) = free_ports();
        let o = Command::new(CLUSTER)
            .args(["start", dir.to_str().unwrap(), &ctld.to_string(), &slurmd.to_string()])
            .output()
            .map_err(|e| format!("cannot run {CLUSTER}: {e}"))?;
        if !o.status.success() {
            return Err(format!("{}{}", stdout(&o), stderr(&o)).trim().to_string());
        }
        Ok(cluster)
    }

    /// A Slurm client command (`sbatch`, `scontrol`, ...) talking to this cluster.
    fn client(&self, name: &str) -> Command {
        let mut c = Command::new(name);
        c.env("SLURM_CONF", self.dir.join("slurm.conf"));
        c
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(CLUSTER).arg("stop").arg(&self.dir).status();
    }
}

/// Two distinct loopback ports that were free a moment ago.
fn free_ports() -> (u16, u16) {
    let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    (a.local_addr().unwrap().port(), b.local_addr().unwrap().port())
}

/// One submitted array: the user's script over `spec`, writing the report into `dir/report`
/// with its own run cache `dir/runs` and task logs `dir/logs/<task id>.out`.
struct Array {
    /// What the array is, for messages.
    what: String,
    /// Slurm's job id of the array.
    id: String,
    /// The report folder its shards share.
    report: PathBuf,
    /// Its task logs.
    logs: PathBuf,
}

impl Array {
    /// Submits `--array=range` over `spec` into `dir`.
    fn submit(cluster: &Cluster, range: &str, spec: &str, dir: &Path) -> Array {
        let (report, logs) = (dir.join("report"), dir.join("logs"));
        std::fs::create_dir_all(&logs).unwrap();
        let o = run(cluster
            .client("sbatch")
            .env("COPRA_LAB", env!("CARGO_BIN_EXE_copra-lab"))
            .args(["--parsable", &format!("--array={range}")])
            .arg(format!("--output={}/%a.out", logs.display()))
            .args([SBATCH, spec])
            .arg(&report)
            .arg("--runs-dir")
            .arg(dir.join("runs")));
        assert!(o.status.success(), "sbatch --array={range}: {}", stderr(&o));
        // --parsable prints `ID` or `ID;CLUSTER`.
        let id = stdout(&o).trim().split(';').next().unwrap().to_string();
        Array { what: format!("--array={range} over {spec}"), id, report, logs }
    }

    /// Waits until no task of the array is pending, running or completing (squeue lists none;
    /// it polls more often than `sbatch --wait`), up to [`DEADLINE`]; then returns each task's
    /// final state and exit code from `scontrol show job`, by task id.
    fn wait(&self, cluster: &Cluster) -> BTreeMap<u32, (String, String)> {
        let started = Instant::now();
        loop {
            let o = run(cluster.client("squeue").args(["-h", "-o", "%i %T", "-j", &self.id]));
            assert!(o.status.success(), "{}: squeue failed: {}", self.what, stderr(&o));
            if stdout(&o).trim().is_empty() {
                break;
            }
            if started.elapsed() > DEADLINE {
                panic!(
                    "{}: not finished after {DEADLINE:?}:\n{}task logs:\n{}",
                    self.what,
                    stdout(&o),
                    read_logs(&self.logs)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let o = run(cluster.client("scontrol").args(["-o", "show", "job", &self.id]));
        assert!(o.status.success(), "{}: scontrol failed: {}", self.what, stderr(&o));
        stdout(&o)
            .lines()
            .map(|line| {
                let field = |key: &str| {
                    line.split_whitespace()
                        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
                        .unwrap_or_else(|| panic!("{}: no {key} in: {line}", self.what))
                        .to_string()
                };
                (field("ArrayTaskId").parse().unwrap(), (field("JobState"), field("ExitCode")))
            })
            .collect()
    }
}

/// Every task log under `logs`, by task id.
fn task_logs(logs: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(logs).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().trim_end_matches(".out").to_string();
        out.insert(name, std::fs::read_to_string(e.path()).unwrap_or_default());
    }
    out
}

/// The task logs as one text, for failure messages.
fn read_logs(logs: &Path) -> String {
    task_logs(logs).iter().map(|(id, text)| format!("--- task {id}\n{text}")).collect()
}

/// From each task log, the shard that task ran and how many cells it ran, as
/// `task id -> (shard index, shard count, cells ran)`, parsed from analyze's summary line
/// `NAME: shard I/N: K cells ran, ...`.
fn shards_run(logs: &Path) -> BTreeMap<u32, (usize, usize, usize)> {
    let mut out = BTreeMap::new();
    for (id, text) in task_logs(logs) {
        let line = text
            .lines()
            .find(|l| l.contains(": shard "))
            .unwrap_or_else(|| panic!("task {id}: no summary line:\n{text}"));
        let rest = line.split(": shard ").nth(1).unwrap();
        let (shard, rest) = rest.split_once(": ").unwrap();
        let (i, n) = shard.split_once('/').unwrap();
        let ran = rest.split_whitespace().next().unwrap();
        out.insert(id.parse().unwrap(), (i.parse().unwrap(), n.parse().unwrap(), ran.parse().unwrap()));
    }
    out
}

/// The report's Parquet tables except `cells.parquet` (wall times and machine differ by run).
fn tables(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".parquet") && n != "cells.parquet")
        .collect();
    names.sort();
    names
}

/// Asserts that the report in `dir` has the tables of the unsharded report `whole`, by value.
fn assert_same_tables(dir: &Path, whole: &Path, what: &str) {
    let names = tables(whole);
    for want in ["measurements.parquet", "summary.parquet", "paired.parquet"] {
        assert!(names.iter().any(|n| n == want), "the unsharded report lacks {want}: {names:?}");
    }
    assert_eq!(tables(dir), names, "{what}: the report's tables differ from the unsharded run's");
    for name in &names {
        let (got, want) =
            (Table::read_parquet(&dir.join(name)).unwrap(), Table::read_parquet(&whole.join(name)).unwrap());
        assert!(want.height() > 0, "{name} is empty");
        assert!(got.equals_missing(&want), "{what}: {name} differs from the unsharded run's:\n{got}\nvs\n{want}");
    }
    let cells = Table::read_parquet(&dir.join("cells.parquet")).unwrap();
    assert_eq!(cells.height(), CELLS, "{what}: cells.parquet");
}

#[test]
fn slurm_job_arrays_contiguous_and_stepped_give_the_unsharded_tables() {
    let required = std::env::var("COPRA_LAB_REQUIRE_SLURM").is_ok_and(|v| v == "1");
    let root = tmp("slurm-array");
    let cluster_dir =
        std::env::var_os("COPRA_LAB_SLURM_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("cluster"));
    let started = Instant::now();
    let cluster = match Cluster::start(&cluster_dir) {
        Ok(c) => c,
        Err(e) if required => panic!("COPRA_LAB_REQUIRE_SLURM=1 but the Slurm test cluster did not start: {e}"),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&root);
            eprintln!("skipping: the Slurm test cluster did not start ({e}); as root, apt-get install slurmctld slurmd slurm-client munge");
            return;
        }
    };
    eprintln!("slurm test cluster up in {:.1} s", started.elapsed().as_secs_f64());

    // Four arrays at once: contiguous from 1 (4 shards), stepped (tasks 0, 2, 4: 3 shards), and
    // two whose tasks must all fail: one over a spec that does not exist, and a list with gaps
    // (0,2,4), whose tasks cannot tell their rank from Slurm's variables.
    let contiguous = Array::submit(&cluster, "1-4", SPEC, &root.join("contiguous"));
    let stepped = Array::submit(&cluster, "0-4:2", SPEC, &root.join("stepped"));
    let missing = Array::submit(&cluster, "0-1", "nowhere.toml", &root.join("missing"));
    let list = Array::submit(&cluster, "0,2,4", SPEC, &root.join("list"));

    // Meanwhile the reference: the whole grid in one process, outside any array.
    let whole = root.join("whole");
    let mut reference = bin();
    for v in ARRAY_VARS {
        reference.env_remove(v);
    }
    let o = run(reference
        .args(["--runs-dir", root.join("runs-whole").to_str().unwrap(), "analyze", SPEC, "--out"])
        .arg(&whole));
    assert!(o.status.success(), "{}", stderr(&o));

    let (contiguous_tasks, stepped_tasks) = (contiguous.wait(&cluster), stepped.wait(&cluster));
    let failing = [
        (&missing, missing.wait(&cluster), vec![0, 1], "nowhere.toml"),
        (&list, list.wait(&cluster), vec![0, 2, 4], "a range such as --array=0-2"),
    ];
    eprintln!("arrays ended {:.1} s after the cluster started", started.elapsed().as_secs_f64());

    // Every task of the failing arrays fails with copra-lab's exit code and its one-line error.
    for (array, tasks, ids, error) in failing {
        let failed = (String::from("FAILED"), String::from("1:0"));
        let logs = task_logs(&array.logs);
        assert_eq!(tasks, ids.iter().map(|&id| (id, failed.clone())).collect(), "{}: {logs:?}", array.what);
        assert_eq!(logs.len(), ids.len(), "{}: {logs:?}", array.what);
        for text in logs.values() {
            assert!(
                text.starts_with("error: ") && text.lines().count() == 1 && text.contains(error),
                "{}: {text}",
                array.what
            );
        }
    }

    // Each good array ran every shard exactly once, one per task, and together every cell; then
    // `copra-lab report DIR` builds, from the shards' cells, the tables of the unsharded run.
    for (array, tasks, ids, count) in
        [(&contiguous, contiguous_tasks, vec![1, 2, 3, 4], 4), (&stepped, stepped_tasks, vec![0, 2, 4], 3)]
    {
        let what = &array.what;
        let ok = (String::from("COMPLETED"), String::from("0:0"));
        assert_eq!(tasks.keys().copied().collect::<Vec<u32>>(), ids, "{what}: task ids");
        assert!(tasks.values().all(|t| *t == ok), "{what}: {tasks:?}; task logs:\n{}", read_logs(&array.logs));
        let shards = shards_run(&array.logs);
        assert_eq!(shards.keys().copied().collect::<Vec<u32>>(), ids, "{what}: task ids");
        let mut seen: Vec<(usize, usize)> = shards.values().map(|&(i, n, _)| (i, n)).collect();
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..count).map(|i| (i, count)).collect::<Vec<_>>(),
            "{what}: shards run:\n{}",
            read_logs(&array.logs)
        );
        assert_eq!(shards.values().map(|s| s.2).sum::<usize>(), CELLS, "{what}: cells run");
        let o = run(bin().arg("report").arg(&array.report));
        assert!(o.status.success(), "{what}: {}", stderr(&o));
        assert_same_tables(&array.report, &whole, what);
    }
    drop(cluster);
    eprintln!("slurm test done in {:.1} s", started.elapsed().as_secs_f64());
    let _ = std::fs::remove_dir_all(&root);
}
