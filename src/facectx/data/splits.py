"""Identity-disjoint train/val/test splits.

LFW sources use LFW's own View-1 lists (DevTrain -> train/val, DevTest -> test); other sources,
and identities the lists do not name, are split by a salted hash of the identity, so a person's
split never changes when photos are added.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from facectx.config import SplitConfig

SPLITS = ("train", "val", "test")


def _unit_hash(identity: str, seed: int, salt: str) -> float:
    digest = hashlib.sha256(f"{seed}:{salt}:{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read_people_list(path: Path) -> set[str]:
    """LFW people file: first line a count, then `name<TAB>number_of_images`."""
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    return {line.split("\t")[0].strip() for line in lines if line.strip()}


def assign_splits(identities: list[str], config: SplitConfig, split_lists_dir: Path | None) -> dict[str, str]:
    lists = _lfw_lists(split_lists_dir) if config.method in ("auto", "lfw") else None
    if config.method == "lfw" and lists is None:
        raise FileNotFoundError(
            f"prepare.split.method is 'lfw' but no peopleDevTrain.txt/peopleDevTest.txt in {split_lists_dir}"
        )
    assignment = {}
    for identity in sorted(set(identities)):
        if lists is not None and identity in lists[1]:
            assignment[identity] = "test"
        elif lists is not None and identity in lists[0]:
            is_val = _unit_hash(identity, config.seed, "val") < config.val_fraction
            assignment[identity] = "val" if is_val else "train"
        else:
            u = _unit_hash(identity, config.seed, "split")
            assignment[identity] = (
                "test"
                if u < config.test_fraction
                else "val"
                if u < config.test_fraction + config.val_fraction
                else "train"
            )
    return assignment


def _lfw_lists(folder: Path | None):
    if folder is None:
        return None
    train, test = folder / "peopleDevTrain.txt", folder / "peopleDevTest.txt"
    if not (train.is_file() and test.is_file()):
        return None
    return read_people_list(train), read_people_list(test)
