"""The learner's live record: every Transition appended to rosbag2 bags as it arrives, safe against a crash;
in a fleet each arm's in bags of its own."""
from __future__ import annotations

import re
import time
from pathlib import Path

from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.storage_mcap import McapWriter

from tdmpc_ros.data.episode import stamp_ns
from tdmpc_ros.data.transitions import arm_topic, bag_message
from tdmpc_ros.data.typestore import TRANSITION, typestore

BAG_NAME = re.compile(r"online_(\d{4,})$")


class OnlineBagWriter:
    """Appends Transitions to bags `online_0000`, `online_0001`, ... in `folder`.

    A bag is finished at the first episode end past `max_bytes`, so no episode is split across bags.

    rosbags' writers keep data in memory until close (MCAP: the open chunk, with the summary and footer
    only written at close; SQLite: one open transaction, metadata.yaml also at close). `write` therefore
    hands what it has to the OS at least every `flush_every_s` (and `flush()` does on demand), so a killed
    process loses at most that tail; `read_episodes` reads such an unfinished bag (no metadata.yaml, no MCAP
    footer) up to its last flushed message.
    """

    def __init__(self, folder, storage: str = "mcap", max_bytes: int = 64 * 1024 * 1024,
                 topic: str = "/transitions", flush_every_s: float = 1.0):
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage {storage!r}: choose mcap or sqlite3")
        self.folder = Path(folder)
        self.storage = storage
        self.max_bytes = max_bytes
        self.topic = topic
        self.flush_every_s = flush_every_s
        self.count = 0
        """Transitions written (all bags)."""
        self.paths: list[Path] = []
        self._writer: Writer | None = None
        self._connection = None
        self._bytes = 0
        self._last_flush = time.monotonic()

    def _open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in self.folder.iterdir() if (m := BAG_NAME.match(p.name))]
        path = self.folder / f"online_{max(taken, default=-1) + 1:04d}"
        self._writer = Writer(path, version=9, storage_plugin=StoragePlugin[self.storage.upper()])
        self._writer.open()
        self._connection = self._writer.add_connection(self.topic, TRANSITION, typestore=typestore())
        self._bytes = 0
        self.paths.append(path)

    def write(self, msg, log_stamp_ns: int | None = None) -> None:
        """Append one Transition-like message (rclpy or rosbags); the bag's log time defaults to its header stamp."""
        data = typestore().serialize_cdr(bag_message(msg), TRANSITION)
        self.write_cdr(data, stamp_ns(msg) if log_stamp_ns is None else log_stamp_ns,
                       msg.terminated or msg.truncated)

    def write_cdr(self, data: bytes, log_time_ns: int, episode_end: bool) -> None:
        """Append one Transition already serialised (as a raw subscription receives it: stored unchanged);
        `episode_end`: its terminated or truncated flag."""
        if self._writer is None:
            self._open()
        self._writer.write(self._connection, log_time_ns, data)
        self.count += 1
        self._bytes += len(data)
        if self._bytes >= self.max_bytes and episode_end:
            self._close_bag()
        elif time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Hand everything written so far to the OS (it survives this process being killed)."""
        self._last_flush = time.monotonic()
        if self._writer is None:
            return
        storage = self._writer.storage  # rosbags' storage plugin: no public flush, so its documented state
        if isinstance(storage, McapWriter):
            if storage.chunk.msgs:
                storage.close_chunk()  # writes the chunk (the first carries schema and channel records)
            storage.bio.flush()
        else:
            storage.conn.commit()

    def _close_bag(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Finish the current bag (MCAP summary, metadata.yaml)."""
        self._close_bag()

    def __enter__(self) -> OnlineBagWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ArmBags:
    """One OnlineBagWriter per arm: a lone arm's ('') in `folder` on /transitions, arm `a`'s in `folder/a` on
    /a/transitions. Each arm's bags roll at that arm's own episode ends, so no episode of any arm is split across
    bags, and reading them back (`read_episodes`, per topic) keeps each arm's episode ids apart."""

    def __init__(self, folder, **options):
        """`options`: OnlineBagWriter's (storage, max_bytes, flush_every_s)."""
        self.folder = Path(folder)
        self.options = options
        self.writers: dict[str, OnlineBagWriter] = {}

    def write_cdr(self, data: bytes, log_time_ns: int, episode_end: bool, arm: str = "") -> None:
        """OnlineBagWriter.write_cdr into `arm`'s bags (LiveIntake's `write`)."""
        writer = self.writers.get(arm)
        if writer is None:
            writer = self.writers[arm] = OnlineBagWriter(self.folder / arm if arm else self.folder,
                                                         topic=arm_topic(arm), **self.options)
        writer.write_cdr(data, log_time_ns, episode_end)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
