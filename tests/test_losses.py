"""The loss functions and the configurable perceptual network."""
from __future__ import annotations

import pytest
import torch

from facectx.losses import (VGG19Features, feature_distance, identity_distance, lsgan_critic_loss, lsgan_generator_loss,
                            reconstruction_loss)
from facectx.weights import WeightsError


def test_pure_losses():
    a, b = torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5)
    assert reconstruction_loss(a, b, "l1") == pytest.approx(0.5)
    assert reconstruction_loss(a, b, "l2") == pytest.approx(0.25)
    assert lsgan_critic_loss(torch.ones(4), torch.zeros(4)) == 0  # a perfect critic
    assert lsgan_generator_loss(torch.ones(4)) == 0  # a perfect forger
    e = torch.randn(3, 128)
    assert torch.allclose(identity_distance(e, e), torch.zeros(3), atol=1e-6)
    assert torch.allclose(identity_distance(e, -e), torch.full((3,), 2.0), atol=1e-6)
    assert feature_distance([a, a], [a, b]) == pytest.approx(0.25)


def test_vgg19_perceptual_network_loads_a_configured_file(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    features = torchvision.models.vgg19().features.state_dict()  # randomly initialised: exercises loading
    path = tmp_path / "vgg19.safetensors"
    save_file({f"features.{k}": v.contiguous() for k, v in features.items()}, str(path))
    vgg = VGG19Features(str(path))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    maps = vgg.features(images)
    assert [m.shape[1] for m in maps] == [64, 128, 256, 512]
    assert maps[0].shape[-1] == 128  # low-resolution outputs are compared at the full frame
    assert feature_distance(maps, vgg.features(images)) == 0

    wrong = tmp_path / "wrong.safetensors"
    save_file({"features.0.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(WeightsError, match="wrong.safetensors"):
        VGG19Features(str(wrong))
    with pytest.raises(WeightsError, match="not found"):
        VGG19Features(str(tmp_path / "missing.pth"))
