"""train.cuda_graphs: the whole training step recorded once as a CUDA graph and replayed.

What a CPU can check: the setting is not used there, and the stage says so; it is an execution
setting, not one that shapes the weights, so a stage trained with it continues from one trained
without (and back); ProGAN told its fade-in by the trainer computes what reading alpha back
gives. Whether the recorded step trains like the eager one needs a CUDA device (skipped
elsewhere; benchmarks/cuda_graph_check.py does the same at the paper profile's widths)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import fast_tiny_params, tiny_training_params, with_critic_levers
from facectx.checkpoint import training_identity
from facectx.models.cascade import ModelArgs
from facectx.models.progan import ProgressiveGenerator
from facectx.steps.train import stage_trainer
from facectx.training.data import ResidentShards


def _train_stage_8(params, prepared, models):
    stage_trainer(params, 8, prepared, models / "stage_8", None, models / "resume", require_previous=False).run()
    return load_file(models / "stage_8" / "checkpoint" / "model.safetensors"), json.loads(
        (models / "stage_8" / "metrics.json").read_text()
    )


def _with_graphs(params, graphs: bool):
    return dataclasses.replace(params, train=dataclasses.replace(params.train, cuda_graphs=graphs))


def test_cuda_graphs_is_an_execution_setting_a_cpu_does_not_use(prepared_data, tmp_path, params):
    """(Whether graphs and eager steps train alike is a CUDA question: see the last test.)"""
    tiny = fast_tiny_params(params)
    with_graphs, without = _with_graphs(tiny, True), _with_graphs(tiny, False)
    weights, metrics = _train_stage_8(with_graphs, prepared_data, tmp_path)
    # Asked for, but a CPU has no CUDA graphs: the stage reports it trained without them.
    assert metrics["cuda_graphs"] is False and "cuda_graph_failure" not in metrics
    # The checkpoint's config hash leaves the setting out: the next stage, without graphs,
    # starts from it (a changed setting that shapes the weights is refused: test_training.py).
    checkpoint = tmp_path / "stage_8" / "checkpoint"
    meta = json.loads((checkpoint / "meta.json").read_text())
    assert meta["config_hash"] == training_identity(without, prepared_data).config_hash
    assert meta["config_hash"] == training_identity(with_graphs, prepared_data).config_hash
    stage_16 = stage_trainer(without, 16, prepared_data, tmp_path / "stage_16", checkpoint, tmp_path / "resume_16")
    grown = stage_16.generator.state_dict()
    inherited = [key for key in weights if key.startswith("generator.blocks.8.")]
    assert inherited and all(torch.equal(grown[key.removeprefix("generator.")], weights[key]) for key in inherited)


def test_progan_told_its_fade_in_computes_what_reading_alpha_gives(prepared_data):
    args = ModelArgs("progan", (8, 16, 32, 64, 128), width=4, max_width=8, disc_width=4, disc_max_layers=2)
    torch.manual_seed(0)
    generator = ProgressiveGenerator(args, 32).eval()
    data = ResidentShards(prepared_data, "train", (8, 16, 32), torch.device("cpu"))
    batch = data.batch(torch.arange(4))
    with torch.no_grad():
        for alpha in (0.0, 0.3, 1.0):
            generator.alpha.fill_(alpha)
            generator.fading = None  # read alpha back, as a loaded checkpoint does
            read = generator(batch.masked, batch.mask)[32]
            generator.set_alpha(alpha)  # what the trainer does before each step
            assert generator.fading == (alpha < 1)
            told = generator(batch.masked, batch.mask)[32]
            assert torch.equal(read, told), alpha
        generator.set_alpha(0.3)
        blended = generator(batch.masked, batch.mask)[32]
        generator.set_alpha(1.0)
        assert not torch.equal(blended, generator(batch.masked, batch.mask)[32])  # the fade-in does something


def _critic_levers(params):
    """Every critic lever on (issue 27); R1 every 4th step: steps 0, 4, 8 run eagerly, the others
    warm up (1-3), record (5) and replay the graph."""
    return with_critic_levers(params, r1_every=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("kind", ["cascade", "progan", "critic_levers"])
def test_the_recorded_step_trains_like_the_eager_one(prepared_data, tmp_path, params, kind):
    tiny = tiny_training_params(
        params, device="cuda", deterministic=False, precision="fp32", grad_norm_every_steps=0, ema_decay=0.5
    )
    if kind == "critic_levers":
        tiny = _critic_levers(tiny)
    else:
        tiny = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, kind=kind))
    steps_n = 10 if kind == "critic_levers" else 6
    losses, averages = {}, {}
    for graphs in (True, False):
        variant = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, cuda_graphs=graphs))
        trainer = stage_trainer(
            variant, 16, prepared_data, tmp_path / str(graphs), None, tmp_path / "resume", require_previous=False
        )
        steps = []
        with trainer.torch_scope():
            trainer._set_train_mode()
            for step in range(steps_n):  # 3 eager warm-up steps, then the recording and replays
                trainer.step = step
                rows = torch.arange(step, step + trainer.batch_size, device="cuda") % trainer.train_data.rows
                steps.append({k: float(v) for k, v in trainer.train_step(rows).items()})
        if graphs:
            assert trainer.graphed is not None and trainer.graphed.graph is not None, trainer.graph_failure
        losses[graphs] = steps
        averages[graphs] = {k: v.detach().cpu() for k, v in trainer.average.model.state_dict().items()}
    # The generator's average is updated inside the recorded step: the replays move it as eager steps do.
    for name, eager in averages[False].items():
        if eager.is_floating_point():
            assert torch.allclose(averages[True][name], eager, rtol=2e-3, atol=1e-5), name
    for recorded, eager in zip(losses[True], losses[False]):
        assert recorded.keys() == eager.keys()
        for name in eager:
            assert recorded[name] == pytest.approx(eager[name], rel=2e-3, abs=1e-5), name
