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
    vgg = VGG19Features(str(path), frame_size=128)
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    maps = vgg.features(images)
    assert [m.shape[1] for m in maps] == [64, 128, 256, 512]
    assert maps[0].shape[-1] == 128  # low-resolution outputs are compared at the full frame
    assert feature_distance(maps, vgg.features(images)) == 0

    wrong = tmp_path / "wrong.safetensors"
    save_file({"features.0.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(WeightsError, match="wrong.safetensors"):
        VGG19Features(str(wrong), frame_size=128)
    with pytest.raises(WeightsError, match="not found"):
        VGG19Features(str(tmp_path / "missing.pth"), frame_size=128)


def test_one_dlib_pass_gives_the_same_identity_and_perceptual_losses_as_two(prepared_data, params):
    """With the dlib ResNet serving L_id and L_pc, one pass per image replaces two: same losses, same gradients."""
    import numpy as np

    from facectx.losses import FaceFeatures, StageLoss
    from facectx.models.cascade import PatchDiscriminator

    assert params.losses.identity and params.losses.perceptual and params.losses.perceptual_network == "dlib_resnet"
    frame = params.crop.size_px
    val = prepared_data / "val"
    to_image = lambda a: torch.from_numpy(np.array(a[:3])).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    target = to_image(np.load(val / "target_32.npy"))
    masked = to_image(np.load(val / "masked_32.npy"))
    landmarks = torch.from_numpy(np.array(np.load(val / "landmarks.npy")[:3])).float()
    torch.manual_seed(0)
    fake = (target + 0.3 * torch.randn_like(target)).clamp(-1, 1)  # a generator output near the photo
    critic = PatchDiscriminator(32, 4, 2).eval()  # eval: spectral norm's power iteration would move between calls
    face = FaceFeatures(frame)
    passes = []
    face.net.conv32_down.register_forward_hook(lambda *_: passes.append(1))

    results = {}
    for shared in (True, False):
        passes.clear()
        output = fake.clone().requires_grad_(True)
        loss = StageLoss(params.losses, critic, face, face, share_face_pass=shared)
        parts = loss.generator_loss(masked, target, output, landmarks)
        parts.total.backward()
        results[shared] = (parts.parts, output.grad, len(passes))

    (one, grad_one, passes_one), (two, grad_two, passes_two) = results[True], results[False]
    assert (passes_one, passes_two) == (2, 4)  # fake and target once each, instead of once per loss
    assert one.keys() == two.keys() == {"rec", "adv", "id", "pc", "total"}
    assert one["id"] > 0 and one["pc"] > 0
    for name in one:
        torch.testing.assert_close(one[name], two[name], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad_one, grad_two, rtol=1e-6, atol=1e-6)
