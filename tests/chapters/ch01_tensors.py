"""Chapter 01: plausible wrong answers for the tensor exercises, and other right ones.

Each wrong answer replaces a whole solution cell (both the PyTorch and the TensorFlow
function, only one of them wrong). The graded test cell of that exercise must fail on every
one of them (tests/test_chapters.py runs them against the solution notebook). The reference
answers are correct solutions written differently from the notebook's (another function, a
different formula): the tests must accept them, so that they check behaviour, not spelling.
"""

from autograde.probe import ReferenceAnswer, WrongAnswer

_IDS_TF = """
def ids_to_tf(ids):
    return tf.convert_to_tensor(ids.astype(np.int32))
"""
_IDS_TORCH = """
def ids_to_torch(ids, device="cpu"):
    return torch.from_numpy(ids.astype(np.int64)).to(device)
"""
_DISTS_TF = """
def pairwise_sq_dists_tf(a, b):
    diff = a[:, None, :] - b[None, :, :]
    return tf.reduce_sum(diff * diff, axis=-1)
"""
_DISTS_TORCH = """
def pairwise_sq_dists_torch(a, b):
    diff = a[:, None, :] - b[None, :, :]
    return (diff * diff).sum(dim=-1)
"""
_LAST_TF = """
def last_token_logits_tf(logits, lengths):
    return tf.gather(logits, lengths - 1, axis=1, batch_dims=1)
"""
_LAST_TORCH = """
def last_token_logits_torch(logits, lengths):
    return logits[torch.arange(logits.shape[0]), lengths - 1]
"""
_SPLIT_TF = """
def split_heads_tf(x, n_head):
    B, T, C = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
    return tf.transpose(tf.reshape(x, (B, T, n_head, C // n_head)), (0, 2, 1, 3))
"""
_SPLIT_TORCH = """
def split_heads_torch(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)
"""
_SCATTER_TF = """
def scatter_add_rows_tf(var, ids, updates):
    var.scatter_nd_add(tf.reshape(ids, (-1, 1)), updates)
"""
_SCATTER_TORCH = """
def scatter_add_rows_torch_(table, ids, updates):
    return table.index_add_(0, ids, updates)
"""
_SCORES_TF = """
def attention_scores_tf(q, k):
    return tf.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
"""
_SCORES_TORCH = """
def attention_scores_torch(q, k):
    return torch.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-1])
"""
_MEAN_TF = """
def masked_mean_tf(x, mask):
    weights = tf.cast(mask, x.dtype)[:, :, None]
    return tf.reduce_sum(x * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
"""
_MEAN_TORCH = """
def masked_mean_torch(x, mask):
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
"""

WRONG_ANSWERS = [
    # 1 · dtypes and devices -------------------------------------------------------------
    WrongAnswer(
        "ids_to_tensors",
        "casts to int16 (same size as uint16): ids above 32767 wrap around",
        """
def ids_to_torch(ids, device="cpu"):
    return torch.from_numpy(ids.astype(np.int16)).to(device=device, dtype=torch.int64)
"""
        + _IDS_TF,
    ),
    WrongAnswer(
        "ids_to_tensors",
        "torch.from_numpy keeps numpy's uint16",
        """
def ids_to_torch(ids, device="cpu"):
    return torch.from_numpy(ids).to(device)
"""
        + _IDS_TF,
    ),
    WrongAnswer(
        "ids_to_tensors",
        "ignores the device argument",
        """
def ids_to_torch(ids, device="cpu"):
    return torch.from_numpy(ids.astype(np.int64))
"""
        + _IDS_TF,
    ),
    WrongAnswer(
        "ids_to_tensors",
        "tf.constant keeps uint16",
        _IDS_TORCH
        + """
def ids_to_tf(ids):
    return tf.constant(ids)
""",
    ),
    WrongAnswer(
        "ids_to_tensors",
        "TensorFlow ids as int64, not int32",
        _IDS_TORCH
        + """
def ids_to_tf(ids):
    return tf.constant(ids.astype(np.int64))
""",
    ),
    # 2 · broadcasting --------------------------------------------------------------------
    WrongAnswer(
        "pairwise_sq_dists",
        "no broadcasting: subtracts row i of b from row i of a",
        """
def pairwise_sq_dists_torch(a, b):
    return ((a - b) ** 2).sum(dim=-1)
"""
        + _DISTS_TF,
    ),
    WrongAnswer(
        "pairwise_sq_dists",
        "sums over the wrong axis (M instead of D)",
        """
def pairwise_sq_dists_torch(a, b):
    diff = a[:, None, :] - b[None, :, :]
    return (diff * diff).sum(dim=1)
"""
        + _DISTS_TF,
    ),
    WrongAnswer(
        "pairwise_sq_dists",
        "returns distances, not squared distances",
        """
def pairwise_sq_dists_torch(a, b):
    diff = a[:, None, :] - b[None, :, :]
    return (diff * diff).sum(dim=-1).sqrt()
"""
        + _DISTS_TF,
    ),
    WrongAnswer(
        "pairwise_sq_dists",
        "TensorFlow: size-1 axes swapped, result is (M, N)",
        _DISTS_TORCH
        + """
def pairwise_sq_dists_tf(a, b):
    diff = b[:, None, :] - a[None, :, :]
    return tf.reduce_sum(diff * diff, axis=-1)
""",
    ),
    # 3 · indexing and gather -------------------------------------------------------------
    WrongAnswer(
        "last_token_logits",
        "off by one: position lengths instead of lengths - 1",
        """
def last_token_logits_torch(logits, lengths):
    return logits[torch.arange(logits.shape[0]), lengths]
"""
        + _LAST_TF,
    ),
    WrongAnswer(
        "last_token_logits",
        "always the last position, ignoring the padding",
        """
def last_token_logits_torch(logits, lengths):
    return logits[:, -1]
"""
        + _LAST_TF,
    ),
    WrongAnswer(
        "last_token_logits",
        "torch: logits[:, lengths - 1] picks every row's positions for every row: (B, B, V)",
        """
def last_token_logits_torch(logits, lengths):
    return logits[:, lengths - 1]
"""
        + _LAST_TF,
    ),
    WrongAnswer(
        "last_token_logits",
        "TensorFlow: tf.gather without batch_dims gives (B, B, V)",
        _LAST_TORCH
        + """
def last_token_logits_tf(logits, lengths):
    return tf.gather(logits, lengths - 1, axis=1)
""",
    ),
    WrongAnswer(
        "last_token_logits",
        "TensorFlow: off by one",
        _LAST_TORCH
        + """
def last_token_logits_tf(logits, lengths):
    return tf.gather(logits, lengths, axis=1, batch_dims=1)
""",
    ),
    WrongAnswer(
        "last_token_logits",
        "TensorFlow: a Python loop over the static batch size (None inside tf.function)",
        _LAST_TORCH
        + """
def last_token_logits_tf(logits, lengths):
    return tf.stack([logits[b, lengths[b] - 1] for b in range(logits.shape[0])])
""",
    ),
    # 4 · views vs copies -----------------------------------------------------------------
    WrongAnswer(
        "split_heads",
        "a copy, not a view: .contiguous() after the transpose",
        """
def split_heads_torch(x, n_head):
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).permute(0, 2, 1, 3).contiguous()
"""
        + _SPLIT_TF,
    ),
    WrongAnswer(
        "split_heads",
        "reshapes straight to (B, n_head, T, hs): right shape, tokens and heads mixed up",
        """
def split_heads_torch(x, n_head):
    B, T, C = x.shape
    return x.view(B, n_head, T, C // n_head)
"""
        + _SPLIT_TF,
    ),
    WrongAnswer(
        "split_heads",
        "heads interleaved: (B, T, hs, n_head) then permute",
        """
def split_heads_torch(x, n_head):
    B, T, C = x.shape
    return x.view(B, T, C // n_head, n_head).permute(0, 3, 1, 2)
"""
        + _SPLIT_TF,
    ),
    WrongAnswer(
        "split_heads",
        "TensorFlow: static x.shape, None for B and T inside tf.function",
        _SPLIT_TORCH
        + """
def split_heads_tf(x, n_head):
    B, T, C = x.shape
    return tf.transpose(tf.reshape(x, (B, T, n_head, C // n_head)), (0, 2, 1, 3))
""",
    ),
    WrongAnswer(
        "split_heads",
        "TensorFlow: reshape straight to (B, n_head, T, hs)",
        _SPLIT_TORCH
        + """
def split_heads_tf(x, n_head):
    B, T, C = tf.shape(x)[0], tf.shape(x)[1], x.shape[-1]
    return tf.reshape(x, (B, n_head, T, C // n_head))
""",
    ),
    # 5 · in-place updates ----------------------------------------------------------------
    WrongAnswer(
        "scatter_add_rows",
        "table[ids] += updates: a repeated id is added once",
        """
def scatter_add_rows_torch_(table, ids, updates):
    table[ids] += updates
    return table
"""
        + _SCATTER_TF,
    ),
    WrongAnswer(
        "scatter_add_rows",
        "index_add without the underscore: a new tensor, table unchanged",
        """
def scatter_add_rows_torch_(table, ids, updates):
    return table.index_add(0, ids, updates)
"""
        + _SCATTER_TF,
    ),
    WrongAnswer(
        "scatter_add_rows",
        "updates in place but forgets to return table",
        """
def scatter_add_rows_torch_(table, ids, updates):
    table.index_add_(0, ids, updates)
"""
        + _SCATTER_TF,
    ),
    WrongAnswer(
        "scatter_add_rows",
        "TensorFlow: rebinds the local name to a new tensor, the variable is unchanged",
        _SCATTER_TORCH
        + """
def scatter_add_rows_tf(var, ids, updates):
    var = tf.tensor_scatter_nd_add(var, tf.reshape(ids, (-1, 1)), updates)
    return var
""",
    ),
    WrongAnswer(
        "scatter_add_rows",
        "TensorFlow: scatter_nd_update overwrites the rows instead of adding",
        _SCATTER_TORCH
        + """
def scatter_add_rows_tf(var, ids, updates):
    var.scatter_nd_update(tf.reshape(ids, (-1, 1)), updates)
""",
    ),
    WrongAnswer(
        "scatter_add_rows",
        "TensorFlow: gather, add, write back: a repeated id is added once",
        _SCATTER_TORCH
        + """
def scatter_add_rows_tf(var, ids, updates):
    var.scatter_nd_update(tf.reshape(ids, (-1, 1)), tf.gather(var, ids) + updates)
""",
    ),
    # 6 · einsum --------------------------------------------------------------------------
    WrongAnswer(
        "attention_scores",
        "wrong output subscripts: (B, H, S, T)",
        """
def attention_scores_torch(q, k):
    return torch.einsum("bhtd,bhsd->bhst", q, k) / math.sqrt(q.shape[-1])
"""
        + _SCORES_TF,
    ),
    WrongAnswer(
        "attention_scores",
        "scaled by 1/D instead of 1/sqrt(D)",
        """
def attention_scores_torch(q, k):
    return torch.einsum("bhtd,bhsd->bhts", q, k) / q.shape[-1]
"""
        + _SCORES_TF,
    ),
    WrongAnswer(
        "attention_scores",
        "no scale",
        """
def attention_scores_torch(q, k):
    return torch.einsum("bhtd,bhsd->bhts", q, k)
"""
        + _SCORES_TF,
    ),
    WrongAnswer(
        "attention_scores",
        "TensorFlow: scale from the time axis (q.shape[-2]) instead of D",
        _SCORES_TORCH
        + """
def attention_scores_tf(q, k):
    return tf.einsum("bhtd,bhsd->bhts", q, k) / math.sqrt(q.shape[-2])
""",
    ),
    WrongAnswer(
        "attention_scores",
        "TensorFlow: sums over the heads too, (B, T, S)",
        _SCORES_TORCH
        + """
def attention_scores_tf(q, k):
    return tf.einsum("bhtd,bhsd->bts", q, k) / math.sqrt(q.shape[-1])
""",
    ),
    # 7 · reductions ----------------------------------------------------------------------
    WrongAnswer(
        "masked_mean",
        "divides by the count unguarded: NaN for a row without tokens",
        """
def masked_mean_torch(x, mask):
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=1) / weights.sum(dim=1)
"""
        + _MEAN_TF,
    ),
    WrongAnswer(
        "masked_mean",
        "divides by T, not by the number of real tokens",
        """
def masked_mean_torch(x, mask):
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).mean(dim=1)
"""
        + _MEAN_TF,
    ),
    WrongAnswer(
        "masked_mean",
        "mask without its last axis: (B, T) broadcasts against (T, C), not (B, T)",
        """
def masked_mean_torch(x, mask):
    weights = mask.to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
"""
        + _MEAN_TF,
    ),
    WrongAnswer(
        "masked_mean",
        "averages over the channels (axis 2) instead of time",
        """
def masked_mean_torch(x, mask):
    weights = mask.to(x.dtype).unsqueeze(-1)
    return (x * weights).sum(dim=2) / weights.sum(dim=2).clamp(min=1.0)
"""
        + _MEAN_TF,
    ),
    WrongAnswer(
        "masked_mean",
        "TensorFlow: casts the mask to float32 whatever x's dtype",
        _MEAN_TORCH
        + """
def masked_mean_tf(x, mask):
    weights = tf.cast(mask, tf.float32)[:, :, None]
    return tf.reduce_sum(x * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)
""",
    ),
    WrongAnswer(
        "masked_mean",
        "TensorFlow: tf.reduce_mean of the masked values (divides by T)",
        _MEAN_TORCH
        + """
def masked_mean_tf(x, mask):
    return tf.reduce_mean(x * tf.cast(mask, x.dtype)[:, :, None], axis=1)
""",
    ),
]

REFERENCE_ANSWERS = [
    ReferenceAnswer(
        "ids_to_tensors",
        "torch.tensor with dtype and device; tf.cast",
        """
def ids_to_torch(ids, device="cpu"):
    return torch.tensor(ids.astype(np.int64), dtype=torch.int64, device=device)

def ids_to_tf(ids):
    return tf.cast(ids.astype(np.int64), tf.int32)
""",
    ),
    ReferenceAnswer(
        "pairwise_sq_dists",
        "expanded: |a|^2 + |b|^2 - 2 a.b, with a matrix product",
        """
def pairwise_sq_dists_torch(a, b):
    return (a * a).sum(-1)[:, None] + (b * b).sum(-1)[None, :] - 2 * a @ b.T

def pairwise_sq_dists_tf(a, b):
    sq_a = tf.reduce_sum(a * a, axis=-1, keepdims=True)
    sq_b = tf.reduce_sum(b * b, axis=-1)[None, :]
    return sq_a + sq_b - 2 * tf.matmul(a, b, transpose_b=True)
""",
    ),
    ReferenceAnswer(
        "last_token_logits",
        "torch.gather with an expanded index; tf.gather_nd with (row, position) pairs",
        """
def last_token_logits_torch(logits, lengths):
    B, T, V = logits.shape
    index = (lengths - 1).view(B, 1, 1).expand(B, 1, V)
    return torch.gather(logits, 1, index).squeeze(1)

def last_token_logits_tf(logits, lengths):
    rows = tf.range(tf.shape(lengths)[0], dtype=lengths.dtype)
    return tf.gather_nd(logits, tf.stack([rows, lengths - 1], axis=1))
""",
    ),
    ReferenceAnswer(
        "split_heads",
        "unflatten + permute; tf.reshape with a computed shape and -1",
        """
def split_heads_torch(x, n_head):
    return x.unflatten(-1, (n_head, -1)).permute(0, 2, 1, 3)

def split_heads_tf(x, n_head):
    shape = tf.concat([tf.shape(x)[:2], [n_head, -1]], axis=0)
    return tf.transpose(tf.reshape(x, shape), (0, 2, 1, 3))
""",
    ),
    ReferenceAnswer(
        "scatter_add_rows",
        "scatter_add_ with an expanded index; assign a tensor_scatter_nd_add",
        """
def scatter_add_rows_torch_(table, ids, updates):
    return table.scatter_add_(0, ids[:, None].expand_as(updates), updates)

def scatter_add_rows_tf(var, ids, updates):
    var.assign(tf.tensor_scatter_nd_add(var, ids[:, None], updates))
""",
    ),
    ReferenceAnswer(
        "attention_scores",
        "matrix products instead of einsum",
        """
def attention_scores_torch(q, k):
    return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])

def attention_scores_tf(q, k):
    return tf.matmul(q, k, transpose_b=True) / math.sqrt(q.shape[-1])
""",
    ),
    ReferenceAnswer(
        "masked_mean",
        "nan_to_num after the division; tf.math.divide_no_nan",
        """
def masked_mean_torch(x, mask):
    weights = mask.to(x.dtype)[:, :, None]
    return torch.nan_to_num((x * weights).sum(1) / weights.sum(1), nan=0.0)

def masked_mean_tf(x, mask):
    weights = tf.cast(mask, x.dtype)[:, :, None]
    return tf.math.divide_no_nan(tf.reduce_sum(x * weights, 1), tf.reduce_sum(weights, 1))
""",
    ),
]
