"""The CUDA sources compile on a machine without a GPU.

Every .cu in cuda/ is compiled with nvcc for sm_80 and sm_90 in C++20 (what current torch
builds extensions with), warnings as errors; C++17 (older torch) is covered by the emulator
build, which compiles the same sources with g++ -std=c++17. The torch binding, which needs
torch's CUDA headers, gets a syntax-only check with the host compiler. All compilers start
together in one fixture so the file takes as long as the slowest job, not their sum.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import torch

from engine.backends.cuda_build import HEADERS, SOURCES
from engine.paths import cuda_source_dir
from tests.engine.cuda_emu.ops import cuda_include_dir

NVCC = shutil.which("nvcc")
ARCHS = ("80", "90")
#: What torch.utils.cpp_extension adds to every nvcc command (COMMON_NVCC_FLAGS), so the check
#: sees what the real build sees: no implicit half/bfloat16 conversions or operators.
TORCH_NVCC_FLAGS = (
    "-D__CUDA_NO_HALF_OPERATORS__", "-D__CUDA_NO_HALF_CONVERSIONS__",
    "-D__CUDA_NO_BFLOAT16_CONVERSIONS__", "-D__CUDA_NO_HALF2_OPERATORS__", "--expt-relaxed-constexpr",
    "-Xcompiler", "-fPIC",
)
TIMEOUT_S = 600


def _nvcc_jobs(out: Path) -> dict[str, subprocess.Popen]:
    """One nvcc per file for both architectures: the host side is compiled once."""
    jobs = {}
    source_dir = cuda_source_dir()
    targets = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    for source in sorted(source_dir.glob("*.cu")):
        command = [
            NVCC, "-c", "-std=c++20", "-O3", "-Xptxas", "-O3", "--extra-device-vectorization",
            "-Werror", "all-warnings", *TORCH_NVCC_FLAGS, *targets, "-I", str(source_dir), str(source),
            "-o", str(out / f"{source.stem}.o"),
        ]
        jobs[source.name] = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return jobs


def _binding_job(out: Path) -> subprocess.Popen | str:
    """g++ -fsyntax-only on the binding with torch's headers, or why it cannot run here."""
    torch_include = Path(torch.__file__).parent / "include"
    if not (torch_include / "c10" / "cuda" / "CUDAStream.h").exists():
        return "this torch install has no c10/cuda headers"
    compiler = shutil.which("g++") or shutil.which("c++")
    cuda_include = cuda_include_dir()
    if compiler is None or cuda_include is None:
        return "needs g++ and the CUDA headers"
    includes = [torch_include, torch_include / "torch" / "csrc" / "api" / "include",
                Path(sysconfig.get_paths()["include"]), cuda_include, cuda_source_dir()]
    if not (torch_include / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        # CPU wheels ship c10/cuda headers but not this generated one; it only sets a macro.
        stub = out / "stub" / "c10" / "cuda" / "impl"
        stub.mkdir(parents=True)
        (stub / "cuda_cmake_macros.h").write_text("#pragma once\n#define C10_CUDA_BUILD_SHARED_LIBS\n")
        includes.insert(0, out / "stub")
    command = [compiler, "-fsyntax-only", "-std=c++20", "-Werror", "-DTORCH_EXTENSION_NAME=rwkv7_check",
               "-DTORCH_API_INCLUDE_EXTENSION_H", *(f"-I{p}" for p in includes),
               str(cuda_source_dir() / "rwkv7_binding.cpp")]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.fixture(scope="module")
def compile_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str] | str]:
    out = tmp_path_factory.mktemp("cuda-objects")
    jobs: dict[str, subprocess.Popen | str] = {}
    if NVCC:
        jobs.update(_nvcc_jobs(out))
    jobs["binding"] = _binding_job(out)
    results: dict[str, tuple[int, str] | str] = {}
    for name, job in jobs.items():
        if isinstance(job, str):
            results[name] = job
            continue
        output, _ = job.communicate(timeout=TIMEOUT_S)
        results[name] = (job.returncode, output)
    return results


def test_every_kernel_source_compiles_for_sm80_and_sm90(compile_results):
    if NVCC is None:
        pytest.skip("nvcc is not installed")
    compiled = {name: result for name, result in compile_results.items() if name != "binding"}
    expected = {p.name for p in cuda_source_dir().glob("*.cu")}
    assert set(compiled) == expected
    failures = {name: output for name, (code, output) in compiled.items() if code != 0}
    assert not failures, "\n\n".join(f"{name}:\n{output[-3000:]}" for name, output in failures.items())


def test_torch_binding_passes_a_syntax_check_against_torch_headers(compile_results):
    result = compile_results["binding"]
    if isinstance(result, str):
        pytest.skip(result)
    code, output = result
    assert code == 0, output[-4000:]


def test_build_list_matches_the_files_in_cuda_dir():
    """A kernel file that the loader does not compile (or a listed one that is gone) would
    only show up as a link error on a GPU machine."""
    source_dir = cuda_source_dir()
    on_disk = {p.name for p in source_dir.iterdir() if p.suffix in (".cu", ".cpp")}
    assert on_disk == set(SOURCES)
    headers = {p.name for p in source_dir.iterdir() if p.suffix in (".h", ".cuh")}
    assert headers == set(HEADERS)


def test_sources_are_packaged_with_the_wheel():
    """pyproject ships cuda/ as engine.cuda_sources; every suffix we use must be included."""
    if sys.version_info < (3, 11):
        pytest.skip("tomllib needs Python 3.11")
    import tomllib

    project = tomllib.loads((cuda_source_dir().parent / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["engine.cuda_sources"]
    suffixes = {Path(p).suffix for p in patterns}
    assert {Path(name).suffix for name in (*SOURCES, *HEADERS)} <= suffixes
