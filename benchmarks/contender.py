"""One contender of a speed comparison, in a process of its own, driven over a pipe.

Each engine runs in its own interpreter so that it gets the environment it would get in real
use: ours the one the rwkv-tui entry point gives itself (passive OpenMP waiting, see
tui/openmp_setup.py), a peer exactly the environment the user started the benchmark with. In
one process they would share torch's OpenMP runtime and whatever it read at load time, which
once slowed a peer threefold. The parent still interleaves the rounds, so a busy machine slows
every contender alike.

Protocol: the parent writes one JSON command per line (``{"op": "decode", "tokens": [...]}``,
``prefill``, ``logits`` with an ``out`` path, ``quit``); the child answers one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent

Forward = Callable[[list[int], object], tuple[Any, object]]


class ContenderProcess:
    """The parent's handle on one contender: send a command, read its answer."""

    def __init__(self, name: str, kind: str, model: Path, env: dict[str, str]) -> None:
        self.name = name
        self.decode: list[float] = []
        self.prefill: list[float] = []
        self._process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), kind, str(model)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=ROOT, text=True,
        )
        self.info = self._ask({"op": "hello"})

    def _ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(command) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the contender process ended (exit {self._process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def time_decode(self, tokens: list[int]) -> None:
        self.decode.append(self._ask({"op": "decode", "tokens": tokens})["tok_s"])

    def time_prefill(self, tokens: list[int]) -> None:
        self.prefill.append(self._ask({"op": "prefill", "tokens": tokens})["tok_s"])

    def save_logits(self, tokens: list[int], out: Path) -> Path:
        self._ask({"op": "logits", "tokens": tokens, "out": str(out)})
        return out

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._ask({"op": "quit"})
            except (RuntimeError, OSError, ValueError):
                pass
            self._process.wait()


def peer_environment(**switches: str) -> dict[str, str]:
    """The user's environment as it was, plus a peer's own documented switches."""
    env = dict(os.environ)
    env.update(switches)
    return env


def _decode_rate(forward: Forward, tokens: list[int]) -> float:
    _, state = forward(tokens[:4], None)
    for t in tokens[4:8]:  # warm-up: page in weights, build caches
        _, state = forward([t], state)
    start = time.perf_counter()
    for t in tokens[8:]:
        _, state = forward([t], state)
    return (len(tokens) - 8) / (time.perf_counter() - start)


def _prefill_rate(forward: Forward, tokens: list[int]) -> float:
    start = time.perf_counter()
    forward(tokens, None)
    return len(tokens) / (time.perf_counter() - start)


def _decode_bytes(backend: Any) -> int:
    """Bytes of every weight but the embedding (read one row per token): what a decoded token
    reads at least, for comparing a speed with the machine's bandwidth."""
    import dataclasses

    import torch

    def size(item: Any) -> int:
        if item is None:
            return 0
        if isinstance(item, tuple):
            return sum(size(part) for part in item)
        if isinstance(item, torch.Tensor):
            return item.numel() * item.element_size()
        return int(item.nbytes)  # a quantized matrix

    layers = sum(size(getattr(layer, f.name)) for layer in backend.layers for f in dataclasses.fields(layer))
    return layers + size(backend.ln0) + size(backend.ln_out) + size(backend.head)


def _build(kind: str, model: Path) -> tuple[Forward, dict[str, Any]]:
    """Load one contender. Ours first sets up the process as the rwkv-tui entry point does."""
    if kind.startswith("ours-"):
        sys.path.insert(0, str(ROOT))
        from tui.openmp_setup import load_engine_with_passive_openmp

        load_engine_with_passive_openmp()
        import torch

        from engine import load_model
        from engine.backends.cpu_native import kernel_status

        dtype = None if kind == "ours-default" else kind.removeprefix("ours-")
        loaded = load_model(model, device="cpu", dtype=dtype)
        info = {"dtype": loaded.info.dtype, "kernels": kernel_status(), "n_layer": loaded.info.n_layer,
                "n_embd": loaded.info.n_embd, "vocab": loaded.info.vocab,
                "decode_bytes": _decode_bytes(loaded.backend)}
        return loaded.forward, info | {"torch": torch.__version__, "threads": torch.get_num_threads()}
    if kind.startswith("pip-"):
        import torch
        from rwkv.model import RWKV  # reads RWKV_V7_ON / RWKV_JIT_ON / RWKV_CUDA_ON from its environment

        strategy = "cpu " + kind.removeprefix("pip-")
        peer = RWKV(model=str(model)[:-4], strategy=strategy)
        return peer.forward, {"strategy": strategy, "torch": torch.__version__, "threads": torch.get_num_threads()}
    raise SystemExit(f"unknown contender kind {kind!r}")


def serve(kind: str, model: Path) -> None:
    """The child's loop: answer the parent's commands until told to quit or stdin closes."""
    # Answers go to a private copy of stdout; anything a contender prints (the pip package
    # announces itself there) goes to stderr instead of into the protocol.
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    forward, info = _build(kind, model)
    for line in sys.stdin:
        command = json.loads(line)
        try:
            op = command["op"]
            if op == "quit":
                print(json.dumps({"ok": True}), file=protocol, flush=True)
                return
            if op == "hello":
                answer = info
            elif op == "decode":
                answer = {"tok_s": _decode_rate(forward, command["tokens"])}
            elif op == "prefill":
                answer = {"tok_s": _prefill_rate(forward, command["tokens"])}
            elif op == "logits":
                import numpy as np

                logits, _ = forward(command["tokens"], None)
                np.save(command["out"], logits.float().numpy())
                answer = {"ok": True}
            else:
                answer = {"error": f"unknown op {op!r}"}
        except Exception as error:  # reported to the parent, which stops the run with it
            answer = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(answer), file=protocol, flush=True)


if __name__ == "__main__":
    serve(sys.argv[1], Path(sys.argv[2]))
