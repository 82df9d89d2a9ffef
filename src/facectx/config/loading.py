"""Reading params: YAML -> the schema's dataclasses, with the profile and a variant applied and
the result checked. Unknown or missing keys are errors that name the key."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path

import yaml

from facectx.config.checks import check_consistency
from facectx.config.schema import Params

DEFAULT_PARAMS_FILE = "params.yaml"


def load_params(path: str | os.PathLike = DEFAULT_PARAMS_FILE, variant: str | None = None) -> Params:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"params file not found: {path.resolve()}")
    return parse_params(path.read_text(), str(path), variant)


def parse_params(text: str, where: str = "params", variant: str | None = None) -> Params:
    """Params from YAML text (how Kubeflow components receive them).

    `profile: NAME` applies the overrides under `profiles: {NAME: {...}}` on top of the sections,
    so one file holds the CPU-quick and the paper-sized settings; then `variant` applies
    `variants: {NAME: {...}}` (the ProGAN variant, an ablation) on top of that.
    """
    raw = yaml.safe_load(text)
    if isinstance(raw, dict) and "profiles" in raw:
        raw = apply_profile(raw, where)
    variants = raw.get("variants") if isinstance(raw, dict) else None
    if isinstance(variants, dict):
        # Every variant must apply (a typo fails now, not hours later in its own training step).
        applied = {name: _apply_variant(raw, name, overrides, where) for name, overrides in variants.items()}
        if variant is not None:
            if variant not in applied:
                raise ValueError(f"{where}: variant {variant!r} is not among variants {sorted(applied)}")
            raw = applied[variant]
    params = _build(Params, raw, where)
    check_consistency(params, Path(where))
    return params


def dump_params(params: Params) -> str:
    return yaml.safe_dump(dataclasses.asdict(params), sort_keys=False)


def apply_profile(raw: dict, where: str) -> dict:
    raw = dict(raw)
    profiles = raw.pop("profiles")
    name = raw.pop("profile", None)
    if name is None:
        return raw
    if name not in profiles:
        raise ValueError(f"{where}: profile {name!r} is not among profiles {sorted(profiles)}")
    # Profiles size the model and its training; data steps never depend on them (DVC tracks
    # the data sections alone), so they may not override anything else.
    outside = sorted(set(profiles[name] or {}) - {"model", "losses", "train", "evaluate"})
    if outside:
        raise ValueError(f"{where}: profiles.{name} may only override model, losses, train and evaluate, not {outside}")
    return _merge(raw, profiles[name], f"{where}: profiles.{name}")


def _apply_variant(raw: dict, name: str, overrides, where: str) -> dict:
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}: variants.{name}: expected a mapping of overrides, got {overrides!r}")
    outside = sorted(set(overrides) - {"model", "losses", "train"})
    if outside:
        raise ValueError(f"{where}: variants.{name} may only override model, losses and train, not {outside}")
    return _merge(raw, overrides, f"{where}: variants.{name}")


def _merge(base: dict, overrides: dict, where: str) -> dict:
    merged = dict(base)
    for key, value in (overrides or {}).items():
        if key not in base:
            raise ValueError(f"{where}.{key}: overrides a key that params do not have")
        merged[key] = _merge(base[key], value, f"{where}.{key}") if isinstance(value, dict) else value
    return merged


def _build(cls, raw, where: str):
    """Build dataclass `cls` from mapping `raw`, converting lists to tuples and nested sections."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    missing = sorted(set(fields) - set(raw))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; expected {sorted(fields)}")
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    hints = typing.get_type_hints(cls)
    return cls(**{name: _build_value(value, hints[name], f"{where}.{name}") for name, value in raw.items()})


def _build_value(value, hint, where: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    if typing.get_origin(hint) is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected a mapping, got {value!r}")
        return value
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where}: expected a list, got {value!r}")
        item = typing.get_args(hint)[0]
        return tuple(_check_scalar(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    return _check_scalar(value, hint, where)


def _check_scalar(value, hint, where: str):
    if typing.get_origin(hint) is typing.Literal:
        # The value's type here; whether it is one of the Literal's values: checks.check_choices.
        hint = type(typing.get_args(hint)[0])
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind in (str, bool) and isinstance(value, kind):
            return value
    raise ValueError(f"{where}: expected {hint}, got {value!r}")
