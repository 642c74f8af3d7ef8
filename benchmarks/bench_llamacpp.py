"""CPU speed and accuracy of our engine next to llama.cpp, on the same random weights.

For each model shape: our bf16, int8 and q4 modes against llama.cpp's BF16, Q8_0 and Q4_0, at
batch-1 decode and at prefill of 256 and 2,048 tokens, 2 threads each. Every contender runs
in a process of its own (ours through benchmarks/contender.py, llama.cpp through the small
driver benchmarks/llamacpp_driver.cpp), and each round times every contender once, in turn,
so a busy machine slows all of them alike; the table takes medians over the rounds.

Accuracy: the logits after the shortest prompt, against our fp32 path on the same weights, as
max|Δlogit|/std; and the KL of the demo chat model's next-token distributions (the issue's q4
gate), ours and llama.cpp's on the same weights. Decode rows are also given as a fraction of
the bandwidth bound: the machine's read bandwidth (the best of several passes of a plain read
loop on the benchmark's threads) over the bytes a token must read (every weight but the
embedding, in the contender's format). Our sparse FFN reads less than that, so ours can pass
100 %.

llama.cpp is built here, never in CI: from ``--llama-cpp DIR`` (a source checkout), else from
the copy vendored in the ``llama-cpp-python`` source package (pip download; pinned below), in
a cache folder (cmake, Release, -DGGML_NATIVE=ON). Our ``.pth`` is converted to GGUF in
llama.cpp's RWKV-7 layout (read from its conversion/rwkv.py, ``Rwkv7Model``, and
src/models/rwkv7.cpp, ``load_arch_tensors``); Q8_0 and Q4_0 are made from the
same weights by the gguf package's reference quantizers (gguf-py, maintained with llama.cpp),
every matrix in the one format: the same bits per weight as ours ("pure", as ``llama-quantize
--pure`` makes them; its default Q4_0 mix would put the head in Q6_K). The conversion is
engine/gguf_loader.py's ``write_gguf`` (the inverse of our GGUF reader).

    pip install gguf
    python benchmarks/bench_llamacpp.py [--sizes 0.1b,0.4b] [--rounds 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.bench_cpu import cpu_name  # noqa: E402
from benchmarks.contender import ContenderProcess  # noqa: E402
from engine.gguf_loader import write_gguf  # noqa: E402
from engine.paths import cache_dir  # noqa: E402
from engine.synthetic import official_shape_state_dict, save_checkpoint  # noqa: E402

#: The llama-cpp-python release whose vendored llama.cpp we build (llama.cpp commit 0c1e5709,
#: 2026-10-01) when no checkout is given.
LLAMA_CPP_PYTHON = "0.3.36"
DRIVER_SOURCE = Path(__file__).with_name("llamacpp_driver.cpp")


# ------------------------------------------------------------------------ building llama.cpp


def llama_cpp_source(cache: Path, given: str | None) -> Path:
    if given:
        return Path(given).expanduser().resolve()
    source = cache / f"llama.cpp-src-{LLAMA_CPP_PYTHON}"
    if (source / "CMakeLists.txt").is_file():
        return source
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", tmp], check=True)
        archive = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        vendored = next(Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp"))
        vendored.rename(source)
    return source


#: AMX off by default: on the virtual machines we measure on, the CPU reports AMX but its first
#: tile instruction faults (llama.cpp's Q8_0/Q4_0 products crash); --llama-amx keeps it.
NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"


def build_llama_cpp(source: Path, amx: bool) -> Path:
    """Our driver linked against llama.cpp's library, building what is missing."""
    build = source / ("build-rwkv-tui-bench-amx" if amx else "build-rwkv-tui-bench")
    bin_dir = build / "bin"
    if not (bin_dir / "libllama.so").is_file():
        flags = [] if amx else [f"-DCMAKE_C_FLAGS={NO_AMX}", f"-DCMAKE_CXX_FLAGS={NO_AMX}"]
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DGGML_NATIVE=ON", *flags, "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
                        "-DLLAMA_BUILD_COMMON=OFF", "-DBUILD_SHARED_LIBS=ON"],
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama", "-j", str(os.cpu_count() or 2)],
                       check=True, stdout=subprocess.DEVNULL)
    driver = bin_dir / "rwkv-tui-bench-driver"
    if not driver.is_file() or driver.stat().st_mtime < DRIVER_SOURCE.stat().st_mtime:
        subprocess.run(["g++", "-O3", "-march=native", "-std=c++17", str(DRIVER_SOURCE), "-I", str(source / "include"),
                        "-I", str(source / "ggml" / "include"), "-L", str(bin_dir), "-lllama",
                        f"-Wl,-rpath,{bin_dir}", "-o", str(driver)], check=True)
    return driver


# ------------------------------------------------------------------------ .pth → GGUF
# The conversion is engine.gguf_loader.write_gguf: llama.cpp's rwkv7 layout, the inverse of
# the GGUF reader that tests hold to the .pth's logits.


def gguf_decode_bytes(path: Path) -> int:
    """Bytes of every tensor but the embedding: what a decoded token reads at least."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    return sum(int(t.n_bytes) for t in reader.tensors if t.name != "token_embd.weight")


def gguf_types(path: Path) -> str:
    """Which tensor types a GGUF holds, by count (llama-quantize mixes some)."""
    import gguf

    counts: dict[str, int] = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        if len(t.shape) > 1 and t.n_elements > 65536:
            key = f"{t.tensor_type.name}" + (" (output)" if t.name == "output.weight" else "")
            counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k}×{v}" for k, v in sorted(counts.items()))


# ------------------------------------------------------------------------ the llama.cpp contender


class LlamaCppProcess:
    """The llama.cpp contender, with the interface of benchmarks.contender.ContenderProcess."""

    def __init__(self, name: str, driver: Path, model: Path, threads: int) -> None:
        self.name = name
        self.decode: list[float] = []
        self.prefill: dict[int, list[float]] = {}
        self._process = subprocess.Popen([str(driver), str(model), str(threads)], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.info = self._read()

    def _read(self) -> dict:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.name}: the driver ended (exit {self._process.wait()})")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"{self.name}: {answer['error']}")
        return answer

    def _ask(self, op: str, tokens: list[int], extra: str = "") -> dict:
        assert self._process.stdin is not None
        self._process.stdin.write(f"{op} {len(tokens)} {' '.join(map(str, tokens))} {extra}\n")
        self._process.stdin.flush()
        return self._read()

    def time_decode(self, tokens: list[int]) -> None:
        self.decode.append(self._ask("decode", tokens)["tok_s"])

    def time_prefill(self, tokens: list[int]) -> None:
        self.prefill.setdefault(len(tokens), []).append(self._ask("prefill", tokens)["tok_s"])

    def save_logits(self, tokens: list[int], out: Path) -> np.ndarray:
        self._ask("logits", tokens, str(out))
        return np.fromfile(out, dtype=np.float32)

    def bandwidth(self, megabytes: int) -> float:
        """Bytes per second this process's threads read from memory (the driver's best pass)."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"bandwidth {megabytes}\n")
        self._process.stdin.flush()
        return float(self._read()["bytes_s"])

    def step_logits(self, tokens: list[int], out: Path) -> np.ndarray:
        """Logits after each token, fed one at a time from an empty state: (len(tokens), vocab)."""
        self._ask("steps", tokens, str(out))
        return np.fromfile(out, dtype=np.float32).reshape(len(tokens), -1)

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.write("quit\n")
                self._process.stdin.flush()
            except OSError:
                pass
            self._process.wait()


class OursProcess(ContenderProcess):
    """Ours, with prefill timings kept per prompt length."""

    def __init__(self, name: str, kind: str, model: Path) -> None:
        super().__init__(name, kind, model, dict(os.environ))
        self.prefill_by_length: dict[int, list[float]] = {}

    def time_prefill(self, tokens: list[int]) -> None:
        super().time_prefill(tokens)
        self.prefill_by_length.setdefault(len(tokens), []).append(self.prefill[-1])

    def logits(self, tokens: list[int], out: Path) -> np.ndarray:
        return np.load(self.save_logits(tokens, out))


# ------------------------------------------------------------------------ measuring


def measure_bandwidth(driver: Path, threads: int) -> float:
    """The best of several read passes over 1 GiB on ``threads`` threads (the driver's loop)."""
    from engine.synthetic import random_state_dict

    with tempfile.TemporaryDirectory(prefix="rwkv-bench-bandwidth-") as tmp:
        probe = LlamaCppProcess("bandwidth", driver, write_gguf(random_state_dict(1, 64, 64), Path(tmp) / "p.gguf", "F32"),
                                threads)
        try:
            return max(probe.bandwidth(1024) for _ in range(3))
        finally:
            probe.close()


def relative_error(logits: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(logits - reference).max() / reference.std())


def bench_size(size: str, args: argparse.Namespace, driver: Path, work: Path, bandwidth: float) -> list[str]:
    sd = official_shape_state_dict(size)
    pth = save_checkpoint(sd, work / f"random-{size}.pth")
    gguf_bf16 = write_gguf(sd, work / f"random-{size}-bf16.gguf", "BF16")
    quantized = {kind: write_gguf(sd, work / f"random-{size}-{kind}.gguf", kind) for kind in ("Q8_0", "Q4_0")}
    del sd

    gen = torch.Generator().manual_seed(0)
    decode_tokens = torch.randint(0, 65536, (args.decode_tokens + 8,), generator=gen).tolist()
    prompts = {n: torch.randint(0, 65536, (n,), generator=gen).tolist() for n in args.prefill}
    accuracy_prompt = prompts[min(args.prefill)]

    reference_process = OursProcess("ours fp32", "ours-fp32", pth)
    try:
        reference = reference_process.logits(accuracy_prompt, work / "reference.npy")
    finally:
        reference_process.close()

    rows: list[tuple[str, object, int]] = []  # (label, contender, decode bytes)
    contenders: list[object] = []
    try:
        pairs = [("bf16", "bf16", gguf_bf16), ("int8", "Q8_0", quantized["Q8_0"]), ("q4", "Q4_0", quantized["Q4_0"])]
        for ours_dtype, theirs, gguf_path in pairs:
            ours = OursProcess(f"ours {ours_dtype}", f"ours-{ours_dtype}", pth)
            peer = LlamaCppProcess(f"llama.cpp {theirs}", driver, gguf_path, args.threads)
            contenders += [ours, peer]
            rows.append((ours.name, ours, int(ours.info["decode_bytes"])))
            rows.append((f"{peer.name} [{gguf_types(gguf_path)}]", peer, gguf_decode_bytes(gguf_path)))
        errors = {}
        for label, c, _ in rows:
            if isinstance(c, OursProcess):
                errors[label] = relative_error(c.logits(accuracy_prompt, work / "ours.npy"), reference)
            else:
                errors[label] = relative_error(c.save_logits(accuracy_prompt, work / "theirs.bin"), reference)
        for round_index in range(args.rounds):
            for _, c, _ in rows:
                c.time_decode(decode_tokens)
                for n in args.prefill:
                    c.time_prefill(prompts[n])
            print(f"{size} round {round_index + 1}/{args.rounds}: "
                  + ", ".join(f"{c.name} {c.decode[-1]:.1f}" for _, c, _ in rows), file=sys.stderr, flush=True)
    finally:
        for c in contenders:
            c.close()

    def prefill(c: object, n: int) -> float:
        runs = c.prefill_by_length[n] if isinstance(c, OursProcess) else c.prefill[n]
        return statistics.median(runs)

    lines = [f"\n### {size} shape\n",
             "| engine | decode tok/s | × peer | of bandwidth bound | "
             + " | ".join(f"prefill {n} tok/s | × peer" for n in args.prefill)
             + " | max\\|Δlogit\\|/std vs fp32 |",
             "|---|---:|---:|---:|" + "---:|---:|" * len(args.prefill) + "---:|"]
    for index, (label, c, nbytes) in enumerate(rows):
        partner = rows[index + 1 if index % 2 == 0 else index - 1][1]
        d = statistics.median(c.decode)
        ratio = d / statistics.median(partner.decode)
        cells = [label, f"{d:.1f}", f"{ratio:.2f}", f"{d * nbytes / bandwidth:.0%}"]
        for n in args.prefill:
            p = prefill(c, n)
            cells += [f"{p:.0f}", f"{p / prefill(partner, n):.2f}"]
        cells.append(f"{errors[label]:.2e}")
        lines.append("| " + " | ".join(cells) + " |")
    for label, _, nbytes in rows:
        lines.append(f"- {label}: {nbytes / 1e6:.0f} MB read per token at least")
    return lines


def demo_chat_kl(driver: Path, work: Path, positions: int = 1000) -> list[str]:
    """KL(fp32 ‖ format) of the next-token distributions over the demo chat model's held-out
    dialogues (the issue's q4 gate), for ours and for llama.cpp on the same weights."""
    from engine import load_model
    from engine.checkpoint import read_state_dict
    from engine.demo_models import demo_model_path
    from tools.train.chat_data import split

    dialogues, count = [], 0
    for question in split().heldout:
        dialogues.append(list(question.dialogue().encode()))
        count += len(dialogues[-1])
        if count >= positions:
            break

    def log_probs(rows: list[np.ndarray]) -> np.ndarray:
        logits = torch.from_numpy(np.concatenate(rows)[:positions]).double()
        return torch.log_softmax(logits, dim=-1).numpy()

    def kl(reference: np.ndarray, other: np.ndarray) -> float:
        return float((np.exp(reference) * (reference - other)).sum(-1).mean())

    path = demo_model_path("chat")
    reference = log_probs([load_model(path, device="cpu", dtype="fp32").forward_all(d)[0].numpy() for d in dialogues])
    lines = [f"\n### KL(fp32 ‖ format) over {positions} positions of the demo chat model's held-out dialogues\n",
             "| format | ours | llama.cpp |", "|---|---:|---:|"]
    sd = read_state_dict(path)
    for ours, theirs in (("int8", "Q8_0"), ("q4", "Q4_0")):
        model = load_model(path, device="cpu", dtype=ours)
        ours_kl = kl(reference, log_probs([model.forward_all(d)[0].numpy() for d in dialogues]))
        peer = LlamaCppProcess(theirs, driver, write_gguf(sd, work / f"demo-{theirs}.gguf", theirs), 1)
        try:
            theirs_kl = kl(reference, log_probs([peer.step_logits(d, work / "steps.bin") for d in dialogues]))
        finally:
            peer.close()
        lines.append(f"| {ours} / {theirs} | {ours_kl:.5f} | {theirs_kl:.5f} |")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.1b,0.4b")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--prefill", default="256,2048", help="prompt lengths to time (comma-separated)")
    parser.add_argument("--llama-cpp", metavar="DIR", help="a llama.cpp source checkout (default: see above)")
    parser.add_argument("--llama-amx", action="store_true", help="build llama.cpp with AMX (faults on some VMs)")
    args = parser.parse_args()
    args.prefill = [int(n) for n in args.prefill.split(",")]
    os.environ["RWKV_TUI_THREADS"] = str(args.threads)  # ours, in its processes

    cache = cache_dir() / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    driver = build_llama_cpp(llama_cpp_source(cache, args.llama_cpp), args.llama_amx)
    bandwidth = measure_bandwidth(driver, args.threads)
    load = os.getloadavg()
    out = [f"CPU: {cpu_name()} · {os.cpu_count()} cores · {args.threads} threads each · "
           f"read bandwidth {bandwidth / 1e9:.1f} GB/s ({args.threads} threads, best pass) · "
           f"load average at start {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}",
           f"Median of {args.rounds} interleaved rounds; decode = batch 1, one token per call; "
           f"llama.cpp {'with' if args.llama_amx else 'without'} AMX."]
    with tempfile.TemporaryDirectory(prefix="rwkv-bench-llamacpp-") as tmp:
        out += demo_chat_kl(driver, Path(tmp))
        for size in args.sizes.split(","):
            if size:
                out += bench_size(size, args, driver, Path(tmp), bandwidth)
    again = measure_bandwidth(driver, args.threads)
    out.append(f"\nread bandwidth at the end {again / 1e9:.1f} GB/s (the fractions above use the start's)")
    load = os.getloadavg()
    out.append(f"\nload average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
