"""CI without a GPU: every ember/cuda/*.cu compiles with nvcc for sm_80 and sm_90, with every
template the launcher names (its NAMES, the same list CuPy's RawModule gets) instantiated, so
the device code really goes through the compiler and ptxas."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ember.cuda import FAMILIES
from ember.cuda.compile import COMMON, KERNEL_DIR

NVCC = shutil.which("nvcc")
ARCHES = ("sm_80", "sm_90")
pytestmark = pytest.mark.skipif(NVCC is None, reason="nvcc is not on PATH: no CUDA toolkit")


def _families() -> dict:
    """kernel file name -> the name expressions its launcher instantiates."""
    out = {}
    for fam in FAMILIES:
        mod = importlib.import_module(f"ember.cuda.{fam}")
        out[mod.SOURCE] = mod.NAMES
    return out


def _wrapper(tmp: Path, source: str, names: tuple) -> Path:
    """A translation unit that includes the kernel file and takes every kernel's address
    (which instantiates each template, as NVRTC's name expressions do)."""
    refs = ",\n    ".join(f"(void*)&{n}" for n in names)
    path = tmp / f"check_{Path(source).stem}.cu"
    path.write_text(
        f'#include "{KERNEL_DIR / source}"\n\nvoid* ember_kernels[] = {{\n    {refs}\n}};\n'
    )
    return path


def _compile(src: Path, arch: str, out: Path):
    """sm_80: a cubin (through ptxas, with its resource report); sm_90: PTX (the front end and
    NVVM for that arch, at half the cost: the whole check stays well under 30 s)."""
    mode = ["-cubin", "--resource-usage"] if arch == "sm_80" else ["--ptx"]
    cmd = [NVCC, f"-arch={arch}", *mode, "-std=c++17", "-Werror", "all-warnings"]
    return subprocess.run(
        cmd + ["-o", str(out), str(src)], capture_output=True, text=True, timeout=240
    )


def test_every_kernel_file_has_a_launcher():
    sources = {p.name for p in KERNEL_DIR.glob("*.cu")} - {COMMON}
    assert sources == set(_families())


def test_name_expressions_are_well_formed():
    for source, names in _families().items():
        text = (KERNEL_DIR / source).read_text()
        assert names, source
        for name in names:
            base = re.match(r"(\w+)<", name)
            assert base, name
            assert re.search(rf"__global__ void {base.group(1)}\(", text), (source, name)


def test_nvcc_compiles_every_kernel(tmp_path):
    jobs = []
    for source, names in _families().items():
        src = _wrapper(tmp_path, source, names)
        for arch in ARCHES:
            ext = "cubin" if arch == "sm_80" else "ptx"
            jobs.append((source, names, arch, src, tmp_path / f"{src.stem}_{arch}.{ext}"))
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda j: _compile(j[3], j[2], j[4]), jobs))
    failures = [
        f"{source} ({arch}):\n{res.stderr[-3000:]}"
        for (source, _, arch, _, _), res in zip(jobs, results)
        if res.returncode != 0
    ]
    assert not failures, "\n\n".join(failures)
    for (source, names, arch, _, out), res in zip(jobs, results):
        if arch == "sm_80":  # every kernel in the binary, each within the static smem limit
            binary = out.read_bytes()
            for name in names:
                assert re.match(r"(\w+)<", name).group(1).encode() in binary, (source, name)
            smem = [int(b) for b in re.findall(r"(\d+) bytes smem", res.stdout + res.stderr)]
            assert all(b <= 48 * 1024 for b in smem), (source, smem)
        else:  # one PTX entry per name expression
            entries = re.findall(r"\.entry\s+(\w+)", out.read_text())
            assert len(entries) == len(names), (source, entries)
