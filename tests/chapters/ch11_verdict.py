"""Chapter 11: plausible wrong answers for reading the measurements (the speed-up, the winner
of a row, the claims), and the library's own versions in course.compare, which must pass.

Each wrong answer is the solution cell with one mistake made in it (`tests/chapters.Mistakes`).
"""

from autograde.probe import ReferenceAnswer

from . import Mistakes

_mistake = Mistakes("11_verdict")

_SPEEDUP = "return base_ms / fast_ms - 1.0"
_CHECK = (
    "        if not math.isfinite(value) or value <= 0:\n"
    '            raise ValueError(f"{name} must be a positive time, got {value!r}")\n'
)
_BETTER = (
    "    if lower_is_better:\n"
    "        better = min(torch_value, tf_value)\n"
    "    else:\n"
    "        better = max(torch_value, tf_value)\n"
)
_NOISE = "noise * abs(better)"
_NONE = (
    "    if torch_value is None or tf_value is None:\n"
    "        if torch_value is None and tf_value is None:\n"
    '            return "neither"\n'
    '        return "tf" if torch_value is None else "torch"\n'
)
_COMPILE = 'at_least(step_ms("torch", "eager"), step_ms("torch", "compiled"),'
_BEST = 'torch_best, tf_best = fastest("torch"), fastest("tf")'
_SAVED = 'held["peft_pytorch"] = saved["tf"] < saved["torch"] - tolerance'

WRONG_ANSWERS = [
    # --- exercise 1: speedup ---
    _mistake("speedup", "fast / base - 1 (the speed-up upside down)",
             (_SPEEDUP, "return fast_ms / base_ms - 1.0")),
    _mistake("speedup", "1 - fast / base: the time saved, not the speed gained",
             (_SPEEDUP, "return 1.0 - fast_ms / base_ms")),
    _mistake("speedup", "base / fast without the - 1: the ratio",
             (_SPEEDUP, "return base_ms / fast_ms")),
    _mistake("speedup", "no check: a zero or negative time goes through", (_CHECK, "")),
    _mistake("speedup", "only the fast time checked",
             ("        if not math.isfinite(value) or value <= 0:",
              '        if name == "fast_ms" and (not math.isfinite(value) or value <= 0):')),
    # --- exercise 2: winner ---
    _mistake("winner", "lower_is_better ignored: the lower always wins",
             (_BETTER, "    better = min(torch_value, tf_value)\n")),
    _mistake("winner", "the noise relative to the worse figure",
             (_NOISE, "noise * abs(torch_value + tf_value - better)")),
    _mistake("winner", "the noise relative to the larger figure",
             (_NOISE, "noise * max(abs(torch_value), abs(tf_value))")),
    _mistake("winner", "the noise absolute, not relative", (_NOISE, "noise")),
    _mistake("winner", "None compared like a number (crashes)", (_NONE, "")),
    _mistake("winner", "a missing figure wins",
             ('return "tf" if torch_value is None else "torch"',
              'return "torch" if torch_value is None else "tf"')),
    _mistake("winner", "both missing called a tie", ('return "neither"', 'return "tie"')),
    # --- exercise 3: claims_held ---
    _mistake("claims_held", "the thresholds without the tolerance",
             ("0.30 - tolerance", "0.30"), ("0.15 - tolerance", "0.15")),
    _mistake("claims_held", "the tolerance against the claim (stricter)",
             ("0.30 - tolerance", "0.30 + tolerance"), ("0.15 - tolerance", "0.15 + tolerance")),
    _mistake("claims_held", "a missing or failed figure counted as a claim that did not hold",
             ("        if base is None or fast is None:\n            return None\n",
              "        if base is None or fast is None:\n            return False\n")),
    _mistake("claims_held", "an entry that failed read as a measurement",
             ('return part if isinstance(part, dict) and "error" not in part else None',
              "return part if isinstance(part, dict) else None")),
    _mistake("claims_held", "compiled and eager swapped",
             (_COMPILE, 'at_least(step_ms("torch", "compiled"), step_ms("torch", "eager"),')),
    _mistake("claims_held", "PyTorch faster: the two frameworks swapped",
             ("speedup(tf_best, torch_best) > tolerance",
              "speedup(torch_best, tf_best) > tolerance")),
    _mistake("claims_held", "PyTorch faster: each framework's default mode, not its fastest",
             (_BEST, 'torch_best, tf_best = step_ms("torch", "eager"), step_ms("tf", "xla")')),
    _mistake("claims_held", "TFLite judged by its size alone",
             ('held["tflite_edge"] = smallest and quickest', 'held["tflite_edge"] = smallest')),
    _mistake("claims_held", "LoRA's saving compared the wrong way round",
             (_SAVED, 'held["peft_pytorch"] = saved["torch"] < saved["tf"] - tolerance')),
    _mistake("claims_held", "a Keras LoRA never run counted as one that failed",
             ('if torch_lora is None or "tf" not in sections.get("lora", {}):',
              "if torch_lora is None:")),
]  # fmt: skip

REFERENCE_ANSWERS = [
    ReferenceAnswer("speedup", "course.compare.speedup", "from course.compare import speedup"),
    ReferenceAnswer("winner", "course.compare.winner", "from course.compare import winner"),
    ReferenceAnswer("claims_held", "course.compare.claims_held",
                    "from course.compare import claims_held"),
]  # fmt: skip
