"""Compare the shape a batch actually had with what its source expects: pure functions, no database.

A batch's *snapshot* is, per field (nested fields of expected objects by dotted
path, `quotes.USD.price`), how many records held each JSON type, and the range
of its numeric values (numbers and numeric strings). `compare` sets it against
the source's expected schema and the previous snapshot of that source:

| kind           | when                                                                              |
|----------------|-----------------------------------------------------------------------------------|
| `missing`      | a required expected field is in no record of the batch, and no rename explains it |
| `renamed`      | a missing field's best candidate scores at least the threshold                     |
| `added`        | a field neither expected nor in the previous snapshot, or a below-threshold guess  |
| `type_changed` | an expected field holds a type it may not (a number sent as a string), or is all  |
|                | null where the previous snapshot saw numbers                                      |

A rename's confidence in [0, 1] is 0.7 × name similarity + 0.3 × value profile.
Names are split into lowercase tokens (camelCase, snake_case, spaces, dots), and
similarity is the mean of the token sets' Jaccard index and difflib's ratio of
the sorted tokens: `current_price`, `currentPrice` and `price_current` all
score 1.0. The profile is the mean of "the candidate holds an expected type"
and "its numeric range overlaps the previous snapshot's, widened by half its
magnitude" (0.5 when unknown).
Below the threshold nothing is guessed: the field is missing and the candidate added.

`added` is the one kind a payload can multiply (one per new key; the others are bounded by the expected
schema), so a source run keeps at most `drift_max_findings` of them (default 100): `cap` splits the rest off,
and the caller records them as one `added` finding naming how many were dropped and the setting.
"""
from __future__ import annotations

import copy
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from difflib import SequenceMatcher
from functools import lru_cache
from typing import Any

from kasparro.errors import SourceConfigError
from kasparro.sources.base import Expected

POLICIES = ("evolve", "warn", "freeze")
DEFAULT_POLICY = "warn"
DEFAULT_CONFIDENCE = 0.8
DEFAULT_MAX_FINDINGS = 100
NAME_WEIGHT, PROFILE_WEIGHT = 0.7, 0.3
# Stats of one field in a snapshot: {"types": {json type: records}, "min": float|None, "max": float|None}.
FieldStats = dict[str, Any]
Snapshot = dict[str, FieldStats]
# The Python type of each value JSON can decode to, and its JSON name.
_JSON_TYPES: dict[type, str] = {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string",
                                list: "array", dict: "object"}


@dataclass(frozen=True)
class Policy:
    """What a source does about drift (`drift_policy`), how sure a rename must be (`drift_confidence`), and
    how many `added` findings a source run keeps (`drift_max_findings`)."""

    mode: str = DEFAULT_POLICY
    threshold: float = DEFAULT_CONFIDENCE
    max_findings: int = DEFAULT_MAX_FINDINGS


@dataclass(frozen=True)
class Drift:
    """One difference between a batch's shape and what was expected of it."""

    kind: str
    field: str
    old: str | None
    new: str | None
    confidence: float | None = None

    def touches(self, flat: Mapping[str, Any]) -> bool:
        """Return whether a (flattened) record shows this drift, so its fate can be told."""
        if self.kind in ("missing", "renamed"):
            return self.field not in flat
        if self.kind == "type_changed":
            return self.field in flat and json_type(flat[self.field]) == self.new
        return self.field in flat


def policy_of(spec: Mapping[str, Any], name: str | None = None) -> Policy:
    """Read a source's drift settings, refusing values that cannot work."""
    mode = spec.get("drift_policy", DEFAULT_POLICY)
    threshold = spec.get("drift_confidence", DEFAULT_CONFIDENCE)
    if mode not in POLICIES:
        raise SourceConfigError(f"drift_policy must be one of {', '.join(POLICIES)}, not {mode!r}", source=name)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise SourceConfigError(f"drift_confidence must be a number from 0 to 1, not {threshold!r}", source=name)
    most = spec.get("drift_max_findings", DEFAULT_MAX_FINDINGS)
    if isinstance(most, bool) or not isinstance(most, int) or most < 0:
        raise SourceConfigError(f"drift_max_findings must be a whole number from 0, not {most!r}", source=name)
    return Policy(mode, float(threshold), most)


def json_type(value: Any) -> str:
    """Name a value's JSON type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def parents_of(expected: Mapping[str, Expected]) -> frozenset[str]:
    """Return the dotted paths the schema expects nested fields under (`quotes`, `quotes.USD`)."""
    return frozenset(".".join(path.split(".")[:depth]) for path in expected for depth in range(1, path.count(".") + 1))


def flatten(payload: Mapping[str, Any], expected: Mapping[str, Expected],
            parents: frozenset[str] | None = None) -> dict[str, Any]:
    """Name a payload's fields, descending into an object only where the schema expects nested fields.

    Keys starting with `_` are the pipeline's own markers (an unreadable row, extra CSV cells), not fields.
    Pass `parents_of(expected)` when flattening many payloads, so it is worked out once.
    """
    if parents is None:
        parents = parents_of(expected)
    if not parents:  # a flat schema (every CSV source): copy the record and drop its markers, no walk
        flat = dict(payload)
        for key in _markers(tuple(payload)):
            del flat[key]
        return flat
    nested: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if not isinstance(key, str) or key.startswith("_"):
                continue
            path = f"{prefix}{key}"
            if isinstance(value, Mapping) and path in parents:
                walk(value, path + ".")
            else:
                nested[path] = value

    walk(payload, "")
    return nested


@lru_cache(maxsize=256)
def _markers(keys: tuple[Any, ...]) -> tuple[Any, ...]:
    # Cached by key sequence: a batch's records (a CSV file's rows) share a handful of them.
    return tuple(key for key in keys if not isinstance(key, str) or key.startswith("_"))


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace(",", ""))
        except ValueError:
            return None
    return None


def observe(records: Iterable[Mapping[str, Any]]) -> Snapshot:
    """Take the snapshot of flattened records: per field, records per JSON type and the numeric range.

    Records are grouped by their field names and each field is read as a column, so a batch whose
    records share their fields (every CSV batch) costs a few C-level passes per field rather than
    Python steps per value. The result is what a record-by-record pass gives.
    """
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        groups.setdefault(tuple(record), []).append(record)
    snapshot: Snapshot = {}
    for names, members in groups.items():
        # A mapping's values come in its keys' order, so column i holds every member's `names[i]`.
        for name, column in zip(names, zip(*(member.values() for member in members))):
            _add_column(snapshot.setdefault(name, {"types": {}, "min": None, "max": None}), column)
    return snapshot


def _add_column(stats: FieldStats, column: tuple[Any, ...]) -> None:
    kinds = Counter(map(type, column))
    for name, count in _type_names(kinds, column).items():
        stats["types"][name] = stats["types"].get(name, 0) + count
    # float() reads "nan" and "inf": they bound no range, and JSON (the snapshot's column) cannot hold them.
    numbers = list(filter(math.isfinite, _numbers(column, set(kinds))))
    if numbers:
        low, high = min(numbers) + 0.0, max(numbers) + 0.0  # + 0.0: -0.0 and 0.0 are one bound, whichever came first
        stats["min"] = low if stats["min"] is None else min(stats["min"], low)
        stats["max"] = high if stats["max"] is None else max(stats["max"], high)


def _type_names(kinds: Counter[type], column: tuple[Any, ...]) -> Counter[str]:
    if not kinds.keys() <= _JSON_TYPES.keys():  # a subclass (never decoded from JSON): name each value
        return Counter(map(json_type, column))
    names: Counter[str] = Counter()
    for kind, count in kinds.items():
        names[_JSON_TYPES[kind]] += count
    return names


def _numbers(column: tuple[Any, ...], kinds: set[type]) -> list[float]:
    """Return the column's numeric values in order, as `_number` reads them."""
    if kinds <= {int, float, str}:
        try:  # all numbers or plain numeric text (a price column): float() in C, no Python step per value
            return list(map(float, column))
        except ValueError:
            pass  # some text is not a plain number (a comma, a name): read it value by value
    if kinds <= {str, type(None)}:
        # Text columns repeat values (coin ids, dates): parse each distinct one once.
        parsed = {value: _number(value) for value in set(column)}
        return [n for n in map(parsed.__getitem__, column) if n is not None]
    return [n for n in map(_number, column) if n is not None]


def tokens(name: str) -> list[str]:
    """Split a field name into lowercase words: camelCase, snake_case, spaces and dots alike."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", name))
    return [word.lower() for word in re.split(r"[^A-Za-z0-9]+", spaced) if word]


def name_similarity(a: str, b: str) -> float:
    """Score two field names in [0, 1]: mean of token-set Jaccard and difflib ratio of the sorted tokens."""
    left, right = set(tokens(a)), set(tokens(b))
    if not left or not right:
        return 0.0
    jaccard = len(left & right) / len(left | right)
    ratio = SequenceMatcher(None, " ".join(sorted(left)), " ".join(sorted(right))).ratio()
    return (jaccard + ratio) / 2


def profile_similarity(expected: Expected, before: FieldStats | None, candidate: FieldStats) -> float:
    """Score whether a candidate's values look like the expected field's: its types, and its numeric range."""
    held = {t for t in candidate["types"] if t != "null"}
    type_score = 1.0 if held and held <= set(expected.types) else 0.0
    if before is None or before.get("min") is None or candidate.get("min") is None:
        range_score = 0.5
    else:
        # Widened by half their magnitude: a price that moved between batches still overlaps.
        pad = max(abs(before["min"]), abs(before["max"])) / 2
        overlap = candidate["min"] <= before["max"] + pad and before["min"] - pad <= candidate["max"]
        range_score = 1.0 if overlap else 0.0
    return (type_score + range_score) / 2


def rename_confidence(old: str, new: str, expected: Expected, before: FieldStats | None,
                      candidate: FieldStats) -> float:
    """Return how sure we are that `new` is `old` renamed, in [0, 1]."""
    score = NAME_WEIGHT * name_similarity(old, new) + PROFILE_WEIGHT * profile_similarity(expected, before, candidate)
    return round(min(max(score, 0.0), 1.0), 3)


def compare(expected: Mapping[str, Expected], previous: Snapshot | None, current: Snapshot,
            threshold: float = DEFAULT_CONFIDENCE) -> list[Drift]:
    """List how a batch's snapshot differs from the expected schema and the previous snapshot."""
    if not current:
        return []
    found: list[Drift] = []
    candidates = [name for name in current if name not in expected]
    guessed: set[str] = set()
    for name, spec in expected.items():
        if name in current or not spec.required:
            continue
        best = _best_candidate(name, spec, (previous or {}).get(name), current, candidates)
        if best is not None and best[1] >= threshold:
            candidates.remove(best[0])
            found.append(Drift("renamed", name, name, best[0], best[1]))
            continue
        found.append(Drift("missing", name, name, None))
        if best is not None:
            guessed.add(best[0])
    for name in candidates:
        if name in guessed or (previous is not None and name not in previous):
            found.append(Drift("added", name, None, name))
    found.extend(_type_changes(expected, previous, current))
    return found


def cap(found: list[Drift], room: int) -> tuple[list[Drift], list[str]]:
    """Keep every finding but the `added` ones past the first `room`; return what is kept and the names dropped."""
    kept: list[Drift] = []
    dropped: list[str] = []
    for finding in found:
        if finding.kind != "added":
            kept.append(finding)
        elif room > 0:
            kept.append(finding)
            room -= 1
        else:
            dropped.append(finding.field)
    return kept, dropped


def touched(found: list[Drift], flat: Mapping[int, Mapping[str, Any]]) -> list[list[int]]:
    """Return, per finding, the ids of the (flattened) records that show it, in one pass over their fields.

    The same as asking each finding's `touches` of each record, without a pass over the batch per finding.
    """
    holders: dict[str, list[int]] = {finding.field: [] for finding in found}
    for rid, fields in flat.items():
        # Walk the smaller side: a record of thousands of keys against a few findings, or the reverse.
        names = holders.keys() & fields.keys() if len(fields) > len(holders) else \
            [name for name in fields if name in holders]
        for name in names:
            holders[name].append(rid)
    result = []
    for finding in found:
        held = holders[finding.field]
        if finding.kind in ("missing", "renamed"):
            have = set(held)
            result.append([rid for rid in flat if rid not in have])
        elif finding.kind == "type_changed":
            result.append([rid for rid in held if json_type(flat[rid][finding.field]) == finding.new])
        else:
            result.append(held)
    return result


def _best_candidate(name: str, spec: Expected, before: FieldStats | None, current: Snapshot,
                    candidates: list[str]) -> tuple[str, float] | None:
    scored = [(c, rename_confidence(name, c, spec, before, current[c])) for c in candidates]
    return max(scored, key=lambda pair: pair[1], default=None)


def _type_changes(expected: Mapping[str, Expected], previous: Snapshot | None, current: Snapshot) -> list[Drift]:
    found = []
    for name, spec in expected.items():
        held = current.get(name, {}).get("types", {})
        for kind in sorted(held):
            if kind not in spec.types:
                found.append(Drift("type_changed", name, "|".join(spec.types), kind))
        was = (previous or {}).get(name, {}).get("types", {})
        if set(held) == {"null"} and "null" in spec.types and "number" in was:
            found.append(Drift("type_changed", name, "number", "null"))
    return found


def remap(payload: Mapping[str, Any], renames: Mapping[str, str]) -> dict[str, Any]:
    """Return a copy of a payload with each renamed field (new dotted name -> expected one) moved back."""
    moved = copy.deepcopy(dict(payload))
    for new, old in renames.items():
        value, found = _pop(moved, new.split("."))
        if found:
            _put(moved, old.split("."), value)
    return moved


def _pop(node: dict[str, Any], path: list[str]) -> tuple[Any, bool]:
    for key in path[:-1]:
        node = node.get(key)  # type: ignore[assignment]
        if not isinstance(node, dict):
            return None, False
    if path[-1] not in node:
        return None, False
    return node.pop(path[-1]), True


def _put(node: dict[str, Any], path: list[str], value: Any) -> None:
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def decide(drift: Drift, policy: Policy, rejected: bool) -> str:
    """Name what the pipeline did about one drift: mapped, rejected, failed or merely noted."""
    if policy.mode == "freeze":
        return "failed"
    if policy.mode == "evolve" and drift.kind == "renamed":
        return "mapped"
    return "rejected" if rejected else "noted"
