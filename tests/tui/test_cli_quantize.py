"""`rwkv-tui quantize`: writes a model file that --model then accepts; errors are one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui.cli import main


def test_quantize_then_generate_from_the_file(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "tiny-q4.safetensors"
    assert main(["quantize", "--model", str(tiny_checkpoint), "--dtype", "q4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert out.is_file() and f"wrote {out} (q4," in printed
    code = main(["generate", "--model", str(out), "--tokenizer", "bytes", "--prompt", "Hi",
                 "--max-tokens", "5", "--seed", "1", "--stats"])
    assert code == 0


def test_quantize_default_name_is_beside_the_model(tiny_checkpoint: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "model.pth"
    source.write_bytes(tiny_checkpoint.read_bytes())
    assert main(["quantize", "--model", str(source), "--dtype", "int8"]) == 0
    assert (tmp_path / "model-int8.safetensors").is_file()


def test_quantize_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["quantize", "--model", str(tmp_path / "missing.pth"), "--dtype", "int8"]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "missing.pth: no such file" in err
    with pytest.raises(SystemExit):
        main(["quantize", "--model", "x.pth", "--dtype", "int3"])


def test_threads_flag_sets_the_cpu_thread_count(tiny_checkpoint: Path, capsys) -> None:
    from engine.cpu_threads import cpu_threads, set_cpu_threads

    try:
        assert main(["generate", "--model", str(tiny_checkpoint), "--tokenizer", "bytes", "--prompt", "Hi",
                     "--max-tokens", "2", "--threads", "1"]) == 0
        assert cpu_threads() == 1
        assert main(["generate", "--model", str(tiny_checkpoint), "--prompt", "Hi", "--threads", "0"]) == 1
        assert "--threads must be at least 1" in capsys.readouterr().err
    finally:
        set_cpu_threads(None)
