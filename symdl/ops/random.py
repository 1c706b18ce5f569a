"""A counter-based random number generator and dropout.

State
    A :class:`Generator` owns a non-trainable ``uint64`` parameter ``state = [seed, counter]``. Every
    train-mode call of a compiled function that contains dropout advances ``counter`` by one (an implicit
    parameter update, ``state + [0, 1]``). Setting ``state.value`` back (``set_state``) replays the same masks,
    so runs are reproducible and resumable.

Streams
    Each dropout call takes the next *stream id* from its generator when the graph is built (0, 1, 2, ...), so
    several dropout layers sharing one generator draw independent masks while sharing a single update node.

The mask formula (the Numba ``cpu`` and ``cuda`` targets must reproduce it bit for bit)
    All arithmetic is on ``uint64`` with wrap-around (mod 2**64); ``>>`` is a logical shift::

        mix64(z):                        # the splitmix64 finaliser
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
            z = (z ^ (z >> 27)) * 0x94D049BB133111EB
            return z ^ (z >> 31)

        key  = mix64(mix64(mix64(seed) ^ counter) ^ stream)          # one per (call, dropout layer)
        h[i] = mix64(key ^ (i * 0x9E3779B97F4A7C15))                  # i: row-major flat element index
        keep[i] = (h[i] >> 11) < K,   K = ceil((1 - p) * 2**53)       # i.e. uniform53(h) < 1 - p

    ``K`` is computed on the host in float64 (``(1 - p) * 2**53`` is exact, see :func:`keep_threshold`), so the
    test ``keep[i]`` is pure integer arithmetic. The mask value is ``scale = 1 / (1 - p)`` computed in the
    input's dtype (``dtype(1) / dtype(1 - p)``) where kept and ``0`` elsewhere; ``p == 1`` gives all zeros.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from symdl.errors import user_frame, where
from symdl.graph import InferError, Op, Parameter, Tensor, TensorType, apply, constant, is_float, parameter
from symdl.ops.base import DISCONNECTED
from symdl.ops.elementwise import add, mul
from symdl.ops.modes import mode_switch

__all__ = ["Generator", "default_generator", "dropout", "host_rng", "initial_seed", "manual_seed"]

U64 = np.dtype("uint64")
_MASK64 = (1 << 64) - 1
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
GAMMA = 0x9E3779B97F4A7C15  # golden-ratio increment of splitmix64


# ----------------------------------------------------------------------------------------------------
# The hash (NumPy reference; vectorised over uint64 arrays)
# ----------------------------------------------------------------------------------------------------


def mix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on a ``uint64`` array (a new array; wraps mod 2**64)."""
    z = np.array(z, dtype=U64, copy=True)
    z ^= z >> np.uint64(30)
    z *= np.uint64(MIX1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(MIX2)
    z ^= z >> np.uint64(31)
    return z


def stream_key(seed: int, counter: int, stream: int) -> int:
    """``mix64(mix64(mix64(seed) ^ counter) ^ stream)``: the per-call, per-layer key (a Python int)."""
    k = mix64(np.array([int(seed) & _MASK64], dtype=U64))
    k = mix64(k ^ np.uint64(int(counter) & _MASK64))
    k = mix64(k ^ np.uint64(int(stream) & _MASK64))
    return int(k[0])


def random_bits(key: int, size: int) -> np.ndarray:
    """``h[i] = mix64(key ^ (i * GAMMA))`` for ``i = 0 .. size-1``, as ``uint64``."""
    z = np.arange(size, dtype=U64)
    z *= np.uint64(GAMMA)
    z ^= np.uint64(key & _MASK64)
    return mix64(z)


def keep_threshold(p: float) -> int:
    """``K = ceil((1 - p) * 2**53)``: an element is kept iff ``(h >> 11) < K`` (exact in float64)."""
    return math.ceil((1.0 - float(p)) * 2.0**53)


def dropout_mask_array(
    shape: tuple[int, ...], state: np.ndarray, p: float, stream: int, dtype: Any = "float32"
) -> np.ndarray:
    """The scaled keep-mask for one dropout call: ``1 / (1 - p)`` where kept, ``0`` elsewhere (reference code)."""
    dt = np.dtype(dtype)
    seed, counter = (int(v) for v in np.asarray(state, dtype=U64).reshape(2))
    size = math.prod(shape)
    bits = random_bits(stream_key(seed, counter, stream), size)
    keep = (bits >> np.uint64(11)) < np.uint64(keep_threshold(p))
    scale = dt.type(0) if p >= 1.0 else dt.type(1) / dt.type(1.0 - p)
    return np.where(keep, scale, dt.type(0)).astype(dt, copy=False).reshape(shape)


# ----------------------------------------------------------------------------------------------------
# Generators
# ----------------------------------------------------------------------------------------------------


class Generator:
    """A counter-based random generator: a non-trainable ``uint64`` parameter ``state = [seed, counter]``.

    Dropout calls built with this generator take consecutive stream ids and share one implicit update node
    (``state + [0, 1]``), applied once per train-mode call of a compiled function.
    """

    def __init__(self, seed: int = 0, name: str = "rng_state") -> None:
        self.state: Parameter = parameter(_state_array(seed, 0), name=name, trainable=False)
        self._step = constant(np.array([0, 1], dtype=U64), name="rng_step")
        self._advanced: Tensor | None = None

    @property
    def seed(self) -> int:
        return int(self.state.value[0])

    @property
    def counter(self) -> int:
        return int(self.state.value[1])

    def manual_seed(self, seed: int) -> Generator:
        """Reset the state to ``[seed, 0]`` and restart stream ids at 0 (call it before building the graph, so
        that rebuilding a model gives the same streams). Returns the generator."""
        self.state.value = _state_array(seed, 0)
        self.state._dropout_streams = 0
        return self

    def get_state(self) -> np.ndarray:
        """A copy of ``[seed, counter]`` (``uint64``)."""
        return self.state.value.copy()

    def set_state(self, state: Any) -> None:
        """Restore a state saved with :meth:`get_state` (resumes the exact sequence of masks)."""
        arr = np.asarray(state)
        if arr.shape != (2,) or arr.dtype.kind not in "iu":
            raise ValueError(f"Generator.set_state: expected 2 integers [seed, counter], got {arr!r}")
        self.state.value = arr.astype(U64)

    def next_stream(self) -> int:
        """The next stream id (taken once per dropout call at graph-build time)."""
        stream = self.state._dropout_streams
        self.state._dropout_streams = stream + 1
        return stream

    def advanced(self) -> Tensor:
        """The node ``state + [0, 1]``: the same node for every dropout call of this generator."""
        if self._advanced is None:
            self._advanced = add(self.state, self._step)
        return self._advanced

    def __repr__(self) -> str:
        return f"<symdl.Generator seed={self.seed} counter={self.counter} streams={self.state._dropout_streams}>"


def _state_array(seed: int, counter: int) -> np.ndarray:
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
    return np.array([int(seed) & _MASK64, int(counter) & _MASK64], dtype=U64)


_default: Generator | None = None


def default_generator() -> Generator:
    """The process-wide generator used by dropout when no ``generator`` is given (seed 0 until reseeded)."""
    global _default
    if _default is None:
        _default = Generator(0, name="default_rng_state")
    return _default


_host_seed = 0
_host: np.random.Generator | None = None


def host_rng() -> np.random.Generator:
    """The process-wide NumPy generator for host-side randomness (weight initialisation, default data-loader
    seeds). :func:`manual_seed` resets it to ``PCG64(seed)``, so seeding and then building a model and its
    loaders gives the same weights and orders in every run."""
    global _host
    if _host is None:
        _host = np.random.Generator(np.random.PCG64(_host_seed))
    return _host


def initial_seed() -> int:
    """The seed last given to :func:`manual_seed` (0 before any call)."""
    return _host_seed


def manual_seed(seed: int) -> Generator:
    """Seed everything random in symdl from one integer.

    - the default dropout generator: its state becomes ``[seed, 0]`` (seed taken mod 2**64) and its stream ids
      restart at 0, so seeding and then building a model gives the same masks in every run. Already-built graphs
      see the new state on their next call. Call it *before* building a graph: dropout layers of one graph built
      on both sides of a ``manual_seed`` call may share a stream id;
    - :func:`host_rng`, the NumPy generator behind weight initialisation and default data-loader seeds.

    Returns the default generator."""
    global _host_seed, _host
    gen = default_generator().manual_seed(seed)
    _host_seed = int(seed) & _MASK64
    _host = np.random.Generator(np.random.PCG64(_host_seed))
    return gen


# ----------------------------------------------------------------------------------------------------
# The mask op
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DropoutMask(Op):
    """Inputs ``(x, state)``: the scaled keep-mask shaped like ``x`` at run time (``x``'s values are unused).

    A pure function of ``(state = [seed, counter], stream, element index, p)``; see the module docstring for the
    exact formula. Not differentiable in any input (its gradient is disconnected).
    """

    p: float = 0.5
    stream: int = 0
    name: ClassVar[str] = "dropout_mask"

    def infer(self, x, state):  # type: ignore[no-untyped-def, override]
        if not is_float(x.dtype):
            raise InferError(f"dropout needs a floating-point input, got {x.dtype}")
        if state.dtype != U64 or state.shape != (2,):
            raise InferError(f"the generator state must be uint64 of shape (2,), got {state}")
        return TensorType(x.shape, x.dtype)

    def perform(self, x, state):  # type: ignore[no-untyped-def]
        return dropout_mask_array(x.shape, state, self.p, self.stream, x.dtype)

    def grad(self, inputs, output, g):  # type: ignore[no-untyped-def]
        return [DISCONNECTED, DISCONNECTED]


def dropout(x: Tensor, p: float = 0.5, training: bool | None = None, generator: Generator | None = None) -> Tensor:
    """``torch.nn.functional.dropout``: in train mode, zero each element with probability ``p`` and scale the
    kept ones by ``1 / (1 - p)``; in eval mode, the identity.

    ``training=None`` lets ``symdl.compile(mode=...)`` decide; ``True`` always drops (the generator still
    advances only in a train-mode compile); ``False`` is the identity. The mask comes from ``generator`` (default:
    :func:`default_generator`); each call takes a new stream id of that generator and every train-mode call of
    the compiled function advances its counter by one. ``p`` must lie in [0, 1].
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"dropout: x must be a symbolic tensor, got {type(x).__name__}{where(user_frame())}")
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"dropout: p must be a number, got {type(p).__name__} {p!r}{where(user_frame())}")
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}{where(user_frame())}")
    if training not in (None, True, False):
        raise TypeError(f"dropout: training must be None, True or False, got {training!r}")
    if generator is None:
        generator = default_generator()
    elif not isinstance(generator, Generator):
        raise TypeError(
            f"dropout: generator must be a symdl Generator, got {type(generator).__name__}{where(user_frame())}"
        )
    if training is False:
        return x
    mask = apply(DropoutMask(p, generator.next_stream()), x, generator.state)
    dropped = mul(x, mask)
    return mode_switch(
        dropped, dropped if training else x, updates={generator.state: generator.advanced()}, kind="dropout"
    )
