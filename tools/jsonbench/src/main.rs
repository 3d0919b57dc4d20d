//! Which JSON decoder should `--format json` use? Each candidate turns the kernels bench's 8,192
//! sample JSON values (`tools/sample.rs`, the `tests/data/sample-json.schema.json` fields) into
//! the same six Arrow columns, driven by the schema at run time as icefall is (no derive); the
//! batches must be equal. Prints the best of 15 timed passes per decoder, after 5 warm-ups.

#[path = "../../sample.rs"]
mod sample;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::builder::{BooleanBuilder, Float64Builder, Int64Builder, StringBuilder};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema, SchemaRef};

const N: u64 = 8_192;
const FIELDS: [&str; 6] = ["seq", "user", "amount", "ok", "ts", "note"];

/// One field's value, borrowed from the parser's representation.
#[derive(Clone, Copy)]
enum Cell<'a> {
    Null,
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(&'a str),
}

/// The six columns' builders; `push` appends one row of cells.
struct Columns {
    seq: Int64Builder,
    user: StringBuilder,
    amount: Float64Builder,
    ok: BooleanBuilder,
    ts: Int64Builder,
    note: StringBuilder,
}

impl Columns {
    fn new(rows: usize, bytes: usize) -> Self {
        Self {
            seq: Int64Builder::with_capacity(rows),
            user: StringBuilder::with_capacity(rows, rows * 12),
            amount: Float64Builder::with_capacity(rows),
            ok: BooleanBuilder::with_capacity(rows),
            ts: Int64Builder::with_capacity(rows),
            note: StringBuilder::with_capacity(rows, bytes),
        }
    }

    fn push<'a>(&mut self, row: &[Cell<'a>; 6]) {
        fn int(c: Cell<'_>) -> Option<i64> {
            match c {
                Cell::I64(v) => Some(v),
                _ => None,
            }
        }
        fn text(c: Cell<'_>) -> Option<&str> {
            match c {
                Cell::Str(s) => Some(s),
                _ => None,
            }
        }
        self.seq.append_option(int(row[0]));
        self.user.append_option(text(row[1]));
        self.amount.append_option(match row[2] {
            Cell::F64(v) => Some(v),
            Cell::I64(v) => Some(v as f64),
            _ => None,
        });
        self.ok.append_option(match row[3] {
            Cell::Bool(v) => Some(v),
            _ => None,
        });
        self.ts.append_option(int(row[4]));
        self.note.append_option(text(row[5]));
    }

    fn finish(mut self, schema: &SchemaRef) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.seq.finish()),
            Arc::new(self.user.finish()),
            Arc::new(self.amount.finish()),
            Arc::new(self.ok.finish()),
            Arc::new(self.ts.finish()),
            Arc::new(self.note.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns).expect("batch")
    }
}

/// A DOM value's cell, by what it holds (simd-json and serde_json values share these methods).
macro_rules! cell {
    ($x:expr) => {
        if let Some(n) = $x.as_i64() {
            Cell::I64(n)
        } else if let Some(f) = $x.as_f64() {
            Cell::F64(f)
        } else if let Some(b) = $x.as_bool() {
            Cell::Bool(b)
        } else if let Some(s) = $x.as_str() {
            Cell::Str(s)
        } else {
            Cell::Null
        }
    };
}

fn slot(key: &str) -> Option<usize> {
    FIELDS.iter().position(|f| *f == key)
}

/// Arrow's tape decoder, as `src/decode/json.rs` drives it: every value into one tape, one flush.
fn arrow_tape(values: &[Vec<u8>], schema: &SchemaRef) -> RecordBatch {
    let mut d = arrow_json::ReaderBuilder::new(schema.clone())
        .with_batch_size(values.len())
        .build_decoder()
        .expect("decoder");
    for v in values {
        assert_eq!(d.decode(v).expect("decode"), v.len());
    }
    d.flush().expect("flush").expect("rows")
}

/// simd-json's borrowed DOM (it parses in place, so each value is first copied into a scratch
/// buffer), then each pair's key matched against the schema.
fn simd_dom(values: &[Vec<u8>], schema: &SchemaRef) -> RecordBatch {
    use simd_json::prelude::*;
    let mut cols = Columns::new(values.len(), values.iter().map(Vec::len).sum());
    let mut buffers = simd_json::Buffers::new(1024);
    let mut scratch = Vec::new();
    for v in values {
        scratch.clear();
        scratch.extend_from_slice(v);
        let doc = simd_json::to_borrowed_value_with_buffers(&mut scratch, &mut buffers).expect("json");
        let mut row = [Cell::Null; 6];
        for (k, x) in doc.as_object().expect("object").iter() {
            if let Some(i) = slot(k) {
                row[i] = cell!(x);
            }
        }
        cols.push(&row);
    }
    cols.finish(schema)
}

/// sonic-rs's lazy object iterator: no DOM, each field's raw text parsed by its column's type.
fn sonic_lazy(values: &[Vec<u8>], schema: &SchemaRef) -> RecordBatch {
    use sonic_rs::JsonValueTrait;
    let mut cols = Columns::new(values.len(), values.iter().map(Vec::len).sum());
    for v in values {
        let mut raw: [Option<sonic_rs::LazyValue<'_>>; 6] = Default::default();
        for pair in sonic_rs::to_object_iter(v.as_slice()) {
            let (k, x) = pair.expect("json");
            if let Some(i) = slot(&k) {
                raw[i] = Some(x);
            }
        }
        let row: [Cell<'_>; 6] = std::array::from_fn(|i| {
            let Some(x) = &raw[i] else { return Cell::Null };
            match schema.field(i).data_type() {
                DataType::Int64 => x.as_i64().map_or(Cell::Null, Cell::I64),
                DataType::Float64 => x.as_f64().map_or(Cell::Null, Cell::F64),
                DataType::Boolean => x.as_bool().map_or(Cell::Null, Cell::Bool),
                _ => x.as_str().map_or(Cell::Null, Cell::Str),
            }
        });
        cols.push(&row);
    }
    cols.finish(schema)
}

/// serde_json into a map of owned values: the baseline most hand-written consumers use.
fn serde_map(values: &[Vec<u8>], schema: &SchemaRef) -> RecordBatch {
    let mut cols = Columns::new(values.len(), values.iter().map(Vec::len).sum());
    for v in values {
        let doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(v).expect("json");
        let mut row = [Cell::Null; 6];
        for (k, x) in &doc {
            if let Some(i) = slot(k) {
                row[i] = cell!(x);
            }
        }
        cols.push(&row);
    }
    cols.finish(schema)
}

fn best(f: impl Fn() -> RecordBatch) -> Duration {
    for _ in 0..5 {
        std::hint::black_box(f());
    }
    (0..15)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .min()
        .expect("passes")
}

fn main() {
    let shape = sample::Shape {
        payload: sample::Payload::Json,
        null_value_every: 0,
        ..Default::default()
    };
    let values: Vec<Vec<u8>> = (0..N).filter_map(|i| shape.value(i)).collect();
    let bytes: usize = values.iter().map(Vec::len).sum();
    let schema: SchemaRef = Arc::new(Schema::new(vec![
        Field::new("seq", DataType::Int64, false),
        Field::new("user", DataType::Utf8, false),
        Field::new("amount", DataType::Float64, true),
        Field::new("ok", DataType::Boolean, true),
        Field::new("ts", DataType::Int64, true),
        Field::new("note", DataType::Utf8, true),
    ]));
    let want = arrow_tape(&values, &schema);
    type Decode = fn(&[Vec<u8>], &SchemaRef) -> RecordBatch;
    let candidates: [(&str, Decode); 4] = [
        ("arrow-json tape decoder", arrow_tape),
        ("simd-json borrowed DOM", simd_dom),
        ("sonic-rs lazy object iterator", sonic_lazy),
        ("serde_json Map", serde_map),
    ];
    println!("{N} values, {:.1} bytes each", bytes as f64 / N as f64);
    for (name, decode) in candidates {
        assert_eq!(decode(&values, &schema), want, "{name} decodes differently");
        let t = best(|| decode(&values, &schema));
        let ns = t.as_nanos() as f64 / N as f64;
        println!(
            "{name:32} {ns:7.1} ns/record {:6.2} M records/s {:6.0} MB/s",
            1e3 / ns,
            bytes as f64 / t.as_secs_f64() / 1e6
        );
    }
}
