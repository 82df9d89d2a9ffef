"""`facectx airgap import RESULTS` at home: a far run's archive into MLflow and reports/.

The far run appears in MLflow as one pipeline run with a nested run per model (its stages nested
under it) and per evaluation, as if it had run here; each test set's evaluation lands where
`facectx evaluate` writes it (reports/evaluation for the main set, reports/evaluation-<set> for
the others), so DVC plots and the registry gate read it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path, PurePosixPath

from facectx import tracking
from facectx.airgap.format import MAIN_SET, PackError
from facectx.airgap.run import summary_table

log = logging.getLogger(__name__)


def _extract(archive_path: Path, into: Path) -> None:
    """Extract a results archive, refusing a truncated or damaged one and any member that is not a
    plain file or folder inside the archive."""
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            members = archive.getmembers()  # reads to the end: a truncated archive fails here
            for member in members:
                path = PurePosixPath(member.name)
                if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
                    raise PackError(
                        f"{archive_path}: refusing member {member.name!r} (not a plain file inside the archive)"
                    )
            for member in members:
                if member.isfile():
                    target = into / member.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with archive.extractfile(member) as source, open(target, "wb") as out:
                        shutil.copyfileobj(source, out)
    except (tarfile.TarError, EOFError, zlib.error) as err:
        raise PackError(
            f"{archive_path} is truncated or damaged ({type(err).__name__}: {err}); "
            f"copy results.tar.gz from the far machine again"
        ) from None


def _replace_folder(source: Path, target: Path) -> None:
    """target <- a copy of source, swapped in only when the copy is whole."""
    staging = target.with_name(f".{target.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def report_folder(reports_dir: Path, set_name: str) -> Path:
    return reports_dir / ("evaluation" if set_name == MAIN_SET else f"evaluation-{set_name}")


def import_results(
    archive_path: str | os.PathLike, pack: str | os.PathLike | None = None, reports_dir: str | os.PathLike = "reports"
) -> dict:
    archive_path, reports_dir = Path(archive_path), Path(reports_dir)
    if not archive_path.is_file():
        raise PackError(f"{archive_path}: no such results archive")
    with tempfile.TemporaryDirectory(prefix="facectx-airgap-import-") as temp:
        work = Path(temp)
        _extract(archive_path, work)
        if not (work / "results.json").is_file():
            raise PackError(f"{archive_path} has no results.json: not a facectx airgap results archive")
        status = json.loads((work / "results.json").read_text())
        if pack is not None:
            manifest_file = Path(pack) / "pack.json"
            if not manifest_file.is_file():
                raise PackError(f"{pack} is not a facectx pack (no pack.json)")
            pack_id = json.loads(manifest_file.read_text())["id"]
            if status["pack_id"] != pack_id:
                raise PackError(f"{archive_path} comes from pack {status['pack_id']}, not from {pack} ({pack_id})")
        if not status.get("complete"):
            log.warning(
                "%s holds partial results (the far run stopped before it finished): importing what it has", archive_path
            )
        imported = tracking.import_folder_runs(
            work / "runs",
            status["pipeline_key"],
            {
                "facectx.airgap.run": status["run_id"],
                "facectx.airgap.pack": status["pack_id"],
                "facectx.airgap.complete": str(status.get("complete", False)),
            },
        )
        written = []
        for set_name in status["evaluations"]:
            target = report_folder(reports_dir, set_name)
            _replace_folder(work / "reports" / set_name, target)
            written.append(str(target))
    table = summary_table(status)
    print(table)
    return {
        "mlflow_parent_run": imported["parent"],
        "mlflow_runs": imported["runs"],
        "reports": written,
        "complete": status.get("complete", False),
        "status": status,
        "table": table,
    }
