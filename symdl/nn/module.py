"""The :class:`Module` base class and the containers :class:`Sequential`, :class:`ModuleList`, :class:`ModuleDict`.

A module groups symdl :class:`~symdl.graph.Parameter` leaves (learnable weights), *buffers* (non-trainable
parameters that are state, e.g. BatchNorm running statistics) and submodules, and builds a piece of the graph
when called on symbolic tensors. See :class:`Module` for the rules.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NamedTuple, TypeVar, overload

import numpy as np

from symdl.errors import ShapeError, SymdlError, user_frame, where
from symdl.graph import Parameter, Tensor

__all__ = [
    "ROOT_NAME",
    "IncompatibleKeys",
    "Module",
    "ModuleDict",
    "ModuleList",
    "Sequential",
    "StateDictError",
]

ROOT_NAME = "model"
"""How error messages call the module that was called directly by user code (the root of the call)."""

M = TypeVar("M", bound="Module")


class StateDictError(SymdlError, ValueError):
    """``load_state_dict`` was given a state that does not fit the model (nothing was loaded)."""


class IncompatibleKeys(NamedTuple):
    """What ``load_state_dict(..., strict=False)`` skipped: the model's keys absent from the state, and the
    state's keys the model does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


# ----------------------------------------------------------------------------------------------------
# The call stack: which module is building graph nodes right now, and under which path
# ----------------------------------------------------------------------------------------------------


class _Call(NamedTuple):
    module: Module
    path: str
    paths: dict[int, str]  # id(module) -> path, for every module of the root of this call


class _CallStack(threading.local):
    def __init__(self) -> None:
        self.frames: list[_Call] = []


_calls = _CallStack()


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _addindent(text: str, spaces: int) -> str:
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


# ----------------------------------------------------------------------------------------------------
# Module
# ----------------------------------------------------------------------------------------------------


class Module:
    """Base class of layers and models (as ``torch.nn.Module``).

    Subclass it, assign parameters and submodules as attributes in ``__init__`` (after ``super().__init__()``) and
    override :meth:`forward`; ``model(x)`` on a symbolic tensor builds graph nodes and returns a symbolic tensor.
    Nothing runs until you ``symdl.compile`` the graph.

    Registration
        Assigning a :class:`~symdl.graph.Parameter` registers it as a *parameter* (whatever its ``trainable``
        flag), assigning a :class:`Module` registers a *submodule*. *Buffers* (state that is not learned, such as
        BatchNorm's running statistics) are registered with :meth:`register_buffer`; they are non-trainable
        Parameters too, so the compiled train step can update them. :meth:`parameters` lists parameters only
        (not buffers); :meth:`state_dict` holds both. Assigning ``None`` to a registered name keeps the name
        registered with no value (e.g. ``bias=False``); assigning anything else to it is a ``TypeError`` (to change
        a parameter's data set ``.value``).

    Names
        Once attached, every parameter and buffer gets a ``.name`` equal to its dotted path from the outermost
        module it is attached to (``features.0.weight``), so that graph renders and printouts are readable.

    Train and eval
        symdl chooses the behaviour of BatchNorm and dropout when a graph is *compiled*
        (``symdl.compile(..., mode="train" | "eval")``): one graph built by ``model(x)`` serves both. The
        ``training`` flag set by :meth:`train` / :meth:`eval` is kept for familiarity only; no layer reads it and
        the graph never depends on it.

    Freezing
        :meth:`requires_grad_` (``freeze()`` / ``unfreeze()``) sets ``trainable`` on the module's parameters.
        Frozen parameters are still listed by :meth:`parameters` (as PyTorch); optimisers skip parameters with
        ``trainable=False``. :meth:`trainable_parameters` lists the others.

    Errors
        While a module is called, symdl keeps a stack of the modules being called. The module called directly by
        user code is named ``"model"`` (:data:`ROOT_NAME`) and its submodules by their attribute path
        (``model.features.2``). A :class:`~symdl.errors.ShapeError` raised while building a layer's nodes (by the
        layer's own input checks or by an op) names that path and the layer, e.g.
        ``model.fc1 (Linear(in_features=10, out_features=5, bias=True)): ...``, plus the user's file:line.
    """

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_parent", None)  # weakref to the first module this one was attached to
        object.__setattr__(self, "_name_in_parent", "")
        object.__setattr__(self, "training", True)

    # --- graph building ---------------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Build this module's graph nodes from its (symbolic) inputs; override it in subclasses."""
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call :meth:`forward`, recording this module's path for error messages (see the class docstring)."""
        stack = _calls.frames
        if stack:
            top = stack[-1]
            paths = top.paths
            path = paths.get(id(self)) or f"{top.path}.<unregistered {type(self).__name__}>"
        else:
            paths = {id(m): _join(ROOT_NAME, n) if n else ROOT_NAME for n, m in self.named_modules()}
            path = ROOT_NAME
        stack.append(_Call(self, path, paths))
        try:
            return self.forward(*args, **kwargs)
        except ShapeError as e:
            if getattr(e, "layer_path", None) is not None:
                raise
            err = ShapeError(f"{path} ({self.short_repr()}): {e}")
            err.layer_path = path  # type: ignore[attr-defined]
            raise err.with_traceback(e.__traceback__) from None
        finally:
            stack.pop()

    def layer_path(self) -> str:
        """This module's path in the current call (``model.features.2``); its class name outside a call."""
        for call in reversed(_calls.frames):
            if call.module is self:
                return call.path
        return type(self).__name__

    def shape_error(self, message: str) -> ShapeError:
        """A :class:`ShapeError` naming this layer's path and configuration and the user's file:line (for input
        checks in :meth:`forward`: ``raise self.shape_error(...)``)."""
        path = self.layer_path()
        err = ShapeError(f"{path} ({self.short_repr()}): {message}{where(user_frame())}")
        err.layer_path = path  # type: ignore[attr-defined]
        return err

    # --- attribute registration -------------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        d = self.__dict__
        if "_parameters" not in d:
            if isinstance(value, (Parameter, Module)):
                raise AttributeError(
                    f"cannot assign {type(value).__name__} {name!r} before {type(self).__name__}.__init__() has "
                    "called super().__init__()"
                )
            object.__setattr__(self, name, value)
            return
        params, buffers, modules = d["_parameters"], d["_buffers"], d["_modules"]
        if isinstance(value, Parameter):
            if name in buffers:  # replacing a buffer keeps it a buffer
                buffers[name] = value
            else:
                self._forget(name, keep="_parameters")
                params[name] = value
            self._name_leaf(name, value)
        elif isinstance(value, Module):
            self._forget(name, keep="_modules")
            modules[name] = value
            self._adopt(name, value)
        elif name in params or name in buffers or name in modules:
            if value is not None:
                kind = "parameter" if name in params else "buffer" if name in buffers else "submodule"
                need = "a symdl Parameter" if kind != "submodule" else "a Module"
                raise TypeError(
                    f"cannot assign {type(value).__name__} to {type(self).__name__}.{name}: it is a registered "
                    f"{kind}; assign {need} or None (to change a parameter's data, set its .value)"
                )
            for table in (params, buffers, modules):
                if name in table:
                    if table is modules:
                        self._disown(modules[name])
                    table[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            entries = d.get(table)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name: str) -> None:
        d = self.__dict__
        for table in ("_parameters", "_buffers", "_modules"):
            entries = d.get(table)
            if entries is not None and name in entries:
                if table == "_modules":
                    self._disown(entries[name])
                del entries[name]
                d["_non_persistent"].discard(name)
                return
        object.__delattr__(self, name)

    def _forget(self, name: str, keep: str = "") -> None:
        """Unregister ``name`` from every table but ``keep`` (where a replaced entry keeps its position)."""
        d = self.__dict__
        d.pop(name, None)
        for table in ("_parameters", "_buffers", "_modules"):
            if table == keep:
                if table == "_modules":
                    self._disown(d[table].get(name))
                continue
            old = d[table].pop(name, None)
            if table == "_modules" and old is not None:
                self._disown(old)
        if keep != "_buffers":
            d["_non_persistent"].discard(name)

    def _adopt(self, name: str, child: Module) -> None:
        parent = child.__dict__.get("_parent")
        if parent is None or parent() is None or parent() is self:
            object.__setattr__(child, "_parent", weakref.ref(self))
            object.__setattr__(child, "_name_in_parent", name)
        child._rename_leaves()

    def _disown(self, child: Module | None) -> None:
        if child is not None:
            parent = child.__dict__.get("_parent")
            if parent is not None and parent() is self:
                object.__setattr__(child, "_parent", None)
                object.__setattr__(child, "_name_in_parent", "")
                child._rename_leaves()

    def _prefix_from_top(self) -> str:
        """``"features.0."``: this module's path from the outermost module it is attached to (with a dot)."""
        parts: list[str] = []
        seen: set[int] = set()
        m: Module | None = self
        while m is not None and id(m) not in seen:
            seen.add(id(m))
            ref = m.__dict__.get("_parent")
            parent = ref() if ref is not None else None
            if parent is None:
                break
            parts.append(m.__dict__["_name_in_parent"])
            m = parent
        return "".join(p + "." for p in reversed(parts))

    def _name_leaf(self, name: str, p: Parameter) -> None:
        p.name = self._prefix_from_top() + name

    def _rename_leaves(self) -> None:
        prefix = self._prefix_from_top()
        for module_name, module in self.named_modules():
            for table in ("_parameters", "_buffers"):
                for leaf_name, p in module.__dict__[table].items():
                    if p is not None:
                        p.name = prefix + _join(module_name, leaf_name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (a symdl Parameter, or ``None`` for an absent optional one) under ``name``."""
        self._check_name(name, "parameter")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(
                f"register_parameter: {name!r} must be a symdl Parameter or None, got {type(param).__name__}"
            )
        self._forget(name, keep="_parameters")
        self.__dict__["_parameters"][name] = param
        if param is not None:
            self._name_leaf(name, param)

    def register_buffer(self, name: str, value: Any, persistent: bool = True) -> Parameter | None:
        """Register a buffer: state saved in :meth:`state_dict` but not returned by :meth:`parameters`.

        ``value`` is a symdl Parameter (used as is; it should be non-trainable), an array (wrapped in a new
        non-trainable Parameter, dtype kept) or ``None``. ``persistent=False`` leaves it out of the state dict.
        Returns the registered Parameter.
        """
        self._check_name(name, "buffer")
        if value is not None and not isinstance(value, Parameter):
            if isinstance(value, Tensor):
                raise TypeError(f"register_buffer: {name!r} must be a Parameter or an array, got {value!r}")
            value = Parameter(np.asarray(value), name=name, trainable=False)
        self._forget(name, keep="_buffers")
        self.__dict__["_buffers"][name] = value
        if not persistent:
            self.__dict__["_non_persistent"].add(name)
        if value is not None:
            self._name_leaf(name, value)
        return value

    def add_module(self, name: str, module: Module | None) -> None:
        """Register ``module`` (or ``None``) as the submodule ``name``."""
        self._check_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"add_module: {name!r} must be a Module or None, got {type(module).__name__}")
        self._forget(name, keep="_modules")
        self.__dict__["_modules"][name] = module
        if module is not None:
            self._adopt(name, module)

    register_module = add_module

    def _check_name(self, name: str, kind: str) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot register a {kind} before {type(self).__name__}.__init__() has run")
        if not isinstance(name, str) or not name or "." in name:
            raise KeyError(f"{kind} name must be a non-empty string without '.', got {name!r}")
        if name in self.__dict__ and not any(name in self.__dict__[t] for t in ("_parameters", "_buffers", "_modules")):
            raise KeyError(f"attribute {name!r} already exists on {type(self).__name__}")

    # --- traversal --------------------------------------------------------------------------------------
    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """``(dotted path, module)`` for this module (path ``prefix``) and all its descendants, depth first."""
        memo: set[int] = set()
        stack: list[tuple[str, Module]] = [(prefix, self)]
        while stack:
            path, module = stack.pop()
            if remove_duplicate:
                if id(module) in memo:
                    continue
                memo.add(id(module))
            yield path, module
            children = [(_join(path, n), m) for n, m in module.__dict__["_modules"].items() if m is not None]
            stack.extend(reversed(children))

    def modules(self) -> Iterator[Module]:
        """This module and all its descendants."""
        for _, m in self.named_modules():
            yield m

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """``(name, module)`` for the direct submodules."""
        seen: set[int] = set()
        for name, m in self.__dict__["_modules"].items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self) -> Iterator[Module]:
        """The direct submodules."""
        for _, m in self.named_children():
            yield m

    def _named_leaves(
        self, table: str, prefix: str, recurse: bool, remove_duplicate: bool
    ) -> Iterator[tuple[str, Parameter]]:
        memo: set[int] = set()
        modules = self.named_modules(prefix) if recurse else iter([(prefix, self)])
        for path, module in modules:
            for name, p in module.__dict__[table].items():
                if p is None or (remove_duplicate and id(p) in memo):
                    continue
                memo.add(id(p))
                yield _join(path, name), p

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for the parameters (not buffers) of this module and, with ``recurse``, its
        descendants; a parameter shared by several modules is listed once. Frozen parameters are included."""
        return self._named_leaves("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The parameters (not buffers), frozen ones included; see :meth:`trainable_parameters`."""
        for _, p in self.named_parameters(recurse=recurse):
            yield p

    def trainable_parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        """The parameters whose ``trainable`` flag is set (what an optimiser updates)."""
        for p in self.parameters(recurse):
            if p.trainable:
                yield p

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, Parameter)`` for the buffers (e.g. ``bn.running_mean``)."""
        return self._named_leaves("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse: bool = True) -> Iterator[Parameter]:
        """The buffers (non-trainable state Parameters)."""
        for _, b in self.named_buffers(recurse=recurse):
            yield b

    def get_submodule(self, target: str) -> Module:
        """The submodule at dotted path ``target`` (``""``: this module)."""
        module: Module = self
        if not target:
            return module
        walked = []
        for part in target.split("."):
            child = module.__dict__["_modules"].get(part)
            if child is None:
                where_ = ".".join(walked) or "the root"
                raise AttributeError(f"{type(module).__name__} ({where_}) has no submodule {part!r}")
            walked.append(part)
            module = child
        return module

    def apply(self: M, fn: Callable[[Module], Any]) -> M:
        """Call ``fn`` on every submodule (children first, recursively) and then on this module; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # --- modes and freezing -----------------------------------------------------------------------------
    def train(self: M, mode: bool = True) -> M:
        """Set the ``training`` flag recursively (informational only: the compile mode decides); returns self."""
        if not isinstance(mode, bool):
            raise ValueError(f"train: mode must be a bool, got {mode!r}")
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self: M) -> M:
        """``train(False)``; use ``symdl.compile(..., mode="eval")`` to get inference behaviour."""
        return self.train(False)

    def requires_grad_(self: M, requires_grad: bool = True) -> M:
        """Set ``trainable`` on every parameter (not buffer) of this module and its descendants; returns self."""
        for p in self.parameters():
            p.trainable = bool(requires_grad)
        return self

    def freeze(self: M) -> M:
        """``requires_grad_(False)``: optimisers leave the parameters unchanged (transfer learning)."""
        return self.requires_grad_(False)

    def unfreeze(self: M) -> M:
        """``requires_grad_(True)``."""
        return self.requires_grad_(True)

    # --- state ------------------------------------------------------------------------------------------
    def _state_leaves(self) -> OrderedDict[str, Parameter]:
        """The state entries in PyTorch's order: each module's parameters, then its persistent buffers, then its
        children's entries. Shared leaves appear under each of their names."""
        out: OrderedDict[str, Parameter] = OrderedDict()
        for path, module in self.named_modules(remove_duplicate=False):
            d = module.__dict__
            for name, p in d["_parameters"].items():
                if p is not None:
                    out[_join(path, name)] = p
            for name, b in d["_buffers"].items():
                if b is not None and name not in d["_non_persistent"]:
                    out[_join(path, name)] = b
        return out

    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """``{dotted name: copy of the value}`` of all parameters and persistent buffers (BatchNorm running
        statistics included), in PyTorch's order."""
        return OrderedDict((name, p.value.copy()) for name, p in self._state_leaves().items())

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy the values of ``state_dict`` into this module's parameters and buffers.

        Everything is validated before anything is assigned, so a bad state leaves the model unchanged:

        - names: with ``strict`` (default) the keys must be exactly those of :meth:`state_dict`; otherwise
          missing and unexpected keys are skipped and returned;
        - shapes must match exactly;
        - dtypes: a value of the parameter's dtype is copied; another dtype is accepted only if NumPy casts it
          *safely* (no information lost: float32 into float64, int32 into int64, ...). float64 values for
          float32 parameters are refused (cast them explicitly, ``v.astype(np.float32)``).

        All problems are reported together in one :class:`StateDictError`. Returns :class:`IncompatibleKeys`.
        """
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"load_state_dict expects a mapping name -> array, got {type(state_dict).__name__}")
        own = self._state_leaves()
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        problems: list[str] = []
        if strict and missing:
            problems.append(f"missing keys: {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys: {', '.join(str(k) for k in unexpected)}")
        new_values: list[tuple[Parameter, np.ndarray]] = []
        for name, p in own.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            if isinstance(value, Tensor):
                value = value.value if isinstance(value, Parameter) else value
                if isinstance(value, Tensor):
                    problems.append(f"{name}: a symbolic tensor has no value ({value!r})")
                    continue
            try:
                arr = np.asarray(value)
            except Exception as e:
                problems.append(f"{name}: cannot convert {type(value).__name__} to an array ({e})")
                continue
            if tuple(arr.shape) != tuple(p.shape):
                problems.append(f"{name}: shape {tuple(arr.shape)} in the state dict, {tuple(p.shape)} in the model")
                continue
            if arr.dtype != p.dtype and not np.can_cast(arr.dtype, p.dtype, casting="safe"):
                problems.append(
                    f"{name}: dtype {arr.dtype} in the state dict cannot be cast safely to the model's {p.dtype}"
                )
                continue
            new_values.append((p, arr.astype(p.dtype, copy=True)))
        if problems:
            details = "".join(f"\n  {line}" for line in problems)
            raise StateDictError(
                f"load_state_dict for {type(self).__name__}: nothing was loaded, the model is unchanged:{details}"
            )
        for p, arr in new_values:
            p.value = arr
        return IncompatibleKeys(missing, unexpected)

    # --- printing ---------------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's configuration shown inside its repr (override in layers: ``in_features=10, ...``)."""
        return ""

    def short_repr(self) -> str:
        """One line: the class name and :meth:`extra_repr` (used by error messages)."""
        extra = self.extra_repr().replace("\n", " ")
        return f"{type(self).__name__}({extra})"

    def __repr__(self) -> str:
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        for name, m in self.__dict__["_modules"].items():
            lines.append(f"({name}): " + _addindent(repr(m), 2))
        if not self.__dict__["_modules"]:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(lines)
        return f"{type(self).__name__}(\n  {body}\n)"

    # --- copying and pickling ---------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """The instance dict without the (unpicklable) weak link to the parent module."""
        state = self.__dict__.copy()
        state["_parent"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore the instance dict and re-link the submodules to this module (``copy.deepcopy``, ``pickle``)."""
        self.__dict__.update(state)
        for name, child in self.__dict__["_modules"].items():
            if child is not None and child.__dict__.get("_parent") is None:
                object.__setattr__(child, "_parent", weakref.ref(self))
                object.__setattr__(child, "_name_in_parent", name)

    def __dir__(self) -> list[str]:
        d = self.__dict__
        return sorted(set(super().__dir__()) | set(d["_parameters"]) | set(d["_buffers"]) | set(d["_modules"]))


# ----------------------------------------------------------------------------------------------------
# Containers
# ----------------------------------------------------------------------------------------------------


def _check_index(idx: Any, n: int, what: str) -> int:
    if not isinstance(idx, (int, np.integer)) or isinstance(idx, bool):
        raise TypeError(f"{what} indices must be integers or slices, not {type(idx).__name__}")
    i = int(idx)
    if not -n <= i < n:
        raise IndexError(f"{what} index {i} is out of range for length {n}")
    return i % n


class Sequential(Module):
    """Modules applied one after the other: ``Sequential(m0, m1, ...)`` or ``Sequential(OrderedDict(...))``.

    Submodules are named ``"0"``, ``"1"``, ... (or by the dict's keys). Supports ``len``, iteration, integer
    indexing (negative too) and slicing (a new ``Sequential`` sharing the modules), and :meth:`append`.
    """

    def __init__(self, *args: Module | Mapping[str, Module]) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], Mapping):
            for name, m in args[0].items():
                self._add(name, m)
        else:
            for i, m in enumerate(args):
                self._add(str(i), m)

    def _add(self, name: str, m: Any) -> None:
        if not isinstance(m, Module):
            raise TypeError(f"{type(self).__name__}: element {name} must be a Module, got {type(m).__name__}")
        self.add_module(name, m)

    def forward(self, x: Any) -> Any:
        """Apply the modules in order."""
        for m in self:
            x = m(x)
        return x

    def __len__(self) -> int:
        return len(self.__dict__["_modules"])

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self.__dict__["_modules"].values()))

    @overload
    def __getitem__(self, idx: int) -> Module: ...

    @overload
    def __getitem__(self, idx: slice) -> Sequential: ...

    def __getitem__(self, idx: int | slice) -> Module | Sequential:
        items = list(self.__dict__["_modules"].items())
        if isinstance(idx, slice):
            return type(self)(OrderedDict(items[idx]))
        return items[_check_index(idx, len(items), "Sequential")][1]

    def __setitem__(self, idx: int, module: Module) -> None:
        keys = list(self.__dict__["_modules"])
        key = keys[_check_index(idx, len(keys), "Sequential")]
        self._add(key, module)

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end (named by its position); returns self."""
        self._add(str(len(self)), module)
        return self


class ModuleList(Module):
    """A list of submodules (named ``"0"``, ``"1"``, ...), registered so that their parameters are found.

    Supports ``len``, iteration, indexing and slicing, assignment by index, :meth:`append`, :meth:`extend`,
    :meth:`insert` and ``+=``. It has no ``forward``: iterate over it in your own module's ``forward``.
    """

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _set(self, i: int, m: Any) -> None:
        if not isinstance(m, Module):
            raise TypeError(f"ModuleList: element {i} must be a Module, got {type(m).__name__}")
        self.add_module(str(i), m)

    def __len__(self) -> int:
        return len(self.__dict__["_modules"])

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self.__dict__["_modules"].values()))

    @overload
    def __getitem__(self, idx: int) -> Module: ...

    @overload
    def __getitem__(self, idx: slice) -> ModuleList: ...

    def __getitem__(self, idx: int | slice) -> Module | ModuleList:
        values = list(self.__dict__["_modules"].values())
        if isinstance(idx, slice):
            return ModuleList(values[idx])
        return values[_check_index(idx, len(values), "ModuleList")]

    def __setitem__(self, idx: int, module: Module) -> None:
        self._set(_check_index(idx, len(self), "ModuleList"), module)

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns self."""
        self._set(len(self), module)
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        """Append every module of ``modules``; returns self."""
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError("ModuleList.extend takes an iterable of modules (use append for one module)")
        for m in list(modules):
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index`` (names are renumbered)."""
        values = list(self.__dict__["_modules"].values())
        n = len(values)
        i = int(index)
        i = max(0, min(n, i + n if i < 0 else i))
        values.insert(i, module)
        for m in values[i:]:
            if not isinstance(m, Module):
                raise TypeError(f"ModuleList: element {i} must be a Module, got {type(m).__name__}")
        for k in range(i, n + 1):
            self._set(k, values[k])

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not callable: iterate over the list in a module's ``forward``."""
        raise NotImplementedError("ModuleList has no forward(); iterate over it in your module's forward()")


class ModuleDict(Module):
    """A dict of submodules ``{name: module}`` (insertion-ordered), registered so that their parameters are found.

    Supports ``len``, iteration over keys, ``in``, ``d[name]`` (get / set / del), :meth:`keys`, :meth:`items`,
    :meth:`values` and :meth:`update`.
    """

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __len__(self) -> int:
        return len(self.__dict__["_modules"])

    def __iter__(self) -> Iterator[str]:
        return iter(list(self.__dict__["_modules"]))

    def __contains__(self, key: object) -> bool:
        return key in self.__dict__["_modules"]

    def __getitem__(self, key: str) -> Module:
        return self.__dict__["_modules"][key]

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: {key!r} must be a Module, got {type(module).__name__}")
        self.add_module(key, module)

    def __delitem__(self, key: str) -> None:
        self.__delattr__(key)

    def keys(self) -> list[str]:
        """The names, in insertion order."""
        return list(self.__dict__["_modules"])

    def items(self) -> list[tuple[str, Module]]:
        """``(name, module)`` pairs, in insertion order."""
        return list(self.__dict__["_modules"].items())

    def values(self) -> list[Module]:
        """The modules, in insertion order."""
        return list(self.__dict__["_modules"].values())

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        """Add or replace entries from a mapping or an iterable of ``(name, module)`` pairs."""
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        for key, m in pairs:
            self[key] = m

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Not callable: pick entries in a module's ``forward``."""
        raise NotImplementedError("ModuleDict has no forward(); index it in your module's forward()")
