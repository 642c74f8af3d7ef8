"""End to end: the real ``rwkv-tui`` in a real terminal (tmux), typed at, read back with capture-pane.

The model is the tiny random one with its output head rewired to favour lowercase letters, so the
streamed reply is readable on screen; the expected reply is computed in this process with the
same checkpoint, settings and seed, and must appear on the terminal.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import torch

from engine import Conversation, SamplingParams, get_tokenizer, load_model
from engine.synthetic import random_state_dict, save_checkpoint
from tests.helpers import require_tool

ROOT = Path(__file__).resolve().parents[2]
LETTERS = b"abcdefghijklmnopqrstuvwxyz "


def letter_model(path: Path) -> Path:
    """A random 2-layer bytes model whose head only favours letters and spaces."""
    sd = random_state_dict(2, 128, 256, seed=7)
    generator = torch.Generator().manual_seed(3)
    direction = torch.randn(128, generator=generator)
    sd["ln_out.weight"] = torch.zeros(128)  # the output ignores the input: x = ln_out.bias
    sd["ln_out.bias"] = direction
    norm = float(direction @ direction)
    head = torch.empty(256, 128)
    for byte in range(256):
        if byte in LETTERS:
            head[byte] = direction * (4.0 + 2.0 * torch.rand(1, generator=generator).item()) / norm
        else:
            head[byte] = -direction * 20.0 / norm
    sd["head.weight"] = head
    return save_checkpoint(sd, path)


#: A private tmux server (its own socket, no user config): a shared server would start the app
#: with that server's environment instead of the test's XDG folders.
SERVER = ["tmux", "-L", f"rwkv-e2e-{uuid.uuid4().hex[:8]}", "-f", os.devnull]


def capture(session: str) -> str:
    return subprocess.run([*SERVER, "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


#: How long a wait may take before the test is declared hung: far above any honest wait on a
#: loaded machine, so a slow run is slow, never red.
SAFETY_NET = 300.0


def wait_for(session: str, predicate, timeout: float, what: str) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if predicate(screen):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; screen was:\n{screen}")


def test_type_a_message_and_read_the_streamed_reply(tmp_path: Path) -> None:
    require_tool("tmux")
    model = letter_model(tmp_path / "letters.pth")
    settings = {"max_tokens": 48, "seed": 5}
    config_home = tmp_path / "xdg-config"
    (config_home / "rwkv-tui").mkdir(parents=True)
    (config_home / "rwkv-tui" / "config.json").write_text(json.dumps({"sampling": settings}))

    loaded = load_model(model, device="cpu", dtype="fp32")
    conversation = Conversation(loaded, get_tokenizer("bytes"), SamplingParams(**settings))
    expected = conversation.send("hello from tmux").run().text.strip()
    assert len(expected) > 20 and set(expected) <= set(LETTERS.decode())

    session = f"rwkv-e2e-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(config_home),
        "XDG_STATE_HOME": str(tmp_path / "xdg-state"), "XDG_DATA_HOME": str(tmp_path / "xdg-data"),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME", str(Path.home() / ".cache")), "TERM": "xterm-256color",
    }
    command = " ".join(shlex.quote(part) for part in (
        sys.executable, "-m", "tui.cli", "--model", str(model), "--tokenizer", "bytes", "--device", "cpu",
        "--dtype", "fp32",
    ))
    subprocess.run(
        [*SERVER, "new-session", "-d", "-s", session, "-x", "110", "-y", "32", "-c", str(ROOT),
         f"{command}; echo EXIT=$?; sleep 30"],
        check=True, env=env,
    )
    try:
        wait_for(session, lambda s: "letters (" in s and "Message the model" in s, SAFETY_NET, "the app and its model")
        subprocess.run([*SERVER, "send-keys", "-t", session, "hello from tmux"], check=True)
        wait_for(session, lambda s: "hello from tmux" in s, SAFETY_NET, "the typed text")
        subprocess.run([*SERVER, "send-keys", "-t", session, "Enter"], check=True)
        screen = wait_for(
            session, lambda s: "Assistant  48 tokens" in s, SAFETY_NET, "the streamed reply to finish",
        )
        assert "You" in screen and "hello from tmux" in screen
        shown = " ".join(screen.split())
        # The reply is soft-wrapped on screen; compare the text with whitespace normalised.
        assert " ".join(expected.split())[:40] in shown
        assert "48 tokens" in screen and "idle" in screen
        subprocess.run([*SERVER, "send-keys", "-t", session, "C-q"], check=True)
        wait_for(session, lambda s: "EXIT=0" in s, SAFETY_NET, "a clean exit")
    finally:
        subprocess.run([*SERVER, "kill-server"], capture_output=True)
