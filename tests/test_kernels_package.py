"""The `kernels` import name: Twin GPT's kernels/ or a clear error, never a silent wrong import.

The PyPI package `kernels` (Hugging Face's kernel hub) uses the same import name. Each case
that changes what `import kernels` finds runs in a fresh interpreter, with a stand-in
package on its path (no network, nothing installed).
"""

from __future__ import annotations

import importlib.util
import textwrap
from pathlib import Path

import pytest
from conftest import run_script

import kernels
from course import runtime

REPO_ROOT = Path(__file__).resolve().parents[1]

needs_triton = pytest.mark.skipif(
    importlib.util.find_spec("triton") is None, reason="needs triton installed"
)


def _package(root: Path, source: str, **modules: str) -> Path:
    """Write a package named `kernels` under `root`; return its folder."""
    folder = root / "kernels"
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(textwrap.dedent(source))
    for name, text in modules.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(text))
    return folder


def _run(code: str, tmp_path: Path, path_first: Path):
    """Run `code` as a script in a fresh interpreter with `path_first` first on sys.path."""
    return run_script(code, tmp_path, path_first=path_first)


# A stand-in for the PyPI package: it says so if any of its code runs.
FOREIGN = """
print("FOREIGN CODE RAN")
def get_kernel(repo_id):
    raise RuntimeError("not Twin GPT's")
"""


def test_this_kernels_package_is_marked_and_sits_beside_course():
    assert kernels.__twin_gpt__ is True
    assert Path(kernels.__file__).resolve() == runtime.KERNELS_DIR / "__init__.py"
    assert runtime.KERNELS_DIR.parent == Path(runtime.__file__).resolve().parents[1]


def test_a_foreign_kernels_package_first_on_the_path_is_named_and_not_run(tmp_path):
    foreign = _package(tmp_path / "site", FOREIGN)
    result = _run(
        """
        import sys
        import torch
        from course import runtime
        from course.config import get_preset
        from course.torch import CausalSelfAttention

        try:
            runtime.import_kernels("attention")
        except ImportError as err:
            print("DIRECT", err)
        config = get_preset("nano").model.replace(attn_impl="triton")
        try:
            CausalSelfAttention(config)(torch.randn(1, 4, config.n_embd))
        except ImportError as err:  # not NotImplementedError: the kernels exist, elsewhere
            print("MODEL", err)
        print("LOADED", "kernels" in sys.modules, "triton" in sys.modules)
        """,
        tmp_path,
        path_first=foreign.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FOREIGN CODE RAN" not in result.stdout
    lines = dict(line.split(" ", 1) for line in result.stdout.splitlines())
    for key in ("DIRECT", "MODEL"):
        message = lines[key]
        assert str(foreign / "__init__.py") in message, message
        assert str(runtime.KERNELS_DIR) in message, message
        assert "PyPI package 'kernels'" in message and "pip uninstall kernels" in message
    assert lines["LOADED"] == "False False"


@pytest.mark.parametrize(
    "source",
    [FOREIGN, "import huggingface_hub_not_installed_here\n"],
    ids=["imports", "fails-to-import"],
)
def test_foreign_files_written_into_twin_gpt_folder_are_caught(tmp_path, source):
    # pip installs the PyPI package's kernels/__init__.py over Twin GPT's in one environment:
    # same folder, no marker. The stand-in folder plays Twin GPT's own here.
    folder = _package(tmp_path / "site", source)
    result = _run(
        f"""
        from pathlib import Path
        from course import runtime
        runtime.KERNELS_DIR = Path({str(folder)!r})
        try:
            runtime.import_kernels("attention")
        except ImportError as err:
            print("ERROR", err)
        """,
        tmp_path,
        path_first=folder.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    error = next(line for line in result.stdout.splitlines() if line.startswith("ERROR"))
    assert "is in Twin GPT's kernels/ folder but is not Twin GPT's file" in error
    assert "PyPI package 'kernels'" in error


@needs_triton
def test_import_kernels_gets_triton_ready_before_the_module_defines_its_kernels(tmp_path):
    folder = _package(
        tmp_path / "site",
        "__twin_gpt__ = True\n",
        probe="""
        import triton

        @triton.jit
        def probe_kernel(x_ptr):
            pass
        """,
    )
    result = _run(
        f"""
        import os
        from pathlib import Path
        from course import runtime
        runtime.KERNELS_DIR = Path({str(folder)!r})
        runtime._has_cuda_driver = lambda: False
        probe = runtime.import_kernels("probe")
        print(type(probe.probe_kernel).__name__, os.environ["TRITON_INTERPRET"])
        """,
        tmp_path,
        path_first=folder.parent,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["InterpretedFunction", "1"]


def test_a_module_kernels_does_not_have_is_module_not_found():
    with pytest.raises(ModuleNotFoundError, match="no module 'no_such_kernel'") as info:
        runtime.import_kernels("no_such_kernel")
    assert info.value.name == "kernels.no_such_kernel"


@pytest.mark.parametrize("name", ["", "attention.flash", "../course", 3])
def test_import_kernels_rejects_what_is_not_a_module_name(name):
    with pytest.raises(ValueError, match="module name inside kernels/"):
        runtime.import_kernels(name)
