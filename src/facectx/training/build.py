"""What one stage trains with, built from its settings: the generator and its critic, their Adam
optimizers, the stage's loss (terms, critic, fixed networks), and the modules the step calls
(DDP-wrapped over several processes, compiled if asked)."""

from __future__ import annotations

import logging

import torch

from facectx.config import LossConfig, TrainConfig
from facectx.losses import FaceFeatures, StageLoss, perceptual_network, stage_weights
from facectx.models.cascade import ModelArgs
from facectx.models.factory import build_critic, build_generator
from facectx.training import distributed

log = logging.getLogger(__name__)


def use_cuda_graphs(train: TrainConfig, process: distributed.ProcessContext) -> bool:
    """train.cuda_graphs applies to one process on a CUDA device: with several, DDP's
    gradient hooks would need recording too (not done)."""
    wanted = train.cuda_graphs and process.device.type == "cuda"
    if wanted and process.distributed:
        log.info("train.cuda_graphs is not used with %d processes: the step runs eagerly", process.world)
    return wanted and not process.distributed


def build_models(
    args: ModelArgs, stage: int, process: distributed.ProcessContext
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The stage's generator and critic, freshly initialised (from the seeded generator)."""
    generator = build_generator(args, stage).to(process.device)
    if process.distributed:  # batch statistics of the global batch, as one process has them
        generator = distributed.global_batch_norm(generator, process.backend)
    critic = build_critic(args, stage).to(process.device)
    return generator, critic


def build_optimizers(
    generator: torch.nn.Module,
    critic: torch.nn.Module,
    train: TrainConfig,
    device: torch.device,
    grows: bool,
    capturable: bool,
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Adam for the generator (its own parameter groups: `optimizer_groups`) and for the critic
    (train.critic_lr / critic_beta1 / critic_beta2, each null = the generator's: two time-scale
    updates when set). grows: the stage starts from a previous stage's weights. capturable: the
    step count stays on the device, so a CUDA graph can record the update."""
    # fused on CUDA: one kernel over each parameter list instead of a dozen foreach passes
    # (visit 3's profile: the two updates' foreach kernels took >= 1.4 ms of the 128-px step).
    cuda = device.type == "cuda"
    fused = True if cuda else None  # None: torch's own choice (foreach) elsewhere
    adam = dict(capturable=capturable, fused=fused)
    groups = generator.optimizer_groups(train.lr, train.earlier_blocks, train.finetune_lr_scale, grows)
    opt_g = torch.optim.Adam(groups, betas=(train.beta1, train.beta2), **adam)
    critic_betas = (_or(train.critic_beta1, train.beta1), _or(train.critic_beta2, train.beta2))
    opt_d = torch.optim.Adam(critic.parameters(), lr=_or(train.critic_lr, train.lr), betas=critic_betas, **adam)
    if train.channels_last and cuda:
        generator.to(memory_format=torch.channels_last)
        critic.to(memory_format=torch.channels_last)
    return opt_g, opt_d


def _or(value: float | None, default: float) -> float:
    """The setting, or the default where it is null (0.0 is a setting: beta1 0 is ProGAN's)."""
    return default if value is None else value


def build_loss(
    losses: LossConfig,
    stages: tuple[int, ...],
    stage: int,
    critic: torch.nn.Module,
    frame_size: int,  # crop.size_px: the frame the landmarks are pixels of
    identity_weights: str | None,  # the dlib ResNet's weights folder; None: the cache
    device: torch.device,
    channels_last: bool,
) -> StageLoss:
    """The stage's loss: the terms on at this stage with their weights, the critic, the fixed networks."""
    face = FaceFeatures(frame_size, device, identity_weights, losses.identity_padding)
    if channels_last and device.type == "cuda":
        # The frozen dlib ResNet too: with NCHW weights cuDNN transposed its bf16 activations to
        # NHWC and back at every convolution (visit 3's profile: ~1.4 ms of the 128-px step).
        face.to(memory_format=torch.channels_last)
    weights = stage_weights(losses, stages, stage)
    return StageLoss(losses, weights, critic, face, perceptual_network(losses, face, frame_size, device))


def forward_modules(
    generator: torch.nn.Module,
    critic: torch.nn.Module,
    process: distributed.ProcessContext,
    train: TrainConfig,
    uses_critic: bool,
) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The generator and critic as the training step calls them: DDP wrappers over several
    processes (build them after every state is loaded: DDP's construction makes rank 0's weights
    and buffers everyone's, and is a collective, so no rank writes resume state before all have
    read it), compiled if asked. The plain modules serve checkpoints and validation."""
    g_forward, c_forward = generator, critic
    if process.distributed:
        g_forward = _ddp(generator, process, generator.find_unused_parameters)
        if uses_critic:  # without a term against it the critic is never run
            c_forward = _ddp(critic, process, critic.find_unused_parameters)
    if train.compile:
        g_forward = torch.compile(g_forward, mode=train.compile_mode)
        c_forward = torch.compile(c_forward, mode=train.compile_mode)
    return g_forward, c_forward


def _ddp(module: torch.nn.Module, process: distributed.ProcessContext, find_unused: bool) -> torch.nn.Module:
    """DDP averages the ranks' gradients: with equal shards, the gradient of the global batch's
    mean loss. Buffers (batch-norm running statistics, spectral norm's power-iteration vectors)
    are broadcast from rank 0 at each forward; they are equal anyway (same weights, same
    global statistics, deterministic power iteration), which keeps them so. find_unused: the
    module computes layers it does not use (the ProGAN generator's previous-level RGB paths once
    faded in, and its critic's), so DDP must look for unused parameters."""
    ids = [process.device.index] if process.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused)
