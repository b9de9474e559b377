"""The PyTorch side of Twin GPT.

Import it qualified, never `from course import torch` (that name would shadow torch
itself). The names below load their submodule (and torch) on first use, so importing the
package alone stays cheap:

    from course.torch import GPT, generate      # the model (chapters 04-05) and sampling
    from course.torch.data import make_loader   # random (x, y) batches as a DataLoader
    from course.torch.train import train        # the training loop, checkpoints, metrics

Importing it imports neither Triton nor TensorFlow and sets no environment variable: Triton
is imported only when a Triton kernel is first used (`attn_impl="triton"`, through
`course.runtime.import_kernels`). To use TensorFlow in the same process, import it with
`course.runtime.import_tensorflow()`, which loads the two in the one order that works.
"""

from __future__ import annotations

from course._lazy import lazy_exports

_EXPORTS = {
    "GPT": "model",
    "Block": "model",
    "MLP": "model",
    "CausalSelfAttention": "model",
    "KVCache": "model",
    "causal_mask": "model",
    "manual_attention": "model",
    "tiled_attention": "flash",  # chapter 07: the algorithm of FlashAttention
    "config_from_hf": "model",
    "load_hf_state_dict": "model",
    "generate": "sampling",
    "sample_next": "sampling",
    "filter_logits": "sampling",
    "make_loader": "data",
    "LoRALinear": "lora",  # chapter 08: low-rank adapters on a frozen GPT
    "apply_lora": "lora",
    "merge_lora": "lora",
    "unmerge_lora": "lora",
    "lora_parameters": "lora",
    "disable_lora": "lora",
    "save_adapter": "lora",
    "load_adapter": "lora",
    # `train` itself is imported from course.torch.train: a package attribute named
    # `train` would be shadowed by the submodule of the same name.
    "configure_optimizer": "train",
    "save_checkpoint": "train",
    "load_checkpoint": "train",
    "load_model": "train",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_exports(__name__, _EXPORTS)
