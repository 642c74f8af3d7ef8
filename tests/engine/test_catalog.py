"""The shipped model catalog, its schema check, name resolution and the memory-fit verdicts."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from engine.catalog import (
    CatalogError, NotDownloadedError, load_catalog, local_path, parse_catalog, resolve_model_path,
)
from engine.fit import MemoryBudget, memory_budget, needed_bytes, verdict, weights_bytes

GOOD_ENTRY = {
    "name": "m", "kind": "chat", "architecture": "rwkv7", "description": "d", "file": "m.pth",
    "size": 100, "sha256": "a" * 64, "file_dtype": "bf16",
    "huggingface": {"repo": "o/r", "revision": "main"}, "modelscope": None,
}


def test_shipped_catalog_is_valid_and_cites_its_source() -> None:
    catalog = load_catalog(Path(__file__).resolve().parents[2] / "engine" / "catalog.json")
    assert catalog.source["repository"] == "josStorer/RWKV-Runner"
    assert re.fullmatch(r"[0-9a-f]{40}", catalog.source["commit"])
    assert catalog.source["commit"] in catalog.source["url"]
    chat = [e for e in catalog.entries if e.kind == "chat"]
    sizes = [re.search(r"-(\d+(?:\.\d+)?b)-", e.name).group(1) for e in chat]  # type: ignore[union-attr]
    assert sizes == ["0.1b", "0.4b", "1.5b", "2.9b", "7.2b", "13.3b"]
    for entry in chat:
        assert entry.file == entry.name + ".pth" and entry.runnable
        assert entry.huggingface is not None and entry.huggingface.repo == "BlinkDL/rwkv7-g1"
        assert entry.modelscope is not None and entry.modelscope.revision == "master"
    music = {e.name for e in catalog.entries if e.kind == "music"}
    assert {"RWKV-4-MIDI-120M-v1-20230714-ctx4096", "RWKV-4-MIDI-560M-v1-20230717-ctx4096",
            "RWKV-5-ABC-82M-v1-20230901-ctx1024"} <= music
    assert all(e.sha256 is not None for e in catalog.entries)
    # The RWKV-6 ABC model could not be confirmed: the catalog says so instead of guessing.
    assert any("RWKV-6 ABC 85M" in note for note in catalog.notes)


def test_names_aliases_and_file_names_find_an_entry_ignoring_case() -> None:
    catalog = load_catalog()
    entry = catalog.get("g1-0.1b")
    assert catalog.find(entry.name.upper()) is entry
    assert catalog.find(entry.file) is entry
    with pytest.raises(CatalogError, match=r"no model called 'nope' in the catalog; `rwkv-tui models list`"):
        catalog.get("nope")


@pytest.mark.parametrize("change, message", [
    ({"size": -1}, r"model 1 \(m\): \"size\" must be a positive whole number of bytes"),
    ({"size": True}, r"\"size\" must be a positive"),
    ({"sha256": "XYZ"}, r"\"sha256\" must be 64 lowercase hex digits"),
    ({"kind": "video"}, r"\"kind\" must be one of chat, music, state, not 'video'"),
    ({"architecture": "gpt"}, r"\"architecture\" must be one of"),
    ({"file": "../../etc/passwd"}, r"\"file\" '../../etc/passwd' has characters that are not allowed"),
    ({"huggingface": None}, r"needs at least one source"),
    ({"huggingface": {"repo": "no-slash", "revision": "main"}}, r"huggingface.repo must look like owner/name"),
    ({"kind": "state"}, r"a state entry needs \"for_model\""),
    ({"kind": "state", "for_model": "ghost"}, r"for_model 'ghost' is not in the catalog"),
    ({"aliases": ["ok", 3]}, r"\"aliases\" must be a list of names"),
])
def test_schema_problems_are_one_line_errors(change: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message) as caught:
        parse_catalog({"format": 1, "models": [{**GOOD_ENTRY, **change}]}, Path("c.json"))
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("model catalog c.json: ")


def test_duplicate_names_and_wrong_format_are_refused() -> None:
    second = {**GOOD_ENTRY, "name": "other", "file": "other.pth", "aliases": ["m"]}
    with pytest.raises(CatalogError, match="'m' names both m and other"):
        parse_catalog({"format": 1, "models": [GOOD_ENTRY, second]}, Path("c.json"))
    with pytest.raises(CatalogError, match="unsupported format 2"):
        parse_catalog({"format": 2, "models": []}, Path("c.json"))


def test_catalog_file_that_is_not_json_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broken = tmp_path / "catalog.json"
    broken.write_text("{ not json")
    monkeypatch.setenv("RWKV_TUI_CATALOG", str(broken))
    with pytest.raises(CatalogError, match=rf"^model catalog {re.escape(str(broken))}: not valid JSON \("):
        load_catalog()
    # A name cannot be resolved through a broken catalog: that error, not "no such file".
    with pytest.raises(CatalogError):
        resolve_model_path("g1-0.1b")


def test_resolving_model_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"format": 1, "models": [{**GOOD_ENTRY, "aliases": ["mini"]}]}))
    monkeypatch.setenv("RWKV_TUI_CATALOG", str(catalog))
    monkeypatch.setenv("RWKV_TUI_MODELS_DIR", str(tmp_path / "models"))
    existing = tmp_path / "mine.pth"
    existing.write_bytes(b"x")

    assert resolve_model_path(str(existing)) == existing
    assert resolve_model_path(str(tmp_path / "missing.pth")) == tmp_path / "missing.pth"
    with pytest.raises(NotDownloadedError, match=r"^m is not downloaded yet: run `rwkv-tui models pull m`$"):
        resolve_model_path("mini")

    entry = load_catalog().get("m")
    local_path(entry).parent.mkdir()
    local_path(entry).write_bytes(b"\0" * 99)  # wrong size: an unverified leftover, not the model
    with pytest.raises(NotDownloadedError):
        resolve_model_path("m")
    local_path(entry).write_bytes(b"\0" * 100)
    assert resolve_model_path("MINI") == local_path(entry)


def test_fit_verdicts_count_weights_in_the_run_dtype() -> None:
    entry = parse_catalog({"format": 1, "models": [{**GOOD_ENTRY, "size": 2_000_000}]}, Path("c")).entries[0]
    assert weights_bytes(entry, "bf16") == 2_000_000
    assert weights_bytes(entry, "fp32") == 4_000_000
    need = needed_bytes(entry, "bf16")
    assert need > 2_000_000  # headroom for state and runtime
    assert verdict(entry, MemoryBudget("RAM", "cpu", "bf16", total=need, available=need)) == "fits"
    assert verdict(entry, MemoryBudget("RAM", "cpu", "bf16", total=need, available=need - 1)) == "tight"
    assert verdict(entry, MemoryBudget("RAM", "cpu", "fp32", total=need + 1, available=need + 1)) == "too big"
    assert verdict(entry, MemoryBudget("RAM", "cpu", "bf16", total=0, available=0)) == "unknown"


def test_memory_budget_follows_the_apps_device_and_dtype_choice() -> None:
    cpu = memory_budget("cpu")
    assert (cpu.kind, cpu.device, cpu.dtype) == ("RAM", "cpu", "bf16")
    assert cpu.total > 0 and 0 < cpu.available <= cpu.total
    assert memory_budget("cpu", "fp32").dtype == "fp32"


def test_memory_budget_is_vram_in_fp16_when_the_app_would_use_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU is needed to check the rule: torch's answers are stood in for."""
    import torch

    import engine.fit as fit

    monkeypatch.setattr(fit, "_cuda_usable", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda index=0: (30 << 30, 80 << 30))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "Stand-in GPU")

    gpu = memory_budget("auto")
    assert (gpu.kind, gpu.device, gpu.dtype, gpu.total, gpu.available, gpu.name) == (
        "VRAM", "cuda", "fp16", 80 << 30, 30 << 30, "Stand-in GPU")
    assert memory_budget("auto", "bf16").dtype == "bf16"
    assert memory_budget("cpu").kind == "RAM"  # --device cpu: RAM even with a GPU
