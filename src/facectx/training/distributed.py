"""Several training processes for one stage (PyTorch DDP): the process group, the few collectives
the training loop needs, a batch norm whose statistics are the global batch's on CPU, and a
launcher for N local processes (torch's elastic launcher, as torchrun).

A process learns its place from the environment torchrun (or `run_processes`) sets: WORLD_SIZE,
RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT. With WORLD_SIZE unset or 1 nothing here starts a
process group and every helper is a no-op, so one process trains exactly as before.

Backends: NCCL on CUDA (one GPU per process, cuda:LOCAL_RANK), gloo on CPU. Host-side decisions
(the wall-clock cap, finiteness, barriers, small Python objects) go through a gloo group of their
own even under NCCL: a CPU tensor there needs no device sync, and the training loop stays free of
per-step GPU syncs.
"""

from __future__ import annotations

import atexit
import functools
import os
import tempfile
import uuid
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs
from torch.distributed.elastic.multiprocessing.errors import record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from facectx.tensors import resolve_device


@dataclass(frozen=True)
class ProcessContext:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    backend: str | None  # None: one process, no process group

    @property
    def main(self) -> bool:
        """Rank 0: the one process that validates, writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


_context: ProcessContext | None = None  # what init_from_env set up in this process
_host_group = None  # the gloo group for host-side collectives (None: the default group is gloo)


def init_from_env(device: torch.device | str | None = None) -> ProcessContext:
    """This process's rank, world size, local rank and device; starts the process group (once)
    when WORLD_SIZE > 1. device: where training runs (None: CUDA if available); under several
    processes a CUDA device becomes cuda:LOCAL_RANK."""
    global _context, _host_group
    device = torch.device(device) if device is not None else resolve_device("auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not dist.is_initialized():
        return ProcessContext(0, 1, 0, device, None)
    if _context is not None:
        if _context.device.type != device.type:
            raise RuntimeError(
                f"the process group was started for {_context.device.type} ({_context.backend}); "
                f"this step asks for {device.type}"
            )
        return _context
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
        atexit.register(cleanup)  # torchrun: the group goes down with the process
    elif dist.get_backend() != backend:
        raise RuntimeError(f"a {dist.get_backend()} process group is running, but training on {device} needs {backend}")
    world = dist.get_world_size()
    _host_group = dist.new_group(backend="gloo") if backend != "gloo" else None
    _context = ProcessContext(rank, world, local_rank, device, backend)
    return _context


def cleanup() -> None:
    """Take the process group down (all processes call it; idempotent)."""
    global _context, _host_group
    if dist.is_initialized():
        dist.destroy_process_group()
    _context, _host_group = None, None


def _active() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def barrier() -> None:
    if _active():
        dist.barrier(group=_host_group)


def decided_by_main(flag: bool) -> bool:
    """Rank 0's flag on every rank (e.g. its clock's say on the wall-clock cap)."""
    if not _active():
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.broadcast(value, src=0, group=_host_group)
    return bool(value.item())


def all_true(flag: bool) -> bool:
    """True where every rank's flag is (e.g. all losses finite): every rank takes the same branch."""
    if not _active():
        return flag
    value = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MIN, group=_host_group)
    return bool(value.item())


def mean_over_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of a (device) tensor over the ranks; returned as is with one process."""
    if not _active():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / dist.get_world_size()


def from_main(value):
    """Rank 0's picklable value on every rank."""
    if not _active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, group=_host_group)
    return box[0]


# --------------------------------------------------------------------------- batch norm


class _SumOverRanks(torch.autograd.Function):
    """all_reduce(SUM) with its true gradient: every rank's output depends on every rank's input,
    so an input's gradient is the sum of all ranks' output gradients (an all_reduce again)."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class CrossProcessBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's (every process's rows): what
    torch.nn.SyncBatchNorm does, for CPU/gloo, which SyncBatchNorm refuses. Two passes (mean,
    then the mean squared deviation), as one process computes them, rather than E[x^2] - E[x]^2,
    which loses digits where the mean is large against the spread. The sums go through a
    differentiable all_reduce, so autograd derives the exact gradient of the global statistics.
    Eval mode (and a single process) is plain BatchNorm2d on the running statistics."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and _active()):
            return super().forward(x)
        dims = (0, 2, 3)
        local = x.new_tensor([x.numel() // x.shape[1]])
        total = _SumOverRanks.apply(torch.cat([x.sum(dims), local]))
        n = total[-1].detach()
        mean = total[:-1] / n
        centred = x - mean.view(1, -1, 1, 1)
        var = _SumOverRanks.apply(centred.pow(2).sum(dims)) / n
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach(), n)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, n: torch.Tensor) -> None:
        """As BatchNorm2d does: momentum (or a cumulative average), unbiased variance."""
        self.num_batches_tracked.add_(1)
        factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        self.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        self.running_var.mul_(1 - factor).add_(var * n / (n - 1), alpha=factor)


def global_batch_norm(module: nn.Module, backend: str) -> nn.Module:
    """`module` with every BatchNorm2d computing its training statistics over all processes:
    torch.nn.SyncBatchNorm under NCCL (its fused CUDA kernels), CrossProcessBatchNorm2d under gloo.
    Parameters and buffers are the same tensors (state-dict keys unchanged)."""
    if backend == "nccl":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            replacement = CrossProcessBatchNorm2d(
                child.num_features,
                child.eps,
                child.momentum,
                child.affine,
                child.track_running_stats,
                device=child.running_mean.device,
            )
            replacement.weight, replacement.bias = child.weight, child.bias
            replacement.running_mean, replacement.running_var = child.running_mean, child.running_var
            replacement.num_batches_tracked = child.num_batches_tracked
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            global_batch_norm(child, backend)
    return module


# --------------------------------------------------------------------------- launcher


@record  # a failing rank's exception and traceback reach the launcher (ChildFailedError's root cause)
def _rank(call: functools.partial):
    try:
        return call()
    finally:
        cleanup()  # spawned workers exit without running atexit handlers


def run_processes(nproc: int, fn, *args, **kwargs):
    """Run fn(*args, **kwargs) in nproc local processes with torch's elastic launcher (what
    torchrun runs: one agent, the c10d rendezvous on a port the store binds itself, the torchrun
    environment for each rank); returns rank 0's result. fn and its arguments must pickle (the
    ranks are spawned). fn starts the process group itself (train_stage_step does, through
    init_from_env); it is taken down when fn returns. A failing rank stops them all and raises
    torch's ChildFailedError here, which names that rank's exception and traceback."""
    if nproc < 1:
        raise ValueError(f"run_processes: nproc must be at least 1, got {nproc}")
    with tempfile.TemporaryDirectory(prefix="facectx-ranks-") as logs:  # the ranks' error files
        config = LaunchConfig(
            min_nodes=1,
            max_nodes=1,
            nproc_per_node=nproc,
            run_id=f"facectx-{uuid.uuid4().hex}",
            rdzv_backend="c10d",
            rdzv_endpoint="127.0.0.1:0",
            local_addr="127.0.0.1",
            max_restarts=0,  # a failed stage fails its step; the step's retry resumes from the saved state
            logs_specs=DefaultLogsSpecs(log_dir=logs),
        )
        return elastic_launch(config, _rank)(functools.partial(fn, *args, **kwargs))[0]
