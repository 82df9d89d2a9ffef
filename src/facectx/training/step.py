"""One training step: the critic phase, then the generator phase against the updated critic
(pix2pix order); and each loss term's own gradient norm, measured on some steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from facectx.losses import StageLoss, within_photo
from facectx.training import distributed
from facectx.training.data import Batch


def gan_step(
    batch: Batch,
    stage: int,
    g_forward: Callable,  # the generator as the step calls it (plain, DDP-wrapped or compiled)
    loss: StageLoss,
    optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer],  # the generator's, the critic's
    device_type: str,  # "cpu" or "cuda"
    bf16: bool,  # forward passes under bf16 autocast (CUDA)
    on_generator_terms: Callable | None = None,  # called with the weighted terms before the backward pass
    r1: bool = False,  # the critic phase adds the lazy R1 penalty (loss.r1_due; an eager step: double backward)
) -> dict[str, torch.Tensor]:
    """Critic phase (when a term trains against the critic), then generator phase; returns the
    detached losses. Forward passes run under autocast, backward passes outside it. The critic
    leaves its phase with no gradient (.grad None) and the generator phase computes none for it."""
    # Autocast's cache of cast weights would outlive a CUDA graph's recording, so the graph
    # runs without it; the eager step too, so that both compute the same way (visit 3: ProGAN's
    # bf16 graph step drifted from the eager one 2.6x further than eager runs drift apart, and the
    # cache was the one setting in which the two differed).
    autocast = dict(dtype=torch.bfloat16, enabled=bf16, cache_enabled=False)
    opt_g, opt_d = optimizers
    parts = {}
    with torch.autocast(device_type, **autocast):
        fake = within_photo(g_forward(batch.masked, batch.mask)[stage], batch.target[stage], batch.valid[stage])
        critic = loss.critic_loss(batch.masked[stage], batch.target[stage], fake, r1) if loss.uses_critic else None
    if critic is not None:
        opt_d.zero_grad(set_to_none=True)
        critic.total.backward()
        opt_d.step()
        opt_d.zero_grad(set_to_none=True)  # its memory is free for the generator phase
        parts.update(critic.parts)
    with torch.autocast(device_type, **autocast), frozen(loss.critic):
        gen = loss.generator_loss(batch.masked[stage], batch.target[stage], fake, batch.landmarks)
    if on_generator_terms is not None:
        on_generator_terms(gen.weighted)
    opt_g.zero_grad(set_to_none=True)
    gen.total.backward()
    opt_g.step()
    parts.update(gen.parts)
    return parts


@contextmanager
def frozen(module: torch.nn.Module) -> Iterator[None]:
    """The module's parameters require no gradient inside (then as before): the generator phase
    back-propagates through the critic to its input only, not into its weights, whose gradient
    it would throw away: as many FLOPs as a critic forward pass (paper widths, batch 64: 3.6 of
    288 GFLOP a step at 32 px, 57 of 1,732 at 128 px). The autograd graph is built in the forward pass, so the backward pass may
    run after the block. Works on a DDP-wrapped or compiled module (their parameters are the
    module's; DDP's reducer simply gets no gradient hooks that step, tested with two processes),
    and inside a CUDA graph's recording (a host-side flag)."""
    wanted = [p for p in module.parameters() if p.requires_grad]
    for p in wanted:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in wanted:
            p.requires_grad_(True)


def term_gradient_norms(
    weighted: dict[str, torch.Tensor], params: list[torch.Tensor], over_ranks: bool
) -> dict[str, torch.Tensor]:
    """The L2 norm of each weighted term's own gradient on `params` (the generator's trained
    parameters): each term's share of the update (one extra backward pass per term; no sync
    until they are reported). over_ranks: the global batch's gradient of several processes."""
    norms = {}
    for name, value in weighted.items():
        # autograd.grad fills no .grad and runs none of DDP's gradient hooks (they sit on the
        # gradient accumulators): the DDP step that follows is untouched.
        grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
        if over_ranks:
            norms[name] = global_gradient_norm(grads)
        else:
            norms[name] = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
    return norms


def global_gradient_norm(grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
    """A rank's gradient is its shard's; the global batch's is their mean (what DDP applies),
    and its norm is no function of the per-rank norms: average the gradient itself (one
    all_reduce per term, every grad_norm_every_steps steps). Equal on every rank."""
    flat = torch.cat([g.float().flatten() for g in grads if g is not None])
    return torch.sqrt((distributed.mean_over_ranks(flat) ** 2).sum())
