"""The generator's moving average (train.ema_decay) and standing batch-norm statistics
(train.standing_stats_batches) on real prepared photos: the average moves at the set rate, starts
from the previous stage's, survives a resume bit for bit; standing statistics are the average of
the batch statistics and change what eval mode outputs; inference, evaluation and registration
choose running, standing or ema weights, and refuse ones a checkpoint lacks."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, fast_tiny_params
from facectx.checkpoint import CheckpointError, load_checkpoint
from facectx.inference import Hallucinator, load_generator
from facectx.steps.train import stage_dirs, stage_trainer
from facectx.training.averaging import plain_copy
from facectx.training.standing import BATCH_NORM, standing_rows

DECAY = 0.75


def _params(params, **train):
    tiny = fast_tiny_params(params)
    settings = dict(ema_decay=DECAY, standing_stats_batches=3, **train)
    return dataclasses.replace(tiny, train=dataclasses.replace(tiny.train, **settings))


def _trainer(params, stage, prepared, models, **kwargs):
    dirs = stage_dirs(params, stage, models)
    return stage_trainer(params, stage, prepared, dirs["out_dir"], dirs["init_dir"], dirs["resume_dir"], **kwargs)


def _tensors(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_average_starts_from_the_previous_stages_and_moves_at_the_set_rate(prepared_data, tmp_path, params):
    tiny, models = _params(params), tmp_path / "models"
    _trainer(tiny, 8, prepared_data, models).run()
    stage_8 = load_file(models / "stage_8" / "checkpoint" / "model.safetensors")

    trainer = _trainer(tiny, 16, prepared_data, models)
    average, live = trainer.average.model, trainer.generator
    before, live_before = _tensors(average), _tensors(live)
    inherited = [k for k in before if k.startswith("blocks.8.") and before[k].is_floating_point()]
    # The inherited tensors start from stage 8's average (not its live weights), the new block from the live one.
    assert inherited and all(torch.equal(before[k], stage_8[f"generator_ema.{k}"]) for k in inherited)
    assert any(not torch.equal(stage_8[f"generator_ema.{k}"], stage_8[f"generator.{k}"]) for k in inherited)
    assert all(torch.equal(before[k], live_before[k]) for k in before if k.startswith("blocks.16."))

    with trainer.torch_scope():
        trainer._set_train_mode()
        trainer.train_step(torch.arange(trainer.batch_size))
    after, live_after = _tensors(average), _tensors(live)
    parameters = dict(average.named_parameters())
    for name in parameters:  # ema' = d * ema + (1 - d) * live, for one step
        expected = DECAY * before[name].double() + (1 - DECAY) * live_after[name].double()
        assert torch.allclose(after[name].double(), expected, rtol=0, atol=1e-7), name
    moved = max(float((after[n] - before[n]).abs().max()) for n in parameters)
    assert moved > 1e-5  # the step moved it: the check above is not of a standing still
    buffers = [k for k in after if k not in parameters]
    assert buffers and all(torch.equal(after[k], live_after[k]) for k in buffers)  # copied, not averaged


def test_a_resumed_run_keeps_the_average_bit_identical(prepared_data, tmp_path, params):
    tiny = _params(params, epochs=(2, 1, 1, 1, 1), max_train_rows=12, checkpoint_every_steps=2)  # 6 steps

    class Killed(Exception):
        pass

    class KillAtStep5:
        def log_metrics(self, metrics, step):
            if step == 5:  # the last resume state is step 4's
                raise Killed

        def log_image(self, *args):
            pass

        def set_tags(self, tags):
            pass

    _trainer(tiny, 8, prepared_data, tmp_path / "whole").run()
    with pytest.raises(Killed):
        _trainer(tiny, 8, prepared_data, tmp_path / "resumed", tracker=KillAtStep5()).run()
    resume = load_file(tmp_path / "resumed" / "resume" / "stage_8" / "model.safetensors")
    assert any(k.startswith("generator_ema.") for k in resume)
    _trainer(tiny, 8, prepared_data, tmp_path / "resumed").run()

    whole = load_file(tmp_path / "whole" / "stage_8" / "checkpoint" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "stage_8" / "checkpoint" / "model.safetensors")
    averaged = [k for k in whole if k.startswith("generator_ema.")]
    assert averaged and whole.keys() == resumed.keys()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole), [
        k for k in whole if not torch.equal(whole[k], resumed[k])
    ]


def test_standing_statistics_are_the_batch_statistics_average_and_change_eval_output(prepared_data, tmp_path, params):
    tiny = _params(params, epochs=(2, 1, 1, 1, 1))
    trainer = _trainer(tiny, 8, prepared_data, tmp_path / "models")
    trainer.run()
    checkpoint = tmp_path / "models" / "stage_8" / "checkpoint"
    meta, states, _ = load_checkpoint(checkpoint)
    assert meta["weights"] == ["running", "standing", "ema"]

    # The batch statistics each batch-norm layer sees in train mode on the documented batches.
    seen: dict[str, list] = {}
    model = plain_copy(trainer.generator, trainer.model_args, 8, trainer.device).train()
    for name, layer in model.named_modules():
        if isinstance(layer, BATCH_NORM):
            layer.register_forward_pre_hook(
                lambda _, inputs, name=name: seen.setdefault(name, []).append(
                    (inputs[0].mean((0, 2, 3)), inputs[0].var((0, 2, 3), unbiased=True))
                )
            )
    rows = standing_rows(trainer.train_data.rows, tiny.train.seed, 8, trainer.epochs, 3, trainer.batch_size)
    with torch.no_grad():
        for index in rows:
            batch = trainer.train_data.batch(index)
            model(batch.masked, batch.mask)
    standing = states["generator_standing"]
    assert seen and {f"{n}.running_mean" for n in seen} <= set(standing)
    for name, stats in seen.items():
        assert len(stats) == 3
        mean = torch.stack([m for m, _ in stats]).mean(0)
        var = torch.stack([v for _, v in stats]).mean(0)
        assert torch.allclose(standing[f"{name}.running_mean"], mean, rtol=1e-5, atol=1e-6), name
        assert torch.allclose(standing[f"{name}.running_var"], var, rtol=1e-5, atol=1e-6), name
        assert not torch.allclose(states["generator"][f"{name}.running_mean"], mean, atol=1e-4), name

    # Eval mode outputs something else with them, and lies closer to the train-mode output.
    batch = trainer.val_data.batch(torch.arange(trainer.val_data.rows))
    outputs = {}
    for choice in ("running", "standing"):
        generator, _, chosen = load_generator(checkpoint, weights=choice)
        assert chosen == choice
        with torch.no_grad():
            outputs[choice] = generator(batch.masked, batch.mask)[8]
    assert float((outputs["running"] - outputs["standing"]).abs().mean()) > 1e-3
    metrics = json.loads((tmp_path / "models" / "stage_8" / "metrics.json").read_text())
    assert metrics["val_weights"] == "running" and metrics["weights"] == meta["weights"]
    assert metrics["eval_train_gap_standing"] < metrics["eval_train_gap_running"]
    assert {"standing_val_ssim", "ema_val_ssim", "eval_train_gap_ema"} <= set(metrics)


@pytest.fixture(scope="module")
def averaged_checkpoint(prepared_data, tmp_path_factory, params):
    """A whole tiny cascade trained with an average and standing statistics; its last checkpoint."""
    models, tiny = tmp_path_factory.mktemp("averaged"), _params(params)
    for stage in tiny.train.stages:
        _trainer(tiny, stage, prepared_data, models).run()
    return models / f"stage_{tiny.train.stages[-1]}" / "checkpoint"


def test_evaluation_scores_one_checkpoint_three_ways(prepared_data, averaged_checkpoint, tmp_path, params):
    from facectx.evaluation.evaluate import evaluate

    config = dataclasses.replace(
        params.evaluate,
        max_photos=4,
        batch_size=4,
        grid_photos=2,
        baselines=False,
        weights=("running", "standing", "ema"),
    )
    result = evaluate(prepared_data, {"cascade": averaged_checkpoint}, tmp_path / "three", config)
    rows = ["cascade", "cascade@standing", "cascade@ema"]
    assert result["weights"] == dict(zip(rows, ["running", "standing", "ema"]))
    assert set(rows) <= set(result["methods"])
    scores = [result["methods"][row]["ssim"] for row in rows]
    assert len(set(scores)) == 3, scores  # three result sets, not one scored three times
    report = (tmp_path / "three" / "report.html").read_text()
    assert "cascade@ema: ema" in report

    # auto: the best the checkpoint holds (ema) as the model's own row; a repeat adds no row.
    auto = dataclasses.replace(config, weights=("auto", "ema", "running"))
    again = evaluate(prepared_data, {"cascade": averaged_checkpoint}, tmp_path / "auto", auto)
    assert again["weights"] == {"cascade": "ema", "cascade@running": "running"}
    assert again["methods"]["cascade"]["ssim"] == pytest.approx(result["methods"]["cascade@ema"]["ssim"])


def test_without_an_average_the_checkpoint_has_none_and_inference_refuses_ema(tiny_cascade, lfw_dir, tmp_path):
    assert tiny_cascade.params.train.ema_decay == 0
    meta, states, _ = load_checkpoint(tiny_cascade.checkpoint)
    assert "generator_ema" not in states and meta["weights"] == ["running", "standing"]
    assert Hallucinator(tiny_cascade.checkpoint).weights == "standing"  # auto: the best it holds
    with pytest.raises(CheckpointError, match=r"has no 'ema' weights \(a stage trained with train.ema_decay > 0"):
        Hallucinator(tiny_cascade.checkpoint, weights="ema")

    photo, out = lfw_dir / "images" / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg", tmp_path / "out.png"
    command = [sys.executable, "-m", "facectx.cli", "--params", str(tiny_cascade.params_file), "hallucinate"]
    command += [str(photo), "-o", str(out), "--checkpoint", str(tiny_cascade.checkpoint), "--weights", "ema"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "facectx hallucinate: error:" in done.stderr and "has no 'ema' weights" in done.stderr
    assert str(tiny_cascade.checkpoint) in done.stderr and not out.exists()


def test_the_registered_model_serves_the_weights_its_gate_row_scored(
    averaged_checkpoint, prepared_data, tmp_path, params, monkeypatch
):
    import mlflow
    from mlflow.tracking import MlflowClient

    from facectx.steps.register import register_step

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    tiny = _params(params)
    tiny = dataclasses.replace(tiny, registry=dataclasses.replace(tiny.registry, model_name="facectx-ema-test"))
    metrics = {"fd": 1.0, "identity_match": 0.5, "perceptual": 0.3}
    metrics_file = tmp_path / "metrics.json"
    metrics_file.write_text(json.dumps({"methods": {"cascade": metrics}, "weights": {"cascade": "standing"}}))
    raw = prepared_data.parent / "raw"
    result = register_step(tiny, averaged_checkpoint, metrics_file, prepared_dir=prepared_data, raw_dir=raw)
    assert result["weights"] == "standing"
    version = MlflowClient().get_model_version("facectx-ema-test", str(result["version"]))
    assert version.tags["facectx.weights"] == "standing"
    served = mlflow.pyfunc.load_model(result["model_uri"])
    assert served.metadata.metadata["weights"] == "standing"
    assert served.unwrap_python_model().hallucinator.model.weights == "standing"
