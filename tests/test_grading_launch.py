"""The chapter cards: solutions/chapters.toml, written by the release step (autograde/launch.py)
into each chapter's title cell, its last cell ("Check yourself") and README.md's chapter table.

Every test that releases works on a copy of the chapter scripts, chapters.toml, README.md and
pyproject.toml in tmp_path: the real chapters are written by `python -m autograde release`.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from conftest import REPO

from autograde import launch

SOLUTIONS = REPO / "solutions"
CHAPTERS = sorted(launch.chapter_scripts(SOLUTIONS))
QUIET = {"log": lambda msg: None}


def _course(tmp_path: Path) -> Path:
    """The chapter scripts, chapters.toml, README.md and pyproject.toml, copied into
    tmp_path; returns the copy's solutions folder."""
    for name in ("README.md", "pyproject.toml"):
        shutil.copyfile(REPO / name, tmp_path / name)
    solutions = tmp_path / "solutions"
    solutions.mkdir()
    shutil.copyfile(SOLUTIONS / launch.CARDS_FILE, solutions / launch.CARDS_FILE)
    for name, script in launch.chapter_scripts(SOLUTIONS).items():
        (solutions / name).mkdir()
        shutil.copyfile(script, solutions / name / script.name)
    return solutions


def _cells(text: str) -> list[str]:
    """The cells of a py:percent script, each with its `# %%` line."""
    return re.split(r"^(?=# %%)", text, flags=re.M)[1:]


def _card_time(script_text: str) -> str:
    """The card's time sentence, joined again where the card wraps it over two lines."""
    match = re.search(r"^# \*\*Time:\*\* (?P<time>.+?)\.$", script_text, re.M | re.S)
    assert match, "the card has no time line"
    return re.sub(r"\n# ", " ", match["time"])


def _table(readme: str) -> dict[str, list[str]]:
    """{chapter number: the cells of its row} of README.md's chapter table."""
    rows = {}
    for line in readme.splitlines():
        if re.match(r"^\| \d\d \|", line):
            cells = [cell.strip() for cell in line.strip("|").split(" | ")]
            rows[cells[0]] = cells
    return rows


@pytest.fixture
def course(tmp_path):
    return _course(tmp_path)


def test_every_chapter_has_a_complete_card():
    book = launch.read_cards(SOLUTIONS)
    assert book is not None, f"solutions/{launch.CARDS_FILE} is missing"
    book.check_chapters(launch.chapter_scripts(SOLUTIONS))
    for name in CHAPTERS:
        card = book.card(name)
        assert 3 <= len(card.objectives) <= 5 and len(card.questions) == 3, name
    measurement = launch.tomllib.loads(book.path.read_text())["measurement"]
    assert {"date", "machine", "command"} <= set(measurement)
    assert "2 CPU cores" in measurement["machine"]


def test_release_writes_each_card_and_its_questions_once(course):
    launch.update(course, **QUIET)
    book = launch.read_cards(course)
    for name in CHAPTERS:
        text = (course / name / f"{name}.py").read_text()
        card = book.card(name)
        cells = _cells(text)
        assert text.count("<!-- chapter card: written by") == 1, name
        assert text.count(launch.CARD_END) == 1, name
        questions = [c for c in cells if c.startswith("# %% [markdown]\n# ## Check yourself")]
        assert len(questions) == 1 and cells[-1] == questions[0], f"{name}: not the last cell"
        for i, question in enumerate(card.questions, 1):
            assert " ".join(question.split()[:6]) in " ".join(questions[0].split()), (name, i)
        for objective in card.objectives:
            assert f"# - {objective.split()[0]} {objective.split()[1]}" in cells[2], name


def test_the_setup_and_parameters_cells_stay_first_and_the_card_is_the_title_cell(course):
    launch.update(course, **QUIET)
    book = launch.read_cards(course)
    for name in CHAPTERS:
        setup, parameters, title = _cells((course / name / f"{name}.py").read_text())[:3]
        assert '"grade_id": "setup"' in setup and 'find_spec("course")' in setup, name
        assert 'tags=["parameters"]' in parameters, name
        card = book.card(name)
        assert title.startswith(f"# %% [markdown]\n# # {card.number} · {card.title}\n"), name
        assert "<!-- chapter card" in title and "**You will be able to**" in title, name
        badge = title.index("colab-badge.svg")
        assert badge < title.index("<!-- chapter card"), f"{name}: the card goes below the badge"


def test_a_second_release_changes_nothing_and_edits_return_to_the_data(course):
    launch.update(course, **QUIET)
    script = course / "02_autograd" / "02_autograd.py"
    first = script.read_text()
    assert launch.update(course, **QUIET) == [], "a second release changes nothing"
    # A hand edit of the card, a cell added after the questions: the release puts the card
    # back from the data and the questions at the end again, once.
    edited = first.replace("**You will be able to**", "**Goals**")
    edited += "\n# %%\nprint('an afterthought')\n"
    script.write_text(edited)
    launch.update(course, **QUIET)
    again = script.read_text()
    assert "**Goals**" not in again and again.count("## Check yourself") == 1
    assert _cells(again)[-1].startswith("# %% [markdown]\n# ## Check yourself")
    assert "print('an afterthought')" in _cells(again)[-2]


def test_readme_table_and_cards_agree(course):
    launch.update(course, **QUIET)
    book = launch.read_cards(course)
    rows = _table((course.parent / "README.md").read_text())
    assert sorted(rows) == [book.card(name).number for name in CHAPTERS]
    for name in CHAPTERS:
        card, text = book.card(name), (course / name / f"{name}.py").read_text()
        number, notebook, colab, summary, time = rows[card.number]
        heading = re.search(r"^# # \d\d · (.+)$", text, re.M)[1]
        assert notebook == f"[{heading}](notebooks/{name}/{name}.ipynb)", name
        assert f"notebooks/{name}/{name}.ipynb)" in colab, name
        assert summary == card.summary, name
        assert time == _card_time(text), f"{name}: README says {time!r}"


def test_readme_chapter_table_is_generated_from_the_cards():
    book = launch.read_cards(SOLUTIONS)
    proj = launch.project(launch.read_pyproject(REPO))
    readme = (REPO / "README.md").read_text()
    fresh = launch.write_chapter_table(readme, book, launch.chapter_scripts(SOLUTIONS), proj)
    assert readme == fresh, "README.md's chapter table is stale: run `python -m autograde release`"


def test_a_chapter_missing_from_the_data_is_an_error_naming_it(course):
    toml = course / launch.CARDS_FILE
    text = toml.read_text()
    start = text.index("[chapters.02_autograd]")
    end = text.index("[chapters.03_tokenizers]")
    toml.write_text(text[:start] + text[end:])
    before = {p: p.read_text() for p in course.glob("*/*.py")}
    with pytest.raises(launch.LaunchError, match=r"no card for the chapter 02_autograd"):
        launch.update(course, **QUIET)
    assert {p: p.read_text() for p in course.glob("*/*.py")} == before, "nothing is written"


def test_a_card_without_its_chapter_is_an_error(course):
    toml = course / launch.CARDS_FILE
    text = toml.read_text()
    start = text.index("[chapters.06_gpt_keras]")  # its card and its measurement
    end = text.index("[chapters.", text.index("[chapters.06_gpt_keras.measured]") + 1)
    planned = text[start:end].replace("06_gpt_keras", "99_planned")
    toml.write_text(text + "\n" + planned)
    with pytest.raises(launch.LaunchError, match=r"99_planned"):
        launch.update(course, **QUIET)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("questions = [\n", 'questions = [\n  "A fourth question?",\n', r"questions.*3"),
        ('chapters = ["00_setup"]', 'chapters = ["02_autograd"]', r"earlier chapter"),
        ('title = "Attention"', 'title = ""', r"04_attention\]\.title"),
    ],
)
def test_bad_card_data_is_refused_with_the_field_named(course, old, new, message):
    toml = course / launch.CARDS_FILE
    text = toml.read_text()
    assert old in text
    toml.write_text(text.replace(old, new, 1))
    with pytest.raises(launch.LaunchError, match=message):
        launch.read_cards(course)


def test_readme_without_table_markers_is_an_error_before_anything_is_written(course):
    readme = course.parent / "README.md"
    readme.write_text(readme.read_text().replace(launch.TABLE_END, ""))
    before = {p: p.read_text() for p in course.glob("*/*.py")}
    with pytest.raises(launch.LaunchError, match="chapter table"):
        launch.update(course, **QUIET)
    assert {p: p.read_text() for p in course.glob("*/*.py")} == before


SCRIPT = """\
# %% [markdown]
# # 09 · Toy
#
# One two three [a link](https://example.com/ignored/words/here) four.

# %%
x = 1  # code words are not counted

# %% nbgrader={"grade": false, "grade_id": "ex1", "solution": true}
### BEGIN SOLUTION
y = 2
### END SOLUTION

# %% nbgrader={"grade": false, "grade_id": "ex2", "solution": true}
### BEGIN SOLUTION
z = 3
### END SOLUTION
"""


def test_the_work_estimate_follows_the_stated_formula():
    words, exercises = launch.workload(SCRIPT)
    assert (words, exercises) == (8, 2)  # "09 Toy One two three a link four", 2 solutions
    card = launch.Card("09_toy", "Toy", "s", ("a",) * 3, (), "k", ("q?",) * 3, 61.0)
    book = launch.CardBook(Path("solutions/chapters.toml"), {"09_toy": card}, 3.0, 10.0)
    # 8 words / 3 per minute + 2 exercises * 10 min = 22.7 min, rounded up to 25; 61 s -> 2 min
    line = "about 25 min to work through; the code runs in at most 2 min on 2 CPU cores"
    assert launch.time_line(book, card, SCRIPT) == line
    unmeasured = launch.Card("09_toy", "Toy", "s", ("a",) * 3, (), "k", ("q?",) * 3, None)
    assert "not measured" in launch.time_line(book, unmeasured, SCRIPT)


def test_the_estimate_does_not_count_the_generated_card_and_questions(course):
    script = course / "03_tokenizers" / "03_tokenizers.py"
    before = launch.workload(script.read_text())
    launch.update(course, **QUIET)
    assert launch.workload(script.read_text()) == before
