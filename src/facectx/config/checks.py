"""What the types alone do not say: the settings' consistency checks, one small function each,
run in order (CHECKS) by check_consistency; the first failure is a ValueError naming the key."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from facectx.config.schema import LandmarkBackend, Params, SplitMethod, parse_gate, parse_weights_choices


def check_landmarks_backend(params: Params, path: Path) -> None:
    if params.landmarks.backend not in typing.get_args(LandmarkBackend):
        raise ValueError(
            f"{path}: landmarks.backend must be 'dlib' or 'face_alignment', got {params.landmarks.backend!r}"
        )


def check_resolutions(params: Params, path: Path) -> None:
    resolutions = params.prepare.resolutions
    if list(resolutions) != sorted(resolutions) or resolutions[-1] != params.crop.size_px:
        raise ValueError(
            f"{path}: prepare.resolutions must ascend and end at crop.size_px={params.crop.size_px}, got {list(resolutions)}"
        )
    for low, high in zip(resolutions, resolutions[1:]):
        if high != 2 * low:
            raise ValueError(f"{path}: prepare.resolutions must double at each level, got {list(resolutions)}")


def check_split_method(params: Params, path: Path) -> None:
    if params.prepare.split.method not in typing.get_args(SplitMethod):
        raise ValueError(f"{path}: prepare.split.method must be auto, lfw or hash, got {params.prepare.split.method!r}")


def check_stages(params: Params, path: Path) -> None:
    train = params.train
    if len(train.epochs) != len(train.stages) or not set(train.stages) <= set(params.prepare.resolutions):
        raise ValueError(
            f"{path}: train.epochs must give one count per train.stages entry, and stages must be among prepare.resolutions"
        )
    if list(train.stages) != sorted(train.stages) or any(b != 2 * a for a, b in zip(train.stages, train.stages[1:])):
        raise ValueError(f"{path}: train.stages must double from one to the next, got {list(train.stages)}")


def check_batch_sizes(params: Params, path: Path) -> None:
    train = params.train
    if len(train.batch_size) != len(train.stages) or any(b < 1 for b in train.batch_size):
        raise ValueError(
            f"{path}: train.batch_size must give one size >= 1 per train.stages entry, got {list(train.batch_size)}"
        )


def literal_fields(section) -> list[tuple[str, typing.Any, tuple]]:
    """(name, value, allowed values) of each `Literal`-typed field of a settings dataclass."""
    hints = typing.get_type_hints(type(section))
    return [
        (field.name, getattr(section, field.name), typing.get_args(hints[field.name]))
        for field in dataclasses.fields(section)
        if typing.get_origin(hints[field.name]) is typing.Literal
    ]


# The sections whose Literal fields check_choices checks (landmarks.backend and
# prepare.split.method have checks of their own, earlier).
_CHOICE_SECTIONS = ("model", "losses", "train", "evaluate", "tracking", "hallucinate")


def check_choices(params: Params, path: Path) -> None:
    """Each Literal-typed setting is one of the Literal's values."""
    for section in _CHOICE_SECTIONS:
        for name, value, allowed in literal_fields(getattr(params, section)):
            if value not in allowed:
                raise ValueError(f"{path}: {section}.{name} must be one of {allowed}, got {value!r}")


def check_cuda_graphs(params: Params, path: Path) -> None:
    train = params.train
    if train.compile and train.compile_mode == "reduce-overhead" and train.cuda_graphs:
        raise ValueError(
            f"{path}: train.compile_mode reduce-overhead and train.cuda_graphs both make CUDA graphs: choose one "
            "(cuda_graphs records the whole step; reduce-overhead the generator and critic only)"
        )


def check_grad_norm_interval(params: Params, path: Path) -> None:
    train = params.train
    if train.grad_norm_every_steps < 0 or train.grad_norm_every_steps % train.log_every_steps:
        raise ValueError(
            f"{path}: train.grad_norm_every_steps must be 0 or a multiple of train.log_every_steps "
            f"({train.log_every_steps}), got {train.grad_norm_every_steps}"
        )


def per_stage_fields(section) -> list[str]:
    """The fields of a settings dataclass that hold one value per train.stages entry
    (typed `tuple[float, ...]`): a new loss term's weight is checked by being declared so."""
    hints = typing.get_type_hints(type(section))
    return [field.name for field in dataclasses.fields(section) if hints[field.name] == tuple[float, ...]]


def check_loss_weights(params: Params, path: Path) -> None:
    for name in per_stage_fields(params.losses):
        weights = getattr(params.losses, name)
        if len(weights) != len(params.train.stages) or any(w < 0 for w in weights):
            raise ValueError(
                f"{path}: losses.{name} must give one weight >= 0 per train.stages entry, got {list(weights)}"
            )


def check_identity_padding(params: Params, path: Path) -> None:
    if not 0 <= params.losses.identity_padding <= 2:
        raise ValueError(f"{path}: losses.identity_padding must be in [0, 2], got {params.losses.identity_padding}")


def check_vgg19_weights(params: Params, path: Path) -> None:
    losses = params.losses
    if losses.perceptual_network == "vgg19" and losses.perceptual and not losses.vgg19_weights:
        raise ValueError(f"{path}: losses.perceptual_network is vgg19 but losses.vgg19_weights is not set")
    lpips_files = losses.lpips_backbone_weights and losses.lpips_linear_weights
    if losses.perceptual_network == "lpips" and losses.perceptual and not lpips_files:
        raise ValueError(
            f"{path}: losses.perceptual_network is lpips: set losses.lpips_backbone_weights and "
            "losses.lpips_linear_weights"
        )


def check_critic(params: Params, path: Path) -> None:
    """The critic's shape, R1 and optimizer settings."""
    model, losses, train = params.model, params.losses, params.train
    if not 1 <= model.disc_scales <= 3:
        raise ValueError(f"{path}: model.disc_scales must be 1, 2 or 3, got {model.disc_scales}")
    if losses.r1_gamma < 0 or losses.r1_every < 1:
        raise ValueError(
            f"{path}: losses.r1_gamma must be >= 0 and losses.r1_every >= 1, got {losses.r1_gamma}, {losses.r1_every}"
        )
    if train.critic_lr is not None and train.critic_lr <= 0:
        raise ValueError(f"{path}: train.critic_lr must be > 0 (or null: train.lr), got {train.critic_lr}")
    for name in ("critic_beta1", "critic_beta2"):
        beta = getattr(train, name)
        if beta is not None and not 0 <= beta < 1:
            raise ValueError(f"{path}: train.{name} must be in [0, 1) (or null: the generator's), got {beta}")


def check_compare(params: Params, path: Path) -> None:
    unknown = sorted(set(params.compare) - set(params.variants))
    if unknown:
        raise ValueError(f"{path}: compare names {unknown}, which are not among variants {sorted(params.variants)}")


def check_lpips_weights(params: Params, path: Path) -> None:
    if bool(params.evaluate.lpips_backbone_weights) != bool(params.evaluate.lpips_linear_weights):
        raise ValueError(
            f"{path}: LPIPS needs both evaluate.lpips_backbone_weights and evaluate.lpips_linear_weights "
            "(or neither, for the labelled substitute)"
        )


def check_gates(params: Params, path: Path) -> None:
    for gate in params.registry.gate_metrics:
        try:
            parse_gate(gate)
        except ValueError:
            raise ValueError(
                f"{path}: registry.gate_metrics entries look like 'metric:higher' or 'metric:lower', got {gate!r}"
            ) from None


def check_averaging(params: Params, path: Path) -> None:
    train = params.train
    if not 0 <= train.ema_decay < 1:
        raise ValueError(f"{path}: train.ema_decay must be in [0, 1) (0 = no EMA), got {train.ema_decay}")
    if train.standing_stats_batches < 0:
        raise ValueError(
            f"{path}: train.standing_stats_batches must be >= 0 (0 = off), got {train.standing_stats_batches}"
        )


def check_weights_choices(params: Params, path: Path) -> None:
    parse_weights_choices(params.evaluate.weights, f"{path}: evaluate.weights")


def check_mask_fractions(params: Params, path: Path) -> None:
    if not 0 < params.validate.mask_fraction_min < params.validate.mask_fraction_max < 1:
        raise ValueError(f"{path}: need 0 < validate.mask_fraction_min < validate.mask_fraction_max < 1")


def check_hallucinate(params: Params, path: Path) -> None:
    h = params.hallucinate
    for name in ("shard_photos", "batch_size", "workers", "sample_grid_photos"):
        if getattr(h, name) < 1:
            raise ValueError(f"{path}: hallucinate.{name} must be >= 1, got {getattr(h, name)!r}")
    if not 1 <= h.webp_quality <= 100:
        raise ValueError(f"{path}: hallucinate.webp_quality must be 1..100 (100 = lossless), got {h.webp_quality!r}")
    if not h.source or not h.out or h.source.rstrip("/") == h.out.rstrip("/"):
        raise ValueError(f"{path}: hallucinate.source and hallucinate.out must be given and differ, got {h.source!r}")


CHECKS = (
    check_landmarks_backend,
    check_resolutions,
    check_split_method,
    check_stages,
    check_batch_sizes,
    check_choices,
    check_cuda_graphs,
    check_grad_norm_interval,
    check_loss_weights,
    check_identity_padding,
    check_vgg19_weights,
    check_critic,
    check_compare,
    check_lpips_weights,
    check_gates,
    check_hallucinate,
    check_mask_fractions,
    check_averaging,
    check_weights_choices,
)


def check_consistency(params: Params, path: Path) -> None:
    for check in CHECKS:
        check(params, path)
