//! A small column-oriented table builder that writes Parquet.
//!
//! Analysis code declares its rows with `table_row!` (the fields are the columns, each named
//! once) and builds a [`Table`] with [`Table::from_rows`]; it never imports polars. Only this
//! module converts to a polars `DataFrame` when writing or reading.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{anyhow, bail, Result};
use polars::prelude::{
    Column, DataFrame, DataType, Int64Type, IntoColumn, ListBuilderTrait, ListPrimitiveChunkedBuilder,
    ParquetCompression, ParquetReader, ParquetWriter, SerReader,
};

use crate::report::atomic::write_atomic_with;

/// The values of one column.
#[derive(Clone, Debug, PartialEq)]
enum ColumnData {
    Str(Vec<String>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    U64(Vec<u64>),
    Bool(Vec<bool>),
    OptF64(Vec<Option<f64>>),
    ListI64(Vec<Vec<i64>>),
}

impl ColumnData {
    fn len(&self) -> usize {
        match self {
            ColumnData::Str(v) => v.len(),
            ColumnData::F64(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::U64(v) => v.len(),
            ColumnData::Bool(v) => v.len(),
            ColumnData::OptF64(v) => v.len(),
            ColumnData::ListI64(v) => v.len(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            ColumnData::Str(_) => "String",
            ColumnData::F64(_) => "Float64",
            ColumnData::I64(_) => "Int64",
            ColumnData::U64(_) => "UInt64",
            ColumnData::Bool(_) => "Boolean",
            ColumnData::OptF64(_) => "Float64 (nullable)",
            ColumnData::ListI64(_) => "List(Int64)",
        }
    }

    fn to_polars(&self, name: &str) -> Column {
        let name = name.into();
        match self {
            ColumnData::Str(v) => Column::new(name, v.as_slice()),
            ColumnData::F64(v) => Column::new(name, v.as_slice()),
            ColumnData::I64(v) => Column::new(name, v.as_slice()),
            ColumnData::U64(v) => Column::new(name, v.as_slice()),
            ColumnData::Bool(v) => Column::new(name, v.as_slice()),
            ColumnData::OptF64(v) => Column::new(name, v.as_slice()),
            ColumnData::ListI64(v) => {
                let total = v.iter().map(Vec::len).sum();
                let mut builder = ListPrimitiveChunkedBuilder::<Int64Type>::new(name, v.len(), total, DataType::Int64);
                for item in v {
                    builder.append_slice(item);
                }
                builder.finish().into_column()
            }
        }
    }
}

/// An ordered set of named, equally long columns, written as one Parquet file.
///
/// Columns are added with the typed `*_col` methods, which chain:
/// `Table::new().str_col("space", s).f64_col("acc", a).write_parquet(path)?`.
/// Lengths and names are checked when the table is written.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    columns: Vec<(String, ColumnData)>,
}

impl Table {
    /// An empty table with no columns.
    pub fn new() -> Self {
        Self::default()
    }

    fn push(&mut self, name: &str, data: ColumnData) -> &mut Self {
        self.columns.push((name.to_string(), data));
        self
    }

    /// Appends a UTF-8 string column.
    pub fn str_col(&mut self, name: &str, values: Vec<String>) -> &mut Self {
        self.push(name, ColumnData::Str(values))
    }

    /// Appends a `f64` column (NaN is stored as NaN, not as null).
    pub fn f64_col(&mut self, name: &str, values: Vec<f64>) -> &mut Self {
        self.push(name, ColumnData::F64(values))
    }

    /// Appends an `i64` column.
    pub fn i64_col(&mut self, name: &str, values: Vec<i64>) -> &mut Self {
        self.push(name, ColumnData::I64(values))
    }

    /// Appends a `u64` column.
    pub fn u64_col(&mut self, name: &str, values: Vec<u64>) -> &mut Self {
        self.push(name, ColumnData::U64(values))
    }

    /// Appends a boolean column.
    pub fn bool_col(&mut self, name: &str, values: Vec<bool>) -> &mut Self {
        self.push(name, ColumnData::Bool(values))
    }

    /// Appends a nullable `f64` column; `None` is written as a Parquet null.
    pub fn opt_f64_col(&mut self, name: &str, values: Vec<Option<f64>>) -> &mut Self {
        self.push(name, ColumnData::OptF64(values))
    }

    /// Appends a column whose cells are lists of `i64` (for example the blocks of
    /// a coalition, or a training mask as 0/1 values).
    pub fn list_i64_col(&mut self, name: &str, values: Vec<Vec<i64>>) -> &mut Self {
        self.push(name, ColumnData::ListI64(values))
    }

    /// Number of rows: the length of the first column, or 0 without columns.
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of columns.
    pub fn num_columns(&self) -> usize {
        self.columns.len()
    }

    /// Column names with their type names (`String`, `Float64`, `Int64`, `UInt64`,
    /// `Boolean`, `Float64 (nullable)`, `List(Int64)`), in column order, for
    /// documenting output schemas.
    pub fn describe_schema(&self) -> Vec<(String, &'static str)> {
        self.columns.iter().map(|(n, c)| (n.clone(), c.type_name())).collect()
    }

    /// Checks that the table has columns, unique names and equal lengths.
    fn validate(&self) -> Result<()> {
        let Some((first_name, first)) = self.columns.first() else {
            bail!("table has no columns; add at least one column before writing it");
        };
        let mut seen = HashSet::new();
        for (name, col) in &self.columns {
            if !seen.insert(name.as_str()) {
                bail!("table has two columns named '{name}'; give every column a unique name");
            }
            if col.len() != first.len() {
                bail!(
                    "column '{name}' has {} rows but column '{first_name}' has {}; give every column the same length",
                    col.len(),
                    first.len()
                );
            }
        }
        Ok(())
    }

    /// Converts the table into a polars `DataFrame` (crate-internal).
    pub(crate) fn to_dataframe(&self) -> Result<DataFrame> {
        self.validate()?;
        let columns = self.columns.iter().map(|(n, c)| c.to_polars(n)).collect::<Vec<_>>();
        DataFrame::new(self.len(), columns)
            .map_err(|e| anyhow!("cannot assemble the table: {e}; check column names and lengths"))
    }

    /// Writes the table to `path` as a zstd-compressed Parquet file, atomically.
    ///
    /// Fails, naming the column, when column lengths differ or names repeat; an
    /// existing file at `path` is then left untouched.
    pub fn write_parquet(&self, path: &Path) -> Result<()> {
        let mut df = self.to_dataframe().map_err(|e| anyhow!("cannot write {}: {e}", path.display()))?;
        write_atomic_with(path, |file| encode_parquet(&mut df, file, path))
    }

    /// Reads a Parquet file into a polars `DataFrame` (for tests and for
    /// re-reading cached results).
    pub fn read_parquet(path: &Path) -> Result<DataFrame> {
        let file = File::open(path)
            .map_err(|e| anyhow!("cannot open {}: {e}; check the path or regenerate the table", path.display()))?;
        ParquetReader::new(file)
            .finish()
            .map_err(|e| anyhow!("cannot read {} as Parquet: {e}; delete the file and regenerate it", path.display()))
    }
}

/// A writer that remembers the first I/O error of the writer it wraps: the Parquet encoder
/// reports a failed write as its own error ("Invalid thrift: transport error"), so the disk's
/// error (a full disk, a quota) would otherwise be lost.
struct IoErrorTap<W> {
    inner: W,
    error: Option<std::io::Error>,
}

impl<W: Write> Write for IoErrorTap<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write(buf).inspect_err(|e| {
            self.error.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
        })
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush().inspect_err(|e| {
            self.error.get_or_insert_with(|| std::io::Error::new(e.kind(), e.to_string()));
        })
    }
}

/// Encodes `df` as zstd Parquet into `out` (destined for `path`). A failed write is reported
/// as the disk's error, naming the path; only an encoder error of its own blames the values.
/// Writes a polars `DataFrame` (for example parts read back and stacked) to `path` as
/// [`Table::write_parquet`] does: temp file then rename.
pub(crate) fn write_frame(df: &mut DataFrame, path: &Path) -> Result<()> {
    write_atomic_with(path, |file| encode_parquet(df, file, path))
}

fn encode_parquet(df: &mut DataFrame, out: impl Write, path: &Path) -> Result<()> {
    let mut tap = IoErrorTap { inner: out, error: None };
    let result = ParquetWriter::new(&mut tap).with_compression(ParquetCompression::Zstd(None)).finish(df).map(|_| ());
    match (result, tap.error) {
        (_, Some(io)) => {
            let hint = if io.raw_os_error() == Some(28) || io.kind() == std::io::ErrorKind::StorageFull {
                "the disk is full: free space there or write elsewhere"
            } else {
                "check free disk space and permissions"
            };
            bail!("cannot write {}: {io}; {hint}", path.display())
        }
        (Err(e), None) => bail!("cannot encode Parquet for {}: {e}; check the column values", path.display()),
        (Ok(()), None) => Ok(()),
    }
}

/// A value type a table column can hold; [`Columns::col`] picks the column type from it.
pub trait Cell: Sized {
    /// Appends the column `name` holding `values` to `table`.
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>);
}

impl Cell for String {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.str_col(name, values);
    }
}

impl Cell for f64 {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.f64_col(name, values);
    }
}

impl Cell for i64 {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.i64_col(name, values);
    }
}

impl Cell for u64 {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.u64_col(name, values);
    }
}

impl Cell for bool {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.bool_col(name, values);
    }
}

impl Cell for Option<f64> {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.opt_f64_col(name, values);
    }
}

impl Cell for Vec<i64> {
    fn push_column(table: &mut Table, name: &str, values: Vec<Self>) {
        table.list_i64_col(name, values);
    }
}

/// A value type whose column holds its name as a string: the enums of the analyses
/// (`name(self)` gives the string written to the table).
macro_rules! named_cells {
    ($($t:ty),* $(,)?) => {
        $(
            impl $crate::report::table::Cell for $t {
                fn push_column(table: &mut $crate::report::table::Table, name: &str, values: Vec<Self>) {
                    table.str_col(name, values.into_iter().map(|v| v.name().to_string()).collect());
                }
            }
        )*
    };
}
pub(crate) use named_cells;

/// A struct field that becomes table columns: a [`Cell`] value is one column named after the
/// field; a group of values (a confidence interval, the barriers of a path) adds its own
/// fixed columns and ignores the field name.
pub trait Field {
    /// Appends the columns of the field `name`, read from every row by `get`.
    fn add_columns<R>(cols: &mut Columns<'_, R>, name: &str, get: impl Fn(&R) -> &Self);
}

impl<C: Cell + Clone> Field for C {
    fn add_columns<R>(cols: &mut Columns<'_, R>, name: &str, get: impl Fn(&R) -> &Self) {
        cols.col(name, |r| get(r).clone());
    }
}

/// Declares a table row: a struct whose fields are the table's columns, in order, each named
/// once (the column is called as the field). It implements [`Row`] by handing every field to
/// [`Field::add_columns`], so a [`Cell`] field is one column and a group field (for example a
/// [`crate::stats::MeanCi`]) its fixed columns. (Crate-internal, so the example is not a doc
/// test; `analysis/schemas.rs` pins the schemas the macro produces.)
///
/// ```text
/// table_row! {
///     /// A row of `example.parquet`.
///     pub struct ExampleRow {
///         /// Method name.
///         pub method: String,
///         /// Test accuracy.
///         pub accuracy: f64,
///     }
/// }
/// ```
macro_rules! table_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$fmeta:meta])* $fvis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$fmeta])* $fvis $field : $ty ),*
        }

        impl $crate::report::table::Row for $name {
            fn columns(cols: &mut $crate::report::table::Columns<'_, Self>) {
                $( <$ty as $crate::report::table::Field>::add_columns(cols, stringify!($field), |r: &Self| &r.$field); )*
            }
        }
    };
}
pub(crate) use table_row;

/// One row of a typed table: a plain struct whose [`Row::columns`] names every column once,
/// in table order, with the cell it reads; `table_row!` declares the struct and writes this
/// impl from the fields. [`Table::from_rows`] builds the table from a slice
/// of rows; its schema (names, order and types) does not depend on the rows, so an empty
/// slice still gives every column its type.
pub trait Row: Sized {
    /// Adds the columns in order, e.g. `cols.col("method", |r| r.method.clone()).col("seed", |r| r.seed)`.
    fn columns(cols: &mut Columns<'_, Self>);
}

/// The column builder [`Row::columns`] fills: each [`Columns::col`] reads one cell from
/// every row and appends the column.
pub struct Columns<'a, R> {
    rows: &'a [R],
    table: Table,
}

impl<R> Columns<'_, R> {
    /// Appends the column `name` holding `cell(row)` for every row; its type is `C`'s.
    pub fn col<C: Cell>(&mut self, name: &str, cell: impl Fn(&R) -> C) -> &mut Self {
        C::push_column(&mut self.table, name, self.rows.iter().map(cell).collect());
        self
    }
}

impl Table {
    /// The table of typed rows, one table row per element, columns as [`Row::columns`] lists them.
    pub fn from_rows<R: Row>(rows: &[R]) -> Table {
        let mut cols = Columns { rows, table: Table::new() };
        R::columns(&mut cols);
        cols.table
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("copra-report-table-{name}-{}.parquet", std::process::id()))
    }

    /// A disk that fills up after `room` bytes.
    struct FullDisk {
        room: usize,
    }

    impl Write for FullDisk {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.room == 0 {
                return Err(std::io::Error::from_raw_os_error(28));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_full_disk_is_named_not_blamed_on_the_values() {
        // Issue 25: a full disk read "check the column values" or "Invalid thrift: transport error".
        let mut t = Table::new();
        t.f64_col("x", (0..5000).map(|i| i as f64 * 0.37).collect()).str_col("s", vec!["abc".into(); 5000]);
        let path = Path::new("/out/table.parquet");
        let mut full = Vec::new();
        encode_parquet(&mut t.to_dataframe().unwrap(), &mut full, path).unwrap();
        for room in [0, 4, 10, 100, full.len() / 2, full.len() - 1] {
            let mut df = t.to_dataframe().unwrap();
            let err = encode_parquet(&mut df, FullDisk { room }, path).unwrap_err().to_string();
            assert!(
                err.contains("/out/table.parquet")
                    && err.contains("the disk is full")
                    && !err.contains("column values"),
                "room {room}: {err}"
            );
        }
        let mut df = t.to_dataframe().unwrap();
        assert!(encode_parquet(&mut df, FullDisk { room: full.len() }, path).is_ok());
    }

    #[test]
    fn round_trip_every_column_type() {
        let path = scratch("roundtrip");
        let mut t = Table::new();
        t.str_col("space", vec!["weight".into(), "lora-ab".into(), "β é".into()])
            .f64_col("acc", vec![0.5, f64::NAN, -1.25e-9])
            .i64_col("step", vec![-3, 0, i64::MAX])
            .u64_col("seed", vec![0, 7, u64::MAX])
            .bool_col("trained", vec![true, false, true])
            .opt_f64_col("loss", vec![Some(1.5), None, Some(0.0)])
            .list_i64_col("blocks", vec![vec![0, 3, 11], vec![], vec![5]]);
        assert_eq!(t.len(), 3);
        assert!(!t.is_empty());
        t.write_parquet(&path).unwrap();

        let df = Table::read_parquet(&path).unwrap();
        assert_eq!(df.height(), 3);
        let names: Vec<String> = df.get_column_names().iter().map(|s| s.to_string()).collect();
        assert_eq!(names, ["space", "acc", "step", "seed", "trained", "loss", "blocks"]);

        let s: Vec<Option<&str>> = df.column("space").unwrap().str().unwrap().iter().collect();
        assert_eq!(s, [Some("weight"), Some("lora-ab"), Some("β é")]);
        let a: Vec<Option<f64>> = df.column("acc").unwrap().f64().unwrap().iter().collect();
        assert_eq!(a[0], Some(0.5));
        assert!(a[1].unwrap().is_nan());
        assert_eq!(a[2], Some(-1.25e-9));
        let i: Vec<Option<i64>> = df.column("step").unwrap().i64().unwrap().iter().collect();
        assert_eq!(i, [Some(-3), Some(0), Some(i64::MAX)]);
        let u: Vec<Option<u64>> = df.column("seed").unwrap().u64().unwrap().iter().collect();
        assert_eq!(u, [Some(0), Some(7), Some(u64::MAX)]);
        let b: Vec<Option<bool>> = df.column("trained").unwrap().bool().unwrap().iter().collect();
        assert_eq!(b, [Some(true), Some(false), Some(true)]);
        let l: Vec<Option<f64>> = df.column("loss").unwrap().f64().unwrap().iter().collect();
        assert_eq!(l, [Some(1.5), None, Some(0.0)]);
        assert_eq!(df.column("loss").unwrap().null_count(), 1);

        let blocks = df.column("blocks").unwrap();
        assert_eq!(blocks.dtype(), &DataType::List(Box::new(DataType::Int64)));
        let list = blocks.list().unwrap();
        let lists: Vec<Vec<i64>> = (0..list.len())
            .map(|i| {
                let s = list.get_as_series(i).expect("list cells are never null");
                s.i64().unwrap().iter().map(|v| v.unwrap()).collect()
            })
            .collect();
        assert_eq!(lists, vec![vec![0, 3, 11], vec![], vec![5]]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn empty_rows_round_trip_with_types() {
        let path = scratch("empty");
        let mut t = Table::new();
        t.f64_col("x", vec![]).list_i64_col("l", vec![]);
        assert!(t.is_empty());
        t.write_parquet(&path).unwrap();
        let df = Table::read_parquet(&path).unwrap();
        assert_eq!(df.height(), 0);
        assert_eq!(df.column("l").unwrap().dtype(), &DataType::List(Box::new(DataType::Int64)));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mismatched_lengths_name_the_column() {
        let path = scratch("mismatch");
        let mut t = Table::new();
        t.f64_col("x", vec![1.0, 2.0]).i64_col("bad_col", vec![1]);
        let err = t.write_parquet(&path).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad_col"), "{msg}");
        assert!(!path.exists());
    }

    #[test]
    fn duplicate_names_and_no_columns_are_errors() {
        let path = scratch("dup");
        let mut t = Table::new();
        t.f64_col("x", vec![1.0]).f64_col("x", vec![2.0]);
        assert!(t.write_parquet(&path).unwrap_err().to_string().contains("'x'"));
        assert!(Table::new().write_parquet(&path).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn schema_description() {
        let mut t = Table::new();
        t.str_col("a", vec![]).opt_f64_col("b", vec![]).list_i64_col("c", vec![]).u64_col("d", vec![]);
        assert_eq!(
            t.describe_schema(),
            vec![
                ("a".to_string(), "String"),
                ("b".to_string(), "Float64 (nullable)"),
                ("c".to_string(), "List(Int64)"),
                ("d".to_string(), "UInt64"),
            ]
        );
        assert_eq!(t.num_columns(), 4);
    }

    #[test]
    fn missing_file_is_a_clear_error() {
        let err = Table::read_parquet(Path::new("/nonexistent/x.parquet")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/x.parquet"));
    }

    table_row! {
        /// A row with one cell of every column type: each field is a column of its name.
        struct Every {
            name: String,
            x: f64,
            step: i64,
            seed: u64,
            flag: bool,
            loss: Option<f64>,
            blocks: Vec<i64>,
        }
    }

    #[test]
    fn from_rows_equals_the_column_builder_and_keeps_types_without_rows() {
        let rows = [
            Every { name: "a".into(), x: 0.5, step: -1, seed: 7, flag: true, loss: None, blocks: vec![1, 2] },
            Every { name: "b".into(), x: f64::NAN, step: 3, seed: 0, flag: false, loss: Some(2.0), blocks: vec![] },
        ];
        let mut by_hand = Table::new();
        by_hand
            .str_col("name", vec!["a".into(), "b".into()])
            .f64_col("x", vec![0.5, f64::NAN])
            .i64_col("step", vec![-1, 3])
            .u64_col("seed", vec![7, 0])
            .bool_col("flag", vec![true, false])
            .opt_f64_col("loss", vec![None, Some(2.0)])
            .list_i64_col("blocks", vec![vec![1, 2], vec![]]);
        let t = Table::from_rows(&rows);
        assert_eq!(t.describe_schema(), by_hand.describe_schema());
        assert_eq!(t.len(), 2);
        // NaN != NaN, so compare the bytes the two tables write.
        let (p, q) = (scratch("rows-typed"), scratch("rows-hand"));
        t.write_parquet(&p).unwrap();
        by_hand.write_parquet(&q).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), std::fs::read(&q).unwrap());
        std::fs::remove_file(&p).unwrap();
        std::fs::remove_file(&q).unwrap();
        let empty = Table::from_rows::<Every>(&[]);
        assert!(empty.is_empty());
        assert_eq!(empty.describe_schema(), by_hand.describe_schema());
    }
}
