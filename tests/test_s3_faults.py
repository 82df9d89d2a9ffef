"""What happens when object storage fails: a real S3 server (SeaweedFS) behind a loopback proxy
that answers chosen requests with S3 errors, drops its listener when the server is killed, or
adds crafted keys to a listing. Nothing may be lost, and nothing written outside the data folder."""

from __future__ import annotations

import dataclasses
import hashlib
import http.client
import json
import os
import subprocess
import sys
import threading
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pandas as pd
import pytest
import yaml
from test_dvc_pipeline import _project_copy, _run

from conftest import WeedServer, s3_client
from facectx.data.ingest import ingest
from facectx.data.sources import SourceUnavailable
from facectx.training.remote_state import RemoteResumeState

# Headers of one connection, not of the request (Content-Length is set anew for each hop).
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "content-length"}


@dataclass
class Fault:
    """Answer `times` requests whose method matches and whose decoded path contains `path_part`."""

    method: str
    path_part: str
    status: int  # 500 InternalError, 503 ServiceUnavailable or SlowDown
    code: str
    times: int


class S3Proxy(ThreadingHTTPServer):
    """Forwards S3 requests to a real server on loopback, byte for byte (the Host header too, so
    SigV4 signatures still match), except where a Fault says otherwise."""

    daemon_threads = True

    def __init__(self, upstream_port: int):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)  # the port is picked as it is bound: no gap
        self.upstream_port = upstream_port
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, int | None]] = []  # method, decoded path and query, status
        self.before_forward = None  # called with (method, path) before a request goes upstream
        self.extra_listing_keys: list[str] = []  # keys added to every ListObjectsV2 answer
        self._lock = threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        """Close the listener: new connections are refused, as by a dead server."""
        self.shutdown()
        self.server_close()

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.times > 0 and fault.method == method and fault.path_part in path:
                    fault.times -= 1
                    return fault
        return None

    def record(self, method: str, path: str, status: int | None) -> None:
        with self._lock:
            self.log.append((method, path, status))

    def gets(self, path_part: str) -> int:
        return sum(1 for method, path, _ in self.log if method == "GET" and path_part in path)


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as S3 clients use it

    def log_message(self, *args):
        pass

    def _handle(self):
        proxy: S3Proxy = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = urllib.parse.unquote(self.path)
        if fault := proxy.take_fault(self.command, path):
            proxy.record(self.command, path, fault.status)
            key = urllib.parse.urlsplit(path).path
            error = (
                f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{fault.code}</Code>'
                f"<Message>injected by the test proxy</Message><Resource>{key}</Resource>"
                "<RequestId>proxy</RequestId></Error>"
            ).encode()
            return self._reply(fault.status, [("Content-Type", "application/xml")], error)
        if proxy.before_forward:
            proxy.before_forward(self.command, path)
        try:
            upstream = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=60)
            upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for name, value in self.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    upstream.putheader(name, value)
            upstream.putheader("Content-Length", str(len(body)))
            upstream.endheaders(body)
            response = upstream.getresponse()
            data = response.read()
            upstream.close()
        except OSError:  # the server is gone: drop the client's connection too
            proxy.record(self.command, path, None)
            self.close_connection = True
            return
        proxy.record(self.command, path, response.status)
        if self.command == "GET" and "list-type=2" in self.path and proxy.extra_listing_keys:
            data = _add_listing_keys(data, proxy.extra_listing_keys)
        headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
        if self.command == "HEAD":  # the object's length, no body
            headers.append(("Content-Length", response.getheader("Content-Length", "0")))
            data = None
        self._reply(response.status, headers, data)

    def _reply(self, status: int, headers, data: bytes | None) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if data is not None:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle


def _add_listing_keys(xml: bytes, keys: list[str]) -> bytes:
    """Keys SeaweedFS refuses to store ('..', NUL) or normalises ('//'), but a listing from
    another S3 server may hold: URL-encoded, as the client asked (encoding-type=url)."""
    entries = "".join(
        f"<Contents><Key>{urllib.parse.quote(key, safe='/')}</Key><ETag>&#34;{'0' * 32}&#34;</ETag>"
        "<Size>1</Size><StorageClass>STANDARD</StorageClass>"
        "<LastModified>2026-01-01T00:00:00Z</LastModified></Contents>"
        for key in keys
    )
    assert b"<EncodingType>url</EncodingType>" in xml
    return xml.replace(b"</ListBucketResult>", entries.encode() + b"</ListBucketResult>")


@pytest.fixture
def proxy(s3_env, monkeypatch):
    """The session's S3 server behind a fault-injecting proxy; boto3 in this process goes through it."""
    server = S3Proxy(int(urllib.parse.urlsplit(s3_env["AWS_ENDPOINT_URL"]).port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.url)
    yield server
    server.stop()


def _upload(s3_env, bucket: str, prefix: str, source: Path) -> list[str]:
    """The sample photos at s3://bucket/prefix/images/<identity>/<photo>; their relative paths."""
    client = boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"])
    client.create_bucket(Bucket=bucket)
    photos = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.jpg"))
    for rel in photos:
        client.upload_file(str(source / rel), bucket, f"{prefix}/images/{rel}")
    return photos


def _config(params, source: str, **changes):
    return dataclasses.replace(params.ingest, source=source, **changes)


def _assert_whole_copies(raw: Path, source: Path, photos: list[str]) -> None:
    manifest = pd.read_parquet(raw / "manifest.parquet")
    assert list(manifest.relative_path) == photos
    for row in manifest.itertuples():
        data = (raw / "images" / row.relative_path).read_bytes()
        assert data == (source / row.relative_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row.sha256


def test_ingest_retries_server_errors_and_throttling(proxy, s3_env, sample_source, tmp_path, params):
    photos = _upload(s3_env, "facectx-retry", "faults", sample_source)
    proxy.faults = [
        Fault("GET", "list-type=2", 503, "SlowDown", 1),
        Fault("GET", photos[0], 503, "ServiceUnavailable", 2),
        Fault("GET", photos[3], 500, "InternalError", 2),
        Fault("GET", photos[5], 503, "SlowDown", 2),
    ]
    summary = ingest(_config(params, "s3://facectx-retry/faults/images", max_attempts=3), tmp_path / "raw")

    assert summary["new"] == len(photos) and summary["quarantined"] == 0
    _assert_whole_copies(tmp_path / "raw", sample_source, photos)
    assert all(fault.times == 0 for fault in proxy.faults)  # every fault was met, then retried
    assert proxy.gets("list-type=2") == 2
    assert [proxy.gets(photos[i]) for i in (0, 1, 3, 5)] == [3, 1, 3, 3]


def test_ingest_past_the_retries_names_the_key_keeps_its_copies_and_a_rerun_continues(
    proxy, s3_env, sample_source, tmp_path, params
):
    photos = _upload(s3_env, "facectx-stop", "faults", sample_source)
    config = _config(params, "s3://facectx-stop/faults/images", max_attempts=2, download_workers=1)
    raw = tmp_path / "raw"
    proxy.faults = [Fault("GET", "list-type=2", 500, "InternalError", 2)]
    with pytest.raises(SourceUnavailable, match="listing s3://facectx-stop/faults/images/ failed after 2 attempts"):
        ingest(config, raw)
    assert not raw.exists()

    failing = photos[6]
    proxy.faults = [Fault("GET", failing, 503, "SlowDown", 1000)]
    with pytest.raises(
        SourceUnavailable, match=f"s3://facectx-stop/faults/images/{failing}.*after 2 attempts.*SlowDown"
    ):
        ingest(config, raw)
    assert proxy.gets(failing) == 2, "\n".join(map(str, proxy.log))  # max_attempts, the first try included

    # What was copied is kept and recorded; the failing photo is not quarantined, only not yet here.
    partial = pd.read_parquet(raw / "manifest.parquet")
    assert set(photos[:6]) <= set(partial.relative_path) and failing not in set(partial.relative_path)
    _assert_whole_copies(raw, sample_source, sorted(partial.relative_path))
    assert not (raw / "images" / failing).exists()

    # The server recovers: the re-run downloads only what the stopped run had not copied.
    proxy.faults, proxy.log = [], []
    summary = ingest(config, raw)
    missing = [p for p in photos if p not in set(partial.relative_path)]
    assert [
        path for method, path, _ in proxy.log if method == "GET" and "list-type" not in path and path.endswith(".jpg")
    ] == [f"/facectx-stop/faults/images/{p}" for p in missing]
    assert (summary["new"], summary["unchanged"], summary["quarantined"]) == (len(missing), len(partial), 0)
    _assert_whole_copies(raw, sample_source, photos)


def test_unsafe_keys_in_a_listing_are_rejected_and_nothing_is_written_outside(
    proxy, s3_env, sample_source, tmp_path, params
):
    photos = _upload(s3_env, "facectx-unsafe", "unsafe", sample_source)
    # SeaweedFS refuses keys with '..' or NUL and turns '//' into '/', so the proxy adds them to
    # the real listing, as another S3 server (AWS S3 itself stores any key) could list them.
    prefix = "unsafe/images/"
    unsafe = {
        f"{prefix}../../../escape.jpg": "'..'",
        f"{prefix}Some_Person/../../../../tmp/escape.jpg": "'..'",
        f"{prefix}{tmp_path}/absolute.jpg": "absolute path",
        f"{prefix}Some_Person/nul\x00.jpg": "control character",
        f"{prefix}Some_Person/..\\..\\escape.jpg": "backslash",
        f"{prefix}Some_Person/./dot.jpg": "'.'",
        "unsafe/elsewhere/escape.jpg": "outside the listed prefix",
    }
    proxy.extra_listing_keys = list(unsafe)
    work = tmp_path / "work"
    work.mkdir()
    before = set(tmp_path.rglob("*"))

    summary = ingest(_config(params, f"s3://facectx-unsafe/{prefix}"), work / "raw")
    assert summary["new"] == len(photos) and summary["quarantined"] == len(unsafe)
    quarantine = pd.read_parquet(work / "raw" / "quarantine.parquet")
    for key, reason in unsafe.items():
        row = quarantine[quarantine.source_uri == f"s3://facectx-unsafe/{key}".replace("\x00", "\\x00")]
        assert len(row) == 1 and reason in row.reason.iloc[0], (key, quarantine.to_dict("records"))
    # Refused at the listing: never downloaded, never written.
    assert proxy.gets("escape") == proxy.gets("absolute") == proxy.gets("dot.jpg") == proxy.gets("nul") == 0
    written = set(tmp_path.rglob("*")) - before
    assert all(path.is_relative_to(work / "raw") for path in written), sorted(written)
    images = {
        p.relative_to(work / "raw" / "images").as_posix() for p in (work / "raw" / "images").rglob("*") if p.is_file()
    }
    assert images == set(photos)


def _dvc_env(server: WeedServer) -> dict:
    """DVC's environment: credentials only; the endpoint comes from .dvc/config.local."""
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLFLOW_TRACKING_URI"))}
    env.update({k: v for k, v in server.env.items() if k != "AWS_ENDPOINT_URL"})
    env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return env


def test_dvc_push_interrupted_by_a_killed_server_completes_after_a_restart(sample_source, tmp_path):
    # A server of its own (killing the session's would break other tests), in front of it a proxy
    # that kills it at the 12th upload and closes its own listener: from then on, connection refused.
    server = WeedServer(tmp_path / "weed")
    server.start()
    proxy = S3Proxy(server.s3_port)
    try:
        s3_client(server.env).create_bucket(Bucket="facectx-dvc")
        project = _project_copy(tmp_path)
        params = yaml.safe_load((project / "params.yaml").read_text())
        params["ingest"]["source"] = str(sample_source)
        (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        env = _dvc_env(server)
        dvc = str(Path(sys.executable).parent / "dvc")
        _run([dvc, "repro", "ingest"], project, env)  # the raw photos and their manifest: ~20 objects
        _run([dvc, "remote", "add", "-d", "s3", "s3://facectx-dvc/facectx"], project, env)
        _run([dvc, "remote", "modify", "--local", "s3", "endpointurl", proxy.url], project, env)

        uploads = []

        def kill_at_the_12th_upload(method, path):
            if method == "PUT" and len(uploads) < 12:
                uploads.append(path)
                if len(uploads) == 12:
                    server.kill()
                    threading.Thread(target=proxy.stop).start()

        proxy.before_forward = kill_at_the_12th_upload
        # Two attempts per request (AWS_MAX_ATTEMPTS, read by botocore under s3fs): the default
        # retries would only spend ~20 s waiting for a server that is gone.
        failed = subprocess.run(
            [dvc, "push", "--jobs", "4", "ingest"],
            cwd=project,
            env={**env, "AWS_MAX_ATTEMPTS": "2"},
            capture_output=True,
            text=True,
            timeout=300,
        )
        message = failed.stdout + failed.stderr
        assert failed.returncode != 0, message
        assert "failed to push data to the cloud" in message and "Could not connect to the endpoint URL" in message, (
            message
        )
        assert len(uploads) == 12

        # Four uploads at a time: the ones in flight at the kill were cut off, at least 8 completed.
        completed = sum(1 for method, _, status in proxy.log if method == "PUT" and status == 200)
        assert completed >= 8
        server.start()  # same data folder, same ports
        # The proxy comes back on a port picked now: its old one was free for the whole failed
        # push, long enough for any other server to take it. DVC is pointed at the new address.
        proxy = S3Proxy(server.s3_port)
        _run([dvc, "remote", "modify", "--local", "s3", "endpointurl", proxy.url], project, env)
        pushed = _run([dvc, "push", "ingest"], project, env)  # the stage's outputs (dvc.lock names them all)
        assert "in sync" in _run([dvc, "status", "-c", "ingest"], project, env)
        # Every object whole: its content hashes to its key (DVC 3 keys objects by MD5), and the
        # remote holds exactly the cache's objects.
        client = s3_client(server.env)
        remote = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="facectx-dvc", Prefix="facectx/"):
            for item in page.get("Contents", []):
                data = client.get_object(Bucket="facectx-dvc", Key=item["Key"])["Body"].read()
                remote[item["Key"].removeprefix("facectx/")] = data
        cache = project / ".dvc" / "cache"
        local = {
            p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file() and p.parent.parent.name == "md5"
        }
        assert set(remote) == local and len(local) > 12
        assert f"{len(local) - completed} files pushed" in pushed  # what was uploaded before the kill is kept
        for name, data in remote.items():
            digest = name.removeprefix("files/md5/").replace("/", "").removesuffix(".dir")
            assert hashlib.md5(data).hexdigest() == digest, name
    finally:
        proxy.stop()
        server.kill()


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def _resume_folder(path: Path, step: int) -> dict[str, str]:
    """A saved resume state (a weights file large enough to go up in parts, and meta.json); the
    digest of each file."""
    path.mkdir(parents=True)
    files = {
        "model.safetensors": os.urandom(9 * 2**20 + step),
        "optimizer.pt": os.urandom(3000 + step),
        "meta.json": json.dumps({"step": step}).encode(),
    }
    for name, data in files.items():
        (path / name).write_bytes(data)
    return _digests(path)


def _pulled(uri: str, local: Path, max_attempts: int = 1) -> dict[str, str]:
    RemoteResumeState(uri, local, max_attempts).pull()
    return _digests(local)


def test_resume_state_retries_never_takes_a_half_pushed_state_and_reads_credentials_now(
    proxy, s3_env, tmp_path, monkeypatch
):
    s3_client(s3_env).create_bucket(Bucket="facectx-resume")
    uri = "s3://facectx-resume/run-1/cascade/stage_8"
    state = RemoteResumeState(uri, tmp_path / "resume", max_attempts=3)

    # Server errors and throttling, each met twice, then the third attempt goes through.
    proxy.faults = [
        Fault("PUT", "step_000000001/model.safetensors", 503, "SlowDown", 2),
        Fault("PUT", "stage_8/latest.json", 503, "ServiceUnavailable", 2),
        Fault("GET", "stage_8/latest.json", 500, "InternalError", 2),
        Fault("GET", "step_000000001/optimizer.pt", 503, "SlowDown", 2),
    ]
    first = _resume_folder(tmp_path / "save_1", 1)
    state.push(tmp_path / "save_1")
    assert _pulled(uri, tmp_path / "pod_a", max_attempts=3) == first
    assert all(fault.times == 0 for fault in proxy.faults)

    # A push that cannot finish (an upload fails past the retries, as when the pod is killed
    # mid-upload): the state it leaves is never taken for a whole one; the previous one is.
    proxy.faults = [Fault("PUT", "step_000000002/optimizer.pt", 503, "SlowDown", 1000)]
    _resume_folder(tmp_path / "save_2", 2)
    with pytest.raises(OSError):
        state.push(tmp_path / "save_2")
    tried = [s for m, path, s in proxy.log if m == "PUT" and "step_000000002/optimizer.pt" in path]
    assert tried == [503] * 3, tried  # max_attempts, the first included
    assert _pulled(uri, tmp_path / "pod_b") == first

    # Credentials are the environment's when the state is opened, not an earlier client's.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-key")
    with pytest.raises(PermissionError):
        RemoteResumeState(uri, tmp_path / "pod_c", max_attempts=1).pull()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_env["AWS_SECRET_ACCESS_KEY"])

    proxy.faults = []
    third = _resume_folder(tmp_path / "save_3", 3)
    state.push(tmp_path / "save_3")
    assert _pulled(uri, tmp_path / "pod_b") == third  # a newer state replaces an older local one
    listed = s3_client(s3_env).list_objects_v2(Bucket="facectx-resume", Prefix="run-1/")
    assert {item["Key"].split("/")[3] for item in listed["Contents"]} == {"latest.json", "step_000000003"}
    state.clear()
    assert "Contents" not in s3_client(s3_env).list_objects_v2(Bucket="facectx-resume", Prefix="run-1/")
    assert RemoteResumeState(uri, tmp_path / "pod_d").pull() is None
