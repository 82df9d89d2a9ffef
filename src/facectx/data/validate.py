"""validate: per-photo facts (decoding, faces, 68 landmarks, mask geometry) judged by a
great-expectations suite; photos that fail go to the quarantine table with their reasons.

Outputs (one folder):
    records.parquet      valid photos with their subject box and 68 landmarks (prepare reads these)
    quarantine.parquet   every photo the pipeline could not use so far (ingest's and ours), with why
    report/gx_result.json, report/summary.md
    metrics.json         counts and the valid fraction (a DVC metric)
The stage fails only when the valid fraction falls below validate.min_valid_fraction.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from pathlib import Path

import pandas as pd

from facectx.config import CropConfig, LandmarkConfig, ValidateConfig
from facectx.data.ingest import read_manifest
from facectx.data.photo_facts import FactsJob, gather_facts, mark_duplicates
from facectx.data.quarantine import quarantine_table
from facectx.data.rules import photo_rules
from facectx.io_utils import atomic_path, write_json, write_parquet
from facectx.progress import LOG_LINES, Progress, ProgressStyle

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """Too few photos passed validation."""


# ---------------------------------------------------------------- the suite (parent side)


_EXPECTATIONS = {
    "null": "ExpectColumnValuesToBeNull",
    "between": "ExpectColumnValuesToBeBetween",
    "in_set": "ExpectColumnValuesToBeInSet",
    "regex": "ExpectColumnValuesToMatchRegex",
    "unique": "ExpectColumnValuesToBeUnique",
}


def _rules(config: ValidateConfig):
    """(check name, expectation, reason for a failing row), from the one definition of the rules (rules.py)."""
    import great_expectations as gx  # lazy: seconds to import, overlapped with the workers (gather_facts)

    return [
        (
            rule.check,
            getattr(gx.expectations, _EXPECTATIONS[rule.kind])(column=rule.column, **rule.bounds),
            rule.reason_of,
        )
        for rule in photo_rules(config)
    ]


def run_suite(facts: pd.DataFrame, config: ValidateConfig) -> tuple[dict[str, list[str]], dict]:
    """Run the suite; return (check, reason) pairs per failing relative_path and the GX result."""
    import great_expectations as gx  # lazy: seconds to import, overlapped with the workers (gather_facts)

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = {"globally": False}
    asset = context.data_sources.add_pandas("photos").add_dataframe_asset("facts")
    batch = asset.add_batch_definition_whole_dataframe("all")
    suite = context.suites.add(gx.ExpectationSuite(name="photo_validity"))
    rule_by_id = {}
    for check, expectation, reason_of in _rules(config):
        rule_by_id[suite.add_expectation(expectation).id] = (check, reason_of)
    definition = context.validation_definitions.add(gx.ValidationDefinition(name="validate", data=batch, suite=suite))
    # GX's null handling needs object columns free of pandas NA in boolean columns.
    frame = facts.astype({"landmarks_inside_photo": "object"})
    result = definition.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["relative_path"]},
    )
    by_path = facts.set_index("relative_path", drop=False)
    reasons: dict[str, list[tuple[str, str]]] = {}
    for outcome in result.results:
        if outcome.success:
            continue
        check, reason_of = rule_by_id[outcome.expectation_config.id]
        for hit in outcome.result.get("unexpected_index_list") or []:
            path = hit["relative_path"]
            row = by_path.loc[path]
            row = row.iloc[0] if isinstance(row, pd.DataFrame) else row
            found = (check or row["error_check"], reason_of(row))
            if found not in reasons.setdefault(path, []):
                reasons[path].append(found)
    return reasons, result.to_json_dict()


# ---------------------------------------------------------------- the step


def validate(
    raw_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    config: ValidateConfig,
    crop: CropConfig,
    landmarks: LandmarkConfig,
    progress_style: ProgressStyle = LOG_LINES,
) -> dict:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = read_manifest(raw_dir)
    ingest_quarantine = pd.read_parquet(raw_dir / "quarantine.parquet")
    photos_found = json.loads((raw_dir / "summary.json").read_text())["photos_found"]

    job = FactsJob(str(raw_dir / "images"), config, crop, landmarks)
    with Progress(len(manifest), "validate: faces and landmarks", "photo", progress_style) as progress:
        facts = gather_facts(list(manifest.relative_path), job, config.workers, progress)
    facts = mark_duplicates(facts.merge(manifest[["relative_path", "sha256"]], on="relative_path", how="left"))
    reasons, gx_result = run_suite(facts, config)

    valid = facts[~facts.relative_path.isin(reasons)]
    records = valid.merge(manifest[["relative_path", "identity", "width", "height"]], on="relative_path")
    records = records[
        ["relative_path", "identity", "sha256", "width", "height", "face_count", "subject_box", "other_boxes", "points"]
    ]
    quarantine = pd.concat([ingest_quarantine, _rejected_by_suite(reasons, manifest)], ignore_index=True)

    reason_counts = Counter(quarantine.check)
    metrics = {
        "photos_found": int(photos_found),
        "valid": int(len(records)),
        "quarantined": int(len(quarantine)),
        "valid_fraction": round(len(records) / max(photos_found, 1), 6),
        "photos_with_several_faces": int((records.face_count > 1).sum()),
        "quarantined_by_check": dict(reason_counts.most_common()),
    }
    write_parquet(out_dir / "records.parquet", records)
    write_parquet(out_dir / "quarantine.parquet", quarantine)
    write_json(out_dir / "report" / "gx_result.json", gx_result)
    with atomic_path(out_dir / "report" / "summary.md") as tmp:
        tmp.write_text(_summary_markdown(metrics, quarantine, config))
    flat = {k: v for k, v in metrics.items() if k != "quarantined_by_check"}
    flat.update({f"quarantined_{check}": n for check, n in reason_counts.items()})
    write_json(out_dir / "metrics.json", flat)
    log.info("validate: %d of %d photos valid (%.2f%%)", len(records), photos_found, 100 * metrics["valid_fraction"])
    if metrics["valid_fraction"] < config.min_valid_fraction:
        raise ValidationFailed(
            f"only {metrics['valid_fraction']:.1%} of photos are valid, below validate.min_valid_fraction="
            f"{config.min_valid_fraction:.1%}; see {out_dir / 'report' / 'summary.md'}"
        )
    return metrics


def _rejected_by_suite(reasons: dict[str, list[tuple[str, str]]], manifest: pd.DataFrame) -> pd.DataFrame:
    """The quarantine rows of the photos the suite failed: the first failing check, every reason."""
    return quarantine_table(
        [
            {
                "relative_path": p,
                "stage": "validate",
                "check": r[0][0],
                "reason": "; ".join(reason for _, reason in r),
                "source_uri": manifest.loc[manifest.relative_path == p, "source_uri"].iloc[0],
            }
            for p, r in sorted(reasons.items())
        ]
    )


def _summary_markdown(metrics: dict, quarantine: pd.DataFrame, config: ValidateConfig) -> str:
    lines = [
        "# Validation summary",
        "",
        f"- photos found at the source: {metrics['photos_found']}",
        f"- valid: {metrics['valid']} ({metrics['valid_fraction']:.2%}; the stage fails below {config.min_valid_fraction:.0%})",
        f"- quarantined: {metrics['quarantined']}",
        f"- valid photos with more than one face (subject = nearest the centre): {metrics['photos_with_several_faces']}",
        "",
        "## Quarantined photos by failed check",
        "",
        "| check | photos |",
        "|---|---|",
    ]
    lines += [f"| {kind} | {count} |" for kind, count in metrics["quarantined_by_check"].items()]
    lines += ["", "## First quarantined photos", "", "| photo | stage | check | reason |", "|---|---|---|---|"]
    lines += [f"| {r.relative_path} | {r.stage} | {r.check} | {r.reason} |" for r in quarantine.head(50).itertuples()]
    return "\n".join(lines) + "\n"
