"""dlib's aligned face chip, cut differentiably from a photo and its 68 landmarks.

`chip_affine`/`extract_chips` reproduce dlib.get_face_chip(img, shape, size=150, padding=0.25)
(dlib/image_transforms/interpolation.h, get_face_chip_details): a similarity from the mean-face
template to the landmarks, then dlib's chip rectangle sampled corner to corner. CHIP_SIZE and
CHIP_PADDING are dlib's chip, the identity network's input; every other user imports them from here.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from facectx.models.identity.mean_face import MEAN_FACE_X, MEAN_FACE_Y

CHIP_SIZE = 150
CHIP_PADDING = 0.25

# dlib fits the chip on landmarks 17..67 minus the eyebrows (17..26) and lower lip (55..59, 65..67).
ALIGN_POINTS = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


def face_chip_template(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> torch.Tensor:
    """(33, 2) chip pixel coordinates (x, y) dlib aligns landmarks ALIGN_POINTS to."""
    xs = torch.tensor([MEAN_FACE_X[i - 17] for i in ALIGN_POINTS], dtype=torch.float64)
    ys = torch.tensor([MEAN_FACE_Y[i - 17] for i in ALIGN_POINTS], dtype=torch.float64)
    return torch.stack([xs, ys], dim=1).add(padding).div(2 * padding + 1).mul(size)


@functools.lru_cache(maxsize=16)
def _alignment_constants(device: torch.device, size: int, padding: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The indices of ALIGN_POINTS and the chip template, on `device`, made once: copying them
    from the host at every call would be a host-to-device copy per training step, which a CUDA
    graph cannot record."""
    return torch.tensor(ALIGN_POINTS, device=device), face_chip_template(size, padding).to(device)


def similarity_fit(src: torch.Tensor, dst: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares similarity dst ~ [[a, -b], [b, a]] @ src + t, batched: returns a, b, t (B,2).

    Same minimiser as dlib's find_similarity_transform (Umeyama) for 2-D points, in closed form
    (differentiable in the landmarks).
    """
    src_mean, dst_mean = src.mean(dim=1, keepdim=True), dst.mean(dim=1, keepdim=True)
    s, d = src - src_mean, dst - dst_mean
    norm = (s**2).sum(dim=(1, 2))
    a = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(dim=1) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(dim=1) / norm
    rot = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=-2)
    t = dst_mean[:, 0] - (rot @ src_mean[:, 0, :, None])[..., 0]
    return a, b, t


def chip_affine(
    landmarks: torch.Tensor, image_size, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> torch.Tensor:
    """theta (B, 2, 3) for F.affine_grid(theta, (B, C, size, size), align_corners=False).

    landmarks: (B, 68, 2) pixel coordinates (x, y) of dlib's 68-point scheme (pixel centres at
    integers, as dlib). image_size: (height, width) of the photos, or an int for square ones.
    Reproduces dlib.get_face_chip(img, shape, size, padding): a similarity from the mean-face
    template to the landmarks, then dlib's chip_details rectangle (centred on the template
    centre, size*scale - 1 pixels between the outer pixel centres) sampled corner to corner.
    """
    if landmarks.ndim != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        raise ValueError(f"expected landmarks of shape (B, 68, 2), got {tuple(landmarks.shape)}")
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    align_index, template = _alignment_constants(landmarks.device, size, float(padding))
    points = landmarks.index_select(1, align_index).to(torch.float64)
    template = template.expand(points.shape[0], -1, -1)
    a, b, t = similarity_fit(template, points)
    scale = torch.sqrt(a**2 + b**2)
    cos, sin = a / scale, b / scale
    # Chip centre in the photo: dlib maps point(cols, rows) / 2 through the similarity.
    centre_x = a * (size / 2) - b * (size / 2) + t[:, 0]
    centre_y = b * (size / 2) + a * (size / 2) + t[:, 1]
    # dlib's rect is centered_drect(centre, size*scale, size*scale): its corners are
    # (size*scale - 1)/2 from the centre, and chip pixel 0 / size-1 map onto them. With
    # align_corners=False a chip pixel j sits at normalised u = (2j + 1)/size - 1, so the
    # half-extent in photo pixels per unit u is (size*scale - 1)/(size - 1) * size/2.
    half = (size * scale - 1) / (size - 1) * (size / 2)
    sx, sy = 2.0 / width, 2.0 / height
    theta = torch.stack(
        [
            torch.stack([sx * half * cos, -sx * half * sin, (2 * centre_x + 1) / width - 1], dim=-1),
            torch.stack([sy * half * sin, sy * half * cos, (2 * centre_y + 1) / height - 1], dim=-1),
        ],
        dim=-2,
    )
    return theta.to(landmarks.dtype if landmarks.is_floating_point() else torch.float32)


def extract_chips(
    images: torch.Tensor, landmarks: torch.Tensor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> torch.Tensor:
    """Aligned face chips (B, 3, size, size) cut from images (B, 3, H, W) with landmarks (B, 68, 2).

    Differentiable in the images (and landmarks); bilinear sampling, zeros outside the photo.
    Unlike dlib, no image pyramid is used, so a face much larger than the chip (photo-to-chip
    scale above ~2) is sampled with some aliasing; downscale such photos first.
    """
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(images.shape)}")
    if landmarks.shape[0] != images.shape[0]:
        raise ValueError(f"{images.shape[0]} images but {landmarks.shape[0]} landmark sets")
    theta = chip_affine(landmarks, tuple(images.shape[2:]), size, padding).to(images.dtype)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
