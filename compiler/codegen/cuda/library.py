"""cuda library kernels for the non-elementwise ops of this slice: matmul (tiled shared-memory GEMM, 2-d and
batched), the softmax family, softmax cross-entropy and its adjoint, argmax, max/min and non-float sums (through
the generated reductions), strided copies (transpose, broadcast_to) and run-time dim sizes.

``@register(OpClass)`` marks ``factory(node) -> CudaCompiledKernel``; ``run(*input values, out)`` takes
:class:`~compiler.codegen.cuda.device.DeviceValue` s and writes ``out`` (destination passing). Fixed kernels are
generated source too (:data:`LIBRARY_SOURCE`, loaded through the content-addressed cache), so that importing this
module never imports ``numba.cuda``; only the GEMM is specialised per dtype and tile (its shared-memory tiles need
a static dtype). Every kernel takes sizes as arguments: a new batch size never recompiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from compiler.codegen.cuda.device import (
    CudaCompiledKernel,
    DeviceValue,
    LaunchConfig,
    device_empty,
    download,
    grid_for,
    launch,
    launch_config,
    load_cuda_module,
    upload,
)
from compiler.codegen.cuda.elementwise import module_header
from compiler.codegen.cuda.reduction import build_reduction, reduction_axes
from compiler.codegen.registry import OpRegistry
from compiler.kernels import Kernel
from symdl.errors import OpRuntimeError
from symdl.graph import Tensor
from symdl.ops.conv import Conv, ConvGradInput, ConvGradWeight
from symdl.ops.indexing import (
    Embedding,
    EmbeddingGrad,
    TakeAlongClass,
    TakeAlongClassGrad,
    _check_idx_shape,
    _check_range,
)
from symdl.ops.nn import LogSoftmax, LogSumExp, Softmax, SoftmaxCrossEntropy, SoftmaxCrossEntropyGrad
from symdl.ops.normalization import BatchCount, BatchNormEval
from symdl.ops.reduce import Argmax, DimSize, MatMul, Max, Min, Sum
from symdl.ops.shape import BroadcastLike, BroadcastTo, Slice, SliceGrad, Transpose, Unbroadcast

Factory = Callable[[Kernel], CudaCompiledKernel]
_REGISTRY: OpRegistry[Factory] = OpRegistry()  # factory(kernel) -> CudaCompiledKernel, by the anchor's op class
LIBRARY = _REGISTRY.table
register = _REGISTRY.register
lookup = _REGISTRY.lookup


def unsupported_reason(node: Tensor) -> str | None:
    """Why an ``"op"`` node cannot run on the cuda target (None when it can)."""
    if lookup(node) is None:
        return "no cuda kernel yet"
    if isinstance(node.op, (Sum, Max, Min)) and reduction_axes(node) is None:  # pragma: no cover - static axes
        return "its reduced axes are known only at run time"
    return None


# ----------------------------------------------------------------------------------------------------
# The fixed kernels (generated source: numba.cuda is imported only when the cuda target is used)
# ----------------------------------------------------------------------------------------------------

_KERNELS = '''
@cuda.jit
def fill(out, value, n):
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        out[i] = value


@cuda.jit
def strided_copy(src, dst, n, dims, sstr, soff, dstr, doff):
    """dst[doff + sum(idx_a * dstr[a])] = src[soff + sum(idx_a * sstr[a])] for every index of dims: transposes,
    broadcasts (stride 0), slices and their adjoints."""
    for i in range(cuda.grid(1), n, cuda.gridsize(1)):
        q = i
        so = soff
        do = doff
        for a in range(len(dims) - 1, -1, -1):
            d = dims[a]
            j = q % d
            so += j * sstr[a]
            do += j * dstr[a]
            q = q // d
        dst[do] = src[so]


@cuda.jit(device=True)
def row_max(x, base, nr, kd, zero):
    """NaN-propagating max of x[base + r * kd], replaced by zero when not finite (symdl.ops.nn._shifted)."""
    m = x[base]
    for r in range(nr):
        v = x[base + r * kd]
        if v > m or v != v:
            m = v
    if m != m or m == math.inf or m == -math.inf:
        m = zero
    return m


@cuda.jit
def softmax_rows(x, out, no, nr, kd, zero, log):
    """Softmax (log-softmax) over axis 1 of x seen as (no, nr, kd); one thread per row, float64 sums."""
    for t in range(cuda.grid(1), no * kd, cuda.gridsize(1)):
        o = t // kd
        base = o * nr * kd + (t - o * kd)
        m = row_max(x, base, nr, kd, zero)
        total = 0.0
        for r in range(nr):
            e = math.exp(x[base + r * kd] - m)
            total += e
            if not log:
                out[base + r * kd] = e
        if log:
            lse = math.log(total)
            for r in range(nr):
                out[base + r * kd] = (x[base + r * kd] - m) - lse
        else:
            inv = 1.0 / total
            for r in range(nr):
                out[base + r * kd] = out[base + r * kd] * inv


@cuda.jit(device=True)
def row_lse(x, base, nr, kd, zero):
    m = row_max(x, base, nr, kd, zero)
    total = 0.0
    for r in range(nr):
        total += math.exp(x[base + r * kd] - m)
    return math.log(total) + F64(m)  # float64 (the simulator's NumPy rules would round a float32 m's sum to float32)


@cuda.jit
def xent_rows(x, idx, out, no, nc, kd, has_ignore, ignore, zero):
    """out[t] = logsumexp(x[o, :, j]) - x[o, idx[t], j] (0 where ignored), t = o * kd + j."""
    for t in range(cuda.grid(1), no * kd, cuda.gridsize(1)):
        o = t // kd
        base = o * nc * kd + (t - o * kd)
        c = idx[t]
        if has_ignore and c == ignore:
            out[t] = 0
        else:
            out[t] = row_lse(x, base, nc, kd, zero) - x[base + c * kd]


@cuda.jit
def xent_grad_rows(g, gstep, idx, x, out, no, nc, kd, has_ignore, ignore, zero):
    """out[o, :, j] = (softmax(x[o, :, j]) - one_hot(idx[t])) * g[t * gstep] (0 where ignored)."""
    for t in range(cuda.grid(1), no * kd, cuda.gridsize(1)):
        o = t // kd
        base = o * nc * kd + (t - o * kd)
        c = idx[t]
        if has_ignore and c == ignore:
            for r in range(nc):
                out[base + r * kd] = 0
        else:
            lse = row_lse(x, base, nc, kd, zero)
            gj = g[t * gstep]
            for r in range(nc):
                out[base + r * kd] = math.exp(x[base + r * kd] - lse) * gj
            out[base + c * kd] -= gj


@cuda.jit
def argmax_rows(x, out, no, nr, kd):
    """out[t] = the first index of the max of x[o, :, k] (the first NaN if any), t = o * kd + k."""
    for t in range(cuda.grid(1), no * kd, cuda.gridsize(1)):
        o = t // kd
        base = o * nr * kd + (t - o * kd)
        best = x[base]
        bi = 0
        if best == best:
            for r in range(1, nr):
                v = x[base + r * kd]
                if v != v:
                    bi = r
                    break
                if v > best:
                    best = v
                    bi = r
        out[t] = bi
'''

_MISC = '''
@cuda.jit
def batch_norm_eval(x, mean, var, weight, bias, out, n, c, inner, eps, one):
    """out = x * alpha + beta per channel, alpha = 1 / sqrt(var + eps) * weight, beta = bias - mean * alpha (as
    BatchNormEval.perform, in x's dtype: eps and one are of that dtype)."""
    for t in range(cuda.grid(1), n, cuda.gridsize(1)):
        ch = (t // inner) % c
        alpha = (one / math.sqrt(var[ch] + eps)) * weight[ch]
        out[t] = x[t] * alpha + (bias[ch] - mean[ch] * alpha)


@cuda.jit
def embedding_rows(idx, weight, out, n, d, has_ignore, ignore):
    """out[i, :] = weight[idx[i], :] (0 where idx[i] == ignore)."""
    for t in range(cuda.grid(1), n * d, cuda.gridsize(1)):
        i = t // d
        v = idx[i]
        if has_ignore and v == ignore:
            out[t] = 0
        else:
            out[t] = weight[v * d + (t - i * d)]


@cuda.jit
def embedding_grad_rows(g, order, starts, out, nrows, d, padding, zero):
    """out[v, j] = the sum of g[i, j] over the positions i of row v, ascending (deterministic, as np.add.at);
    the padding row stays zero."""
    for t in range(cuda.grid(1), nrows * d, cuda.gridsize(1)):
        v = t // d
        j = t - v * d
        s = zero
        if v != padding:
            for p in range(starts[v], starts[v + 1]):
                s += g[order[p] * d + j]
        out[t] = s
'''

_ROWS = '''
@cuda.jit
def lse_rows(x, out, nk, nr, zero):
    """out[k] = logsumexp(x[k * nr : (k + 1) * nr]) with a max-shift."""
    for k in range(cuda.grid(1), nk, cuda.gridsize(1)):
        out[k] = row_lse(x, k * nr, nr, 1, zero)


@cuda.jit
def take_class_rows(x, idx, out, no, nc, kd, has_ignore, ignore):
    """out[t] = x[o, idx[t], j] (0 where ignored), t = o * kd + j."""
    for t in range(cuda.grid(1), no * kd, cuda.gridsize(1)):
        o = t // kd
        c = idx[t]
        if has_ignore and c == ignore:
            out[t] = 0
        else:
            out[t] = x[o * nc * kd + c * kd + (t - o * kd)]


@cuda.jit
def take_class_grad_rows(g, idx, out, no, nc, kd, has_ignore, ignore):
    """out[o, :, j] = 0 except out[o, idx[t], j] = g[t] (nothing where ignored), t = o * kd + j."""
    for t in range(cuda.grid(1), no * kd, cuda.gridsize(1)):
        o = t // kd
        base = o * nc * kd + (t - o * kd)
        for r in range(nc):
            out[base + r * kd] = 0
        c = idx[t]
        if not (has_ignore and c == ignore):
            out[base + c * kd] = g[t]
'''

_GEMM = '''
@cuda.jit
def gemm(a, b, out, m, n, k, sam, sak, sbk, sbn, aoff, boff, nbatch, zero):
    """out[z] = a[z] @ b[z] for every batch z; a[z][i, p] = a[aoff[z] + i * sam + p * sak] (any strides)."""
    ta = cuda.shared.array(({tile}, {tile}), {dtype})
    tb = cuda.shared.array(({tile}, {tile}), {dtype})
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    mb = (m + {tile} - 1) // {tile}
    for z in range(cuda.blockIdx.z, nbatch, cuda.gridDim.z):
        ao = aoff[z]
        bo = boff[z]
        for by in range(cuda.blockIdx.y, mb, cuda.gridDim.y):
            row = by * {tile} + ty
            col = cuda.blockIdx.x * {tile} + tx
            acc = zero
            for k0 in range(0, k, {tile}):
                ka = k0 + tx
                if row < m and ka < k:
                    ta[ty, tx] = a[ao + row * sam + ka * sak]
                else:
                    ta[ty, tx] = zero
                kb = k0 + ty
                if kb < k and col < n:
                    tb[ty, tx] = b[bo + kb * sbk + col * sbn]
                else:
                    tb[ty, tx] = zero
                cuda.syncthreads()
                for p in range({tile}):
                    acc += ta[ty, p] * tb[p, tx]
                cuda.syncthreads()
            if row < m and col < n:
                out[(z * m + row) * n + col] = acc
'''

_NUMBA_DTYPES = {"float32": "numba.float32", "float64": "numba.float64", "int32": "numba.int32", "int64": "numba.int64"}


def library_module() -> ModuleType:
    """The loaded module of the fixed kernels."""
    source = "\n".join(module_header("symdl cuda library kernels.")) + _KERNELS + _MISC + _ROWS
    return load_cuda_module(source, "cuda_library")


def gemm_module(dtype: np.dtype, tile: int) -> ModuleType:
    """The GEMM of ``dtype`` with ``tile x tile`` blocks."""
    name = _NUMBA_DTYPES.get(np.dtype(dtype).name)
    if name is None:
        raise OpRuntimeError(f"matmul: dtype {np.dtype(dtype)} is not supported on the cuda target")
    source = "\n".join(module_header(f"symdl cuda GEMM: {np.dtype(dtype)}, tile {tile}."))
    return load_cuda_module(source + _GEMM.replace("{tile}", str(tile)).replace("{dtype}", name), f"gemm_{dtype}")


def fill(out: DeviceValue, value: float) -> None:
    """Set every element of the contiguous ``out`` to ``value``."""
    n = out.size
    if n == 0:
        return
    cfg = launch_config()
    launch(library_module().fill, grid_for(n, cfg), cfg.block)(out.flat(), out.dtype.type(value), n)


def strided_copy(src: DeviceValue, dst: DeviceValue, src_shape_strides: tuple[tuple, tuple] | None = None) -> None:
    """Copy ``src`` (read with its own strides, or with ``(dims, strides)`` in ``dst``'s index space: stride 0
    broadcasts) into ``dst`` (written with its own strides and offset)."""
    n = dst.size
    if n == 0:
        return
    dims, strides = src_shape_strides if src_shape_strides is not None else (src.shape, src.strides)
    dstr = dst.strides
    if tuple(dims) != dst.shape:
        raise ValueError(f"internal: strided copy of {tuple(dims)} into {dst.shape}")
    if src_shape_strides is None and src.data is dst.data and src.offset == dst.offset and src.strides == dstr:
        return  # a value copied onto itself (an update written over its parameter in place): nothing to launch
    if len(dims) == 0:
        dims, strides, dstr = (1,), (0,), (0,)
    cfg = launch_config()
    launch(library_module().strided_copy, grid_for(n, cfg), cfg.block)(
        src.data,
        dst.data,
        n,
        tuple(int(d) for d in dims),
        tuple(int(s) for s in strides),
        src.offset,
        tuple(int(s) for s in dstr),
        dst.offset,
    )


def sliced(value: DeviceValue, index: tuple) -> DeviceValue:
    """The strided view ``value[index]`` for a basic index (ints and ``(start, stop, step)`` tuples, as
    :class:`symdl.ops.shape.Slice` stores them); an :class:`OpRuntimeError` when an int is out of range."""
    shape, strides, off = [], [], value.offset
    for ax, (d, st) in enumerate(zip(value.shape, value.strides)):
        i = index[ax] if ax < len(index) else (None, None, None)
        if isinstance(i, int):
            j = i + d if i < 0 else i
            if not 0 <= j < d:
                np_index = tuple(k if isinstance(k, int) else slice(*k) for k in index)
                raise OpRuntimeError(f"index {np_index} out of range for shape {value.shape}")
            off += j * st
        else:
            start, stop, step = slice(*i).indices(d)
            shape.append(len(range(start, stop, step)))
            strides.append(st * step)
            off += start * st
    return DeviceValue(value.data, tuple(shape), value.dtype, tuple(strides), off)


def broadcast_strides(src: DeviceValue, shape: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(shape, strides)`` reading ``src`` broadcast to ``shape`` (NumPy rules; stride 0 on broadcast axes)."""
    lead = len(shape) - len(src.shape)
    strides = [0] * lead
    for d, s, t in zip(src.shape, src.strides, shape[lead:]):
        strides.append(0 if d == 1 and t != 1 else s)
    return tuple(shape), tuple(strides)


def materialize(value: DeviceValue) -> DeviceValue:
    """``value`` itself when C-contiguous, else a contiguous device copy."""
    if value.contiguous:
        return value
    out = DeviceValue(device_empty(value.size, value.dtype), value.shape, value.dtype)
    strided_copy(value, out)
    return out


def host_array(value: DeviceValue) -> np.ndarray:
    """The host array of ``value``: the array it was uploaded from this call if known, else a download."""
    if value.host is not None:
        return value.host
    return download(materialize(value))


def _class_dims(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    return math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :])


def _kernel(kernel: Kernel, run: Callable[..., None], dispatchers: list[Any], **kw: Any) -> CudaCompiledKernel:
    return CudaCompiledKernel(kernel, run=run, serial=run, dispatchers=dispatchers, **kw)


# ----------------------------------------------------------------------------------------------------
# Matmul: tiled shared-memory GEMM; batch dims broadcast through per-batch offset tables
# ----------------------------------------------------------------------------------------------------


def _batch_offsets(value: DeviceValue, batch: tuple[int, ...]) -> np.ndarray:
    """Element offset of every batch matrix of ``value`` (broadcast to ``batch``), C order over ``batch``."""
    vb = value.shape[:-2]
    lead = len(batch) - len(vb)
    strides = [0] * lead + [0 if d == 1 and t != 1 else s for d, s, t in zip(vb, value.strides[:-2], batch[lead:])]
    offs = np.zeros(max(math.prod(batch), 1), np.int64) + value.offset
    if batch:
        grids = np.indices(batch).reshape(len(batch), -1)
        offs = value.offset + (np.asarray(strides, np.int64)[:, None] * grids).sum(axis=0)
    return np.ascontiguousarray(offs, dtype=np.int64)


def matmul_run(cfg: LaunchConfig) -> Callable[..., None]:
    """``run(a, b, out)`` for device values of rank >= 2 (any strides; batch dims broadcast)."""
    tables: dict[tuple, tuple[Any, Any]] = {}

    def run(a: DeviceValue, b: DeviceValue, out: DeviceValue) -> None:
        m, k = a.shape[-2:]
        n = b.shape[-1]
        batch = out.shape[:-2]
        nbatch = math.prod(batch)
        if out.size == 0:
            return
        key = (a.shape, a.strides, a.offset, b.shape, b.strides, b.offset)
        offs = tables.get(key)
        if offs is None:
            offs = tables[key] = (upload(_batch_offsets(a, batch)), upload(_batch_offsets(b, batch)))
        t = cfg.tile
        grid = (-(-n // t), max(1, min(-(-m // t), 65535)), max(1, min(nbatch, 65535)))
        fn = gemm_module(out.dtype, t).gemm
        launch(fn, grid, (t, t))(
            a.data,
            b.data,
            out.flat(),
            m,
            n,
            k,
            a.strides[-2],
            a.strides[-1],
            b.strides[-2],
            b.strides[-1],
            offs[0],
            offs[1],
            nbatch,
            out.dtype.type(0),
        )

    return run


@register(MatMul)
def _matmul(kernel: Kernel) -> CudaCompiledKernel:
    cfg = launch_config()
    return _kernel(kernel, matmul_run(cfg), [gemm_module(kernel.anchor.dtype, cfg.tile).gemm])


# ----------------------------------------------------------------------------------------------------
# Softmax family and softmax cross-entropy: one thread per row
# ----------------------------------------------------------------------------------------------------


@register(Softmax, LogSoftmax)
def _softmax(kernel: Kernel) -> CudaCompiledKernel:
    node = kernel.anchor
    log = isinstance(node.op, LogSoftmax)
    axis = node.op.axis % max(node.ndim, 1)
    cfg = launch_config()
    lib = library_module()

    def run(x: DeviceValue, out: DeviceValue) -> None:
        if x.size == 0:
            return
        if x.ndim == 0:  # softmax of a scalar: over one element
            no, nr, kd = 1, 1, 1
        else:
            no, nr, kd = _class_dims(x.shape, axis)
        launch(lib.softmax_rows, grid_for(no * kd, cfg), cfg.block)(
            materialize(x).flat(), out.flat(), no, nr, kd, x.dtype.type(0), log
        )

    return _kernel(kernel, run, [lib.softmax_rows])


def _labels(op: Any, x: DeviceValue, idx: DeviceValue) -> tuple[int, int, int]:
    """Check the labels' shape and range on the host (as the CPU target); returns the class dims of ``x``."""
    _check_idx_shape(x.shape, idx.shape, op.axis, "cross_entropy")
    no, nc, kd = _class_dims(x.shape, op.axis)
    labels = host_array(idx)
    if labels.size and (labels.min() < 0 or labels.max() >= nc):
        _check_range(labels, nc, "label", "classes", op.ignore_index)
    return no, nc, kd


@register(SoftmaxCrossEntropy)
def _xent(kernel: Kernel) -> CudaCompiledKernel:
    op = kernel.anchor.op
    has_ignore, ignore = op.ignore_index is not None, int(op.ignore_index or 0)
    cfg = launch_config()
    lib = library_module()

    def run(x: DeviceValue, idx: DeviceValue, out: DeviceValue) -> None:
        no, nc, kd = _labels(op, x, idx)
        if out.size == 0:
            return
        if nc == 0:
            fill(out, 0)
            return
        launch(lib.xent_rows, grid_for(no * kd, cfg), cfg.block)(
            materialize(x).flat(), materialize(idx).flat(), out.flat(), no, nc, kd, has_ignore, ignore, x.dtype.type(0)
        )

    return _kernel(kernel, run, [lib.xent_rows])


@register(SoftmaxCrossEntropyGrad)
def _xent_grad(kernel: Kernel) -> CudaCompiledKernel:
    op = kernel.anchor.op
    has_ignore, ignore = op.ignore_index is not None, int(op.ignore_index or 0)
    cfg = launch_config()
    lib = library_module()

    def run(g: DeviceValue, idx: DeviceValue, x: DeviceValue, out: DeviceValue) -> None:
        no, nc, kd = _labels(op, x, idx)
        if out.size == 0:
            return
        if nc == 0 or idx.size == 0:
            fill(out, 0)
            return
        if g.size == 1:
            gflat, gstep = materialize(g).flat(), 0
        elif g.shape == idx.shape:
            gflat, gstep = materialize(g).flat(), 1
        else:  # partial broadcast: materialise it at the labels' shape
            full = DeviceValue(device_empty(idx.size, g.dtype), idx.shape, g.dtype)
            strided_copy(g, full, broadcast_strides(g, idx.shape))
            gflat, gstep = full.flat(), 1
        launch(lib.xent_grad_rows, grid_for(no * kd, cfg), cfg.block)(
            gflat,
            gstep,
            materialize(idx).flat(),
            materialize(x).flat(),
            out.flat(),
            no,
            nc,
            kd,
            has_ignore,
            ignore,
            x.dtype.type(0),
        )

    return _kernel(kernel, run, [lib.xent_grad_rows])


# ----------------------------------------------------------------------------------------------------
# Reductions as library ops: argmax, max/min and sums the fusion left as ops (integer sums)
# ----------------------------------------------------------------------------------------------------


@register(Argmax)
def _argmax(kernel: Kernel) -> CudaCompiledKernel:
    op = kernel.anchor.op
    cfg = launch_config()
    lib = library_module()

    def run(x: DeviceValue, out: DeviceValue) -> None:
        if x.size == 0:
            raise OpRuntimeError(f"argmax of an empty array (shape {x.shape})")
        if op.axis is None or x.ndim == 0:
            no, nr, kd = 1, x.size, 1
        else:
            no, nr, kd = _class_dims(x.shape, op.axis % x.ndim)
        launch(lib.argmax_rows, grid_for(no * kd, cfg), cfg.block)(materialize(x).flat(), out.flat(), no, nr, kd)

    return _kernel(kernel, run, [lib.argmax_rows])


@register(Sum, Unbroadcast, Max, Min)
def _reduce(kernel: Kernel) -> CudaCompiledKernel:
    node = kernel.anchor
    loop = Kernel("reduction", [node], list(node.inputs), [node], kernel.index)
    inner = build_reduction(loop, reduction_axes(node))  # None: an unbroadcast deciding its axes at run time

    def run(*values: DeviceValue) -> None:
        inner.run(materialize(values[0]), *values[1:])

    def warm(*values: DeviceValue) -> None:
        assert inner.warm is not None
        inner.warm(materialize(values[0]), *values[1:])

    return CudaCompiledKernel(
        kernel,
        run=run,
        serial=run,
        source=inner.source,
        dispatchers=inner.dispatchers,
        warm=warm,
        scratch=inner.scratch,
    )


# ----------------------------------------------------------------------------------------------------
# Convolution (1-d and 2-d, stride, padding, dilation, groups): the single-launch direct kernels of
# compiler/codegen/cuda/fused.py (forward with its epilogue, input gradient as a gather, weight gradient by a tree).
# ----------------------------------------------------------------------------------------------------


def _conv_geom(op: Any) -> tuple[int, int, int, int, int, int]:
    """``(sh, sw, ph, pw, dh, dw)``; a 1-d op gets a unit height (stride 1, no padding)."""
    if len(op.stride) == 1:
        return (1, op.stride[0], 0, op.padding[0][0], 1, op.dilation[0])
    (sh, sw), (dh, dw) = op.stride, op.dilation
    return (sh, sw, op.padding[0][0], op.padding[1][0], dh, dw)


@register(Conv)
def _conv(kernel: Kernel) -> CudaCompiledKernel:
    from compiler.codegen.cuda.fused import conv_forward_kernel

    return conv_forward_kernel(kernel)


@register(ConvGradInput)
def _conv_grad_input(kernel: Kernel) -> CudaCompiledKernel:
    from compiler.codegen.cuda.fused import conv_grad_input_kernel

    return conv_grad_input_kernel(kernel)


@register(ConvGradWeight)
def _conv_grad_weight(kernel: Kernel) -> CudaCompiledKernel:
    from compiler.codegen.cuda.fused import conv_grad_weight_kernel

    return conv_grad_weight_kernel(kernel)


# ----------------------------------------------------------------------------------------------------
# Copies and run-time sizes
# ----------------------------------------------------------------------------------------------------


@register(Transpose)
def _transpose(kernel: Kernel) -> CudaCompiledKernel:
    perm = tuple(kernel.anchor.op.perm)
    lib = library_module()

    def run(x: DeviceValue, out: DeviceValue) -> None:
        strided_copy(x.transposed(perm), out)

    return _kernel(kernel, run, [lib.strided_copy])


@register(BroadcastTo, BroadcastLike)
def _broadcast(kernel: Kernel) -> CudaCompiledKernel:
    lib = library_module()

    def run(x: DeviceValue, *rest: DeviceValue) -> None:
        out = rest[-1]
        strided_copy(x, out, broadcast_strides(x, out.shape))

    return _kernel(kernel, run, [lib.strided_copy])


@register(LogSumExp)
def _logsumexp(kernel: Kernel) -> CudaCompiledKernel:
    axes = tuple(sorted(kernel.anchor.op.axes))
    cfg = launch_config()
    lib = library_module()
    ck = CudaCompiledKernel(kernel, run=lambda *a: None, dispatchers=[lib.lse_rows, lib.strided_copy])

    def run(x: DeviceValue, out: DeviceValue) -> None:
        if x.size == 0:  # log(sum of nothing) = -inf (or an empty output)
            fill(out, -math.inf)
            return
        kept = [a for a in range(x.ndim) if a not in axes]
        perm = tuple(kept) + axes
        nr = math.prod(x.shape[a] for a in axes)
        src = x
        if perm != tuple(range(x.ndim)) or not x.contiguous:  # reduced axes last, contiguous
            key = ("perm", x.size, x.dtype.str)
            if key not in ck.scratch:
                ck.scratch[key] = device_empty(x.size, x.dtype)
            view = x.transposed(perm)
            src = DeviceValue(ck.scratch[key], view.shape, x.dtype)
            strided_copy(view, src)
        nk = x.size // nr
        launch(lib.lse_rows, grid_for(nk, cfg), cfg.block)(src.flat(), out.flat(), nk, nr, x.dtype.type(0))

    ck.run = ck.serial = run
    return ck


def _class_op(kernel: Kernel, name: str) -> CudaCompiledKernel:
    op = kernel.anchor.op
    has_ignore, ignore = op.ignore_index is not None, int(op.ignore_index or 0)
    cfg = launch_config()
    lib = library_module()
    fn = getattr(lib, name)

    def run(a: DeviceValue, idx: DeviceValue, *rest: DeviceValue) -> None:
        out = rest[-1]
        x_shape = out.shape if name == "take_class_grad_rows" else a.shape
        _check_idx_shape(
            x_shape, idx.shape, op.axis, "take_class_grad" if name == "take_class_grad_rows" else "take_class"
        )
        no, nc, kd = _class_dims(x_shape, op.axis)
        labels = host_array(idx)
        if labels.size and (labels.min() < 0 or labels.max() >= nc):
            _check_range(labels, nc, "label", "classes", op.ignore_index)
        if out.size == 0:
            return
        if nc == 0 or idx.size == 0:
            fill(out, 0)
            return
        src = materialize(a) if name == "take_class_rows" else materialize(_broadcast_to(a, idx.shape))
        launch(fn, grid_for(no * kd, cfg), cfg.block)(
            src.flat(), materialize(idx).flat(), out.flat(), no, nc, kd, has_ignore, ignore
        )

    return _kernel(kernel, run, [fn])


def _broadcast_to(v: DeviceValue, shape: tuple[int, ...]) -> DeviceValue:
    """``v`` broadcast to ``shape`` (a contiguous copy when it differs)."""
    if v.shape == tuple(shape):
        return v
    out = DeviceValue(device_empty(math.prod(shape), v.dtype), tuple(shape), v.dtype)
    strided_copy(v, out, broadcast_strides(v, tuple(shape)))
    return out


@register(TakeAlongClass)
def _take_class(kernel: Kernel) -> CudaCompiledKernel:
    return _class_op(kernel, "take_class_rows")


@register(TakeAlongClassGrad)
def _take_class_grad(kernel: Kernel) -> CudaCompiledKernel:
    return _class_op(kernel, "take_class_grad_rows")


@register(BatchNormEval)
def _batch_norm_eval(kernel: Kernel) -> CudaCompiledKernel:
    eps = kernel.anchor.op.eps
    cfg = launch_config()
    lib = library_module()

    def run(x: DeviceValue, *rest: DeviceValue) -> None:
        *stats, out = rest
        if out.size == 0:
            return
        c = x.shape[1]
        launch(lib.batch_norm_eval, grid_for(out.size, cfg), cfg.block)(
            materialize(x).flat(),
            *(materialize(v).flat() for v in stats),
            out.flat(),
            out.size,
            c,
            out.size // max(x.shape[0] * c, 1),
            x.dtype.type(eps),
            x.dtype.type(1),
        )

    return _kernel(kernel, run, [lib.batch_norm_eval])


@register(Embedding)
def _embedding(kernel: Kernel) -> CudaCompiledKernel:
    op = kernel.anchor.op
    has_ignore, ignore = op.ignore_index is not None, int(op.ignore_index or 0)
    cfg = launch_config()
    lib = library_module()

    def run(idx: DeviceValue, weight: DeviceValue, out: DeviceValue) -> None:
        labels = host_array(idx)
        if labels.size and (labels.min() < 0 or labels.max() >= weight.shape[0]):
            _check_range(labels, weight.shape[0], "index", "embedding rows", op.ignore_index)
        if out.size == 0:
            return
        d = weight.shape[1]
        launch(lib.embedding_rows, grid_for(out.size, cfg), cfg.block)(
            materialize(idx).flat(), materialize(weight).flat(), out.flat(), idx.size, d, has_ignore, ignore
        )

    return _kernel(kernel, run, [lib.embedding_rows])


@register(EmbeddingGrad)
def _embedding_grad(kernel: Kernel) -> CudaCompiledKernel:
    from compiler.codegen.cpu.library_misc import group_rows

    op = kernel.anchor.op
    has_ignore, ignore = op.ignore_index is not None, int(op.ignore_index or 0)
    padding = -1 if op.padding_idx is None else op.padding_idx
    cfg = launch_config()
    lib = library_module()

    def run(g: DeviceValue, idx: DeviceValue, ref: DeviceValue, out: DeviceValue) -> None:
        nrows = ref.shape[0]
        labels = host_array(idx)
        if labels.size and (labels.min() < 0 or labels.max() >= nrows):
            _check_range(labels, nrows, "index", "embedding rows", op.ignore_index)
        if out.size == 0:
            return
        # the rows' positions are grouped on the host (the labels are there already), a stable counting sort
        order, starts = group_rows(np.ascontiguousarray(labels).reshape(-1), nrows, has_ignore, ignore)
        d = out.size // max(nrows, 1)
        launch(lib.embedding_grad_rows, grid_for(out.size, cfg), cfg.block)(
            materialize(g).flat(), upload(order), upload(starts), out.flat(), nrows, d, padding, out.dtype.type(0)
        )

    return _kernel(kernel, run, [lib.embedding_grad_rows])


@register(Slice)
def _slice(kernel: Kernel) -> CudaCompiledKernel:
    index = tuple(kernel.anchor.op.index)

    def run(x: DeviceValue, out: DeviceValue) -> None:
        strided_copy(sliced(x, index), out)

    return _kernel(kernel, run, [library_module().strided_copy])


@register(SliceGrad)
def _slice_grad(kernel: Kernel) -> CudaCompiledKernel:
    index = tuple(kernel.anchor.op.index)

    def run(g: DeviceValue, ref: DeviceValue, out: DeviceValue) -> None:
        fill(out, 0)
        strided_copy(g, sliced(out, index))

    return _kernel(kernel, run, [library_module().strided_copy, library_module().fill])


@register(DimSize, BatchCount)
def _dim_size(kernel: Kernel) -> CudaCompiledKernel:
    op = kernel.anchor.op
    lib = library_module()

    def run(x: DeviceValue, out: DeviceValue) -> None:
        dummy = np.broadcast_to(np.zeros((), np.int8), x.shape)
        fill(out, op.perform(dummy).item())  # BatchCount.perform raises for a single value per channel

    return _kernel(kernel, run, [lib.fill])


def _load_more() -> None:
    from compiler.codegen.cuda import library_more  # noqa: F401 - registration side effects (pooling, dropout...)


_load_more()
