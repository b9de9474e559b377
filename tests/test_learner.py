"""course.learner: the learner's classes saved by one chapter, loaded by the next."""

from __future__ import annotations

import pytest

from course import learner

CELLS = [
    "import math\nclass GPT:\n    size = 1\n",
    "%%time\nnot python at all",  # a magic: passed over
    "import numpy as np\n\ndef train_step(x):\n    return np.asarray(x) * 2\n",
    "import math\n@staticmethod\ndef helper():\n    pass\n\n"
    "class GPT:\n    size = 2  # the newer one\n",
]


@pytest.fixture
def learner_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(learner.FOLDER_ENV, str(tmp_path / "mine"))
    monkeypatch.setattr(learner, "_history", lambda: list(CELLS))
    return tmp_path / "mine"


def test_definitions_are_the_newest_with_their_cells_imports():
    found, imports = learner.definitions(CELLS, ["GPT", "train_step", "absent"])
    assert found["GPT"].endswith("size = 2  # the newer one")
    assert found["train_step"].startswith("def train_step(x):")
    assert "absent" not in found
    assert imports == ["import math", "import numpy as np"]


def test_a_decorator_stays_with_its_function():
    found, _ = learner.definitions(CELLS, ["helper"])
    assert found["helper"].startswith("@staticmethod\ndef helper():")


def test_save_then_load_gives_the_learners_class(learner_dir, capsys):
    path = learner.save("gpt_torch", ["GPT", "train_step"], imports=["import json"])
    assert path == learner_dir / "gpt_torch.py" and path.is_file()
    loaded = learner.load("gpt_torch", "GPT", fallback=None)
    assert loaded.size == 2
    step = learner.load("gpt_torch", "train_step", fallback=None)
    assert step([1, 2]).tolist() == [2, 4]
    assert "yours" in capsys.readouterr().out


def test_load_falls_back_and_says_why(learner_dir, capsys):
    assert learner.load("gpt_torch", "GPT", fallback="library") == "library"
    assert "no " in capsys.readouterr().out
    learner_dir.mkdir()
    (learner_dir / "gpt_torch.py").write_text("class GPT(:\n")  # broken by hand
    assert learner.load("gpt_torch", "GPT", fallback="library") == "library"
    assert "SyntaxError" in capsys.readouterr().out
    (learner_dir / "gpt_torch.py").write_text("x = 1\n")  # no GPT in it
    assert learner.load("gpt_torch", "GPT", fallback="library") == "library"
    assert "AttributeError" in capsys.readouterr().out


def test_save_without_the_definitions_warns_and_writes_nothing(learner_dir):
    with pytest.warns(UserWarning, match="no cell this notebook ran defines Block"):
        assert learner.save("gpt_torch", ["GPT", "Block"]) is None
    assert not learner_dir.exists()


def test_save_into_a_folder_it_cannot_write_warns(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv(learner.FOLDER_ENV, str(blocker / "mine"))
    monkeypatch.setattr(learner, "_history", lambda: list(CELLS))
    with pytest.warns(UserWarning, match="cannot write"):
        assert learner.save("gpt_torch", ["GPT"]) is None


@pytest.mark.parametrize("module", ["gpt-torch", "", "_private", "a.b", 3])
def test_bad_module_names_are_refused(module):
    with pytest.raises(ValueError, match="module name"):
        learner.load(module, "GPT", fallback=None)


def test_the_default_folder_sits_beside_the_chapter_folders(monkeypatch, tmp_path):
    monkeypatch.delenv(learner.FOLDER_ENV, raising=False)
    chapter = tmp_path / "05_gpt"
    chapter.mkdir()
    monkeypatch.chdir(chapter)
    assert learner.folder() == tmp_path / "my_code"
