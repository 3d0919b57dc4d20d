"""Reads an icefall table with PyIceberg, an independent Iceberg implementation.

usage: pyiceberg_read.py WAREHOUSE TABLE EXPECTED_ROWS TOPIC [KEYS]

Checks: the row count; the schema's field ids; that columns resolve by field id (after renaming
`value` in the table, the data still reads under the new name); the snapshot summary's offsets.
With KEYS (the topic holds `icefall-loadgen`'s sample records of the default shape over KEYS
keys), every row's key, value and headers byte for byte against the sample record its `seq`
header names, read through PyIceberg and again through DuckDB's own Parquet reader, and every
sample record exactly once.
Prints one line of facts and exits non-zero on any mismatch.
"""

import json
import sys

from pyiceberg.catalog.sql import SqlCatalog

warehouse, table_name, expected, topic = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
catalog = SqlCatalog("icefall", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
table = catalog.load_table(table_name)

ids = {f.name: f.field_id for f in table.schema().fields}
want = {"_kafka_partition": 1, "_kafka_offset": 2, "_kafka_timestamp": 3, "_kafka_key": 4, "_kafka_headers": 5, "value": 6}
assert ids == want, f"field ids {ids} != {want}"

data = table.scan().to_arrow()
assert data.num_rows == expected, f"{data.num_rows} rows, expected {expected}"
pairs = set(zip(data["_kafka_partition"].to_pylist(), data["_kafka_offset"].to_pylist()))
assert len(pairs) == expected, f"{expected - len(pairs)} duplicate (partition, offset) pairs"
values_before = data["value"].null_count

MASK = (1 << 64) - 1


def mix(x):
    """tools/sample.rs's mix (SplitMix64's finalizer)."""
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def sample(i, keys):
    """Sample record `i` of the default shape: (key, value, headers)."""
    key = None if i % 20 == 0 else b"key-%06d" % (mix(i) % keys)
    if i % 101 == 0:
        value = None
    elif i % 25 == 0:
        value = b""
    else:
        v, x = bytearray(), mix(i ^ 0x5EED)
        while len(v) < 100:
            x = mix(x)
            v += x.to_bytes(8, "little")[: min(100 - len(v), 8)]
        value = bytes(v)
    headers = [("empty", b"")] if i % 7 == 0 else []
    headers.append(("seq", str(i).encode()))
    if i % 3 == 0:
        headers.append(("trace", mix(i).to_bytes(8, "big") * 2))
    return key, value, headers


def check_rows(rows, keys, reader):
    seen = set()
    for key, value, headers in rows:
        hs = [(h["key"], h["value"]) for h in headers]
        seq = int(dict(hs)["seq"])
        want = sample(seq, keys)
        got = (key, value, hs)
        assert got == want, f"{reader}: seq {seq}: {got!r} != {want!r}"
        seen.add(seq)
    assert seen == set(range(expected)), f"{reader}: {expected - len(seen)} sample records missing"


if len(sys.argv) > 5:
    keys = int(sys.argv[5])
    cols = [data[c].to_pylist() for c in ("_kafka_key", "value", "_kafka_headers")]
    check_rows(zip(*cols), keys, "pyiceberg")
    import duckdb

    paths = [t.file.file_path.removeprefix("file://") for t in table.scan().plan_files()]
    got = duckdb.sql(f"select _kafka_key, value, _kafka_headers from read_parquet({paths!r})")
    check_rows(got.fetchall(), keys, "duckdb")

summary = table.current_snapshot().summary
offsets = json.loads(summary[f"icefall.offsets.{topic}"])
assert sum(offsets.values()) == expected, f"offsets {offsets} do not add up to {expected}"

# Resolution by id: rename the column in the table's schema; the Parquet files still say "value".
with table.update_schema() as update:
    update.rename_column("value", "payload")
renamed = catalog.load_table(table_name).scan(selected_fields=("payload", "_kafka_offset")).to_arrow()
assert renamed.num_rows == expected
assert renamed["payload"].null_count == values_before, "renamed column did not resolve by field id"
checked = "yes" if len(sys.argv) > 5 else "no"
print(f"pyiceberg rows={data.num_rows} partitions={len(offsets)} value_nulls={values_before} resolved_by_id=yes rows_checked={checked}")
