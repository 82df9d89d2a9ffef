"""The README's picture combines evaluation grids of the same test photos, one model each
(benchmarks/readme_grid.py): the model's column goes in, and grids of other photos are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "readme_grid.py"
spec = importlib.util.spec_from_file_location("readme_grid", SCRIPT)
readme_grid = importlib.util.module_from_spec(spec)
spec.loader.exec_module(readme_grid)

CELL = 16  # px per column in these small grids


def grid_of(values: list[int]) -> Image.Image:
    """A grid one row high whose column i is filled with values[i]."""
    return Image.fromarray(np.concatenate([np.full((CELL, CELL, 3), v, np.uint8) for v in values], axis=1))


def test_the_model_column_of_the_second_grid_goes_before_the_first_grids():
    cascade = grid_of([10, 20, 30, 40])  # input, baseline, model, original
    progan = grid_of([10, 20, 99, 40])
    merged = np.asarray(readme_grid.with_model_column(cascade, progan, column=2, columns=4))
    assert merged.shape == (CELL, 5 * CELL, 3)
    assert [int(merged[0, i * CELL, 0]) for i in range(5)] == [10, 20, 99, 30, 40]


def test_grids_of_other_photos_are_refused_naming_the_column():
    with pytest.raises(ValueError, match="differ in column 3"):
        readme_grid.with_model_column(grid_of([10, 20, 30, 40]), grid_of([10, 20, 99, 41]), column=2, columns=4)
    with pytest.raises(ValueError, match="differ in size"):
        readme_grid.with_model_column(grid_of([10, 20, 30, 40]), grid_of([10, 20, 30]), column=2, columns=4)


def test_the_labelled_jpeg_fits_the_repositorys_limit_and_counts_its_columns():
    merged = readme_grid.with_model_column(grid_of([10, 20, 30, 40]), grid_of([10, 20, 99, 40]), 2, 4)
    assert len(readme_grid.as_jpeg(readme_grid.labelled(merged, list("abcde")))) <= readme_grid.LIMIT_BYTES
    with pytest.raises(ValueError, match="not a whole number of columns"):
        readme_grid.labelled(merged, list("abc"))
