"""A trained generator, rebuilt from its checkpoint, hallucinating context for prepared examples
or for a raw photo (crop, landmarks and mask made here as in `prepare`). Evaluation, serving and
`facectx hallucinate` all use this."""

from __future__ import annotations

import os

import numpy as np
import torch

from facectx.checkpoint import AUTO_CHOICE, CheckpointError, generator_state, load_checkpoint, resolve_weights
from facectx.config import CropConfig, LandmarkConfig
from facectx.data.examples import build_example
from facectx.data.landmarks import make_landmarker
from facectx.models.factory import build_generator, model_args_from_meta
from facectx.tensors import image_tensor, mask_tensor


class NoFaceFound(ValueError):
    """The photo has no detectable face, so there is no mask to hallucinate around."""


def load_generator(
    checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu", weights: str = AUTO_CHOICE
) -> tuple[torch.nn.Module, dict, str]:
    """The checkpoint's generator in eval mode with the chosen weights (auto, running, standing or
    ema: checkpoint.generator_state), its meta, and the choice auto resolved to; a choice the
    checkpoint lacks is a CheckpointError naming it and what it holds."""
    meta, states, _ = load_checkpoint(checkpoint_dir)
    chosen = resolve_weights(weights, meta, states, checkpoint_dir)
    args = model_args_from_meta(meta["model_args"])
    generator = build_generator(args, meta["stage"])
    try:
        generator.load_state_dict(generator_state(states, chosen))
    except RuntimeError as error:  # e.g. a ProGAN checkpoint of the batch-norm design before issue 27
        raise CheckpointError(
            f"{checkpoint_dir}: its {args.kind} generator does not fit this facectx's {args.kind} model "
            f"(trained by an earlier design: retrain it): {' '.join(str(error).split())[:400]}"
        ) from error
    return generator.to(device).eval(), meta, chosen


class Hallucinator:
    """uint8 masked faces (at every pyramid level) in, uint8 full frames out. weights: which of
    the checkpoint's weights (load_generator); `self.weights` says which it uses."""

    def __init__(
        self, checkpoint_dir: str | os.PathLike, device: str | torch.device = "cpu", weights: str = AUTO_CHOICE
    ):
        self.device = torch.device(device)
        self.generator, self.meta, self.weights = load_generator(checkpoint_dir, self.device, weights)
        self.stage = self.meta["stage"]
        self.resolutions = tuple(r for r in self.meta["model_args"]["resolutions"] if r <= self.stage)

    @torch.no_grad()
    def from_pyramid(self, masked: dict[int, np.ndarray], mask: dict[int, np.ndarray]) -> np.ndarray:
        """masked[r]: (B, r, r, 3) uint8; mask[r]: (B, r, r) uint8 0..255."""
        m = {r: image_tensor(self._on_device(masked[r])) for r in self.resolutions}
        k = {r: mask_tensor(self._on_device(mask[r])) for r in self.resolutions}
        out = self.generator(m, k)[self.stage]
        return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    def _on_device(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(images)).to(self.device)


def masked_from_photo(rgb: np.ndarray, landmarker, crop: CropConfig, resolutions: tuple[int, ...]):
    """Crop, mask and pyramid for one RGB photo, as `prepare` makes them."""
    found = landmarker(rgb)
    if found is None:
        raise NoFaceFound("no face found in the photo: facectx needs a visible, roughly frontal face")
    return build_example(rgb, found.points, crop, resolutions)


class PhotoHallucinator:
    """From a raw RGB photo: find the face, crop and mask it, hallucinate its context."""

    def __init__(
        self,
        checkpoint_dir: str | os.PathLike,
        crop: CropConfig,
        landmarks: LandmarkConfig,
        device="cpu",
        weights: str = AUTO_CHOICE,  # which of the checkpoint's weights (load_generator)
    ):
        self.model = Hallucinator(checkpoint_dir, device, weights)
        self.crop = crop
        self.landmarker = make_landmarker(landmarks)

    def __call__(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        example = masked_from_photo(
            rgb, self.landmarker, self.crop, tuple(sorted(set(self.model.resolutions) | {self.crop.size_px}))
        )
        output = self.model.from_pyramid(
            {r: v[None] for r, v in example.masked.items()}, {r: v[None] for r, v in example.mask.items()}
        )[0]
        size = self.crop.size_px
        return {
            "output": output,
            "masked": example.masked[size],
            "mask": example.mask[size],
            "target": example.target[size],
        }
