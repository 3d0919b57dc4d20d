"""Reads an icefall table with PyIceberg, an independent Iceberg implementation.

usage: pyiceberg_read.py WAREHOUSE TABLE EXPECTED_ROWS TOPIC

Checks: the row count; the schema's field ids; that columns resolve by field id (after renaming
`value` in the table, the data still reads under the new name); the snapshot summary's offsets.
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

summary = table.current_snapshot().summary
offsets = json.loads(summary[f"icefall.offsets.{topic}"])
assert sum(offsets.values()) == expected, f"offsets {offsets} do not add up to {expected}"

# Resolution by id: rename the column in the table's schema; the Parquet files still say "value".
with table.update_schema() as update:
    update.rename_column("value", "payload")
renamed = catalog.load_table(table_name).scan(selected_fields=("payload", "_kafka_offset")).to_arrow()
assert renamed.num_rows == expected
assert renamed["payload"].null_count == values_before, "renamed column did not resolve by field id"
print(f"pyiceberg rows={data.num_rows} partitions={len(offsets)} value_nulls={values_before} resolved_by_id=yes")
