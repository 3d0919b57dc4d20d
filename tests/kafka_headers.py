"""Headers as Kafka has them, checked with clients icefall did not write.

usage: kafka_headers.py produce BROKER TOPIC N
       kafka_headers.py check WAREHOUSE TABLE N

produce: confluent-kafka (librdkafka) produces N records, lz4-compressed, whose headers repeat a
key and carry a null value. check: PyIceberg reads the table and every row's headers must be
exactly those produced, in order, with the null kept. Prints one line and exits non-zero on any
mismatch.
"""

import sys


def headers(i):
    return [("dup", b"first"), ("nul", None), ("dup", f"second-{i}".encode()), ("seq", str(i).encode()), ("", b"")]


mode = sys.argv[1]
if mode == "produce":
    from confluent_kafka import Producer

    broker, topic, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    errors = []
    p = Producer({"bootstrap.servers": broker, "compression.type": "lz4", "linger.ms": 20, "acks": "all"})
    for i in range(n):
        p.produce(topic, key=f"key-{i % 37}".encode(), value=f"value-{i}".encode(), headers=headers(i),
                  on_delivery=lambda err, msg: errors.append(err) if err else None)
        p.poll(0)
    left = p.flush(60)
    assert left == 0 and not errors, f"{left} undelivered, errors {errors[:3]}"
    print(f"produced records={n}")
elif mode == "check":
    from pyiceberg.catalog.sql import SqlCatalog

    warehouse, table_name, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    catalog = SqlCatalog("icefall", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
    rows = catalog.load_table(table_name).scan().to_arrow().to_pylist()
    assert len(rows) == n, f"{len(rows)} rows, expected {n}"
    seen = set()
    for r in rows:
        got = [(h["key"], h["value"]) for h in r["_kafka_headers"]]
        seq = int(dict((k, v) for k, v in got if k == "seq")["seq"])
        assert got == headers(seq), f"seq {seq}: {got} != {headers(seq)}"
        assert r["value"] == f"value-{seq}".encode(), f"seq {seq}: value {r['value']!r}"
        seen.add(seq)
    assert seen == set(range(n)), f"{n - len(seen)} records missing"
    print(f"headers rows={len(rows)} exact=yes")
else:
    sys.exit(f"unknown mode {mode}")
