"""Chapter 10: plausible wrong answers for the ONNX export, the verification and the choice
of a quantization, and the library's own versions of the first two, which must pass.

Each wrong answer is the solution cell with one mistake made in it (`tests/chapters.Mistakes`).
"""

from dataclasses import astuple

from autograde.probe import ReferenceAnswer

from . import Mistakes

_mistake = Mistakes("10_export")

_SHAPES = 'dynamic_shapes={"idx": {0: batch, 1: seq}},'
_MAX_ABS = "max_abs = float(np.abs(got - want).max())"
_GOOD = 'if row["argmax_agreement"] >= min_agreement'
_LOSS = 'and row["val_loss"] <= baseline_loss * (1 + max_loss_increase)'

WRONG_ANSWERS = [
    # --- exercise 1: export_onnx ---
    _mistake("export_onnx", "a fixed batch (only the length dynamic)",
             (_SHAPES, 'dynamic_shapes={"idx": {1: seq}},')),
    _mistake("export_onnx", "no dynamic axes: the example's shape only", (_SHAPES, "")),
    _mistake("export_onnx", "an example of batch 1", ("torch.zeros(2, 7,", "torch.zeros(1, 7,")),
    _mistake("export_onnx", "the input named input_ids",
             ('input_names=["idx"]', 'input_names=["input_ids"]')),
    _mistake("export_onnx", "the output named output",
             ('output_names=["logits"]', 'output_names=["output"]')),
    # --- exercise 2: verify_export ---
    _mistake("verify_export", "probabilities compared instead of logits",
             (_MAX_ABS, "max_abs = float(np.abs(np.exp(export.log_softmax(got)) - "
                        "np.exp(export.log_softmax(want))).max())")),
    _mistake("verify_export", "the tolerance in the wrong direction",
             ('"ok": max_abs <= atol', '"ok": max_abs >= atol')),
    _mistake("verify_export", "the mean |difference| instead of the largest",
             (_MAX_ABS, "max_abs = float(np.abs(got - want).mean())")),
    _mistake("verify_export", "argmax over the batch axis",
             ("(got.argmax(-1) == want.argmax(-1))", "(got.argmax(0) == want.argmax(0))")),
    _mistake("verify_export", "both losses from the reference's logits",
             ('"val_loss": loss(got),', '"val_loss": loss(want),')),
    # --- exercise 3: choose_export ---
    _mistake("choose_export", "the smallest file, whatever its accuracy",
             (f"        {_GOOD}\n        {_LOSS}\n", "")),
    _mistake("choose_export", "the loss bound absolute, not relative",
             (_LOSS, 'and row["val_loss"] <= baseline_loss + max_loss_increase')),
    _mistake("choose_export", "agreement strictly above the bound",
             (_GOOD, 'if row["argmax_agreement"] > min_agreement')),
    _mistake("choose_export", "a lower loss than the baseline refused too",
             (_LOSS, 'and abs(row["val_loss"] - baseline_loss) <= '
                     'baseline_loss * max_loss_increase')),
    _mistake("choose_export", "the largest file within the bounds",
             ('min(good, key=lambda row: row["bytes"])',
              'max(good, key=lambda row: row["bytes"])')),
]  # fmt: skip

REFERENCE_ANSWERS = [
    ReferenceAnswer(
        "export_onnx", "course.torch.export.to_onnx",
        "def export_onnx(model, path):\n    return torch_export.to_onnx(model, path)\n",
    ),
    ReferenceAnswer(
        "verify_export", "course.export.verify",
        "def verify_export(exported, reference, x, y, atol=1e-4):\n"
        "    report = export.verify(exported, reference, (x, y))\n"
        "    return {**vars(report), 'ok': report.max_abs_logits <= atol}\n",
    ),
    ReferenceAnswer(*astuple(_mistake(  # right too: the rows sorted by size, the first good one
        "choose_export", "the rows sorted by size, the first that qualifies",
        ("return min(good, key=lambda row: row[\"bytes\"])[\"name\"] if good else None",
         "return sorted(good, key=lambda row: row[\"bytes\"])[0][\"name\"] if good else None"),
    ))),
]  # fmt: skip
