"""cuda library kernels of the second slice: max/avg pooling and their gradients, concat (and its adjoint), pad,
the dropout mask, BCE's probability check, one_hot and fill_like.

Registered into :data:`compiler.codegen.cuda.library.LIBRARY` on import (``library`` imports this module at its
end). Every kernel is deterministic: the pooling adjoints are *gathers* (one thread per input element summing the
windows that chose it, in the CPU kernel's window order: no atomics), and the dropout mask is the counter-based
splitmix64 hash of :mod:`symdl.ops.random` computed with ``uint64`` arithmetic on the device (products split into
32-bit halves, so the simulator's NumPy scalars never overflow), bit for bit the CPU kernel's mask.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

from compiler.codegen.cuda.device import (
    CudaCompiledKernel,
    DeviceValue,
    download,
    grid_for,
    launch,
    launch_config,
    load_cuda_module,
)
from compiler.codegen.cuda.elementwise import module_header
from compiler.codegen.cuda.library import (
    _broadcast_to,
    _kernel,
    fill,
    host_array,
    library_module,
    materialize,
    register,
    sliced,
    strided_copy,
)
from compiler.kernels import Kernel
from symdl.errors import GraphError, where
from symdl.losses import CheckProbabilities
from symdl.ops import random as rnd
from symdl.ops.elementwise import FillLike
from symdl.ops.indexing import OneHot, _check_range
from symdl.ops.pool import AvgPool, AvgPoolGrad, MaxPool, MaxPoolGather, MaxPoolGrad, MaxPoolIndices
from symdl.ops.shape import Concat, ConcatPart, Pad

# ----------------------------------------------------------------------------------------------------
# Kernels. Pooling arrays are flat (planes, H, W) with planes = N * C (1-d: H = 1); g = (kh, kw, sh, sw, ph, pw,
# dh, dw) as the CPU target's ``pgeom``.
# ----------------------------------------------------------------------------------------------------

_POOL = '''
@cuda.jit(device=True)
def window_argmax(x, base, h, w, y0, x0, kh, kw, dh, dw):
    """(iy, ix) of the first maximum of the window at (y0, x0) (row-major taps, padding -inf, a NaN wins)."""
    best = -math.inf
    if y0 >= 0 and y0 < h and x0 >= 0 and x0 < w:
        best = x[base + y0 * w + x0]
    by = y0
    bx = x0
    for a in range(kh):
        iy = y0 + a * dh
        for b in range(kw):
            ix = x0 + b * dw
            v = -math.inf
            if iy >= 0 and iy < h and ix >= 0 and ix < w:
                v = x[base + iy * w + ix]
            if best == best and (v > best or v != v):
                best = v
                by = iy
                bx = ix
    return by, bx


@cuda.jit
def max_pool_rows(mode, a, x, out, idx, planes, h, w, oh, ow, g):
    """mode 0: out = window maxima of x; 1: idx = flat argmax iy * w + ix; 2: out = a (x-shaped) at the argmax
    (0 in the padding). One thread per output element."""
    for t in range(cuda.grid(1), planes * oh * ow, cuda.gridsize(1)):
        p = t // (oh * ow)
        q = t - p * (oh * ow)
        oy = q // ow
        ox = q - oy * ow
        base = p * h * w
        iy, ix = window_argmax(x, base, h, w, oy * g[2] - g[4], ox * g[3] - g[5], g[0], g[1], g[6], g[7])
        inside = iy >= 0 and iy < h and ix >= 0 and ix < w
        if mode == 0:
            if inside:
                out[t] = x[base + iy * w + ix]
            else:
                out[t] = -math.inf
        elif mode == 1:
            idx[t] = iy * w + ix
        elif inside:
            out[t] = a[base + iy * w + ix]
        else:
            out[t] = 0


@cuda.jit
def max_pool_grad_gather(gp, x, out, planes, h, w, oh, ow, g):
    """out[p, iy, ix] = the sum of gp over the windows whose first maximum is (iy, ix), added in ascending window
    order as the CPU kernel's scatter (a gather: one thread per input element, deterministic)."""
    kh, kw, sh, sw, ph, pw, dh, dw = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    for t in range(cuda.grid(1), planes * h * w, cuda.gridsize(1)):
        p = t // (h * w)
        q = t - p * (h * w)
        iy = q // w
        ix = q - iy * w
        base = p * h * w
        out[t] = 0
        for ra in range(kh):
            ny = iy + ph - (kh - 1 - ra) * dh
            if ny < 0 or ny % sh != 0 or ny // sh >= oh:
                continue
            oy = ny // sh
            for rb in range(kw):
                nx = ix + pw - (kw - 1 - rb) * dw
                if nx < 0 or nx % sw != 0 or nx // sw >= ow:
                    continue
                ox = nx // sw
                by, bx = window_argmax(x, base, h, w, oy * sh - ph, ox * sw - pw, kh, kw, dh, dw)
                if by == iy and bx == ix:
                    out[t] = out[t] + gp[(p * oh + oy) * ow + ox]


@cuda.jit(device=True)
def avg_count(o, k, s, p, n, include_pad):
    start = o * s - p
    end = min(start + k, n + p)
    if include_pad:
        return end - start
    return max(min(end, n) - max(start, 0), 0)


@cuda.jit(device=True)
def avg_divisor(oy, ox, h, w, g, include_pad, override):
    if override != 0:
        return override
    d = avg_count(oy, g[0], g[2], g[4], h, include_pad) * avg_count(ox, g[1], g[3], g[5], w, include_pad)
    if d == 0:
        return 1
    return d


@cuda.jit
def avg_pool_rows(x, out, planes, h, w, oh, ow, g, include_pad, override):
    """out = window sums of the zero-padded x (float64 accumulation, as the CPU kernel) over PyTorch's divisor."""
    for t in range(cuda.grid(1), planes * oh * ow, cuda.gridsize(1)):
        p = t // (oh * ow)
        q = t - p * (oh * ow)
        oy = q // ow
        ox = q - oy * ow
        div = avg_divisor(oy, ox, h, w, g, include_pad, override)
        acc = 0.0
        for ta in range(g[0]):
            iy = oy * g[2] - g[4] + ta * g[6]
            if iy < 0 or iy >= h:
                continue
            for tb in range(g[1]):
                ix = ox * g[3] - g[5] + tb * g[7]
                if ix >= 0 and ix < w:
                    acc += x[(p * h + iy) * w + ix]
        out[t] = acc / div


@cuda.jit
def avg_pool_grad_gather(gp, out, planes, h, w, oh, ow, g, include_pad, override):
    """out[p, iy, ix] = the sum of gp / divisor over the windows that read (iy, ix), in ascending window order."""
    kh, kw, sh, sw, ph, pw, dh, dw = g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7]
    for t in range(cuda.grid(1), planes * h * w, cuda.gridsize(1)):
        p = t // (h * w)
        q = t - p * (h * w)
        iy = q // w
        ix = q - iy * w
        out[t] = 0
        for ra in range(kh):
            ny = iy + ph - (kh - 1 - ra) * dh
            if ny < 0 or ny % sh != 0 or ny // sh >= oh:
                continue
            oy = ny // sh
            for rb in range(kw):
                nx = ix + pw - (kw - 1 - rb) * dw
                if nx < 0 or nx % sw != 0 or nx // sw >= ow:
                    continue
                ox = nx // sw
                div = avg_divisor(oy, ox, h, w, g, include_pad, override)
                out[t] = out[t] + gp[(p * oh + oy) * ow + ox] / div
'''

_MISC = '''
M32 = U64(0xFFFFFFFF)
S11 = U64(11)
S27 = U64(27)
S30 = U64(30)
S31 = U64(31)
S32 = U64(32)
MIX1 = U64({mix1})
MIX2 = U64({mix2})
GAMMA = U64({gamma})


@cuda.jit(device=True)
def mul64(a, b):
    """a * b mod 2**64 from 32-bit halves (no uint64 product overflows: the simulator's NumPy scalars stay quiet)."""
    alo = a & M32
    ahi = a >> S32
    blo = b & M32
    bhi = b >> S32
    low = alo * blo
    cross = ((ahi * blo) & M32) + ((alo * bhi) & M32) + (low >> S32)
    return ((cross & M32) << S32) | (low & M32)


@cuda.jit(device=True)
def mix64(z):
    z = mul64(z ^ (z >> S30), MIX1)
    z = mul64(z ^ (z >> S27), MIX2)
    return z ^ (z >> S31)


@cuda.jit
def dropout_mask(state, stream, threshold, scale, zero, out, n):
    """out[i] = scale if (mix64(key ^ i * GAMMA) >> 11) < threshold else zero, key = mix64(mix64(mix64(seed) ^
    counter) ^ stream): symdl.ops.random's mask."""
    key = mix64(mix64(mix64(state[0]) ^ state[1]) ^ stream)
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        h = mix64(key ^ mul64(U64(i), GAMMA))
        if (h >> S11) < threshold:
            out[i] = scale
        else:
            out[i] = zero


@cuda.jit
def check_probabilities(x, out, bad, n):
    """out = x; bad[thread] = how many of the thread's entries lie outside [0, 1] (or are NaN)."""
    start = cuda.grid(1)
    count = 0
    for i in range(start, n, cuda.gridsize(1)):
        v = x[i]
        out[i] = v
        if not (v >= 0 and v <= 1):
            count += 1
    if start < bad.shape[0]:
        bad[start] = count


@cuda.jit
def one_hot(labels, out, n, nc):
    """out[i, c] = 1 if labels[i] == c else 0 (labels already range-checked)."""
    for t in range(cuda.grid(1), n * nc, cuda.gridsize(1)):
        i = t // nc
        if labels[i] == t - i * nc:
            out[t] = 1
        else:
            out[t] = 0
'''


def more_module() -> ModuleType:
    """The loaded module of this file's kernels."""
    misc = _MISC.replace("{mix1}", hex(rnd.MIX1)).replace("{mix2}", hex(rnd.MIX2)).replace("{gamma}", hex(rnd.GAMMA))
    source = "\n".join(module_header("symdl cuda library kernels: pooling, dropout, checks.")) + _POOL + misc
    return load_cuda_module(source, "cuda_library_more")


# ----------------------------------------------------------------------------------------------------
# Pooling
# ----------------------------------------------------------------------------------------------------


def _pool_geom(op: Any) -> tuple[int, ...]:
    """``(kh, kw, sh, sw, ph, pw, dh, dw)`` (a 1-d op gets a unit window height), as the CPU target."""
    if len(op.kernel) == 1:
        return (1, op.kernel[0], 1, op.stride[0], 0, op.padding[0], 1, op.dilation[0])
    return (*op.kernel, *op.stride, *op.padding, *op.dilation)


def _plane_dims(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(planes, H, W) of an (N, C, H, W) or (N, C, L) shape."""
    if len(shape) == 4:
        return shape[0] * shape[1], shape[2], shape[3]
    return shape[0] * shape[1], 1, shape[2]


_MAX, _INDICES, _GATHER = 0, 1, 2


def _max_family(kernel: Kernel, mode: int) -> CudaCompiledKernel:
    geom = _pool_geom(kernel.anchor.op)
    cfg = launch_config()
    mod = more_module()

    def run(*values: DeviceValue) -> None:
        out = values[-1]
        x = values[-2]
        if out.size == 0:
            return
        planes, h, w = _plane_dims(x.shape)
        _, oh, ow = _plane_dims(out.shape)
        xf = materialize(x).flat()
        a = materialize(_broadcast_to(values[0], x.shape)).flat() if mode == _GATHER else xf
        grid = grid_for(out.size, cfg)
        if mode == _INDICES:
            launch(mod.max_pool_rows, grid, cfg.block)(mode, a, xf, xf, out.flat(), planes, h, w, oh, ow, geom)
        else:
            launch(mod.max_pool_rows, grid, cfg.block)(mode, a, xf, out.flat(), out.flat(), planes, h, w, oh, ow, geom)

    return _kernel(kernel, run, [mod.max_pool_rows])


@register(MaxPool)
def _max_pool(kernel: Kernel) -> CudaCompiledKernel:
    return _max_family(kernel, _MAX)


@register(MaxPoolIndices)
def _max_pool_indices(kernel: Kernel) -> CudaCompiledKernel:
    return _max_family(kernel, _INDICES)


@register(MaxPoolGather)
def _max_pool_gather(kernel: Kernel) -> CudaCompiledKernel:
    return _max_family(kernel, _GATHER)


@register(MaxPoolGrad)
def _max_pool_grad(kernel: Kernel) -> CudaCompiledKernel:
    geom = _pool_geom(kernel.anchor.op)
    cfg = launch_config()
    mod = more_module()

    def run(g: DeviceValue, x: DeviceValue, out: DeviceValue) -> None:
        if out.size == 0:
            return
        planes, h, w = _plane_dims(x.shape)
        _, oh, ow = _plane_dims(g.shape)
        launch(mod.max_pool_grad_gather, grid_for(out.size, cfg), cfg.block)(
            materialize(g).flat(), materialize(x).flat(), out.flat(), planes, h, w, oh, ow, geom
        )

    return _kernel(kernel, run, [mod.max_pool_grad_gather])


def _avg_args(op: Any) -> tuple[tuple[int, ...], bool, int]:
    return _pool_geom(op), bool(op.count_include_pad), int(op.divisor_override or 0)


@register(AvgPool)
def _avg_pool(kernel: Kernel) -> CudaCompiledKernel:
    geom, include_pad, override = _avg_args(kernel.anchor.op)
    cfg = launch_config()
    mod = more_module()

    def run(x: DeviceValue, out: DeviceValue) -> None:
        if out.size == 0:
            return
        planes, h, w = _plane_dims(x.shape)
        _, oh, ow = _plane_dims(out.shape)
        launch(mod.avg_pool_rows, grid_for(out.size, cfg), cfg.block)(
            materialize(x).flat(), out.flat(), planes, h, w, oh, ow, geom, include_pad, override
        )

    return _kernel(kernel, run, [mod.avg_pool_rows])


@register(AvgPoolGrad)
def _avg_pool_grad(kernel: Kernel) -> CudaCompiledKernel:
    geom, include_pad, override = _avg_args(kernel.anchor.op)
    cfg = launch_config()
    mod = more_module()

    def run(g: DeviceValue, ref: DeviceValue, out: DeviceValue) -> None:
        if out.size == 0:
            return
        planes, h, w = _plane_dims(out.shape)
        _, oh, ow = _plane_dims(g.shape)
        launch(mod.avg_pool_grad_gather, grid_for(out.size, cfg), cfg.block)(
            materialize(g).flat(), out.flat(), planes, h, w, oh, ow, geom, include_pad, override
        )

    return _kernel(kernel, run, [mod.avg_pool_grad_gather])


# ----------------------------------------------------------------------------------------------------
# Concat, its adjoint, pad: strided copies into / out of slices
# ----------------------------------------------------------------------------------------------------


def _along(ndim: int, axis: int, start: int, stop: int) -> tuple:
    return tuple((start, stop, 1) if a == axis else (None, None, None) for a in range(ndim))


@register(Concat)
def _concat(kernel: Kernel) -> CudaCompiledKernel:
    axis = kernel.anchor.op.axis

    def run(*values: DeviceValue) -> None:
        out, start = values[-1], 0
        for x in values[:-1]:
            stop = start + x.shape[axis]
            if x.size:
                strided_copy(x, sliced(out, _along(out.ndim, axis, start, stop)))
            start = stop

    return _kernel(kernel, run, [library_module().strided_copy])


@register(ConcatPart)
def _concat_part(kernel: Kernel) -> CudaCompiledKernel:
    axis, k = kernel.anchor.op.axis, kernel.anchor.op.k

    def run(g: DeviceValue, *rest: DeviceValue) -> None:
        refs, out = rest[:-1], rest[-1]
        start = sum(r.shape[axis] for r in refs[:k])
        strided_copy(sliced(g, _along(g.ndim, axis, start, start + refs[k].shape[axis])), out)

    return _kernel(kernel, run, [library_module().strided_copy])


@register(Pad)
def _pad(kernel: Kernel) -> CudaCompiledKernel:
    pads = tuple(kernel.anchor.op.pads)
    value = kernel.anchor.dtype.type(kernel.anchor.op.value)

    def run(x: DeviceValue, out: DeviceValue) -> None:
        fill(out, value)
        if x.size:
            strided_copy(x, sliced(out, tuple((b, b + d, 1) for (b, _), d in zip(pads, x.shape))))

    return _kernel(kernel, run, [library_module().strided_copy, library_module().fill])


@register(FillLike)
def _fill_like(kernel: Kernel) -> CudaCompiledKernel:
    value = kernel.anchor.op.value

    def run(ref: DeviceValue, out: DeviceValue) -> None:
        fill(out, value)

    return _kernel(kernel, run, [library_module().fill])


# ----------------------------------------------------------------------------------------------------
# Dropout mask, probability check, one_hot
# ----------------------------------------------------------------------------------------------------


@register(rnd.DropoutMask)
def _dropout_mask(kernel: Kernel) -> CudaCompiledKernel:
    op, dt = kernel.anchor.op, kernel.anchor.dtype
    stream = np.uint64(op.stream & ((1 << 64) - 1))
    threshold = np.uint64(rnd.keep_threshold(op.p))
    scale = dt.type(0) if op.p >= 1.0 else dt.type(1) / dt.type(1.0 - op.p)
    zero = dt.type(0)
    cfg = launch_config()
    mod = more_module()

    def run(x: DeviceValue, state: DeviceValue, out: DeviceValue) -> None:
        if out.size == 0:
            return
        launch(mod.dropout_mask, grid_for(out.size, cfg), cfg.block)(
            materialize(state).flat(), stream, threshold, scale, zero, out.flat(), out.size
        )

    return _kernel(kernel, run, [mod.dropout_mask])


@register(CheckProbabilities)
def _check_probabilities(kernel: Kernel) -> CudaCompiledKernel:
    op = kernel.anchor.op
    cfg = launch_config()
    mod = more_module()
    ck = _kernel(kernel, lambda *a: None, [mod.check_probabilities])

    def run(x: DeviceValue, out: DeviceValue) -> None:
        if x.size == 0:
            return
        grid = grid_for(x.size, cfg)
        nthreads = grid * cfg.block
        key = ("bad", nthreads)
        if key not in ck.scratch:
            from compiler.codegen.cuda.device import device_empty

            ck.scratch[key] = device_empty(nthreads, np.dtype(np.int64))
        bad = ck.scratch[key]
        src = materialize(x)
        launch(mod.check_probabilities, grid, cfg.block)(src.flat(), out.flat(), bad, x.size)
        if bad.copy_to_host().any():
            op.perform(download(src))  # raises with the op's message (first bad entry, count)

    ck.run = ck.serial = run
    return ck


@register(OneHot)
def _one_hot(kernel: Kernel) -> CudaCompiledKernel:
    node = kernel.anchor
    if node.op.num_classes < 0:
        raise GraphError(
            "one_hot(num_classes=-1): the output's size depends on the data, and compiled targets preallocate "
            f"every buffer from the input shapes; pass num_classes explicitly{where(node.frame)}"
        )
    cfg = launch_config()
    mod = more_module()

    def run(labels: DeviceValue, out: DeviceValue) -> None:
        nc = out.shape[-1]
        _check_range(host_array(labels), nc, "label", "classes", None)
        if out.size == 0:
            return
        launch(mod.one_hot, grid_for(out.size, cfg), cfg.block)(materialize(labels).flat(), out.flat(), labels.size, nc)

    return _kernel(kernel, run, [mod.one_hot])
