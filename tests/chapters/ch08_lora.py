"""Chapter 08: plausible wrong answers for LoRALinear, apply_lora, merge_lora and the Keras
layer, and the library's reference of each exercise that has one (merge_lora has none: the
library's works on the library's layers, the exercise on the learner's).

Each wrong answer is the solution cell with one mistake made in it (`tests/chapters.Mistakes`).
"""

from autograde.probe import ReferenceAnswer

from . import Mistakes

_mistake = Mistakes("08_lora")


_SCALE = "self.r, self.alpha, self.scale = r, alpha, alpha / r"
_FREEZE_BASE = "        for p in base.parameters():\n            p.requires_grad_(False)\n"
_MERGED = "        if self.merged:\n            return y\n"
_FREEZE_ALL = "    for p in model.parameters():\n        p.requires_grad_(False)\n"
_FREEZE_DENSE = (
    "        for variable in base.weights:  # the kernel, and the bias if it has one\n"
    "            variable.trainable = False\n"
)
_WRAP = "setattr(parent, name, LoRALinear(child, r, alpha, dropout))\n"

WRONG_ANSWERS = [
    # --- exercise 1: LoRALinear ---
    _mistake("lora_linear", "scale = alpha", (_SCALE, _SCALE.replace("alpha / r", "alpha"))),
    _mistake("lora_linear", "scale = r / alpha",
             (_SCALE, _SCALE.replace("alpha / r", "r / alpha"))),
    _mistake("lora_linear", "A zero and B random",
             ("torch.empty(r, base.in_features", "torch.zeros(r, base.in_features"),
              ("kaiming_uniform_(self.lora_A", "kaiming_uniform_(self.lora_B")),
    _mistake("lora_linear", "the base left trainable", (_FREEZE_BASE, "")),
    _mistake("lora_linear", "A drawn from a standard normal",
             ("nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))",
              "nn.init.normal_(self.lora_A)")),
    _mistake("lora_linear", "dropout on the whole input, the frozen path too",
             ("y = self.base(x)  # (..., out)",
              "x = self.lora_dropout(x)\n        y = self.base(x)  # (..., out)")),
    _mistake("lora_linear", "no dropout at all",
             ("(self.lora_dropout(x) @ self.lora_A.T", "(x @ self.lora_A.T")),
    _mistake("lora_linear", "a merged layer still adds the update", (_MERGED, "")),
    _mistake("lora_linear", "A and B always float32",
             ("torch.empty(r, base.in_features, **factory)", "torch.empty(r, base.in_features)"),
             ("torch.zeros(base.out_features, r, **factory)",
              "torch.zeros(base.out_features, r)")),
    # --- exercise 2: apply_lora ---
    _mistake("apply_lora", "only c_attn adapted, whatever targets says",
             ("if name in targets and", 'if name == "c_attn" and')),
    _mistake("apply_lora", "nothing frozen: the whole base model trains", (_FREEZE_ALL, "")),
    _mistake("apply_lora", "only the Linear layers frozen: embeddings and LayerNorms train",
             (_FREEZE_ALL, "    for m in model.modules():\n        if isinstance(m, nn.Linear):\n"
                           "            m.requires_grad_(False)\n")),
    _mistake("apply_lora", "frozen after wrapping: A and B frozen too",
             (_FREEZE_ALL, ""),
             (_WRAP, _WRAP + _FREEZE_ALL)),
    _mistake("apply_lora", "the MLP adapted, the attention not",
             ("if name in targets and", 'if name in targets and name != "c_attn" and')),
    # --- exercise 3: merge_lora ---
    _mistake("merge_lora", "merged without the scale",
             ("(layer.lora_B @ layer.lora_A) * layer.scale", "(layer.lora_B @ layer.lora_A)")),
    _mistake("merge_lora", "merged transposed",
             ("(layer.lora_B @ layer.lora_A) * layer.scale",
              "(layer.lora_A.T @ layer.lora_B.T).reshape(layer.base.weight.shape) * layer.scale")),
    _mistake("merge_lora", "merged flag not set: the update counts twice",
             ("                layer.merged = True\n", "")),
    _mistake("merge_lora", "a merged layer merged again", (" and not layer.merged", "")),
    _mistake("merge_lora", "alpha instead of alpha / r",
             ("(layer.lora_B @ layer.lora_A) * layer.scale",
              "(layer.lora_B @ layer.lora_A) * layer.alpha")),
    # --- exercise 4: the Keras layer ---
    _mistake("keras_lora_linear", "the bias left trainable (as Dense.enable_lora does)",
             (_FREEZE_DENSE, "        base.kernel.trainable = False\n")),
    _mistake("keras_lora_linear", "the kernel left trainable",
             (_FREEZE_DENSE, "        if base.bias is not None:\n"
                             "            base.bias.trainable = False\n")),
    _mistake("keras_lora_linear", "the bias frozen as if every Dense had one",
             (_FREEZE_DENSE, "        base.kernel.trainable = False\n"
                             "        base.bias.trainable = False\n")),
    _mistake("keras_lora_linear", "scale = alpha", (_SCALE, _SCALE.replace("alpha / r", "alpha"))),
    _mistake("keras_lora_linear", "A zero and B random",
             ("initializer=keras.initializers.RandomUniform(-bound, bound),",
              'initializer="zeros",'),
             ('shape=(r, n_out), initializer="zeros"',
              "shape=(r, n_out), initializer=keras.initializers.RandomUniform(-bound, bound)")),
    _mistake("keras_lora_linear", "A drawn he_uniform (enable_lora's init)",
             ("initializer=keras.initializers.RandomUniform(-bound, bound),",
              'initializer="he_uniform",')),
    _mistake("keras_lora_linear", "PyTorch's layout: A (r, in), B (out, r)",
             ("shape=(n_in, r)", "shape=(r, n_in)"),
             ("shape=(r, n_out)", "shape=(n_out, r)"),
             ("ops.matmul(ops.matmul(x, self.lora_A), self.lora_B)",
              "ops.matmul(ops.matmul(x, ops.transpose(self.lora_A)), ops.transpose(self.lora_B))")),
    _mistake("keras_lora_linear", "a merged layer still adds the update", (_MERGED, "")),
]  # fmt: skip

REFERENCE_ANSWERS = [
    ReferenceAnswer("lora_linear", "course.torch.lora.LoRALinear",
                    "from course.torch.lora import LoRALinear"),
    ReferenceAnswer("apply_lora", "course.torch.lora.apply_lora",
                    "from course.torch.lora import apply_lora"),
    ReferenceAnswer("keras_lora_linear", "course.tf.lora.LoRALinear",
                    "from course.tf.lora import LoRALinear as KerasLoRALinear"),
]  # fmt: skip
