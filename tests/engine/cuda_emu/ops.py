"""The CUDA extension's Python API, backed by the real kernel sources run on the CPU emulator.

``EmulatedOps`` has the same functions and the same argument checks as cuda/rwkv7_binding.cpp,
so ``CudaBackend(..., device="cpu", ops=EmulatedOps())`` runs the backend's own Python code and
the unchanged .cu kernels on CPU tensors. Device pointers are host pointers here.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

import torch

from engine.paths import cache_dir, cuda_source_dir

HERE = Path(__file__).resolve().parent
KERNEL_SOURCES = ("wkv7.cu", "tmix.cu", "gemv.cu", "decode.cu")
KERNEL_HEADERS = ("rwkv7.h", "rwkv7_device.cuh", "rwkv7_internal.cuh")
_DTYPE = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def cuda_include_dir() -> Path | None:
    """The CUDA toolkit's include directory (for cuda_fp16.h and friends), if installed."""
    candidates = []
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            candidates.append(Path(os.environ[var]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    return next((c for c in candidates if (c / "cuda_fp16.h").exists()), None)


def build_emulator(memcheck_driver: bool = False) -> Path:
    """Compile the kernels + emulator into a shared library (cached by content hash); with
    ``memcheck_driver``, into the stand-alone program memcheck_driver.cpp instead (-O1 -g, for
    valgrind's line numbers)."""
    include = cuda_include_dir()
    compiler = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if include is None or compiler is None:
        raise RuntimeError("needs the CUDA headers and a C++ compiler")
    sources = cuda_source_dir()
    extra = [HERE / "memcheck_driver.cpp"] if memcheck_driver else []
    files = [sources / n for n in (*KERNEL_SOURCES, *KERNEL_HEADERS)] + [HERE / "emulator.h", HERE / "emulator.cpp"] + extra
    flags = ["-std=c++17", "-U_FORTIFY_SOURCE", "-D_FORTIFY_SOURCE=0", "-Wall", "-Werror",
             "-Wno-unknown-pragmas", "-Wno-unused-function"]
    flags += ["-O1", "-g"] if memcheck_driver else ["-O2", "-shared", "-fPIC"]
    digest = hashlib.sha256(repr((flags, compiler, str(include))).encode())
    for f in files:
        digest.update(f.name.encode() + f.read_bytes())
    directory = cache_dir() / "test-emulator"
    directory.mkdir(parents=True, exist_ok=True)
    suffix = "memcheck" if memcheck_driver else "so"
    target = directory / f"rwkv7_emu_{digest.hexdigest()[:16]}.{suffix}"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        partial = Path(tmp) / target.name
        command = [compiler, *flags, f"-I{include}", f"-I{sources}", "-include", str(HERE / "emulator.h"),
                   "-x", "c++", *[str(sources / n) for n in KERNEL_SOURCES],
                   "-x", "none", str(HERE / "emulator.cpp"), *map(str, extra), "-o", str(partial)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"emulator build failed:\n{result.stderr[-4000:]}")
        os.replace(partial, target)
    return target


# ---------------------------------------------------------------- C structs of rwkv7.h

P = ctypes.c_void_p


class PrepRowsArgs(ctypes.Structure):
    _fields_ = [("T", ctypes.c_int), ("H", ctypes.c_int), ("N", ctypes.c_int)] + [
        (name, P) for name in ("k", "v", "zraw", "araw", "vraw", "w0", "a0", "v0", "k_k", "k_a",
                               "v_first", "w_out", "k_out", "v_out", "a_out", "b_out")
    ]


class GateRowsArgs(ctypes.Structure):
    _fields_ = [("T", ctypes.c_int), ("H", ctypes.c_int), ("N", ctypes.c_int)] + [
        (name, P) for name in ("y", "r", "k", "v", "g", "r_k", "lnx_w", "lnx_b", "out")
    ]


LAYER_STRUCT_FIELDS = (
    "att_in", "w2t", "a2t", "g2t", "v2t", "att_out", "ffn_key", "ffn_value_t",
    "ln1_w", "ln1_b", "ln2_w", "ln2_b", "att_mix",
    "w0", "a0", "v0", "k_k", "k_a", "r_k", "lnx_w", "lnx_b", "ffn_mix",
)


class Layer(ctypes.Structure):
    _fields_ = [(name, P) for name in LAYER_STRUCT_FIELDS]


class DecodePlanStruct(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int)] + [
        (name, ctypes.c_int) for name in ("n_layer", "C", "H", "N", "F", "Dw", "Da", "Dg", "Dv", "vocab")
    ] + [("layers", ctypes.POINTER(Layer))] + [
        (name, P) for name in ("emb", "head", "ln0_w", "ln0_b", "ln_out_w", "ln_out_b", "io", "x", "mixed",
                               "proj", "lora", "v_first", "att_y", "ffn_h", "partial", "counters", "logits")
    ] + [("sm_count", ctypes.c_int)]


# ---------------------------------------------------------------- checks (as in the binding)

def _check(t: torch.Tensor, name: str, dtype: torch.dtype, shape: Sequence[int] | None = None) -> None:
    assert isinstance(t, torch.Tensor), f"{name} is missing"
    assert t.dtype == dtype, f"{name} is {t.dtype}, expected {dtype}"
    assert t.is_contiguous(), f"{name} must be contiguous"
    if shape is not None:
        assert tuple(t.shape) == tuple(shape), f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}"


def _check_state(s: torch.Tensor, name: str, shape: Sequence[int]) -> None:
    assert s.dtype == torch.float32 and tuple(s.shape) == tuple(shape), f"{name}: bad state tensor"
    n = shape[-1]
    assert s.stride(3) == 1 and s.stride(2) == n and s.stride(1) == n * n, f"{name}: rows not contiguous"


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class EmulatedOps:
    """Drop-in replacement for the compiled extension module."""

    head_size = 64

    def __init__(self, library: Path | None = None) -> None:
        self.lib = ctypes.CDLL(str(library or build_emulator()))
        self.lib.rwkv7_emu_take_error.restype = ctypes.c_char_p
        self.lib.rwkv7_decode_partial_floats.restype = ctypes.c_size_t
        self.lib.rwkv7_decode_counter_count.restype = ctypes.c_size_t
        self.lib.rwkv7_emu_launch_count.restype = ctypes.c_ulonglong
        ops = self

        class DecodePlan(_EmulatedDecodePlan):
            lib = ops.lib
            call = ops._call

        self.DecodePlan = DecodePlan

    def launch_count(self) -> int:
        """Kernel launches so far, across every call."""
        return int(self.lib.rwkv7_emu_launch_count())

    def _call(self, what: str, code: int) -> None:
        if code != 0:
            detail = self.lib.rwkv7_emu_take_error().decode()
            raise RuntimeError(f"rwkv7: {what} failed: error {code} {detail}")

    def wkv_seq(self, state_in, state_out, r, w, k, v, a, b, y) -> None:
        assert r.dim() == 3, "r must be [B, T, C]"
        for t, name in ((r, "r"), (k, "k"), (v, "v"), (a, "a"), (b, "b")):
            _check(t, name, r.dtype, r.shape)
        _check(w, "w", torch.float32, r.shape)
        _check(y, "y", torch.float32, r.shape)
        batch, steps, channels = r.shape
        heads, n = state_in.shape[1], state_in.shape[2]
        assert heads * n == channels
        _check_state(state_in, "state_in", (batch, heads, n, n))
        _check_state(state_out, "state_out", (batch, heads, n, n))
        assert state_in.stride(0) == state_out.stride(0)
        self._call("wkv_seq", self.lib.rwkv7_wkv_seq(
            _DTYPE[r.dtype], batch, steps, heads, n, P(state_in.data_ptr()), P(state_out.data_ptr()),
            ctypes.c_longlong(state_in.stride(0)), *(P(t.data_ptr()) for t in (r, w, k, v, a, b, y)), None))

    def mix_rows(self, xn, prev, mix, out, last) -> None:
        _check(xn, "xn", torch.float32)
        steps, channels = xn.shape
        _check(prev, "prev", torch.float32, (channels,))
        _check(mix, "mix", torch.float32)
        m = mix.shape[0]
        _check(out, "out", out.dtype, (m, steps, channels))
        _check(last, "last", torch.float32, (channels,))
        self._call("mix_rows", self.lib.rwkv7_mix_rows(
            _DTYPE[out.dtype], steps, channels, m, *(P(t.data_ptr()) for t in (xn, prev, mix, out, last)), None))

    def prep_rows(self, k, v, zraw, araw, vraw, w0, a0, v0, k_k, k_a, v_first, w_out, k_out, v_out,
                  a_out, b_out, n_head) -> None:
        steps, channels = k.shape
        assert (vraw is None) == (v0 is None)
        for t, name in ((k, "k"), (v, "v"), (zraw, "zraw"), (araw, "araw"), (v_first, "v_first"),
                        (k_out, "k_out"), (v_out, "v_out"), (a_out, "a_out"), (b_out, "b_out")):
            _check(t, name, k.dtype, (steps, channels))
        _check(w_out, "w_out", torch.float32, (steps, channels))
        for t, name in ((w0, "w0"), (a0, "a0"), (k_k, "k_k"), (k_a, "k_a")):
            _check(t, name, torch.float32, (channels,))
        if vraw is not None:
            _check(vraw, "vraw", k.dtype, (steps, channels))
            _check(v0, "v0", torch.float32, (channels,))
        args = PrepRowsArgs(steps, n_head, channels // n_head, *(
            _ptr(t) for t in (k, v, zraw, araw, vraw, w0, a0, v0, k_k, k_a, v_first, w_out, k_out, v_out,
                              a_out, b_out)))
        self._call("prep_rows", self.lib.rwkv7_prep_rows(_DTYPE[k.dtype], ctypes.byref(args), None))

    def gate_rows(self, y, r, k, v, g, r_k, lnx_w, lnx_b, out, n_head) -> None:
        steps, channels = r.shape
        for t, name in ((r, "r"), (k, "k"), (v, "v"), (g, "g"), (out, "out")):
            _check(t, name, r.dtype, (steps, channels))
        _check(y, "y", torch.float32, (steps, channels))
        for t, name in ((r_k, "r_k"), (lnx_w, "lnx_w"), (lnx_b, "lnx_b")):
            _check(t, name, torch.float32, (channels,))
        args = GateRowsArgs(steps, n_head, channels // n_head,
                            *(_ptr(t) for t in (y, r, k, v, g, r_k, lnx_w, lnx_b, out)))
        self._call("gate_rows", self.lib.rwkv7_gate_rows(_DTYPE[r.dtype], ctypes.byref(args), None))

    def gemv(self, weight, x, y) -> None:
        rows, cols = weight.shape
        _check(weight, "weight", weight.dtype)
        _check(x, "x", torch.float32, (cols,))
        _check(y, "y", torch.float32, (rows,))
        self._call("gemv", self.lib.rwkv7_gemv(
            _DTYPE[weight.dtype], rows, cols, P(weight.data_ptr()), P(x.data_ptr()), P(y.data_ptr()), None))


class _EmulatedDecodePlan:
    """Mirror of DecodePlan in rwkv7_binding.cpp."""

    lib: ctypes.CDLL
    call = None

    def __init__(self, dims: list[int], globals_: list[torch.Tensor], layers: list[list[torch.Tensor | None]]):
        n_layer, C, H, N, F, Dw, Da, Dg, Dv, V, sm = dims
        dtype = globals_[0].dtype
        assert N == 64 and len(layers) == n_layer
        _check(globals_[0], "emb", dtype, (V, C))
        _check(globals_[1], "head", dtype, (V, C))
        for t, name in zip(globals_[2:], ("ln0_w", "ln0_b", "ln_out_w", "ln_out_b")):
            _check(t, name, torch.float32, (C,))
        self._keep: list[torch.Tensor] = list(globals_)
        self._layers = (Layer * n_layer)()
        for index, fields in enumerate(layers):
            residual = index > 0
            rows = 3 * C + Dw + Da + Dg + (Dv if residual else 0)
            shapes = {
                "att_in": (rows, C), "w2t": (C, Dw), "a2t": (C, Da), "g2t": (C, Dg), "v2t": (C, Dv),
                "att_out": (C, C), "ffn_key": (F, C), "ffn_value_t": (F, C), "att_mix": (6, C),
            }
            assert len(fields) == len(LAYER_STRUCT_FIELDS)
            for name, tensor in zip(LAYER_STRUCT_FIELDS, fields):
                if name in ("v2t", "v0") and not residual:
                    continue
                if name in shapes and name != "att_mix":
                    _check(tensor, name, dtype, shapes[name])
                else:
                    _check(tensor, name, torch.float32, shapes.get(name, (C,)))
                self._keep.append(tensor)
                setattr(self._layers[index], name, tensor.data_ptr())
        f32 = dict(dtype=torch.float32)
        self.x = torch.zeros(C, **f32)
        self.mixed = torch.zeros(6, C, **f32)
        self.proj = torch.zeros(3 * C + Dw + Da + Dg + Dv, **f32)
        self.lora = torch.zeros(4, C, **f32)
        self.v_first = torch.zeros(C, **f32)
        self.att_y = torch.zeros(C, **f32)
        self.ffn_h = torch.zeros(F, **f32)
        self.partial = torch.zeros(self.lib.rwkv7_decode_partial_floats(C, F, sm), **f32)
        self.counters = torch.zeros(self.lib.rwkv7_decode_counter_count(C, F, sm), dtype=torch.int32)
        self._logits = torch.zeros(V, **f32)
        self.io = torch.zeros(8, dtype=torch.int64)
        self.shape = (n_layer, C, H, N, V)
        self.struct = DecodePlanStruct(
            _DTYPE[dtype], n_layer, C, H, N, F, Dw, Da, Dg, Dv, V, self._layers,
            *(t.data_ptr() for t in globals_),
            self.io.data_ptr(), self.x.data_ptr(), self.mixed.data_ptr(), self.proj.data_ptr(),
            self.lora.data_ptr(), self.v_first.data_ptr(), self.att_y.data_ptr(), self.ffn_h.data_ptr(),
            self.partial.data_ptr(), self.counters.data_ptr(), self._logits.data_ptr(), sm,
        )

    def set_io(self, token, att_x_in, att_x_out, wkv_in, wkv_out, ffn_x_in, ffn_x_out) -> None:
        n_layer, C, H, N, V = self.shape
        assert 0 <= token < V, f"token {token} is outside the vocabulary"
        for t, name in ((att_x_in, "att_x_in"), (att_x_out, "att_x_out"), (ffn_x_in, "ffn_x_in"),
                        (ffn_x_out, "ffn_x_out")):
            _check(t, name, torch.float32, (n_layer, C))
        for t, name in ((wkv_in, "wkv_in"), (wkv_out, "wkv_out")):
            _check(t, name, torch.float32, (n_layer, H, N, N))
        self.io.copy_(torch.tensor([token] + [t.data_ptr() for t in (
            att_x_in, att_x_out, wkv_in, wkv_out, ffn_x_in, ffn_x_out)] + [0], dtype=torch.int64))

    def step(self) -> None:
        type(self).call("decode_step", self.lib.rwkv7_decode_step(ctypes.byref(self.struct), None))

    @property
    def logits(self) -> torch.Tensor:
        return self._logits
