"""dlib's face-recognition ResNet (dlib_face_recognition_resnet_model_v1) in PyTorch, differentiable.

Used as the identity loss L_id and as an offline perceptual-feature network. By job:

    network.py    DlibFaceResNet: aligned 150x150 chip -> 128-d descriptor (and stage activations)
    weights.py    load_identity_network: face-api's TF.js weights (npm @vladmandic/face-api@1.7.15)
                  mapped onto the network, frozen
    chip.py       CHIP_SIZE, CHIP_PADDING and extract_chips/chip_affine: dlib's aligned face chip
                  (dlib.get_face_chip(img, shape, size=150, padding=0.25)) cut differentiably
    mean_face.py  dlib's mean face shape, the chip's alignment template

The names below are the package's interface: import them from facectx.models.identity.
"""

from facectx.models.identity.chip import (
    CHIP_PADDING,
    CHIP_SIZE,
    chip_affine,
    extract_chips,
    face_chip_template,
    similarity_fit,
)
from facectx.models.identity.network import DESCRIPTOR_DIM, DLIB_SAME_PERSON_DISTANCE, DlibFaceResNet
from facectx.models.identity.weights import IdentityWeightsError, load_identity_network

__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "DESCRIPTOR_DIM",
    "DLIB_SAME_PERSON_DISTANCE",
    "DlibFaceResNet",
    "IdentityWeightsError",
    "chip_affine",
    "extract_chips",
    "face_chip_template",
    "load_identity_network",
    "similarity_fit",
]
