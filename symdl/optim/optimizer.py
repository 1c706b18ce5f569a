"""The optimiser base class: parameter groups, state parameters, symbolic updates, state dicts.

An optimiser never runs anything: :meth:`Optimizer.minimize` (or :meth:`Optimizer.apply_gradients`) builds
the *symbolic* new value of every parameter and of every piece of optimiser state, and returns them as the
``updates`` dict of :func:`symdl.compile`::

    opt = symdl.optim.Adam(params, lr=1e-3)
    step = symdl.compile([x, y], [loss], updates=opt.minimize(loss))

State (moments, step counter, ...) lives in non-trainable :class:`~symdl.graph.Parameter` s owned by the
optimiser, so a compiled train step carries it from call to call, and the compiler fuses each parameter's
update (parameter, gradient and state in, new parameter and new state out) into one elementwise loop.

Learning rates are 0-d non-trainable parameters too (one per parameter group, of the group's parameter
dtype): ``opt.lr = 0.01`` or ``opt.param_groups[i]["lr"] = 0.01`` (what schedulers do) writes their value, so
changing a learning rate never recompiles anything. All other hyper-parameters are constants of the update
graph, fixed at construction.

Scalar quantities that depend on the step counter (bias corrections, Adagrad's decayed rate, NAdam's momentum
schedule) are computed once per group as 0-d float64 expressions of the shared float64 ``step`` parameter and
cast to the parameter dtype, as PyTorch computes them in Python floats.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any, ClassVar

import numpy as np

from symdl.graph import Parameter, Tensor, is_float, parameter, toposort
from symdl.ops.elementwise import cast

F64 = np.dtype("float64")

__all__ = ["Optimizer", "ParamGroup"]


def _check_lr(lr: Any, what: str = "learning rate") -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid {what}: {lr!r} is not a number") from None
    if not math.isfinite(value) or value < 0.0:
        raise ValueError(f"Invalid {what}: {lr}")
    return value


class ParamGroup(MutableMapping):
    """One parameter group: its parameters, its learning rate and its hyper-parameters (a mapping, as in torch).

    - ``group["params"]``: the list of parameters (read-only).
    - ``group["lr"]``: the learning rate; assigning it writes the group's 0-d lr parameter
      (:attr:`lr_parameter`), which compiled functions read at every call.
    - the optimiser's other hyper-parameters (``group["momentum"]``, ``group["betas"]`` ...): read-only, they
      are constants of the update graph.
    - any other key (``"initial_lr"`` set by schedulers, ``"name"`` ...) can be stored freely.
    """

    def __init__(self, params: list[Parameter], lr: float, options: dict[str, Any], lr_parameter: Parameter) -> None:
        self.params = params
        self.lr_parameter = lr_parameter
        self._options = options
        self._extra: dict[str, Any] = {}
        self._lr = 0.0
        self._set_lr(lr)

    def _set_lr(self, value: Any) -> None:
        lr = _check_lr(value)
        self._lr = lr
        self.lr_parameter.value = np.asarray(lr, dtype=self.lr_parameter.dtype)

    def _get_lr(self) -> float:
        # the exact Python float last written, unless someone wrote the parameter directly since
        stored = self.lr_parameter.value
        if stored == np.asarray(self._lr, dtype=stored.dtype):
            return self._lr
        return float(stored)

    def __getitem__(self, key: str) -> Any:
        if key == "params":
            return list(self.params)
        if key == "lr":
            return self._get_lr()
        if key in self._options:
            return self._options[key]
        return self._extra[key]

    def __setitem__(self, key: str, value: Any) -> None:
        if key == "lr":
            self._set_lr(value)
        elif key == "params":
            raise KeyError("the parameters of a group cannot be replaced; use Optimizer.add_param_group")
        elif key in self._options:
            raise KeyError(
                f"cannot change {key!r} of a parameter group: hyper-parameters other than 'lr' are constants of "
                "the update graph; build a new optimiser instead"
            )
        else:
            self._extra[key] = value

    def __delitem__(self, key: str) -> None:
        if key in ("params", "lr") or key in self._options:
            raise KeyError(f"cannot delete {key!r} from a parameter group")
        del self._extra[key]

    def __iter__(self) -> Iterator[str]:
        yield "params"
        yield "lr"
        yield from self._options
        yield from self._extra

    def __len__(self) -> int:
        return 2 + len(self._options) + len(self._extra)

    def __eq__(self, other: object) -> bool:
        return self is other  # groups hold tensors, whose == builds graph nodes

    __hash__ = object.__hash__

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self._options.items())
        return f"<ParamGroup {len(self.params)} params, lr={self['lr']:g}, {opts}>"


class _Scalars:
    """0-d float64 step-dependent quantities of one group, cast once per parameter dtype."""

    def __init__(self, values: dict[str, Tensor]) -> None:
        self.values = values
        self._cast: dict[tuple[str, np.dtype], Tensor] = {}

    def __call__(self, name: str, dtype: np.dtype) -> Tensor:
        key = (name, dtype)
        if key not in self._cast:
            self._cast[key] = cast(self.values[name], dtype)
        return self._cast[key]


class Optimizer:
    """Base class of symdl's optimisers (constructed like ``torch.optim`` optimisers).

    ``params`` is an iterable of :class:`~symdl.graph.Parameter` s, or of dicts ``{"params": [...], "lr": ...,
    <hyper-parameter>: ...}`` (parameter groups with their own settings; missing keys take the constructor's
    values). Parameters whose ``trainable`` flag is ``False`` when :meth:`minimize` is called are skipped
    (freeze layers for transfer learning; flip the flag back and call ``minimize`` again to unfreeze).

    Attributes: ``param_groups`` (a list of :class:`ParamGroup`), ``defaults`` (the constructor's
    hyper-parameters), ``state`` (``{param: {buffer name: state Parameter}}``, created with zeros at
    construction, torch's buffer names), :attr:`step_parameter`.

    One step counter (a 0-d float64 parameter, exact up to 2**53 steps) is shared by all parameters, where torch
    keeps one per parameter: the same thing when every parameter is updated at every step, which is what one
    compiled ``minimize`` does. Compiling several train steps that update *different subsets* with one
    optimiser would advance the shared counter for all: use one optimiser per subset then.

    Subclasses define ``_buffers`` (the per-parameter state), ``_check`` (hyper-parameter validation),
    ``_group_scalars`` (0-d quantities) and ``_update`` (the elementwise update of one parameter).
    """

    _shared_state: ClassVar[tuple[tuple[str, float], ...]] = ()  # 0-d float64 state besides "step", initial value

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self._check(self.defaults)
        if isinstance(params, Tensor):
            raise TypeError(
                f"{type(self).__name__}: params should be an iterable of Parameters or dicts, but got a single "
                f"tensor {params.label()}; wrap it in a list"
            )
        if isinstance(params, (dict, set, frozenset)) or not isinstance(params, Iterable):
            raise TypeError(
                f"{type(self).__name__}: params should be an ordered iterable (list) of Parameters or dicts, "
                f"got {type(params).__name__}"
            )
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: optimizer got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        self.param_groups: list[ParamGroup] = []
        self.state: dict[Parameter, dict[str, Parameter]] = {}
        self._step = parameter(np.zeros((), F64), name=f"{type(self).__name__}.step", trainable=False)
        self._shared = {
            name: parameter(np.asarray(init, F64), name=f"{type(self).__name__}.{name}", trainable=False)
            for name, init in self._shared_state
        }
        for g in groups:
            self.add_param_group(g)

    # --- hooks (subclasses) -----------------------------------------------------------------------
    def _check(self, options: Mapping[str, Any]) -> None:
        """Validate hyper-parameters (raise ``ValueError`` naming the argument)."""

    def _buffers(self, group: ParamGroup) -> list[tuple[str, float]]:
        """Per-parameter state buffers of ``group``: ``(name, initial fill value)``."""
        return []

    def _group_scalars(self, group: ParamGroup, lr: Tensor, t_old: Tensor, t_new: Tensor) -> dict[str, Tensor]:
        """0-d float64 quantities shared by the group's updates (``lr`` is the group's lr as float64)."""
        return {}

    def _shared_updates(self, t_new: Tensor) -> dict[str, Tensor]:
        """New values of the shared 0-d state of ``_shared_state``."""
        return {}

    def _update(
        self, p: Parameter, g: Tensor, state: dict[str, Parameter], group: ParamGroup, s: _Scalars
    ) -> dict[Parameter, Tensor]:
        raise NotImplementedError

    # --- groups ---------------------------------------------------------------------------------
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group ``{"params": [...], <hyper-parameter>: value ...}`` (as ``torch.optim``), e.g. to train
        layers unfrozen later with their own learning rate. Its state is created (zeros) right away."""
        name = type(self).__name__
        if not isinstance(param_group, Mapping):
            raise TypeError(f"{name}: param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise ValueError(f"{name}: a parameter group needs a 'params' entry")
        raw = param_group["params"]
        if isinstance(raw, Parameter):
            plist = [raw]
        elif isinstance(raw, (set, frozenset)):
            raise TypeError(
                f"{name}: optimizer parameters need to be organized in ordered collections, but the ordering of "
                "tensors in sets will change between runs. Please use a list instead."
            )
        elif isinstance(raw, Tensor) or not isinstance(raw, Iterable):
            raise TypeError(f"{name}: 'params' must be a Parameter or a list of Parameters, got {raw!r}")
        else:
            plist = list(raw)
        if not plist:
            raise ValueError(f"{name}: optimizer got an empty parameter list")
        for p in plist:
            if not isinstance(p, Parameter):
                what = f"the tensor {p.label()} (a {p.op.name})" if isinstance(p, Tensor) else type(p).__name__
                raise TypeError(
                    f"{name}: optimizer can only optimize Parameters (symdl.parameter), but one of the params is {what}"
                )
            if p.trainable and not is_float(p.dtype):
                raise TypeError(f"{name}: cannot optimize {p.label()}: it is {p.dtype}, not floating-point")
        seen: dict[Parameter, int] = {}
        for p in plist:
            if p in seen:
                raise ValueError(f"{name}: parameter {p.label()} appears twice in the parameter list")
            seen[p] = 1
        for g in self.param_groups:
            for p in g.params:
                if p in seen:
                    raise ValueError(f"{name}: some parameters appear in more than one parameter group ({p.label()})")
        unknown = [k for k in param_group if k not in self.defaults and k not in ("params", "name")]
        if unknown:
            raise ValueError(
                f"{name}: unknown option(s) {', '.join(map(repr, unknown))} in a parameter group; "
                f"{name} takes {', '.join(self.defaults)}"
            )
        options = {k: param_group.get(k, v) for k, v in self.defaults.items()}
        self._check(options)
        lr = options.pop("lr")
        floats = [p.dtype for p in plist if is_float(p.dtype)]
        dtype = np.dtype("float64") if F64 in floats else np.dtype("float32")
        index = len(self.param_groups)
        lr_param = parameter(np.zeros((), dtype), name=f"{name}.param_groups.{index}.lr", trainable=False)
        group = ParamGroup(plist, lr, options, lr_param)
        if "name" in param_group:
            group["name"] = param_group["name"]
        self.param_groups.append(group)
        for p in plist:
            if not is_float(p.dtype):
                self.state[p] = {}
                continue
            label = p.name if p.name is not None else f"param{len(self.state)}"
            self.state[p] = {
                buf: parameter(np.full(p.shape, fill, p.dtype), name=f"{name}.{label}.{buf}", trainable=False)
                for buf, fill in self._buffers(group)
            }

    # --- learning rate --------------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate (of every group: an error if the groups have different ones)."""
        lrs = {g["lr"] for g in self.param_groups}
        if len(lrs) != 1:
            raise ValueError(
                f"{type(self).__name__} has {len(self.param_groups)} parameter groups with different learning "
                "rates; read opt.param_groups[i]['lr']"
            )
        return lrs.pop()

    @lr.setter
    def lr(self, value: float) -> None:
        value = _check_lr(value)
        for g in self.param_groups:
            g["lr"] = value

    @property
    def step_parameter(self) -> Parameter:
        """The 0-d float64 parameter counting the updates applied so far (shared by all parameters)."""
        return self._step

    @property
    def parameters(self) -> list[Parameter]:
        """Every parameter of every group, in order."""
        return [p for g in self.param_groups for p in g.params]

    def state_parameters(self) -> list[Parameter]:
        """Every parameter the optimiser owns: lrs, the step counter, shared and per-parameter state."""
        out = [g.lr_parameter for g in self.param_groups] + [self._step, *self._shared.values()]
        for p in self.parameters:
            out += list(self.state[p].values())
        return out

    # --- symbolic updates -----------------------------------------------------------------------
    def minimize(
        self, loss: Tensor, clip_grad_norm: float | None = None, clip_grad_value: float | None = None
    ) -> dict[Parameter, Tensor]:
        """The ``updates`` dict of one optimisation step on the scalar ``loss``.

        Gradients are taken with respect to every trainable parameter of the optimiser that ``loss`` depends
        on (others are left alone, as torch skips parameters without a gradient), optionally clipped (by global
        norm, then by value: see :func:`symdl.optim.clip_grad_norm` / :func:`symdl.optim.clip_grad_value`), and
        passed to :meth:`apply_gradients`.
        """
        from compiler.autodiff import grad

        name = type(self).__name__
        if not isinstance(loss, Tensor):
            raise TypeError(f"{name}.minimize: loss must be a symbolic Tensor, got {type(loss).__name__}")
        if loss.ndim != 0:
            raise ValueError(
                f"{name}.minimize: loss must be a scalar (0-d) tensor, got shape {loss.shape} ({loss.label()}); "
                "reduce it first, e.g. loss.mean()"
            )
        if not is_float(loss.dtype):
            raise TypeError(f"{name}.minimize: loss must be floating-point, got {loss.dtype} ({loss.label()})")
        reach = {n.id for n in toposort([loss])}
        trainable = [p for p in self.parameters if p.trainable]
        used = [p for p in trainable if p.id in reach]
        if not used:
            raise ValueError(
                f"{name}.minimize: the loss {loss.label()} depends on none of the optimizer's "
                f"{len(trainable)} trainable parameters ({len(self.parameters) - len(trainable)} are frozen)"
            )
        grads = grad(loss, used)
        return self.apply_gradients(list(zip(grads, used)), clip_grad_norm, clip_grad_value)

    def apply_gradients(
        self,
        grads_and_params: Iterable[tuple[Tensor, Parameter]],
        clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None,
    ) -> dict[Parameter, Tensor]:
        """The ``updates`` dict for gradients you computed yourself: ``[(grad, param), ...]``.

        Each ``param`` must belong to the optimiser; frozen ones (``trainable=False``) are skipped. The dict maps
        every updated parameter and every piece of state (moments, the step counter ...) to its new value.
        """
        from symdl.optim.clip import clip_grad_norm as _clip_norm
        from symdl.optim.clip import clip_grad_value as _clip_value

        name = type(self).__name__
        owner: dict[Parameter, int] = {p: i for i, g in enumerate(self.param_groups) for p in g.params}
        pairs: list[tuple[Tensor, Parameter]] = []
        seen: dict[Parameter, int] = {}
        for item in grads_and_params:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise TypeError(f"{name}.apply_gradients: expected (grad, param) pairs, got {item!r}")
            g, p = item
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}.apply_gradients: {p!r} is not a Parameter (pairs are (grad, param))")
            if p not in owner:
                raise ValueError(f"{name}.apply_gradients: parameter {p.label()} is not in this optimizer's groups")
            if p in seen:
                raise ValueError(f"{name}.apply_gradients: parameter {p.label()} is given twice")
            seen[p] = 1
            if not isinstance(g, Tensor):
                raise TypeError(f"{name}.apply_gradients: the gradient of {p.label()} is not a Tensor: {g!r}")
            if (
                g.dtype != p.dtype
                or len(g.shape) != len(p.shape)
                or any(d is not None and d != e for d, e in zip(g.shape, p.shape))
            ):
                raise ValueError(
                    f"{name}.apply_gradients: the gradient of {p.label()} has shape {g.shape} {g.dtype}, "
                    f"expected {p.shape} {p.dtype}"
                )
            if p.trainable:
                pairs.append((g, p))
        if not pairs:
            raise ValueError(f"{name}.apply_gradients: no trainable parameter to update (all given are frozen)")
        grads = [g for g, _ in pairs]
        if clip_grad_norm is not None:
            grads, _ = _clip_norm(grads, clip_grad_norm)
        if clip_grad_value is not None:
            grads = _clip_value(grads, clip_grad_value)

        t_old = self._step
        t_new = t_old + 1.0
        scalars: dict[int, _Scalars] = {}
        updates: dict[Parameter, Tensor] = {}
        for g, (_, p) in zip(grads, pairs):
            gi = owner[p]
            group = self.param_groups[gi]
            if gi not in scalars:
                lr64 = cast(group.lr_parameter, F64)
                scalars[gi] = _Scalars({"lr": lr64, **self._group_scalars(group, lr64, t_old, t_new)})
            updates.update(self._update(p, g, self.state[p], group, scalars[gi]))
        updates[self._step] = t_new
        for key, value in self._shared_updates(t_new).items():
            updates[self._shared[key]] = value
        return updates

    def _lr(self, group: ParamGroup, dtype: np.dtype) -> Tensor:
        """The group's lr parameter in ``dtype``."""
        return cast(group.lr_parameter, dtype)

    # --- state dict -----------------------------------------------------------------------------
    def _keys(self) -> list[str]:
        """Stable keys of the parameters: the name where it is unique, else the position in the groups."""
        params = self.parameters
        counts: dict[str | None, int] = {}
        for p in params:
            counts[p.name] = counts.get(p.name, 0) + 1
        keys = [p.name if p.name is not None and counts[p.name] == 1 else str(k) for k, p in enumerate(params)]
        if len(set(keys)) != len(keys):  # a name that looks like another parameter's index
            keys = [str(k) for k in range(len(params))]
        return keys

    def _state_entries(self) -> dict[str, Parameter]:
        entries: dict[str, Parameter] = {}
        for i, g in enumerate(self.param_groups):
            entries[f"param_groups.{i}.lr"] = g.lr_parameter
        entries["step"] = self._step
        for key, p in self._shared.items():
            entries[key] = p
        for key, p in zip(self._keys(), self.parameters):
            for buf, sp in self.state[p].items():
                entries[f"state.{key}.{buf}"] = sp
        return entries

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat ``{key: array}`` copy of the optimiser's state, ready for ``np.savez``.

        Keys: ``param_groups.<i>.lr``, ``step``, shared scalars (NAdam's ``mu_product``) and
        ``state.<param>.<buffer>`` where ``<param>`` is the parameter's name when it is unique in the optimiser,
        else its position in the groups (so keys are the same for a freshly rebuilt model in another process).
        Learning rates are stored in float64 (their exact Python value).
        """
        out: dict[str, np.ndarray] = {}
        for key, p in self._state_entries().items():
            out[key] = np.array(p.value, copy=True)
        for i, g in enumerate(self.param_groups):
            out[f"param_groups.{i}.lr"] = np.asarray(g["lr"], dtype=F64)
        return out

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict`. Every key, shape and value is checked before anything changes."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{name}.load_state_dict: expected a mapping of arrays, got {type(state_dict).__name__}")
        entries = self._state_entries()
        given = list(state_dict.keys())
        missing = [k for k in entries if k not in state_dict]
        unexpected = [k for k in given if k not in entries]
        if missing or unexpected:
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise KeyError(f"{name}.load_state_dict: {'; '.join(parts)}")
        new: dict[str, np.ndarray] = {}
        for key, p in entries.items():
            arr = np.asarray(state_dict[key])
            if arr.dtype.kind not in "biuf":
                raise ValueError(f"{name}.load_state_dict: {key!r} has dtype {arr.dtype}, expected a real number array")
            if arr.shape != p.shape:
                raise ValueError(f"{name}.load_state_dict: {key!r} has shape {arr.shape}, expected {p.shape}")
            if key.startswith("param_groups."):
                _check_lr(arr, f"learning rate {key!r}")
            elif key == "step" and (not np.isfinite(arr) or arr < 0 or arr != np.floor(arr)):
                raise ValueError(f"{name}.load_state_dict: 'step' must be a non-negative integer, got {arr}")
            new[key] = arr
        for key, p in entries.items():
            if key.startswith("param_groups."):
                self.param_groups[int(key.split(".")[1])]["lr"] = float(new[key])
            else:
                p.value = new[key].astype(p.dtype)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            opts = ", ".join(f"{k}: {g[k]!r}" for k in g if k != "params")
            lines.append(f"  group {i}: {len(g.params)} params; {opts}")
        return "\n".join(lines + [")"])


def lerp(a: Tensor, b: Tensor, weight: float) -> Tensor:
    """``torch.lerp(a, b, weight)`` as torch's CPU kernel computes it: ``a + w (b - a)`` for ``w < 0.5``, else
    ``b - (b - a)(1 - w)`` with ``1 - w`` computed in the tensors' dtype."""
    if weight < 0.5:
        return a + weight * (b - a)
    dt = a.dtype.type
    return b - (b - a) * float(dt(1.0) - dt(weight))
