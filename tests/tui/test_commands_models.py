"""`rwkv-tui models list / pull / rm`, and catalog names given to --model, against a local Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.hub_server import ModelHub, model_hub, tiny_checkpoint_bytes  # noqa: F401
from tui.cli import main


@pytest.fixture
def published(model_hub: ModelHub, tmp_path: Path) -> ModelHub:
    model_hub.publish("tiny-chat", tiny_checkpoint_bytes(tmp_path), aliases=("tc",))
    return model_hub


def test_pull_shows_progress_verifies_and_says_how_to_use_it(
    published: ModelHub, capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["models", "pull", "tc"]) == 0

    err = capsys.readouterr().err
    assert (published.models_dir / "tiny-chat.pth").is_file()
    assert "Downloading tiny-chat (2.1 MB) from Hugging Face" in err
    assert "downloading 100 %" in err and "verifying 100 %" in err  # not a terminal: plain progress lines
    assert f"tiny-chat: verified, saved as {published.models_dir / 'tiny-chat.pth'}" in err
    assert "rwkv-tui --model tiny-chat" in err

    assert main(["models", "pull", "tiny-chat"]) == 0
    assert "already downloaded" in capsys.readouterr().err


def test_pull_from_modelscope(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "tiny-chat", "--source", "modelscope"]) == 0
    assert "from ModelScope" in capsys.readouterr().err
    assert any(r.path.startswith("/models/") for r in published.state.requests)


def test_pull_failure_is_one_line_and_exit_status_1(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    published.state.files.clear()
    assert main(["models", "pull", "tiny-chat"]) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.startswith("rwkv-tui:")]
    assert len(error) == 1 and "tiny-chat.pth is not on 127.0.0.1:" in error[0] and "HTTP 404" in error[0]
    assert not (published.models_dir / "tiny-chat.pth").exists()


def test_unknown_name_is_one_line(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "nonesuch"]) == 1
    assert capsys.readouterr().err.strip() == (
        "rwkv-tui: no model called 'nonesuch' in the catalog; `rwkv-tui models list` shows the 1 it has")


def test_list_shows_what_is_here_and_what_fits(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("tiny-chat"))
    assert row.split()[1:4] == ["tc", "chat", "RWKV-7"] and " - " in row and "yes (" in row
    assert f"Models folder: {published.models_dir}" in out

    assert main(["models", "pull", "tiny-chat"]) == 0
    assert main(["models", "list", "--json", "--device", "cpu", "--dtype", "fp32"]) == 0
    listing = json.loads(capsys.readouterr().out)
    (model,) = listing["models"]
    assert model["downloaded"] is True and model["fit"] == "fits"
    assert listing["memory"]["kind"] == "RAM" and listing["memory"]["dtype"] == "fp32"
    assert model["needs_bytes"] >= model["size"]  # fp32 from an fp32 file: at least the file


def test_list_shows_a_kept_partial_download(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    size = published.entries[0]["size"]
    published.models_dir.mkdir()
    (published.models_dir / "tiny-chat.pth.partial").write_bytes(b"\0" * (size // 4))
    assert main(["models", "list", "--device", "cpu"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny-chat"))
    assert f" {size // 4 * 100 // size} % " in row


def test_rm_deletes_the_model(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "tiny-chat"]) == 0
    assert main(["models", "rm", "tc"]) == 0
    assert not (published.models_dir / "tiny-chat.pth").exists()
    assert "deleted" in capsys.readouterr().err
    assert main(["models", "rm", "tc"]) == 0
    assert "not downloaded; nothing to delete" in capsys.readouterr().err


def test_model_argument_takes_a_catalog_name(published: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    generate = ["generate", "--model", "tc", "--prompt", "Hi", "--max-tokens", "4", "--seed", "1"]
    assert main(generate) == 1
    assert capsys.readouterr().err.strip() == (
        "rwkv-tui: tiny-chat is not downloaded yet: run `rwkv-tui models pull tiny-chat`")

    assert main(["models", "pull", "tc"]) == 0
    capsys.readouterr()
    assert main(generate) == 0
    assert capsys.readouterr().out.endswith("\n")


def test_music_model_argument_takes_a_catalog_name(model_hub: ModelHub, capsys: pytest.CaptureFixture[str]) -> None:
    model_hub.publish("tiny-ABC-tunes", b"\0" * 64, kind="music")
    assert main(["music", "generate", "--model", "tiny-ABC-tunes", "--mode", "abc", "--quiet"]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "tiny-ABC-tunes is not downloaded yet: run `rwkv-tui models pull tiny-ABC-tunes`")
