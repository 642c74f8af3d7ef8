"""Downloads against a local stand-in for the Hub (tests/hub_server.py): full, resumed,
interrupted, truncated, corrupted, missing, offline, unreachable and disk-full transfers.

Nothing here reaches the internet: HF_ENDPOINT points at 127.0.0.1.
"""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest

from engine import downloads
from engine.catalog import load_catalog, local_path, partial_path, resolve_model_path
from engine.downloads import DownloadError, DownloadStopped, Progress, pull, remove
from tests.hub_server import ModelHub, closed_port_url, model_hub, tiny_checkpoint_bytes  # noqa: F401


@pytest.fixture
def payload(tmp_path: Path) -> bytes:
    return tiny_checkpoint_bytes(tmp_path)


def _entry(name: str):  # noqa: ANN202
    return load_catalog().get(name)


def _no_retry_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downloads, "RETRY_DELAYS", (0.0, 0.0, 0.0))


def test_full_download_is_verified_and_reported(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    seen: list[Progress] = []

    path = pull(_entry("tiny"), progress=seen.append)

    assert path == model_hub.models_dir / "tiny.pth"
    assert path.read_bytes() == payload
    assert not partial_path(_entry("tiny")).exists()
    assert seen[-1].stage == "verifying" and seen[-1].done == len(payload)
    downloaded = [p.done for p in seen if p.stage == "downloading"]
    assert downloaded == sorted(downloaded) and downloaded[-1] == len(payload)
    # The Hub path: HEAD on /resolve, then the bytes from the CDN it redirects to; no token sent.
    methods = [(r.method, r.path.split("/")[1]) for r in model_hub.state.requests]
    assert methods[0] == ("HEAD", "tester")
    assert ("GET", "cdn") in methods
    assert all(r.authorization is None for r in model_hub.state.requests)
    # The catalog name now resolves to the file.
    assert resolve_model_path("tiny") == path


def test_modelscope_source_uses_its_own_layout(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)

    path = pull(_entry("tiny"), "modelscope")

    assert path.read_bytes() == payload
    assert any(r.path == "/models/tester/rwkv7-test/resolve/master/tiny.pth" and r.method == "GET"
               for r in model_hub.state.requests)


def test_source_without_a_mirror_is_one_line(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload, modelscope=False)
    with pytest.raises(DownloadError, match=r"no ModelScope copy of tiny; use --source huggingface"):
        pull(_entry("tiny"), "modelscope")
    assert model_hub.state.requests == []


def test_dropped_connection_resumes_with_range(model_hub: ModelHub, payload: bytes) -> None:
    """The CDN closes the connection 300 kB into the body once; the pull resumes from there."""
    model_hub.publish("tiny", payload)
    model_hub.state.behaviour.drop_after = 300_000

    path = pull(_entry("tiny"))

    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(payload).hexdigest()
    ranges = [r.range for r in model_hub.state.transfers()]
    assert ranges == [None, "bytes=300000-"]


def test_stopped_download_resumes_in_a_later_pull(model_hub: ModelHub, payload: bytes) -> None:
    """A pull stopped half-way (Ctrl-C, app closed) keeps its bytes; the next pull asks only for the rest."""
    model_hub.publish("tiny", payload)
    entry = _entry("tiny")

    def stop_half_way() -> bool:
        return partial_path(entry).exists() and partial_path(entry).stat().st_size >= len(payload) // 2

    with pytest.raises(DownloadStopped, match=r"stopped at \d+ % .*`rwkv-tui models pull tiny` resumes it"):
        pull(entry, should_stop=stop_half_way)
    kept = partial_path(entry).stat().st_size
    assert 0 < kept < len(payload)
    assert not local_path(entry).exists()
    with pytest.raises(Exception, match="not downloaded yet.*rwkv-tui models pull tiny.*resumed"):
        resolve_model_path("tiny")

    checking: list[Progress] = []
    path = pull(entry, progress=checking.append)

    assert path.read_bytes() == payload
    assert model_hub.state.transfers()[-1].range == f"bytes={kept}-"
    assert checking[0].stage == "checking"  # the kept bytes are re-hashed, so the digest covers them


def test_connection_that_keeps_dropping_is_an_interrupted_download(
    model_hub: ModelHub, payload: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_retry_waits(monkeypatch)
    model_hub.publish("tiny", payload)
    model_hub.state.behaviour.drop_after = 0
    model_hub.state.behaviour.drop_times = None

    with pytest.raises(DownloadError) as caught:
        pull(_entry("tiny"))

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("download of tiny interrupted at 0 %")
    assert message.endswith("`rwkv-tui models pull tiny` resumes it")
    assert not local_path(_entry("tiny")).exists()
    assert len(model_hub.state.transfers()) == len(downloads.RETRY_DELAYS) + 1


def test_truncated_body_is_completed_by_resuming(model_hub: ModelHub, payload: bytes) -> None:
    """The body stops early twice (Content-Length promised more); each retry asks for the rest."""
    model_hub.publish("tiny", payload)
    model_hub.state.behaviour.drop_after = len(payload) // 3
    model_hub.state.behaviour.drop_times = 2

    path = pull(_entry("tiny"))

    assert path.read_bytes() == payload
    third = len(payload) // 3
    assert [r.range for r in model_hub.state.transfers()] == [None, f"bytes={third}-", f"bytes={2 * third}-"]


def test_server_with_a_shorter_file_is_refused_before_downloading(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    model_hub.state.behaviour.head_size = len(payload) - 100

    with pytest.raises(DownloadError, match=r"has tiny.pth with [\d,]+ bytes, the catalog says [\d,]+"):
        pull(_entry("tiny"))
    assert model_hub.state.transfers() == []


def test_corrupted_transfer_fails_the_checksum_and_leaves_nothing(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    model_hub.state.behaviour.corrupt_at = 12345

    with pytest.raises(DownloadError) as caught:
        pull(_entry("tiny"))

    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("tiny arrived damaged (SHA-256 ")
    assert message.endswith("the download was deleted, pull it again")
    assert not local_path(_entry("tiny")).exists()
    assert not partial_path(_entry("tiny")).exists()


def test_corruption_is_caught_by_the_hub_etag_without_a_catalog_digest(model_hub: ModelHub, payload: bytes) -> None:
    """No SHA-256 in the catalog: the Hub's LFS ETag (the file's SHA-256) is checked instead."""
    model_hub.publish("tiny", payload, with_sha256=False)
    model_hub.state.behaviour.corrupt_at = 7

    with pytest.raises(DownloadError, match="arrived damaged"):
        pull(_entry("tiny"))
    assert not local_path(_entry("tiny")).exists()


def test_server_ignoring_range_restarts_cleanly(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    entry = _entry("tiny")
    model_hub.models_dir.mkdir()
    partial_path(entry).write_bytes(payload[:5000])
    model_hub.state.behaviour.ignore_range = True

    assert pull(entry).read_bytes() == payload


def test_partial_that_is_not_a_prefix_is_replaced(model_hub: ModelHub, payload: bytes) -> None:
    """Garbage left under the partial name cannot sneak into the file: the digest catches it."""
    model_hub.publish("tiny", payload)
    entry = _entry("tiny")
    model_hub.models_dir.mkdir()
    partial_path(entry).write_bytes(b"\0" * 4096)

    with pytest.raises(DownloadError, match="arrived damaged"):
        pull(entry)
    assert pull(entry).read_bytes() == payload  # and the next pull starts from scratch


def test_missing_file_is_a_404_line(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    model_hub.state.files.clear()

    with pytest.raises(DownloadError) as caught:
        pull(_entry("tiny"))
    message = str(caught.value)
    assert message.startswith("tiny.pth is not on 127.0.0.1:") and "(HTTP 404)" in message
    assert "\n" not in message
    assert list(model_hub.models_dir.iterdir()) == []  # no empty partial file left behind


def test_busy_server_is_retried_then_one_line(
    model_hub: ModelHub, payload: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _no_retry_waits(monkeypatch)
    model_hub.publish("tiny", payload)
    model_hub.state.behaviour.status = 503

    with pytest.raises(DownloadError, match=r"answered HTTP 503 for tiny.pth; try again later"):
        pull(_entry("tiny"))
    gets = [r for r in model_hub.state.requests if r.method == "GET"]
    assert len(gets) == len(downloads.RETRY_DELAYS) + 1


def test_offline_mode_makes_no_request(model_hub: ModelHub, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    model_hub.publish("tiny", payload)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(DownloadError, match=r"^cannot download tiny: offline mode is on \(HF_HUB_OFFLINE is set\)$"):
        pull(_entry("tiny"))
    assert model_hub.state.requests == []


def test_no_network_is_one_line(model_hub: ModelHub, payload: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    model_hub.publish("tiny", payload)
    monkeypatch.setenv("HF_ENDPOINT", closed_port_url())

    with pytest.raises(DownloadError) as caught:
        pull(_entry("tiny"))
    message = str(caught.value)
    assert message.startswith("cannot reach 127.0.0.1:") and "check the network" in message
    assert "\n" not in message
    assert list(model_hub.models_dir.iterdir()) == []


def test_disk_full_keeps_what_arrived_and_resumes(
    model_hub: ModelHub, payload: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    model_hub.publish("tiny", payload)
    entry = _entry("tiny")
    real_write = downloads._write
    writes = []

    def fill_the_disk(handle, chunk: bytes) -> None:  # noqa: ANN001
        if writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        writes.append(len(chunk))
        real_write(handle, chunk)

    monkeypatch.setattr(downloads, "_write", fill_the_disk)
    with pytest.raises(DownloadError) as caught:
        pull(entry)
    message = str(caught.value)
    assert message.startswith(f"disk full while downloading tiny to {model_hub.models_dir}")
    assert "pull again to resume" in message and "\n" not in message
    assert not local_path(entry).exists()
    assert partial_path(entry).stat().st_size == writes[0]

    monkeypatch.setattr(downloads, "_write", real_write)
    assert pull(entry).read_bytes() == payload
    assert model_hub.state.transfers()[-1].range == f"bytes={writes[0]}-"


def test_too_little_free_space_fails_before_downloading(
    model_hub: ModelHub, payload: bytes, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil
    from collections import namedtuple

    model_hub.publish("tiny", payload)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))

    with pytest.raises(DownloadError, match=r"^not enough disk space for tiny: 2\.1 MB to download, 1000 B free in "):
        pull(_entry("tiny"))
    assert model_hub.state.transfers() == []


def test_second_pull_of_the_same_model_is_refused_while_the_first_runs(
    model_hub: ModelHub, payload: bytes,
) -> None:
    model_hub.publish("tiny", payload)
    entry = _entry("tiny")
    second: list[BaseException] = []

    def pull_again_from_inside() -> bool:
        if not second:
            try:
                pull(entry)
            except DownloadError as exc:
                second.append(exc)
        return False

    assert pull(entry, should_stop=pull_again_from_inside).read_bytes() == payload
    assert "is already being downloaded" in str(second[0])


def test_remove_deletes_the_file_and_any_partial(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    entry = _entry("tiny")
    pull(entry)
    partial_path(entry).write_bytes(b"x")

    removed = remove(entry)

    assert sorted(p.name for p in removed) == ["tiny.pth", "tiny.pth.partial"]
    assert remove(entry) == []


def test_already_downloaded_makes_no_request(model_hub: ModelHub, payload: bytes) -> None:
    model_hub.publish("tiny", payload)
    pull(_entry("tiny"))
    before = len(model_hub.state.requests)

    pull(_entry("tiny"))

    assert len(model_hub.state.requests) == before
