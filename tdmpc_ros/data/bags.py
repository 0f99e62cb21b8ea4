"""Episodes in and out of rosbag2 bags (sqlite3 and mcap) through the rosbags library: no ROS install needed.

`read_episodes` takes bag directories, folders holding many bags, or loose storage files (a crashed writer's
bag has no metadata.yaml), reads transition bags exactly and rebuilds raw /joint_states recordings (data.raw),
and never stops at a bad file: each problem becomes a LoadReport line naming the file and topic. Only regular
files are opened (opening a FIFO named x.mcap blocks until a writer appears); a damaged storage file gives what
it still holds (data.mcap_salvage, data.sqlite_salvage); the message counts a bag claims are checked.
"""
from __future__ import annotations

import os
import stat
import time
from collections import Counter
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.storage_sqlite3 import Sqlite3Reader

from tdmpc_ros.config import Config
from tdmpc_ros.data.episode import Episode
from tdmpc_ros.data.load_report import LoadReport
from tdmpc_ros.data.mcap_salvage import McapSalvage
from tdmpc_ros.data.raw import RawRecording, raw_topic_role
from tdmpc_ros.data.sqlite_salvage import SqliteSalvage, logs_beside, prepared, unsettled
from tdmpc_ros.data.transitions import BagEpisodeAssembler, arm_of_topic, episode_messages
from tdmpc_ros.data.typestore import TRANSITION, typestore

STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3"}
SYNTH_PERIOD_NS = 50_000_000  # stamps for episodes without their own: the default 20 Hz control period


def file_problem(path: Path) -> str | None:
    """Why `path` (symlinks followed) must not be opened, or None for a regular file; only stat is used."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"cannot stat: {exc.strerror or exc}"
    if stat.S_ISREG(mode):
        return None
    kind = ("directory" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode) else
            "socket" if stat.S_ISSOCK(mode) else "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special")
    return f"not a regular file ({kind}): not opened"


def find_bags(path: Path, onerror=None) -> list[Path]:
    """Bag directories (with metadata.yaml) and loose storage files (outside any bag directory) under path;
    `onerror(OSError)` hears of folders that cannot be listed."""
    if not path.is_dir():
        return [path.parent] if path.name == "metadata.yaml" else [path]
    found = []
    for folder, dirs, files in os.walk(path, onerror=onerror):
        dirs.sort()
        if "metadata.yaml" in files:
            found.append(Path(folder))
            dirs.clear()
        else:
            found += [Path(folder) / f for f in sorted(files) if Path(f).suffix in STORAGE_SUFFIXES]
    return found


def read_episodes(paths, cfg: Config, kinematics=None) -> LoadReport:
    """Episodes from every bag under `paths` (dirs, bag dirs, storage files); sizes are checked against cfg.

    `kinematics` (ArmKinematics of cfg.task) rebuilds raw recordings; built here only if one turns up.
    """
    loader = _Loader(cfg, kinematics)
    unlisted = lambda exc: loader.report.skip(exc.filename or root, "", f"cannot list: {exc.strerror or exc}")
    try:
        for root in [paths] if isinstance(paths, (str, os.PathLike)) else list(paths):
            root = Path(root)
            if not root.exists():
                loader.report.skip(root, "", "does not exist")
                continue
            bags = find_bags(root, unlisted)
            if not bags:
                loader.report.skip(root, "", "no rosbag2 bags (metadata.yaml, *.mcap or *.db3) found")
            for bag in bags:
                if bag.is_dir():
                    loader.bag_dir(bag)
                else:
                    loader.storage_file(bag)
    finally:
        if kinematics is None and loader.kinematics is not None:
            loader.kinematics.close()
    return loader.report


class _Loader:
    """Reads bags one by one into a LoadReport; no exception from a bad file gets past it."""

    def __init__(self, cfg: Config, kinematics):
        self.cfg = cfg
        self.kinematics = kinematics
        self.report = LoadReport()
        self.store = typestore()

    def bag_dir(self, bag: Path) -> None:
        try:
            entries = sorted(bag.iterdir())
        except OSError as exc:
            self.report.skip(bag, "", f"cannot list: {exc.strerror or exc}")
            return
        odd = [(entry, why) for entry in entries if not entry.is_dir() and (why := file_problem(entry))]
        for entry, why in odd:  # rosbags would open metadata.yaml and the files it names: none may block
            self.report.skip(entry, "", why)
        if odd:
            return self._storage_files(bag, entries, "the bag holds entries that are not regular files")
        if any(unsettled(entry) for entry in entries if entry.suffix == ".db3"):
            return self._storage_files(bag, entries, "")  # read through sqlite_salvage.prepared
        try:
            reader = Reader(bag)
            reader.open()
        except Exception as exc:  # unusable metadata or storage: read what the storage files still hold
            return self._storage_files(bag, entries, f"cannot open bag ({exc})")
        claimed: Counter[str] = Counter()
        for conn in reader.connections:
            claimed[conn.topic] += conn.msgcount
        self._read_and_close(bag, reader, ("metadata.yaml", claimed))

    def _storage_files(self, bag: Path, entries: list[Path], why: str) -> None:
        files = [entry for entry in entries if entry.suffix in STORAGE_SUFFIXES]
        problems = len(self.report.skipped)
        for path in files:
            self.storage_file(path)
        if not files:
            self.report.skip(bag, "", f"{why or 'unusable'}; no storage files (*.mcap, *.db3)")
        elif why and len(self.report.skipped) == problems:
            self.report.note(bag, "", f"{why}: read its storage files directly")

    def storage_file(self, path: Path) -> None:
        """A storage file without metadata.yaml, e.g. the bag of a writer that was killed."""
        try:
            real = path.resolve()  # once: the file checked is the file opened
        except (OSError, RuntimeError) as exc:
            self.report.skip(path, "", f"cannot resolve: {exc}")
            return
        if why := file_problem(real):
            self.report.skip(path, "", why)
        elif path.suffix == ".mcap":
            self._mcap_file(path, real)
        else:
            self._sqlite_file(path, real)

    def _mcap_file(self, path: Path, real: Path) -> None:
        reader = McapSalvage(real)
        try:
            reader.open()
        except Exception as exc:
            self.report.skip(path, "", f"cannot open: {exc}")
            return
        walk = reader.walk
        for problem in walk.corrupt:
            self.report.skip(path, "", problem)
        if walk.tear and not walk.data_whole:
            self.report.skip(path, "", f"truncated after {reader.found} messages {walk.tear}; "
                                       f"the messages before it were kept")
            if not reader.connections:  # not an empty bag: its channel records were past the tear
                reader.close()
                return
        elif walk.tear:
            self.report.note(path, "", f"summary truncated {walk.tear}; its data section was read whole")
        elif not walk.footer:
            self.report.note(path, "", f"no MCAP summary or footer (its writer did not finish): read to its end, "
                                       f"{reader.found} messages")
        self._read_and_close(path, reader, ("the MCAP summary", reader.claimed))

    def _sqlite_file(self, path: Path, real: Path) -> None:
        logs = []
        for log in logs_beside(real):
            if why := file_problem(log):
                self.report.skip(log, "", f"{why}; the database is read without it")
            else:
                logs.append(log)
        with ExitStack() as stack:
            try:
                db, done = stack.enter_context(prepared(real, logs))
            except Exception as exc:
                db, done = real, ""
                self.report.skip(path, "", f"could not prepare a readable copy ({type(exc).__name__}: {exc}); "
                                           f"read as it is")
            if done:
                self.report.note(path, "", done)
            reader = Sqlite3Reader(db)
            try:
                reader.open()
            except Exception as exc:  # rosbags counts every row at open: a damaged file fails there
                reader = SqliteSalvage(db)
                try:
                    reader.open()
                except Exception as salvage_exc:
                    self.report.skip(path, "", f"cannot open: {type(salvage_exc).__name__}: {salvage_exc}")
                    return
                self.report.note(path, "", f"damaged ({exc.__cause__ or exc}): reading the rows that still read")
            self._read_and_close(path, reader, None)

    def _read_and_close(self, path: Path, reader, claims: tuple[str, dict | None] | None) -> None:
        episodes = []
        try:
            episodes = self._read(path, reader, claims)
        except Exception as exc:  # whatever a file holds, the other files still load
            self.report.skip(path, "", f"unreadable: {type(exc).__name__}: {exc}")
        finally:
            try:
                reader.close()
            except Exception:
                pass
        if episodes:
            self.report.episodes += episodes
            self.report.loaded_from[str(path)] = self.report.loaded_from.get(str(path), 0) + len(episodes)

    def _select(self, path: Path, connections) -> tuple[list, RawRecording | None]:
        """The connections to read: Transition topics if any, else a raw recording's; problems go to the report."""
        if not connections:
            self.report.skip(path, "", "empty bag (no topics)")
            return [], None
        named = [c for c in connections if c.msgtype == TRANSITION or c.topic.rsplit("/", 1)[-1] == "transitions"]
        selected = []
        for conn in named:
            if conn.msgtype != TRANSITION:
                self.report.skip(path, conn.topic, f"unknown message type {conn.msgtype} (expected {TRANSITION})")
            elif conn.digest and conn.digest != self.store.hash_rihs01(TRANSITION):
                self.report.skip(path, conn.topic, f"{TRANSITION} definition differs from this package's "
                                                   f"msg/Transition.msg (type hash {conn.digest})")
            else:
                selected.append(conn)
        if named:
            return selected, None
        raw = RawRecording(self.cfg.task)
        selected = [c for c in connections if raw_topic_role(c.topic, c.msgtype)]
        missing = raw.missing_roles({raw_topic_role(c.topic, c.msgtype) for c in selected})
        if missing:
            topics = ", ".join(f"{c.topic} ({c.msgtype})" for c in connections)
            self.report.skip(path, "", f"no {TRANSITION} topic, and not a raw recording: missing {missing}; "
                                       f"topics: {topics}")
            return [], None
        return selected, raw

    def _read(self, path: Path, reader, claims: tuple[str, dict | None] | None) -> list[Episode]:
        """Episodes of the selected topics; `claims`: (source, messages per topic) the file says it holds."""
        selected, raw = self._select(path, list(reader.connections))
        if not selected:
            return []
        # per topic: in a fleet's online bags each arm's own (episode ids are each arm's), tagged with the arm
        assemblers = {c.topic: BagEpisodeAssembler(self.cfg, str(path), arm_of_topic(c.topic))
                      for c in selected if raw is None}
        episodes: list[Episode] = []
        counts = {c.topic: 0 for c in selected}
        undecodable: dict[str, tuple[int, str]] = {}
        try:
            for conn, timestamp, data in reader.messages(selected):
                try:
                    msg = self.store.deserialize_cdr(data, conn.msgtype)
                except Exception as exc:
                    n, first = undecodable.get(conn.topic, (0, f"{type(exc).__name__}: {exc}"))
                    undecodable[conn.topic] = (n + 1, first)
                    continue
                counts[conn.topic] += 1
                if raw is not None:
                    raw.add(raw_topic_role(conn.topic, conn.msgtype), conn.topic, timestamp, msg)
                else:
                    episodes += assemblers[conn.topic].add(msg)
        except Exception as exc:  # a torn tail or corrupt record: everything read before it is kept
            self.report.skip(path, "", f"corrupt or truncated after {sum(counts.values())} messages "
                                       f"({type(exc).__name__}: {exc}); the messages before it were kept")
        else:
            self._check_claims(path, claims, {t: n + undecodable.get(t, (0,))[0] for t, n in counts.items()})
        for topic, (n, first) in undecodable.items():
            self.report.skip(path, topic, f"{n} messages could not be decoded (first: {first})")
        for topic, count in counts.items():
            if count == 0 and topic not in undecodable:
                self.report.skip(path, topic, "no messages on this topic")
        for topic, assembler in assemblers.items():
            for episode in assembler.flush():
                self.report.note(path, topic, "ended without a final step: kept, marked truncated",
                                 f"episode {episode.episode_id}")
                episodes.append(episode)
            for episode_id, reason in assembler.take_errors():
                self.report.skip(path, topic, reason, f"episode {episode_id}")
        return episodes + (self._raw_episodes(path, raw) if raw is not None else [])

    def _check_claims(self, path: Path, claims: tuple[str, dict | None] | None, read: dict[str, int]) -> None:
        source, claimed = claims or ("", None)
        for topic, n in read.items() if claimed is not None else ():
            if n != (expected := claimed.get(topic, 0)):  # fewer: lost messages; more: a stale claim
                line = self.report.skip if n < expected else self.report.note
                line(path, topic, f"{source} claims {expected} messages on this topic, {n} were read")

    def _raw_episodes(self, path: Path, raw: RawRecording) -> list[Episode]:
        if self.kinematics is None:
            from tdmpc_ros.kinematics import ArmKinematics

            self.kinematics = ArmKinematics(self.cfg.task)
        episodes, problems = raw.episodes(self.kinematics, str(path))
        for topic, reason, item in problems:
            self.report.skip(path, topic, reason, item)
        model = self.cfg.model
        good = []
        for ep in episodes:  # built for cfg.task: a model config with other sizes cannot use them
            if (ep.observations.shape[1], ep.actions.shape[1]) != (model.obs_dim, model.action_dim):
                self.report.skip(path, "", f"raw observation/action sizes {ep.observations.shape[1]}/"
                                           f"{ep.actions.shape[1]} do not match model.obs_dim/action_dim "
                                           f"{model.obs_dim}/{model.action_dim}", f"episode {ep.episode_id}")
            else:
                good.append(ep)
        return good


def write_transition_bag(path, episodes: Iterable[Episode], storage: str = "mcap",
                         topic: str = "/transitions") -> Path:
    """A new bag at `path` with one Transition per step. Header (and log) stamps are each episode's stamps_ns,
    or synthesised ones, 50 ms apart and increasing across episodes, where an episode has none."""
    if storage not in STORAGE_SUFFIXES.values():
        raise ValueError(f"storage {storage!r}: choose mcap or sqlite3")
    store = typestore()
    clock = time.time_ns()
    with Writer(Path(path), version=9, storage_plugin=StoragePlugin[storage.upper()]) as writer:
        conn = writer.add_connection(topic, TRANSITION, typestore=store)
        for episode in episodes:
            stamps = episode.stamps_ns
            if len(stamps) != len(episode) or not stamps.any():
                stamps = clock + SYNTH_PERIOD_NS * np.arange(1, len(episode) + 1, dtype=np.int64)
            clock = max(clock, int(stamps[-1])) if len(stamps) else clock
            for msg, stamp in zip(episode_messages(episode, stamps), stamps):
                writer.write(conn, int(stamp), store.serialize_cdr(msg, TRANSITION))
    return Path(path)
