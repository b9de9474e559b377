"""The TensorFlow/Keras 3 side of Twin GPT, the mirror of `course.torch`.

Import it qualified, never `from course import tf`. The names below load their submodule
(and TensorFlow, through `course.runtime.import_tensorflow()` and `import_keras()`, which
load Triton first where it is installed, the one order in which both work) on first use,
so importing the package alone stays cheap and changes nothing:

    from course.tf import GPT as KerasGPT           # the Keras GPT (chapter 06)
    from course.tf import torch_to_keras, keras_to_torch   # weights, both ways
    from course.tf.data import make_dataset         # random (x, y) batches as tf.data
"""

from __future__ import annotations

from course._lazy import lazy_exports

_EXPORTS = {
    "GPT": "model",
    "Block": "model",
    "MLP": "model",
    "CausalSelfAttention": "model",
    "causal_mask": "model",
    "manual_attention": "model",
    "tiled_attention": "flash",  # chapter 07: the algorithm of FlashAttention
    "lm_loss": "model",
    "generate": "sampling",
    "sample_next": "sampling",
    "filter_logits": "sampling",
    "torch_to_keras": "convert",
    "keras_to_torch": "convert",
    "weight_pairs": "convert",
    "make_dataset": "data",
    "LoRALinear": "lora",  # chapter 08: low-rank adapters on a frozen GPT
    "apply_lora": "lora",
    "merge_lora": "lora",
    "unmerge_lora": "lora",
    "lora_parameters": "lora",
    "disable_lora": "lora",
    "save_adapter": "lora",
    "load_adapter": "lora",
    "torch_adapter_to_keras": "lora",
    "keras_adapter_to_torch": "lora",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
