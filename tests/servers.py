"""Real servers on free loopback ports for tests: a throwaway PostgreSQL and an `mlflow server`
backed by it (and by an S3 bucket). Plain classes, no pytest: fixtures in conftest.py wrap them,
and fault tests stop, kill and restart them. Every process runs in a session of its own, so
stopping one ends its children too; nothing is left running after stop()/remove()."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port(neighbour: int = 0) -> int:
    """A loopback TCP port that nobody holds at this moment, for a server started right now.

    The one free-port helper of the tests. The port is free only *now*: once this returns, the
    kernel may hand it to the next bind of any process (a server of another test, another test
    session on the machine). So call it right before starting the server that takes it -- never
    at import, in `parametrize` (collection time) or in a fixture set up long before the server
    starts. A CI run failed once that way: a port picked at collection was, twenty minutes later, a
    test server's, and a call meant to be refused got a 404. A port that must refuse connections
    is `refusing_port()`, not this.

    `neighbour`: the port `neighbour` above must be free too (weed's gRPC port is its port + 10000).
    """
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if not neighbour:
                return port
            if port + neighbour < 65536:
                with socket.socket() as other:
                    try:
                        other.bind(("127.0.0.1", port + neighbour))
                    except OSError:
                        continue
                    return port


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A loopback port that refuses every connection for as long as the `with` block runs: an
    address where "nothing answers" (a server that is down, an offline machine).

    Not a free port: a merely free port can be taken by any server started meanwhile, and then
    answers (see free_port). Here a socket of ours stays bound to the port without listening:
    Linux answers a connection to a bound, non-listening TCP port with a reset (ECONNREFUSED), and
    while the socket is bound no other socket can bind that port -- ours sets neither SO_REUSEADDR
    nor SO_REUSEPORT, and both sockets would need them -- nor will the kernel pick it as another
    socket's port (so not even a connection to itself can answer). Use the port inside the block
    only; it is released when the block ends.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        with socket.socket() as probe:  # what the block relies on, checked once
            assert probe.connect_ex(("127.0.0.1", port)) == errno.ECONNREFUSED, port
        yield port


def end_session(process: subprocess.Popen | None, sig: int, timeout: float = 30) -> None:
    """Signal a process's whole session; SIGKILL it if it has not ended within `timeout`."""
    if process is None:
        return
    if process.poll() is None:
        os.killpg(process.pid, sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _postgres_bindir() -> Path:
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if not initdb:
        raise RuntimeError("PostgreSQL's server binaries (initdb) are not installed: bash scripts/install-test-deps.sh")
    return Path(os.path.realpath(initdb)).parent


class Postgres:
    """A throwaway PostgreSQL on 127.0.0.1 with database and user `mlflow` and a random password.

    Its port is picked by the first start() (free_port, right before the server takes it); the
    data folder and port are kept across stop()/kill() and start(), as a restarted database server
    keeps them; remove() stops it and deletes the folder.
    """

    def __init__(self):
        self.bindir = _postgres_bindir()
        try:
            import psycopg2  # noqa: F401 - the MLflow server's driver
        except ImportError:
            raise RuntimeError("psycopg2 is not installed: pip install -e '.[dev]'") from None
        self.password = secrets.token_urlsafe(16)
        self.port: int | None = None  # picked by the first start()
        # Not under pytest's tmp_path: its root is private to this user, and PostgreSQL refuses to run
        # as root, so as root the server runs as the postgres user in a folder of its own.
        self.folder = Path(tempfile.mkdtemp(prefix="facectx-pg-"))
        (self.folder / "pw").write_text(self.password)
        self.as_postgres = []
        if os.getuid() == 0:
            for path in (self.folder, self.folder / "pw"):
                shutil.chown(path, "postgres", "postgres")
            self.as_postgres = ["runuser", "-u", "postgres", "--"]
        self.process: subprocess.Popen | None = None
        self._created = False

    @property
    def uri(self) -> str:
        """The SQLAlchemy URI without the password (libpq reads PGPASSWORD, as the deployment does)."""
        if self.port is None:
            raise RuntimeError("PostgreSQL has no address before its first start()")
        return f"postgresql+psycopg2://mlflow@127.0.0.1:{self.port}/mlflow"

    def query(self, sql: str, args: tuple = ()) -> list[tuple]:
        """The rows of one SQL query, on a connection of its own (closed again)."""
        import psycopg2

        connection = psycopg2.connect(
            host="127.0.0.1", port=self.port, user="mlflow", password=self.password, dbname="mlflow"
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(sql, args)
                return cursor.fetchall()
        finally:
            connection.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 60) -> None:
        if self.port is None:
            self.port = free_port()
        data = self.folder / "data"
        if not data.is_dir():
            result = subprocess.run(
                [
                    *self.as_postgres,
                    str(self.bindir / "initdb"),
                    "-D",
                    str(data),
                    "--username=mlflow",
                    f"--pwfile={self.folder / 'pw'}",
                    "--auth=scram-sha-256",
                ],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode:
                raise RuntimeError(f"initdb failed in {data}: {result.stderr[-2000:]}")
        # fsync off: a test database need not survive a power cut, and fsyncs cost seconds here.
        self.process = subprocess.Popen(
            [
                *self.as_postgres,
                str(self.bindir / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.port),
                "-k",
                str(self.folder),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.time() + timeout
        while subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)], capture_output=True
        ).returncode:
            if self.process.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"PostgreSQL did not start on port {self.port} (data in {data})")
            time.sleep(0.2)
        if not self._created:
            subprocess.run(
                [str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "mlflow", "mlflow"],
                env={**os.environ, "PGPASSWORD": self.password},
                check=True,
                capture_output=True,
                timeout=60,
            )
            self._created = True

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open connections are cut, as a database restart cuts them.
        (SIGTERM, a "smart" shutdown, would wait for the MLflow server's pooled connections.)"""
        end_session(self.process, signal.SIGINT)

    def kill(self) -> None:
        end_session(self.process, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def http_status(url: str, host: str | None = None, timeout: float = 10) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


class MlflowServer:
    """`mlflow server` on a free loopback port, with its runs in `backend_uri` (PostgreSQL) and its
    artifacts proxied to `artifacts_destination` (an s3:// bucket). `env` holds what the server
    needs to reach them (PGPASSWORD, AWS_*, MLFLOW_S3_ENDPOINT_URL). Its port is picked by the first
    start() (free_port, right before the server takes it) and kept across stop()/kill() and
    start(), as a restarted server keeps its address."""

    ALLOWED_HOSTS = "127.0.0.1,127.0.0.1:*,localhost,localhost:*"

    def __init__(self, backend_uri: str, artifacts_destination: str, env: dict[str, str], folder: Path):
        self.backend_uri, self.artifacts_destination = backend_uri, artifacts_destination
        self.env, self.folder = dict(env), Path(folder)
        self.port: int | None = None  # picked by the first start()
        self.log_file = self.folder / "mlflow-server.log"
        self.process: subprocess.Popen | None = None
        # What a fixture may attach for tests to look behind the server: its database and bucket.
        self.postgres: Postgres | None = None
        self.bucket: str | None = None
        self.s3_env: dict[str, str] = {}

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the MLflow server has no address before its first start()")
        return f"http://127.0.0.1:{self.port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self, timeout: float = 180) -> None:
        """Start and wait until /health answers (the first start creates the schema: ~15 s here)."""
        if self.port is None:
            self.port = free_port()
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        env.pop("MLFLOW_TRACKING_URI", None)  # a test's own URI must not leak into the server
        command = [
            str(BIN / "mlflow"),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend-store-uri",
            self.backend_uri,
            "--artifacts-destination",
            self.artifacts_destination,
            "--allowed-hosts",
            self.ALLOWED_HOSTS,
            "--workers",
            "1",
        ]
        with open(self.log_file, "ab") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command, env=env, cwd=self.folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + timeout
        while True:
            try:
                if http_status(f"{self.url}/health", timeout=2) == 200:
                    return
            except OSError:
                pass
            if self.process.poll() is not None or time.time() > deadline:
                self.kill()
                raise RuntimeError(f"mlflow server did not start on {self.url}:\n{self.log_file.read_text()[-3000:]}")
            time.sleep(0.3)

    def stop(self) -> None:
        end_session(self.process, signal.SIGTERM, timeout=20)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would."""
        end_session(self.process, signal.SIGKILL)
