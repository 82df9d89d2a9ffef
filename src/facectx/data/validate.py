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
import multiprocessing
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import pandas as pd

from facectx.config import CropConfig, LandmarkConfig, ValidateConfig
from facectx.data.ingest import read_manifest
from facectx.data.landmarks import make_landmarker
from facectx.data.masks import face_frame, hull_mask, outside_fraction, points_in_frame
from facectx.data.photos import PhotoRejected, decode_photo
from facectx.data.quarantine import quarantine_table
from facectx.io_utils import atomic_path, sha256_bytes, write_json, write_parquet

log = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """Too few photos passed validation."""


# ---------------------------------------------------------------- per-photo facts (worker side)


@dataclass(frozen=True)
class _Job:
    images_dir: str
    validate: ValidateConfig
    crop: CropConfig
    landmarks: LandmarkConfig


# A pool worker's landmarker, set by _init_worker in each worker process (never in the parent:
# the in-process path passes its landmarker to photo_facts instead).
_worker_landmarker = None


def _init_worker(landmarks: LandmarkConfig) -> None:
    global _worker_landmarker
    cv2.setNumThreads(1)  # one process per core already; OpenCV's own threads would oversubscribe
    _worker_landmarker = make_landmarker(landmarks)


def _facts_in_worker(args: tuple[str, _Job]) -> dict:
    return photo_facts(*args, landmarker=_worker_landmarker)


def photo_facts(relative_path: str, job: _Job, landmarker) -> dict:
    """Everything validation needs to know about one photo; `error` says why it cannot be used."""
    facts = {
        "relative_path": relative_path,
        "error": None,
        "error_check": None,
        "decoded_width": None,
        "decoded_height": None,
        "pixel_sha256": None,
        "face_count": 0,
        "subject_box": None,
        "other_boxes": "[]",
        "points": None,
        "landmarks_inside_photo": None,
        "crop_outside_fraction": None,
        "mask_fraction": None,
    }
    try:
        rgb = decode_photo(os.path.join(job.images_dir, relative_path), job.validate.max_pixels, job.validate.formats)
    except PhotoRejected as err:
        facts.update(error=str(err), error_check="decodes_to_8bit_rgb")
        return facts
    height, width = rgb.shape[:2]
    facts.update(decoded_width=width, decoded_height=height, pixel_sha256=sha256_bytes(rgb.tobytes()))
    if min(width, height) < job.validate.min_side_px:
        return facts  # the suite reports the size; no point looking for a face
    found = landmarker(rgb)
    if found is None:
        facts.update(error="no face found", error_check="face_found")
        return facts
    points = found.points
    frame = face_frame(points, job.crop)
    frame_points = points_in_frame(points, frame, job.crop.size_px)
    facts.update(
        face_count=1 + len(found.other_boxes),
        subject_box=list(found.subject_box),
        other_boxes=json.dumps([list(b) for b in found.other_boxes]),
        points=points.reshape(-1).tolist(),
        landmarks_inside_photo=bool(((points >= 0) & (points <= [width - 1, height - 1])).all()),
        crop_outside_fraction=outside_fraction(frame, width, height),
        mask_fraction=float(hull_mask(frame_points, job.crop.size_px).mean()),
    )
    return facts


def gather_facts(relative_paths: list[str], job: _Job, workers: int) -> pd.DataFrame:
    tasks = [(p, job) for p in relative_paths]
    if workers <= 1 or len(tasks) < 2:
        landmarker = make_landmarker(job.landmarks)
        rows = [photo_facts(*t, landmarker=landmarker) for t in tasks]
    else:
        context = multiprocessing.get_context("fork")
        with context.Pool(workers, initializer=_init_worker, initargs=(job.landmarks,)) as pool:
            pending = pool.map_async(_facts_in_worker, tasks, chunksize=16)
            # great-expectations takes seconds to import; do it while the workers run (after the
            # fork, so no child inherits a half-finished import).
            import great_expectations  # noqa: F401

            rows = pending.get()
    return pd.DataFrame(rows)


def mark_duplicates(facts: pd.DataFrame) -> pd.DataFrame:
    """duplicate_of = the first photo (by path) with the same decoded pixels, else None. Photos
    that do not decode have no pixels and are nobody's duplicate (their digest is missing: None,
    or NaN once pandas has merged the table, and NaN is one object, so it would match itself)."""
    facts = facts.sort_values("relative_path", ignore_index=True)
    first_with = {}
    duplicate_of = []
    for path, digest in zip(facts.relative_path, facts.pixel_sha256):
        if pd.isna(digest):
            duplicate_of.append(None)
        elif digest in first_with:
            duplicate_of.append(first_with[digest])
        else:
            first_with[digest] = path
            duplicate_of.append(None)
    return facts.assign(duplicate_of=duplicate_of)


# ---------------------------------------------------------------- the suite (parent side)


def _rules(config: ValidateConfig):
    """(check name, expectation, reason for a failing row): the suite is the one source of the rules."""
    import great_expectations as gx

    e = gx.expectations

    def too_small(r):
        return f"too small: {r['decoded_width']}x{r['decoded_height']} px, minimum side is {config.min_side_px} px"

    return [
        (None, e.ExpectColumnValuesToBeNull(column="error"), lambda r: r["error"]),  # check named by the row
        ("min_size", e.ExpectColumnValuesToBeBetween(column="decoded_width", min_value=config.min_side_px), too_small),
        ("min_size", e.ExpectColumnValuesToBeBetween(column="decoded_height", min_value=config.min_side_px), too_small),
        (
            "landmarks_inside_photo",
            e.ExpectColumnValuesToBeInSet(column="landmarks_inside_photo", value_set=[True]),
            lambda r: "some of the 68 landmarks fall outside the photo",
        ),
        (
            "mask_fraction",
            e.ExpectColumnValuesToBeBetween(
                column="mask_fraction", min_value=config.mask_fraction_min, max_value=config.mask_fraction_max
            ),
            lambda r: (
                f"face mask covers {r['mask_fraction']:.1%} of the frame, outside "
                f"[{config.mask_fraction_min:.0%}, {config.mask_fraction_max:.0%}]"
            ),
        ),
        (
            "frame_inside_photo",
            e.ExpectColumnValuesToBeBetween(column="crop_outside_fraction", max_value=config.max_crop_outside_fraction),
            lambda r: (
                f"{r['crop_outside_fraction']:.0%} of the face frame lies outside the photo "
                f"(limit {config.max_crop_outside_fraction:.0%})"
            ),
        ),
        (
            "unique_content",
            e.ExpectColumnValuesToBeNull(column="duplicate_of"),
            lambda r: f"duplicate content of {r['duplicate_of']}",
        ),
        ("manifest", e.ExpectColumnValuesToBeUnique(column="relative_path"), lambda r: "listed twice in the manifest"),
        (
            "manifest",
            e.ExpectColumnValuesToMatchRegex(column="sha256", regex=r"^[0-9a-f]{64}$"),
            lambda r: "manifest sha256 is malformed",
        ),
    ]


def run_suite(facts: pd.DataFrame, config: ValidateConfig) -> tuple[dict[str, list[str]], dict]:
    """Run the suite; return (check, reason) pairs per failing relative_path and the GX result."""
    import great_expectations as gx

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
) -> dict:
    raw_dir, out_dir = Path(raw_dir), Path(out_dir)
    manifest = read_manifest(raw_dir)
    ingest_quarantine = pd.read_parquet(raw_dir / "quarantine.parquet")
    photos_found = json.loads((raw_dir / "summary.json").read_text())["photos_found"]

    job = _Job(str(raw_dir / "images"), config, crop, landmarks)
    facts = gather_facts(list(manifest.relative_path), job, config.workers)
    facts = mark_duplicates(facts.merge(manifest[["relative_path", "sha256"]], on="relative_path", how="left"))
    reasons, gx_result = run_suite(facts, config)

    valid = facts[~facts.relative_path.isin(reasons)]
    records = valid.merge(manifest[["relative_path", "identity", "width", "height"]], on="relative_path")
    records = records[
        ["relative_path", "identity", "sha256", "width", "height", "face_count", "subject_box", "other_boxes", "points"]
    ]
    rejected = quarantine_table(
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
    quarantine = pd.concat([ingest_quarantine, rejected], ignore_index=True)

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
