"""The whole training step as one CUDA graph (train.cuda_graphs).

An eager step launches ~1,100-2,200 kernels (batch gather, critic phase, generator phase with the
dlib ResNet's pass, both Adam updates), one by one from Python: at batch 64 the host is the
bottleneck at every stage (benchmarks/README.md, "GPU: the paper profile on one H100"). Recorded
once and replayed, the step costs the host one launch.

What a replay needs, and how the trainer provides it:
- fixed input memory: the step takes the batch's row indices, copied into `rows` before each
  replay, and gathers the batch from the resident shards inside the graph;
- fixed output memory: the losses come back in the same tensors every step (the next replay
  overwrites them, so the trainer adds them up at once);
- no host reads or host-to-device copies inside the step, and optimizers with `capturable=True`;
- autocast without its weight cache (its cast copies would outlive the recording);
- the same structure every step: a key names the structure (ProGAN's fade-in runs extra layers
  while alpha < 1), and a new key records a new graph.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable

import torch

log = logging.getLogger(__name__)

Parts = dict[str, torch.Tensor]


class GraphRecordingError(RuntimeError):
    """The step could not be recorded as a CUDA graph (an op that syncs with the host, a copy
    from host memory, ...): the trainer goes on eagerly and reports it."""


class GraphedStep:
    """step(rows) -> losses, recorded as a CUDA graph after a few eager steps and replayed.

    The eager warm-up steps (on a side stream, as CUDA graphs want) create the optimizer state
    and the lazily built constants the step uses, so the recording allocates only the step's own
    tensors. They are real training steps, like every replay."""

    WARMUP_STEPS = 3

    def __init__(self, step: Callable[[torch.Tensor], Parts], rows: int, device: torch.device):
        self.step = step
        self.rows = torch.zeros(rows, dtype=torch.long, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.key: Hashable = None
        self.parts: Parts = {}
        self.warm_steps = 0

    def __call__(self, rows: torch.Tensor, key: Hashable = None) -> Parts:
        if key != self.key:  # another structure: warm up and record again
            self.graph, self.parts, self.key, self.warm_steps = None, {}, key, 0
        if self.warm_steps < self.WARMUP_STEPS:
            self.warm_steps += 1
            return self._eager_on_side_stream(rows)
        if self.graph is None:
            self._record()
        self.rows.copy_(rows)
        self.graph.replay()
        return self.parts

    def _eager_on_side_stream(self, rows: torch.Tensor) -> Parts:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            parts = self.step(rows)
        torch.cuda.current_stream().wait_stream(side)
        return parts

    def _record(self) -> None:
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):  # recorded, not run: the replay that follows runs it
                self.parts = self.step(self.rows)
        except RuntimeError as error:
            raise GraphRecordingError(f"{type(error).__name__}: {str(error).splitlines()[0]}") from error
        self.graph = graph
        log.info("training step recorded as a CUDA graph (structure %r)", self.key)
