"""Optimizers and learning-rate schedules, sorted by increasing complexity.

Optimizers keep their state keyed like the parameters they update::

    optimizer = Adam(lr=1e-3)
    scheduler = CosineAnnealingLR(optimizer, T_max=n_steps)    # optional
    for batch in batches:
        grads = ...                         # same keys, shapes and dtypes as params
        optimizer.step(params, grads)       # updates the arrays of params in place
        scheduler.step()                    # sets optimizer.lr for the next step

Each optimizer follows the algorithm documented for its ``torch.optim`` namesake, with the same keyword
names and defaults, so a float64 run reproduces PyTorch's parameters to rounding.  The hyper-parameters
are plain attributes; ``lr`` may be changed between steps (that is what the schedules do).

``state_dict()`` returns plain Python scalars, lists and NumPy arrays (copies) and
``load_state_dict()`` restores them exactly, so an interrupted run resumes bit for bit.

Schedules (:class:`StepLR`, :class:`CosineAnnealingLR`, :class:`LinearWarmup`) are closed-form
functions of the number of ``step()`` calls, which makes them trivially resumable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numba
import numpy as np

from rnnkit._types import Array, Grads, Params
from rnnkit.layers._versions import note_modified

Hyperparameters = dict[str, Any]
"""Hyper-parameters by keyword name: Python floats, ints, bools, and lists (``betas``)."""

OptimizerState = dict[str, dict[str, Array]]
"""Per-parameter buffers: ``state[param_name][buffer_name]`` has the parameter's shape and dtype."""


class Optimizer(ABC):
    """Common machinery: the step count, per-parameter buffers, validation and ``state_dict``.

    A subclass lists its hyper-parameters (constructor keywords, stored as attributes of the same
    names) in ``_hyperparameter_names``, names the buffers it keeps per parameter in
    :meth:`_buffer_names`, and implements the per-parameter update in :meth:`_update`.
    """

    _hyperparameter_names: ClassVar[tuple[str, ...]]

    def __init__(self, lr: float) -> None:
        self.lr = lr
        # Number of step() calls so far: PyTorch's per-parameter ``step``, shared by all parameters here.
        self.step_count = 0
        self.state: OptimizerState = {}

    @property
    def lr(self) -> float:
        """The learning rate used by the next :meth:`step`; a non-negative finite number."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        _check_range("lr", value, low=0.0)
        self._lr = float(value)

    def step(self, params: Params, grads: Grads) -> None:
        """Apply one update to every array of ``params``, in place.

        Args:
            params: named float32 or float64 parameter arrays (the dtypes the layers accept: in
                float16 a zero gradient already gives NaN through ``eps``), updated in place.
            grads: gradients with exactly the keys, shapes and dtypes of ``params``; not modified.
                Non-finite gradients are not checked here (clip_grad_norm reports them) and propagate.

        Raises:
            TypeError: ``params`` or ``grads`` is not a dict of NumPy arrays.
            ValueError: keys, shapes or dtypes of ``params`` and ``grads`` differ, or the optimizer's
                state (e.g. loaded from a checkpoint) does not fit ``params``.
        """
        _check_params_and_grads(params, grads)
        if self.step_count == 0:
            self.state = {name: self._new_buffers(param) for name, param in params.items()}
        else:
            self._check_state_fits(params)
        self.step_count += 1
        for name, param in params.items():
            self._update(param, grads[name], self.state[name])
        # A layer's backward refuses a cache made before this update (its gradients would be wrong).
        note_modified(params.values())

    def hyperparameters(self) -> Hyperparameters:
        """The constructor keywords and their current values (``betas`` as a list)."""
        values = {name: getattr(self, name) for name in self._hyperparameter_names}
        return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: ``type``, ``step``, ``hyperparameters`` and ``state`` (copies)."""
        return {
            "type": type(self).__name__,
            "step": self.step_count,
            "hyperparameters": self.hyperparameters(),
            "state": {
                name: {buffer: array.copy() for buffer, array in buffers.items()}
                for name, buffers in self.state.items()
            },
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly (hyper-parameters included); the input is copied.

        Raises:
            ValueError: the dict is for another optimizer type, lacks or has unexpected keys, holds
                invalid hyper-parameters, or its buffers are missing, misnamed or inconsistent.
        """
        _check_keys("state_dict", state_dict, {"type", "step", "hyperparameters", "state"})
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['type']!r}, not {type(self).__name__!r}")
        step = state_dict["step"]
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise ValueError(f"state_dict['step'] must be a non-negative integer, got {step!r}")
        hyperparameters = state_dict["hyperparameters"]
        _check_keys("state_dict['hyperparameters']", hyperparameters, set(self._hyperparameter_names))
        # Building a throw-away optimizer validates the hyper-parameters with the constructor's checks.
        template = type(self)(**hyperparameters)
        state = _copy_state(state_dict["state"], template._buffer_names())
        if (step == 0) != (not state):
            raise ValueError(f"state_dict has step {step} but {len(state)} parameters with buffers")

        for name in self._hyperparameter_names:
            setattr(self, name, getattr(template, name))
        self.step_count = int(step)
        self.state = state

    @abstractmethod
    def _buffer_names(self) -> tuple[str, ...]:
        """Names of the arrays kept per parameter with the current hyper-parameters (torch's names)."""

    def _new_buffers(self, param: Array) -> dict[str, Array]:
        """Buffers before the first step: zeros of the parameter's shape and dtype."""
        return {name: np.zeros(param.shape, param.dtype) for name in self._buffer_names()}  # C-contiguous

    @abstractmethod
    def _update(self, param: Array, grad: Array, buffers: dict[str, Array]) -> None:
        """Update one parameter in place; ``self.step_count`` is already the current step (1-based)."""

    def _check_state_fits(self, params: Params) -> None:
        if self.state.keys() != params.keys():
            raise ValueError(
                f"params do not match the optimizer state: {_key_difference(params, self.state)}"
            )
        for name, param in params.items():
            for buffer, array in self.state[name].items():
                if array.shape != param.shape or array.dtype != param.dtype:
                    raise ValueError(
                        f"optimizer state {name!r}/{buffer!r} is {array.dtype}{list(array.shape)} but "
                        f"params[{name!r}] is {param.dtype}{list(param.shape)}"
                    )


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov momentum and L2 weight decay.

    As ``torch.optim.SGD``, with ``g`` the gradient and ``b`` the momentum buffer::

        g = g + weight_decay * p
        b = g                                        on the first step
        b = momentum * b + (1 - dampening) * g       afterwards
        g = g + momentum * b  if nesterov  else  b   (when momentum != 0)
        p = p - lr * g
    """

    _hyperparameter_names = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(
        self,
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        _check_range("momentum", momentum, low=0.0)
        _check_range("dampening", dampening, low=0.0, high=1.0, include_high=True)
        _check_range("weight_decay", weight_decay, low=0.0)
        _check_bool("nesterov", nesterov)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum requires momentum > 0 and dampening == 0")
        super().__init__(lr)
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.weight_decay = float(weight_decay)
        self.nesterov = bool(nesterov)

    def _buffer_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, param: Array, grad: Array, buffers: dict[str, Array]) -> None:
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        if self.momentum != 0:
            buf = buffers["momentum_buffer"]
            if self.step_count == 1:
                # PyTorch starts the buffer at the first gradient, undamped.
                buf[...] = grad
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * grad
            grad = grad + self.momentum * buf if self.nesterov else buf
        param -= self.lr * grad


class Adagrad(Optimizer):
    """Adagrad: per-element step sizes shrinking with the accumulated squared gradients.

    As ``torch.optim.Adagrad``, at step ``t`` (1-based) with accumulator ``s``::

        g   = g + weight_decay * p
        clr = lr / (1 + (t - 1) * lr_decay)
        s   = s + g * g                              (s starts at initial_accumulator_value)
        p   = p - clr * g / (sqrt(s) + eps)
    """

    _hyperparameter_names = ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps")

    def __init__(
        self,
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ) -> None:
        _check_range("lr_decay", lr_decay, low=0.0)
        _check_range("weight_decay", weight_decay, low=0.0)
        _check_range("initial_accumulator_value", initial_accumulator_value, low=0.0)
        _check_range("eps", eps, low=0.0)
        super().__init__(lr)
        self.lr_decay = float(lr_decay)
        self.weight_decay = float(weight_decay)
        self.initial_accumulator_value = float(initial_accumulator_value)
        self.eps = float(eps)

    def _buffer_names(self) -> tuple[str, ...]:
        return ("sum",)

    def _new_buffers(self, param: Array) -> dict[str, Array]:
        return {"sum": np.full_like(param, self.initial_accumulator_value)}

    def _update(self, param: Array, grad: Array, buffers: dict[str, Array]) -> None:
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        clr = self.lr / (1 + (self.step_count - 1) * self.lr_decay)
        accumulator = buffers["sum"]
        accumulator += grad * grad
        param -= clr * (grad / (np.sqrt(accumulator) + self.eps))


class RMSprop(Optimizer):
    """RMSprop: divide the gradient by a running root-mean-square of recent gradients.

    As ``torch.optim.RMSprop``, with running averages ``v`` (squares), ``m`` (gradients, centered only)
    and momentum buffer ``b``::

        g = g + weight_decay * p
        v = alpha * v + (1 - alpha) * g * g
        m = alpha * m + (1 - alpha) * g                     (centered)
        d = sqrt(v - m * m) + eps   if centered   else   sqrt(v) + eps
        b = momentum * b + g / d;   p = p - lr * b          (momentum > 0)
        p = p - lr * g / d                                  (otherwise)
    """

    _hyperparameter_names = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(
        self,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ) -> None:
        _check_range("alpha", alpha, low=0.0, high=1.0, include_high=True)
        _check_range("eps", eps, low=0.0)
        _check_range("weight_decay", weight_decay, low=0.0)
        _check_range("momentum", momentum, low=0.0)
        _check_bool("centered", centered)
        super().__init__(lr)
        self.alpha = float(alpha)
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.momentum = float(momentum)
        self.centered = bool(centered)

    def _buffer_names(self) -> tuple[str, ...]:
        names: tuple[str, ...] = ("square_avg",)
        if self.momentum > 0:
            names += ("momentum_buffer",)
        if self.centered:
            names += ("grad_avg",)
        return names

    def _update(self, param: Array, grad: Array, buffers: dict[str, Array]) -> None:
        if self.weight_decay != 0:
            grad = grad + self.weight_decay * param
        square_avg = buffers["square_avg"]
        square_avg *= self.alpha
        square_avg += (1 - self.alpha) * (grad * grad)
        if self.centered:
            grad_avg = buffers["grad_avg"]
            grad_avg *= self.alpha
            grad_avg += (1 - self.alpha) * grad
            denom = np.sqrt(square_avg - grad_avg * grad_avg) + self.eps
        else:
            denom = np.sqrt(square_avg) + self.eps
        if self.momentum > 0:
            buf = buffers["momentum_buffer"]
            buf *= self.momentum
            buf += grad / denom
            param -= self.lr * buf
        else:
            param -= self.lr * (grad / denom)


class Adam(Optimizer):
    """Adam: momentum on the gradient and on its square, with bias correction.

    As ``torch.optim.Adam``, at step ``t`` (1-based) with moments ``m``, ``v`` (and ``v_max``)::

        g = g + weight_decay * p                      (AdamW instead: p = p * (1 - lr * weight_decay))
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        v_max = max(v_max, v)                         (amsgrad; then v_max replaces v below)
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)
    """

    _hyperparameter_names = ("lr", "betas", "eps", "weight_decay", "amsgrad")
    # AdamW overrides this: weight decay shrinks the parameters directly instead of joining the gradient.
    _decoupled_weight_decay: ClassVar[bool] = False

    def __init__(
        self,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ) -> None:
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        _check_range("betas[0]", betas[0], low=0.0, high=1.0)
        _check_range("betas[1]", betas[1], low=0.0, high=1.0)
        _check_range("eps", eps, low=0.0)
        _check_range("weight_decay", weight_decay, low=0.0)
        _check_bool("amsgrad", amsgrad)
        super().__init__(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.amsgrad = bool(amsgrad)

    def _buffer_names(self) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if self.amsgrad else ("exp_avg", "exp_avg_sq")

    def _update(self, param: Array, grad: Array, buffers: dict[str, Array]) -> None:
        beta1, beta2 = self.betas
        if self.weight_decay != 0:
            if self._decoupled_weight_decay:
                param *= 1 - self.lr * self.weight_decay
            else:
                grad = grad + self.weight_decay * param
        bias_correction1 = 1 - beta1**self.step_count
        bias_correction2 = 1 - beta2**self.step_count
        scalar = param.dtype.type  # the arithmetic stays in the parameters' dtype, as in NumPy
        in_place = param.flags.c_contiguous and param.dtype.isnative
        flat = param.reshape(-1) if in_place else param.astype(param.dtype.newbyteorder("="), order="C").reshape(-1)
        _adam_update(flat, np.ascontiguousarray(grad, dtype=flat.dtype).reshape(-1), buffers["exp_avg"].reshape(-1),
                     buffers["exp_avg_sq"].reshape(-1),
                     buffers["max_exp_avg_sq"].reshape(-1) if self.amsgrad else flat[:0],
                     scalar(beta1), scalar(1 - beta1), scalar(beta2), scalar(1 - beta2),
                     scalar(math.sqrt(bias_correction2)), scalar(self.eps), scalar(self.lr / bias_correction1))
        if not in_place:  # a strided or byte-swapped parameter was updated in a copy: write it back
            param[...] = flat.reshape(param.shape)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _adam_update(p, g, m, v, v_max, beta1, one_minus_beta1, beta2, one_minus_beta2, sqrt_bc2, eps, step_size):  # type: ignore[no-untyped-def]
    """Adam's update in one pass, element by element in the order of the formulas above (no temporaries)."""
    amsgrad = v_max.shape[0] > 0
    for k in range(p.shape[0]):
        m[k] = m[k] * beta1 + one_minus_beta1 * g[k]
        v[k] = v[k] * beta2 + one_minus_beta2 * (g[k] * g[k])
        second = v[k]
        if amsgrad:
            if second != second or v_max[k] < second:  # np.maximum: a NaN on either side wins
                v_max[k] = second
            second = v_max[k]
        p[k] = p[k] - step_size * (m[k] / (math.sqrt(second) / sqrt_bc2 + eps))


class AdamW(Adam):
    """Adam with decoupled weight decay (``torch.optim.AdamW``): ``p = p * (1 - lr * weight_decay)``
    before the Adam step, instead of adding ``weight_decay * p`` to the gradient."""

    _decoupled_weight_decay = True

    def __init__(
        self,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


# --- learning-rate schedules ---------------------------------------------------------------------


class LRScheduler(ABC):
    """A learning rate as a function of the number of :meth:`step` calls (``last_epoch``).

    Construction records ``optimizer.lr`` as ``base_lr`` and sets the rate for epoch 0; each
    :meth:`step` (call it after ``optimizer.step``, as in PyTorch) advances one epoch and sets
    ``optimizer.lr = lr_at(last_epoch)``.  A subclass implements :meth:`lr_at` and
    :meth:`_set_hyperparameters`, which validates its constructor keywords and stores them as attributes
    of the same names (listed in ``_hyperparameter_names``).
    """

    _hyperparameter_names: ClassVar[tuple[str, ...]]

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be an rnnkit Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    @abstractmethod
    def lr_at(self, epoch: int) -> float:
        """The learning rate after ``epoch`` calls of :meth:`step`."""

    @abstractmethod
    def _set_hyperparameters(self, *args: Any, **hyperparameters: Any) -> None:
        # (*args, **kwargs) of Any: each schedule overrides it with its own keyword-only parameters.
        """Validate all hyper-parameters (ValueError naming the bad one), then store them."""

    def step(self) -> None:
        """Advance one epoch (or iteration) and set the optimizer's learning rate for it."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """``type``, ``last_epoch``, ``base_lr`` and ``hyperparameters`` as Python scalars."""
        return {
            "type": type(self).__name__,
            "last_epoch": self.last_epoch,
            "base_lr": self.base_lr,
            "hyperparameters": {name: getattr(self, name) for name in self._hyperparameter_names},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` and set the optimizer's learning rate to match it."""
        _check_keys("state_dict", state_dict, {"type", "last_epoch", "base_lr", "hyperparameters"})
        if state_dict["type"] != type(self).__name__:
            raise ValueError(f"state_dict is for {state_dict['type']!r}, not {type(self).__name__!r}")
        last_epoch = state_dict["last_epoch"]
        if isinstance(last_epoch, bool) or not isinstance(last_epoch, (int, np.integer)) or last_epoch < 0:
            raise ValueError(f"state_dict['last_epoch'] must be a non-negative integer, got {last_epoch!r}")
        _check_range("state_dict['base_lr']", state_dict["base_lr"], low=0.0)
        hyperparameters = state_dict["hyperparameters"]
        _check_keys("state_dict['hyperparameters']", hyperparameters, set(self._hyperparameter_names))

        self._set_hyperparameters(**hyperparameters)
        self.base_lr = float(state_dict["base_lr"])
        self.last_epoch = int(last_epoch)
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(LRScheduler):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs, as
    ``torch.optim.lr_scheduler.StepLR``: ``lr = base_lr * gamma ** (epoch // step_size)``."""

    _hyperparameter_names = ("step_size", "gamma")

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self._set_hyperparameters(step_size=step_size, gamma=gamma)
        super().__init__(optimizer)

    def _set_hyperparameters(self, *, step_size: int, gamma: float) -> None:
        _check_positive_int("step_size", step_size)
        _check_range("gamma", gamma, low=0.0)
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def lr_at(self, epoch: int) -> float:
        """``base_lr · gamma ** (epoch // step_size)``: the learning rate after ``epoch`` steps."""
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """Cosine decay from ``base_lr`` to ``eta_min`` over ``T_max`` epochs, as
    ``torch.optim.lr_scheduler.CosineAnnealingLR`` (in closed form)::

        lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2

    Past ``T_max`` the rate climbs back along the same cosine, as PyTorch's does.
    """

    _hyperparameter_names = ("T_max", "eta_min")

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        self._set_hyperparameters(T_max=T_max, eta_min=eta_min)
        super().__init__(optimizer)

    def _set_hyperparameters(self, *, T_max: int, eta_min: float) -> None:
        _check_positive_int("T_max", T_max)
        _check_range("eta_min", eta_min, low=0.0)
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)

    def lr_at(self, epoch: int) -> float:
        """The closed form above: the learning rate after ``epoch`` steps."""
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * epoch / self.T_max)) / 2


class LinearWarmup(LRScheduler):
    """Ramp the learning rate up linearly over ``warmup_steps`` epochs, then hand over to ``after``.

    ``lr = base_lr * (epoch + 1) / warmup_steps`` for ``epoch < warmup_steps``, then
    ``after.lr_at(epoch - warmup_steps)`` (or ``base_lr`` without ``after``).  This is PyTorch's
    ``SequentialLR([LinearLR(start_factor=1/warmup_steps, total_iters=warmup_steps - 1), after],
    milestones=[warmup_steps])``.

    ``after`` must be built on the same optimizer *before* the warm-up (so that it records the full
    learning rate as its ``base_lr``, which the warm-up ramps towards); step only the warm-up.
    """

    _hyperparameter_names = ("warmup_steps",)

    def __init__(self, optimizer: Optimizer, warmup_steps: int, after: LRScheduler | None = None) -> None:
        self._set_hyperparameters(warmup_steps=warmup_steps)
        if after is not None:
            if not isinstance(after, LRScheduler):
                raise TypeError(f"after must be an LRScheduler, got {type(after).__name__}")
            if after.optimizer is not optimizer:
                raise ValueError("after must schedule the same optimizer as the warm-up")
            if after.last_epoch != 0:
                raise ValueError(f"after must not have been stepped yet (last_epoch {after.last_epoch})")
        self.after = after
        if after is not None:
            # Ramp towards the rate `after` starts from, whatever it set for its own epoch 0.
            optimizer.lr = after.base_lr
        super().__init__(optimizer)

    def _set_hyperparameters(self, *, warmup_steps: int) -> None:
        _check_positive_int("warmup_steps", warmup_steps)
        self.warmup_steps = int(warmup_steps)

    def lr_at(self, epoch: int) -> float:
        """``base_lr · (epoch + 1) / warmup_steps`` during the warm-up, then ``after``'s rate (or ``base_lr``)."""
        if epoch < self.warmup_steps:
            return self.base_lr * (epoch + 1) / self.warmup_steps
        if self.after is not None:
            return self.after.lr_at(epoch - self.warmup_steps)
        return self.base_lr

    def state_dict(self) -> dict[str, Any]:
        """As :meth:`LRScheduler.state_dict`, plus ``after``: the following schedule's state (or None)."""
        return {**super().state_dict(), "after": None if self.after is None else self.after.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the warm-up and the schedule that follows it."""
        if not isinstance(state_dict, dict) or "after" not in state_dict:
            raise ValueError("state_dict must be a dict with an 'after' entry")
        after_state = state_dict["after"]
        if (after_state is None) != (self.after is None):
            raise ValueError("state_dict['after'] must be None exactly when this warm-up has no `after`")
        super().load_state_dict({key: value for key, value in state_dict.items() if key != "after"})
        if self.after is not None:
            self.after.load_state_dict(after_state)
            # Loading `after` set the rate for its own epoch; the warm-up decides the current one.
            self.optimizer.lr = self.lr_at(self.last_epoch)


# --- validation helpers --------------------------------------------------------------------------


def _check_range(
    name: str, value: Any, low: float, high: float | None = None, include_high: bool = False
) -> None:
    """Require a finite real number in ``[low, high)`` (``[low, high]`` with include_high; no upper bound
    when ``high`` is None)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if high is None:
        if not (math.isfinite(value) and value >= low):
            raise ValueError(f"{name} must be a finite number >= {low:g}, got {value!r}")
    elif not (low <= value < high or (include_high and value == high)):
        closing = "]" if include_high else ")"
        raise ValueError(f"{name} must be in [{low:g}, {high:g}{closing}, got {value!r}")


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")


def _check_keys(name: str, mapping: Any, expected: set[str]) -> None:
    if not isinstance(mapping, dict):
        raise ValueError(f"{name} must be a dict, got {type(mapping).__name__}")
    if mapping.keys() != expected:
        raise ValueError(f"{name} has the wrong keys: {_key_difference(mapping, expected)}")


def _key_difference(actual: Any, expected: Any) -> str:
    missing = sorted(set(expected) - set(actual))
    unexpected = sorted(set(actual) - set(expected))
    return f"missing {missing}, unexpected {unexpected}"


# float16 has too little range for the optimizers' buffers (eps = 1e-8 underflows to 0, so a zero
# gradient divides 0 by 0), and the layers refuse it, so the optimizers do too.
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_params_and_grads(params: Params, grads: Grads) -> None:
    for name, mapping in (("params", params), ("grads", grads)):
        if not isinstance(mapping, dict):
            raise TypeError(f"{name} must be a dict of NumPy arrays, got {type(mapping).__name__}")
    if not params:
        raise ValueError("params is empty")
    if params.keys() != grads.keys():
        raise ValueError(f"grads keys differ from params keys: {_key_difference(grads, params)}")
    for name, param in params.items():
        grad = grads[name]
        if not isinstance(param, np.ndarray) or not isinstance(grad, np.ndarray):
            raise TypeError(f"params[{name!r}] and grads[{name!r}] must be NumPy arrays")
        if param.dtype not in _DTYPES:
            raise ValueError(f"params[{name!r}] must be float32 or float64 (the dtypes the layers use), got "
                             f"{param.dtype}; convert it with .astype(np.float32)")
        if grad.shape != param.shape:
            raise ValueError(f"grads[{name!r}] has shape {grad.shape} but params[{name!r}] has {param.shape}")
        if grad.dtype != param.dtype:
            raise ValueError(f"grads[{name!r}] has dtype {grad.dtype} but params[{name!r}] has {param.dtype}")


def _copy_state(state: Any, buffer_names: tuple[str, ...]) -> OptimizerState:
    """Validate a saved per-parameter state against the expected buffer names and copy its arrays."""
    if not isinstance(state, dict):
        raise ValueError(f"state_dict['state'] must be a dict, got {type(state).__name__}")
    copied: OptimizerState = {}
    for name, buffers in state.items():
        _check_keys(f"state_dict['state'][{name!r}]", buffers, set(buffer_names))
        arrays = list(buffers.values())
        for buffer, array in buffers.items():
            if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.floating):
                raise ValueError(f"state_dict['state'][{name!r}][{buffer!r}] must be a floating-point array")
            if array.shape != arrays[0].shape or array.dtype != arrays[0].dtype:
                raise ValueError(f"state_dict['state'][{name!r}] buffers differ in shape or dtype")
        copied[name] = {buffer: array.astype(array.dtype.newbyteorder('='), order='C', copy=True)
                        for buffer, array in buffers.items()}
    return copied
