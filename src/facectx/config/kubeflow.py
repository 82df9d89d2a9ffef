"""Params as the Kubeflow pipeline carries them: one string of YAML, the file's as the pipeline's
default, with the profile and comparison list chosen when a run is submitted."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from facectx.config.loading import DEFAULT_PARAMS_FILE, dump_params, load_params, parse_params


def pipeline_params_text(path: str | os.PathLike = DEFAULT_PARAMS_FILE) -> str:
    """The params file as the Kubeflow pipeline's default `params_yaml`: one line of JSON (valid
    YAML; kfp copies defaults into a header comment, where a multi-line string would break the
    compiled file), profiles kept, and no ingest.source: a path on this machine means nothing in a
    pod, so the pipeline's `source` parameter names the photos."""
    load_params(path)  # refuse an invalid file now, not in the cluster
    raw = yaml.safe_load(Path(path).read_text())
    raw["ingest"] = {**raw["ingest"], "source": ""}
    return json.dumps(raw)


def resolve_params_text(text: str, profile: str = "", compare: str = "", where: str = "params_yaml") -> str:
    """params_yaml with a profile and a comparison list chosen at submit time, applied and checked:
    the YAML every pipeline step then reads (parse_params). Empty profile/compare keep the file's."""
    raw = yaml.safe_load(text)
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of params sections")
    if profile:
        if "profiles" not in raw:
            raise ValueError(f"{where}: profile {profile!r} asked for, but these params have no profiles section")
        raw["profile"] = profile
    if compare.strip():
        raw["compare"] = [name.strip() for name in compare.split(",") if name.strip()]
    return dump_params(parse_params(yaml.safe_dump(raw, sort_keys=False), where))
