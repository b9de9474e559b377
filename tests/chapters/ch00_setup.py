"""Chapter 00: plausible wrong answers for the softmax warm-ups.

Each replaces a whole solution cell. The graded test cells of that exercise must fail on
every one of them (tests/test_chapters.py runs them against the solution notebook).
"""

from autograde.probe import WrongAnswer

WRONG_ANSWERS = [
    # numpy ----------------------------------------------------------------------------
    WrongAnswer(
        "softmax_numpy",
        "no max subtraction: overflows on large logits",
        """
def softmax_numpy(x, axis=-1):
    exp = np.exp(np.asarray(x))
    return exp / exp.sum(axis=axis, keepdims=True)
""",
    ),
    WrongAnswer(
        "softmax_numpy",
        "normalises by the sum of the whole array",
        """
def softmax_numpy(x, axis=-1):
    x = np.asarray(x)
    exp = np.exp(x - x.max(axis=axis, keepdims=True))
    return exp / exp.sum()
""",
    ),
    WrongAnswer(
        "softmax_numpy",
        "ignores the axis argument",
        """
def softmax_numpy(x, axis=-1):
    x = np.asarray(x)
    exp = np.exp(x - x.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)
""",
    ),
    WrongAnswer(
        "softmax_numpy",
        "silently upcasts float32 to float64",
        """
def softmax_numpy(x, axis=-1):
    x = np.asarray(x, dtype=np.float64)
    exp = np.exp(x - x.max(axis=axis, keepdims=True))
    return exp / exp.sum(axis=axis, keepdims=True)
""",
    ),
    # torch ----------------------------------------------------------------------------
    WrongAnswer(
        "softmax_torch",
        "subtracts the global maximum, not each row's: rows far below it underflow",
        """
def softmax_torch(x, dim=-1):
    exp = (x - x.max()).exp()
    return exp / exp.sum(dim=dim, keepdim=True)
""",
    ),
    WrongAnswer(
        "softmax_torch",
        "goes through numpy: right values, but no gradient",
        """
def softmax_torch(x, dim=-1):
    arr = x.detach().numpy()
    exp = np.exp(arr - arr.max(axis=dim, keepdims=True))
    return torch.from_numpy(exp / exp.sum(axis=dim, keepdims=True))
""",
    ),
    WrongAnswer(
        "softmax_torch",
        "ignores dim",
        """
def softmax_torch(x, dim=-1):
    exp = (x - x.amax(dim=-1, keepdim=True)).exp()
    return exp / exp.sum(dim=-1, keepdim=True)
""",
    ),
    # tensorflow -----------------------------------------------------------------------
    WrongAnswer(
        "softmax_tf",
        "sum without keepdims: broadcasts along the wrong axis",
        """
def softmax_tf(x, axis=-1):
    x = tf.convert_to_tensor(x)
    exp = tf.exp(x - tf.reduce_max(x, axis=axis, keepdims=True))
    return exp / tf.reduce_sum(exp, axis=axis)
""",
    ),
    WrongAnswer(
        "softmax_tf",
        "no max subtraction",
        """
def softmax_tf(x, axis=-1):
    exp = tf.exp(tf.convert_to_tensor(x))
    return exp / tf.reduce_sum(exp, axis=axis, keepdims=True)
""",
    ),
    WrongAnswer(
        "softmax_tf",
        "ignores axis: always normalises the last one",
        """
def softmax_tf(x, axis=-1):
    x = tf.convert_to_tensor(x)
    exp = tf.exp(x - tf.reduce_max(x, axis=-1, keepdims=True))
    return exp / tf.reduce_sum(exp, axis=-1, keepdims=True)
""",
    ),
    WrongAnswer(
        "softmax_tf",
        "numpy inside: fails in tf.function and loses the gradient",
        """
def softmax_tf(x, axis=-1):
    return tf.constant(softmax_numpy(np.asarray(x), axis=axis))
""",
    ),
]
