"""Training of one stage: block N of the cascade (or the ProGAN generator grown to N), starting
from stage N/2's checkpoint, against its own PatchGAN critic.

One loop serves every stage and both model kinds; the loss object owns the phases. Checkpoints
are written every `checkpoint_every_steps` and at each epoch's end into a resume folder, so a
killed run continues where it stopped (bit-identically in deterministic CPU mode: batch order is
a function of (seed, stage, epoch), and nothing else in a step draws random numbers);
`train.resume_checkpoints: false` writes none (a machine whose disk does not outlive the run).

A wall-clock cap (`deadline`) ends a stage early but cleanly: validated, checkpointed, marked
`capped` in metrics.json, so the next stage can still start from it.

The loop reads device tensors on the host (a sync that drains the GPU's queue) only every
`log_every_steps`: losses are summed and checked for finiteness on the device until then.

Scale-out: under torchrun (or `distributed.run_processes`) each of W processes trains the same
models with DistributedDataParallel on its contiguous 1/W of every step's batch; train.batch_size
stays the global batch, batch norm takes global-batch statistics and every loss term is a mean
over rows, so W processes compute what one would (to float rounding). Rank 0 alone validates,
writes checkpoints, resume state, losses.csv and metrics.json, and logs; the cap and the
finiteness checks are decided once for all ranks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facectx.checkpoint import (
    META,
    CheckpointError,
    TrainingIdentity,
    git_commit,
    load_checkpoint,
    read_meta,
    save_checkpoint,
    training_identity,
    training_settings,
)
from facectx.config import Params, TrainConfig
from facectx.io_utils import write_json
from facectx.losses import (
    FaceFeatures,
    StageLoss,
    identity_distance,
    perceptual_network,
    stage_weights,
    to_unit,
    within_photo,
)
from facectx.models.cascade import PatchDiscriminator
from facectx.models.factory import build_generator, model_args, previous_stage
from facectx.ssim import ssim
from facectx.tensors import resolve_device
from facectx.training import distributed
from facectx.training.data import Batch, DataError, ResidentShards
from facectx.training.graphed_step import GraphedStep, GraphRecordingError

log = logging.getLogger(__name__)


class NonFiniteLoss(RuntimeError):
    """A loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


@dataclass
class StageResult:
    stage: int
    checkpoint: Path
    steps: int
    train_seconds: float
    images_per_second: float
    val: dict[str, float]
    capped: bool  # stopped by the wall-clock cap before its planned steps


def stage_batch_size(train: TrainConfig, stage: int) -> int:
    """The batch size of one stage (train.batch_size is aligned with train.stages)."""
    return train.batch_size[list(train.stages).index(stage)]


def rank_batch_size(batch_size: int, world: int, stage: int) -> int:
    """Each process's share of a step's (global) batch; the batch must split evenly, or the
    processes' mean losses would not average to the global batch's."""
    if batch_size % world:
        raise ValueError(
            f"train.batch_size {batch_size} (stage {stage}) is not divisible by the {world} training "
            f"processes: each takes an equal share of every step's batch; use a multiple of {world}"
        )
    return batch_size // world


def _epoch_order(rows: int, seed: int, stage: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + stage * 1_009 + epoch)
    return torch.randperm(rows, generator=generator)


def sample_grid(masked: torch.Tensor, output: torch.Tensor, target: torch.Tensor, frame: int) -> np.ndarray:
    """Rows of masked | output | target, enlarged (nearest) to the frame size: uint8 HWC."""

    def show(x):
        return torch.nn.functional.interpolate(to_unit(x.float()).clamp(0, 1), size=(frame, frame), mode="nearest")

    rows = torch.cat([show(masked), show(output), show(target)], dim=3)  # side by side
    grid = torch.cat(list(rows), dim=1)  # stacked
    return (grid.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


def _seed(seed: int, cuda: bool) -> None:
    """torch.manual_seed's CPU seeding (and its CUDA seeding when training there), leaving any
    other device's generator alone."""
    torch.default_generator.manual_seed(seed)
    if cuda:
        torch.cuda.manual_seed_all(seed)


def _rng_states(cuda: bool) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    return torch.get_rng_state(), torch.cuda.get_rng_state_all() if cuda else None


def _set_rng_states(states: tuple[torch.Tensor, list[torch.Tensor] | None]) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


class StageTrainer:
    """Holds everything one stage's training needs; `run()` trains and returns the result.

    deadline: a time.monotonic() value; the first step that ends past it is the stage's last
    (see `run`). At least one step always runs, so even a deadline already past leaves a
    checkpoint the next stage can start from.

    Torch's process-wide state (deterministic algorithms, the seeded random generators) is the
    trainer's only while it builds and while `run()` trains (`torch_scope`): nothing of it is left
    behind in the calling process.
    """

    def __init__(
        self,
        params: Params,
        stage: int,
        prepared_dir: Path,
        out_dir: Path,
        init_dir: Path | None,
        resume_dir: Path,
        tracker=None,
        require_previous: bool = True,
        deadline: float | None = None,
        on_resume_saved=None,
        identity: TrainingIdentity | None = None,
    ):
        """identity: the run's settings, config hash and data version, worked out once per run by
        the caller (`steps`); None works them out here."""
        self.params, self.stage, self.deadline = params, stage, deadline
        t = params.train
        # One process, or this process's rank of several (torchrun / run_processes): only rank 0 logs.
        self.dist = distributed.init_from_env(resolve_device(t.device))
        self.tracker = tracker if self.dist.main else None
        self.on_resume_saved = on_resume_saved  # called with resume_dir after each resume save (e.g. a copy to S3)
        self.out_dir, self.resume_dir = Path(out_dir), Path(resume_dir)
        self.batch_size = stage_batch_size(t, stage)  # the global batch of one step, whatever the processes
        self.rank_batch = rank_batch_size(self.batch_size, self.dist.world, stage)  # refused before any loading
        self.device = self.dist.device
        self.autocast = t.precision == "bf16" and self.device.type == "cuda"
        # One process on a CUDA device: DDP's gradient hooks would need recording too (not done).
        self.cuda_graphs = t.cuda_graphs and self.device.type == "cuda" and not self.dist.distributed
        if t.cuda_graphs and self.device.type == "cuda" and self.dist.distributed:
            log.info("train.cuda_graphs is not used with %d processes: the step runs eagerly", self.dist.world)
        self.args = model_args(params)
        self.identity = self._checked_identity(identity, prepared_dir)
        self._rng_states = None  # the trainer's generators between its torch scopes (None: not seeded yet)
        with self.torch_scope():  # seeded: the initial weights are a function of (train.seed, stage)
            self._build_data(Path(prepared_dir))
            self._build_models()
            self.previous = previous_stage(params, stage)
            if require_previous:  # only benchmarks, which time steps, start later stages untrained
                self._load_previous_stage(init_dir)
            self._build_optimizers()
            self._build_losses()
            self._resume_or_start()
            self._set_up_forward()

    # ---------------------------------------------------------------- set-up

    def _checked_identity(self, identity: TrainingIdentity | None, prepared_dir: Path) -> TrainingIdentity:
        if identity is None:
            return training_identity(self.params, prepared_dir)
        if identity.settings != training_settings(self.params):  # checkpoints would record the wrong settings
            raise ValueError("the training identity handed to the trainer was worked out from other settings")
        return identity

    @contextlib.contextmanager
    def torch_scope(self):
        """Torch's process-wide state as this run needs it while the trainer builds (`__init__`) or
        trains (`run`), and the caller's again afterwards: deterministic algorithms when
        train.deterministic, and the random number generators (CPU, and CUDA when training there).
        The first scope seeds them with (train.seed, stage); each later one starts where the
        previous one left them, so the trainer draws the numbers one seeded generator would give,
        whatever the caller draws in between."""
        cuda = self.device.type == "cuda"
        caller_rng = _rng_states(cuda)
        caller_deterministic = torch.are_deterministic_algorithms_enabled()
        caller_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        try:
            if self.params.train.deterministic:
                torch.use_deterministic_algorithms(True)
            if self._rng_states is None:
                _seed(self.params.train.seed * 7919 + self.stage, cuda)
            else:
                _set_rng_states(self._rng_states)
            yield
        finally:
            self._rng_states = _rng_states(cuda)
            _set_rng_states(caller_rng)
            torch.use_deterministic_algorithms(caller_deterministic, warn_only=caller_warn_only)

    def _build_data(self, prepared_dir: Path) -> None:
        params, t = self.params, self.params.train
        needed = tuple(r for r in params.prepare.resolutions if r <= self.stage)
        self.train_data = ResidentShards(prepared_dir, "train", needed, self.device, t.max_train_rows, seed=t.seed)
        # Validation rows do not follow train.seed: runs with different seeds are scored on the same photos.
        self.val_data = ResidentShards(prepared_dir, "val", needed, self.device, t.val_rows, seed=0)
        if self.train_data.frame_size != params.crop.size_px:  # the landmarks are pixels of that frame
            raise DataError(
                f"prepared data in {prepared_dir} have {self.train_data.frame_size}-px frames, "
                f"but crop.size_px is {params.crop.size_px}: prepare them again"
            )
        self.steps_per_epoch = self.train_data.rows // self.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"train.batch_size {self.batch_size} (stage {self.stage}) exceeds the "
                f"{self.train_data.rows} training rows"
            )
        self.epochs = t.epochs[list(t.stages).index(self.stage)]
        self.total_steps = self.epochs * self.steps_per_epoch

    def _build_models(self) -> None:
        """The stage's generator and critic, freshly initialised (from the seeded generator)."""
        self.generator = build_generator(self.args, self.stage).to(self.device)
        if self.dist.distributed:  # batch statistics of the global batch, as one process has them
            self.generator = distributed.global_batch_norm(self.generator, self.dist.backend)
        self.critic = PatchDiscriminator(self.stage, self.args.disc_width, self.args.disc_max_layers).to(self.device)

    def _build_optimizers(self) -> None:
        t = self.params.train
        # capturable: the step count stays on the device, so a CUDA graph can record the update.
        # fused on CUDA: one kernel over each parameter list instead of a dozen foreach passes
        # (visit 3's profile: the two updates' foreach kernels took >= 1.4 ms of the 128-px step).
        betas, capturable = (t.beta1, t.beta2), self.cuda_graphs
        fused = True if self.device.type == "cuda" else None  # None: torch's own choice (foreach) elsewhere
        adam = dict(betas=betas, capturable=capturable, fused=fused)
        self.opt_g = torch.optim.Adam(self._generator_groups(), **adam)
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=t.lr, **adam)
        if t.channels_last and self.device.type == "cuda":
            self.generator.to(memory_format=torch.channels_last)
            self.critic.to(memory_format=torch.channels_last)

    def _build_losses(self) -> None:
        params, frame, losses = self.params, self.params.crop.size_px, self.params.losses
        self.face = FaceFeatures(frame, self.device, params.assets.identity_weights, losses.identity_padding)
        if params.train.channels_last and self.device.type == "cuda":
            # The frozen dlib ResNet too: with NCHW weights cuDNN transposed its bf16 activations to
            # NHWC and back at every convolution (visit 3's profile: ~1.4 ms of the 128-px step).
            self.face.to(memory_format=torch.channels_last)
        self.weights = stage_weights(losses, params.train.stages, self.stage)
        self.loss = StageLoss(
            losses, self.weights, self.critic, self.face, perceptual_network(losses, self.face, frame, self.device)
        )
        self.grad_norms: dict[str, torch.Tensor] = {}  # the last measured per-term gradient norms, until reported
        # losses.csv has the same columns on every row (a term's gradient is measured on some rows only).
        terms = (["critic"] if "adv" in self.weights else []) + list(self.weights) + ["total"]
        self.curve_columns = (
            [f"loss_{k}" for k in terms]
            + [f"grad_{k}" for k in self.weights]
            + [f"share_{k}" for k in self.weights if k != "rec"]
        )

    def _resume_or_start(self) -> None:
        """Continue from the resume state when there is one of these settings and data, else start
        at step 0; the loss curve is kept up to that step."""
        resumable = self.params.train.resume_checkpoints
        self.epoch, self.batch_in_epoch, self.step = 0, 0, 0
        # The loss curve lives beside the resume state, so a resumed run's curve is whole; without
        # resume state it is written straight into out_dir.
        self.curve = (self.resume_dir if resumable else self.out_dir) / "losses.csv"
        if resumable:
            self._resume()
        if self.dist.main:
            self._trim_curve()

    def _load_previous_stage(self, init_dir: Path | None) -> None:
        if self.previous is None:
            return
        if init_dir is None or not (Path(init_dir) / META).is_file():
            raise CheckpointError(
                f"stage {self.stage} starts from stage {self.previous}'s checkpoint, but there is none at "
                f"{init_dir}: train stage {self.previous} first (facectx train-stage --stage {self.previous})"
            )
        meta, states, _ = load_checkpoint(init_dir, expected_config_hash=self.identity.config_hash)
        if meta.get("stage") != self.previous:
            raise CheckpointError(f"{init_dir} holds stage {meta.get('stage')}, expected stage {self.previous}")
        own = self.generator.state_dict()
        inherited = states["generator"]
        unknown = sorted(set(inherited) - set(own))
        if unknown:
            raise CheckpointError(
                f"{init_dir}: generator tensors {unknown[:5]} do not exist in the stage-{self.stage} model"
            )
        own.update(inherited)
        self.generator.load_state_dict(own)

    def _generator_groups(self) -> list[dict]:
        t = self.params.train
        if self.args.kind == "progan" or self.previous is None:
            return [{"params": list(self.generator.parameters()), "lr": t.lr}]
        current = self.generator.blocks[str(self.stage)]
        earlier = [b for key, b in self.generator.blocks.items() if int(key) < self.stage]
        groups = [{"params": list(current.parameters()), "lr": t.lr}]
        if t.earlier_blocks == "frozen":
            for block in earlier:
                block.requires_grad_(False)
        else:
            groups.append({"params": [p for b in earlier for p in b.parameters()], "lr": t.lr * t.finetune_lr_scale})
        return groups

    def _set_up_forward(self) -> None:
        """The modules the training step calls: DDP wrappers over several processes (after every
        state is loaded: DDP's construction makes rank 0's weights and buffers everyone's, and is a
        collective, so no rank writes resume state before all have read it), compiled if asked.
        `self.generator` and `self.critic` stay the plain modules: checkpoints, validation."""
        t = self.params.train
        self.g_forward, critic = self.generator, self.critic
        if self.dist.distributed:
            self.g_forward = self._ddp(self.generator)
            if "adv" in self.weights:  # without L_adv the critic is never run
                critic = self._ddp(self.critic)
        if t.compile:
            self.g_forward = torch.compile(self.g_forward, mode=t.compile_mode)
            critic = torch.compile(critic, mode=t.compile_mode)
        self.loss.critic = critic
        self.graphed = GraphedStep(self._step_on_rows, self.rank_batch, self.device) if self.cuda_graphs else None
        self.graph_failure: str | None = None

    def _ddp(self, module: torch.nn.Module) -> torch.nn.Module:
        """DDP averages the ranks' gradients: with equal shards, the gradient of the global batch's
        mean loss. Buffers (batch-norm running statistics, spectral norm's power-iteration vectors)
        are broadcast from rank 0 at each forward; they are equal anyway (same weights, same
        global statistics, deterministic power iteration), which keeps them so. The ProGAN
        generator computes layers it does not use (the previous level's RGB paths once faded in),
        so DDP must look for unused parameters there."""
        ids = [self.device.index] if self.device.type == "cuda" else None
        unused = self.args.kind == "progan" and module is self.generator
        return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, find_unused_parameters=unused)

    def _set_train_mode(self) -> None:
        self.generator.train()
        self.critic.train()
        if self.args.kind == "cascade" and self.params.train.earlier_blocks == "frozen":
            for key, block in self.generator.blocks.items():
                if int(key) < self.stage:
                    block.eval()  # frozen means frozen batch-norm statistics too

    def _resume(self) -> None:
        if not (self.resume_dir / META).is_file():
            return
        meta = read_meta(self.resume_dir)
        identity = self.identity
        if (
            meta.get("config_hash") != identity.config_hash
            or meta.get("stage") != self.stage
            or meta.get("data_version") != identity.data_version
        ):
            log.warning("ignoring resume state in %s: it belongs to other settings or data", self.resume_dir)
            return
        _, states, optimizers = load_checkpoint(self.resume_dir, identity.config_hash, with_optimizer=True)
        self.generator.load_state_dict(states["generator"])
        self.critic.load_state_dict(states["critic"])
        self.opt_g.load_state_dict(optimizers["generator"])
        self.opt_d.load_state_dict(optimizers["critic"])
        self.epoch, self.batch_in_epoch, self.step = meta["epoch"], meta["batch_in_epoch"], meta["step"]
        log.info(
            "stage %d: resuming at epoch %d, batch %d (step %d)", self.stage, self.epoch, self.batch_in_epoch, self.step
        )

    def _meta(self, **extra) -> dict:
        return {
            "stage": self.stage,
            "model_args": dataclasses.asdict(self.args),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "config_hash": self.identity.config_hash,
            "settings": self.identity.settings,
            "git_commit": git_commit(),
            "data_version": self.identity.data_version,
            **extra,
        }

    def _save_resume_state(self) -> None:
        if not self.dist.main:
            return
        save_checkpoint(
            self.resume_dir,
            {"generator": self.generator, "critic": self.critic},
            {"generator": self.opt_g, "critic": self.opt_d},
            self._meta(),
        )
        if self.on_resume_saved is not None:
            self.on_resume_saved(self.resume_dir)

    # ---------------------------------------------------------------- one step

    def _alpha(self) -> float:
        if self.args.kind != "progan" or self.previous is None:
            return 1.0
        fade_steps = max(1, int(self.params.train.fade_in_fraction * self.total_steps))
        return min(1.0, self.step / fade_steps)

    def train_step(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step on the training rows `rows` (indices on the device); returns the
        detached losses. A replay of the recorded CUDA graph when train.cuda_graphs applies,
        except on steps that measure each term's gradient norm (eager: extra backward passes)."""
        if self.args.kind == "progan":
            self.generator.set_alpha(self._alpha())
        every = self.params.train.grad_norm_every_steps
        measure_gradients = bool(every) and (self.step + 1) % every == 0
        if self.graphed is None or measure_gradients:
            return self._step_on_rows(rows, measure_gradients)
        try:
            return self.graphed(rows, key=getattr(self.generator, "fading", None))
        except GraphRecordingError as error:  # train on, eagerly, and say so (metrics.json)
            self.graph_failure = str(error)
            log.warning("stage %d: the CUDA graph failed (%s); the step runs eagerly", self.stage, self.graph_failure)
            self.graphed = None
            return self._step_on_rows(rows)

    def _step_on_rows(self, rows: torch.Tensor, measure_gradients: bool = False) -> dict[str, torch.Tensor]:
        """The eager step on the batch of these training rows (what the CUDA graph records)."""
        return self._train_step(self.train_data.batch(rows), measure_gradients)

    def _train_step(self, batch: Batch, measure_gradients: bool = False) -> dict[str, torch.Tensor]:
        """Critic phase, then generator phase against the updated critic (pix2pix order).
        Forward passes run under autocast, backward passes outside it."""
        s = self.stage
        if self.params.train.compile and self.params.train.compile_mode == "reduce-overhead":
            # Its CUDA graphs may reuse the previous step's output
            # memory from here on: nothing of it is kept across steps.
            torch.compiler.cudagraph_mark_step_begin()
        # Autocast's cache of cast weights would outlive a CUDA graph's recording, so the graph
        # runs without it; the eager step too, so that both compute the same way (visit 3: ProGAN's
        # bf16 graph step drifted from the eager one 2.6x further than eager runs drift apart, and the
        # cache was the one setting in which the two differed).
        autocast = dict(dtype=torch.bfloat16, enabled=self.autocast, cache_enabled=False)
        parts = {}
        with torch.autocast(self.device.type, **autocast):
            fake = within_photo(self.g_forward(batch.masked, batch.mask)[s], batch.target[s], batch.valid[s])
            critic = self.loss.critic_loss(batch.masked[s], batch.target[s], fake) if "adv" in self.weights else None
        if critic is not None:
            self.opt_d.zero_grad(set_to_none=True)
            critic.total.backward()
            self.opt_d.step()
            parts.update(critic.parts)
        with torch.autocast(self.device.type, **autocast):
            gen = self.loss.generator_loss(batch.masked[s], batch.target[s], fake, batch.landmarks)
        if measure_gradients:
            self.grad_norms = self._term_gradient_norms(gen.weighted)
        self.opt_g.zero_grad(set_to_none=True)
        gen.total.backward()
        self.opt_g.step()
        parts.update(gen.parts)
        return parts

    def _term_gradient_norms(self, weighted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The L2 norm of each weighted term's own gradient on the generator's trained parameters:
        each term's share of the update (one extra backward pass per term, every
        train.grad_norm_every_steps steps; no sync until they are reported)."""
        params = [p for p in self.generator.parameters() if p.requires_grad]
        norms = {}
        for name, value in weighted.items():
            # autograd.grad fills no .grad and runs none of DDP's gradient hooks (they sit on the
            # gradient accumulators): the DDP step that follows is untouched.
            grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
            if self.dist.distributed:
                norms[name] = self._global_gradient_norm(grads)
            else:
                norms[name] = torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))
        return norms

    def _global_gradient_norm(self, grads: tuple[torch.Tensor | None, ...]) -> torch.Tensor:
        """A rank's gradient is its shard's; the global batch's is their mean (what DDP applies),
        and its norm is no function of the per-rank norms: average the gradient itself (one
        all_reduce per term, every grad_norm_every_steps steps). Equal on every rank."""
        flat = torch.cat([g.float().flatten() for g in grads if g is not None])
        return torch.sqrt((distributed.mean_over_ranks(flat) ** 2).sum())

    # ---------------------------------------------------------------- validation

    @torch.no_grad()
    def validate(self) -> tuple[dict[str, float], np.ndarray]:
        self.generator.eval()
        s, data, rows = self.stage, self.val_data, self.val_data.rows
        ssims, distances = [], []
        for start in range(0, rows, self.batch_size):
            batch = data.batch(torch.arange(start, min(rows, start + self.batch_size), device=self.device))
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
                fake = within_photo(
                    self.generator(batch.masked, batch.mask)[s].float(), batch.target[s], batch.valid[s]
                )
            ssims.append(ssim(to_unit(fake), to_unit(batch.target[s])))
            distances.append(
                identity_distance(
                    self.face.embedding(fake, batch.landmarks), self.face.embedding(batch.target[s], batch.landmarks)
                )
            )
            if start == 0:
                k = self.params.train.grid_rows
                grid = sample_grid(batch.masked[s][:k], fake[:k], batch.target[s][:k], self.params.crop.size_px)
        self._set_train_mode()
        return {
            "val_ssim": float(torch.cat(ssims).mean()),
            "val_identity_distance": float(torch.cat(distances).mean()),
        }, grid

    # ---------------------------------------------------------------- the loop

    def run(self) -> StageResult:
        """Train the stage (from its resume state, if any) and write its checkpoint and metrics."""
        with self.torch_scope():
            return self._train()

    def _train(self) -> StageResult:
        t = self.params.train
        self._set_train_mode()
        running: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        val: dict[str, float] = {}
        train_seconds, images, capped = 0.0, 0, False
        while self.epoch < self.epochs and not capped:
            # Moved to the device once per epoch: slicing a host tensor would copy (and sync) every step.
            order = _epoch_order(self.train_data.rows, t.seed, self.stage, self.epoch).to(self.device)
            started = time.perf_counter()
            while self.batch_in_epoch < self.steps_per_epoch and not capped:
                parts = self.train_step(self._rank_rows(order, self.batch_in_epoch))
                for name, value in parts.items():
                    running[name] = running.get(name, 0) + value.float()
                    finite &= torch.isfinite(value)
                self.step += 1
                self.batch_in_epoch += 1
                images += self.batch_size
                capped = self._past_deadline()
                if self.step % t.log_every_steps == 0:
                    self._check_finite(finite)
                    running = self._mean_over_ranks(running)
                    self._report(
                        {
                            **{f"loss_{k}": float(v) / t.log_every_steps for k, v in running.items()},
                            **self._gradient_report(),
                        }
                    )
                    running = {}
                if t.resume_checkpoints and self.step % t.checkpoint_every_steps == 0:
                    self._check_finite(finite)
                    self._save_resume_state()
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - started
            self._check_finite(finite)
            if self.dist.main:  # the other ranks go on to the next epoch (and wait for rank 0 in its first step)
                val, grid = self.validate()
                self._report({**val, "epoch": self.epoch})
                if self.tracker:
                    self.tracker.log_image(grid, f"samples/stage_{self.stage}_epoch_{self.epoch:03d}.png")
            if self.batch_in_epoch == self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
            if t.resume_checkpoints and not capped:  # a capped stage finishes now: nothing to resume
                self._save_resume_state()
        if capped and self.dist.main:
            log.warning("stage %d capped at step %d of %d (wall-clock cap)", self.stage, self.step, self.total_steps)
        return self._finish(val, train_seconds, images, capped)

    def _rank_rows(self, order: torch.Tensor, b: int) -> torch.Tensor:
        """This rank's contiguous share of step b's batch (the whole batch with one process):
        every rank has the same epoch order, so the shares tile the global batch."""
        start = b * self.batch_size + self.dist.rank * self.rank_batch
        return order[start : start + self.rank_batch]

    def _past_deadline(self) -> bool:
        """Checked on the host clock after each step, without a sync: the host runs ahead of the GPU
        by about a step (its launch queue is bounded), so the cap overshoots by that much. Over
        several processes rank 0's clock decides for all (a host-side broadcast each step), so
        every rank stops after the same step."""
        past = (
            self.dist.main
            and self.deadline is not None
            and self.step < self.total_steps
            and time.monotonic() > self.deadline
        )
        return distributed.decided_by_main(past)

    def _mean_over_ranks(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per-rank sums of per-shard means -> their mean over ranks: the global batch's (one
        all_reduce, at logging steps only)."""
        if not self.dist.distributed or not values:
            return values
        names = list(values)
        return dict(zip(names, distributed.mean_over_ranks(torch.stack([values[k] for k in names]))))

    def _check_finite(self, finite: torch.Tensor) -> None:
        # Every rank raises or none does (a rank left alone would wait in its next collective).
        if not distributed.all_true(bool(finite)):
            resumable = self.params.train.resume_checkpoints and (self.resume_dir / META).is_file()
            kept = read_meta(self.resume_dir).get("step") if resumable else None
            raise NonFiniteLoss(
                f"stage {self.stage}: a loss became NaN or infinite by step {self.step}; training stopped. "
                + (
                    f"Last good checkpoint: {self.resume_dir} (step {kept})."
                    if kept is not None
                    else "No checkpoint was written yet."
                )
                + " Lower train.lr or the loss weights."
            )

    def _trim_curve(self) -> None:
        """Keep the loss curve's rows up to the step training starts from: rows logged after the
        last resume state are logged again, and a fresh start begins a fresh curve."""
        if not self.curve.is_file():
            return
        if self.step == 0:
            self.curve.unlink()
            return
        header, *rows = self.curve.read_text().splitlines()
        kept = [row for row in rows if row.count(",") == header.count(",") and int(row.split(",")[0]) <= self.step]
        self.curve.write_text("\n".join([header, *kept]) + "\n")

    def _gradient_report(self) -> dict[str, float]:
        """grad_<term>: its gradient's norm; share_<term>: that over the reconstruction term's."""
        if not self.grad_norms:
            return {}
        norms = {k: float(v) for k, v in self.grad_norms.items()}
        self.grad_norms = {}
        return {
            **{f"grad_{k}": v for k, v in norms.items()},
            **{f"share_{k}": v / max(norms["rec"], 1e-12) for k, v in norms.items() if k != "rec"},
        }

    def _report(self, metrics: dict[str, float]) -> None:
        if not self.dist.main:
            return
        row = {k: v for k, v in metrics.items() if k in self.curve_columns}
        if row:
            curve = self.curve
            curve.parent.mkdir(parents=True, exist_ok=True)
            new = not curve.is_file()
            with open(curve, "a") as handle:
                if new:
                    handle.write("step," + ",".join(self.curve_columns) + "\n")
                handle.write(
                    f"{self.step}," + ",".join(f"{row[k]:.6g}" if k in row else "" for k in self.curve_columns) + "\n"
                )
        log.info("stage %d step %d: %s", self.stage, self.step, {k: round(v, 4) for k, v in metrics.items()})
        if self.tracker:
            self.tracker.log_metrics(metrics, self.step)

    def _finish(self, val: dict[str, float], train_seconds: float, images: int, capped: bool) -> StageResult:
        rate = images / train_seconds if train_seconds > 0 else math.nan
        if self.dist.main:
            self._write_results(val, train_seconds, rate, capped)
        # Rank 0's numbers on every rank; a collective, so no rank returns (and starts the next
        # stage from this one's checkpoint) before rank 0 has written it.
        val, train_seconds, rate = distributed.from_main((val, train_seconds, rate))
        return StageResult(self.stage, self.out_dir / "checkpoint", self.step, train_seconds, rate, val, capped)

    def _write_results(self, val: dict[str, float], train_seconds: float, rate: float, capped: bool) -> None:
        final = self.out_dir / "checkpoint"
        if final.exists():
            shutil.rmtree(final)
        save_checkpoint(
            final,
            {"generator": self.generator, "critic": self.critic},
            None,
            self._meta(val=val, images_per_second=rate, capped=capped, planned_steps=self.total_steps),
        )
        metrics = {
            "stage": self.stage,
            "steps": self.step,
            "planned_steps": self.total_steps,
            "capped": capped,
            "train_seconds": round(train_seconds, 2),
            "images_per_second": round(rate, 1),
            "cuda_graphs": self.graphed is not None and self.graphed.graph is not None,  # replayed at the end
            **({"cuda_graph_failure": self.graph_failure} if self.graph_failure else {}),
            **val,
        }
        write_json(self.out_dir / "metrics.json", metrics)
        if self.curve.parent == self.resume_dir and self.curve.is_file():
            shutil.copy(self.curve, self.out_dir / "losses.csv")
        if self.tracker:
            self.tracker.log_metrics(
                {
                    "images_per_second": rate,
                    "train_seconds": train_seconds,
                    "planned_steps": self.total_steps,
                    "capped": float(capped),
                },
                self.step,
            )
            self.tracker.set_tags({"facectx.capped": str(capped).lower()})
        shutil.rmtree(self.resume_dir, ignore_errors=True)
