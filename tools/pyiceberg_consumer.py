#!/usr/bin/env python3
"""The peer icefall's end-to-end bench compares against: a Python consumer that appends to an
Iceberg table with PyIceberg, written the way such consumers are (confluent-kafka's batch
`consume`, columns collected in Python lists, one `pyarrow` table and one PyIceberg append per
`--batch` records, the Kafka offsets stored in the same snapshot's summary so it is as
exactly-once as icefall).

It reads every partition of `--topic` from offset 0 until it has `--records` records (Tansu's
memory engine answers ListOffsets(latest) wrongly, so the bench passes the count it produced),
writes the same columns icefall writes (partition, offset, timestamp, key, headers, value) into
`ns.events` of a SQLite catalog in `--warehouse`, and prints one line:

    pyiceberg records=N seconds=S records_per_sec=R appends=A
"""

import argparse
import json
import sys
import time

import pyarrow as pa
from confluent_kafka import Consumer, KafkaException, TopicPartition
from pyiceberg.catalog.sql import SqlCatalog

SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32(), nullable=False),
        pa.field("offset", pa.int64(), nullable=False),
        pa.field("timestamp", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("key", pa.binary()),
        pa.field("headers", pa.map_(pa.string(), pa.binary())),
        pa.field("value", pa.binary()),
    ]
)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--warehouse", required=True)
    ap.add_argument("--records", type=int, required=True)
    ap.add_argument("--batch", type=int, default=250_000)
    ap.add_argument("--idle-timeout", type=float, default=30.0)
    a = ap.parse_args()

    catalog = SqlCatalog(
        "bench",
        uri=f"sqlite:///{a.warehouse}/catalog.db",
        warehouse=f"file://{a.warehouse}",
    )
    catalog.create_namespace_if_not_exists("ns")
    table = catalog.create_table_if_not_exists("ns.events", schema=SCHEMA)

    consumer = Consumer(
        {
            "bootstrap.servers": a.brokers,
            "group.id": "pyiceberg-bench",
            "enable.auto.commit": False,
            "fetch.max.bytes": 4 * 1024 * 1024,
            "max.partition.fetch.bytes": 4 * 1024 * 1024,
        }
    )
    meta = consumer.list_topics(a.topic, timeout=10)
    parts = sorted(meta.topics[a.topic].partitions)
    consumer.assign([TopicPartition(a.topic, p, 0) for p in parts])

    started = time.monotonic()
    cols = {name: [] for name in SCHEMA.names}
    next_offsets = {}
    total, appends, last_msg = 0, 0, time.monotonic()

    def append():
        nonlocal appends
        if not cols["offset"]:
            return
        batch = pa.Table.from_pydict(cols, schema=SCHEMA)
        table.append(
            batch,
            snapshot_properties={f"kafka.offsets.{a.topic}": json.dumps(next_offsets)},
        )
        appends += 1
        for v in cols.values():
            v.clear()

    while total < a.records:
        msgs = consumer.consume(num_messages=10_000, timeout=1.0)
        if not msgs:
            if time.monotonic() - last_msg > a.idle_timeout:
                sys.exit(f"pyiceberg_consumer: stuck at {total} of {a.records} records")
            continue
        last_msg = time.monotonic()
        for m in msgs:
            if m.error():
                raise KafkaException(m.error())
            _, ts = m.timestamp()
            cols["partition"].append(m.partition())
            cols["offset"].append(m.offset())
            cols["timestamp"].append(ts * 1000)
            cols["key"].append(m.key())
            cols["headers"].append(m.headers() or [])
            cols["value"].append(m.value())
            next_offsets[str(m.partition())] = m.offset() + 1
        total += len(msgs)
        if len(cols["offset"]) >= a.batch:
            append()
    append()
    secs = time.monotonic() - started
    consumer.close()
    print(
        f"pyiceberg records={total} seconds={secs:.3f} "
        f"records_per_sec={total / secs:.0f} appends={appends}"
    )


if __name__ == "__main__":
    main()
