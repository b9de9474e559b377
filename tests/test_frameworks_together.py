"""PyTorch and TensorFlow in one process, imported in either order.

TensorFlow and Triton both bundle LLVM: TensorFlow first, then anything that loads Triton
(torch.optim's first step does, through torch._dynamo) used to abort the process. Each case
runs in a fresh interpreter, trains one PyTorch step and runs the Keras GPT.
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
    "plain tensorflow first": "import tensorflow\n" + TORCH_STEP + KERAS_CALL,
    "plain tensorflow after course.torch": "import course.torch\nimport tensorflow\n" + TORCH_STEP,
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
    if order == "plain tensorflow first":
        assert "Triton is disabled" in result.stderr, "the learner is told what happened"
