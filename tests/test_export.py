"""Tests for course.export: ExportedModel's input checks, verify, size_on_disk.

Pure numpy fakes stand in for exported models: a "bigram" reference whose logits are a row
of a fixed table per token, and "exports" that differ from it in ways worked out by hand
(a shift, a softmax, a flipped argmax, one perturbed logit).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from course.export import ExportedModel, Verification, size_on_disk, verify

VOCAB, BLOCK = 11, 16


class Bigram:
    """idx (B, T) -> table[idx] (B, T, V): fixed logits, recording every batch it sees."""

    def __init__(self, vocab: int = VOCAB, seed: int = 0, name: str = "bigram") -> None:
        self.table = np.random.default_rng(seed).normal(size=(vocab, vocab)).astype(np.float32)
        self.name = name
        self.seen: list[np.ndarray] = []

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        self.seen.append(idx)
        return self.table[idx]


def windows(n: int = 5, t: int = 6, vocab: int = VOCAB, seed: int = 1):
    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(n, t)), rng.integers(0, vocab, size=(n, t))


def wrapped(fn=None) -> ExportedModel:
    return ExportedModel(fn or Bigram(), vocab_size=VOCAB, block_size=BLOCK, name="fake")


# --------------------------------------------------------------------------------------
# ExportedModel
# --------------------------------------------------------------------------------------


def test_exported_model_casts_ids_to_int64_and_logits_to_float32():
    inner = Bigram()
    model = ExportedModel(lambda idx: inner(idx).astype(np.float64), VOCAB, BLOCK, "fake")
    idx = np.array([[3, 0, 10], [1, 2, 3]], dtype=np.int32)
    logits = model(idx)
    assert inner.seen[0].dtype == np.int64 and inner.seen[0].flags["C_CONTIGUOUS"]
    assert logits.dtype == np.float32 and logits.shape == (2, 3, VOCAB)
    np.testing.assert_array_equal(logits, inner.table[idx.astype(np.int64)])
    # lists and other integer types are ids too; the full range 0..V-1 and T == block pass
    assert model([[0, VOCAB - 1]]).shape == (1, 2, VOCAB)
    assert model(np.zeros((1, BLOCK), dtype=np.uint8)).shape == (1, BLOCK, VOCAB)


@pytest.mark.parametrize(
    ("idx", "error", "fragments"),
    [
        (np.zeros((2, 3), dtype=np.float32), TypeError, ["dtype float32", "integer"]),
        (np.zeros((2, 3), dtype=bool), TypeError, ["dtype bool"]),
        (np.zeros(5, dtype=np.int64), ValueError, ["(B, T)", "(5,)", "idx[None]"]),
        (np.zeros((2, 3, 4), dtype=np.int64), ValueError, ["(B, T)", "(2, 3, 4)"]),
        (np.zeros((2, 0), dtype=np.int64), ValueError, ["T = 0"]),
        (np.zeros((1, 17), dtype=np.int64), ValueError, ["length 17", "block_size 16"]),
        (np.array([[1, 12, 3]]), ValueError, ["token id 12", "vocab_size 11", "0..10"]),
        (np.array([[1, 11]]), ValueError, ["token id 11", "vocab_size 11"]),
        (np.array([[-3, 2]]), ValueError, ["token id -3", "vocab_size 11"]),
    ],
)
def test_exported_model_rejects_bad_input_before_running(idx, error, fragments):
    inner = Bigram()
    with pytest.raises(error) as caught:
        wrapped(inner)(idx)
    for fragment in fragments:
        assert fragment in str(caught.value), (fragment, str(caught.value))
    assert inner.seen == []  # the runtime never saw the bad ids


def test_exported_model_rejects_logits_of_the_wrong_shape():
    model = ExportedModel(lambda idx: np.zeros((*idx.shape, VOCAB + 1)), VOCAB, BLOCK, "odd")
    with pytest.raises(RuntimeError, match=re.escape("(1, 2, 12)")):
        model(np.array([[1, 2]]))


def test_exported_model_checks_its_own_arguments():
    with pytest.raises(TypeError, match="callable"):
        ExportedModel("model.onnx", VOCAB, BLOCK, "x")
    with pytest.raises(ValueError, match="block_size"):
        ExportedModel(Bigram(), VOCAB, 0, "x")
    assert "model.onnx" in repr(ExportedModel(Bigram(), VOCAB, BLOCK, "x", path="model.onnx"))


# --------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------


def test_verify_of_a_model_with_itself_is_exact():
    x, y = windows()
    report = verify(Bigram(), Bigram(), (x, y))
    assert report.max_abs_logits == 0.0 and report.argmax_agreement == 1.0
    assert report.val_loss == report.reference_val_loss and report.loss_gap == 0.0
    assert (report.n_windows, report.n_positions) == (5, 30)
    assert report.ok(atol=0.0)


def test_verify_reports_the_logits_difference_not_the_probabilities():
    reference = Bigram()
    shifted = lambda idx: reference.table[idx] + 5.0  # noqa: E731  same softmax, other logits
    report = verify(shifted, reference, windows())
    assert report.max_abs_logits == pytest.approx(5.0, abs=1e-5)
    assert report.argmax_agreement == 1.0
    assert report.val_loss == pytest.approx(report.reference_val_loss, abs=1e-6)  # fp32 +5
    assert not report.ok(atol=1e-4)

    def softmax(idx):
        z = reference.table[idx].astype(np.float64)
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    x, y = windows()
    report = verify(softmax, reference, (x, y))
    expected = np.abs(softmax(x) - reference.table[x].astype(np.float64)).max()
    assert report.max_abs_logits == pytest.approx(expected, rel=1e-6)
    assert report.max_abs_logits > 0.5  # a probability difference would be < 1 here too,
    assert report.argmax_agreement == 1.0  # but not this one: softmax keeps the order


def test_verify_finds_the_one_logit_that_moved():
    reference = Bigram()

    def nudged(idx):
        out = reference.table[idx].copy()
        out[-1, -1, 4] += 0.0625  # the very last position of the last window, only
        return out

    report = verify(nudged, reference, windows(n=7), batch_size=3)  # batches of 3, 3, 1
    assert report.max_abs_logits == pytest.approx(0.0625, abs=1e-6)
    assert report.ok(atol=0.1) and not report.ok(atol=0.06)


def test_verify_counts_argmax_agreement_exactly():
    # 4 windows x 2 positions = 8 positions, V = 3; the "export" flips the argmax at 3
    ref_logits = np.zeros((4, 2, 3), dtype=np.float32)
    ref_logits[..., 0] = 1.0  # reference: token 0 everywhere
    exp_logits = ref_logits.copy()
    for w, t in [(0, 1), (2, 0), (3, 1)]:
        exp_logits[w, t] = [0.0, 0.0, 2.0]
    x = np.arange(8).reshape(4, 2)  # window w holds ids 2w, 2w + 1: the fakes look rows up
    lookup = lambda table: lambda idx: table.reshape(8, 3)[idx]  # noqa: E731
    y = np.zeros_like(x)
    report = verify(lookup(exp_logits), lookup(ref_logits), (x, y), batch_size=3)
    assert report.argmax_agreement == 5 / 8
    assert not report.ok(atol=10.0, min_agreement=0.9) and report.ok(atol=10.0)


def test_verify_val_loss_is_the_mean_cross_entropy_by_hand():
    # V = 2, logits (0, ln 3): p = (1/4, 3/4). Targets 1, 0, ignored -> (ln 4/3 + ln 4) / 2.
    # A shift of 1000 overflows a naive exp; the loss must not change.
    row = np.array([0.0, math.log(3.0)], dtype=np.float32)
    ref = lambda idx: np.broadcast_to(row, (*idx.shape, 2))  # noqa: E731
    big = lambda idx: ref(idx) + np.float32(1000.0)  # noqa: E731
    x, y = np.zeros((1, 3), dtype=np.int64), np.array([[1, 0, -1]])
    report = verify(big, ref, (x, y))
    expected = (math.log(4 / 3) + math.log(4)) / 2
    assert report.reference_val_loss == pytest.approx(expected, rel=1e-6)
    assert report.val_loss == pytest.approx(expected, rel=1e-4)  # 1000 in float32: ~1e-4 off
    assert report.n_positions == 3  # the ignored target still counts for the logits


def test_verify_processes_the_windows_in_batches_with_the_same_result():
    x, y = windows(n=10)
    exported, reference = Bigram(seed=3, name="other"), Bigram()
    small = verify(exported, reference, (x, y), batch_size=4)
    assert [len(b) for b in exported.seen] == [4, 4, 2]
    assert [len(b) for b in reference.seen] == [4, 4, 2]
    assert all(b.dtype == np.int64 for b in exported.seen)  # raw runners get int64 too
    whole = verify(Bigram(seed=3), Bigram(), (x.astype(np.uint16), y.astype(np.int32)), 100)
    assert small.max_abs_logits == whole.max_abs_logits
    assert small.argmax_agreement == whole.argmax_agreement
    assert small.val_loss == pytest.approx(whole.val_loss, rel=1e-12)
    assert 0.0 < small.argmax_agreement < 1.0 and small.max_abs_logits > 0.1


def test_verify_never_passes_a_nan():
    reference = Bigram()

    def broken(idx):
        out = reference.table[idx].copy()
        out[0, 0, 0] = np.nan
        return out

    x, y = windows(n=6)
    report = verify(broken, reference, (x, y), batch_size=2)  # NaN in the first batch only
    assert math.isnan(report.max_abs_logits)
    assert not report.ok(atol=1e9)


def test_verify_rejects_windows_that_do_not_fit():
    x, y = windows()
    with pytest.raises(ValueError, match=re.escape("(5, 5)")):
        verify(Bigram(), Bigram(), (x, y[:, :5]))
    with pytest.raises(ValueError, match="target id 11"):
        verify(Bigram(), Bigram(), (x, np.full_like(y, VOCAB)))
    with pytest.raises(TypeError, match="float64"):
        verify(Bigram(), Bigram(), (x.astype(np.float64), y))
    with pytest.raises(TypeError, match="pair"):
        verify(Bigram(), Bigram(), x)


def test_verification_format_is_one_line_with_the_numbers():
    report = Verification("onnx fp32 (torch)", "eager torch", 3.5e-6, 0.96875, 2.25, 2.125, 4, 64)
    line = str(report)
    assert "\n" not in line and line == report.format()
    for fragment in ["onnx fp32 (torch)", "eager torch", "3.5e-06", "96.88%", "2.2500", "2.1250"]:
        assert fragment in line, (fragment, line)
    assert report.loss_gap == 0.125


def test_verify_names_come_from_the_runners():
    report = verify(wrapped(), Bigram(name="reference"), windows())
    assert (report.name, report.reference_name) == ("fake", "reference")


# --------------------------------------------------------------------------------------
# size_on_disk
# --------------------------------------------------------------------------------------


def test_size_on_disk_of_a_file_and_a_folder(tmp_path):
    (tmp_path / "model.tflite").write_bytes(b"x" * 1234)
    assert size_on_disk(tmp_path / "model.tflite") == 1234
    saved = tmp_path / "saved"
    (saved / "variables").mkdir(parents=True)
    (saved / "saved_model.pb").write_bytes(b"a" * 100)
    (saved / "variables" / "variables.data").write_bytes(b"b" * 900)
    assert size_on_disk(saved) == 1000
    with pytest.raises(FileNotFoundError, match="nothing.onnx"):
        size_on_disk(tmp_path / "nothing.onnx")


def _tiny_onnx(onnx, n: int):
    """y = x + w with an initializer w of n float32 values."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.arange(n, dtype=np.float32), name="w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])],
        initializer=[w],
    )
    return helper.make_model(graph)


def test_size_on_disk_counts_onnx_external_data(tmp_path):
    onnx = pytest.importorskip("onnx")
    inline = tmp_path / "inline.onnx"
    onnx.save_model(_tiny_onnx(onnx, 4096), str(inline))
    assert size_on_disk(inline) == inline.stat().st_size > 4 * 4096

    split = tmp_path / "split" / "model.onnx"
    split.parent.mkdir()
    onnx.save_model(
        _tiny_onnx(onnx, 4096),
        str(split),
        save_as_external_data=True,
        location="weights.bin",
        size_threshold=0,
    )
    data = split.parent / "weights.bin"
    (split.parent / "unrelated.data").write_bytes(b"z" * 5000)  # not referenced: not counted
    assert data.stat().st_size >= 4 * 4096 and split.stat().st_size < 4096
    assert size_on_disk(split) == split.stat().st_size + data.stat().st_size

    data.unlink()
    with pytest.raises(FileNotFoundError, match="weights.bin"):
        size_on_disk(split)
