"""Realism judged fairly: the two-sample classifier test on real LFW photos, and pixels outside
the photo (where the 2.2x crop ran past its edge) kept out of every loss and metric."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import prepare_sample, tiny_training_params
from facectx.evaluation.evaluate import load_split, mean_training_frame
from facectx.evaluation.metrics import PER_PHOTO, within_photo
from facectx.evaluation.two_sample import identity_halves, roc_auc, two_sample_auc


@pytest.fixture(scope="module")
def many_test_photos(lfw_dir, tmp_path_factory, params):
    """~220 test photos of 200 identities (and a few training photos for the mean frame)."""
    return prepare_sample(
        lfw_dir,
        tmp_path_factory.mktemp("c2st"),
        params,
        train_people=6,
        test_people=200,
        max_photos=2,
        val_fraction=0.0,
        mirror=False,
    )


def test_roc_auc_counts_ties_half():
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), np.array([0, 0, 1, 1])) == 0.0
    assert roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), np.array([0, 1, 0, 1])) == 0.5


def test_two_sample_test_cannot_tell_real_from_real_but_tells_the_mean_context(many_test_photos):
    from facectx.evaluation.baselines import BASELINES
    from facectx.evaluation.networks import make_networks

    test = load_split(many_test_photos, "test")
    identities = test.index.identity.to_numpy()
    real = identity_halves(identities)
    nets = make_networks("faceres")

    def features(images):
        return np.concatenate([nets.frame_features(images[i : i + 32])["fd"] for i in range(0, len(images), 32)])

    real_features = features(test.target)
    same = two_sample_auc(real_features[real], identities[real], real_features[~real], identities[~real])
    mean_context = BASELINES["mean training context"](mean_training_frame(many_test_photos))
    outputs = within_photo(
        mean_context(test.masked[128], (test.mask[128] > 127).astype(np.uint8)), test.target, test.valid
    )
    fake = two_sample_auc(real_features[real], identities[real], features(outputs)[~real], identities[~real])
    assert same["n_per_side"] >= 40 and same["folds"] == 5
    # Measured 2026-11-26 with 400 photos a side: real vs real 0.519 ± 0.062, mean context 1.000;
    # here (112 a side) 0.479 ± 0.083 and 1.000. 0.5 ± 0.15 still fails a classifier that tells them apart.
    assert abs(same["auc"] - 0.5) < 0.15, same
    assert fake["auc"] > 0.9, fake


def _row_past_the_edge(prepared, split="train"):
    valid = np.load(prepared / split / "valid_32.npy")
    rows = np.flatnonzero((valid == 0).any(axis=(1, 2)))
    assert len(rows), "the sample should hold a frame whose crop ran past its photo"
    return int(rows[0])


def test_pixels_outside_the_photo_pull_on_no_loss_and_move_no_metric(prepared_data, params, tmp_path):
    from facectx.steps.train import stage_trainer

    stage = 32
    tiny = tiny_training_params(params, max_train_rows=0)  # every row: some frames run past their photo
    trainer = stage_trainer(
        tiny, stage, prepared_data, tmp_path / "out", None, tmp_path / "resume", require_previous=False
    )
    past_edge = (trainer.train_data.valid[stage] == 0).flatten(1).any(1)
    assert past_edge.any(), "the sample should hold a frame whose crop ran past its photo"
    batch = trainer.train_data.batch(torch.nonzero(past_edge)[:1, 0])
    outside = batch.valid[stage] == 0
    assert outside.any()

    # The trainer's own step, with the generator's output replaced by a tensor we can inspect.
    output = torch.zeros_like(batch.target[stage]).uniform_(-1, 1).requires_grad_(True)
    trainer.g_forward = lambda masked, mask: {stage: output}
    parts = trainer._train_step(batch)
    assert set(parts) >= {"critic", "rec", "adv", "id", "pc"}
    grad = output.grad.abs().sum(1, keepdim=True)
    assert (grad[outside] == 0).all() and grad[~outside].sum() > 0

    # The same output with other pixels past the photo's edge: every loss term and the critic's
    # loss are the same.
    other = output.detach().clone()
    other[outside.expand_as(other)] = torch.rand(int(outside.sum()) * 3) * 2 - 1
    from facectx.losses import within_photo as keep_photo

    def losses(out):
        fake = keep_photo(out, batch.target[stage], batch.valid[stage])
        critic = trainer.loss.critic_loss(batch.masked[stage], batch.target[stage], fake).parts
        gen = trainer.loss.generator_loss(batch.masked[stage], batch.target[stage], fake, batch.landmarks).parts
        return {**critic, **gen}

    trainer.critic.eval()
    with torch.no_grad():
        first, second = losses(output.detach()), losses(other)
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-6)

    # Evaluation: the pixel metrics leave those pixels out, and outputs carry the target's there.
    test = load_split(prepared_data, "train")
    i = _row_past_the_edge(prepared_data)
    target, mask, valid = test.target[i : i + 1], test.mask[128][i : i + 1], test.valid[i : i + 1]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, target.shape, dtype=np.uint8)
    b = a.copy()
    b[valid == 0] = rng.integers(0, 256, (int((valid == 0).sum()), 3), dtype=np.uint8)
    for name, metric in PER_PHOTO.items():
        assert metric(a, target, mask, valid) == pytest.approx(metric(b, target, mask, valid), abs=1e-6), name
    assert (within_photo(a, target, valid) == within_photo(b, target, valid)).all()
    assert (within_photo(a, target, valid)[valid == 0] == target[valid == 0]).all()
