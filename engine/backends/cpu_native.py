"""Build, cache and call the C kernels in ``cpu_native.c``; fall back to torch without a compiler.

The library is compiled once per machine into the user's cache directory, keyed by a hash of
the source, the compiler and the CPU, so an upgrade or a different CPU never reuses a stale
binary. ctypes keeps the build to a second or two: no torch headers are involved.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Protocol, Sequence

import torch

from engine.backends.cpu_layer import CpuLayer, Matrix
from engine.checkpoint import ModelConfig
from engine.errors import EngineError
from engine.paths import cache_dir
from engine.quant import GROUP, QuantizedMatrix
from engine.state import State

log = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_name("cpu_native.c")
_ABI = 9
_DTYPE_CODES: dict[object, int] = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, "int8": 3, "q4": 4}
#: Extra floats of room the kernels need to prepare a product's input (SPLIT_FLOATS in C).
_SPLIT_EXTRA = 2 * GROUP


class _QMat(ctypes.Structure):
    """qmat_t in cpu_native.c: where a quantized matrix's levels and block scales are."""

    _fields_ = [("q", ctypes.c_void_p), ("d", ctypes.c_void_p), ("scale", ctypes.c_float), ("stride", ctypes.c_int64)]


def _dtype_code(weight: Matrix) -> int:
    return _DTYPE_CODES[weight.format if isinstance(weight, QuantizedMatrix) else weight.dtype]


def _pointer(weight: Matrix) -> tuple[int, object]:
    """What a kernel's weight argument points at, and the object that must outlive the call."""
    if isinstance(weight, QuantizedMatrix):
        descriptor = _describe(weight)
        return ctypes.addressof(descriptor), descriptor
    return weight.data_ptr(), weight


def _describe(weight: QuantizedMatrix) -> _QMat:
    """The C descriptor of a quantized matrix; the caller keeps ``weight`` alive while it is used."""
    if not (weight.q.is_contiguous() and weight.d.is_contiguous()):
        raise ValueError("quantized matrices must be contiguous")
    return _QMat(weight.q.data_ptr(), weight.d.data_ptr(), weight.scale, weight.stride)
_DISABLE_ENV = "RWKV_TUI_NATIVE"


class TorchKernels:
    """Reference implementations in plain torch: always available, slower."""

    name = "torch"

    def matvec(self, weight: Matrix, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
        """``weight @ x`` for a (rows, cols) weight of any float dtype or quantized; fp32 result.

        Half-precision weights are widened rather than ``x`` narrowed: torch's bf16 GEMV rounds
        its input and output to bf16, and on CPUs with AMX that compounded to 7 % of the logits'
        std over four layers (the native kernel and the prefill path both accumulate in fp32).
        """
        return torch.mv(self.dequantize(weight, threads), x)

    def sparse_vecmat(self, weight_t: Matrix, h: torch.Tensor, threads: int = 1) -> torch.Tensor:
        """``h @ weight_t`` for a (inner, cols) weight; fp32 result."""
        nonzero = torch.nonzero(h).squeeze(1)
        if isinstance(weight_t, QuantizedMatrix):
            return h[nonzero] @ weight_t.rows(nonzero)
        return h[nonzero] @ weight_t[nonzero].float()

    def dequantize(self, weight: Matrix, threads: int = 1) -> torch.Tensor:
        """A weight as fp32 (quantized or of a narrower float dtype)."""
        if isinstance(weight, QuantizedMatrix):
            return weight.dequantize()
        return weight if weight.dtype == torch.float32 else weight.float()

    def quantize(self, weight: torch.Tensor, format: str, threads: int = 1) -> QuantizedMatrix:
        """A float matrix in a block-quantized format (engine/quant.py)."""
        return QuantizedMatrix.quantize(weight, format)

    def wkv7(
        self,
        state: torch.Tensor,
        r: torch.Tensor, w: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
        threads: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the WKV-7 recurrence over T tokens; inputs (T, C) fp32, state (H, N, N).

        Returns (y of shape (T, C), new state); the given state is not modified.
        """
        n_head, head_size, _ = state.shape
        steps = r.shape[0]
        view = (steps, n_head, head_size)
        r, w, k, v, a, b = (t.reshape(view) for t in (r, w, k, v, a, b))
        s = state.clone()
        out = torch.empty(view, dtype=torch.float32)
        for t in range(steps):
            sa = torch.matmul(s, a[t].unsqueeze(-1))
            s = s * w[t].unsqueeze(1) + sa * b[t].unsqueeze(1) + v[t].unsqueeze(-1) * k[t].unsqueeze(1)
            out[t] = torch.matmul(s, r[t].unsqueeze(-1)).squeeze(-1)
        return out.reshape(steps, n_head * head_size), s


class NativeKernels(TorchKernels):
    """The same operations through the compiled C library."""

    name = "native"

    def __init__(self, library: ctypes.CDLL) -> None:
        self._lib = library
        ptr, i64, c_int = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        library.rwkv_matvec.argtypes = [ptr, c_int, ptr, ptr, ptr, i64, i64, c_int]
        library.rwkv_matvec.restype = None
        library.rwkv_sparse_vecmat.argtypes = [ptr, c_int, ptr, ptr, i64, i64, ptr, c_int]
        library.rwkv_sparse_vecmat.restype = None
        library.rwkv_sparse_scratch_bytes.argtypes = [i64, i64]
        library.rwkv_sparse_scratch_bytes.restype = i64
        library.rwkv_wkv7.argtypes = [i64, i64, i64, ptr, ptr] + [ptr] * 7 + [c_int]
        library.rwkv_wkv7.restype = None
        library.rwkv_decode_scratch_floats.argtypes = [ctypes.POINTER(_DecodeModel)]
        library.rwkv_decode_scratch_floats.restype = i64
        library.rwkv_decode.argtypes = [ctypes.POINTER(_DecodeModel), i64] + [ptr] * 8 + [c_int]
        library.rwkv_decode.restype = None
        library.rwkv_layer_change.argtypes = [ptr, ptr, i64, i64, ptr, ptr]
        library.rwkv_layer_change.restype = None
        library.rwkv_dequantize.argtypes = [ptr, c_int, ptr, i64, i64, c_int]
        library.rwkv_dequantize.restype = None
        library.rwkv_quantize.argtypes = [ptr, c_int, c_int, i64, i64, i64, ptr, ptr, ptr, c_int]
        library.rwkv_quantize.restype = ctypes.c_float

    def matvec(self, weight: Matrix, x: torch.Tensor, threads: int = 1) -> torch.Tensor:
        rows, cols = weight.shape
        x = x.contiguous()
        out = torch.empty(rows, dtype=torch.float32)
        split = torch.empty(cols + _SPLIT_EXTRA, dtype=torch.float32)
        address, _alive = _pointer(weight)
        self._lib.rwkv_matvec(
            address, _dtype_code(weight), x.data_ptr(), split.data_ptr(),
            out.data_ptr(), rows, cols, threads,
        )
        return out

    def sparse_vecmat(self, weight_t: Matrix, h: torch.Tensor, threads: int = 1) -> torch.Tensor:
        inner, cols = weight_t.shape
        h = h.contiguous()
        out = torch.empty(cols, dtype=torch.float32)
        scratch = torch.empty(self._lib.rwkv_sparse_scratch_bytes(inner, cols), dtype=torch.uint8)
        address, _alive = _pointer(weight_t)
        self._lib.rwkv_sparse_vecmat(
            address, _dtype_code(weight_t), h.data_ptr(), out.data_ptr(),
            inner, cols, scratch.data_ptr(), threads,
        )
        return out

    def quantize(self, weight: torch.Tensor, format: str, threads: int = 1) -> QuantizedMatrix:
        """The reference's result (tested bit for bit), in native loops: seconds, not minutes,
        for a 1.5B model."""
        if weight.dim() != 2 or weight.dtype not in _DTYPE_CODES or format not in ("int8", "q4"):
            return super().quantize(weight, format, threads)
        source = weight.detach().contiguous()
        rows, cols = source.shape
        stride = -(-cols // GROUP) * GROUP
        q = torch.empty(rows, stride if format == "int8" else stride // 2,
                        dtype=torch.int8 if format == "int8" else torch.uint8)
        d = torch.empty(rows, stride // GROUP, dtype=torch.float16)
        block_scale = torch.empty(rows, stride // GROUP, dtype=torch.float32)
        scale = self._lib.rwkv_quantize(
            source.data_ptr(), _DTYPE_CODES[source.dtype], _DTYPE_CODES[format], rows, cols, stride,
            q.data_ptr(), d.data_ptr(), block_scale.data_ptr(), threads,
        )
        if not math.isfinite(scale):
            raise EngineError("cannot quantize weights that are not finite (inf or NaN)")
        return QuantizedMatrix(format, q, d, scale if scale > 0 else 1.0, (rows, cols))

    def dequantize(self, weight: Matrix, threads: int = 1) -> torch.Tensor:
        if not isinstance(weight, QuantizedMatrix):
            return super().dequantize(weight, threads)
        rows, cols = weight.shape
        out = torch.empty(rows, cols, dtype=torch.float32)
        address, _alive = _pointer(weight)
        self._lib.rwkv_dequantize(address, _dtype_code(weight), out.data_ptr(), rows, cols, threads)
        return out

    def wkv7(
        self,
        state: torch.Tensor,
        r: torch.Tensor, w: torch.Tensor, k: torch.Tensor,
        v: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
        threads: int = 1,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n_head, head_size, _ = state.shape
        steps = r.shape[0]
        tensors = [t.contiguous() for t in (r, w, k, v, a, b)]
        state_in = state.contiguous()
        state_out = torch.empty_like(state_in)
        out = torch.empty(steps, n_head * head_size, dtype=torch.float32)
        self._lib.rwkv_wkv7(
            steps, n_head, head_size, state_in.data_ptr(), state_out.data_ptr(),
            *(t.data_ptr() for t in tensors), out.data_ptr(), threads,
        )
        return out, state_out


    def decode_plan(self, model: "DecodeWeights") -> "DecodePlan":
        """Describe a model's weights to the fused one-token kernel (once per model)."""
        return DecodePlan(model, self._lib)

    def decode(self, plan: "DecodePlan", token: int, state: State, out: State, threads: int) -> torch.Tensor:
        """Logits of one token; the state after it is written into ``out``, ``state`` is only read.

        The kernel reads the token's embedding row by address, so the id is checked here, where
        a bad one would otherwise read outside the table.
        """
        if not 0 <= token < plan.vocab:
            raise IndexError(f"token id {token} is outside the vocabulary (0..{plan.vocab - 1})")
        logits = torch.empty(plan.vocab, dtype=torch.float32)
        scratch = torch.empty(plan.scratch_floats, dtype=torch.float32)
        att_x, wkv, ffn_x = (t.contiguous() for t in (state.att_x, state.wkv, state.ffn_x))
        self._lib.rwkv_decode(
            ctypes.byref(plan.struct), token,
            att_x.data_ptr(), wkv.data_ptr(), ffn_x.data_ptr(),
            out.att_x.data_ptr(), out.wkv.data_ptr(), out.ffn_x.data_ptr(),
            logits.data_ptr(), scratch.data_ptr(), threads,
        )
        return logits

    def layer_change(self, current: torch.Tensor, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per layer (first dimension) of two same-shaped fp32 CPU tensors: ‖current‖ and
        ‖current − previous‖, as float64, in one pass over both."""
        current, previous = current.contiguous(), previous.contiguous()
        layers = current.shape[0]
        norms = torch.empty(layers, dtype=torch.float64)
        deltas = torch.empty(layers, dtype=torch.float64)
        self._lib.rwkv_layer_change(
            current.data_ptr(), previous.data_ptr(), layers, current.numel() // max(layers, 1),
            norms.data_ptr(), deltas.data_ptr(),
        )
        return norms.sqrt_(), deltas.sqrt_()


class DecodeWeights(Protocol):
    """A whole model as the fused kernel sees it."""

    config: ModelConfig
    emb: Matrix
    ln0: tuple[torch.Tensor, torch.Tensor]
    ln_out: tuple[torch.Tensor, torch.Tensor]
    head: Matrix
    layers: Sequence[CpuLayer]


_LAYER_POINTERS = (
    "ln1_w", "ln1_b", "ln2_w", "ln2_b", "mix", "w0", "a0", "v0", "w1t", "a1t", "v1t", "g1t",
    "w2t", "a2t", "v2t", "g2t", "k_k", "k_a", "r_k", "receptance", "key", "value", "output",
    "lnx_w", "lnx_b", "ffn_mix", "ffn_key", "ffn_value_t",
)


class _DecodeLayer(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in _LAYER_POINTERS]


class _DecodeModel(ctypes.Structure):
    _fields_ = [
        *((name, ctypes.c_int64) for name in ("n_layer", "C", "H", "N", "F", "vocab", "dw", "da", "dv", "dg")),
        ("dtype", ctypes.c_int), ("lora_dtype", ctypes.c_int), ("emb_dtype", ctypes.c_int),
        *((name, ctypes.c_void_p) for name in ("emb", "ln0_w", "ln0_b", "ln_out_w", "ln_out_b", "head")),
        ("layers", ctypes.POINTER(_DecodeLayer)),
    ]


class DecodePlan:
    """Pointers to a model's weights in the layout ``rwkv_decode`` reads.

    It holds raw addresses, so it keeps every tensor it points into alive and checks the
    layout once here rather than on every token.
    """

    def __init__(self, model: DecodeWeights, library: ctypes.CDLL) -> None:
        cfg = model.config
        layers = list(model.layers)
        big_dtype = _dtype_code(model.head)
        lora_dtype = _dtype_code(layers[0].w1t)
        self._keep: list[object] = []

        def address(t: Matrix | None, code: int = 0) -> int | None:
            if t is None:
                return None
            if _dtype_code(t) != code:
                raise ValueError(f"fused decode: a weight of dtype code {_dtype_code(t)} among code {code}")
            self._keep.append(t)
            if isinstance(t, QuantizedMatrix):
                descriptor = _describe(t)
                self._keep.append(descriptor)
                return ctypes.addressof(descriptor)
            if not t.is_contiguous() or t.device.type != "cpu":
                raise ValueError(f"fused decode needs contiguous CPU weights, got {t.dtype} {tuple(t.shape)}")
            return t.data_ptr()

        self._layers = (_DecodeLayer * len(layers))()
        for slot, layer in zip(self._layers, layers):
            fields = {
                "ln1_w": address(layer.ln1[0]), "ln1_b": address(layer.ln1[1]),
                "ln2_w": address(layer.ln2[0]), "ln2_b": address(layer.ln2[1]),
                "mix": address(layer.mix), "w0": address(layer.w0), "a0": address(layer.a0),
                "v0": address(layer.v0), "k_k": address(layer.k_k), "k_a": address(layer.k_a),
                "r_k": address(layer.r_k), "lnx_w": address(layer.ln_x[0]), "lnx_b": address(layer.ln_x[1]),
                "ffn_mix": address(layer.ffn_mix),
            }
            for name in ("w1t", "a1t", "v1t", "g1t", "w2t", "a2t", "v2t", "g2t"):
                fields[name] = address(getattr(layer, name), lora_dtype)
            for name in ("receptance", "key", "value", "output", "ffn_key", "ffn_value_t"):
                fields[name] = address(getattr(layer, name), big_dtype)
            for name, value in fields.items():
                setattr(slot, name, value)
        self.vocab = cfg.vocab
        self.struct = _DecodeModel(
            n_layer=cfg.n_layer, C=cfg.n_embd, H=cfg.n_head, N=cfg.head_size,
            F=cfg.ffn_dim, vocab=cfg.vocab,
            dw=cfg.decay_rank, da=cfg.iclr_rank, dv=cfg.value_rank, dg=cfg.gate_rank,
            dtype=big_dtype, lora_dtype=lora_dtype, emb_dtype=_dtype_code(model.emb),
            emb=address(model.emb, _dtype_code(model.emb)), ln0_w=address(model.ln0[0]), ln0_b=address(model.ln0[1]),
            ln_out_w=address(model.ln_out[0]), ln_out_b=address(model.ln_out[1]),
            head=address(model.head, big_dtype), layers=self._layers,
        )
        self.scratch_floats = int(library.rwkv_decode_scratch_floats(ctypes.byref(self.struct)))


_lock = threading.Lock()
_kernels: TorchKernels | None = None
_status = "not loaded"


def get_kernels() -> TorchKernels:
    """The fastest available kernels; builds the native library on first call."""
    global _kernels, _status
    with _lock:
        if _kernels is None:
            _kernels, _status = _load()
            if _kernels.name != "native":
                log.warning("CPU native kernels unavailable (%s); using torch kernels", _status)
        return _kernels


def kernel_status() -> str:
    """One line saying which CPU kernels are in use and why."""
    get_kernels()
    return _status


def _load() -> tuple[TorchKernels, str]:
    if os.environ.get(_DISABLE_ENV, "1") == "0":
        return TorchKernels(), f"disabled by {_DISABLE_ENV}=0"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        return TorchKernels(), "no C compiler found (install gcc for faster CPU inference)"
    try:
        library_path = _build(compiler)
        library = ctypes.CDLL(str(library_path))
        if library.rwkv_native_abi() != _ABI:
            return TorchKernels(), f"stale kernel library at {library_path}"
        return NativeKernels(library), f"native kernels ({library_path.name})"
    except (OSError, subprocess.SubprocessError, RuntimeError) as exc:
        return TorchKernels(), f"native kernel build failed: {str(exc).splitlines()[0][:160]}"


def _cpu_identity() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in text.splitlines() if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(sorted(set(wanted)))


_BASE_FLAGS = ["-O3", "-std=c11", "-shared", "-fPIC", "-pthread", "-fopenmp-simd"]


def _flag_sets() -> list[list[str]]:
    machine = ["-march=native"] if platform.machine() in ("x86_64", "AMD64", "i686") else ["-mcpu=native"]
    return [_BASE_FLAGS + machine, _BASE_FLAGS]


def build_variant(target_flags: Sequence[str]) -> NativeKernels:
    """The kernels compiled for other instruction sets than this CPU's best, e.g.
    ``["-march=haswell"]`` (AVX2 without AVX-512) or ``[]`` (the portable C paths), so that
    tests on one machine cover every path. Raises RuntimeError without a compiler."""
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        raise RuntimeError("no C compiler")
    return NativeKernels(ctypes.CDLL(str(_build(compiler, [_BASE_FLAGS + list(target_flags)]))))


def _build(compiler: str, flag_sets: list[list[str]] | None = None) -> Path:
    source = _SOURCE.read_bytes()
    directory = cache_dir() / "kernels"
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for flags in flag_sets or _flag_sets():
        key = hashlib.sha256(
            source + repr(flags).encode() + compiler.encode() + _cpu_identity().encode()
        ).hexdigest()[:16]
        target = directory / f"rwkv_cpu_{key}.so"
        if target.exists():
            return target
        with tempfile.TemporaryDirectory(dir=directory) as tmp:
            partial = Path(tmp) / target.name
            result = subprocess.run(
                [compiler, *flags, str(_SOURCE), "-o", str(partial), "-lm"],
                capture_output=True, text=True, timeout=300,
            )
            if result.returncode == 0:
                os.replace(partial, target)
                return target
            last_error = (result.stderr or result.stdout).strip()
    raise RuntimeError(last_error or "compiler failed")
