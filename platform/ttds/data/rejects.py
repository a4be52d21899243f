"""Counting and recording bad input records instead of crashing or dropping them silently.

Every reader and preparation step that meets a bad record adds it here with its kind,
file, line and a short reason. The log is written next to the prepared corpus as
`rejects.jsonl` and summarised in the manifest, so a user can find and fix each record.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The kinds a user can meet; each is counted separately in the report.
KINDS = (
    "malformed_json",
    "missing_field",
    "wrong_type",
    "unknown_id",
    "non_monotonic_timestamp",
    "empty_sequence",
    "duplicate_interaction",
    "bad_header",
)


class DataError(RuntimeError):
    """A user's data problem that leaves nothing usable; printed without a traceback by jobs."""


@dataclass
class Reject:
    kind: str
    file: str
    line: int  # 1-based line number in `file`; 0 when the record has no line (e.g. a JSON key)
    reason: str
    record: str = ""  # a short excerpt of the offending record
    action: str = "dropped"  # "dropped" or "repaired" (kept after a fix, e.g. re-sorted)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "file": self.file,
            "line": self.line,
            "reason": self.reason,
            "record": self.record,
            "action": self.action,
        }


@dataclass
class RejectLog:
    """Accumulates rejects; `rate()` compares dropped records with all records seen."""

    entries: list[Reject] = field(default_factory=list)
    seen: int = 0  # records read, good and bad

    def add(self, kind: str, file: str | Path, line: int, reason: str, record: object = "", action: str = "dropped") -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown reject kind {kind!r}; expected one of {KINDS}")
        text = record if isinstance(record, str) else json.dumps(record, default=str)
        self.entries.append(Reject(kind, str(file), int(line), reason, text[:200], action))

    def extend(self, other: "RejectLog") -> None:
        self.entries.extend(other.entries)
        self.seen += other.seen

    def counts(self) -> dict[str, int]:
        return dict(Counter(r.kind for r in self.entries))

    @property
    def dropped(self) -> int:
        return sum(1 for r in self.entries if r.action == "dropped")

    def rate(self) -> float:
        return self.dropped / self.seen if self.seen else 0.0

    def write(self, path: str | Path) -> None:
        with open(path, "w", encoding="utf-8") as f:
            for r in self.entries:
                f.write(json.dumps(r.to_json()) + "\n")

    def summary(self, limit: int = 5) -> str:
        """A human summary: counts per kind and the first few locations."""
        if not self.entries:
            return f"{self.seen} records read, none rejected"
        lines = [f"{self.seen} records read, {self.dropped} dropped, {len(self.entries) - self.dropped} repaired:"]
        for kind, n in sorted(self.counts().items()):
            lines.append(f"  {kind}: {n}")
        for r in self.entries[:limit]:
            lines.append(f"  e.g. {r.file}:{r.line}: {r.kind}: {r.reason}")
        return "\n".join(lines)
