"""The README's picture: an evaluation grid (one row per test photo, 128-px columns) with a row
of column names on top, as a JPEG under the repository's size limit for it.

    python benchmarks/readme_grid.py reports/gpu/<visit>/evaluation/grid.png docs/images/lfw-test-grid.jpg \
        --columns "masked input,Telea,Navier-Stokes,biharmonic,mean context,cascade,original"

Models trained on different visits are scored in separate evaluations of the same test photos,
each grid holding one model. `--model-grid PATH --model-column K` puts that grid's column K (its
model) beside the first grid's column K; the two grids must agree everywhere else (the same
photos and baselines), else it refuses:

    python benchmarks/readme_grid.py reports/gpu/<cascade visit>/evaluation/grid.png docs/images/lfw-test-grid.jpg \
        --model-grid reports/gpu/<progan visit>/evaluation/grid.png --model-column 5 \
        --columns "masked input,Telea,Navier-Stokes,biharmonic,mean context,ProGAN variant,cascade,original"
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

HEADER_PX = 42
LIMIT_BYTES = 300 * 1024  # the one LFW-derived image git may hold (tests/test_repository.py)


def font(size: int) -> ImageFont.ImageFont:
    try:
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    except (ImportError, OSError):
        return ImageFont.load_default()


def labelled(grid: Image.Image, columns: list[str]) -> Image.Image:
    width = grid.width // len(columns)
    if width * len(columns) != grid.width:
        raise ValueError(f"{len(columns)} column names for a grid {grid.width} px wide: not a whole number of columns")
    out = Image.new("RGB", (grid.width, grid.height + HEADER_PX), "white")
    out.paste(grid.convert("RGB"), (0, HEADER_PX))
    draw, face = ImageDraw.Draw(out), font(15)
    for i, name in enumerate(columns):
        draw.text((i * width + width / 2, HEADER_PX / 2 - 8), name, fill="black", font=face, anchor="mt")
    return out


def with_model_column(grid: Image.Image, other: Image.Image, column: int, columns: int) -> Image.Image:
    """`grid` with `other`'s column `column` inserted before its own column `column`."""
    if grid.size != other.size:
        raise ValueError(f"the grids differ in size ({grid.size} vs {other.size}): not the same photos")
    width = grid.width // columns
    if not 0 <= column < columns or width * columns != grid.width:
        raise ValueError(f"column {column} of a grid {grid.width} px wide with {columns} columns")
    a, b = grid.convert("RGB"), other.convert("RGB")
    for i in range(columns):
        box = (i * width, 0, (i + 1) * width, grid.height)
        if i != column and a.crop(box).tobytes() != b.crop(box).tobytes():
            raise ValueError(f"the grids differ in column {i}, not only in the model's ({column}): not the same photos")
    out = Image.new("RGB", (grid.width + width, grid.height))
    out.paste(a.crop((0, 0, (column + 1) * width, grid.height)), (0, 0))
    out.paste(b.crop((column * width, 0, (column + 1) * width, grid.height)), (column * width, 0))
    out.paste(a.crop((column * width, 0, grid.width, grid.height)), ((column + 1) * width, 0))
    return out


def as_jpeg(image: Image.Image) -> bytes:
    for quality in (90, 85, 80, 75, 70, 60):
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=quality, optimize=True)
        if buffer.tell() <= LIMIT_BYTES:
            return buffer.getvalue()
    raise ValueError(f"the grid does not fit in {LIMIT_BYTES} bytes even at JPEG quality 60")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("grid")
    parser.add_argument("out")
    parser.add_argument("--columns", required=True, help="comma-separated column names, left to right")
    parser.add_argument("--model-grid", help="a grid of the same photos whose model column goes in too")
    parser.add_argument("--model-column", type=int, help="the model's column (from 0) in both grids")
    args = parser.parse_args()
    columns = args.columns.split(",")
    grid = Image.open(args.grid)
    if args.model_grid:
        if args.model_column is None:
            parser.error("--model-grid needs --model-column")
        grid = with_model_column(grid, Image.open(args.model_grid), args.model_column, len(columns) - 1)
    data = as_jpeg(labelled(grid, columns))
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never a half-written picture
    print(f"wrote {out}: {len(data) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
