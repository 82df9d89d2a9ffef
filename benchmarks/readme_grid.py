"""The README's picture: an evaluation grid (one row per test photo, 128-px columns) with a row
of column names on top, as a JPEG under the repository's size limit for it.

    python benchmarks/readme_grid.py reports/gpu/<visit>/evaluation/grid.png docs/images/lfw-test-grid.jpg \
        --columns "masked input,Telea,Navier-Stokes,biharmonic,mean context,cascade,original"
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
    args = parser.parse_args()
    data = as_jpeg(labelled(Image.open(args.grid), args.columns.split(",")))
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(out)  # never a half-written picture
    print(f"wrote {out}: {len(data) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
