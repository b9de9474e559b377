"""course.torch.export: the GPT as ONNX (fp32 and int8) against the eager model.

One small GPT is trained for a few seconds on a synthetic Markov chain (each token is
followed by a fixed successor 90% of the time), so its logits are peaked the way a trained
model's are; it is exported once (dynamic batch and length) and quantized once for the
module. Expected values come from the eager model, never from the code under test.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_script

from course.config import GPTConfig
from course.export import ExportedModel, size_on_disk, verify
from course.torch import GPT, generate

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from course.torch.export import eager_model, onnx_model, quantize_int8, to_onnx  # noqa: E402

CONFIG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=65)
FOLLOW = 0.9  # how often a token is followed by its fixed successor


def markov_windows(n: int, seed: int, successor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """n sequences of block_size + 1 tokens: (x, y) windows, y shifted by one."""
    rng = np.random.default_rng(seed)
    V, length = CONFIG.vocab_size, CONFIG.block_size + 1
    seqs = np.empty((n, length), dtype=np.int64)
    seqs[:, 0] = rng.integers(0, V, n)
    for t in range(1, length):
        follow = rng.random(n) < FOLLOW
        seqs[:, t] = np.where(follow, successor[seqs[:, t - 1]], rng.integers(0, V, n))
    return seqs[:, :-1], seqs[:, 1:]


@pytest.fixture(scope="module")
def successor() -> np.ndarray:
    return np.random.default_rng(7).permutation(CONFIG.vocab_size)


@pytest.fixture(scope="module")
def model(successor) -> GPT:
    """A GPT trained 150 steps on the chain (a few seconds): left in training mode."""
    torch.manual_seed(0)
    gpt = GPT(CONFIG)
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=1e-2)
    for step in range(150):
        x, y = markov_windows(32, seed=100 + step, successor=successor)
        _, loss = gpt(torch.from_numpy(x), torch.from_numpy(y))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 2.0, f"the chain was not learned (loss {loss.item():.3f})"
    return gpt


@pytest.fixture(scope="module")
def files(model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    assert model.training
    fp32 = to_onnx(model, folder / "gpt.onnx")
    assert model.training, "to_onnx must restore the model's training mode"
    int8 = quantize_int8(fp32, folder / "gpt.int8.onnx")
    return fp32, int8


@pytest.fixture(scope="module")
def val(successor):
    return markov_windows(48, seed=1, successor=successor)


def eager_logits(model: GPT, idx: np.ndarray) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        logits, _ = model(torch.from_numpy(idx))
    model.train()
    return logits.numpy()


def test_fp32_onnx_matches_eager_for_every_batch_and_length(model, files):
    fp32 = onnx_model(files[0], CONFIG)
    rng = np.random.default_rng(3)
    for B, T in [(1, 1), (3, 7), (1, 16), (3, 16), (2, 5)]:  # one file, many shapes
        idx = rng.integers(0, CONFIG.vocab_size, (B, T))
        got = fp32(idx)
        want = eager_logits(model, idx)
        assert got.shape == (B, T, CONFIG.vocab_size) and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-4, (B, T, np.abs(got - want).max())


def test_onnx_file_has_named_symbolic_axes_and_no_stack_traces(files):
    proto = onnx.load(str(files[0]))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["idx"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert len(dims) == 2 and all(d.dim_param and not d.dim_value for d in dims)
    assert proto.graph.output[0].type.tensor_type.shape.dim[2].dim_value == CONFIG.vocab_size
    keys = {prop.key for node in proto.graph.node for prop in node.metadata_props}
    assert not any("stack_trace" in key for key in keys), keys


def test_exported_model_rejects_what_the_file_cannot_check(files):
    fp32 = onnx_model(files[0], CONFIG)
    assert isinstance(fp32, ExportedModel) and fp32.path == files[0]
    assert fp32.name == "onnx fp32 (torch)"
    with pytest.raises(ValueError, match=r"sequence length 17 exceeds block_size 16"):
        fp32(np.zeros((1, 17), dtype=np.int64))
    with pytest.raises(ValueError, match=r"token id 65 .*vocab_size 65"):
        fp32(np.array([[3, 65, 1]]))
    with pytest.raises(ValueError, match=r"token id -2 "):
        fp32(np.array([[3, -2, 1]]))
    with pytest.raises(TypeError, match="float64"):
        fp32(np.zeros((1, 4)))


def test_eager_gpt_keeps_its_clear_errors_after_export(model, files):
    for bad, text in [(70, "token id 70 "), (-1, "token id -1 ")]:
        with pytest.raises(ValueError, match=text + r".*vocab_size 65"):
            model(torch.tensor([[1, bad, 2]]))
    assert not torch.compiler.is_exporting()


def test_gpt_traces_with_torch_export_without_its_data_dependent_check(model):
    # The ONNX exporter falls back to other tracers when torch.export fails: check the
    # first one directly. Reading the ids' range into Python ints fails here (data-dependent).
    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gpt = model

        def forward(self, idx):
            return self.gpt(idx)[0]

    seq = torch.export.Dim("seq", min=1, max=CONFIG.block_size)
    program = torch.export.export(
        Logits().eval(),
        (torch.zeros((2, 5), dtype=torch.long),),
        dynamic_shapes={"idx": {0: torch.export.Dim("batch"), 1: seq}},
        strict=False,
    )
    model.train()
    targets = {str(node.target) for node in program.graph.nodes}
    assert not any("aminmax" in t or "aten.item" in t for t in targets), targets
    with pytest.raises(ValueError, match="token id 65 "):  # eager checks are back
        model(torch.tensor([[65]]))


def test_fp32_export_verifies_on_validation_windows(model, files, val):
    report = verify(onnx_model(files[0], CONFIG), eager_model(model), val, batch_size=10)
    assert report.ok(atol=1e-4), report
    assert report.argmax_agreement == 1.0
    assert report.n_positions == val[0].size
    loss = torch.nn.functional.cross_entropy(
        torch.from_numpy(eager_logits(model, val[0])).reshape(-1, CONFIG.vocab_size),
        torch.from_numpy(val[1]).reshape(-1),
    )
    assert report.reference_val_loss == pytest.approx(loss.item(), rel=1e-5)
    assert report.val_loss == pytest.approx(loss.item(), rel=1e-4)
    assert model.training, "eager_model must restore the training mode"


def test_int8_is_smaller_and_keeps_the_argmax(model, files, val):
    fp32_path, int8_path = files
    assert size_on_disk(int8_path) < 0.6 * size_on_disk(fp32_path)
    int8 = onnx_model(int8_path, CONFIG)
    assert int8.name == "onnx int8 (torch)"
    report = verify(int8, eager_model(model), val)
    assert report.max_abs_logits > 1e-4, "the int8 file computes exactly fp32: not quantized?"
    assert report.argmax_agreement >= 0.9, report
    assert abs(report.loss_gap) < 0.05, report


def test_quantize_int8_keeps_the_fp32_file(files, tmp_path):
    with pytest.raises(ValueError, match="differ"):
        quantize_int8(files[0], files[0])
    with pytest.raises(FileNotFoundError):
        quantize_int8(tmp_path / "missing.onnx", tmp_path / "out.onnx")


def greedy(exported: ExportedModel, prompt: np.ndarray, n: int) -> np.ndarray:
    out = prompt
    for _ in range(n):
        logits = exported(out[:, -exported.block_size :])
        out = np.concatenate([out, logits[:, -1].argmax(-1)[:, None]], axis=1)
    return out


def test_greedy_generation_through_onnx_matches_generate(model, files):
    fp32 = onnx_model(files[0], CONFIG)
    prompt = np.array([[5, 9, 2], [40, 41, 0]])
    n = 20  # 3 + 20 > block_size 16: the window slides
    want = generate(model, torch.from_numpy(prompt), n, temperature=0).numpy()
    got = greedy(fp32, prompt, n)
    np.testing.assert_array_equal(got, want)
    assert len(set(want[0, 3:].tolist())) > 3  # not one token repeated


def test_static_export_with_external_data(model, tmp_path):
    path = to_onnx(model, tmp_path / "static" / "gpt.onnx", dynamic=False, external_data=True)
    data = path.parent / "gpt.onnx.data"
    assert data.is_file() and data.stat().st_size > 4 * CONFIG.vocab_size * CONFIG.n_embd
    assert size_on_disk(path) == path.stat().st_size + data.stat().st_size
    static = onnx_model(path, CONFIG)
    idx = np.random.default_rng(5).integers(0, CONFIG.vocab_size, (1, CONFIG.block_size))
    assert np.abs(static(idx) - eager_logits(model, idx)).max() <= 1e-4
    with pytest.raises(ValueError, match=r"fixed input shape \(1, 16\)"):
        static(idx[:, :8])


def test_onnx_model_rejects_a_config_of_another_model(files):
    with pytest.raises(ValueError, match=r"65 tokens.*vocab_size is 50"):
        onnx_model(files[0], CONFIG.replace(vocab_size=50))
    with pytest.raises(ValueError, match="threads"):
        onnx_model(files[0], CONFIG, threads=0)


def test_eager_model_is_the_model(model):
    idx = np.random.default_rng(2).integers(0, CONFIG.vocab_size, (2, 9))
    eager = eager_model(model)
    got = eager(idx.astype(np.int32))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, eager_logits(model, idx))
    np.testing.assert_array_equal(eager(torch.from_numpy(idx)), got)  # tensors are ids too
    assert model.training


def test_after_quiet_exporters_an_export_writes_nothing_to_stderr(tmp_path):
    """In a notebook, stderr lands in the cell, and nbgrader scores a test cell that wrote
    to it 0: the exporters' notes (torchvision missing, a FutureWarning, onnxruntime's
    pre-processing advice) must not reach it."""
    result = run_script(
        f"""
        from course import export
        export.quiet_exporters()
        from course.config import GPTConfig
        from course.torch import GPT
        from course.torch.export import to_onnx
        path = to_onnx(GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4,
                                     vocab_size=5)), {str(tmp_path / "q.onnx")!r})
        export.quantize_int8(path, {str(tmp_path / "q.int8.onnx")!r})
        print("exported")
        """,
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "exported" in result.stdout
    assert result.stderr.strip() == "", result.stderr[-3000:]


def test_to_tflite_without_litert_torch_names_its_extra(tmp_path, monkeypatch):
    import importlib.util

    from course.torch.export import to_tflite

    real = importlib.util.find_spec

    def find_spec(name, *args):
        return None if name == "litert_torch" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ImportError, match=r"twin-gpt\[litert-torch\]"):
        to_tflite(GPT(CONFIG), tmp_path / "gpt.tflite")
    assert not (tmp_path / "gpt.tflite").exists()


def test_to_tflite_with_litert_torch_gives_the_eager_logits(tmp_path):
    """Runs where the litert-torch extra is installed (not in CI: it is its own extra)."""
    pytest.importorskip("litert_torch")
    interpreter = pytest.importorskip("ai_edge_litert.interpreter")
    from course.torch.export import to_tflite

    torch.manual_seed(3)
    model = GPT(CONFIG).eval()
    path = to_tflite(model, tmp_path / "gpt.tflite")
    lite = interpreter.Interpreter(model_path=str(path))
    lite.allocate_tensors()
    given, out = lite.get_input_details()[0], lite.get_output_details()[0]
    assert tuple(given["shape"]) == (1, CONFIG.block_size)
    x = np.random.default_rng(4).integers(0, CONFIG.vocab_size, (1, CONFIG.block_size))
    lite.set_tensor(given["index"], x.astype(given["dtype"]))
    lite.invoke()
    want = eager_model(model)(x)
    assert np.abs(lite.get_tensor(out["index"]) - want).max() < 1e-4


def test_to_tflite_int8_with_litert_torch_keeps_the_trained_model(model, successor, tmp_path):
    """Runs where the litert-torch extra is installed (not in CI: it is its own extra).
    int8 weights: a smaller file, the trained model's predictions kept. (In a model this
    small the graph's own bytes weigh as much as its weights: half the fp32 file, not the
    quarter a larger model's int8 file comes to.)"""
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_quantizer")
    from course.tf.export import tflite_model
    from course.torch.export import to_tflite

    fp32 = to_tflite(model, tmp_path / "gpt.tflite")
    int8 = to_tflite(model, tmp_path / "gpt.int8.tflite", int8=True)
    assert size_on_disk(int8) < 0.6 * size_on_disk(fp32)
    one = tflite_model(int8, CONFIG, threads=1)
    row_at_a_time = ExportedModel(
        lambda idx: np.concatenate([one(r[None]) for r in idx]), CONFIG.vocab_size,
        CONFIG.block_size, "tflite int8 (torch)",
    )  # fmt: skip
    report = verify(row_at_a_time, eager_model(model), markov_windows(32, 5, successor))
    assert report.argmax_agreement >= 0.98, report.format()
    assert abs(report.loss_gap) <= 0.02 * report.reference_val_loss, report.format()
    assert report.max_abs_logits > 1e-6  # quantized: not the fp32 file again


def test_to_tflite_int8_must_be_a_bool(tmp_path):
    from course.torch.export import to_tflite

    with pytest.raises(TypeError, match="int8 must be True or False"):
        to_tflite(GPT(CONFIG), tmp_path / "gpt.tflite", int8="dynamic")
