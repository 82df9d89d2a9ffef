"""facectx airgap pack | run | import: train on an air-gapped GPU machine.

The airgap modules are imported by their handlers: they load numpy, pandas and PIL, which the
other commands' start does not need."""

from __future__ import annotations

from facectx.airgap.format import DEFAULT_MAX_MIB
from facectx.cli.options import folders
from facectx.layout import CASCADE


def add_parser(commands) -> None:
    airgap = commands.add_parser("airgap", help="train on an air-gapped GPU machine: pack here, run there, import here")
    airgap_steps = airgap.add_subparsers(dest="airgap_command", required=True)
    _add_pack(airgap_steps)
    _add_run(airgap_steps)
    step = airgap_steps.add_parser("import", help="a far run's results.tar.gz into MLflow and reports/")
    step.add_argument("results", help="results.tar.gz from `facectx airgap run`")
    step.add_argument("--pack", help="the pack it was run from (checked)")
    step.add_argument("--reports-dir", default="reports")
    step.set_defaults(func=import_run, needs_params=False)


def _add_pack(airgap_steps) -> None:
    step = airgap_steps.add_parser(
        "pack",
        parents=folders("--prepared-dir", "--validated-dir", "--raw-dir"),
        help="data, weights, settings and calibration for the far machine, in one folder",
        description="Data, weights, settings and calibration for the far machine, in one "
        "folder. The photos' landmarks (from --validated-dir) are packed "
        "instead of the frame's.",
    )
    step.add_argument("out", help="pack folder to write")
    step.add_argument(
        "--test-source",
        action="append",
        metavar="FOLDER",
        help="another folder of photos (<identity>/<photo>), prepared here as an extra test set (repeatable)",
    )
    step.add_argument(
        "--without", action="append", choices=("train", "val", "test"), help="leave a split out (repeatable)"
    )
    step.add_argument(
        "--max-mib", type=float, default=DEFAULT_MAX_MIB, help="refuse a pack larger than this (default: %(default)s)"
    )
    step.add_argument(
        "--profile",
        help="the params profile the far run will use (default: the params'): the calibration and the baselines' "
        "and real-vs-real rows scored here follow it",
    )
    step.set_defaults(func=pack)


def pack(args, params):
    from facectx.airgap.pack import build_pack

    manifest = build_pack(
        args.params,
        args.out,
        prepared_dir=args.prepared_dir,
        validated_dir=args.validated_dir,
        raw_dir=args.raw_dir,
        test_sources=args.test_source or [],
        without=tuple(args.without or ()),
        max_mib=args.max_mib,
        profile=args.profile,
    )
    rows = {
        name: {split: part["rows"] for split, part in parts.items() if isinstance(part, dict)}
        for name, parts in manifest["sets"].items()
    }
    print(
        f"wrote {args.out}: {manifest['bytes'] / 2**20:.1f} MiB (budget {args.max_mib:g} MiB); pack {manifest['id']}; "
        f"rows {rows}"
    )
    return manifest


def _add_run(airgap_steps) -> None:
    step = airgap_steps.add_parser("run", help="on the far machine: rebuild the data, train, evaluate, write results")
    step.add_argument("pack", help="a folder made by `facectx airgap pack`")
    step.add_argument(
        "--models", default=CASCADE, help="comma-separated: cascade and/or params' variants (default: %(default)s)"
    )
    step.add_argument(
        "--out", required=True, help="results folder (results.tar.gz, report.html, summary.txt, progress.log)"
    )
    step.add_argument("--work", help="scratch folder for data, checkpoints and run folders (default: OUT.work)")
    step.add_argument("--profile", help="params profile to train with (default: the pack's)")
    step.add_argument(
        "--cap-minutes", type=float, help="wall-clock budget per model; capped stages stop cleanly and say so"
    )
    step.add_argument(
        "--parallel", type=int, default=1, help="models trained at once on the one GPU (default: %(default)s)"
    )
    step.add_argument(
        "--resume-checkpoints", action="store_true", help="write resumable checkpoints during training (off: faster)"
    )
    step.add_argument("--seed", type=int, help="train.seed for every model (default: the pack's params')")
    step.add_argument(
        "--score-ways",
        default="",
        help="comma-separated weight choices (running, standing, ema) each model is also scored with, a row "
        "each; ema gives models trained without an EMA one (it changes no training step)",
    )
    step.set_defaults(func=run_pack, needs_params=False)  # the pack's params, not the working directory's


def run_pack(args, params):
    from facectx.airgap.run import run

    return run(
        args.pack,
        [m.strip() for m in args.models.split(",") if m.strip()],
        args.out,
        work=args.work,
        profile=args.profile,
        cap_minutes=args.cap_minutes,
        parallel=args.parallel,
        resume_checkpoints=args.resume_checkpoints,
        seed=args.seed,
        score_ways=tuple(w.strip() for w in args.score_ways.split(",") if w.strip()),
    )


def import_run(args, params):
    from facectx.airgap.results import import_results

    result = import_results(args.results, args.pack, args.reports_dir)
    print(
        f"MLflow pipeline run {result['mlflow_parent_run']} ({len(result['mlflow_runs'])} runs); reports: "
        f"{', '.join(result['reports']) or 'none'}" + ("" if result["complete"] else " (partial results)")
    )
    return result
