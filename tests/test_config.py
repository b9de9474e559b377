"""course.config: the presets are the recipes they claim to be, and bad values fail early."""

import math

import pytest

from course.config import PRESETS, GPTConfig, TrainConfig, get_preset, lr_at


def test_shakespeare_char_cpu_is_the_known_cpu_recipe():
    preset = get_preset("shakespeare-char-cpu")
    m, t = preset.model, preset.train
    assert (m.n_layer, m.n_head, m.n_embd, m.block_size, m.vocab_size) == (4, 4, 128, 64, 65)
    assert (m.dropout, m.bias) == (0.0, False)
    assert (t.batch_size, t.max_iters, t.learning_rate, t.min_lr) == (12, 2000, 1e-3, 1e-4)
    assert (t.beta1, t.beta2, t.weight_decay, t.grad_clip) == (0.9, 0.99, 0.1, 1.0)
    assert (t.warmup_iters, t.lr_decay_iters) == (100, 2000)
    assert (t.eval_interval, t.eval_iters, t.tokenizer) == (250, 20, "char")


def test_nano_is_small():
    preset = get_preset("nano")
    assert preset.model.n_layer * preset.model.n_embd <= 128
    assert preset.train.max_iters <= 500


def test_every_preset_is_valid_and_described():
    for name, preset in PRESETS.items():
        assert preset.name == name
        assert preset.about
        assert preset.model.n_embd % preset.model.n_head == 0


def test_overrides_from_strings_are_converted():
    preset = get_preset(
        "nano", {"max_iters": "50", "attn_impl": "manual", "compile": "true", "min-lr": "1e-5"}
    )
    assert preset.train.max_iters == 50
    assert preset.train.lr_decay_iters == 50  # the cosine follows a shorter run
    assert preset.model.attn_impl == "manual"
    assert preset.train.compile is True
    assert preset.train.min_lr == 1e-5
    assert PRESETS["nano"].train.max_iters != 50  # the registry is untouched


@pytest.mark.parametrize(
    "overrides, words",
    [
        ({"n_layers": "4"}, ["n_layers", "n_layer"]),
        ({"max_iters": "ten"}, ["max_iters", "int", "ten"]),
        ({"compile": "maybe"}, ["compile", "maybe"]),
        ({"attn_impl": "fast"}, ["attn_impl", "fast"]),
    ],
)
def test_bad_overrides_name_the_problem(overrides, words):
    with pytest.raises((ValueError, TypeError)) as err:
        get_preset("nano", overrides)
    for word in words:
        assert word in str(err.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(KeyError, match="shakespeare-char-cpu"):
        get_preset("tiny")


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"n_embd": 100, "n_head": 3}, ["n_embd (100)", "n_head (3)"]),
        ({"n_layer": 0}, ["n_layer", "0"]),
        ({"vocab_size": 65.0}, ["vocab_size", "int"]),
        ({"dropout": 1.0}, ["dropout"]),
        ({"dropout": -0.1}, ["dropout"]),
        ({"bias": "no"}, ["bias"]),
    ],
)
def test_bad_model_config_names_the_value(changes, words):
    with pytest.raises((ValueError, TypeError)) as err:
        GPTConfig(**changes)
    for word in words:
        assert word in str(err.value)


def test_bad_train_config_names_the_value():
    with pytest.raises(ValueError, match="min_lr"):
        TrainConfig(learning_rate=1e-4, min_lr=1e-3)
    with pytest.raises(ValueError, match="beta2"):
        TrainConfig(beta2=1.5)
    with pytest.raises(ValueError, match="tokenizer"):
        TrainConfig(tokenizer="words")


def test_round_trip_through_dicts():
    preset = get_preset("shakespeare-char-cpu")
    assert GPTConfig.from_dict(preset.model.to_dict()) == preset.model
    assert TrainConfig.from_dict(preset.train.to_dict()) == preset.train
    with pytest.raises(ValueError, match="n_layers"):
        GPTConfig.from_dict({**preset.model.to_dict(), "n_layers": 3})


def test_learning_rate_schedule():
    t = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=100, lr_decay_iters=2000)
    warmup = [lr_at(s, t) for s in range(100)]
    assert warmup[0] > 0, "the first step must already learn"
    assert all(a < b for a, b in zip(warmup, warmup[1:], strict=False)), "warm-up rises"
    assert warmup[-1] == pytest.approx(1e-3)
    assert lr_at(100, t) == pytest.approx(1e-3), "the cosine starts at the peak"
    assert lr_at(1050, t) == pytest.approx((1e-3 + 1e-4) / 2), "half way down at the midpoint"
    decay = [lr_at(s, t) for s in range(100, 2001)]
    assert all(a >= b for a, b in zip(decay, decay[1:], strict=False)), "the cosine falls"
    assert lr_at(2000, t) == pytest.approx(1e-4)
    assert lr_at(5000, t) == 1e-4, "flat at min_lr after the decay"
    # cosine, not linear: a quarter of the way down the lr is above the linear value
    quarter = 100 + (2000 - 100) // 4
    linear = 1e-3 - (1e-3 - 1e-4) * (quarter - 100) / 1900
    assert lr_at(quarter, t) > linear
    assert math.isclose(lr_at(quarter, t), 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi / 4)))


def test_schedule_without_room_to_decay():
    t = TrainConfig(warmup_iters=20, lr_decay_iters=10, max_iters=10)
    assert lr_at(25, t) == t.min_lr


def test_a_time_budget_moves_the_cosine_by_the_time_used():
    t = TrainConfig(learning_rate=1e-3, min_lr=1e-4, warmup_iters=10, lr_decay_iters=2000,
                    time_budget_s=300.0)  # fmt: skip
    assert lr_at(4, t, progress=0.9) == pytest.approx(5e-4), "the warm-up still counts steps"
    assert lr_at(10, t, progress=0.0) == pytest.approx(1e-3)
    assert lr_at(10, t, progress=0.5) == pytest.approx((1e-3 + 1e-4) / 2)
    assert lr_at(50_000, t, progress=0.5) == pytest.approx((1e-3 + 1e-4) / 2), "not the steps"
    assert lr_at(10, t, progress=0.25) == pytest.approx(
        1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi / 4))
    )
    assert lr_at(10, t, progress=1.0) == pytest.approx(1e-4)
    assert lr_at(10, t, progress=1.7) == pytest.approx(1e-4), "past the budget: min_lr"


@pytest.mark.parametrize(
    ("field", "value", "error", "match"),
    [
        ("optimizer", "sgd", ValueError, "optimizer must be one of"),
        ("time_budget_s", -1.0, ValueError, "time_budget_s"),
        ("time_budget_s", float("nan"), ValueError, "time_budget_s"),
        ("full_val", 1, TypeError, "full_val must be True or False"),
    ],
)
def test_speedrun_fields_are_checked(field, value, error, match):
    with pytest.raises(error, match=match):
        TrainConfig(**{field: value})


def _fields(preset) -> dict:
    return {**preset.model.to_dict(), **preset.train.to_dict()}


def test_the_speedrun_is_the_stretched_baseline_plus_its_changes():
    from course.config import SPEEDRUN_CHANGES, speedrun_baseline, speedrun_preset

    recipe, baseline = get_preset("shakespeare-char-cpu"), speedrun_baseline()
    assert baseline.model == recipe.model
    stretched = {k for k, v in _fields(baseline).items() if _fields(recipe)[k] != v}
    assert stretched <= {"time_budget_s", "max_iters", "lr_decay_iters", "full_val",
                         "eval_interval"}  # fmt: skip
    assert baseline.train.time_budget_s == 300 and baseline.train.full_val
    assert baseline.train.max_iters > 10 * 300 / 0.01, "the clock ends it, not max_iters"
    speedrun = PRESETS["speedrun-cpu"]
    assert speedrun == speedrun_preset() and speedrun.train.time_budget_s == 300
    changed = {k for k, v in _fields(speedrun).items() if _fields(baseline)[k] != v}
    assert changed == {k for change in SPEEDRUN_CHANGES.values() for k in change}
    for name, change in SPEEDRUN_CHANGES.items():  # each ablation takes back one change
        without = speedrun_preset(without={name})
        back = {k for k, v in _fields(without).items() if _fields(speedrun)[k] != v}
        assert back == set(change), name
        assert all(_fields(without)[k] == _fields(baseline)[k] for k in change), name
        assert name in without.name
    with pytest.raises(KeyError, match="no speedrun change"):
        speedrun_preset(without={"a faster CPU"})
    assert speedrun_preset(overrides={"time_budget_s": 20}).train.time_budget_s == 20
