"""Launch paths: where the course is published, and what each way of opening it installs.

pyproject.toml is the one source: ``[project.urls] Repository`` is the repository's address
and ``v<version>`` its release tag. ``update`` (run by ``python -m autograde release``)
writes them, and nothing else does, into:

- every chapter's setup cell (cell 1 of ``solutions/NN_topic/NN_topic.py``). Where the
  course library is missing (Colab), it installs ``twin-gpt[<extras>] @ git+<repository>@<tag>``
  with the extras the chapter lists in the cell's ``extras = {...}`` line, less those whose
  framework is already there: Colab keeps its own PyTorch and TensorFlow (the ``tf``
  extra's ``tensorflow-cpu`` is another distribution, which pip would put over them);
- the Colab badges (a chapter's title cell, README.md's chapter table) and README.md's
  Binder badge, all at the tag, so that a notebook and the library it installs come from
  one commit;
- ``binder/requirements.txt``: the core dependencies, JupyterLab and the extras the chapters
  list, pinned as ``constraints/ci.txt`` pins them, with CPU-only wheels.

The chapter's ``extras`` line is the one place that says what a chapter needs; the rest of
the setup cell is rewritten from ``SETUP_CELL``.
"""

from __future__ import annotations

import ast
import json
import re
import textwrap
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .workspace import REPO, SOLUTIONS

# The extras a chapter may list, and the module each installs: the setup cell skips an
# extra whose module is already importable (Colab's preinstalled frameworks).
EXTRA_MODULES = {
    "torch": "torch",
    "tf": "tensorflow",
    "triton": "triton",
    "export": "ai_edge_litert",
}
# Installed on Binder whatever the chapters list: JupyterLab is how learners open them there.
BINDER_EXTRAS = ("lab",)
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

SETUP_CELL = """\
# Twin GPT · {title}
# Run this cell first. On Colab it installs the course library with this chapter's extras,
# keeping Colab's own PyTorch and TensorFlow; on your machine or on Binder the library is
# already there and nothing is installed.
import importlib.util
import subprocess
import sys

if importlib.util.find_spec("course") is None:
    extras = {extras}  # extra: the module it installs
    missing = ",".join(e for e, module in extras.items() if not importlib.util.find_spec(module))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q",
         f"{name}[{{missing}}] @ {url}"],
        check=True,
    )
from course import runtime

print(runtime.versions_line())
"""

_CELL_MARKER = re.compile(r"^# %%.*$", re.M)
_SETUP_MARKER = re.compile(r'^# %%.*"grade_id": "setup"', re.M)
_TITLE = re.compile(r"\A# Twin GPT · (?P<title>.+)$", re.M)
_EXTRAS = re.compile(r"^\s*extras = (?P<literal>\{.*?\})", re.M)
_COLAB = re.compile(
    r"https://colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/[\w.-]+/"
    r"(?P<path>[\w./-]+\.ipynb)"
)
_BINDER = re.compile(r"https://mybinder\.org/v2/gh/[\w.-]+/[\w.-]+/[\w.-]+(?P<query>\?[^)\s]*)?")
_GITHUB = re.compile(r"https://github\.com/(?P<slug>[\w.-]+/[\w.-]+?)(?:\.git)?/?")


class LaunchError(ValueError):
    """pyproject.toml, a constraint or a chapter's setup cell that the release cannot use."""


@dataclass(frozen=True)
class Project:
    """Where the course is published: its GitHub repository and release version."""

    name: str  # the distribution's name, as pip installs it
    repository: str  # https://github.com/<owner>/<name>
    version: str

    @property
    def slug(self) -> str:
        """``owner/name`` on GitHub."""
        match = _GITHUB.fullmatch(self.repository)
        if match is None:
            raise LaunchError(
                f"pyproject.toml: [project.urls] Repository = {self.repository!r} should be "
                "https://github.com/<owner>/<name> (Colab and Binder open GitHub repositories)"
            )
        return match["slug"]

    @property
    def tag(self) -> str:
        return f"v{self.version}"

    def install_url(self) -> str:
        """The pip direct reference of the tagged library: ``git+https://...@v<version>``."""
        return f"git+https://github.com/{self.slug}@{self.tag}"

    def colab_url(self, notebook: str) -> str:
        """Colab's address of ``notebook`` (a path in the repository) at the tag."""
        return f"https://colab.research.google.com/github/{self.slug}/blob/{self.tag}/{notebook}"

    def binder_url(self, query: str = "?urlpath=lab/tree/notebooks") -> str:
        return f"https://mybinder.org/v2/gh/{self.slug}/{self.tag}{query}"


def read_pyproject(root: Path = REPO) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))


def project(pyproject: dict) -> Project:
    meta = pyproject["project"]
    repository = meta.get("urls", {}).get("Repository")
    if not repository:
        raise LaunchError("pyproject.toml: [project.urls] has no Repository")
    return Project(name=meta["name"], repository=repository, version=meta["version"])


# --- the setup cell ----------------------------------------------------------------------


@dataclass(frozen=True)
class SetupCell:
    """Where a chapter script's setup cell sits, and what it says."""

    start: int  # offset of the cell's source (after its `# %%` line)
    end: int  # offset where its source ends (trailing blank lines excluded)
    title: str
    extras: tuple[str, ...]


def find_setup_cell(script: Path, text: str | None = None) -> SetupCell | None:
    """The setup cell of a chapter script, or None if the script has none."""
    text = script.read_text(encoding="utf-8") if text is None else text
    marker = _SETUP_MARKER.search(text)
    if marker is None:
        return None
    start = text.index("\n", marker.end()) + 1
    following = _CELL_MARKER.search(text, start)
    end = following.start() if following else len(text)
    source = text[start:end].rstrip("\n")
    title, extras = _TITLE.search(source), _EXTRAS.search(source)
    if title is None or extras is None:
        raise LaunchError(
            f"{script}: the setup cell should begin with '# Twin GPT · <title>' and name the "
            "chapter's extras in an `extras = {...}` line (autograde/launch.py, SETUP_CELL)"
        )
    try:
        names = tuple(ast.literal_eval(extras["literal"]))
    except (ValueError, SyntaxError) as err:
        raise LaunchError(f"{script}: cannot read {extras['literal']!r} ({err})") from err
    unknown = sorted(set(names) - set(EXTRA_MODULES))
    if unknown:
        raise LaunchError(
            f"{script}: the setup cell lists the extra(s) {unknown}; a chapter's extras are "
            f"{sorted(EXTRA_MODULES)}"
        )
    return SetupCell(start, start + len(source), title["title"].strip(), names)


def setup_cell(title: str, extras: Iterable[str], proj: Project) -> str:
    """The source of a chapter's setup cell (no trailing newline)."""
    modules = json.dumps({extra: EXTRA_MODULES[extra] for extra in extras})
    text = SETUP_CELL.format(title=title, extras=modules, name=proj.name, url=proj.install_url())
    return text.rstrip("\n")


def chapter_extras(solutions: Path = SOLUTIONS) -> dict[str, tuple[str, ...]]:
    """{chapter: the extras its setup cell lists}, for every chapter script that has one."""
    found = {}
    for script in sorted(solutions.glob("*/*.py")):
        if script.stem == script.parent.name and (cell := find_setup_cell(script)) is not None:
            found[script.stem] = cell.extras
    return found


def rewrite_script(text: str, script: Path, proj: Project) -> str:
    """A chapter script with its setup cell and Colab badges written from ``proj``."""
    cell = find_setup_cell(script, text)
    if cell is not None:
        fresh = setup_cell(cell.title, cell.extras, proj)
        text = text[: cell.start] + fresh + text[cell.end :]
    return _COLAB.sub(lambda m: proj.colab_url(m["path"]), text)


def rewrite_readme(text: str, proj: Project) -> str:
    """README.md with its Colab and Binder badges at ``proj``'s repository and tag."""
    text = _COLAB.sub(lambda m: proj.colab_url(m["path"]), text)
    return _BINDER.sub(lambda m: proj.binder_url(m["query"] or ""), text)


# --- binder/ -----------------------------------------------------------------------------


def constraint_pins(text: str) -> dict[str, str]:
    """{normalized name: version} of the ``name==version`` lines of a constraints file."""
    from packaging.utils import canonicalize_name

    pins = {}
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line and "==" in line and not line.startswith("-"):
            name, version = (part.strip() for part in line.split("==", 1))
            pins[canonicalize_name(name)] = version
    return pins


def binder_requirements(
    pyproject: dict, constraints: str, extras: Iterable[str], python: str = "3.11"
) -> str:
    """binder/requirements.txt: what the core, JupyterLab and ``extras`` install on Binder
    (Linux x86_64, CPU only), each pinned to its version in ``constraints``."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    name = canonicalize_name(pyproject["project"]["name"])
    optional = pyproject["project"]["optional-dependencies"]
    wanted = set(extras) | set(BINDER_EXTRAS)
    unknown = sorted(wanted - set(optional))
    if unknown:
        raise LaunchError(f"pyproject.toml has no extra(s) {unknown}")
    groups = [("core", pyproject["project"]["dependencies"])]
    groups += [(extra, items) for extra, items in optional.items() if extra in wanted]
    binder = {"sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64"}
    binder |= {"python_version": python, "python_full_version": f"{python}.0"}
    pins = constraint_pins(constraints)
    lines: list[str] = []
    for group, items in groups:
        for item in items:
            req = Requirement(item)
            key = canonicalize_name(req.name)
            if key == name or (req.marker and not req.marker.evaluate({**binder, "extra": group})):
                continue
            if key not in pins:
                raise LaunchError(f"constraints/ci.txt pins no version of {req.name} ({group})")
            local = "+cpu" if key == "torch" else ""  # the build from the PyTorch CPU index
            line = f"{req.name}=={pins[key]}{local}"
            if line not in lines:
                lines.append(line)
    about = (
        "Generated by `python -m autograde release` from pyproject.toml and constraints/ci.txt:"
        " edit those and release again. The core, JupyterLab and the extras the chapters'"
        f" setup cells list ({', '.join(sorted(set(extras))) or 'none'}), at the versions"
        " constraints/ci.txt pins. CPU-only wheels, so that the image fits Binder's 2 GB of"
        " memory: torch comes from the PyTorch CPU wheel index (the default wheel on Linux"
        " carries CUDA)."
    )
    header = textwrap.wrap(about, width=88, initial_indent="# ", subsequent_indent="# ")
    header.append(f"--extra-index-url {TORCH_CPU_INDEX}")
    return "\n".join(header + lines) + "\n"


# --- the release step --------------------------------------------------------------------


def _write(path: Path, text: str, changed: list[Path]) -> None:
    if path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
        changed.append(path)


def update(
    solutions: Path = SOLUTIONS,
    names: list[str] | None = None,
    log: Callable[[str], object] = print,
) -> list[Path]:
    """Write the repository address and tag from pyproject.toml into the setup cells and
    badges of the chapters ``names`` (all by default) and README.md, and regenerate
    binder/requirements.txt; return the files changed.

    The project is the folder holding ``solutions``; a course folder without a
    pyproject.toml beside it (a scratch copy) publishes nothing, and nothing is written.
    """
    root = solutions.parent
    if not (root / "pyproject.toml").is_file():
        return []
    pyproject = read_pyproject(root)
    proj = project(pyproject)
    changed: list[Path] = []
    for script in sorted(solutions.glob("*/*.py")):
        if script.stem == script.parent.name and (names is None or script.stem in names):
            text = script.read_text(encoding="utf-8")
            _write(script, rewrite_script(text, script, proj), changed)
    readme = root / "README.md"
    if readme.is_file():
        _write(readme, rewrite_readme(readme.read_text(encoding="utf-8"), proj), changed)
    binder, constraints = root / "binder" / "requirements.txt", root / "constraints" / "ci.txt"
    runtime = root / "binder" / "runtime.txt"  # Binder's Python: "python-3.11"
    if binder.is_file() and constraints.is_file() and runtime.is_file():
        python = runtime.read_text().strip().removeprefix("python-")
        extras = {extra for names in chapter_extras(solutions).values() for extra in names}
        fresh = binder_requirements(pyproject, constraints.read_text(), extras, python)
        _write(binder, fresh, changed)
    for path in changed:
        log(f"wrote {path.relative_to(root)}")
    return changed
