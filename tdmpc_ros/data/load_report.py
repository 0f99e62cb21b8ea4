"""What `read_episodes` loaded and what it skipped, file by file.

A problem becomes one line per (file, topic, reason), listing the episodes it concerns. Reasons that differ
only in their numbers ("gap ... at step 3", "... at step 7") share a line, so 20,000 bad episodes of one kind
make one line. Lines are found through a dict, so adding a problem costs the same however many the report
already holds: loading stays linear in the number of bad episodes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from tdmpc_ros.data.episode import Episode

_NUMBER = re.compile(r"\d+")


@dataclass
class ReportItem:
    """One problem (or note) about a file and topic, with the items it concerns (e.g. episode ids)."""

    path: str
    topic: str
    reason: str
    items: list[str] = field(default_factory=list)
    varied: bool = False
    """Some items came with a reason that differs from `reason` in its numbers."""

    def __str__(self) -> str:
        where = f"{self.path} [{self.topic}]" if self.topic else self.path
        shown = ", ".join(self.items[:5]) + (f" (+{len(self.items) - 5} more)" if len(self.items) > 5 else "")
        reason = f"{self.reason} (the first; the numbers differ for others)" if self.varied else self.reason
        return f"{where}: {shown + ': ' if shown else ''}{reason}"


@dataclass
class LoadReport:
    """What `read_episodes` loaded and what it skipped, file by file."""

    episodes: list[Episode] = field(default_factory=list)
    skipped: list[ReportItem] = field(default_factory=list)
    notes: list[ReportItem] = field(default_factory=list)
    loaded_from: dict[str, int] = field(default_factory=dict)
    """Episodes loaded per file."""
    _lines: dict[tuple, ReportItem] = field(default_factory=dict, repr=False, compare=False)

    def skip(self, path, topic: str, reason: str, item: str | None = None) -> None:
        self._add(self.skipped, "skip", path, topic, reason, item)

    def note(self, path, topic: str, reason: str, item: str | None = None) -> None:
        self._add(self.notes, "note", path, topic, reason, item)

    def _add(self, lines: list[ReportItem], kind: str, path, topic: str, reason: str, item: str | None) -> None:
        key = (kind, str(path), topic, _NUMBER.sub("#", reason))
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = ReportItem(str(path), topic, reason)
            lines.append(line)
        elif reason != line.reason:
            line.varied = True
        if item is not None:
            line.items.append(item)

    def summary(self) -> str:
        steps = sum(len(e) for e in self.episodes)
        lines = [f"loaded {len(self.episodes)} episodes ({steps} steps, "
                 f"{sum(e.terminated for e in self.episodes)} ended in success) from {len(self.loaded_from)} files"]
        lines += [f"  {path}: {count} episodes" for path, count in self.loaded_from.items()]
        if self.skipped:
            lines += [f"skipped {len(self.skipped)}:"] + [f"  {item}" for item in self.skipped]
        if self.notes:
            lines += ["notes:"] + [f"  {item}" for item in self.notes]
        return "\n".join(lines)
