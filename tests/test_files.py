"""course.files: the one atomic writer. A failed write keeps the old file and leaves no
temporary file; a finished one is whole, in a folder created on the way."""

from __future__ import annotations

import json
import math
import os

import pytest

from course.files import replace_atomically, write_bytes, write_json, write_text


def names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_a_write_that_raises_keeps_the_old_content_and_leaves_no_part_file(tmp_path):
    target = write_text(tmp_path / "grades.csv", "old\n")

    def half_then_fail(file):
        file.write(b"new, but only ha")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_atomically(target, half_then_fail)
    assert target.read_text() == "old\n"
    assert names(tmp_path) == ["grades.csv"]  # no .grades.csv.*.part left behind


def test_a_write_that_raises_on_a_new_path_creates_nothing(tmp_path):
    def wrong_checksum(file):
        file.write(b"bytes that do not match")
        raise ValueError("checksum mismatch")

    with pytest.raises(ValueError, match="checksum"):
        replace_atomically(tmp_path / "corpus.txt", wrong_checksum)
    assert names(tmp_path) == []


def test_the_temporary_file_sits_beside_the_target_until_the_rename(tmp_path):
    target = tmp_path / "ckpt.pt"
    seen = {}

    def look(file):
        file.write(b"payload")
        seen["part"] = os.path.basename(file.name)
        seen["target exists"] = target.exists()
        seen["folder"] = names(tmp_path)

    assert replace_atomically(target, look) == target
    assert seen["part"].startswith(".ckpt.pt.") and seen["part"].endswith(".part")
    assert seen["folder"] == [seen["part"]] and not seen["target exists"]
    assert target.read_bytes() == b"payload" and names(tmp_path) == ["ckpt.pt"]


def test_a_successful_write_replaces_the_old_content(tmp_path):
    target = write_bytes(tmp_path / "model.bin", b"\x00" * 1000)
    write_bytes(target, b"short")
    assert target.read_bytes() == b"short"  # truncated to the new length, not overlaid


def test_missing_parent_folders_are_created(tmp_path):
    target = tmp_path / "a" / "b" / "c.txt"
    assert write_text(target, "Römeo ✓") == target
    assert target.read_bytes() == "Römeo ✓".encode()
    assert write_text(tmp_path / "latin.txt", "é", encoding="latin-1").read_bytes() == b"\xe9"


def test_write_json_turns_nan_and_infinity_into_null(tmp_path):
    path = write_json(
        tmp_path / "metrics.json",
        {"val_loss": math.nan, "best": math.inf, "worst": -math.inf, "iters": 3, "lr": 1e-3},
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text  # strict JSON readers accept it
    assert json.loads(text) == {"val_loss": None, "best": None, "worst": None, "iters": 3,
                                "lr": 1e-3}  # fmt: skip
    assert text.endswith("\n")
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in the file"))


def test_write_json_passes_options_to_json_dumps(tmp_path):
    path = write_json(tmp_path / "t.json", {"text": "½"}, ensure_ascii=False, indent=None)
    assert path.read_text(encoding="utf-8") == '{"text": "½"}\n'


def test_a_new_file_gets_the_umask_permissions_not_the_temporary_files(tmp_path):
    old = os.umask(0o027)
    try:
        plain = tmp_path / "plain.txt"
        plain.write_text("x")  # what open() gives under this umask
        atomic = write_text(tmp_path / "atomic.txt", "x")
    finally:
        os.umask(old)
    assert atomic.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == 0o640


def test_a_replaced_file_keeps_its_permissions(tmp_path):
    target = write_text(tmp_path / "shared.csv", "old\n")
    target.chmod(0o664)
    write_text(target, "new\n")
    assert target.stat().st_mode & 0o777 == 0o664
