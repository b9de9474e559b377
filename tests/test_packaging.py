"""Fast checks of the project's wiring: pyproject, constraints, Makefile, CI, README, Binder.

None of these installs anything or touches the network: `make` runs dry (``-n``), the CI
script runs against a stand-in `make`, and files are read as text.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
CONSTRAINTS = REPO / "constraints" / "ci.txt"
README = REPO / "README.md"
BINDER = REPO / "binder"
MAKE_INPUTS = ("Makefile", "pyproject.toml", "constraints/ci.txt")

EXTRAS = ("lab", "torch", "tf", "triton", "export", "grading", "dev", "all")
CHAPTER_EXTRAS = ("torch", "tf", "triton", "export")  # the groups that exist for chapters
PROJECT = "twin-gpt"

# On Linux x86_64 the tf extra installs the CPU-only wheel, which provides `tensorflow`.
ALSO_SATISFIED_BY = {"tensorflow": ("tensorflow-cpu",)}


def norm(name: str) -> str:
    """Normalized distribution name: lowercase, with '_' and '.' as '-'."""
    return canonicalize_name(name)


def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def dependency_groups() -> dict[str, list[str]]:
    """{"core": [...], "torch": [...], ...}: every requirement string in pyproject."""
    project = pyproject()["project"]
    return {"core": project["dependencies"], **project["optional-dependencies"]}


def third_party(group_items: dict[str, list[str]]) -> list[tuple[str, Requirement]]:
    """(group, requirement) for every dependency that is not the project itself."""
    return [
        (group, req)
        for group, items in group_items.items()
        for req in map(Requirement, items)
        if norm(req.name) != PROJECT
    ]


def requirement_lines(text: str) -> list[str]:
    """The requirement lines of a pip requirements/constraints file, comments stripped."""
    lines = []
    for raw in text.splitlines():
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "-")):
            lines.append(line)
    return lines


def constraint_pins() -> dict[str, str]:
    """{normalized name: pinned version} from constraints/ci.txt; fails on a non-pin."""
    pins: dict[str, str] = {}
    for line in requirement_lines(CONSTRAINTS.read_text()):
        req = Requirement(line)
        specs = list(req.specifier)
        assert len(specs) == 1 and specs[0].operator == "==", (
            f"constraints/ci.txt: {line!r} is not an exact pin (name==version)"
        )
        name = norm(req.name)
        assert pins.get(name, specs[0].version) == specs[0].version, (
            f"constraints/ci.txt pins {name} twice, to {pins[name]} and {specs[0].version}"
        )
        pins[name] = specs[0].version
    return pins


# --- pyproject.toml ---------------------------------------------------------------------


def test_pyproject_name_and_python():
    project = pyproject()["project"]
    assert project["name"] == "twin-gpt"
    assert project["requires-python"] == ">=3.11"


def test_pyproject_has_every_extra():
    extras = pyproject()["project"]["optional-dependencies"]
    missing = [extra for extra in EXTRAS if extra not in extras]
    assert not missing, f"pyproject.toml lacks the extra(s) {missing}"
    for extra in EXTRAS:
        assert extras[extra], f"the extra {extra!r} is empty"


# Extras `all` leaves out on purpose: litert-torch brings JAX, torchao and Google's
# converters (and its own ml_dtypes beside TensorFlow's); chapter 10 does without it.
OUTSIDE_ALL = {"litert-torch"}


def test_all_extra_covers_every_other_extra():
    extras = pyproject()["project"]["optional-dependencies"]
    covered: set[str] = set()
    for item in extras["all"]:
        req = Requirement(item)
        assert norm(req.name) == PROJECT, f"`all` should only refer to {PROJECT}[...], not {item}"
        covered |= req.extras
    others = set(extras) - {"all"} - OUTSIDE_ALL
    assert OUTSIDE_ALL <= set(extras), f"{OUTSIDE_ALL - set(extras)} left pyproject: update"
    assert covered == others, (
        f"`all` covers {sorted(covered)}, the other extras are {sorted(others)}"
    )


def test_triton_is_linux_only():
    reqs = [Requirement(item) for item in pyproject()["project"]["optional-dependencies"]["triton"]]
    triton = [req for req in reqs if norm(req.name) == "triton"]
    assert len(triton) == 1, f"the triton extra should list triton once: {reqs}"
    marker = triton[0].marker
    assert marker is not None, "triton ships Linux wheels only: it needs a sys_platform marker"
    assert "sys_platform" in str(marker) and "linux" in str(marker), str(marker)
    assert marker.evaluate({"sys_platform": "linux"}) is True
    assert marker.evaluate({"sys_platform": "darwin"}) is False
    assert marker.evaluate({"sys_platform": "win32"}) is False


def test_pyproject_keeps_open_ranges():
    data = pyproject()
    items = [*data["build-system"]["requires"]]
    for group in dependency_groups().values():
        items += group
    pinned = [
        item
        for item in items
        if any(s.operator in ("==", "===") for s in Requirement(item).specifier)
    ]
    assert not pinned, f"pyproject.toml pins {pinned}; pins belong in constraints/ci.txt"


def _trailing_comments() -> dict[str, str | None]:
    """{requirement string: its trailing `# ...` comment in the raw file, or None}."""
    lines = PYPROJECT.read_text().splitlines()
    comments: dict[str, str | None] = {}
    for _, reqs in dependency_groups().items():
        for item in reqs:
            if norm(Requirement(item).name) == PROJECT:
                continue  # `all = ["twin-gpt[...]"]` is wiring, not a dependency
            quoted = re.compile(r"""(["'])""" + re.escape(item) + r"\1")
            hits = [line for line in lines if quoted.search(line)]
            assert len(hits) == 1, f"{item!r} should sit on exactly one line of pyproject.toml"
            rest = quoted.split(hits[0], maxsplit=1)[-1]
            match = re.match(r"\s*,?\s*#\s*(\S.*)$", rest)
            comments[item] = match.group(1) if match else None
    return comments


def test_every_dependency_line_has_a_trailing_comment():
    missing = [item for item, comment in _trailing_comments().items() if comment is None]
    assert not missing, (
        "each dependency line in pyproject.toml should end with a comment saying which "
        f"chapters use it; these have none: {missing}"
    )


def test_chapter_dependencies_name_their_chapters():
    groups = dependency_groups()
    comments = _trailing_comments()
    vague = [
        (group, item, comments[item])
        for group in CHAPTER_EXTRAS
        for item in groups[group]
        if comments.get(item) is not None and not re.search(r"\bch\d\d", comments[item])
    ]
    assert not vague, f"these comments should name chapters (chNN): {vague}"


# --- constraints/ci.txt -----------------------------------------------------------------


def test_constraints_pin_torch_2_13_0():
    assert constraint_pins().get("torch") == "2.13.0"


def test_constraints_pin_every_dependency_for_this_platform():
    pins = constraint_pins()
    unpinned, outside = [], []
    for group, req in third_party(dependency_groups()):
        if req.marker is not None and not req.marker.evaluate({"extra": group}):
            continue  # not installed on this platform
        names = (norm(req.name), *ALSO_SATISFIED_BY.get(norm(req.name), ()))
        pinned = [name for name in names if name in pins]
        if not pinned:
            unpinned.append(f"{req.name} ({group})")
        elif not req.specifier.contains(pins[pinned[0]], prereleases=True):
            outside.append(f"{pinned[0]}=={pins[pinned[0]]} vs pyproject {req}")
    assert not unpinned, f"constraints/ci.txt does not pin {unpinned}"
    assert not outside, f"constraints/ci.txt pins outside pyproject's ranges: {outside}"


# --- .ci/run ----------------------------------------------------------------------------


def _run_ci_script(tmp_path: Path, with_shared_data: bool) -> dict[str, str]:
    """Run a copy of .ci/run in tmp/main, with a stand-in `make` that reports its call."""
    main = tmp_path / "main"
    (main / ".ci").mkdir(parents=True)
    shutil.copy2(REPO / ".ci" / "run", main / ".ci" / "run")
    if with_shared_data:
        (tmp_path / "shared" / "data").mkdir(parents=True)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_make = bin_dir / "make"
    fake_make.write_text(
        textwrap.dedent(
            """\
            #!/usr/bin/env bash
            echo "args=$*"
            echo "cwd=$(pwd -P)"
            echo "data=${COURSE_DATA_DIR-<unset>}"
            """
        )
    )
    fake_make.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "COURSE_DATA_DIR"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    # Run from elsewhere: the script must find its own repository.
    result = subprocess.run(
        ["bash", str(main / ".ci" / "run")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)


def test_ci_script_is_executable():
    assert os.access(REPO / ".ci" / "run", os.X_OK), ".ci/run should be executable"


def test_ci_script_runs_make_test_with_shared_data(tmp_path):
    seen = _run_ci_script(tmp_path, with_shared_data=True)
    assert seen["args"] == "test"
    assert seen["cwd"] == str((tmp_path / "main").resolve())
    assert seen["data"] == str((tmp_path / "shared" / "data").resolve())


def test_ci_script_leaves_course_data_dir_unset_without_shared_data(tmp_path):
    seen = _run_ci_script(tmp_path, with_shared_data=False)
    assert seen["args"] == "test"
    assert seen["data"] == "<unset>"


# --- README: the two commands ----------------------------------------------------------


def test_readme_opens_with_the_two_commands():
    lines = README.read_text().splitlines()
    body = iter(line for line in lines if line.strip() and not line.lstrip().startswith("#"))
    first = next(body)
    assert first.startswith("```"), f"README's first content should be a code block: {first!r}"
    block = []
    for line in lines[lines.index(first) + 1 :]:
        if line.startswith("```"):
            break
        block.append(line)
    else:
        pytest.fail("README's first code block is never closed")
    commands = [line.split("#", 1)[0].strip() for line in block]
    commands = [command for command in commands if command]
    assert commands == ["make lab", "make test"]


# --- Makefile (dry runs) ----------------------------------------------------------------


def _make_dry_run(cwd: Path, *args: str) -> list[str]:
    if shutil.which("make") is None:
        pytest.skip("`make` is not installed")
    # An outer `make test` exports its flags and command-line variables; keep them out.
    drop = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTHON", "VENV"}
    drop |= {"CONSTRAINTS", "LAB_ARGS", "PYTEST_ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    result = subprocess.run(
        ["make", "-n", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def _pip_installs(lines: list[str]) -> list[str]:
    return [line for line in lines if re.search(r"\bpip install\b", line)]


def _project_copy(tmp_path: Path, venv: str = "absent", changed: str | None = None) -> Path:
    """Makefile, pyproject.toml and constraints/ci.txt copied into tmp_path.

    ``venv`` is "absent" (no .venv) or "installed" (a stamp newer than the inputs); with
    ``changed``, that one input is then edited after the install (newer than the stamp).
    """
    (tmp_path / "constraints").mkdir()
    for name in MAKE_INPUTS:
        shutil.copyfile(REPO / name, tmp_path / name)
        os.utime(tmp_path / name, (1_700_000_000, 1_700_000_000))
    if venv == "installed":
        (tmp_path / ".venv" / "bin").mkdir(parents=True)
        stamp = tmp_path / ".venv" / ".installed"
        stamp.touch()
        os.utime(stamp, (1_700_000_100, 1_700_000_100))
    if changed is not None:
        os.utime(tmp_path / changed, (1_700_000_200, 1_700_000_200))
    return tmp_path


@pytest.mark.parametrize("target", ["test", "lab"])
def test_make_reuses_an_up_to_date_venv(tmp_path, target):
    lines = _make_dry_run(_project_copy(tmp_path, "installed"), target)
    assert not _pip_installs(lines), f"`make {target}` would reinstall: {lines}"
    assert not any("-m venv" in line for line in lines), lines
    assert len(lines) == 1, f"`make {target}` should only run its command: {lines}"


@pytest.mark.parametrize("changed", ["pyproject.toml", "constraints/ci.txt"])
@pytest.mark.parametrize("target", ["test", "lab"])
def test_make_reinstalls_when_pyproject_or_constraints_change(tmp_path, target, changed):
    lines = _make_dry_run(_project_copy(tmp_path, "installed", changed), target)
    assert _pip_installs(lines), f"`make {target}` should reinstall after {changed}: {lines}"


def test_make_in_this_checkout_reinstalls_only_when_stale():
    stamp = REPO / ".venv" / ".installed"
    newest_input = max(PYPROJECT.stat().st_mtime, CONSTRAINTS.stat().st_mtime)
    up_to_date = stamp.exists() and stamp.stat().st_mtime >= newest_input
    for target in ("test", "lab"):
        installs = _pip_installs(_make_dry_run(REPO, target))
        if up_to_date:
            assert not installs, f"`make {target}` would reinstall an up-to-date venv: {installs}"
        else:
            assert installs, f"`make {target}` would not install into a stale venv"


def test_make_test_sets_up_from_nothing(tmp_path):
    lines = _make_dry_run(_project_copy(tmp_path), "test")
    creates = [line for line in lines if re.search(r"-m venv \.venv\b", line)]
    assert creates, f"`make test` should create .venv on a fresh machine: {lines}"
    installs = [shlex.split(line) for line in _pip_installs(lines)]
    project_installs = [words for words in installs if ".[all]" in words]
    assert project_installs, f"`make test` should install '.[all]': {lines}"
    words = project_installs[0]
    assert "--constraint" in words, f"the install should use the CI constraints: {words}"
    assert words[words.index("--constraint") + 1] == "constraints/ci.txt", words
    assert any("-m pytest" in line for line in lines), lines
    order = [lines.index(creates[0]), lines.index(" ".join(shlex.quote(w) for w in words))]
    assert order == sorted(order), "the venv must exist before the install"


def test_make_lab_passes_lab_args_and_serves_notebooks():
    lines = _make_dry_run(REPO, "lab", "LAB_ARGS=--no-browser")
    labs = [shlex.split(line) for line in lines if re.search(r"jupyter lab\b", line)]
    assert len(labs) == 1, f"`make lab` should start JupyterLab once: {lines}"
    words = labs[0]
    assert Path(words[0]).name == "jupyter" and words[1] == "lab", words
    assert "--ServerApp.root_dir=notebooks" in words, words
    assert "--no-browser" in words, words


# --- imports stay framework-free and cheap ----------------------------------------------


CORE_MODULES = (
    "course",
    "course.checks",
    "course.config",
    "course.runtime",
    "course.data",
    "course.files",
    "course.adapters",
    "course.metrics",
    "course.sampling",
    "course.autograd",
    "course.tokenizers",
    "course.viz",
    "course.torch",  # the package itself; course.torch.data imports torch, as it should
    "course.tf",
    "autograde",
    "autograde.notebooks",
)


def test_core_imports_without_frameworks():
    # A fresh interpreter, so nothing imported by other tests counts.
    code = textwrap.dedent(
        f"""\
        import importlib, json, sys, time
        seconds = {{}}
        for name in {CORE_MODULES!r}:
            start = time.perf_counter()
            importlib.import_module(name)
            seconds[name] = time.perf_counter() - start
        frameworks = sorted(
            name for name in sys.modules
            if name.split(".")[0] in ("torch", "tensorflow", "keras", "jax")
        )
        print(json.dumps({{"seconds": seconds, "frameworks": frameworks}}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["frameworks"] == [], f"the core imported {report['frameworks'][:10]}"
    assert set(report["seconds"]) == set(CORE_MODULES)


# --- Binder -----------------------------------------------------------------------------


def _binder_requirements() -> tuple[list[str], list[Requirement]]:
    text = (BINDER / "requirements.txt").read_text()
    options = [line.strip() for line in text.splitlines() if line.strip().startswith("-")]
    return options, [Requirement(line) for line in requirement_lines(text)]


def test_binder_uses_the_pytorch_cpu_index_and_tensorflow_cpu():
    options, reqs = _binder_requirements()
    indexes = [
        words[1]
        for words in map(str.split, options)
        if words[0] in ("--index-url", "--extra-index-url", "-i") and len(words) == 2
    ]
    assert "https://download.pytorch.org/whl/cpu" in indexes, options
    names = {norm(req.name) for req in reqs}
    assert "torch" in names
    assert "tensorflow-cpu" in names
    assert "tensorflow" not in names, "the full tensorflow wheel does not fit Binder's 2 GB"


def test_binder_installs_what_learners_import():
    # postBuild installs the course with --no-deps: requirements.txt must bring the rest.
    names = {norm(req.name) for req in _binder_requirements()[1]}
    binder_env = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.11"}
    groups = {k: v for k, v in dependency_groups().items() if k in ("core", "torch", "tf")}
    missing = [
        str(req)
        for group, req in third_party(groups)
        if req.marker is None or req.marker.evaluate({**binder_env, "extra": group})
        if norm(req.name) not in names
    ]
    assert not missing, f"binder/requirements.txt lacks {missing}"


def test_binder_pins_agree_with_ci_constraints():
    pins = constraint_pins()
    disagree = [
        f"{req} (ci: {pins.get(norm(req.name))})"
        for req in _binder_requirements()[1]
        for spec in req.specifier
        # Binder names the CPU build explicitly (+cpu); CI's pin is the same release.
        if spec.operator == "==" and pins.get(norm(req.name)) != Version(spec.version).public
    ]
    assert not disagree, f"binder/requirements.txt and constraints/ci.txt disagree: {disagree}"


def test_binder_post_build_installs_the_package():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild should be executable"
    commands = [
        shlex.split(line)
        for line in post_build.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    installs = [
        words
        for words in commands
        if "pip" in words[:3] and "install" in words and "." in words[words.index("install") :]
    ]
    assert installs, f"binder/postBuild should `pip install .`: {commands}"


def test_binder_runtime_is_python_3_11():
    assert (BINDER / "runtime.txt").read_text().strip() == "python-3.11"


def _readme_urls(host: str) -> list[str]:
    return re.findall(r"\((https://" + re.escape(host) + r"/[^)\s]+)\)", README.read_text())


def test_readme_binder_badge_opens_lab_at_notebooks():
    urls = [url for url in _readme_urls("mybinder.org") if "/v2/" in url]
    assert len(urls) == 1, f"README should have one Binder launch link: {urls}"
    query = parse_qs(urlparse(urls[0]).query)
    assert query.get("urlpath") == ["lab/tree/notebooks"], urls[0]
    assert "[![Binder](https://mybinder.org/badge_logo.svg)](" in README.read_text()


# --- Colab badges -----------------------------------------------------------------------

COLAB = re.compile(
    r"https://colab\.research\.google\.com/github/(?P<repo>[^/]+/[^/]+)/blob/(?P<ref>[^/]+)/"
    r"(?P<path>\S+\.ipynb)"
)


def _colab_links() -> list[re.Match]:
    return [m for url in _readme_urls("colab.research.google.com") if (m := COLAB.fullmatch(url))]


def test_every_notebook_has_a_colab_badge():
    notebooks = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "notebooks").rglob("*.ipynb")
        if ".ipynb_checkpoints" not in path.parts
    )
    assert notebooks, "notebooks/ holds no notebook"
    for path in notebooks:
        assert re.fullmatch(r"notebooks/[^/]+/[^/]+\.ipynb", path), (
            f"{path} should be notebooks/<assignment>/<name>.ipynb"
        )
    linked = {m["path"] for m in _colab_links()}
    missing = [path for path in notebooks if path not in linked]
    assert not missing, f"README has no Colab badge for {missing}"
    dangling = sorted(linked - set(notebooks))
    assert not dangling, f"README's Colab badges point at missing notebooks: {dangling}"


def test_colab_and_binder_point_at_the_same_repository():
    binder = [url for url in _readme_urls("mybinder.org") if "/v2/gh/" in url]
    parts = urlparse(binder[0]).path.split("/")  # ['', 'v2', 'gh', owner, repo, ref]
    binder_repo, binder_ref = f"{parts[3]}/{parts[4]}", parts[5]
    for match in _colab_links():
        assert (match["repo"], match["ref"]) == (binder_repo, binder_ref), match.group(0)


# --- ruff -------------------------------------------------------------------------------


def _ruff() -> str:
    beside_python = Path(sys.executable).parent / "ruff"
    found = str(beside_python) if beside_python.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed (it is in the `dev` extra)")
    return found


@pytest.mark.parametrize(
    "command", [["check", "--no-cache", "."], ["format", "--check", "--no-cache", "."]]
)
def test_ruff_passes(command):
    result = subprocess.run(
        [_ruff(), *command], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"ruff {' '.join(command)}:\n{result.stdout}{result.stderr}"


# --- what the code imports is declared ---------------------------------------------------


FIRST_PARTY = ("course", "kernels", "autograde")


def _third_party_imports(*folders: str) -> dict[str, list[str]]:
    """{top-level module: files importing it} for the non-stdlib, non-project imports."""
    found: dict[str, list[str]] = {}
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for top in {name.split(".")[0] for name in names}:
                    if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                        found.setdefault(top, []).append(path.relative_to(REPO).as_posix())
    return found


def test_every_direct_import_is_declared():
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    declared = {norm(req.name) for _, req in third_party(dependency_groups())}
    undeclared = []
    for module, files in _third_party_imports(*FIRST_PARTY).items():
        dists = {norm(name) for name in providers.get(module, [module])}
        dists |= {alias for dist in dists for alias in ALSO_SATISFIED_BY.get(dist, ())}
        dists |= {name for name, aliases in ALSO_SATISFIED_BY.items() if dists & set(aliases)}
        if not dists & declared:
            undeclared.append(f"{module} ({', '.join(sorted(dists))}; {files[0]})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_core_leaves_jupyterlab_to_the_lab_extra():
    core = {norm(Requirement(item).name) for item in dependency_groups()["core"]}
    assert not core & {"jupyterlab", "notebook"}, "Colab's setup cell must not install JupyterLab"
    lab = {norm(Requirement(item).name) for item in dependency_groups()["lab"]}
    assert "jupyterlab" in lab


# --- console scripts --------------------------------------------------------------------

# Each console script, and the `python -m` command it is.
CONSOLE_SCRIPTS = {
    "twin-gpt-train": "course.train",
    "twin-gpt-sample": "course.sample",
    "twin-gpt-export": "course.export",
    "twin-gpt-compare": "course.compare",
    "twin-gpt-autograde": "autograde",
}


def _scripts() -> dict[str, str]:
    return pyproject()["project"]["scripts"]


def test_console_scripts_run_what_python_m_runs():
    import importlib.util

    assert set(_scripts()) == set(CONSOLE_SCRIPTS), sorted(_scripts())
    for script, command in CONSOLE_SCRIPTS.items():
        spec = importlib.util.find_spec(command)
        ran = f"{command}.__main__" if spec.submodule_search_locations is not None else command
        assert _scripts()[script] == f"{ran}:main", (script, _scripts()[script])


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_console_script_entry_point_prints_help(script, capsys):
    from importlib.metadata import EntryPoint

    main = EntryPoint(script, _scripts()[script], "console_scripts").load()
    assert callable(main)
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("script", sorted(CONSOLE_SCRIPTS))
def test_installed_console_script_prints_help(script, tmp_path):
    beside_python = Path(sys.executable).parent / script
    found = str(beside_python) if beside_python.exists() else shutil.which(script)
    assert found, f"{script} is not installed: reinstall (`make`, or `pip install --no-deps -e .`)"
    result = subprocess.run(
        [found, "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:"), result.stdout[:200]


# --- one repository address and tag: setup cells, badges --------------------------------

SOLUTIONS = REPO / "solutions"
CHAPTERS = sorted(p.stem for p in SOLUTIONS.glob("*/*.py") if p.stem == p.parent.name)
EXTRAS_LINE = re.compile(r"^ *extras = (?P<literal>\{.*\})", re.M)
INSTALL = re.compile(
    r'f"(?P<name>[\w.-]+)\[\{missing\}\] @ git\+(?P<url>https://[^@"\s]+)@(?P<tag>[^"\s]+)"'
)
# What a chapter's source shows it uses, per extra.
USES = {
    "torch": re.compile(r"^ *(import torch\b|from torch\b|from course\.torch\b)", re.M),
    "tf": re.compile(
        r"import_tensorflow\(|import_keras\(|^ *(import tensorflow|from course\.tf\b)", re.M
    ),
    "triton": re.compile(
        r"^ *(import triton\b|from triton\b|from kernels\b|import kernels\b)", re.M
    ),
    "export": re.compile(r"^ *(import|from) (onnx|onnxruntime|onnxscript|ai_edge_litert)\b", re.M),
}
# course.compare (chapter 11) runs both frameworks, the Triton kernel and every export in
# worker processes of its own: a chapter that imports it uses every extra without importing
# any of them itself.
USES_EVERY_EXTRA = re.compile(r"^ *from course import compare\b", re.M)


def _published() -> tuple[str, str, str]:
    """(repository, owner/name, tag) as pyproject.toml gives them."""
    project = pyproject()["project"]
    repository = project["urls"]["Repository"]
    match = re.fullmatch(r"https://github\.com/([\w.-]+/[\w.-]+)", repository)
    assert match, f"[project.urls] Repository should be a GitHub repository: {repository}"
    return repository, match[1], f"v{project['version']}"


def _cell_source(cell: dict) -> str:
    source = cell["source"]
    return "".join(source) if isinstance(source, list) else source


def _setup_cells(chapter: str) -> dict[str, str]:
    """{file: its setup cell's source}: the script, the solution and the release notebooks."""
    script = SOLUTIONS / chapter / f"{chapter}.py"
    text = script.read_text(encoding="utf-8")
    cells = re.split(r"^# %%.*\n", text, flags=re.M)
    found = {script.relative_to(REPO).as_posix(): cells[1].strip()}
    for folder in (SOLUTIONS, REPO / "notebooks"):
        notebook = folder / chapter / f"{chapter}.ipynb"
        first = json.loads(notebook.read_text(encoding="utf-8"))["cells"][0]
        found[notebook.relative_to(REPO).as_posix()] = _cell_source(first).strip()
    return found


def _chapter_extras(chapter: str) -> dict[str, str]:
    cell = _setup_cells(chapter)[f"solutions/{chapter}/{chapter}.py"]
    match = EXTRAS_LINE.search(cell)
    assert match, f"{chapter}: the setup cell names no `extras = {{...}}`"
    return ast.literal_eval(match["literal"])


def test_pyproject_names_the_repository():
    repository, _, tag = _published()
    urls = pyproject()["project"]["urls"]
    assert urls.get("Homepage"), "[project.urls] has no Homepage"
    assert re.fullmatch(r"v\d+\.\d+\.\d+\S*", tag), tag


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_setup_cells_install_the_tagged_release(chapter):
    repository, _, tag = _published()
    cells = _setup_cells(chapter)
    assert len(set(cells.values())) == 1, f"{chapter}: the setup cells differ: {sorted(cells)}"
    cell = next(iter(cells.values()))
    installs = INSTALL.findall(cell)
    assert len(installs) == 1, f"{chapter}: the setup cell should install one requirement"
    name, url, ref = installs[0]
    assert (name, url, ref) == (PROJECT, repository, tag), (
        f"{chapter} installs {name} from {url}@{ref}; pyproject.toml says {repository}@{tag} "
        "(run `python -m autograde release`)"
    )
    assert 'find_spec("course") is None' in cell


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_setup_cells_list_the_extras_the_chapter_imports(chapter):
    from importlib.metadata import packages_distributions

    extras = _chapter_extras(chapter)
    script = (SOLUTIONS / chapter / f"{chapter}.py").read_text(encoding="utf-8")
    body = script.split(_setup_cells(chapter)[f"solutions/{chapter}/{chapter}.py"], 1)[1]
    uses = {extra for extra, pattern in USES.items() if pattern.search(body)}
    if USES_EVERY_EXTRA.search(body):
        uses = set(USES)
    assert set(extras) == uses, f"{chapter} lists the extras {sorted(extras)}, uses {sorted(uses)}"
    # Each extra names the module it installs: the cell skips the extra where it is there.
    optional = pyproject()["project"]["optional-dependencies"]
    providers = packages_distributions()
    for extra, module in extras.items():
        dists = {norm(name) for name in providers.get(module, [])}
        listed = {norm(Requirement(item).name) for item in optional[extra]}
        assert dists & listed, f"{chapter}: the {extra} extra does not install {module}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_colab_badges_open_their_own_notebook_at_the_tag(chapter):
    _, slug, tag = _published()
    expected = f"{slug}/blob/{tag}/notebooks/{chapter}/{chapter}.ipynb"
    for folder, suffix in (
        (SOLUTIONS, ".py"),
        (SOLUTIONS, ".ipynb"),
        (REPO / "notebooks", ".ipynb"),
    ):
        text = (folder / chapter / f"{chapter}{suffix}").read_text(encoding="utf-8")
        links = [m["repo"] + "/blob/" + m["ref"] + "/" + m["path"] for m in COLAB.finditer(text)]
        assert links, f"{folder.name}/{chapter}{suffix} has no Colab badge"
        assert set(links) == {expected}, f"{folder.name}/{chapter}{suffix}: {links}"


def test_readme_badges_point_at_the_tagged_release():
    _, slug, tag = _published()
    for match in _colab_links():
        assert (match["repo"], match["ref"]) == (slug, tag), match.group(0)
    binder = [url for url in _readme_urls("mybinder.org") if "/v2/gh/" in url]
    assert urlparse(binder[0]).path == f"/v2/gh/{slug}/{tag}", binder[0]


# --- binder/ is generated ---------------------------------------------------------------


def _binder_python() -> str:
    return (BINDER / "runtime.txt").read_text().strip().removeprefix("python-")


def test_binder_requirements_are_generated_from_pyproject_and_constraints():
    from autograde import launch

    extras = {extra for chapter in CHAPTERS for extra in _chapter_extras(chapter)}
    fresh = launch.binder_requirements(
        pyproject(), CONSTRAINTS.read_text(), extras, _binder_python()
    )
    assert (BINDER / "requirements.txt").read_text() == fresh, (
        "binder/requirements.txt is stale: run `python -m autograde release`"
    )


def test_binder_installs_only_what_the_released_chapters_use():
    used = {"core", "lab"} | {extra for chapter in CHAPTERS for extra in _chapter_extras(chapter)}
    groups = {group: items for group, items in dependency_groups().items() if group in used}
    allowed = {norm(req.name) for _, req in third_party(groups)}
    extra = sorted({norm(req.name) for req in _binder_requirements()[1]} - allowed)
    assert not extra, f"binder/requirements.txt installs {extra}, which no released chapter uses"


# --- the release step writes them -------------------------------------------------------


BINDER_FILES = ("requirements.txt", "runtime.txt")


def _project_tree(tmp_path: Path, chapter: str, repository: str, version: str) -> Path:
    """pyproject.toml (with another repository and version), README, constraints, binder/ and
    one chapter script, copied into tmp_path; returns its solutions folder."""
    text = PYPROJECT.read_text()
    text = re.sub(r'^version = ".*"$', f'version = "{version}"', text, count=1, flags=re.M)
    text = re.sub(r'^(Homepage|Repository) = ".*"$', rf'\1 = "{repository}"', text, flags=re.M)
    (tmp_path / "pyproject.toml").write_text(text)
    for name in ("README.md", "constraints/ci.txt", *(f"binder/{f}" for f in BINDER_FILES)):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / name, tmp_path / name)
    script = SOLUTIONS / chapter / f"{chapter}.py"
    (tmp_path / "solutions" / chapter).mkdir(parents=True)
    shutil.copyfile(script, tmp_path / "solutions" / chapter / script.name)
    return tmp_path / "solutions"


def test_release_step_writes_the_repository_and_tag_everywhere(tmp_path):
    from autograde import launch

    chapter = "04_attention"  # its setup cell lists only the torch extra
    assert set(_chapter_extras(chapter)) == {"torch"}
    solutions = _project_tree(tmp_path, chapter, "https://github.com/someone/fork", "2.1.0")
    before = (solutions / chapter / f"{chapter}.py").read_text()
    changed = launch.update(solutions, log=lambda msg: None)
    assert {path.relative_to(tmp_path).as_posix() for path in changed} == {
        f"solutions/{chapter}/{chapter}.py",
        "README.md",
        "binder/requirements.txt",
    }
    after = (solutions / chapter / f"{chapter}.py").read_text()
    assert 'f"twin-gpt[{missing}] @ git+https://github.com/someone/fork@v2.1.0"' in after
    badge = f"github/someone/fork/blob/v2.1.0/notebooks/{chapter}/{chapter}.ipynb"
    assert badge in after
    changed_lines = set(after.splitlines()) ^ set(before.splitlines())
    assert len(changed_lines) == 4, changed_lines  # the install line and the badge, old and new
    readme = (tmp_path / "README.md").read_text()
    assert "https://mybinder.org/v2/gh/someone/fork/v2.1.0?urlpath=lab/tree/notebooks" in readme
    assert "/twin-gpt/twin-gpt/" not in readme
    binder = (tmp_path / "binder" / "requirements.txt").read_text()
    names = {norm(Requirement(line).name) for line in requirement_lines(binder)}
    assert "torch" in names and "tensorflow-cpu" not in names  # chapter 04 alone needs no TF
    assert launch.update(solutions, log=lambda msg: None) == [], "a second release changes nothing"


def test_release_step_refuses_a_setup_cell_without_extras(tmp_path):
    from autograde import launch

    solutions = _project_tree(tmp_path, "05_gpt", "https://github.com/twin-gpt/twin-gpt", "0.1.0")
    script = solutions / "05_gpt" / "05_gpt.py"
    script.write_text(re.sub(r"^ *extras = .*\n", "", script.read_text(), count=1, flags=re.M))
    with pytest.raises(launch.LaunchError, match=r"05_gpt\.py.*extras"):
        launch.update(solutions, log=lambda msg: None)


# --- jupytext pairs solutions/, never notebooks/ ----------------------------------------


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_jupytext_pairs_solutions_and_never_the_release(chapter):
    from jupytext.config import find_jupytext_configuration_file, load_jupytext_config
    from jupytext.paired_paths import paired_paths

    def paired(notebook: Path) -> set[Path]:
        config_file = find_jupytext_configuration_file(str(notebook.parent))
        assert config_file and Path(config_file).is_relative_to(REPO), (
            f"{notebook}: no configuration of the project's applies (found {config_file})"
        )
        formats = load_jupytext_config(str(notebook)).default_formats(str(notebook))
        return {Path(path) for path, _ in paired_paths(str(notebook), "ipynb", formats)}

    solution = SOLUTIONS / chapter / f"{chapter}.ipynb"
    assert paired(solution) == {solution, solution.with_suffix(".py")}
    release = REPO / "notebooks" / chapter / f"{chapter}.ipynb"
    assert paired(release) == {release}, "notebooks/ must never be paired with a script"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_saving_a_paired_solution_keeps_its_script(chapter):
    """A solution saved from JupyterLab after running writes back the same script."""
    import jupytext
    from jupytext.config import load_jupytext_config

    script = SOLUTIONS / chapter / f"{chapter}.py"
    config = load_jupytext_config(str(script.with_suffix(".ipynb")))
    nb = jupytext.read(script, config=config)
    nb.metadata["language_info"] = {"name": "python", "version": "3.11.7"}  # what a run adds
    for cell in nb.cells:
        cell.metadata["editable"] = True
        cell.metadata["slideshow"] = {"slide_type": ""}
    assert jupytext.writes(nb, fmt="py:percent", config=config) == script.read_text()


def test_ruff_lints_the_chapter_scripts_and_no_notebook():
    result = subprocess.run(
        [_ruff(), "check", "--show-files", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    files = {Path(line.strip()).resolve() for line in result.stdout.splitlines() if line.strip()}
    scripts = {(SOLUTIONS / chapter / f"{chapter}.py").resolve() for chapter in CHAPTERS}
    assert scripts <= files, f"ruff does not lint {sorted(scripts - files)}"
    notebooks = sorted(path for path in files if path.suffix == ".ipynb")
    assert not notebooks, f"ruff lints notebooks (the scripts are the source): {notebooks[:3]}"
