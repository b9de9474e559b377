"""course.finetune: a new domain's text written in a character vocabulary (capitals, the
standard library's docstrings), its tokens split as the corpus is, and the table comparing
fine-tuning runs."""

import argparse
import collections
import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
import types
import zipfile

import numpy as np
import pytest
from conftest import REPO

from course.finetune import (
    COLUMNS,
    comparison_row,
    domain_tokens,
    file_bytes,
    format_table,
    onto_vocabulary,
    stdlib_docstrings,
    upper_case,
)
from course.tokenizers import BPETokenizer, CharTokenizer

# --- upper_case ---------------------------------------------------------------------------


def test_upper_case_writes_the_text_in_capitals():
    tokenizer = CharTokenizer.from_text("ABC abc,\n")
    assert upper_case("abc, cab\nBa", tokenizer) == "ABC, CAB\nBA"
    assert upper_case("", tokenizer) == ""


@pytest.mark.parametrize(
    ("vocabulary", "text", "missing"),
    [
        ("abc", "ab", "'AB'"),  # no capital in the vocabulary at all
        ("abcABß", "abc", "'C'"),  # one capital missing
        ("abcßABC", "aß", "'S'"),  # 'ß'.upper() is 'SS'
        ("ab \n", "b a\nx", "'ABX'"),  # a character outside the vocabulary even in lower case
    ],
)
def test_upper_case_names_the_capitals_outside_the_vocabulary(vocabulary, text, missing):
    tokenizer = CharTokenizer.from_text(vocabulary)
    with pytest.raises(ValueError, match=f"{missing}.*onto_vocabulary"):
        upper_case(text, tokenizer)


def test_upper_case_refuses_what_is_not_text_or_not_a_character_tokenizer():
    tokenizer = CharTokenizer.from_text("ABab")
    for not_text in (b"ab", ["a", "b"], None):
        with pytest.raises(TypeError, match="text must be a str"):
            upper_case(not_text, tokenizer)
    with pytest.raises(TypeError, match="CharTokenizer.*BPETokenizer"):
        upper_case("ab", BPETokenizer([]))


# --- stdlib_docstrings --------------------------------------------------------------------


def _docstrings_in_a_new_process(first: str = "", hash_seed: str = "0") -> str:
    """stdlib_docstrings() computed by a fresh interpreter after running `first`."""
    script = (
        f"{first}\nimport sys\nfrom course.finetune import stdlib_docstrings\n"
        "sys.stdout.buffer.write(stdlib_docstrings().encode())"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        check=True,
        cwd=REPO,
        env={**os.environ, "PYTHONHASHSEED": hash_seed},
    )
    return result.stdout.decode()


def test_stdlib_docstrings_are_the_same_at_every_call_and_in_every_process():
    assert stdlib_docstrings() == stdlib_docstrings()
    first = _docstrings_in_a_new_process(hash_seed="1")
    second = _docstrings_in_a_new_process(hash_seed="2")  # other set and str hashing
    assert len(first) > 10_000
    assert hashlib.sha256(first.encode()).digest() == hashlib.sha256(second.encode()).digest()


@pytest.mark.parametrize(
    "first", ["import torch", "from course import runtime; runtime.import_keras()"]
)
def test_stdlib_docstrings_do_not_depend_on_the_frameworks_being_imported(first):
    """The domain's text must be the same in a PyTorch process, a Keras one and one with
    neither: its tokens, split and losses are compared across them."""
    assert _docstrings_in_a_new_process(first) == _docstrings_in_a_new_process()


def test_stdlib_docstrings_hold_each_docstring_once():
    text = stdlib_docstrings()
    assert text.endswith("\n") and not text.startswith("\n")
    for documented in (json.dumps, json, json.loads, textwrap.dedent):
        assert text.count(inspect.getdoc(documented)) == 1, documented
    # Docstrings shared by several members (inherited by a subclass or an override without
    # one of its own) come once.
    shared = [
        (argparse.Action, argparse.BooleanOptionalAction),
        (zipfile.ZipFile.namelist, zipfile.CompleteDirs.namelist),
    ]
    for first, second in shared:
        assert inspect.getdoc(first) == inspect.getdoc(second)  # the premise
        assert text.count(inspect.getdoc(first)) == 1, first
    # A docstring only inherited from a module not gathered (collections.abc.Sequence's
    # count, for UserList.count and UserString.count) is left out: own docstrings only.
    assert collections.UserList.count.__doc__ is None
    assert zipfile.BadZipFile.__doc__ is None  # Exception's docstring, inherited
    assert inspect.getdoc(zipfile.BadZipFile) not in text
    assert inspect.getdoc(collections.UserList.count) not in text


def test_stdlib_docstrings_follow_the_modules_given():
    text = stdlib_docstrings(modules=("json",))
    assert text.startswith(inspect.getdoc(json) + "\n\n")
    assert json.JSONDecoder.__module__ == "json.decoder"  # imported into json: left out
    assert inspect.getdoc(json.JSONDecoder) not in text
    assert inspect.getdoc(json.dumps) in text
    assert inspect.getdoc(textwrap.dedent) not in text
    assert inspect.getdoc(textwrap.dedent) in stdlib_docstrings(modules=("textwrap",))
    assert len(text) < len(stdlib_docstrings()) / 5


def _function(name: str, doc: str | None, module: str = "fake_docs"):
    def function():
        pass

    function.__name__, function.__doc__, function.__module__ = name, doc, module
    return function


def test_stdlib_docstrings_order_and_filter_members(monkeypatch):
    """Module first, then members by name; a class's own public functions after it, by
    name; private names, imported members and repeated texts left out."""
    module = types.ModuleType("fake_docs", "The module.")
    Klass = type(
        "Klass",
        (),
        {
            "__doc__": "A class.",
            "__module__": "fake_docs",
            "zeta": _function("zeta", "Method zeta."),
            "alpha": _function("alpha", "Method alpha."),
            "_hidden": _function("_hidden", "Private method."),
            "same": _function("same", "Function b."),  # repeats a text seen later: once
        },
    )
    members = {
        "b_func": _function("b_func", "Function b."),
        "a_func": _function("a_func", "Function a."),
        "c_func": _function("c_func", None),  # no docstring: nothing
        "d_func": _function("d_func", "Function a."),  # a repeat: left out
        "_private": _function("_private", "Private."),
        "imported": _function("imported", "Imported.", module="elsewhere"),
        "Klass": Klass,
        "CONSTANT": 3,
    }
    for name, value in members.items():
        setattr(module, name, value)
    monkeypatch.setitem(sys.modules, "fake_docs", module)
    expected = [
        "The module.",
        "A class.",  # "Klass" < "a_func": capitals sort first
        "Method alpha.",
        "Function b.",  # Klass.same
        "Method zeta.",
        "Function a.",
    ]
    assert stdlib_docstrings(modules=("fake_docs",)) == "\n\n".join(expected) + "\n"
    assert stdlib_docstrings(modules=("fake_docs",), max_chars=16) == "The module.\n\nA c"


def test_max_chars_cuts_and_bad_values_are_refused():
    full = stdlib_docstrings(modules=("json",))
    cut = stdlib_docstrings(modules=("json",), max_chars=500)
    assert len(cut) == 500 and full.startswith(cut)
    assert stdlib_docstrings(modules=("json",), max_chars=10**9) == full
    for bad in (0, -5, 2.5, "100"):
        with pytest.raises(ValueError, match="max_chars"):
            stdlib_docstrings(max_chars=bad)


# --- onto_vocabulary ----------------------------------------------------------------------


def test_onto_vocabulary_replaces_exactly_the_characters_outside_it():
    tokenizer = CharTokenizer.from_text("abc \n.")
    text, replaced = onto_vocabulary("a_b9\tc.\n__x a", tokenizer)
    assert text == "a b" + " " + "    " + "c.\n" + "   " + " a"  # 9, the tab, then _ _ x
    assert replaced == collections.Counter({"_": 3, "9": 1, "x": 1})
    text, replaced = onto_vocabulary("a_b9\tc", tokenizer, replacement=".")
    assert (text, replaced) == ("a.b.    c", collections.Counter({"_": 1, "9": 1}))
    text, replaced = onto_vocabulary("abc .\n", tokenizer)
    assert (text, replaced) == ("abc .\n", collections.Counter())
    assert set(onto_vocabulary("É\t¿¡ ~", tokenizer)[0]) <= set(tokenizer.chars)


def test_tabs_become_spaces_first_and_are_counted_as_spaces_when_space_is_missing():
    tokenizer = CharTokenizer.from_text("ab.")
    text, replaced = onto_vocabulary("a\tb", tokenizer, replacement=".")
    assert text == "a....b"
    assert replaced == collections.Counter({" ": 4})


def test_onto_vocabulary_refuses_a_replacement_outside_the_vocabulary():
    tokenizer = CharTokenizer.from_text("abc ")
    for replacement in ("_", "ab", "", 1):
        with pytest.raises(ValueError, match="replacement must be one character"):
            onto_vocabulary("a_b", tokenizer, replacement=replacement)
    with pytest.raises(TypeError, match="CharTokenizer"):
        onto_vocabulary("a_b", BPETokenizer([]))


# --- domain_tokens ------------------------------------------------------------------------


@pytest.mark.parametrize(("length", "val_fraction", "n_train"), [(37, 0.1, 33), (50, 0.2, 40)])
def test_domain_tokens_keep_the_last_part_for_validation(length, val_fraction, n_train):
    # 37 * 0.9 = 33.3 -> 33 train, 4 val; 50 * 0.8 = 40 -> 40 train, 10 val.
    text = ("the cat sat. " * 10)[:length]
    tokenizer = CharTokenizer.from_text(text)
    train, val = domain_tokens(text, tokenizer, val_fraction)
    assert (len(train), len(val)) == (n_train, length - n_train)
    assert train.dtype == np.uint16 and val.dtype == np.uint16
    assert train.flags.c_contiguous and val.flags.c_contiguous
    assert tokenizer.decode(train.tolist()) == text[:n_train]
    assert tokenizer.decode(val.tolist()) == text[n_train:]
    ids = {c: i for i, c in enumerate(sorted(set(text)))}
    np.testing.assert_array_equal(np.concatenate([train, val]), [ids[c] for c in text])


def test_domain_tokens_default_to_a_tenth_for_validation():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    train, val = domain_tokens(text, CharTokenizer.from_text(text))
    assert (len(train), len(val)) == (900, 100)
    assert val[0] == 900 % 26 and val[-1] == 999 % 26


# --- file_bytes ---------------------------------------------------------------------------


def test_file_bytes_of_a_file_a_folder_and_several(tmp_path):
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    folder = tmp_path / "folder"
    (folder / "deep" / "deeper").mkdir(parents=True)
    (folder / "one").write_bytes(b"y" * 100)
    (folder / "deep" / "two").write_bytes(b"z" * 1000)
    (folder / "deep" / "deeper" / "three").write_bytes(b"w" * 7)
    (folder / "empty").mkdir()
    assert file_bytes(tmp_path / "a.bin") == 10
    assert file_bytes(str(tmp_path / "a.bin")) == 10
    assert file_bytes(folder) == 1107
    assert file_bytes([tmp_path / "a.bin", str(folder / "deep")]) == 1017
    assert file_bytes(tmp_path) == 1117
    assert file_bytes([]) == 0
    with pytest.raises(FileNotFoundError):
        file_bytes(tmp_path / "missing")


# --- comparison_row and format_table ------------------------------------------------------


def _row(run="lora", **overrides):
    numbers = dict(
        trainable=25,
        total=100,
        saved_bytes=2_500_000,
        optimizer_state_bytes=1_000,
        ms_per_iter=12,
        new_val_loss=1.5,
        old_val_loss=2,
    )
    return comparison_row(run, **{**numbers, **overrides})


def test_comparison_row_shares_and_megabytes():
    row = _row()
    assert row == {
        "run": "lora",
        "trainable": 25,
        "trainable_share": 0.25,
        "saved_mb": 2.5,
        "optimizer_state_mb": 0.001,
        "ms_per_iter": 12.0,
        "new_val_loss": 1.5,
        "old_val_loss": 2.0,
    }
    assert [key for key, _, _ in COLUMNS] == list(row)
    assert _row(trainable=100)["trainable_share"] == 1.0
    assert _row(trainable=0)["trainable_share"] == 0.0
    assert _row(trainable=1, total=3)["trainable_share"] == pytest.approx(1 / 3)


@pytest.mark.parametrize(("trainable", "total"), [(101, 100), (-1, 100), (0, 0), (1, -1)])
def test_comparison_row_refuses_impossible_counts(trainable, total):
    with pytest.raises(ValueError, match="trainable"):
        _row(trainable=trainable, total=total)


def test_format_table_aligns_columns_and_shows_none_as_a_dash():
    columns = (("name", "N", "{}"), ("value", "Value", "{:.2f}"), ("count", "#", "{:,}"))
    rows = [
        {"name": "first", "value": 1.5, "count": 12345},
        {"name": "x", "value": None, "count": 7},
        {"name": "longer name", "count": 0},
    ]
    assert format_table(rows, columns) == "\n".join(
        [
            "N            Value       #",
            "-----------  -----  ------",
            "first         1.50  12,345",
            "x                -       7",
            "longer name      -       0",
        ]
    )
    assert format_table([], columns) == "N  Value  #\n-  -----  -"


def test_format_table_of_comparison_rows():
    rows = [
        _row("full", trainable=1_234_567, total=1_234_567, saved_bytes=4_938_268),
        {**_row(), "ms_per_iter": None},
    ]
    lines = format_table(rows).split("\n")
    assert len(lines) == 4
    headings = [heading for _, heading, _ in COLUMNS]
    positions = [lines[0].index(heading) for heading in headings]
    assert positions == sorted(positions) and positions[0] == 0  # in COLUMNS' order
    runs = lines[1].split()
    assert len(runs) == len(COLUMNS) and set("".join(runs)) == {"-"}
    assert [len(run) for run in runs][:2] == [len("full"), len("trained params")]  # widest cell
    assert all(len(run) >= len(heading) for run, heading in zip(runs, headings, strict=True))
    assert lines[2].split() == [
        "full",
        "1,234,567",
        "100.0%",
        "4.938",
        "0.001",
        "12.0",
        "1.5000",
        "2.0000",
    ]
    assert lines[3].split() == ["lora", "25", "25.0%", "2.500", "0.001", "-", "1.5000", "2.0000"]
    assert len({len(line) for line in lines}) == 1
