"""`facectx airgap run PACK --models ... --out DIR` on the air-gapped GPU machine.

Rebuilds the prepared data from the pack, trains each named model with the same `facectx train`
that DVC and Kubeflow run (several at once when asked, each under a wall-clock cap), evaluates
every finished model and the baselines on every packed test set with the same `evaluate`, and
writes at most five files into DIR:

    results.tar.gz   run folders (params, losses per step, validation metrics, grids, system info),
                     evaluation reports, per-stage metrics and logs, results.json
    report.html      the evaluation report of the main test set
    summary.txt      the one-screen table printed at the end
    progress.log     what happened when

The archive is rewritten (atomically) as results arrive, so a run killed at its time limit still
leaves everything measured so far. Nothing here needs mlflow, dvc, kfp, great_expectations, dlib
or boto3: tracking goes to run folders, and `facectx airgap import` replays them at home.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from facectx.airgap.far_params import check_models, far_params
from facectx.airgap.format import MAIN_SET, read_manifest
from facectx.airgap.reference import carried_reference
from facectx.airgap.unpack import unpack_set
from facectx.config import Params, load_params
from facectx.io_utils import atomic_path, write_json
from facectx.layout import CASCADE, MODELS_ROOT, ModelLayout, stage_folder
from facectx.steps.evaluate import evaluate_step

ARCHIVE, REPORT, SUMMARY, PROGRESS = "results.tar.gz", "report.html", "summary.txt", "progress.log"
SNAPSHOT_EVERY_S = 30
# What the archive keeps of the work folder: everything but checkpoints and the rebuilt shards.
_ARCHIVED = (
    "runs",
    "reports",
    "logs",
    f"{MODELS_ROOT}/*/{stage_folder('*')}/metrics.json",
    f"{MODELS_ROOT}/*/{stage_folder('*')}/losses.csv",
    "results.json",
    "params.yaml",
)


class Progress:
    """One line per event, into DIR/progress.log and stdout, as it happens."""

    def __init__(self, path: Path):
        self.path, self.start = path, time.monotonic()

    def __call__(self, message: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - self.start:6.0f}s] {message}"
        print(line, flush=True)
        with open(self.path, "a") as handle:
            handle.write(line + "\n")


def snapshot(work: Path, out: Path, status: dict) -> None:
    """The archive of everything measured so far, replacing the previous one only when whole."""
    write_json(work / "results.json", {**status, "written": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with atomic_path(out / ARCHIVE) as tmp, tarfile.open(tmp, "w:gz") as archive:
        for pattern in _ARCHIVED:
            for path in sorted(work.glob(pattern)):
                archive.add(path, arcname=str(path.relative_to(work)))


def _stage_metrics(models_dir: Path) -> dict[int, dict]:
    found = {}
    for path in models_dir.glob(f"{stage_folder('*')}/metrics.json"):
        metrics = json.loads(path.read_text())
        found[int(metrics["stage"])] = metrics
    return dict(sorted(found.items()))


def _train_command(name: str, params_file: Path, work: Path, cap_minutes: float | None, pipeline_run: str) -> list[str]:
    """The `facectx train` command line of one model in the work folder, tracked under the visit's
    pipeline run."""
    layout = ModelLayout.work_folder(work)
    return [
        sys.executable,
        "-m",
        "facectx.cli",
        "--params",
        str(params_file),
        *([] if name == CASCADE else ["--variant", name]),
        "train",
        "--prepared-dir",
        str(work / "prepared"),
        "--models-dir",
        str(layout.model_dir(name)),
        "--resume-dir",
        str(layout.resume_root(name)),
        "--run-name",
        name,
        "--pipeline-run",
        pipeline_run,
        *(["--cap-minutes", str(cap_minutes)] if cap_minutes else []),
    ]


def train_models(
    models: list[str],
    params_file: Path,
    work: Path,
    out: Path,
    cap_minutes: float | None,
    parallel: int,
    status: dict,
    progress: Progress,
) -> None:
    """Each model in its own `facectx train` process, `parallel` at a time on the one GPU."""
    waiting, running = list(models), {}
    layout = ModelLayout.work_folder(work)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    last_snapshot = time.monotonic()
    while waiting or running:
        while waiting and len(running) < parallel:
            name = waiting.pop(0)
            command = _train_command(name, params_file, work, cap_minutes, status["pipeline_key"])
            log = open(work / "logs" / f"train-{name}.log", "w")  # noqa: SIM115 (open while the process runs; closed when it ends)
            running[name] = (subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT), log)
            status["models"][name] = {"state": "training"}
            progress(f"training {name}" + (f" (cap {cap_minutes:g} min)" if cap_minutes else ""))
        time.sleep(1)
        for name, (process, log) in list(running.items()):
            stages = _stage_metrics(layout.model_dir(name))
            status["models"][name]["stages"] = stages
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            capped = [s for s, m in stages.items() if m.get("capped")]
            state = "trained" if process.returncode == 0 else f"failed (exit {process.returncode})"
            status["models"][name].update(state=state, capped_stages=capped)
            progress(
                f"{name}: {state}; stages {list(stages)}"
                + (f", capped at {capped}" if capped else "")
                + ("" if process.returncode == 0 else f"; see logs/train-{name}.log in the archive")
            )
            snapshot(work, out, status)
        if time.monotonic() - last_snapshot > SNAPSHOT_EVERY_S:
            snapshot(work, out, status)
            last_snapshot = time.monotonic()


def summary_table(status: dict) -> str:
    """Per model: how far it trained; per test set and method: the headline metrics."""
    lines = [
        f"facectx airgap run {status['run_id']} (pack {status['pack_id']}, profile {status['profile']}"
        + (f", seed {status['seed']})" if "seed" in status else ")"),  # results from before --seed have none
        "",
        f"{'model':<22} {'state':<18} {'stages':<16} {'steps':>7} {'train s':>8} {'img/s':>8}  capped",
    ]
    for name, model in status["models"].items():
        stages = model.get("stages", {})
        lines.append(
            f"{name:<22} {model['state']:<18} {','.join(map(str, stages)):<16} "
            f"{sum(m['steps'] for m in stages.values()):>7} {sum(m['train_seconds'] for m in stages.values()):>8.0f} "
            f"{(list(stages.values())[-1]['images_per_second'] if stages else 0):>8.0f}  "
            f"{','.join(map(str, model.get('capped_stages', []))) or '-'}"
        )
    columns = ("identity_match", "verified", "ssim", "ssim_context", "fd", "c2st_auc", "perceptual")
    for set_name, evaluation in status["evaluations"].items():
        lines += [
            "",
            f"test set {set_name}: {evaluation['photos']} photos; FD {evaluation['fd_network']}",
            f"{'method':<30}" + "".join(f"{c:>15}" for c in columns),
        ]
        for method, values in evaluation["methods"].items():
            lines.append(
                f"{method[:30]:<30}" + "".join(f"{values[c]:>15.4f}" if c in values else f"{'':>15}" for c in columns)
            )
    return "\n".join(lines) + "\n"


def rebuild_sets(pack: Path, manifest: dict, work: Path, progress: Progress) -> dict[str, Path]:
    """Every packed set's prepared data under work/ (extra test sets borrow the main set's other splits)."""
    progress(f"pack {manifest['id']}: rebuilding the prepared data")
    unpack_set(pack, MAIN_SET, work / "prepared")
    sets = {MAIN_SET: work / "prepared"}
    for name in manifest["sets"]:
        if name != MAIN_SET:
            sets[name] = unpack_set(pack, name, work / f"prepared-{name}", share_from=work / "prepared")
    progress(f"data rebuilt: {', '.join(sets)}")
    return sets


def evaluate_sets(
    params: Params, pack: Path, sets: dict[str, Path], work: Path, out: Path, status: dict, progress: Progress
) -> None:
    """Every trained model and the baselines on every set, with the pack's calibration (the
    baselines' and real-vs-real rows carried from the pack when it has them for this profile);
    each result into `status` and a snapshot as it comes."""
    trained = ModelLayout.work_folder(work).final_checkpoints(
        [name for name, m in status["models"].items() if m["state"] == "trained"], params.train.stages
    )
    calibration_file = pack / "calibration.json"
    calibration = json.loads(calibration_file.read_text()) if calibration_file.is_file() else None
    manifest = read_manifest(pack)
    for set_name, prepared in sets.items():
        reference = carried_reference(pack, manifest, set_name, status["profile"])
        carried = " (the baselines and real vs real carried from the pack)" if reference else ""
        progress(f"evaluating {', '.join(trained) or 'the baselines only'} on {set_name}{carried}")
        result = evaluate_step(
            params,
            prepared,
            None,
            trained,
            work / "reports" / set_name,
            calibration=calibration,
            run_name="airgap",
            stage_name=f"evaluate-{set_name}",
            pipeline_run=status["pipeline_key"],
            reference=reference,
        )
        status["evaluations"][set_name] = result
        snapshot(work, out, status)


def run(
    pack: str | os.PathLike,
    models: list[str],
    out: str | os.PathLike,
    work: str | os.PathLike | None = None,
    profile: str | None = None,
    cap_minutes: float | None = None,
    parallel: int = 1,
    resume_checkpoints: bool = False,
    seed: int | None = None,
    score_ways: tuple[str, ...] = (),
) -> dict:
    pack, out = Path(pack), Path(out)
    work = Path(work) if work else out.with_name(out.name + ".work")
    manifest = read_manifest(pack)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    progress = Progress(out / PROGRESS)
    params_file = far_params(pack, work, profile, resume_checkpoints, seed, score_ways)
    check_models(params_file, models)
    params = load_params(params_file)
    run_id = f"{manifest['id']}-{time.strftime('%H%M%S')}"
    status = {
        "run_id": run_id,
        "pack_id": manifest["id"],
        # Every model and evaluation of this visit is one pipeline run (one MLflow parent at home).
        "pipeline_key": f"airgap-{run_id}",
        "profile": profile or yaml.safe_load((pack / "params.yaml").read_text()).get("profile"),
        "seed": params.train.seed,
        "models": {},
        "evaluations": {},
        "complete": False,
    }
    sets = rebuild_sets(pack, manifest, work, progress)
    train_models(models, params_file, work, out, cap_minutes, parallel, status, progress)
    evaluate_sets(params, pack, sets, work, out, status, progress)
    status["complete"] = True
    table = summary_table(status)
    with atomic_path(out / SUMMARY) as tmp:
        tmp.write_text(table)
    main_report = work / "reports" / MAIN_SET / "report.html"
    if main_report.is_file():
        with atomic_path(out / REPORT) as tmp:
            tmp.write_bytes(main_report.read_bytes())
    snapshot(work, out, status)
    progress("done")
    print(table)
    return status
