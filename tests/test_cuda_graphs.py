"""train.cuda_graphs: the whole training step recorded once as a CUDA graph and replayed.

What holds on every machine runs here: a CPU ignores the setting and trains exactly as without
it, and ProGAN told its fade-in by the trainer computes what reading alpha back gives. On a CUDA
machine the recorded step is checked against the eager one (benchmarks/cuda_graph_check.py does
the same at the paper profile's widths)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import fast_tiny_params, tiny_training_params
from facectx.models.cascade import ModelArgs
from facectx.models.progan import ProgressiveGenerator
from facectx.steps import stage_trainer
from facectx.training.data import ResidentShards


def _train_stage_8(params, prepared, models):
    stage_trainer(params, 8, prepared, models / "stage_8", None, models / "resume", require_previous=False).run()
    return load_file(models / "stage_8" / "checkpoint" / "model.safetensors"), json.loads(
        (models / "stage_8" / "metrics.json").read_text()
    )


def test_a_cpu_ignores_cuda_graphs_and_trains_the_same_weights(prepared_data, tmp_path, params):
    tiny = fast_tiny_params(params)
    runs = {
        graphs: _train_stage_8(
            dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, cuda_graphs=graphs)),
            prepared_data,
            tmp_path / f"graphs_{graphs}",
        )
        for graphs in (True, False)
    }
    (with_graphs, metrics), (without, _) = runs[True], runs[False]
    assert with_graphs.keys() == without.keys()
    assert all(torch.equal(with_graphs[name], without[name]) for name in without)
    assert metrics["cuda_graphs"] is False and "cuda_graph_failure" not in metrics


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


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")
@pytest.mark.parametrize("kind", ["cascade", "progan"])
def test_the_recorded_step_trains_like_the_eager_one(prepared_data, tmp_path, params, kind):
    tiny = tiny_training_params(params, device="cuda", deterministic=False, precision="fp32", grad_norm_every_steps=0)
    tiny = dataclasses.replace(tiny, model=dataclasses.replace(tiny.model, kind=kind))
    losses = {}
    for graphs in (True, False):
        variant = dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, cuda_graphs=graphs))
        trainer = stage_trainer(
            variant, 16, prepared_data, tmp_path / str(graphs), None, tmp_path / "resume", require_previous=False
        )
        steps = []
        with trainer.torch_scope():
            trainer._set_train_mode()
            for step in range(6):  # 3 eager warm-up steps, then the recording and 3 replays
                trainer.step = step
                rows = torch.arange(step, step + trainer.batch_size, device="cuda") % trainer.train_data.rows
                steps.append({k: float(v) for k, v in trainer.train_step(rows).items()})
        if graphs:
            assert trainer.graphed is not None and trainer.graphed.graph is not None, trainer.graph_failure
        losses[graphs] = steps
    for recorded, eager in zip(losses[True], losses[False]):
        assert recorded.keys() == eager.keys()
        for name in eager:
            assert recorded[name] == pytest.approx(eager[name], rel=2e-3, abs=1e-5), name
