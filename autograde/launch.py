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

``solutions/chapters.toml`` is the one source of each chapter's card: its title, learning
objectives, prerequisites, time and three end-of-chapter questions. Where it exists, the same
step writes from it (see "the chapter cards" below):

- the chapter's title cell, the markdown cell right after the parameters cell: its heading
  and, below the Colab badge, the card between two ``<!-- -->`` markers. Cell 1 stays the
  setup cell (Colab learners run it first) and cell 2 the parameters cell;
- the chapter's last cell, "Check yourself": the three questions;
- README.md's chapter table, between its two ``<!-- -->`` markers: title, summary and time.
"""

from __future__ import annotations

import ast
import json
import math
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


# --- the chapter cards --------------------------------------------------------------------

CARDS_FILE = "chapters.toml"  # in solutions/, beside the chapters it describes
CARD_BEGIN = "<!-- chapter card: written by `python -m autograde release` from {source} -->"
CARD_END = "<!-- end of the chapter card -->"
QUESTIONS_HEADING = "## Check yourself"
QUESTIONS_NOTE = "<!-- written by `python -m autograde release` from {source} -->"
TABLE_BEGIN = "<!-- chapter table: written by `python -m autograde release` from {source} -->"
TABLE_END = "<!-- end of the chapter table -->"
WRAP = 90  # the chapters' markdown is wrapped near 90 columns
OBJECTIVES = (3, 5)  # how many learning objectives a card lists
QUESTIONS = 3

_PARAMETERS_MARKER = re.compile(r'^# %%.*"grade_id": "parameters"', re.M)
_MARKDOWN_MARKER = re.compile(r"^# %% \[markdown\].*$", re.M)
_HEADING = re.compile(r"\A# # (?P<number>\d+) · (?P<title>.+)$", re.M)
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_LINK_TARGET = re.compile(r"\]\([^)]*\)")
_CARD_BLOCK = re.compile(
    "^# "
    + re.escape(CARD_BEGIN).replace(re.escape("{source}"), ".*?")
    + "$.*?^# "
    + re.escape(CARD_END)
    + "$\n?",
    re.M | re.S,
)


@dataclass(frozen=True)
class Card:
    """What solutions/chapters.toml says about one chapter."""

    name: str  # the assignment: "04_attention"
    title: str
    summary: str  # README's "what you build"
    objectives: tuple[str, ...]
    chapters: tuple[str, ...]  # earlier chapters to have done first
    knowledge: str  # what to know from outside the course
    questions: tuple[str, ...]
    run_seconds: float | None  # measured full-size run; None: not measured

    @property
    def number(self) -> str:
        return self.name.split("_", 1)[0]


@dataclass(frozen=True)
class CardBook:
    """solutions/chapters.toml: every chapter's card, and how its time is estimated."""

    path: Path
    cards: dict[str, Card]
    words_per_minute: float
    minutes_per_exercise: float

    @property
    def source(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}"

    def card(self, name: str) -> Card:
        if name not in self.cards:
            raise LaunchError(
                f"{self.path}: no card for the chapter {name}: add a [chapters.{name}] table "
                "(title, summary, objectives, prerequisites, questions, measured)"
            )
        return self.cards[name]

    def check_chapters(self, scripts: dict[str, Path]) -> None:
        """Every chapter has a card, and every card a chapter: a planned chapter gets its
        card when its folder exists, so that nothing announces a chapter that is not there."""
        for name in scripts:
            self.card(name)
        extra = sorted(set(self.cards) - set(scripts))
        if extra:
            raise LaunchError(
                f"{self.path}: cards for {extra}, which have no solutions/<name>/<name>.py"
            )


def _text(where: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LaunchError(f"{where} should be a non-empty string, not {value!r}")
    return " ".join(value.split())


def _texts(where: str, value: object, count: tuple[int, int]) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise LaunchError(f"{where} should be a list of strings, not {value!r}")
    low, high = count
    if not low <= len(value) <= high:
        wanted = str(low) if low == high else f"{low} to {high}"
        raise LaunchError(f"{where} should list {wanted} entries, not {len(value)}")
    return tuple(_text(f"{where}[{i}]", item) for i, item in enumerate(value))


def _card(path: Path, name: str, entry: dict, known: list[str]) -> Card:
    where = f"{path}: [chapters.{name}]"
    missing = sorted({"title", "summary", "objectives", "prerequisites", "questions"} - set(entry))
    if missing:
        raise LaunchError(f"{where} has no {', '.join(missing)}")
    prerequisites = entry["prerequisites"]
    if not isinstance(prerequisites, dict) or set(prerequisites) != {"chapters", "knowledge"}:
        raise LaunchError(
            f"{where}.prerequisites should be {{ chapters = [...], knowledge = ... }}"
        )
    chapters = prerequisites["chapters"]
    earlier = known[: known.index(name)]
    if not isinstance(chapters, list) or any(c not in earlier for c in chapters):
        raise LaunchError(
            f"{where}.prerequisites.chapters = {chapters!r}: each should be an earlier chapter "
            f"of {path.name} ({earlier})"
        )
    measured = entry.get("measured", {})
    seconds = measured.get("seconds")
    if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
        raise LaunchError(f"{where}.measured.seconds = {seconds!r}: a positive number")
    if seconds is None and not measured.get("not_measured"):
        raise LaunchError(
            f'{where}.measured needs `seconds` (a full-size run) or `not_measured = "why"`'
        )
    return Card(
        name=name,
        title=_text(f"{where}.title", entry["title"]),
        summary=_text(f"{where}.summary", entry["summary"]),
        objectives=_texts(f"{where}.objectives", entry["objectives"], OBJECTIVES),
        chapters=tuple(chapters),
        knowledge=_text(f"{where}.prerequisites.knowledge", prerequisites["knowledge"]),
        questions=_texts(f"{where}.questions", entry["questions"], (QUESTIONS, QUESTIONS)),
        run_seconds=seconds,
    )


def read_cards(solutions: Path = SOLUTIONS) -> CardBook | None:
    """solutions/chapters.toml, checked; None if the course folder has none."""
    path = solutions / CARDS_FILE
    if not path.is_file():
        return None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise LaunchError(f"{path}: {err}") from err
    estimate, chapters = data.get("estimate", {}), data.get("chapters", {})
    rates = [estimate.get(key) for key in ("words_per_minute", "minutes_per_exercise")]
    if not all(isinstance(rate, int | float) and rate > 0 for rate in rates):
        raise LaunchError(
            f"{path}: [estimate] needs positive words_per_minute and minutes_per_exercise"
        )
    known = sorted(chapters)
    cards = {name: _card(path, name, chapters[name], known) for name in known}
    return CardBook(path, cards, *rates)


def chapter_scripts(solutions: Path = SOLUTIONS) -> dict[str, Path]:
    """{chapter: its py:percent script}, for every solutions/<name>/<name>.py."""
    return {
        script.stem: script
        for script in sorted(solutions.glob("*/*.py"))
        if script.stem == script.parent.name
    }


def _cells(text: str) -> list[tuple[int, int, str]]:
    """(start of the `# %%` line, end of the cell, that line) for each cell of a script."""
    markers = list(_CELL_MARKER.finditer(text))
    ends = [m.start() for m in markers[1:]] + [len(text)]
    return [(m.start(), end, m.group(0)) for m, end in zip(markers, ends, strict=True)]


def _markdown(cell_source: str) -> str:
    """The markdown of a py:percent markdown cell's commented lines."""
    lines = [line[2:] if line.startswith("# ") else line.lstrip("#") for line in cell_source]
    return "\n".join(lines)


def _commented(markdown: str) -> str:
    return "\n".join(f"# {line}" if line else "#" for line in markdown.split("\n"))


def _is_questions(cell_text: str) -> bool:
    body = cell_text.split("\n", 1)[1] if "\n" in cell_text else ""
    return body.startswith(f"# {QUESTIONS_HEADING}\n") or body.strip() == f"# {QUESTIONS_HEADING}"


def _without_questions(text: str) -> str:
    """The script without its "Check yourself" cells."""
    kept, last = [], 0
    for start, end, header in _cells(text):
        if _MARKDOWN_MARKER.fullmatch(header) and _is_questions(text[start:end]):
            kept.append(text[last:start])
            last = end
    return "".join(kept) + text[last:]


def workload(text: str) -> tuple[int, int]:
    """(words of markdown, graded exercises) of a chapter script, without its generated card
    and questions: what the "to work through" estimate counts."""
    text = _CARD_BLOCK.sub("", _without_questions(text))
    words = exercises = 0
    for start, end, header in _cells(text):
        body = text[start:end].split("\n")[1:]
        if _MARKDOWN_MARKER.fullmatch(header):
            markdown = _LINK_TARGET.sub("]", _HTML_COMMENT.sub("", _markdown(body)))
            words += len(_WORD.findall(markdown))
        elif any(line.strip() == "### BEGIN SOLUTION" for line in body):
            exercises += 1
    return words, exercises


def time_line(book: CardBook, card: Card, text: str) -> str:
    """The card's time, "about N min to work through; the code runs in at most M min on 2
    CPU cores", from the chapter script ``text`` and the card's measured run."""
    words, exercises = workload(text)
    minutes = words / book.words_per_minute + exercises * book.minutes_per_exercise
    work = 5 * max(1, math.ceil(minutes / 5))
    if card.run_seconds is None:
        run = "the code's full-size run time is not measured yet"
    else:
        run_minutes = max(1, math.ceil(card.run_seconds / 60))
        run = f"the code runs in at most {run_minutes} min on 2 CPU cores"
    return f"about {work} min to work through; {run}"


def _wrap(text: str, first: str = "", rest: str = "") -> list[str]:
    return textwrap.wrap(
        text,
        width=WRAP,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _chapter_ref(book: CardBook, name: str) -> str:
    card = book.card(name)
    return f"{card.number} ({card.title})"


def card_markdown(book: CardBook, card: Card, text: str) -> str:
    """The card, as markdown: the time, the learning objectives, the prerequisites."""
    lines = [CARD_BEGIN.format(source=book.source)]
    lines += _wrap(f"**Time:** {time_line(book, card, text)}.")
    lines += ["", "**You will be able to**", ""]
    for objective in card.objectives:
        lines += _wrap(objective, "- ", "  ")
    if card.chapters:
        refs = [_chapter_ref(book, name) for name in card.chapters]
        done = refs[0] if len(refs) == 1 else ", ".join(refs[:-1]) + " and " + refs[-1]
        chapters = f"chapter{'s' if len(refs) > 1 else ''} {done}"
    else:
        chapters = "no earlier chapter"
    before = f"**Before you start:** {chapters}. From outside the course: {card.knowledge}."
    lines += [""] + _wrap(before)
    lines.append(CARD_END)
    return "\n".join(lines)


def questions_markdown(book: CardBook, card: Card) -> str:
    lines = [QUESTIONS_HEADING, "", QUESTIONS_NOTE.format(source=book.source)]
    lines += _wrap(
        "Answer each in a few sentences, from what this chapter showed you; where you are "
        "not sure, change the code and see."
    )
    lines.append("")
    for i, question in enumerate(card.questions, 1):
        lines += _wrap(question, f"{i}. ", "   ")
    return "\n".join(lines)


def _title_cell(text: str, script: Path) -> tuple[int, int]:
    """(start, end) of the title cell's source: the markdown cell after the parameters cell."""
    params = _PARAMETERS_MARKER.search(text)
    following = _CELL_MARKER.search(text, params.end()) if params else None
    if following is None or not _MARKDOWN_MARKER.fullmatch(following.group(0)):
        raise LaunchError(
            f"{script}: the cell after the parameters cell should be the chapter's title "
            "(a markdown cell, '# NN · <title>'), where the release writes the chapter card"
        )
    start = following.end() + 1
    after = _CELL_MARKER.search(text, start)
    end = after.start() if after else len(text)
    source = text[start:end].rstrip("\n")
    return start, start + len(source)


def write_card(text: str, script: Path, book: CardBook) -> str:
    """A chapter script with its title cell's heading and card, and its last cell "Check
    yourself", written from ``book``. Idempotent."""
    card = book.card(script.stem)
    start, end = _title_cell(text, script)
    lines = text[start:end].split("\n")
    heading = _HEADING.match(lines[0])
    if heading is None or heading["number"] != card.number:
        raise LaunchError(
            f"{script}: the title cell should begin with '# # {card.number} · <title>', "
            f"not {lines[0]!r}"
        )
    lines[0] = f"# # {card.number} · {card.title}"
    begin_line = f"# {CARD_BEGIN.format(source=book.source)}"
    if begin_line in lines:  # replace the card in place, with what surrounds it
        first = lines.index(begin_line)
        if f"# {CARD_END}" not in lines[first:]:
            raise LaunchError(f"{script}: the chapter card has no end marker ({CARD_END})")
        last = lines.index(f"# {CARD_END}", first)
        before, after = lines[:first], lines[last + 1 :]
    else:  # below the Colab badge, or else the heading
        badge = [i for i, line in enumerate(lines) if "colab-badge.svg" in line]
        at = badge[0] + 1 if badge else 1
        before, after = lines[:at] + ["#"], ["#"] + lines[at:]
        if after[1:2] == ["#"]:
            after = after[1:]
    body = _without_questions(text)
    fresh = "\n".join(before + [_commented(card_markdown(book, card, body))] + after)
    text = text[:start] + fresh + text[end:]
    text = _without_questions(text).rstrip("\n")
    return f"{text}\n\n# %% [markdown]\n{_commented(questions_markdown(book, card))}\n"


def _table_row(book: CardBook, card: Card, text: str, proj: Project) -> str:
    notebook = f"notebooks/{card.name}/{card.name}.ipynb"
    badge = "https://colab.research.google.com/assets/colab-badge.svg"
    cells = [
        card.number,
        f"[{card.title}]({notebook})",
        f"[![Open In Colab]({badge})]({proj.colab_url(notebook)})",
        card.summary,
        time_line(book, card, text),
    ]
    return "| " + " | ".join(cells) + " |"


def chapter_table(book: CardBook, scripts: dict[str, Path], proj: Project) -> str:
    """README.md's chapter table, between its markers."""
    lines = [
        TABLE_BEGIN.format(source=book.source),
        "| # | notebook | Colab | what you build | time |",
        "|---|---|---|---|---|",
    ]
    for name, script in scripts.items():
        lines.append(_table_row(book, book.card(name), script.read_text(encoding="utf-8"), proj))
    lines.append(TABLE_END)
    return "\n".join(lines)


def check_table_markers(text: str, book: CardBook) -> None:
    """README.md has one begin and one end marker of the chapter table, in that order."""
    begin, end = TABLE_BEGIN.format(source=book.source), TABLE_END
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise LaunchError(
            f"README.md should hold its chapter table between the lines {begin!r} and {end!r}"
        )


def write_chapter_table(text: str, book: CardBook, scripts: dict[str, Path], proj: Project) -> str:
    """README.md with its chapter table written from ``book``."""
    check_table_markers(text, book)
    begin, end = TABLE_BEGIN.format(source=book.source), TABLE_END
    head, rest = text.split(begin, 1)
    tail = rest.split(end, 1)[1]
    return head + chapter_table(book, scripts, proj) + tail


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
    badges of the chapters ``names`` (all by default) and README.md, the cards of
    solutions/chapters.toml into those chapters and README.md's chapter table, and
    regenerate binder/requirements.txt; return the files changed.

    The project is the folder holding ``solutions``; a course folder without a
    pyproject.toml beside it (a scratch copy) publishes nothing, and nothing is written.
    """
    root = solutions.parent
    if not (root / "pyproject.toml").is_file():
        return []
    pyproject = read_pyproject(root)
    proj = project(pyproject)
    book = read_cards(solutions)  # None: no chapters.toml, no cards written
    scripts = chapter_scripts(solutions)
    readme = root / "README.md"
    if book is not None:  # every problem found before anything is written
        book.check_chapters(scripts)
        if readme.is_file():
            check_table_markers(readme.read_text(encoding="utf-8"), book)
    changed: list[Path] = []
    for script in scripts.values():
        if names is None or script.stem in names:
            text = rewrite_script(script.read_text(encoding="utf-8"), script, proj)
            if book is not None:
                text = write_card(text, script, book)
            _write(script, text, changed)
    if readme.is_file():
        text = rewrite_readme(readme.read_text(encoding="utf-8"), proj)
        if book is not None:
            text = write_chapter_table(text, book, scripts, proj)
        _write(readme, text, changed)
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
