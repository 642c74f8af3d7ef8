"""A local stand-in for the Hugging Face Hub (and ModelScope), for download tests.

It answers the requests huggingface_hub makes for a file, the way the Hub does:

- ``HEAD /{repo}/resolve/{revision}/{file}``: 302 to the CDN with ``X-Repo-Commit``,
  ``X-Linked-Etag`` (the file's SHA-256, as the Hub does for LFS files), ``X-Linked-Size`` and
  ``Location``; a missing file is 404 with ``X-Error-Code: EntryNotFound``.
- ``GET`` of the same path redirects the same way; the CDN (a second port, so another origin,
  which huggingface_hub treats as a CDN) serves the bytes with ``Range`` support (206 with
  ``Content-Range``).
- ModelScope's ``/models/{repo}/resolve/{revision}/{file}`` is served directly with 200.

Misbehaviour is set per test: drop the connection mid-body, end the body early, corrupt a byte,
ignore Range. Every request is logged so tests can check what was asked for (a resume sends
``Range: bytes=N-``). Binds 127.0.0.1 only; nothing here reaches the internet.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"
_RESOLVE = re.compile(r"^/(?:models/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<revision>[^/]+)/(?P<file>[^/?]+)$")


@dataclass
class Behaviour:
    """How the CDN misbehaves. Counters let a fault happen only on the first N transfers."""

    #: Close the connection after this many body bytes (Content-Length still says the full size).
    drop_after: int | None = None
    #: How many transfers drop (None: every one).
    drop_times: int | None = 1
    #: Corrupt the byte at this offset of the file.
    corrupt_at: int | None = None
    #: Answer every Range request with the whole file (200).
    ignore_range: bool = False
    #: HEAD reports this size instead of the real one.
    head_size: int | None = None
    #: Answer every request with this status.
    status: int | None = None
    #: Send this many body bytes, then wait for ``gate`` before the rest (a download in progress).
    pause_after: int | None = None
    gate: threading.Event = field(default_factory=threading.Event)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class HubState:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    behaviour: Behaviour = field(default_factory=Behaviour)
    requests: list[Request] = field(default_factory=list)
    drops: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    cdn_url: str = ""

    def add(self, repo: str, file: str, data: bytes) -> str:
        self.files[(repo, file)] = data
        return hashlib.sha256(data).hexdigest()

    def transfers(self) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and r.path.startswith(("/cdn/", "/models/"))]


def _handler(state: HubState, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (quiet test output)
            pass

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(head=True)

        def do_GET(self) -> None:  # noqa: N802
            self._answer(head=False)

        def _answer(self, head: bool) -> None:
            with state.lock:
                state.requests.append(Request(self.command, self.path, self.headers.get("Range"),
                                              self.headers.get("Authorization")))
            b = state.behaviour
            if b.status is not None:
                return self._empty(b.status)
            if cdn:
                return self._serve_cdn(head)
            match = _RESOLVE.match(self.path)
            data = state.files.get((match["repo"], match["file"])) if match else None
            if data is None:
                return self._empty(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
            if self.path.startswith("/models/"):  # ModelScope: the file itself, no redirect
                return self._send_bytes(data, head)
            digest = hashlib.sha256(data).hexdigest()
            self._empty(302, {
                "Location": f"{state.cdn_url}/cdn/{match['repo']}/{match['file']}",
                "X-Repo-Commit": COMMIT,
                "X-Linked-Etag": f'"{digest}"',
                "ETag": '"0000000000000000000000000000000000000000"',
                "X-Linked-Size": str(b.head_size if b.head_size is not None else len(data)),
            })

        def _serve_cdn(self, head: bool) -> None:
            parts = self.path.split("/", 4)  # '', 'cdn', owner, name, file
            data = state.files.get((f"{parts[2]}/{parts[3]}", parts[4])) if len(parts) == 5 else None
            if data is None:
                return self._empty(404)
            self._send_bytes(data, head)

        def _send_bytes(self, data: bytes, head: bool) -> None:
            b = state.behaviour
            if b.corrupt_at is not None and b.corrupt_at < len(data):
                data = data[:b.corrupt_at] + bytes([data[b.corrupt_at] ^ 0xFF]) + data[b.corrupt_at + 1:]
            start = 0
            wanted = self.headers.get("Range")
            status = 200
            headers = {"Accept-Ranges": "bytes", "ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
            if wanted and not b.ignore_range:
                start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))  # type: ignore[union-attr]
                if start >= len(data):
                    return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if head:
                return
            if b.pause_after is not None and not b.gate.is_set() and b.pause_after < len(body):
                self.wfile.write(body[:b.pause_after])
                self.wfile.flush()
                b.gate.wait(timeout=120)  # only a hung test waits this long
                body = body[b.pause_after:]
            cut = self._drop_point(len(body))
            if cut is None:
                self.wfile.write(body)
                return
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)

        def _drop_point(self, length: int) -> int | None:
            b = state.behaviour
            if b.drop_after is None:
                return None
            with state.lock:
                if b.drop_times is not None and state.drops >= b.drop_times:
                    return None
                state.drops += 1
            return min(b.drop_after, length)

        def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


class LocalHub:
    """The Hub on one port and its CDN on another, each in a daemon thread."""

    def __init__(self) -> None:
        self.state = HubState()
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, cdn=False))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state, cdn=True))
        self._hub.daemon_threads = self._cdn.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.state.cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"
        self._threads = [threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
                         for s in (self._hub, self._cdn)]

    def __enter__(self) -> "LocalHub":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()


def closed_port_url() -> str:
    """A 127.0.0.1 URL nothing listens on (connection refused)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@dataclass
class ModelHub:
    """A LocalHub, a catalog of the files it serves, and an empty models folder, all wired
    through the environment (HF_ENDPOINT, RWKV_TUI_MODELSCOPE_ENDPOINT, RWKV_TUI_CATALOG,
    RWKV_TUI_MODELS_DIR) the way a user would point rwkv-tui at a mirror."""

    server: LocalHub
    catalog_path: Path
    models_dir: Path
    entries: list[dict] = field(default_factory=list)

    @property
    def state(self) -> HubState:
        return self.server.state

    def publish(self, name: str, data: bytes, *, kind: str = "chat", repo: str = "tester/rwkv7-test",
                file: str | None = None, with_sha256: bool = True, modelscope: bool = True,
                aliases: tuple[str, ...] = (), catalog_size: int | None = None) -> dict:
        """Serve ``data`` and list it in the catalog (as the real catalog would describe it)."""
        file = file or f"{name}.pth"
        digest = self.state.add(repo, file, data)
        entry = {
            "name": name, "aliases": list(aliases), "kind": kind, "architecture": "rwkv7",
            "description": f"test model {name}", "file": file,
            "size": catalog_size if catalog_size is not None else len(data),
            "sha256": digest if with_sha256 else None, "file_dtype": "fp32",
            "huggingface": {"repo": repo, "revision": "main"},
            "modelscope": {"repo": repo, "revision": "master"} if modelscope else None,
        }
        self.entries.append(entry)
        self.write_catalog()
        return entry

    def write_catalog(self) -> None:
        self.catalog_path.write_text(json.dumps({"format": 1, "source": {}, "notes": [], "models": self.entries}))


@pytest.fixture
def model_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelHub]:
    with LocalHub() as server:
        hub = ModelHub(server, tmp_path / "catalog.json", tmp_path / "models")
        hub.write_catalog()
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("RWKV_TUI_MODELSCOPE_ENDPOINT", server.url)
        monkeypatch.setenv("RWKV_TUI_CATALOG", str(hub.catalog_path))
        monkeypatch.setenv("RWKV_TUI_MODELS_DIR", str(hub.models_dir))
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        try:
            yield hub
        finally:
            hub.state.behaviour.gate.set()  # no server thread left waiting


def tiny_checkpoint_bytes(tmp_path: Path, seed: int = 0, vocab: int = 256) -> bytes:
    """A real (2-layer, 128-wide) random RWKV-7 checkpoint, so a download can be loaded too."""
    from engine.synthetic import random_state_dict, save_checkpoint

    path = save_checkpoint(random_state_dict(2, 128, vocab, seed=seed), tmp_path / f"source-{seed}.pth")
    return path.read_bytes()
