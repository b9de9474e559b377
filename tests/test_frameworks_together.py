"""PyTorch and TensorFlow in one process, imported in either order.

TensorFlow and Triton both bundle LLVM: with TensorFlow loaded first, whatever loads Triton
later aborts the process, and PyTorch does in torch.compile and in every optimizer's
constructor (through torch._dynamo). `course.runtime.import_tensorflow()`, which the course
uses everywhere, loads Triton first. Each case runs in a fresh interpreter, trains one
PyTorch step and runs the Keras GPT.
"""

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

TORCH_STEP = """
import torch
from course.config import get_preset
from course.torch import GPT
config = get_preset("nano").model
model = GPT(config)
optimizer = torch.optim.AdamW(model.parameters())
x = torch.randint(0, config.vocab_size, (2, 8))
model(x, x)[1].backward()
optimizer.step()
print("torch ok")
"""

KERAS_CALL = """
import numpy as np
from course.config import get_preset
from course.tf import GPT as KerasGPT
print("keras ok", KerasGPT(get_preset("nano").model)(np.zeros((1, 4), "int32")).shape)
"""

ORDERS = {
    "course.torch then course.tf": TORCH_STEP + KERAS_CALL,
    "course.tf then course.torch": KERAS_CALL + TORCH_STEP,
    "import_tensorflow first": "from course import runtime\nruntime.import_tensorflow()\n"
    + TORCH_STEP
    + KERAS_CALL,
    # torch.optim has loaded Triton by then: the order that works, without the helper too.
    "plain tensorflow after a torch step": TORCH_STEP + "import tensorflow\n" + KERAS_CALL,
}


@pytest.mark.slow
@pytest.mark.parametrize("order", ORDERS)
def test_torch_and_tensorflow_in_either_order(order):
    code = textwrap.dedent(ORDERS[order])
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{order}: exit {result.returncode}\n{result.stderr[-3000:]}"
    assert "torch ok" in result.stdout
    assert "keras ok" in result.stdout


# What the course works around, kept as a test: if TensorFlow and Triton ever coexist in
# this order, this fails, and the warnings and refusals of course.runtime can go.
PLAIN_TENSORFLOW_FIRST = """
import tensorflow
import torch
model = torch.nn.Linear(3, 2)
torch.optim.AdamW(model.parameters())
print("no abort")
"""


def test_plain_tensorflow_first_then_a_torch_optimizer_aborts_the_process():
    pytest.importorskip("tensorflow")
    pytest.importorskip("triton")
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TENSORFLOW_FIRST],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0 and "no abort" not in result.stdout, "the clash is gone"
    assert "LLVM ERROR" in result.stderr, result.stderr[-2000:]
