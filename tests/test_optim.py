"""Optimizers and schedules against torch.optim, bit-exact resume via state_dict, validation."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
import pytest
import torch

from rnnkit.optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealingLR,
    LinearWarmup,
    LRScheduler,
    Optimizer,
    RMSprop,
    StepLR,
)

SHAPES = {"weight_ih_l0": (6, 3), "weight_hh_l0": (6, 2), "bias_ih_l0": (6,)}
N_STEPS = 20

# (rnnkit class, torch class, keyword arguments shared by both)
CONFIGS: list[tuple[type[Optimizer], type[torch.optim.Optimizer], dict]] = [
    (SGD, torch.optim.SGD, {"lr": 0.1}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.05}),
    (SGD, torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01}),
    (Adagrad, torch.optim.Adagrad, {}),
    (
        Adagrad,
        torch.optim.Adagrad,
        {"lr": 0.5, "lr_decay": 0.1, "weight_decay": 0.05, "initial_accumulator_value": 0.3, "eps": 1e-6},
    ),
    (RMSprop, torch.optim.RMSprop, {}),
    (RMSprop, torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "weight_decay": 0.1}),
    (RMSprop, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "centered": True}),
    (RMSprop, torch.optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.7, "eps": 1e-4}),
    (Adam, torch.optim.Adam, {}),
    (Adam, torch.optim.Adam, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-6, "weight_decay": 0.1}),
    (Adam, torch.optim.Adam, {"lr": 0.05, "amsgrad": True}),
    (AdamW, torch.optim.AdamW, {}),
    (AdamW, torch.optim.AdamW, {"lr": 0.05, "weight_decay": 0.3, "amsgrad": True}),
]
CONFIG_IDS = [f"{cls.__name__}-{kwargs}" for cls, _, kwargs in CONFIGS]


def _initial_params(dtype: type = np.float64) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {name: rng.normal(size=shape).astype(dtype) for name, shape in SHAPES.items()}


def _gradient_sequence(n_steps: int = N_STEPS, dtype: type = np.float64) -> list[dict[str, np.ndarray]]:
    # Gradients of varying scale, so that the adaptive methods' running averages actually move.
    rng = np.random.default_rng(11)
    return [
        {
            name: (rng.normal(size=shape) * rng.uniform(0.1, 3.0)).astype(dtype)
            for name, shape in SHAPES.items()
        }
        for _ in range(n_steps)
    ]


def _run_torch(torch_cls: type, kwargs: dict, lrs: list[float] | None = None) -> dict[str, np.ndarray]:
    """Parameters after N_STEPS of the torch optimizer; ``lrs`` optionally sets the lr before each step."""
    params = {name: torch.tensor(value, requires_grad=True) for name, value in _initial_params().items()}
    optimizer = torch_cls(list(params.values()), foreach=False, **kwargs)
    for step, grads in enumerate(_gradient_sequence()):
        if lrs is not None:
            optimizer.param_groups[0]["lr"] = lrs[step]
        for name, param in params.items():
            param.grad = torch.tensor(grads[name])
        optimizer.step()
    return {name: param.detach().numpy() for name, param in params.items()}


@pytest.mark.parametrize(("cls", "torch_cls", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_optimizer_matches_torch(cls: type[Optimizer], torch_cls: type, kwargs: dict) -> None:
    params = _initial_params()
    optimizer = cls(**kwargs)
    for grads in _gradient_sequence():
        optimizer.step(params, grads)
    expected = _run_torch(torch_cls, kwargs)
    for name, value in params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-10, err_msg=name)
    # The parameters moved far more than the tolerance, so the comparison is meaningful.
    start = _initial_params()
    assert max(np.abs(params[name] - start[name]).max() for name in SHAPES) > 1e-3


def test_changing_lr_between_steps_matches_torch() -> None:
    lrs = [0.05 * 0.8**step for step in range(N_STEPS)]
    params = _initial_params()
    optimizer = Adam(lr=1.0, amsgrad=True)
    for lr, grads in zip(lrs, _gradient_sequence(), strict=True):
        optimizer.lr = lr
        optimizer.step(params, grads)
    expected = _run_torch(torch.optim.Adam, {"lr": 1.0, "amsgrad": True}, lrs=lrs)
    for name, value in params.items():
        np.testing.assert_allclose(value, expected[name], rtol=0, atol=1e-10)


def test_gradients_are_not_modified_and_params_update_in_place() -> None:
    params = _initial_params()
    arrays = dict(params)
    grads = _gradient_sequence(1)[0]
    grads_before = {name: grad.copy() for name, grad in grads.items()}
    optimizer = AdamW(lr=0.1, weight_decay=0.5)
    optimizer.step(params, grads)
    for name in SHAPES:
        assert params[name] is arrays[name]
        np.testing.assert_array_equal(grads[name], grads_before[name])


def test_sgd_hand_values() -> None:
    # Momentum 0.5, dampening 0: buffer 1, then 0.5 * 1 + 2 = 2.5; Nesterov adds momentum * buffer.
    params = {"w": np.array([1.0])}
    optimizer = SGD(lr=0.1, momentum=0.5, nesterov=True)
    optimizer.step(params, {"w": np.array([1.0])})
    assert params["w"][0] == pytest.approx(1.0 - 0.1 * (1.0 + 0.5 * 1.0), abs=1e-15)
    optimizer.step(params, {"w": np.array([2.0])})
    assert params["w"][0] == pytest.approx(0.85 - 0.1 * (2.0 + 0.5 * 2.5), abs=1e-15)


def test_adam_first_step_moves_each_element_by_lr() -> None:
    # With bias correction the first Adam step is lr * g / (|g| + eps'), i.e. about lr * sign(g).
    params = {"w": np.zeros(3)}
    Adam(lr=0.01).step(params, {"w": np.array([-5.0, 0.001, 2.0])})
    np.testing.assert_allclose(params["w"], [0.01, -0.01, -0.01], rtol=1e-4)


@pytest.mark.parametrize(("cls", "torch_cls", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_float32_params_keep_their_dtype(cls: type[Optimizer], torch_cls: type, kwargs: dict) -> None:
    params = _initial_params(np.float32)
    optimizer = cls(**kwargs)
    for grads in _gradient_sequence(3, np.float32):
        optimizer.step(params, grads)
    assert all(value.dtype == np.float32 for value in params.values())
    assert all(b.dtype == np.float32 for buffers in optimizer.state.values() for b in buffers.values())


# --- state_dict ----------------------------------------------------------------------------------


def _is_plain(value: object) -> bool:
    """Python scalars, strings, None, NumPy arrays, and lists/dicts of those."""
    if isinstance(value, dict):
        return all(isinstance(key, str) and _is_plain(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_is_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str, np.ndarray))


@pytest.mark.parametrize(("cls", "torch_cls", "kwargs"), CONFIGS, ids=CONFIG_IDS)
def test_state_dict_round_trip_resumes_bit_exactly(
    cls: type[Optimizer], torch_cls: type, kwargs: dict
) -> None:
    gradients = _gradient_sequence()
    uninterrupted = _initial_params()
    optimizer = cls(**kwargs)
    for grads in gradients:
        optimizer.step(uninterrupted, grads)

    params = _initial_params()
    first = cls(**kwargs)
    for grads in gradients[:10]:
        first.step(params, grads)
    saved = first.state_dict()
    assert _is_plain(saved)
    assert saved["step"] == 10 and saved["type"] == cls.__name__

    # A fresh optimizer with other hyper-parameters takes everything from the state dict.
    resumed = cls(lr=123.0)
    resumed.load_state_dict(saved)
    assert resumed.hyperparameters() == first.hyperparameters()
    for grads in gradients[10:]:
        resumed.step(params, grads)
    for name in SHAPES:
        assert np.array_equal(params[name], uninterrupted[name]), name


def test_state_dict_holds_copies() -> None:
    params = _initial_params()
    gradients = _gradient_sequence(3)
    optimizer = Adam(lr=0.1)
    optimizer.step(params, gradients[0])
    saved = optimizer.state_dict()
    snapshot = {name: saved["state"][name]["exp_avg"].copy() for name in SHAPES}
    optimizer.step(params, gradients[1])
    for name in SHAPES:
        np.testing.assert_array_equal(saved["state"][name]["exp_avg"], snapshot[name])

    resumed = Adam()
    resumed.load_state_dict(saved)
    resumed.step(params, gradients[2])
    for name in SHAPES:  # loading copied the arrays, so stepping did not write into `saved`
        np.testing.assert_array_equal(saved["state"][name]["exp_avg"], snapshot[name])


def test_state_dict_contents() -> None:
    optimizer = RMSprop(lr=0.1, momentum=0.5, centered=True)
    fresh = optimizer.state_dict()
    assert fresh == {
        "type": "RMSprop",
        "step": 0,
        "hyperparameters": {
            "lr": 0.1,
            "alpha": 0.99,
            "eps": 1e-8,
            "weight_decay": 0.0,
            "momentum": 0.5,
            "centered": True,
        },
        "state": {},
    }
    optimizer.step(_initial_params(), _gradient_sequence(1)[0])
    state = optimizer.state_dict()["state"]
    assert state.keys() == SHAPES.keys()
    assert state["bias_ih_l0"].keys() == {"square_avg", "momentum_buffer", "grad_avg"}
    assert Adam(betas=(0.5, 0.6)).state_dict()["hyperparameters"]["betas"] == [0.5, 0.6]


def _stepped_adam_state() -> dict:
    optimizer = Adam(lr=0.1)
    optimizer.step(_initial_params(), _gradient_sequence(1)[0])
    return optimizer.state_dict()


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda d: d.pop("step"), r"state_dict has the wrong keys: missing \['step'\]"),
        (lambda d: d.update(extra=1), r"unexpected \['extra'\]"),
        (lambda d: d.update(type="AdamW"), "state_dict is for 'AdamW', not 'Adam'"),
        (lambda d: d.update(step=-1), r"state_dict\['step'\] must be a non-negative integer"),
        (lambda d: d["hyperparameters"].update(lr=-1.0), "lr must be a finite number >= 0"),
        (lambda d: d["hyperparameters"].update(betas=[1.0, 0.5]), r"betas\[0\] must be in \[0, 1\)"),
        (lambda d: d["hyperparameters"].pop("eps"), r"missing \['eps'\]"),
        (lambda d: d["state"]["bias_ih_l0"].pop("exp_avg"), r"\['bias_ih_l0'\] has the wrong keys"),
        (
            lambda d: d["state"]["bias_ih_l0"].update(exp_avg=np.zeros(2)),
            "buffers differ in shape or dtype",
        ),
        (lambda d: d["state"]["bias_ih_l0"].update(exp_avg=[0.0] * 6), "must be a floating-point array"),
        (lambda d: d.update(state={}), "has step 1 but 0 parameters with buffers"),
    ],
)
def test_load_state_dict_rejects_bad_input(corrupt: Callable[[dict], object], message: str) -> None:
    state_dict = _stepped_adam_state()
    corrupt(state_dict)
    optimizer = Adam(lr=0.5)
    with pytest.raises(ValueError, match=message):
        optimizer.load_state_dict(state_dict)
    # A rejected state dict leaves the optimizer as it was.
    assert optimizer.step_count == 0 and optimizer.lr == 0.5 and optimizer.state == {}


def test_loaded_state_must_fit_the_params() -> None:
    optimizer = Adam()
    optimizer.load_state_dict(_stepped_adam_state())
    params = _initial_params()
    grads = _gradient_sequence(1)[0]
    with pytest.raises(
        ValueError, match=r"params do not match the optimizer state: missing \['bias_ih_l0'\]"
    ):
        optimizer.step(
            {k: v for k, v in params.items() if k != "bias_ih_l0"},
            {k: grads[k] for k in params if k != "bias_ih_l0"},
        )
    params["bias_ih_l0"] = np.zeros(7)
    grads["bias_ih_l0"] = np.zeros(7)
    with pytest.raises(ValueError, match=r"optimizer state 'bias_ih_l0'/'exp_avg' is float64\[6\]"):
        optimizer.step(params, grads)


# --- step validation and hyper-parameters ----------------------------------------------------------


def test_step_rejects_mismatched_params_and_grads() -> None:
    params = _initial_params()
    grads = _gradient_sequence(1)[0]
    optimizer = SGD(lr=0.1)
    with pytest.raises(ValueError, match=r"grads keys differ from params keys: missing \['bias_ih_l0'\]"):
        optimizer.step(params, {k: v for k, v in grads.items() if k != "bias_ih_l0"})
    with pytest.raises(ValueError, match=r"grads\['bias_ih_l0'\] has shape \(5,\)"):
        optimizer.step(params, {**grads, "bias_ih_l0": np.zeros(5)})
    with pytest.raises(ValueError, match=r"grads\['bias_ih_l0'\] has dtype float32"):
        optimizer.step(params, {**grads, "bias_ih_l0": np.zeros(6, np.float32)})
    with pytest.raises(ValueError, match=r"params\['w'\] must be float32 or float64 .*got int64"):
        optimizer.step({"w": np.zeros(2, np.int64)}, {"w": np.zeros(2, np.int64)})
    with pytest.raises(ValueError, match="params is empty"):
        optimizer.step({}, {})
    with pytest.raises(TypeError, match="grads must be a dict"):
        optimizer.step(params, list(grads.values()))
    assert optimizer.step_count == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SGD(lr=-0.1), "lr must be a finite number >= 0, got -0.1"),
        (lambda: SGD(lr=math.nan), "lr must be a finite number >= 0"),
        (lambda: SGD(lr=0.1, momentum=-0.5), "momentum must be a finite number >= 0"),
        (lambda: SGD(lr=0.1, dampening=1.5), r"dampening must be in \[0, 1\]"),
        (lambda: SGD(lr=0.1, nesterov=True), "nesterov momentum requires momentum > 0 and dampening == 0"),
        (lambda: SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "nesterov"),
        (lambda: SGD(lr=0.1, weight_decay=-1e-4), "weight_decay must be a finite number >= 0"),
        (lambda: Adagrad(lr_decay=-0.1), "lr_decay must be a finite number >= 0"),
        (lambda: Adagrad(initial_accumulator_value=-1.0), "initial_accumulator_value must be"),
        (lambda: Adagrad(eps=-1e-10), "eps must be a finite number >= 0"),
        (lambda: RMSprop(alpha=1.5), r"alpha must be in \[0, 1\]"),
        (lambda: RMSprop(momentum=-0.1), "momentum must be"),
        (lambda: Adam(lr=-1e-3), "lr must be a finite number >= 0"),
        (lambda: Adam(betas=(1.0, 0.999)), r"betas\[0\] must be in \[0, 1\), got 1.0"),
        (lambda: Adam(betas=(-0.1, 0.999)), r"betas\[0\] must be in \[0, 1\)"),
        (lambda: Adam(betas=(0.9, 1.0)), r"betas\[1\] must be in \[0, 1\), got 1.0"),
        (lambda: Adam(betas=(0.9, 0.99, 0.9)), r"betas must be a pair"),
        (lambda: Adam(eps=-1.0), "eps must be a finite number >= 0"),
        (lambda: AdamW(weight_decay=-0.01), "weight_decay must be a finite number >= 0"),
        (lambda: AdamW(betas=(0.9, math.nan)), r"betas\[1\] must be in \[0, 1\)"),
    ],
)
def test_bad_hyperparameters_raise(build: Callable[[], Optimizer], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def test_hyperparameter_types_are_checked() -> None:
    with pytest.raises(TypeError, match="amsgrad must be a bool"):
        Adam(amsgrad="yes")
    with pytest.raises(TypeError, match="lr must be a number"):
        SGD(lr="0.1")
    optimizer = SGD(lr=0.1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        optimizer.lr = -1.0
    assert optimizer.lr == 0.1


def test_pytorch_defaults() -> None:
    assert Adagrad().hyperparameters() == {
        "lr": 1e-2,
        "lr_decay": 0.0,
        "weight_decay": 0.0,
        "initial_accumulator_value": 0.0,
        "eps": 1e-10,
    }
    assert RMSprop().hyperparameters() == {
        "lr": 1e-2,
        "alpha": 0.99,
        "eps": 1e-8,
        "weight_decay": 0.0,
        "momentum": 0.0,
        "centered": False,
    }
    adam = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0, "amsgrad": False}
    assert Adam().hyperparameters() == adam
    assert AdamW().hyperparameters() == {**adam, "weight_decay": 1e-2}
    assert SGD(lr=0.1).hyperparameters() == {
        "lr": 0.1,
        "momentum": 0.0,
        "dampening": 0.0,
        "weight_decay": 0.0,
        "nesterov": False,
    }


# --- learning-rate schedules ---------------------------------------------------------------------


def _torch_lrs(
    make_scheduler: Callable[[torch.optim.Optimizer], object], lr: float, n_steps: int
) -> list[float]:
    """Learning rates torch's scheduler sets at construction and after each of n_steps steps."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = [optimizer.param_groups[0]["lr"]]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SequentialLR warns about the epoch argument it uses internally
        for _ in range(n_steps):
            optimizer.step()
            scheduler.step()
            lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def _rnnkit_lrs(make_scheduler: Callable[[Optimizer], LRScheduler], lr: float, n_steps: int) -> list[float]:
    optimizer = SGD(lr=lr)
    scheduler = make_scheduler(optimizer)
    lrs = [optimizer.lr]
    for _ in range(n_steps):
        scheduler.step()
        lrs.append(optimizer.lr)
    return lrs


def test_step_lr_matches_torch() -> None:
    ours = _rnnkit_lrs(lambda opt: StepLR(opt, step_size=3, gamma=0.5), 0.1, 20)
    theirs = _torch_lrs(lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5), 0.1, 20)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=0)
    assert ours[:7] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]


@pytest.mark.parametrize("eta_min", [0.0, 0.002])
def test_cosine_annealing_matches_torch_including_past_t_max(eta_min: float) -> None:
    ours = _rnnkit_lrs(lambda opt: CosineAnnealingLR(opt, T_max=8, eta_min=eta_min), 0.1, 25)
    theirs = _torch_lrs(
        lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8, eta_min=eta_min), 0.1, 25
    )
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)
    assert (
        ours[0] == 0.1 and ours[4] == pytest.approx((0.1 + eta_min) / 2) and ours[8] == pytest.approx(eta_min)
    )


def test_linear_warmup_then_cosine_matches_torch_sequential_lr() -> None:
    ours = _rnnkit_lrs(lambda opt: LinearWarmup(opt, 4, after=CosineAnnealingLR(opt, T_max=10)), 0.1, 20)

    def torch_schedule(opt: torch.optim.Optimizer) -> object:
        scheduler = torch.optim.lr_scheduler
        warmup = scheduler.LinearLR(opt, start_factor=1 / 4, end_factor=1.0, total_iters=3)
        cosine = scheduler.CosineAnnealingLR(opt, T_max=10)
        return scheduler.SequentialLR(opt, [warmup, cosine], milestones=[4])

    np.testing.assert_allclose(ours, _torch_lrs(torch_schedule, 0.1, 20), rtol=1e-12, atol=1e-15)


def test_linear_warmup_alone_hand_values() -> None:
    ours = _rnnkit_lrs(lambda opt: LinearWarmup(opt, 4), 0.2, 6)
    np.testing.assert_allclose(ours, [0.05, 0.1, 0.15, 0.2, 0.2, 0.2, 0.2], rtol=1e-15)


@pytest.mark.parametrize(
    "make_scheduler",
    [
        lambda opt: StepLR(opt, step_size=3, gamma=0.5),
        lambda opt: CosineAnnealingLR(opt, T_max=9, eta_min=0.01),
        lambda opt: LinearWarmup(opt, 5, after=StepLR(opt, step_size=2, gamma=0.7)),
    ],
    ids=["StepLR", "CosineAnnealingLR", "LinearWarmup"],
)
def test_schedule_state_dict_round_trip(make_scheduler: Callable[[Optimizer], LRScheduler]) -> None:
    uninterrupted = _rnnkit_lrs(make_scheduler, 0.1, 14)

    optimizer = SGD(lr=0.1)
    scheduler = make_scheduler(optimizer)
    for _ in range(7):
        scheduler.step()
    saved_optimizer, saved_scheduler = optimizer.state_dict(), scheduler.state_dict()
    assert _is_plain(saved_scheduler)

    # Rebuild from the same configuration, then restore: the lr sequence continues unchanged.
    optimizer = SGD(lr=0.1)
    scheduler = make_scheduler(optimizer)
    optimizer.load_state_dict(saved_optimizer)
    scheduler.load_state_dict(saved_scheduler)
    lrs = [optimizer.lr]
    for _ in range(7):
        scheduler.step()
        lrs.append(optimizer.lr)
    assert lrs == uninterrupted[7:]


def test_schedule_load_restores_hyperparameters_and_validates() -> None:
    source = StepLR(SGD(lr=0.3), step_size=4, gamma=0.25)
    for _ in range(5):
        source.step()
    optimizer = SGD(lr=0.1)
    target = StepLR(optimizer, step_size=1)
    target.load_state_dict(source.state_dict())
    assert (target.step_size, target.gamma, target.base_lr, target.last_epoch) == (4, 0.25, 0.3, 5)
    assert optimizer.lr == 0.3 * 0.25

    bad = source.state_dict()
    bad["hyperparameters"]["step_size"] = 0
    with pytest.raises(ValueError, match="step_size must be a positive integer"):
        target.load_state_dict(bad)
    with pytest.raises(ValueError, match="state_dict is for 'StepLR', not 'CosineAnnealingLR'"):
        CosineAnnealingLR(SGD(lr=0.1), T_max=3).load_state_dict(source.state_dict())
    with pytest.raises(ValueError, match=r"state_dict\['last_epoch'\] must be a non-negative integer"):
        target.load_state_dict({**source.state_dict(), "last_epoch": -2})
    with pytest.raises(ValueError, match="'after' entry"):
        LinearWarmup(SGD(lr=0.1), 3).load_state_dict(source.state_dict())


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda opt: StepLR(opt, step_size=0), "step_size must be a positive integer"),
        (lambda opt: StepLR(opt, step_size=2.5), "step_size must be a positive integer"),
        (lambda opt: StepLR(opt, step_size=2, gamma=-0.5), "gamma must be a finite number >= 0"),
        (lambda opt: CosineAnnealingLR(opt, T_max=0), "T_max must be a positive integer"),
        (lambda opt: CosineAnnealingLR(opt, T_max=5, eta_min=-1e-3), "eta_min must be a finite number >= 0"),
        (lambda opt: LinearWarmup(opt, 0), "warmup_steps must be a positive integer"),
        (
            lambda opt: LinearWarmup(opt, 3, after=StepLR(SGD(lr=0.1), step_size=2)),
            "after must schedule the same optimizer",
        ),
    ],
)
def test_bad_schedule_parameters_raise(build: Callable[[Optimizer], LRScheduler], message: str) -> None:
    optimizer = SGD(lr=0.1)
    with pytest.raises(ValueError, match=message):
        build(optimizer)
    assert optimizer.lr == 0.1
