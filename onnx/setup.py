"""Builds the wheel with the op library inside: `build_py` runs `cargo build --release
--lib` in the repository this folder belongs to (or takes `$BLOCKRES_LIBRARY`) and copies
`libblockres.so` into the package, where `blockres_onnx.library_path()` finds it. The
library does not depend on the Python ABI, so the wheel is tagged `py3-none-<platform>`.
Metadata is in pyproject.toml."""

import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 70.1 carries bdist_wheel itself
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def built_library() -> Path:
    env = os.environ.get("BLOCKRES_LIBRARY")
    if env:
        return Path(env)
    if not (ROOT / "Cargo.toml").exists():
        raise SystemExit(
            f"blockres-onnx: no Cargo.toml in {ROOT}: build from the blockres repository "
            "(pip install <repo>/onnx) or set BLOCKRES_LIBRARY to a built libblockres.so"
        )
    features = os.environ.get("BLOCKRES_FEATURES", "")
    cmd = ["cargo", "build", "--release", "--lib"] + (["--features", features] if features else [])
    subprocess.run(cmd, cwd=ROOT, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return (target if target.is_absolute() else ROOT / target) / "release" / "libblockres.so"


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        dest = Path(self.build_lib) / "blockres_onnx" / "libblockres.so"
        shutil.copy2(built_library(), dest)


class PlatformWheel(bdist_wheel):
    def finalize_options(self):
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self):
        _, _, plat = super().get_tag()
        return "py3", "none", plat


class BinaryDistribution(Distribution):
    """A native library inside: install to platlib, not purelib."""

    def has_ext_modules(self):
        return True


setup(
    cmdclass={"build_py": BuildWithLibrary, "bdist_wheel": PlatformWheel},
    distclass=BinaryDistribution,
)
