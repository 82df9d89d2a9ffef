"""Typed, frozen settings: the one reader of params.yaml.

Every hyperparameter lives in params.yaml, one section per pipeline step; each section maps onto
one dataclass (schema). Unknown or missing keys are errors that name the key, so a typo in
params.yaml never silently falls back to a default.

schema: the dataclasses (Literal types for settings with a fixed set of values) and the gate
syntax; loading: YAML -> Params, profiles and variants applied; checks: the consistency checks;
kubeflow: params as the Kubeflow pipeline carries them.
"""

from facectx.config.checks import check_consistency
from facectx.config.kubeflow import pipeline_params_text, resolve_params_text
from facectx.config.loading import DEFAULT_PARAMS_FILE, apply_profile, dump_params, load_params, parse_params
from facectx.config.schema import (
    WEIGHT_CHOICES,
    AssetsConfig,
    CropConfig,
    EvaluateConfig,
    HallucinateConfig,
    IngestConfig,
    LandmarkConfig,
    LossConfig,
    ModelConfig,
    Params,
    PrepareConfig,
    RegistryConfig,
    SplitConfig,
    TrackingConfig,
    TrainConfig,
    ValidateConfig,
    parse_gate,
    parse_gates,
    parse_weights_choices,
)

__all__ = [
    "WEIGHT_CHOICES",
    "DEFAULT_PARAMS_FILE",
    "AssetsConfig",
    "CropConfig",
    "EvaluateConfig",
    "HallucinateConfig",
    "IngestConfig",
    "LandmarkConfig",
    "LossConfig",
    "ModelConfig",
    "Params",
    "PrepareConfig",
    "RegistryConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainConfig",
    "ValidateConfig",
    "apply_profile",
    "check_consistency",
    "dump_params",
    "load_params",
    "parse_gate",
    "parse_gates",
    "parse_params",
    "parse_weights_choices",
    "pipeline_params_text",
    "resolve_params_text",
]
