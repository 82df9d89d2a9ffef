"""The cascade's building blocks: the face paste-back and checkerboard-free upsampling at init
(ProGAN upsamples by nearest neighbour: tests/test_progan.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facectx.models import cascade
from facectx.models.cascade import CascadeBlock, CascadeGenerator, ModelArgs, UNet, paste_face
from facectx.training.data import ResidentShards

RESOLUTIONS = (8, 16, 32, 64, 128)
TINY = ModelArgs("cascade", RESOLUTIONS, width=4, max_width=8, disc_width=4, disc_max_layers=2)


def nyquist_share(images: torch.Tensor) -> float:
    """Share of the images' AC power at the 2-pixel periods (pi, 0), (0, pi), (pi, pi): the
    checkerboard. Natural photos: ~0.001."""
    x = images.double() - images.double().mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fft2(x).abs() ** 2
    h, w = x.shape[-2:]
    nyquist = power[..., h // 2, 0] + power[..., 0, w // 2] + power[..., h // 2, w // 2]
    return float((nyquist / power.sum(dim=(-2, -1))).mean())


def test_pasting_the_real_target_over_itself_gives_the_target_at_every_resolution(prepared_data):
    data = ResidentShards(prepared_data, "train", RESOLUTIONS, torch.device("cpu"))
    batch = data.batch(torch.arange(data.rows))
    for r in RESOLUTIONS:
        mask = batch.mask[r]
        if r < 128:  # the case that matters: area-averaged masks are fractional at the face's edge
            assert ((mask > 0) & (mask < 1)).any(), r
        pasted = paste_face(batch.target[r], batch.masked[r], mask)
        assert (pasted - batch.target[r]).abs().max() < 1e-5, r
        # ... and the face the pixel lies wholly inside of is the input's, not the generator's
        blank = paste_face(torch.zeros_like(batch.target[r]), batch.masked[r], mask)
        inside = (mask == 1).expand_as(blank)
        assert torch.equal(blank[inside], batch.masked[r][inside]), r
        assert (blank[~inside] == 0).all(), r


def test_pixel_shuffle_upsampler_starts_as_nearest_upsampling():
    torch.manual_seed(0)
    upsampler = CascadeBlock(16, TINY, has_guide=True).guide_upsampler
    out = upsampler(torch.randn(2, 3, 8, 8))
    # identical values within each 2x2 block: nearest upsampling of the blocks' top-left pixels
    assert torch.equal(out, F.interpolate(out[..., ::2, ::2], scale_factor=2, mode="nearest"))
    assert out.std() > 0.05  # not trivially constant


def _transposed_convs(module: torch.nn.Module) -> list[torch.nn.ConvTranspose2d]:
    return [m for m in module.modules() if isinstance(m, torch.nn.ConvTranspose2d)]


def test_transposed_convs_start_as_nearest_upsampling_plus_a_conv():
    """A 4x4 stride-2 kernel is "nearest upsampling, then a 3x3 conv" exactly when it is a 3x3
    kernel convolved with the 2x2 box, i.e. when its alternating sums along each axis are 0."""
    torch.manual_seed(0)
    models = [UNet(4, 3, 32, 4, 8), CascadeGenerator(TINY, 32)]
    convs = [conv for model in models for conv in _transposed_convs(model)]
    assert len(convs) >= 8
    signs = torch.tensor([1.0, -1.0, 1.0, -1.0])
    for conv in convs:
        w = conv.weight
        assert (w * signs).sum(-1).abs().max() < 1e-6
        assert (w * signs[:, None]).sum(-2).abs().max() < 1e-6
    # What that means: a flat input gives a flat output away from the borders, not a 2x2 pattern.
    for conv in convs:
        out = conv(torch.ones(1, conv.in_channels, 6, 6))[..., 2:-2, 2:-2]
        assert torch.allclose(out, out[..., :1, :1].expand_as(out), atol=1e-5)


def test_an_untrained_generator_paints_no_checkerboard(prepared_data):
    data = ResidentShards(prepared_data, "train", (8, 16, 32), torch.device("cpu"))
    batch = data.batch(torch.arange(data.rows))
    torch.manual_seed(0)
    generator = CascadeGenerator(TINY, 32).eval()
    seen = {}
    generator.blocks["32"].unet.register_forward_hook(lambda module, args, out: seen.setdefault("raw", out))
    with torch.no_grad():
        generator(batch.masked, batch.mask)
    # default init: ~0.6 of the generated image's power is checkerboard; photos: ~0.001
    assert nyquist_share(seen["raw"]) < 0.1


def _inputs(size: int, batch: int = 2) -> tuple[dict, dict]:
    """Masked faces and masks at every pyramid level up to `size` (a square face, hard-edged)."""
    torch.manual_seed(1)
    masked, mask = {}, {}
    for r in (r for r in RESOLUTIONS if r <= size):
        face = torch.zeros(batch, 1, r, r)
        face[..., r // 4 : 3 * r // 4, r // 4 : 3 * r // 4] = 1
        mask[r], masked[r] = face, torch.rand(batch, 3, r, r) * 2 - 1
    return masked, mask


def test_checkpoints_from_before_the_init_change_still_load(monkeypatch):
    """The inits only change values: an old model's state dict (no ICNR, default transposed-conv
    init) has the same entries, loads strictly, and the loaded model computes what the old one did."""

    def build():
        torch.manual_seed(0)  # the same draws for both: only what the inits do differs
        return [CascadeGenerator(TINY, 64)]

    new = build()
    with monkeypatch.context() as before_the_change:
        before_the_change.setattr(cascade, "icnr_", lambda conv, scale=2: conv)
        before_the_change.setattr(cascade, "nearest_conv_init_", lambda deconv: deconv)
        old = build()
    masked, mask = _inputs(64)
    for model, before in zip(new, old):
        name = type(model).__name__
        state, old_state = model.state_dict(), before.state_dict()
        assert state.keys() == old_state.keys(), name
        # The old checkpoint really is another init: exactly the sub-pixel and transposed convs differ.
        changed = {key for key in state if not torch.equal(state[key], old_state[key])}
        reinitialised = {
            f"{module_name}.{key}"
            for module_name, module in model.named_modules()
            if isinstance(module, torch.nn.ConvTranspose2d)
            or (isinstance(module, torch.nn.Conv2d) and "guide_upsampler" in module_name)
            for key in ("weight", "bias")
            if getattr(module, key, None) is not None
        }
        assert changed and changed == reinitialised, (name, changed ^ reinitialised)

        model.load_state_dict(old_state, strict=True)
        assert all(torch.equal(value, old_state[key]) for key, value in model.state_dict().items()), name
        with torch.no_grad():
            got, expected = model.eval()(masked, mask), before.eval()(masked, mask)
        assert got.keys() == expected.keys() and 64 in got, name
        assert all(torch.equal(got[r], expected[r]) for r in expected), name
