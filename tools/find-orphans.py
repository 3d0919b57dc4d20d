"""Lists data files of an icefall table that no snapshot references (uploaded, never committed:
the run was killed between upload and commit), and the staging files of uploads a killed run
left unfinished (`<name>.parquet#<n>`). They are safe to delete once older than one commit
interval.

usage: python tools/find-orphans.py WAREHOUSE [NAMESPACE.TABLE]   (needs pyiceberg[sql-sqlite])
"""

import os
import re
import sys

from pyiceberg.catalog.sql import SqlCatalog

warehouse = os.path.abspath(sys.argv[1])
name = sys.argv[2] if len(sys.argv) > 2 else "ns.events"
catalog = SqlCatalog("icefall", uri=f"sqlite:///{warehouse}/catalog.db", warehouse=f"file://{warehouse}")
table = catalog.load_table(name)
live = set(table.inspect.all_files().column("file_path").to_pylist())
data = os.path.join(table.location().removeprefix("file://"), "data")
for entry in sorted(os.listdir(data)):
    staging = re.search(r"\.parquet#\d+$", entry) is not None
    if staging or (entry.endswith(".parquet") and f"file://{data}/{entry}" not in live):
        print(os.path.join(data, entry))
