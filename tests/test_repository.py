"""What git may hold: no face photos, no weights; one LFW-derived picture, small (DEVELOPERS.md)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README_PICTURE = "docs/images/lfw-test-grid.jpg"
PICTURE_LIMIT_BYTES = 300 * 1024
BINARY_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".webp",
    ".bmp",
    ".gif",
    ".pt",
    ".pth",
    ".ckpt",
    ".safetensors",
    ".bin",
    ".dat",
    ".npy",
    ".npz",
    ".parquet",
    ".onnx",
}


def tracked_files() -> list[str]:
    try:
        listing = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return listing.splitlines()


def test_git_holds_no_photos_or_weights_but_the_readme_picture():
    binaries = [f for f in tracked_files() if Path(f).suffix.lower() in BINARY_SUFFIXES]
    assert binaries == [README_PICTURE]


def test_the_readme_picture_is_small_and_shown():
    size = (REPO / README_PICTURE).stat().st_size
    assert 0 < size <= PICTURE_LIMIT_BYTES, f"{README_PICTURE}: {size} bytes (limit {PICTURE_LIMIT_BYTES})"
    assert f"]({README_PICTURE})" in (REPO / "README.md").read_text()
