"""The photo validity rules, defined once: validate runs them as a great-expectations suite (its
report), hallucinate-dataset checks them photo by photo (judge_row: a suite run costs seconds, a
photo's checks microseconds). Each rule is (check, kind, column, bounds, reason for a failing row).

Kinds follow great-expectations' column-map semantics: `null` fails a value that is set; `between`
(inclusive), `in_set` and `regex` pass a missing value (GX leaves nulls out of these); `unique` is a
rule over the whole table, run by the suite only (a bulk run's listing holds each path once).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facectx.config import ValidateConfig


@dataclass(frozen=True)
class Rule:
    check: str | None  # None: the failing row names its check (its error_check)
    kind: str  # null | between | in_set | regex | unique
    column: str
    bounds: dict[str, Any] = field(default_factory=dict)  # min_value/max_value, value_set or regex
    reason_of: Callable[[Any], str] = lambda row: ""


def photo_rules(config: ValidateConfig) -> list[Rule]:
    def too_small(r):
        # int(): in a table where some photo did not decode, the sizes are floats (250.0)
        size = f"{int(r['decoded_width'])}x{int(r['decoded_height'])}"
        return f"too small: {size} px, minimum side is {config.min_side_px} px"

    def mask_outside(r):
        return (
            f"face mask covers {r['mask_fraction']:.1%} of the frame, outside "
            f"[{config.mask_fraction_min:.0%}, {config.mask_fraction_max:.0%}]"
        )

    def frame_outside(r):
        return (
            f"{r['crop_outside_fraction']:.0%} of the face frame lies outside the photo "
            f"(limit {config.max_crop_outside_fraction:.0%})"
        )

    mask_bounds = {"min_value": config.mask_fraction_min, "max_value": config.mask_fraction_max}
    return [
        Rule(None, "null", "error", reason_of=lambda r: r["error"]),
        Rule("min_size", "between", "decoded_width", {"min_value": config.min_side_px}, too_small),
        Rule("min_size", "between", "decoded_height", {"min_value": config.min_side_px}, too_small),
        Rule(
            "landmarks_inside_photo",
            "in_set",
            "landmarks_inside_photo",
            {"value_set": [True]},
            lambda r: "some of the 68 landmarks fall outside the photo",
        ),
        Rule("mask_fraction", "between", "mask_fraction", mask_bounds, mask_outside),
        Rule(
            "frame_inside_photo",
            "between",
            "crop_outside_fraction",
            {"max_value": config.max_crop_outside_fraction},
            frame_outside,
        ),
        Rule("unique_content", "null", "duplicate_of", reason_of=lambda r: f"duplicate content of {r['duplicate_of']}"),
        Rule("manifest", "unique", "relative_path", reason_of=lambda r: "listed twice in the manifest"),
        Rule("manifest", "regex", "sha256", {"regex": r"^[0-9a-f]{64}$"}, lambda r: "manifest sha256 is malformed"),
    ]


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def row_fails(rule: Rule, row: dict) -> bool:
    """Whether one row fails a per-row rule, as the suite would judge it."""
    value = row.get(rule.column)
    if rule.kind == "null":
        return not _missing(value)
    if _missing(value):
        return False
    if rule.kind == "between":
        low, high = rule.bounds.get("min_value"), rule.bounds.get("max_value")
        return (low is not None and value < low) or (high is not None and value > high)
    if rule.kind == "in_set":
        return value not in rule.bounds["value_set"]
    if rule.kind == "regex":
        return re.search(rule.bounds["regex"], str(value)) is None
    raise ValueError(f"rule {rule.check}/{rule.column}: kind {rule.kind!r} is not a per-row rule")


def judge_row(row: dict, rules: list[Rule]) -> list[tuple[str, str]]:
    """The (check, reason) pairs of the per-row rules one photo's facts fail, in rule order."""
    found: list[tuple[str, str]] = []
    for rule in rules:
        if rule.kind != "unique" and row_fails(rule, row):
            failure = (rule.check or row["error_check"], rule.reason_of(row))
            if failure not in found:
                found.append(failure)
    return found
