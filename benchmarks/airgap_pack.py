"""The air-gap pack of the whole LFW copy: its size against the budget, the re-encoding's PSNR,
and how long packing and the far side's rebuild take.

    python benchmarks/airgap_pack.py [--prepared data/prepared] [--out build/airgap/pack]

Needs the pipeline's data steps done (`dvc repro prepare`). Exits non-zero when the pack is over
its budget (the pack refuses to be written then).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from facectx.airgap.format import DEFAULT_MAX_MIB, MAIN_SET, PackError, folder_bytes  # noqa: E402
from facectx.airgap.pack import build_pack  # noqa: E402
from facectx.airgap.unpack import unpack_set  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default=str(REPO / "params.yaml"))
    parser.add_argument("--prepared", default=str(REPO / "data/prepared"))
    parser.add_argument("--validated", default=str(REPO / "data/validated"))
    parser.add_argument("--raw", default=str(REPO / "data/raw"))
    parser.add_argument("--out", default=str(REPO / "build/airgap/pack"))
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB)
    args = parser.parse_args()

    started = time.perf_counter()
    try:
        manifest = build_pack(args.params, args.out, args.prepared, args.validated, args.raw, max_mib=args.max_mib)
    except PackError as err:
        print(f"over budget or refused: {err}")
        return 1
    pack_seconds = time.perf_counter() - started
    out = Path(args.out)
    parts = {
        str(p.relative_to(out)): round(folder_bytes(p) / 2**20, 2)
        for p in [*sorted((out / "sets" / MAIN_SET).iterdir()), out / "weights"]
    }
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        unpack_set(out, MAIN_SET, Path(scratch) / "prepared")
        rebuild_seconds = time.perf_counter() - started
        rebuilt_mib = folder_bytes(Path(scratch) / "prepared") / 2**20
    report = {
        "pack_mib": round(manifest["bytes"] / 2**20, 2),
        "budget_mib": args.max_mib,
        "parts_mib": parts,
        "rows": {s: v["rows"] for s, v in manifest["sets"][MAIN_SET].items()},
        "psnr_db": {
            s: {k: v for k, v in part.items() if k.startswith("psnr")} for s, part in manifest["sets"][MAIN_SET].items()
        },
        "pack_seconds": round(pack_seconds, 1),
        "rebuild_seconds_one_process": round(rebuild_seconds, 1),
        "rebuilt_prepared_mib": round(rebuilt_mib, 1),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
