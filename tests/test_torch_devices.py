"""course.torch.devices: the checker that finds, on a CPU-only machine, the tensors that
would not follow the model onto a GPU; and the library passing it.

Everything here runs on the CPU: the checker's devices are virtual. A tensor moved with
`.to(DEVICE)` counts as on the model's device, one made without `device=` as on the CPU,
so the mistakes below are found without a GPU (on one, they would raise).
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
import torch

from course.config import get_preset
from course.torch.devices import (
    DeviceChecker,
    DeviceMismatchError,
    check_device_following,
    model_device,
)
from course.torch.model import GPT
from course.torch.sampling import generate
from course.torch.train import configure_optimizer, load_model, train

DEVICE = "cpu"  # what runtime.pick_device() answers here; the checker tells the two apart


def nano_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(get_preset("nano").model)


def greedy(model, idx, steps):
    """A decoding loop as a learner writes it: each new token joins the prompt."""
    for _ in range(steps):
        logits, _ = model(idx[:, -model.config.block_size :])
        idx = torch.cat([idx, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return idx


def training_step(model, optimizer, x, y):
    optimizer.zero_grad(set_to_none=True)
    _, loss = model(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return loss.item()


def batch(seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 65, size=(4, 16))
    return x, np.roll(x, -1, axis=1)


def ops(checker) -> list[str]:
    return [violation.op for violation in checker.violations]


# --- what it must find ----------------------------------------------------------------


def test_a_prompt_built_on_the_cpu_for_a_moved_model_is_found():
    with DeviceChecker() as checker:
        model = nano_model().to(DEVICE).eval()
        prompt = torch.tensor([[1, 2, 3]])  # no device=: stays on the CPU
        with torch.no_grad():
            greedy(model, prompt, 3)
    # One place, once: what the failed lookup computed is not reported again.
    assert ops(checker) == ["embedding"], checker.report()
    first = checker.violations[0]
    assert "(1x3)" in first.problem and "(65x32)" in first.problem, first.problem
    # It names the lines that led there: the model's forward, then this test's loop.
    assert any("test_torch_devices.py" in frame and "greedy" in frame for frame in first.where)
    assert any("model.py" in frame for frame in first.where)


def test_a_batch_not_moved_in_a_training_step_is_found():
    with DeviceChecker() as checker:
        model = nano_model().to(DEVICE)
        optimizer = configure_optimizer(model, get_preset("nano").train)
        x, y = batch()
        training_step(model, optimizer, torch.from_numpy(x), torch.from_numpy(y))
    assert checker.violations, "a batch left on the CPU must be found"
    assert "embedding" in ops(checker), checker.report()


def test_a_forgotten_move_is_found_even_after_moving_a_copy():
    # x.to(device) returns x itself when it is already there: x must stay on the CPU.
    with DeviceChecker() as checker:
        model = nano_model().to(DEVICE)
        x = torch.randint(0, 65, (2, 8))
        moved = x.to(DEVICE)
        assert checker.is_placed(moved) and not checker.is_placed(x)
        model(x)
    assert "embedding" in ops(checker)


def test_numpy_of_a_tensor_on_the_model_device_is_found():
    with DeviceChecker() as checker:
        model = nano_model().to(DEVICE)
        logits, _ = model(torch.randint(0, 65, (1, 5), device=DEVICE))
        np.asarray(logits.detach())  # numpy cannot read GPU memory
    assert ops(checker) == ["__array__"], checker.report()
    assert ".cpu()" in checker.violations[0].problem


def test_a_scalar_on_the_model_device_beside_a_cpu_tensor_is_found():
    with DeviceChecker() as checker:
        scale = torch.tensor(2.0).to(DEVICE)  # 0-dim, but on the GPU
        torch.ones(3) * scale
    assert ops(checker) == ["mul"], checker.report()


def test_repeats_are_counted_once_per_place():
    with DeviceChecker() as checker:
        weight = torch.ones(4, 4).to(DEVICE)
        for _ in range(5):
            torch.ones(2, 4) @ weight
    assert len(checker.violations) == 1 and checker.violations[0].count == 5
    assert "5 times" in checker.report()
    with pytest.raises(AssertionError, match="matmul"):
        checker.raise_if_violations()


def test_raise_on_violation_stops_at_the_operation():
    with DeviceChecker(raise_on_violation=True):
        weight = torch.ones(4, 4).to(DEVICE)
        with pytest.raises(DeviceMismatchError, match="would fail on a GPU"):
            torch.ones(2, 4) @ weight


def test_device_of_a_tensor_follows_that_tensor():
    with DeviceChecker() as checker:
        placed, on_cpu = torch.ones(2).to(DEVICE), torch.ones(2)
        assert checker.is_placed(torch.zeros(3, device=placed.device))
        assert not checker.is_placed(torch.zeros(3, device=on_cpu.device))
        assert checker.is_placed(placed.new_zeros(3)) and checker.is_placed(placed * 2)
        assert checker.is_placed(torch.zeros(3).to(placed))  # .to(tensor)
        assert checker.is_placed(placed.to(torch.float64))  # .to(dtype) stays where it is
        assert not checker.is_placed(placed.cpu())
        assert checker.is_placed(placed)  # .cpu() gave a new tensor, placed is still placed
    assert not checker.violations, checker.report()


# --- what it must not find ------------------------------------------------------------


def test_code_that_follows_the_model_device_is_clean():
    with DeviceChecker() as checker:
        model = nano_model().to(DEVICE)
        optimizer = configure_optimizer(model, get_preset("nano").train)
        for seed in range(3):
            x, y = batch(seed)
            training_step(
                model, optimizer, torch.from_numpy(x).to(DEVICE), torch.from_numpy(y).to(DEVICE)
            )
        device = model_device(model)
        prompt = torch.tensor([[1, 2, 3]], device=device)
        with torch.no_grad():
            out = greedy(model.eval(), prompt, 4)
            cache = model.new_cache(1)
            model(prompt, cache=cache)
            model(out[:, 3:4], cache=cache)
        text = out[0].cpu().numpy().tolist()
        maps = model.attention_maps(prompt).cpu().numpy()
    assert not checker.violations, checker.report()
    assert len(text) == 7 and maps.shape == (2, 2, 3, 3)


def test_zero_dim_cpu_tensors_beside_the_model_device_are_allowed():
    with DeviceChecker() as checker:
        placed = torch.ones(3, 4).to(DEVICE)
        placed * torch.tensor(2.0)  # a CPU scalar, as PyTorch allows beside a GPU tensor
        torch.where(placed > 0, placed, torch.tensor(0.0))
        placed[torch.tensor([0, 2])]  # CPU indices into a GPU tensor: torch moves them
        placed[0:2] = torch.zeros(2, 4)  # a copy across devices
        placed.copy_(torch.ones(3, 4))
    assert not checker.violations, checker.report()


def test_a_model_never_moved_with_cpu_inputs_is_clean():
    with DeviceChecker() as checker:
        model = nano_model()
        greedy(model, torch.tensor([[4, 5]]), 2)
    assert not checker.violations, checker.report()


def test_a_model_left_on_the_cpu_trains_clean():
    # clip_grad_norm_ and the fused AdamW group tensors by device inside torch: the devices
    # they make there must not count as the model's.
    with DeviceChecker() as checker:
        model = nano_model()
        optimizer = configure_optimizer(model, get_preset("nano").train)
        x, y = batch()
        training_step(model, optimizer, torch.from_numpy(x), torch.from_numpy(y))
    assert not checker.violations, checker.report()


def test_module_to_follows_its_argument():
    with DeviceChecker() as checker:
        placed, on_cpu = torch.ones(1).to(DEVICE), torch.ones(1)
        for target, expected in [
            (torch.device(DEVICE), True),
            (placed.device, True),
            (placed, True),
            (on_cpu.device, False),
        ]:
            layer = torch.nn.Linear(2, 3).to(target)
            assert checker.is_placed(layer.weight) == expected, target
            assert checker.is_placed(layer.bias) == expected, target
    assert not checker.violations, checker.report()


def test_tags_keep_nothing_alive():
    with DeviceChecker() as checker:
        tensor = torch.ones(1000).to(DEVICE)
        ref = weakref.ref(tensor)
        assert checker.is_placed(tensor)
        del tensor
        gc.collect()
        assert ref() is None
        assert not checker._placed, "a dead tensor's tag must go with it"


def test_check_device_following_installs_one_checker_for_the_process():
    checker = check_device_following()
    try:
        assert check_device_following() is checker
        torch.ones(2, 2) @ torch.ones(2, 2).to(DEVICE)
        assert ops(checker) == ["matmul"]
    finally:
        checker.uninstall()
    torch.ones(2, 2) @ torch.ones(2, 2).to(DEVICE)  # not checked any more
    assert len(checker.violations) == 1
    assert check_device_following() is not checker
    check_device_following().uninstall()


# --- the library ----------------------------------------------------------------------


def test_train_and_generate_follow_the_model_device(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DEVICE", DEVICE)
    ids = np.random.default_rng(0).integers(0, 65, size=3000).astype(np.uint16)
    preset = get_preset(
        "nano", {"max_iters": 4, "eval_interval": 2, "eval_iters": 2, "log_interval": 1}
    )
    with DeviceChecker() as checker:
        result = train(preset, tmp_path, data=(ids[:2700], ids[2700:]), progress=False)
        assert checker.is_placed(result.model.lm_head.weight), "train moves the model"
        resumed = train(
            get_preset("nano", {"max_iters": 6, "eval_interval": 2, "eval_iters": 2}),
            tmp_path,
            data=(ids[:2700], ids[2700:]),
            progress=False,
            resume=True,
        )
        model, _ = load_model(tmp_path)
        model = model.to(DEVICE)
        prompt = torch.tensor([[1, 2, 3]], device=DEVICE)
        for kwargs in (
            dict(temperature=0),
            dict(temperature=0.8, top_k=5, top_p=0.9, seed=1, stop_tokens=[0, 1]),
            dict(use_cache=False, seed=2),
        ):
            generate(model, prompt, 8, **kwargs)
            generate(resumed.model, prompt, 8, **kwargs)
    assert not checker.violations, checker.report()


def test_train_follows_a_model_it_is_given_where_it_is():
    ids = np.random.default_rng(1).integers(0, 65, size=3000).astype(np.uint16)
    preset = get_preset("nano", {"max_iters": 2, "eval_interval": 2, "eval_iters": 1})
    with DeviceChecker() as checker:
        model = GPT(preset.model)  # built here, on the CPU: train must leave it there
        train(preset, data=(ids[:2700], ids[2700:]), progress=False, model=model)
    assert not checker.violations, checker.report()


def test_generate_moves_a_prompt_to_the_model_device():
    with DeviceChecker() as checker:
        model = nano_model().to(DEVICE)
        prompt = torch.tensor([[1, 2, 3]])  # on the CPU: generate moves it
        out = generate(model, prompt, 5, temperature=0)
        assert checker.is_placed(out), "the result is on the model's device"
    assert not checker.violations, checker.report()


def test_forward_names_both_devices_when_idx_is_elsewhere():
    model = nano_model().to("meta")  # a second device that needs no hardware
    with pytest.raises(ValueError, match=r"idx is on cpu but the model is on meta"):
        model(torch.tensor([[1, 2, 3]]))
    model = nano_model()
    idx = torch.tensor([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"targets is on meta but the model is on cpu"):
        model(idx, targets=torch.zeros(1, 3, dtype=torch.long, device="meta"))
