"""A child process that reads a SQLite database with ADBC and writes the rows to stdout as an Arrow IPC stream:
``python -m connectors.database.sqlite_reader FILE BATCH_ROWS`` with the query on stdin.

It exists so ADBC's SQLite driver, which carries its own copy of SQLite, never runs in the agent's process
beside the agent's own sqlite3 (connectors.database.arrow). It opens the file read-only and writes nothing.
"""

from __future__ import annotations

import sys


def main(path: str, batch_rows: int, sql: str) -> int:
    import adbc_driver_sqlite.dbapi as adbc_sqlite
    import pyarrow.ipc

    conn = adbc_sqlite.connect(f"file:{path}?mode=ro")
    try:
        with conn.cursor() as cur:
            cur.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(batch_rows)})
            cur.execute(sql)
            reader = cur.fetch_record_batch()
            out = pyarrow.ipc.new_stream(sys.stdout.buffer, reader.schema)
            for batch in reader:
                out.write_batch(batch)
            out.close()  # the end-of-stream mark only after every row: an error leaves the stream unfinished
    finally:
        conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2]), sys.stdin.read()))
