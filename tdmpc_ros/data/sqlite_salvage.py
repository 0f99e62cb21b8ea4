"""rosbag2 SQLite storage files that rosbags' reader cannot use as they are.

rosbags opens a .db3 read-only with `immutable=1`, so SQLite ignores a write-ahead log beside it (`-wal`: the
ROS 2 recorder's "resilient" preset) and a hot rollback journal (`-journal`: a writer killed inside a
transaction): committed messages still in the log are lost, and pages of an unfinished transaction read as if
committed. `prepared` lets SQLite replay the log or roll the journal back, on a copy so the user's files stay
untouched; a torn log ends at its last whole commit, as SQLite guarantees.

rosbags also counts every row when it opens a file, so a file cut short or with a corrupt page cannot be opened
at all. `SqliteSalvage` reads its topics, then its message rows in storage order up to the first unreadable one.
"""
from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat

LOG_SUFFIXES = ("-wal", "-journal")


def logs_beside(path: Path) -> list[Path]:
    """The non-empty write-ahead log and rollback journal entries next to the database at `path`."""
    found = []
    for suffix in LOG_SUFFIXES:
        log = path.with_name(path.name + suffix)
        try:
            if log.lstat().st_size or not log.is_file():  # empty regular logs hold nothing to apply
                found.append(log)
        except OSError:
            continue
    return found


def _cut_bytes(path: Path) -> tuple[int, int]:
    """(file size, bytes past its last whole page): SQLite would read the rest of a cut page as zeros."""
    with open(path, "rb") as f:
        header = f.read(18)
        size = os.fstat(f.fileno()).st_size
    if len(header) < 18 or not header.startswith(b"SQLite format 3\0"):
        return size, 0
    page = int.from_bytes(header[16:18], "big")
    return size, size % (65536 if page == 1 else page)


def unsettled(path: Path) -> bool:
    """Whether rosbags would misread the database at `path`: a log beside it, or it ends inside a page."""
    return bool(logs_beside(path)) or _cut_bytes(path)[1] > 0


@contextmanager
def prepared(path: Path, logs: list[Path]) -> Iterator[tuple[Path, str]]:
    """(the database to read, what was done to it): a copy with `logs` (regular files) applied by SQLite, or a
    copy of the whole pages of a file cut inside a page (the zeros SQLite would read for the rest of that page
    make rows of garbage), or `path` itself. Copies are deleted on exit."""
    size, cut = _cut_bytes(path)
    if not logs and not cut:
        yield path, ""
        return
    with tempfile.TemporaryDirectory(prefix="tdmpc-db3-") as folder:
        copy = Path(folder) / path.name
        if logs:
            shutil.copyfile(path, copy)
            for log in logs:
                shutil.copyfile(log, Path(folder) / (copy.name + log.name[len(path.name):]))
            with closing(sqlite3.connect(copy)) as db:
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # rolls a hot journal back
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # the log's commits into the file
            done = (f"unfinished writes in {', '.join(log.name for log in logs)} settled by SQLite on a copy: "
                    f"committed messages kept, uncommitted ones dropped")
        else:
            with open(path, "rb") as src, open(copy, "wb") as dst:
                shutil.copyfileobj(src, dst)
                dst.truncate(size - cut)
            done = f"cut at byte {size}, inside a page: read without that page's {cut} bytes"
        yield copy, done


class SqliteSalvage:
    """A storage reader with rosbags' interface (open, connections, messages, close) over whatever rows of a
    damaged rosbag2 SQLite file still read; `messages` raises the SQLite error where reading stops."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.connections: list[Connection] = []
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.db = sqlite3.connect(f"{self.path.absolute().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            # A file shorter than its header says is "malformed" as a whole unless the schema is left unchecked
            # (a read-only connection still writes nothing); rows on the pages it holds then read.
            self.db.execute("PRAGMA writable_schema=ON")
            columns = {row[1] for row in self.db.execute("PRAGMA table_info(topics)")}
            digest = "type_description_hash" if "type_description_hash" in columns else "''"
            topics = self.db.execute(f"SELECT id, name, type, serialization_format, {digest} FROM topics").fetchall()
        except Exception:
            self.close()
            raise
        none = MessageDefinition(MessageDefinitionFormat.NONE, "")
        self.connections = [Connection(key, name, msgtype, none, digest, 0, ConnectionExtRosbag2(encoding, []), self)
                            for key, name, msgtype, encoding, digest in topics]

    def messages(self, connections, start=None, stop=None) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, log time, data) of the rows on `connections`, in rowid (storage) order: no index needed."""
        wanted = {c.id: c for c in connections}
        for key, log_time, data in self.db.execute("SELECT topic_id, timestamp, data FROM messages ORDER BY id"):
            if key in wanted and (start is None or log_time >= start) and (stop is None or log_time < stop):
                yield wanted[key], log_time, data

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
