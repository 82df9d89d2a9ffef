"""The rows a visit need not score: the classical baselines' and real vs real, scored at home on
the pack's own test frames (decoded from the pack, as the far side sees them) when the pack is
built, and carried to the far machine, which scores only the models it trains."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import yaml

from facectx.airgap.format import MAIN_SET
from facectx.airgap.unpack import unpack_set
from facectx.config import Params, parse_params
from facectx.evaluation.evaluate import evaluate
from facectx.io_utils import write_json

log = logging.getLogger(__name__)
REFERENCE_DIR = "reference"


def pack_params(params_file: str | os.PathLike, profile: str | None) -> tuple[Params, str]:
    """The params as the far run will use them (`profile` replacing the file's own, when given),
    and the profile's name."""
    raw = yaml.safe_load(Path(params_file).read_text())
    if profile:
        raw["profile"] = profile
    return parse_params(yaml.safe_dump(raw), str(params_file)), raw.get("profile")


def reference_rows(params: Params, staging: Path, set_names: list[str], calibration: dict | None, nets) -> dict:
    """Each packed set's evaluation without trained models (the baselines and real vs real) on
    the frames the far side will rebuild, into staging/reference/<set>.json; {set: that path}."""
    written = {}
    with tempfile.TemporaryDirectory(prefix="facectx-reference-") as scratch:
        main = None
        for name in [MAIN_SET, *(n for n in set_names if n != MAIN_SET)]:
            prepared = unpack_set(staging, name, Path(scratch) / f"prepared-{name}", share_from=main)
            main = main or prepared
            log.info("airgap pack: scoring the baselines and real vs real on set %s", name)
            result = evaluate(prepared, {}, Path(scratch) / f"report-{name}", params.evaluate, calibration, nets)
            path = f"{REFERENCE_DIR}/{name}.json"
            write_json(staging / path, result)
            written[name] = path
    return written


def carried_reference(pack: Path, manifest: dict, set_name: str, profile: str | None) -> dict | None:
    """The set's reference rows when the far run evaluates as they were made (the same profile);
    None (score the baselines here) for a pack without them or a run under another profile."""
    path = (manifest.get("reference") or {}).get(set_name)
    if path is None or (profile or manifest.get("profile")) != manifest.get("profile"):
        return None
    return json.loads((pack / path).read_text())
