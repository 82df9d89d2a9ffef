"""Training of one stage: block N of the cascade (or ProGAN's generator and critic grown to N),
starting from stage N/2's checkpoint, against its critic.

One loop serves every stage and both model kinds; the loss object owns the phases. Checkpoints
are written every `checkpoint_every_steps` and at each epoch's end into a resume folder, so a
killed run continues where it stopped (bit-identically in deterministic CPU mode: batch order is
a function of (seed, stage, epoch), and nothing else in a step draws random numbers);
`train.resume_checkpoints: false` writes none (a machine whose disk does not outlive the run).

A wall-clock cap (`deadline`) ends a stage early but cleanly: validated, checkpointed, marked
`capped` in metrics.json, so the next stage can still start from it.

With train.ema_decay the step also updates the generator's moving average (training/averaging.py);
after the last step, training/finish.py settles the weight choices (standing statistics) and saves.

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

import logging
import time
from pathlib import Path

import numpy as np
import torch

from facectx.checkpoint import EMA, GENERATOR, TrainingIdentity
from facectx.config import LossConfig, TrainConfig
from facectx.models.cascade import ModelArgs
from facectx.models.factory import previous_stage
from facectx.tensors import resolve_device
from facectx.training import batches, distributed
from facectx.training.averaging import make_average
from facectx.training.batches import rank_batch_size, stage_batch_size
from facectx.training.build import build_loss, build_models, build_optimizers, forward_modules, use_cuda_graphs
from facectx.training.data import Batch
from facectx.training.finish import finish_stage
from facectx.training.graphed_step import GraphedStep, GraphRecordingError
from facectx.training.progress import stage_progress
from facectx.training.report import StageReport, StageResult, curve_columns, gradient_report, mean_over_ranks
from facectx.training.state import Position, StageState, TorchScope, load_previous_stage
from facectx.training.step import gan_step, term_gradient_norms
from facectx.training.stopping import check_finite, past_deadline
from facectx.training.validation import validate

log = logging.getLogger(__name__)


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
        stage: int,
        prepared_dir: Path,  # the prepared pyramid (facectx prepare)
        out_dir: Path,  # receives checkpoint/, metrics.json and losses.csv
        init_dir: Path | None,  # the previous stage's checkpoint folder (None: the first stage)
        resume_dir: Path,  # this stage's resume state (and its loss curve while it trains)
        *,
        train: TrainConfig,  # this stage's epochs and batch size, the optimizer, the runtime settings
        losses: LossConfig,  # which loss terms are on, with which weights and views
        model: ModelArgs,  # the generator and critic; model.resolutions: the prepared pyramid's levels
        frame_size: int,  # crop.size_px: the frame the landmarks are pixels of
        identity_weights: str | None,  # assets.identity_weights: the dlib ResNet's folder (None: the cache)
        identity: TrainingIdentity,  # the run's settings, config hash and data version (`training_identity`)
        tracker=None,  # the stage's tracked run (MLflow or the folder backend); used on rank 0 only
        require_previous: bool = True,  # False: a later stage starts untrained (benchmarks, which time steps)
        deadline: float | None = None,  # time.monotonic() value of the wall-clock cap (see run)
        on_resume_saved=None,  # called with resume_dir after each resume save (e.g. a copy to S3)
        progress_style=None,  # a bar or log lines (facectx/progress.py; None: log lines); rank 0 only
    ):
        self.stage, self.train, self.deadline, self.progress_style = stage, train, deadline, progress_style
        self.out_dir, self.resume_dir, self.frame_size = Path(out_dir), Path(resume_dir), frame_size
        # One process, or this process's rank of several (torchrun / run_processes): only rank 0 logs.
        self.dist = distributed.init_from_env(resolve_device(train.device))
        self.device = self.dist.device
        self.batch_size = stage_batch_size(train, stage)  # the global batch of one step, whatever the processes
        self.rank_batch = rank_batch_size(self.batch_size, self.dist.world, stage)  # refused before any loading
        self.autocast = train.precision == "bf16" and self.device.type == "cuda"
        self.cuda_graphs = use_cuda_graphs(train, self.dist)
        self.previous = previous_stage(train.stages, stage)
        grows = self.previous is not None  # starts from the previous stage's weights
        self.torch_scope = TorchScope(train.seed * 7919 + stage, train.deterministic, self.device.type == "cuda")
        with self.torch_scope():  # seeded: the initial weights are a function of (train.seed, stage)
            self._load_data(Path(prepared_dir), model.resolutions)
            # Only benchmarks, which time steps, start later stages untrained (require_previous False).
            self._build_models(model, init_dir, identity, inherits=require_previous and grows)
            self.loss = build_loss(
                losses, train.stages, stage, self.critic, frame_size, identity_weights, self.device, train.channels_last
            )
            self.weights = self.loss.weights  # the loss terms on at this stage
            self.grad_norms: dict[str, torch.Tensor] = {}  # the last measured per-term gradient norms, until reported
            average = {EMA: self.average.model} if self.average is not None else {}  # train.ema_decay
            models = {GENERATOR: self.generator, "critic": self.critic, **average}
            opts, main = {"generator": self.opt_g, "critic": self.opt_d}, self.dist.main
            self.state = StageState(stage, model, identity, models, opts, self.resume_dir, main, on_resume_saved)
            self._resume_or_start(tracker)
            self._set_up_forward()

    # ---------------------------------------------------------------- set-up
    def _build_models(self, model: ModelArgs, init_dir: Path | None, identity: TrainingIdentity, inherits: bool):
        """The generator and its critic, their optimizers, and the generator's average (None
        without train.ema_decay); inherits: from the previous stage's checkpoint (weights, average)."""
        self.model_args, t = model, self.train
        self.generator, self.critic = build_models(model, self.stage, self.dist)
        models = {GENERATOR: self.generator, "critic": self.critic}
        previous = load_previous_stage(models, init_dir, self.stage, self.previous, identity) if inherits else {}
        grows = self.previous is not None
        self.opt_g, self.opt_d = build_optimizers(
            self.generator, self.critic, t, self.device, grows, capturable=self.cuda_graphs
        )
        self.average = make_average(self.generator, model, self.stage, t.ema_decay, previous, init_dir)

    def _load_data(self, prepared_dir: Path, resolutions: tuple[int, ...]) -> None:
        t = self.train
        self.train_data, self.val_data = batches.load_stage_data(
            prepared_dir, resolutions, self.stage, t, self.frame_size, self.device
        )
        self.steps_per_epoch = batches.steps_per_epoch(self.train_data.rows, self.batch_size, self.stage)
        self.epochs = t.epochs[list(t.stages).index(self.stage)]
        self.total_steps = self.epochs * self.steps_per_epoch

    def _resume_or_start(self, tracker) -> None:
        """Continue from the resume state when there is one of these settings and data, else start
        at step 0; the loss curve is kept up to that step."""
        resumable = self.train.resume_checkpoints
        # The loss curve lives beside the resume state, so a resumed run's curve is whole; without
        # resume state it is written straight into out_dir.
        curve = (self.resume_dir if resumable else self.out_dir) / "losses.csv"
        columns = curve_columns(self.weights, self.loss.uses_critic)
        self.report = StageReport(self.stage, curve, columns, tracker if self.dist.main else None, self.dist.main)
        at = self.state.resume() if resumable else Position()
        self.epoch, self.batch_in_epoch, self.step = at.epoch, at.batch_in_epoch, at.step
        self.report.trim(self.step)

    def _set_up_forward(self) -> None:
        """The modules the training step calls (`forward_modules`: after every state is loaded);
        `self.generator` and `self.critic` stay the plain modules: checkpoints, validation."""
        self.g_forward, self.loss.critic = forward_modules(
            self.generator, self.critic, self.dist, self.train, self.loss.uses_critic
        )
        self.graphed = GraphedStep(self._step_on_rows, self.rank_batch, self.device) if self.cuda_graphs else None
        self.graph_failure: str | None = None

    def _set_train_mode(self) -> None:
        self.generator.train()
        self.critic.train()
        for module in self.generator.frozen_modules(self.train.earlier_blocks):
            module.eval()  # frozen means frozen batch-norm statistics too

    # ---------------------------------------------------------------- one step

    def train_step(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step on the training rows `rows` (indices on the device); returns the
        detached losses. A replay of the recorded CUDA graph when train.cuda_graphs applies, except
        on steps that measure each term's gradient norm or add lazy R1 (eager: more backward passes)."""
        for model in (self.generator, self.critic):  # ProGAN's critic fades its new level in with the generator
            model.set_step(self.step, self.total_steps, self.train.fade_in_fraction, self.previous is not None)
        every = self.train.grad_norm_every_steps
        measure_gradients = bool(every) and (self.step + 1) % every == 0
        r1 = self.loss.uses_critic and self.loss.r1_due(self.step)
        if self.graphed is None or measure_gradients or r1:
            return self._train_step(self.train_data.batch(rows), measure_gradients, r1)
        try:
            return self.graphed(rows, key=(self.generator.step_variant, self.critic.step_variant))
        except GraphRecordingError as error:  # train on, eagerly, and say so (metrics.json)
            self.graph_failure = str(error)
            log.warning("stage %d: the CUDA graph failed (%s); the step runs eagerly", self.stage, self.graph_failure)
            self.graphed = None
            return self._step_on_rows(rows)

    def _step_on_rows(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """The eager step on the batch of these training rows (what the CUDA graph records)."""
        return self._train_step(self.train_data.batch(rows))

    def _train_step(self, batch: Batch, measure_gradients: bool = False, r1: bool = False) -> dict[str, torch.Tensor]:
        """The step (`gan_step`) on one batch; measure_gradients: keep each term's gradient norm; r1: add R1."""
        if self.train.compile and self.train.compile_mode == "reduce-overhead":
            # Its CUDA graphs may reuse the previous step's output memory from here on: nothing of it is kept.
            torch.compiler.cudagraph_mark_step_begin()
        measure, optimizers = self._measure_gradients if measure_gradients else None, (self.opt_g, self.opt_d)
        parts = gan_step(
            batch, self.stage, self.g_forward, self.loss, optimizers, self.device.type, self.autocast, measure, r1
        )
        if self.average is not None:  # in the step: a recorded CUDA graph replays it too
            self.average.update()
        return parts

    def _measure_gradients(self, weighted: dict[str, torch.Tensor]) -> None:
        self.grad_norms = self._term_gradient_norms(weighted)

    def _term_gradient_norms(self, weighted: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Each weighted term's gradient norm on the generator's trained parameters (every
        train.grad_norm_every_steps steps)."""
        params = [p for p in self.generator.parameters() if p.requires_grad]
        return term_gradient_norms(weighted, params, self.dist.distributed)

    # ---------------------------------------------------------------- validation

    def validate(self) -> tuple[dict[str, float], np.ndarray]:
        """The validation metrics of the generator as it is now, and a sample grid."""
        self.generator.eval()
        scores, grid = self.score(self.generator)
        self._set_train_mode()
        return scores, grid

    def score(self, generator: torch.nn.Module) -> tuple[dict[str, float], np.ndarray]:
        """The validation metrics of a generator (in eval mode) and a sample grid."""
        rows = (self.val_data, self.device, self.stage, self.batch_size)
        return validate(generator, self.loss.face, *rows, self.autocast, self.train.grid_rows, self.frame_size)

    # ---------------------------------------------------------------- the loop

    def run(self) -> StageResult:
        """Train the stage (from its resume state, if any) and write its checkpoint and metrics."""
        with self.torch_scope(), stage_progress(self) as self.progress:  # steps, images/s, losses, ETA
            return self._train()

    def _train(self) -> StageResult:
        t = self.train
        self._set_train_mode()
        running: dict[str, torch.Tensor] = {}
        finite = torch.ones((), dtype=torch.bool, device=self.device)
        val: dict[str, float] = {}
        train_seconds, images, capped = 0.0, 0, False
        while self.epoch < self.epochs and not capped:
            # Moved to the device once per epoch: slicing a host tensor would copy (and sync) every step.
            order = batches.epoch_order(self.train_data.rows, t.seed, self.stage, self.epoch).to(self.device)
            started = time.perf_counter()
            while self.batch_in_epoch < self.steps_per_epoch and not capped:
                rows = batches.rank_rows(order, self.batch_in_epoch, self.batch_size, self.dist.rank, self.rank_batch)
                parts = self.train_step(rows)
                for name, value in parts.items():
                    running[name] = running.get(name, 0) + value.float()
                    finite &= torch.isfinite(value)
                self.step += 1
                self.batch_in_epoch += 1
                images += self.batch_size
                self.progress.advance(1)
                capped = past_deadline(self.dist.main, self.deadline, self.step, self.total_steps, time.monotonic)
                if self.step % t.log_every_steps == 0:
                    self._check_finite(finite)
                    self._report_losses(mean_over_ranks(running, self.dist.distributed))
                    running = {}
                if t.resume_checkpoints and self.step % t.checkpoint_every_steps == 0:
                    self._check_finite(finite)
                    self.state.save_resume_state(self.position())
            if self.device.type == "cuda":
                torch.cuda.synchronize()
            train_seconds += time.perf_counter() - started
            self._check_finite(finite)
            if self.dist.main:  # the other ranks go on to the next epoch (and wait for rank 0 in its first step)
                val = self._validate_and_report()
            if self.batch_in_epoch == self.steps_per_epoch:
                self.epoch += 1
                self.batch_in_epoch = 0
            if t.resume_checkpoints and not capped:  # a capped stage finishes now: nothing to resume
                self.state.save_resume_state(self.position())
        if capped and self.dist.main:
            log.warning("stage %d capped at step %d of %d (wall-clock cap)", self.stage, self.step, self.total_steps)
        return finish_stage(self, val, train_seconds, images, capped)

    def _check_finite(self, finite: torch.Tensor) -> None:
        check_finite(finite, self.stage, self.step, self.resume_dir, self.train.resume_checkpoints)

    # ---------------------------------------------------------------- reporting and saving

    def _report_losses(self, running: dict[str, torch.Tensor]) -> None:
        """The losses summed since the last report, per step, and the gradient norms measured since."""
        losses = {f"loss_{k}": float(v) / self.train.log_every_steps for k, v in running.items()}
        self.report(self.step, {**losses, **gradient_report(self.grad_norms)})
        self.progress.figures(**losses)
        self.grad_norms = {}

    def _validate_and_report(self) -> dict[str, float]:
        val, grid = self.validate()
        self.report(self.step, {**val, "epoch": self.epoch})
        self.report.image(grid, self.epoch)
        return val

    def position(self) -> Position:
        return Position(self.epoch, self.batch_in_epoch, self.step)
