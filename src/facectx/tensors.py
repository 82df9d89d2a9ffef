"""Small torch helpers shared by training, inference and evaluation: where to run (and, where GPUs
are expected, why CUDA cannot run them), and the one conversion of uint8 images and masks into
the tensors the models take."""

from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path

import torch

# The oldest NVIDIA driver each CUDA major release runs on (minor-version compatibility: NVIDIA's
# "CUDA Compatibility" guide, table 1). torch's own error names the driver's CUDA version only.
_OLDEST_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580"}


class CudaUnavailable(RuntimeError):
    """GPUs were expected, but CUDA cannot use them here (driver, devices, build of torch)."""


def _driver_found() -> str:
    """The NVIDIA driver this container reaches: its kernel module's version and the CUDA
    version its user-mode library (libcuda) supports, whichever can be read."""
    found = []
    with_version = Path("/proc/driver/nvidia/version")
    if with_version.is_file():  # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.54.15  ..."
        words = with_version.read_text(errors="replace").split()
        found.append(f"kernel module {words[words.index('Module') + 1]}" if "Module" in words else " ".join(words[:8]))
    try:
        version = ctypes.c_int()
        if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)) == 0:
            found.append(f"libcuda supports CUDA {version.value // 1000}.{version.value % 1000 // 10}")
    except OSError:
        pass  # no user-mode driver mounted into the container
    return ", ".join(map(str, found)) or "none (no /proc/driver/nvidia/version, no loadable libcuda.so.1)"


def cuda_diagnosis() -> str:
    """What decides whether CUDA runs here: the CUDA release torch was built for and the driver it
    needs, the driver found, the devices visible, and torch's own words on initialising CUDA."""
    try:
        torch.cuda.init()
        said = ""
    except Exception as err:  # e.g. "The NVIDIA driver on your system is too old (found version 12020)"
        said = f"; torch says: {str(err).strip()}"
    built = torch.version.cuda
    needs = (
        f"CUDA {built}, which needs an NVIDIA driver >= {_OLDEST_DRIVER.get(built.split('.')[0], '?')}"
        if built
        else "no CUDA (a CPU-only build)"
    )
    visible = {k: os.environ[k] for k in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES") if k in os.environ}
    return (
        f"torch {torch.__version__} is built for {needs}; driver found: {_driver_found()}; "
        f"CUDA devices visible: {torch.cuda.device_count()}"
        + "".join(f", {k}={v!r}" for k, v in visible.items())
        + said
    )


def require_gpus(expected: int) -> None:
    """Fail at once, saying why, unless CUDA works here and sees at least `expected` GPUs: a pod
    that holds GPUs must never train on its CPU because the driver does not fit the image."""
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < expected:
        raise CudaUnavailable(
            f"this step was given {expected} GPU(s) but CUDA can use {visible} of them here: {cuda_diagnosis()}"
        )


class CpuFallback(UserWarning):
    """`auto` found no usable CUDA and runs on the CPU (shown once per process and reason, as
    Python shows a warning: every stage resolves its device more than once)."""


def resolve_device(name: str, setting: str = "train.device", gpus: int = 0) -> torch.device:
    """A params device setting ("auto", "cpu", "cuda", ...) as a torch device; `setting` names it in
    errors. gpus: how many GPUs the step was given (a Kubeflow pod's GPU limit; 0: none promised):
    with any, CUDA must see them all (CudaUnavailable otherwise), whatever `name` says but cpu."""
    if gpus:
        if name == "cpu":
            raise ValueError(f"{setting} is cpu, but the step was given {gpus} GPU(s): set it to auto or cuda")
        require_gpus(gpus)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        warnings.warn(
            f"{setting} is auto and CUDA is not usable here: running on the CPU ({cuda_diagnosis()})",
            CpuFallback,
            stacklevel=2,
        )
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CudaUnavailable(f"{setting} is {name} but CUDA is not usable here: {cuda_diagnosis()}")
    return torch.device(name)


def image_tensor(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [-1, 1]; the permuted view keeps NHWC memory (channels_last).
    Always a new tensor (the arithmetic is done in place on the copy)."""
    return x.permute(0, 3, 1, 2).to(torch.float32, copy=True).div_(127.5).sub_(1.0)


def mask_tensor(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHW 0..255 -> float N1HW in [0, 1]; always a new tensor."""
    return x.unsqueeze(1).to(torch.float32, copy=True).div_(255.0)
