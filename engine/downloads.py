"""Downloading catalog models: resumable, verified, never a half-written file under the real name.

The file is fetched with ``huggingface_hub``'s HTTP helpers (the URL of ``hf_hub_url``, the
configured client of ``get_session``, its offline switch and timeouts) into
``<file>.partial`` beside its final place. A later pull resumes from there with an HTTP Range
request. Only when the whole file is in and its size and SHA-256 match the catalog (or, without a
catalog digest, the Hub's LFS ETag) is it renamed to its final name, so the name always means
"complete and verified".

Sources: Hugging Face (``HF_ENDPOINT`` selects a mirror such as hf-mirror.com) and ModelScope
(``RWKV_TUI_MODELSCOPE_ENDPOINT`` overrides https://modelscope.cn). ``HF_HUB_OFFLINE`` stops every
download. No token is ever sent: the official models are public.

Each failure is one :class:`DownloadError` line: no network, not found, disk full, interrupted,
checksum mismatch.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Literal
from urllib.parse import urljoin, urlparse

from engine.catalog import (
    SOURCES, CatalogEntry, Source, is_downloaded, local_path, models_dir, partial_path,
)
from engine.errors import EngineError
from engine.units import human_bytes

#: Seconds to wait before each new attempt after one that brought no new bytes; when these run
#: out the download stops (resumable). An attempt that made progress is retried at once.
RETRY_DELAYS: tuple[float, ...] = (1.0, 3.0, 9.0)
#: Bytes read per step when re-hashing a partial file.
CHUNK = 8 << 20
#: At most this many progress reports a second.
REPORTS_PER_SECOND = 10.0
DEFAULT_ENDPOINTS = {"huggingface": "https://huggingface.co", "modelscope": "https://modelscope.cn"}
SOURCE_LABELS = {"huggingface": "Hugging Face", "modelscope": "ModelScope"}

_SHA256 = re.compile(r"[0-9a-f]{64}")
_MAX_REDIRECTS = 5
#: Statuses a CDN returns when busy: retried like a dropped connection.
_TRANSIENT = frozenset({429, 500, 502, 503, 504})
_TRUE = {"1", "ON", "YES", "TRUE"}


class DownloadError(EngineError):
    """A download failed; the message is one line and says what to do."""


class DownloadStopped(DownloadError):
    """The caller asked the download to stop; what arrived is kept for resuming."""


@dataclass(frozen=True)
class Progress:
    """How far a pull is. ``stage`` "checking" re-reads a partial file before resuming it."""

    name: str
    stage: Literal["checking", "downloading", "verifying"]
    done: int
    total: int
    #: Bytes a second over this run's transfer so far (0 before there is a measure).
    speed: float = 0.0

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0


ProgressCallback = Callable[[Progress], None]
StopCheck = Callable[[], bool]


# ---------------------------------------------------------------------------- where from


def endpoint(source: Source) -> str:
    """The server of ``source``, read from the environment at each call (tests and mirrors)."""
    variable = "HF_ENDPOINT" if source == "huggingface" else "RWKV_TUI_MODELSCOPE_ENDPOINT"
    return (os.environ.get(variable) or DEFAULT_ENDPOINTS[source]).rstrip("/")


def source_url(entry: CatalogEntry, source: Source) -> str:
    """The ``…/resolve/<revision>/<file>`` URL of the entry on ``source``."""
    from huggingface_hub import hf_hub_url

    mirror = _mirror(entry, source)
    base = endpoint(source) + ("/models" if source == "modelscope" else "")
    return hf_hub_url(mirror.repo, entry.file, revision=mirror.revision, endpoint=base)


def offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (read now, not when huggingface_hub was imported)."""
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().upper() in _TRUE


def _mirror(entry: CatalogEntry, source: Source):  # noqa: ANN202
    if source not in SOURCES:
        raise DownloadError(f"unknown source {source!r}; use {' or '.join(SOURCES)}")
    mirror = entry.mirror(source)
    if mirror is None:
        others = [s for s in SOURCES if s != source and entry.mirror(s) is not None]  # type: ignore[arg-type]
        hint = f"; use --source {others[0]}" if others else ""
        raise DownloadError(f"the catalog knows no {SOURCE_LABELS[source]} copy of {entry.name}{hint}")
    return mirror


# ---------------------------------------------------------------------------- pull / remove


def pull(
    entry: CatalogEntry,
    source: Source = "huggingface",
    *,
    directory: Path | None = None,
    progress: ProgressCallback | None = None,
    should_stop: StopCheck | None = None,
) -> Path:
    """Download ``entry`` (resuming a partial download) and return its verified file.

    ``progress`` is called from this thread, at most ``REPORTS_PER_SECOND`` times a second;
    ``should_stop`` is polled between chunks and makes the pull raise :class:`DownloadStopped`.
    """
    directory = directory or models_dir()
    final = local_path(entry, directory)
    if is_downloaded(entry, directory):
        return final
    _mirror(entry, source)
    if offline():
        raise DownloadError(f"cannot download {entry.name}: offline mode is on (HF_HUB_OFFLINE is set)")
    stop = should_stop or (lambda: False)
    report = _Reporter(entry, progress)
    url = source_url(entry, source)
    try:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DownloadError(f"cannot create the models folder {directory}: {exc.strerror or exc}") from None
        with _locked_partial(entry, directory) as handle:
            location, etag = _metadata(entry, url)
            digest = entry.sha256 or (etag if source == "huggingface" and etag and _SHA256.fullmatch(etag) else None)
            start = handle.seek(0, os.SEEK_END)
            if start > entry.size:
                start = _restart(handle)
            hasher = _hash_prefix(handle, start, report, stop)
            _check_space(entry, directory, entry.size - start)
            hasher = _transfer(entry, location, handle, start, hasher, report, stop)
            report.verifying(entry.size)
            _verify(entry, directory, handle, hasher, digest)
            handle.flush()
            os.fsync(handle.fileno())
            os.replace(partial_path(entry, directory), final)
    except DownloadError:
        raise
    except Exception as exc:
        explained = _explain(exc, entry, url, directory)
        if explained is None:
            raise
        raise explained from None
    return final


def remove(entry: CatalogEntry, directory: Path | None = None) -> list[Path]:
    """Delete the model's file and any partial download; returns what was deleted."""
    directory = directory or models_dir()
    removed: list[Path] = []
    for path in (local_path(entry, directory), partial_path(entry, directory)):
        if not path.exists():
            continue
        if path == partial_path(entry, directory) and _is_locked(path):
            raise DownloadError(f"{entry.name} is being downloaded right now; stop that download first")
        try:
            path.unlink()
        except OSError as exc:
            raise DownloadError(f"cannot delete {path}: {exc.strerror or exc}") from None
        removed.append(path)
    return removed


# ---------------------------------------------------------------------------- the steps


class _HttpStatus(Exception):
    """An HTTP error status from the server."""

    def __init__(self, status: int, url: str, final: bool = False) -> None:
        super().__init__(f"HTTP {status} from {urlparse(url).netloc}")
        self.status = status
        self.url = url
        #: Not worth retrying (not found, denied...); a busy server (429, 5xx) is retried.
        self.final = final


@contextmanager
def _locked_partial(entry: CatalogEntry, directory: Path) -> Iterator[BinaryIO]:
    """The partial file, opened for appending and locked against a second pull of the same model."""
    path = partial_path(entry, directory)
    handle = open(path, "a+b")  # noqa: SIM115 (closed below, after the rename)
    locked = False
    try:
        locked = _try_lock(handle)
        if not locked:
            raise DownloadError(f"{entry.name} is already being downloaded (by another rwkv-tui?)")
        yield handle
    finally:
        try:
            if locked and path.exists() and handle.seek(0, os.SEEK_END) == 0:
                path.unlink()  # nothing arrived (not found, no network): leave no litter
        except (OSError, ValueError):
            pass
        handle.close()


def _try_lock(handle: BinaryIO) -> bool:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, a second pull of the same file is the user's risk
        return True
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _is_locked(path: Path) -> bool:
    try:
        with open(path, "rb") as probe:
            return not _try_lock(probe)
    except OSError:
        return False


def _metadata(entry: CatalogEntry, url: str) -> tuple[str, str | None]:
    """Where to GET the file (the Hub redirects to its CDN) and its ETag; checks the size first.

    This is the HEAD request ``get_hf_file_metadata`` makes, read the same way (``X-Linked-Size``
    and ``X-Linked-Etag`` on the Hub's redirect, redirects within the Hub followed), made here
    because that function also builds telemetry headers that fetch a registry from
    huggingface.co, which a ModelScope user may not reach. A mirror that does not answer HEAD
    like the Hub (an error other than not found / denied) is just asked for the file: the GET
    and the checksum tell the rest.
    """
    from huggingface_hub import get_session

    session = get_session()
    target = url
    for _ in range(_MAX_REDIRECTS):
        response = session.head(target, headers={"Accept-Encoding": "identity"}, follow_redirects=False,
                                timeout=_timeout())
        location = response.headers.get("Location")
        if not (300 <= response.status_code < 400 and location):
            break
        following = urljoin(target, location)
        if _origin(following) != _origin(target):
            break  # a CDN: the Hub's own answer carries the metadata
        target = following
    if response.status_code >= 400:
        if response.status_code in (401, 403, 404, 410):
            raise _HttpStatus(response.status_code, target)
        return url, None
    redirected = 300 <= response.status_code < 400
    size = _int_or_none(response.headers.get("X-Linked-Size")
                        or (None if redirected else response.headers.get("Content-Length")))
    etag = _normalize_etag(response.headers.get("X-Linked-Etag") or response.headers.get("ETag"))
    host = urlparse(url).netloc
    if size is not None and size != entry.size:
        raise DownloadError(
            f"{host} has {entry.file} with {size:,} bytes, the catalog says {entry.size:,}: "
            f"the catalog is out of date or the mirror holds another file"
        )
    if entry.sha256 and etag and _SHA256.fullmatch(etag) and etag != entry.sha256:
        raise DownloadError(
            f"{host} has another {entry.file} (SHA-256 {etag[:12]}…, the catalog says {entry.sha256[:12]}…): "
            f"the catalog is out of date"
        )
    return (urljoin(target, location) if redirected and location else target), etag


def _origin(url: str) -> tuple[str, str, int | None]:
    parsed = urlparse(url)
    return parsed.scheme, (parsed.hostname or "").lower(), parsed.port


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _normalize_etag(etag: str | None) -> str | None:
    """``W/"abc"`` → ``abc`` (the Hub's ETags are quoted; a weak marker says nothing about bytes)."""
    if not etag:
        return None
    return etag.removeprefix("W/").strip('"') or None


def _restart(handle: BinaryIO) -> int:
    handle.seek(0)
    handle.truncate(0)
    return 0


def _hash_prefix(handle: BinaryIO, size: int, report: "_Reporter", stop: StopCheck) -> "hashlib._Hash":
    """The SHA-256 state after the bytes already downloaded, so the digest covers the whole file."""
    hasher = hashlib.sha256()
    handle.seek(0)
    done = 0
    while done < size:
        if stop():
            raise DownloadStopped(f"stopped checking the partial download of {report.name}")
        block = handle.read(min(CHUNK, size - done))
        if not block:
            break
        hasher.update(block)
        done += len(block)
        report.checking(done, size)
    handle.seek(0, os.SEEK_END)
    return hasher


def _check_space(entry: CatalogEntry, directory: Path, remaining: int) -> None:
    try:
        free = shutil.disk_usage(directory).free
    except OSError:
        return
    if free < remaining:
        raise DownloadError(
            f"not enough disk space for {entry.name}: {human_bytes(remaining)} to download, "
            f"{human_bytes(free)} free in {directory} (RWKV_TUI_MODELS_DIR puts models elsewhere)"
        )


def _write(handle: BinaryIO, chunk: bytes) -> None:
    """One chunk to the partial file (its own function: tests fill the disk here)."""
    handle.write(chunk)


def _transfer(
    entry: CatalogEntry, url: str, handle: BinaryIO, offset: int, hasher: "hashlib._Hash",
    report: "_Reporter", stop: StopCheck,
) -> "hashlib._Hash":
    """GET the rest of the file, resuming with Range after every dropped connection."""
    from huggingface_hub import get_session

    session = get_session()
    transport_errors = _transport_errors()
    failures = 0
    reason = ""
    report.start_transfer(offset)
    while offset < entry.size:
        if stop():
            raise _stopped(entry, offset)
        before = offset
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        try:
            with session.stream("GET", url, headers=headers, timeout=_timeout(), follow_redirects=True) as response:
                if response.status_code == 416 and offset:
                    # Nothing after our bytes: they are not a prefix of this file. Start over.
                    offset = _restart(handle)
                    hasher = hashlib.sha256()
                    continue
                if response.status_code in _TRANSIENT:
                    raise _HttpStatus(response.status_code, str(response.url))
                if response.status_code >= 400:
                    raise _HttpStatus(response.status_code, str(response.url), final=True)
                if offset and response.status_code != 206:
                    offset = _restart(handle)  # the server ignored Range and sends it all
                    hasher = hashlib.sha256()
                # As the network delivers it (not in big blocks): a dropped connection loses
                # nothing that arrived, and a stop request is seen at once.
                for chunk in response.iter_bytes():
                    if stop():
                        raise _stopped(entry, offset)
                    if offset + len(chunk) > entry.size:
                        handle.truncate(0)
                        raise DownloadError(
                            f"the server sent more than the {entry.size:,} bytes of {entry.file}: "
                            f"the catalog is out of date or the mirror holds another file"
                        )
                    _write(handle, chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
                    report.downloading(offset)
            if offset < entry.size:
                reason = f"the server ended the file after {offset:,} of {entry.size:,} bytes"
        except transport_errors as exc:
            reason = _first_line(exc)
            busy = None
        except _HttpStatus as exc:
            if exc.final:
                raise
            reason, busy = str(exc), exc
        else:
            busy = None
        if offset >= entry.size:
            break
        failures = 0 if offset > before else failures + 1
        if failures > len(RETRY_DELAYS):
            if busy is not None:
                raise busy
            raise DownloadError(
                f"download of {entry.name} interrupted at {offset * 100 // entry.size} % ({reason}); "
                f"`rwkv-tui models pull {entry.name}` resumes it"
            )
        if failures:
            _wait(RETRY_DELAYS[failures - 1], stop)
    return hasher


def _stopped(entry: CatalogEntry, offset: int) -> DownloadStopped:
    return DownloadStopped(
        f"download of {entry.name} stopped at {offset * 100 // entry.size} % "
        f"({human_bytes(offset)} of {human_bytes(entry.size)}); `rwkv-tui models pull {entry.name}` resumes it"
    )


def _verify(
    entry: CatalogEntry, directory: Path, handle: BinaryIO, hasher: "hashlib._Hash", digest: str | None,
) -> None:
    size = handle.seek(0, os.SEEK_END)
    problem = None
    if size != entry.size:
        problem = f"{size:,} bytes arrived, the catalog says {entry.size:,}"
    elif digest is not None and hasher.hexdigest() != digest:
        problem = f"SHA-256 {hasher.hexdigest()[:12]}…, expected {digest[:12]}…"
    if problem is not None:
        partial_path(entry, directory).unlink(missing_ok=True)
        raise DownloadError(
            f"{entry.name} arrived damaged ({problem}); the download was deleted, pull it again"
        )


def _wait(seconds: float, stop: StopCheck) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stop():
            return
        time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))


def _timeout() -> float:
    """Seconds without data before an attempt counts as failed (huggingface_hub's setting)."""
    from huggingface_hub import constants

    return float(constants.HF_HUB_DOWNLOAD_TIMEOUT)


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The network errors of whichever HTTP library this huggingface_hub uses."""
    import importlib

    found: list[type[BaseException]] = []
    for module, name in (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def _explain(exc: BaseException, entry: CatalogEntry, url: str, directory: Path) -> DownloadError | None:
    """The one line for a failure outside our own checks, or None for a bug (re-raised)."""
    from huggingface_hub.errors import OfflineModeIsEnabled

    host = urlparse(url).netloc
    if isinstance(exc, OfflineModeIsEnabled):
        return DownloadError(f"cannot download {entry.name}: offline mode is on (HF_HUB_OFFLINE is set)")
    if isinstance(exc, _HttpStatus):
        status = exc.status
        if status in (404, 410):
            return DownloadError(f"{entry.file} is not on {host} (HTTP {status}): the catalog may be out of date, "
                                 f"or try the other --source")
        if status in (401, 403):
            return DownloadError(f"{host} refused {entry.file} (HTTP {status})")
        return DownloadError(f"{host} answered HTTP {status} for {entry.file}; try again later or the other --source")
    if isinstance(exc, _transport_errors()):
        return DownloadError(f"cannot reach {host} ({_first_line(exc)}): check the network, "
                             f"HF_ENDPOINT, or try the other --source")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            kept = partial_path(entry, directory)
            return DownloadError(f"disk full while downloading {entry.name} to {directory}; free some space "
                                 f"and pull again to resume ({kept.name} keeps what arrived)")
        return DownloadError(f"cannot write to {directory}: {exc.strerror or _first_line(exc)}")
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:160]


class _Reporter:
    """Rate-limits progress callbacks and measures the speed of this run's transfer."""

    def __init__(self, entry: CatalogEntry, callback: ProgressCallback | None) -> None:
        self.name = entry.name
        self.total = entry.size
        self.callback = callback
        self.last = 0.0
        self.started = time.monotonic()
        self.start_offset = 0

    def _send(self, progress: Progress, force: bool = False) -> None:
        if self.callback is None:
            return
        now = time.monotonic()
        if force or now - self.last >= 1.0 / REPORTS_PER_SECOND:
            self.last = now
            self.callback(progress)

    def checking(self, done: int, size: int) -> None:
        self._send(Progress(self.name, "checking", done, self.total), force=done >= size)

    def start_transfer(self, offset: int) -> None:
        self.started = time.monotonic()
        self.start_offset = offset
        self._send(Progress(self.name, "downloading", offset, self.total), force=True)

    def downloading(self, done: int) -> None:
        elapsed = time.monotonic() - self.started
        speed = (done - self.start_offset) / elapsed if elapsed > 0 else 0.0
        self._send(Progress(self.name, "downloading", done, self.total, speed), force=done >= self.total)

    def verifying(self, done: int) -> None:
        self._send(Progress(self.name, "verifying", done, self.total), force=True)
