"""The photo rules have one definition (facectx.data.rules): validate runs them as a
great-expectations suite, hallucinate-dataset photo by photo. Both must judge every photo alike."""

from __future__ import annotations

import dataclasses

import pandas as pd

from facectx.data.rules import judge_row, photo_rules
from facectx.data.validate import run_suite

GOOD = {
    "error": None,
    "error_check": None,
    "decoded_width": 250,
    "decoded_height": 250,
    "landmarks_inside_photo": True,
    "mask_fraction": 0.3,
    "crop_outside_fraction": 0.0,
    "duplicate_of": None,
    "sha256": "a" * 64,
}


def _facts(params) -> list[dict]:
    v = params.validate
    changes = {
        "good": {},
        "undecodable": {
            "error": "cannot decode",
            "error_check": "decodes_to_8bit_rgb",
            "decoded_width": None,
            "decoded_height": None,
            "landmarks_inside_photo": None,
            "mask_fraction": None,
            "crop_outside_fraction": None,
            "sha256": "",
        },  # fmt: skip
        "no_face": {
            "error": "no face",
            "error_check": "face_found",
            "landmarks_inside_photo": None,
            "mask_fraction": None,
            "crop_outside_fraction": None,
        },  # fmt: skip
        "narrow": {"decoded_width": v.min_side_px - 1},
        "at_the_minimum": {"decoded_width": v.min_side_px, "decoded_height": v.min_side_px},
        "points_outside": {"landmarks_inside_photo": False},
        "small_mask": {"mask_fraction": v.mask_fraction_min / 2},
        "mask_at_the_maximum": {"mask_fraction": v.mask_fraction_max},
        "large_mask": {"mask_fraction": (v.mask_fraction_max + 1) / 2},
        "frame_off_photo": {"crop_outside_fraction": v.max_crop_outside_fraction + 0.01},
        "copy": {"duplicate_of": "person/good.jpg"},
        "bad_sha": {"sha256": "XYZ"},
        "many": {"decoded_height": 10, "landmarks_inside_photo": False, "sha256": "0"},
    }
    return [{**GOOD, **change, "relative_path": f"person/{name}.jpg"} for name, change in changes.items()]


def test_row_by_row_judges_every_photo_as_the_suite_does(params):
    rows = _facts(params)
    suite, _ = run_suite(pd.DataFrame(rows), params.validate)
    rules = photo_rules(params.validate)
    direct = {row["relative_path"]: judge_row(row, rules) for row in rows}
    direct = {path: found for path, found in direct.items() if found}
    assert {p: sorted(f) for p, f in direct.items()} == {p: sorted(f) for p, f in suite.items()}
    assert set(direct) == {r["relative_path"] for r in rows} - {"person/good.jpg", "person/at_the_minimum.jpg",
                                                                 "person/mask_at_the_maximum.jpg"}  # fmt: skip
    assert [check for check, _ in direct["person/many.jpg"]] == ["min_size", "landmarks_inside_photo", "manifest"]


def test_a_changed_bound_moves_both_alike(params):
    strict = dataclasses.replace(params.validate, min_side_px=300)
    rows = _facts(params)
    suite, _ = run_suite(pd.DataFrame(rows), strict)
    direct = {r["relative_path"]: judge_row(r, photo_rules(strict)) for r in rows}
    assert "person/good.jpg" in suite and direct["person/good.jpg"] == suite["person/good.jpg"]
