"""MCAP storage files read record by record from their start, as far as they are whole.

rosbags' McapReader needs the summary and footer a writer adds at close; on a file without them (its writer
was killed, or the file was cut) its fallback scan stops with an error at the first incomplete record, so a
torn chunk loses every message in it, and the rosbag2 writers put a whole episode or more in one chunk. Here:
- every message record stored whole before the tear is read, also inside the torn chunk (compressed chunks
  through a streaming decompressor, which gives back each whole compressed block);
- a chunk that is corrupt but whose length is intact (bad checksum, undecodable) is skipped and reported,
  and the records after it are still read;
- the summary's statistics, when the file has them, give the message count per topic the file claims.

Layout (https://mcap.dev/spec): magic, then records of opcode (u8), body length (u64) and body.
"""
from __future__ import annotations

import os
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lz4.frame
from rosbags.interfaces import Connection, ConnectionExtRosbag2, MessageDefinition, MessageDefinitionFormat

try:
    from compression import zstd  # Python 3.14
except ImportError:
    from backports import zstd

MAGIC = b"\x89MCAP0\r\n"
FOOTER, SCHEMA, CHANNEL, MESSAGE, CHUNK, STATISTICS, DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0B, 0x0F
KINDS = {SCHEMA: "schema", CHANNEL: "channel", MESSAGE: "message", CHUNK: "chunk"}  # read in the data section
NAMES = {**KINDS, 0x01: "header", 0x07: "message index", 0x08: "chunk index",
         0x0C: "metadata", STATISTICS: "statistics", DATA_END: "data end"}
RECORD = struct.Struct("<BQ")
CHUNK_HEAD = struct.Struct("<QQQI")  # start and end log time, uncompressed size, uncompressed CRC-32 (0: none)
MESSAGE_HEAD = struct.Struct("<HIQQ")  # channel id, sequence, log time, publish time
U16, U32, U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")
STATISTICS_FIXED = 42  # message, schema, channel, attachment, metadata, chunk counts; start and end time
DEFINITION_FORMATS = {"ros2msg": MessageDefinitionFormat.MSG, "ros2idl": MessageDefinitionFormat.IDL,
                      "omgidl": MessageDefinitionFormat.IDL}


@dataclass
class Walk:
    """How one pass over the file ended."""

    tear: str | None = None
    """Where and how the file is cut ("at byte B (inside ...)"), if it ends inside a record."""
    data_whole: bool = False
    """The data section was read to its end (a Data End record or the footer): no message is missing."""
    footer: bool = False
    corrupt: list[str] = field(default_factory=list)
    """Records skipped whole: their length was intact but their content was not."""


def _string(body: bytes, at: int) -> tuple[str, int]:
    (size,) = U32.unpack_from(body, at)
    if at + 4 + size > len(body):
        raise struct.error("string runs past its record")
    return bytes(body[at + 4:at + 4 + size]).decode(), at + 4 + size


def _decompress(compression: str, data: bytes, size: int) -> bytes:
    """At most `size` bytes (what the chunk claims), through streaming decompressors: on a cut stream they
    return what its whole blocks hold."""
    if compression == "":
        return data
    if compression == "zstd":
        return zstd.ZstdDecompressor().decompress(data, max_length=size)
    if compression == "lz4":
        return lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=size)
    raise ValueError(f"unknown compression {compression!r}")


class McapSalvage:
    """A storage reader with rosbags' interface (open, connections, messages, close) for any MCAP file, whole
    or not. `open` reads the file once for its schemas, channels, message counts and damage (`walk`);
    `messages` reads it again, up to the same point."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.connections: list[Connection] = []
        self.claimed: dict[str, int] | None = None
        """Messages per topic by the summary's statistics; None without them."""
        self.found = 0
        """Whole messages the file holds."""
        self.walk = Walk()
        self._file = None
        self._size = 0

    def open(self) -> None:
        self._file = open(self.path, "rb")
        self._size = os.fstat(self._file.fileno()).st_size  # one size for both passes, should the file grow
        magic = self._file.read(len(MAGIC))
        if magic != MAGIC:
            self.close()
            raise ValueError("empty file" if not magic else f"truncated at byte {len(magic)}, inside the MCAP magic"
                             if MAGIC.startswith(magic) else "not an MCAP file (no MCAP magic at its start)")
        schemas: dict[int, tuple[str, MessageDefinition]] = {}
        channels: dict[int, Connection] = {}
        counts: Counter[int] = Counter()
        statistics: dict[int, int] | None = None
        for op, body in self._records(self.walk):
            try:
                if op == SCHEMA:
                    (key,) = U16.unpack_from(body)
                    name, at = _string(body, 2)
                    encoding, at = _string(body, at)
                    (size,) = U32.unpack_from(body, at)
                    text = bytes(body[at + 4:at + 4 + size]).decode()
                    fmt = DEFINITION_FORMATS.get(encoding, MessageDefinitionFormat.NONE)
                    schemas[key] = (name, MessageDefinition(fmt, text))
                elif op == CHANNEL:
                    key, schema = struct.unpack_from("<HH", body)
                    topic, at = _string(body, 4)
                    encoding, _ = _string(body, at)
                    msgtype, msgdef = schemas.get(schema, ("", MessageDefinition(MessageDefinitionFormat.NONE, "")))
                    channels.setdefault(key, Connection(key, topic, msgtype, msgdef, "", 0,
                                                        ConnectionExtRosbag2(encoding, []), self))
                elif op == MESSAGE:
                    counts[MESSAGE_HEAD.unpack_from(body)[0]] += 1
                else:  # summary statistics
                    (size,) = U32.unpack_from(body, STATISTICS_FIXED)
                    entries = body[STATISTICS_FIXED + 4:STATISTICS_FIXED + 4 + size]
                    statistics = dict(struct.iter_unpack("<HQ", entries))
            except (struct.error, UnicodeDecodeError) as exc:
                self.walk.corrupt.append(f"unreadable {KINDS.get(op, 'statistics')} record ({exc}): skipped")
        self.connections = [c._replace(msgcount=counts[c.id]) for c in channels.values()]
        self.found = sum(counts.values())
        orphans = sum(n for key, n in counts.items() if key not in channels)
        if orphans:
            self.walk.corrupt.append(f"{orphans} messages on channels without a channel record: skipped")
        if statistics is not None:
            self.claimed = Counter()
            for key, n in statistics.items():
                self.claimed[channels[key].topic if key in channels else f"channel id {key}"] += n

    def messages(self, connections, start=None, stop=None) -> Iterator[tuple[Connection, int, bytes]]:
        """(connection, log time, data) of each whole message on `connections` in file order."""
        wanted = {c.id: c for c in connections}
        for op, body in self._records(Walk()):
            if op == MESSAGE and len(body) >= MESSAGE_HEAD.size:  # shorter ones: reported by open
                key, _, log_time, _ = MESSAGE_HEAD.unpack_from(body)
                if key in wanted and (start is None or log_time >= start) and (stop is None or log_time < stop):
                    yield wanted[key], log_time, bytes(body[MESSAGE_HEAD.size:])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _records(self, walk: Walk) -> Iterator[tuple[int, bytes]]:
        """(opcode, body) of the schema, channel and message records (chunks opened) and of the summary's
        statistics, in file order, up to the footer or the first record the file does not hold whole."""
        f, pos, in_summary = self._file, len(MAGIC), False
        while pos < self._size:
            f.seek(pos)
            head = f.read(RECORD.size)
            if len(head) < RECORD.size:
                walk.tear = f"at byte {self._size} (inside the header of the record at byte {pos})"
                return
            op, length = RECORD.unpack(head)
            in_summary = in_summary or op in (DATA_END, FOOTER)
            walk.data_whole = in_summary
            wanted = op == STATISTICS if in_summary else op in KINDS
            end = pos + RECORD.size + length
            if op == FOOTER and end + len(MAGIC) <= self._size:
                walk.footer = True
                return
            if op == FOOTER:
                walk.tear = f"at byte {self._size} (inside the footer and closing magic from byte {pos})"
                return
            if end > self._size:
                if wanted and op == CHUNK:
                    yield from self._chunk(f.read(self._size - pos - RECORD.size), pos, walk, torn=True)
                walk.tear = (f"at byte {self._size} (inside the {NAMES.get(op, f'0x{op:02x}')} record that starts "
                             f"at byte {pos} and claims {length} bytes)")
                return
            if wanted and op == CHUNK:
                yield from self._chunk(f.read(length), pos, walk, torn=False)
            elif wanted:
                yield op, f.read(length)
            pos = end

    def _chunk(self, body: bytes, pos: int, walk: Walk, torn: bool) -> Iterator[tuple[int, bytes]]:
        """The records of a chunk (of its part the file holds, if torn)."""
        try:
            _, _, size, crc = CHUNK_HEAD.unpack_from(body)
            compression, at = _string(body, CHUNK_HEAD.size)
            (stored,) = U64.unpack_from(body, at)
            data = body[at + 8:at + 8 + stored]
            if not torn and len(data) < stored:
                raise ValueError(f"its data claims {stored} bytes past the record's end")
            records = _decompress(compression, data, size)
            if not torn and (len(records) != size or (crc and zlib.crc32(records) != crc)):
                raise ValueError("checksum or size mismatch")
        except Exception as exc:  # a torn chunk's header or stream: nothing of it is readable
            if not torn:
                walk.corrupt.append(f"corrupt chunk at byte {pos} ({type(exc).__name__}: {exc}): skipped")
            return
        at = 0
        while at + RECORD.size <= len(records):
            op, length = RECORD.unpack_from(records, at)
            end = at + RECORD.size + length
            if end > len(records):
                break
            if op in (SCHEMA, CHANNEL, MESSAGE):
                yield op, records[at + RECORD.size:end]
            at = end
        if at < len(records) and not torn:
            walk.corrupt.append(f"chunk at byte {pos}: its record at offset {at} runs past the chunk: "
                                f"the rest of the chunk skipped")
