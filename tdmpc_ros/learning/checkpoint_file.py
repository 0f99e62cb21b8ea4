"""The checkpoint file under learning/checkpoint.py: bytes on disk in, a verified, safely unpickled payload out.

The header (layout in checkpoint.py's docstring), atomic writes with the `.sha256` sidecar, hardened reads of
regular files, digest checks, the zip directory check and torch.load(weights_only=True): steps 1-4 of loading.
It knows nothing of configs or agents; what a payload must hold is checked in checkpoint.py.
"""
from __future__ import annotations

import hashlib
import io
import os
import pickle
import stat
import struct
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import torch

from tdmpc_ros.errors import InputError

FORMAT = "tdmpc_ros.checkpoint"
VERSION = 2
MAGIC = FORMAT.encode() + b"\n"
HEADER = struct.Struct(f"<{len(MAGIC)}sIQ32s")  # magic, version, body length, body sha256
MAX_SIDECAR_BYTES = 4096
UPGRADE_COMMAND = "python -m tdmpc_ros.learning.checkpoint upgrade"
_CHUNK = 1 << 20


class CheckpointError(InputError, RuntimeError):
    """A checkpoint file that cannot be used; the message names the file and the problem."""


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pack(body: bytes) -> bytes:
    """The version-2 file for a serialized body (torch.save'd payload): header + body."""
    return _header(body) + body


def _header(body: bytes) -> bytes:
    return HEADER.pack(MAGIC, VERSION, len(body), hashlib.sha256(body).digest())


def _atomic_write(path: Path, *chunks: bytes) -> None:
    """Temp file in the same folder, flush + fsync, rename over `path`, fsync the folder."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_file(path: Path, body: bytes) -> str:
    """Write header + body (no joined copy of a large body) and the sidecar; returns the file's sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = _header(body)
    digest = hashlib.sha256(header)
    digest.update(body)
    _atomic_write(path, header, body)
    _atomic_write(sidecar_path(path), f"{digest.hexdigest()}  {path.name}\n".encode())
    return digest.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return f"of mode {mode:o}"


def _check_regular(st: os.stat_result, shown: str, what: str, max_bytes: int) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise CheckpointError(f"{shown}: {what} is {_kind(st.st_mode)}, not a regular file; nothing read")
    if st.st_size > max_bytes:
        raise CheckpointError(f"{shown}: {what} is {st.st_size} bytes, over the limit of {max_bytes} bytes; "
                              "nothing read")


def read_regular(path: Path, max_bytes: int, what: str, missing_ok: bool = False,
                  check_start: Callable[[bytes, int, str], Any] | None = None) -> tuple[bytearray, str] | None:
    """(contents, sha256) of the regular file `path` resolves to, hashed while read; None if missing_ok and absent.

    `check_start(first HEADER.size bytes, file size, name)` runs before the buffer for the rest is allocated.
    """
    real = os.path.realpath(path)
    shown = str(path) if real == os.path.abspath(path) else f"{path} (-> {real})"
    try:
        _check_regular(os.stat(real), shown, what, max_bytes)
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise CheckpointError(f"{shown}: {what} is missing") from None
    except OSError as exc:
        raise CheckpointError(f"{shown}: cannot open {what}: {exc.strerror or exc}") from None
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        _check_regular(st, shown, what, max_bytes)  # the path was swapped between stat and open
        try:
            head = f.read(min(HEADER.size, st.st_size)) if check_start else b""
            if check_start:
                check_start(head, st.st_size, shown)
            data = bytearray(st.st_size)
            data[:len(head)] = head
            view, digest, done = memoryview(data), hashlib.sha256(head), len(head)
            while done < len(data):
                n = f.readinto(view[done:done + _CHUNK])
                if not n:
                    raise CheckpointError(f"{shown}: {what} shrank while being read ({done} of {len(data)} bytes)")
                digest.update(view[done:done + n])
                done += n
        except OSError as exc:
            raise CheckpointError(f"{shown}: cannot read {what}: {exc.strerror or exc}") from None
        view.release()
    return data, digest.hexdigest()


def hex_digest(text: str, source: str) -> str:
    text = text.strip().lower()
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise CheckpointError(f"{source}: not a sha256 digest (64 hex digits): {text[:80]!r}")
    return text


def expected_digest(path: Path, expected: str | None) -> str | None:
    """The digest passed in, else the sidecar's (beside the file a symlink points to), else None."""
    if expected:
        return hex_digest(expected, f"{path}: expected sha256")
    sidecar = sidecar_path(os.path.realpath(path))
    found = read_regular(sidecar, MAX_SIDECAR_BYTES, "checksum file", missing_ok=True)
    if found is None:
        return None
    words = found[0].decode(errors="replace").split()
    if not words:
        raise CheckpointError(f"{sidecar}: empty checksum file")
    return hex_digest(words[0], str(sidecar))


def check_digest(name: str, digest: str, expected: str | None) -> None:
    if expected is not None and expected != digest:
        raise CheckpointError(f"{name}: checksum mismatch (expected {expected}, file has {digest}); "
                              "corrupted or partly written")


class _ReadView(io.RawIOBase):
    """A read-only, seekable file over a memoryview: torch.load and zipfile read it without copying the buffer."""

    def __init__(self, view: memoryview):
        super().__init__()
        self._view, self._pos = view, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), len(self._view) - self._pos))
        buffer[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n


def check_header(head: bytes | memoryview, size: int, name: str) -> bytes:
    """Check the header (the file's first HEADER.size bytes) against the file's `size`; the body's sha256."""
    if not size:
        raise CheckpointError(f"{name}: checkpoint file is empty")
    if bytes(head[:len(MAGIC)]) != MAGIC:
        if bytes(head[:4]) == b"PK\x03\x04":
            raise CheckpointError(f"{name}: a bare torch file, not a version-{VERSION} checkpoint (a version-1 "
                                  f"checkpoint has no embedded digest; convert it with `{UPGRADE_COMMAND} {name}`)")
        raise CheckpointError(f"{name}: not a tdmpc_ros checkpoint (no {FORMAT!r} header)")
    if len(head) < HEADER.size:
        raise CheckpointError(f"{name}: truncated checkpoint: shorter than its {HEADER.size}-byte header")
    _, version, body_len, body_sha = HEADER.unpack_from(head)
    if version != VERSION:
        raise CheckpointError(f"{name}: checkpoint format version {version} is not supported "
                              f"(this code reads version {VERSION})")
    if body_len != size - HEADER.size:
        raise CheckpointError(f"{name}: {'truncated' if size - HEADER.size < body_len else 'trailing bytes in'} "
                              f"checkpoint: header says {body_len} body bytes, file holds {size - HEADER.size}")
    return body_sha


def check_zip_entries(body: memoryview, name: str) -> None:
    """Only stored (uncompressed) entries: torch allocates a compressed entry's declared size before checking it,
    so a small file could demand any amount of memory."""
    try:
        with zipfile.ZipFile(_ReadView(body)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
        raise CheckpointError(f"{name}: unreadable checkpoint body: not a torch archive ({exc})") from None
    for entry in entries:
        if entry.compress_type != zipfile.ZIP_STORED or entry.file_size != entry.compress_size:
            raise CheckpointError(f"{name}: checkpoint body entry {entry.filename!r} is compressed "
                                  f"({entry.compress_size} -> {entry.file_size} bytes); torch writes stored entries")


def unpickle(body: memoryview, name: str) -> Any:
    try:
        with warnings.catch_warnings():  # torch warns about odd pickle protocols before refusing them
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(_ReadView(body), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{name}: not a loadable checkpoint: unsafe or foreign pickle payload refused: "
                              f"{str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch.load fails on garbage with many exception types
        raise CheckpointError(f"{name}: unreadable checkpoint body: {type(exc).__name__}: {exc}") from None
