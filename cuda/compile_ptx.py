#!/usr/bin/env python3
"""Compile cuda/*.cu to PTX with NVRTC 13.0 (PyPI nvidia-cuda-nvrtc==13.0.88).

Used by build.rs (to embed PTX in the crate) and by the CI test
onnx/tests/test_cuda_compile.py; needs no GPU and no CUDA toolkit.

The PTX is pinned to CUDA 13.0 on purpose: PTX from a newer NVRTC (13.5) carries a
newer `.version` that the 580 driver rejects (CUDA_ERROR_UNSUPPORTED_PTX_VERSION).
The libraries are loaded by absolute path from the wheel, builtins first, so no other
libnvrtc on the system can be picked up instead.

    python cuda/compile_ptx.py [--arch compute_XY] [--lineinfo] [--cubin] OUT_DIR [FILE.cu ...]   (default: every cuda/*.cu)

--arch: the virtual architecture (compute_90, what the crate embeds, by default); the
CI test also builds compute_80, what the run-time NVRTC path compiles on an A100.
--lineinfo: source line information in the PTX, for profilers and compute-sanitizer
(build.rs passes it when BLOCKRES_PTX_LINEINFO=1). Off by default: it nearly doubles
the PTX (bidir_tc: 7.4 → 13.8 MB), which every binary embeds and the driver compiles
at load.
--cubin: compile for the real architecture (sm_XY) and write NAME.cubin (SASS) beside
NAME.ptx; build.rs embeds both, so a device of exactly that architecture loads the
SASS without the driver's JIT compile of the PTX (about 25 s of ptxas time for all
units, 14 s of it bidir_tc), and every other one JIT-compiles the PTX.

Writes OUT_DIR/NAME.ptx for each NAME.cu; exits non-zero with NVRTC's log when one
does not compile.
"""
import ctypes
import pathlib
import sys

ARCH = "compute_90"
WANT_VERSION = (13, 0)
HERE = pathlib.Path(__file__).resolve().parent


def nvrtc_dir() -> pathlib.Path:
    """The lib folder of the nvidia-cuda-nvrtc wheel in this interpreter."""
    import nvidia  # namespace package of the NVIDIA wheels

    for root in nvidia.__path__:
        for cand in (pathlib.Path(root) / "cu13" / "lib", pathlib.Path(root) / "cuda_nvrtc" / "lib"):
            if (cand / "libnvrtc.so.13").exists():
                return cand
    raise RuntimeError("libnvrtc.so.13 not found in the nvidia-cuda-nvrtc wheel; pip install nvidia-cuda-nvrtc==13.0.88")


def load_nvrtc() -> ctypes.CDLL:
    lib = nvrtc_dir()
    ctypes.CDLL(str(lib / "libnvrtc-builtins.so.13.0"), mode=ctypes.RTLD_GLOBAL)
    return ctypes.CDLL(str(lib / "libnvrtc.so.13"), mode=ctypes.RTLD_GLOBAL)


def expand(path: pathlib.Path) -> str:
    """The source with `#include "common.cuh"` (and any local .cuh) inlined."""
    out = []
    for line in path.read_text().splitlines():
        s = line.strip()
        if s.startswith("#include \"") and s.endswith(".cuh\""):
            out.append(expand(path.parent / s.split('"')[1]))
        elif s == "#pragma once":
            continue
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def compile_one(nv: ctypes.CDLL, path: pathlib.Path, arch: str = ARCH, lineinfo: bool = False,
                cubin: bool = False):
    """The PTX of one unit; with cubin, (PTX, SASS of the real architecture)."""
    src = expand(path).encode()
    if cubin:
        arch = arch.replace("compute_", "sm_")
    prog = ctypes.c_void_p()
    check(nv, nv.nvrtcCreateProgram(ctypes.byref(prog), src, path.name.encode(), 0, None, None), "create")
    opts = [f"--gpu-architecture={arch}".encode(), b"--std=c++17"] + ([b"-lineinfo"] if lineinfo else [])
    arr = (ctypes.c_char_p * len(opts))(*opts)
    res = nv.nvrtcCompileProgram(prog, len(opts), arr)
    size = ctypes.c_size_t()
    nv.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    nv.nvrtcGetProgramLog(prog, log)
    if res != 0:
        raise RuntimeError(f"{path.name} does not compile:\n{log.value.decode(errors='replace')}")
    nv.nvrtcGetPTXSize(prog, ctypes.byref(size))
    ptx = ctypes.create_string_buffer(size.value)
    check(nv, nv.nvrtcGetPTX(prog, ptx), "get PTX")
    sass = None
    if cubin:
        check(nv, nv.nvrtcGetCUBINSize(prog, ctypes.byref(size)), "CUBIN size")
        buf = ctypes.create_string_buffer(size.value)
        check(nv, nv.nvrtcGetCUBIN(prog, buf), "get CUBIN")
        sass = buf.raw
    nv.nvrtcDestroyProgram(ctypes.byref(prog))
    return (ptx.value.decode(), sass) if cubin else ptx.value.decode()


def check(nv, res, what):
    if res != 0:
        nv.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"NVRTC {what}: {nv.nvrtcGetErrorString(res).decode()}")


def main(argv):
    arch, flags = ARCH, set()
    while len(argv) > 1 and argv[1].startswith("--"):
        if argv[1] == "--arch" and len(argv) > 2:
            arch, argv = argv[2], argv[:1] + argv[3:]
        elif argv[1] in ("--lineinfo", "--cubin"):
            flags.add(argv[1]); argv = argv[:1] + argv[2:]
        else:
            print(__doc__, file=sys.stderr)
            return 2
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = pathlib.Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    files = [pathlib.Path(f) for f in argv[2:]] or sorted(HERE.glob("*.cu"))
    nv = load_nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    nv.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    if (major.value, minor.value) != WANT_VERSION:
        print(f"NVRTC {major.value}.{minor.value} found, {WANT_VERSION[0]}.{WANT_VERSION[1]} required "
              "(newer PTX is rejected by the 580 driver)", file=sys.stderr)
        return 1
    failed = False
    for f in files:
        try:
            res = compile_one(nv, f, arch, "--lineinfo" in flags, "--cubin" in flags)
            if "--cubin" in flags:
                (out / (f.stem + ".ptx")).write_text(res[0])
                (out / (f.stem + ".cubin")).write_bytes(res[1])
            else:
                (out / (f.stem + ".ptx")).write_text(res)
        except RuntimeError as e:
            print(e, file=sys.stderr)
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
