"""Single-launch cuda kernels for matmul/conv epilogues and the three convolutions.

- **GEMM + epilogue**: the tiled shared-memory GEMM of :mod:`compiler.codegen.cuda.library` whose final store is
  replaced by the epilogue's elementwise group (bias, activation, the ReLU mask, an optimiser update of a weight
  gradient ...), computed from the accumulator in registers: the anchor's value is never stored unless something
  else reads it. One launch instead of the anchor's launch followed by the epilogue loop.
- **Direct convolutions** (1-d and 2-d; stride, padding, dilation, groups), one launch each:
  ``conv`` — one thread per output element summing its window (the epilogue, when there is one, is applied to
  the sum in registers, as for the GEMM); ``conv_dx`` — one thread per input element gathering every output
  element whose window reads it (no atomics); ``conv_dw`` — one block per weight element, its threads striding
  over the batch and output pixels into float64 partials combined by a shared-memory tree (deterministic: the
  order depends only on the shapes). No im2col scratch, no transposes.

Sizes are arguments (a new batch size never recompiles); the shared-memory tiles and the tree's block size are
baked into the source, per dtype.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.codegen.cuda.device import (
    CudaCompiledKernel,
    DeviceValue,
    grid_for,
    launch,
    launch_config,
    load_cuda_module,
)
from compiler.codegen.cuda.elementwise import loop_body, module_header
from compiler.kernels import Kernel, split_epilogue
from symdl.errors import OpRuntimeError
from symdl.graph import Tensor
from symdl.ops.conv import Conv
from symdl.ops.reduce import MatMul

_I = "    "
_NUMBA_DTYPES = {"float32": "numba.float32", "float64": "numba.float64", "int32": "numba.int32", "int64": "numba.int64"}


def single_launch_epilogue(kernel: Kernel) -> bool:
    """True when :func:`build_fused_epilogue` runs ``kernel`` (an ``"epilogue"``) as one launch: a matmul or 1-d/2-d
    conv anchor followed by an elementwise group (no fused sum)."""
    from compiler.fusion import REDUCTION_OPS

    if kernel.kind != "epilogue":
        return False
    op = kernel.anchor.op
    if isinstance(op, Conv):
        if len(op.stride) not in (1, 2):
            return False
    elif not isinstance(op, MatMul):
        return False
    if np.dtype(kernel.anchor.dtype).name not in _NUMBA_DTYPES:
        return False
    loop = split_epilogue(kernel, REDUCTION_OPS).loop
    return loop.kind == "elementwise" or column_sum(kernel.anchor, loop)


def column_sum(anchor: Tensor, loop: Kernel) -> bool:
    """True when ``loop`` (the loop kernel of a matmul epilogue) is a ``"reduction"`` whose fused sum adds a float
    member over the rows of a 2-d matmul (a bias gradient: ``unbroadcast(where(mask, g @ w.T, 0), b)``): the GEMM
    then runs with one block column per column tile, walking every row tile, and sums the member's column in
    registers, then over the block's rows in shared memory (one launch, deterministic: no atomics)."""
    from compiler.codegen.cuda.reduction import reduction_axes

    if loop.kind != "reduction" or not isinstance(anchor.op, MatMul) or anchor.ndim != 2:
        return False
    if any(t.ndim != 2 for t in anchor.inputs):
        return False
    r = loop.nodes[-1]
    summed = r.inputs[0]
    return (
        summed.ndim == 2
        and any(n is summed for n in loop.nodes[:-1])
        and summed.dtype.kind == "f"
        and reduction_axes(r) == (0,)
    )


def _numba_dtype(dtype: np.dtype) -> str:
    name = _NUMBA_DTYPES.get(np.dtype(dtype).name)
    if name is None:
        raise OpRuntimeError(f"dtype {np.dtype(dtype)} is not supported by the cuda GEMM/conv kernels")
    return name


def _epilogue_code(
    loop: Kernel | None, nin: int, nout: int, pre: str = ""
) -> tuple[list[str], list[str], list[str], list[str], list[str]]:
    """(epilogue input params, output params, loop dim params, invariant lines, lines at the store) over the
    accumulator ``acc`` stored at flat index ``li``; without a loop kernel: ``out0[li] = acc``. Every name starts
    with ``pre`` (the problems of a grouped GEMM)."""
    if loop is None:
        return [], [f"{pre}out0"], [], [], [f"{pre}out0[li] = acc"]
    ins = ["acc_unused"] + [f"{pre}ein{j}" for j in range(1, nin)]
    outs = [f"{pre}eout{j}" for j in range(nout)]
    e = f"{pre}e_"
    if loop.kind == "reduction":  # a column sum (see column_sum): the members, then the summed one accumulated
        members = Kernel("elementwise", loop.nodes[:-1], loop.inputs, loop.outputs[:-1])
        rank = len(members.nodes[-1].shape)
        outer, inner = loop_body(members, ins, outs[:-1], "li", prefix=e, values={loop.inputs[0].id: "acc"})
        summed = next(k for k, n in enumerate(members.nodes) if n is loop.nodes[-1].inputs[0])
        inner = inner + [f"csum += F64({e}v{summed})"]
        return ins[1:], outs, [f"{e}n{a}" for a in range(rank)], outer, inner
    rank = len(loop.nodes[-1].shape)
    outer, inner = loop_body(loop, ins, outs, "li", prefix=e, values={loop.inputs[0].id: "acc"})
    return ins[1:], outs, [f"{e}n{a}" for a in range(rank)], outer, inner


# ----------------------------------------------------------------------------------------------------
# GEMM with the epilogue in its store
# ----------------------------------------------------------------------------------------------------


def gemm_source(loop: Kernel | None, nin: int, nout: int, dtype: np.dtype, tile: int) -> str:
    ein, outs, dims, outer, inner = _epilogue_code(loop, nin, nout)
    params = ["a", "b", *ein, *outs, "m", "n", "k", "sam", "sak", "sbk", "sbn", "aoff", "boff", "nbatch", "zero", *dims]
    t, dt = str(tile), _numba_dtype(dtype)
    colsum = loop is not None and loop.kind == "reduction"
    lines = module_header(f"symdl cuda GEMM {np.dtype(dtype)} tile {tile} with a fused epilogue.")
    lines += ["@cuda.jit", f"def kernel({', '.join(params)}):"]
    body = [
        f"ta = cuda.shared.array(({t}, {t}), {dt})",
        f"tb = cuda.shared.array(({t}, {t}), {dt})",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        f"mb = (m + {t} - 1) // {t}",
        "csum = F64(0.0)",
        *outer,
        "for z in range(cuda.blockIdx.z, nbatch, cuda.gridDim.z):",
        _I + "ao = aoff[z]",
        _I + "bo = boff[z]",
        _I + "for by in range(cuda.blockIdx.y, mb, cuda.gridDim.y):",
        _I * 2 + f"row = by * {t} + ty",
        _I * 2 + f"col = cuda.blockIdx.x * {t} + tx",
        _I * 2 + "acc = zero",
        _I * 2 + f"for k0 in range(0, k, {t}):",
        _I * 3 + "ka = k0 + tx",
        _I * 3 + "if row < m and ka < k:",
        _I * 4 + "ta[ty, tx] = a[ao + row * sam + ka * sak]",
        _I * 3 + "else:",
        _I * 4 + "ta[ty, tx] = zero",
        _I * 3 + "kb = k0 + ty",
        _I * 3 + "if kb < k and col < n:",
        _I * 4 + "tb[ty, tx] = b[bo + kb * sbk + col * sbn]",
        _I * 3 + "else:",
        _I * 4 + "tb[ty, tx] = zero",
        _I * 3 + "cuda.syncthreads()",
        _I * 3 + f"for p in range({t}):",
        _I * 4 + "acc += ta[ty, p] * tb[p, tx]",
        _I * 3 + "cuda.syncthreads()",
        _I * 2 + "if row < m and col < n:",
        _I * 3 + "li = (z * m + row) * n + col",
        *[_I * 3 + s for s in inner],
    ]
    if colsum:  # every block walked all row tiles of its columns (gridDim.y == 1): fold the rows in order
        body += [
            f"cs = cuda.shared.array(({t}, {t}), numba.float64)",
            "cs[ty, tx] = csum",
            "cuda.syncthreads()",
            f"col = cuda.blockIdx.x * {t} + tx",
            "if ty == 0 and col < n:",
            _I + "s = F64(0.0)",
            _I + f"for p in range({t}):",
            _I * 2 + "s += cs[p, tx]",
            _I + f"{outs[-1]}[col] = s",
        ]
    return "\n".join(lines + [_I + s for s in body]) + "\n"


def _gemm_launcher(loop: Kernel | None, nin: int, nout: int, dtype: np.dtype) -> tuple[Any, Any]:
    from compiler.codegen.cuda.device import upload
    from compiler.codegen.cuda.library import _batch_offsets

    cfg = launch_config()
    mod = load_cuda_module(gemm_source(loop, nin, nout, dtype, cfg.tile), "gemm_epilogue")
    tables: dict[tuple, tuple[Any, Any]] = {}

    colsum = loop is not None and loop.kind == "reduction"

    def run(a: DeviceValue, b: DeviceValue, ein: Sequence[DeviceValue], outs: Sequence[DeviceValue]) -> None:
        out0 = outs[0]
        m, k = a.shape[-2:]
        n = b.shape[-1]
        batch = a.shape[:-2] if colsum else out0.shape[:-2]
        nbatch = int(np.prod(batch)) if batch else 1
        if (m * n if colsum else out0.size) == 0:
            if colsum and outs[-1].size:
                from compiler.codegen.cuda.library import fill

                fill(outs[-1], 0)  # a sum over no rows
            return
        key = (a.shape, a.strides, a.offset, b.shape, b.strides, b.offset, batch)
        offs = tables.get(key)
        if offs is None:
            offs = tables[key] = (upload(_batch_offsets(a, batch)), upload(_batch_offsets(b, batch)))
        t = cfg.tile
        rows = 1 if colsum else max(1, min(-(-m // t), 65535))  # a column sum: each block walks every row tile
        grid = (-(-n // t), rows, max(1, min(nbatch, 65535)))
        dims = ([m, n] if colsum else list(out0.shape)) if loop is not None else []
        launch(mod.kernel, grid, (t, t))(
            a.data,
            b.data,
            *(v.flat() for v in ein),
            *(v.flat() for v in outs),
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
            out0.dtype.type(0),
            *dims,
        )

    return run, mod.kernel


# ----------------------------------------------------------------------------------------------------
# Grouped GEMMs: independent 2-d matmul epilogues in one launch
# ----------------------------------------------------------------------------------------------------


def groupable_gemm(kernel: Kernel) -> bool:
    """A single-launch 2-d matmul epilogue with an elementwise group (a weight gradient and its optimiser update):
    several of them, independent, run as one launch (:func:`build_gemm_group`)."""
    from compiler.fusion import REDUCTION_OPS

    if not single_launch_epilogue(kernel) or not isinstance(kernel.anchor.op, MatMul):
        return False
    a = kernel.anchor
    if a.ndim != 2 or any(t.ndim != 2 for t in a.inputs):
        return False
    return split_epilogue(kernel, REDUCTION_OPS).loop.kind == "elementwise"


def gemm_group_source(loops: Sequence[Kernel], dtype: np.dtype, tile: int) -> str:
    """One kernel running the GEMMs (with their epilogues) of ``loops`` (the epilogues' loop kernels): problem ``j``
    owns blocks ``[g{j}_lo, g{j}_hi)``, one per output tile, with ``tile x tile`` threads."""
    t, dt = str(tile), _numba_dtype(dtype)
    params: list[str] = []
    outer_all: list[str] = []
    branches: list[str] = []
    for j, loop in enumerate(loops):
        g = f"g{j}_"
        ein, outs, dims, outer, inner = _epilogue_code(loop, len(loop.inputs), len(loop.outputs), g)
        params += [f"{g}a", f"{g}b", *ein, *outs]
        params += [f"{g}{x}" for x in ("m", "n", "k", "sam", "sak", "sbk", "sbn", "aoff", "boff", "lo", "hi")] + dims
        outer_all += outer
        branches += [
            ("if" if j == 0 else "elif") + f" bid < {g}hi:",
            _I + f"tile = bid - {g}lo",
            _I + f"nbx = ({g}n + {t} - 1) // {t}",
            _I + f"row = (tile // nbx) * {t} + ty",
            _I + f"col = (tile % nbx) * {t} + tx",
            _I + "acc = zero",
            _I + f"for k0 in range(0, {g}k, {t}):",
            _I * 2 + "ka = k0 + tx",
            _I * 2 + f"if row < {g}m and ka < {g}k:",
            _I * 3 + f"ta[ty, tx] = {g}a[{g}aoff + row * {g}sam + ka * {g}sak]",
            _I * 2 + "else:",
            _I * 3 + "ta[ty, tx] = zero",
            _I * 2 + "kb = k0 + ty",
            _I * 2 + f"if kb < {g}k and col < {g}n:",
            _I * 3 + f"tb[ty, tx] = {g}b[{g}boff + kb * {g}sbk + col * {g}sbn]",
            _I * 2 + "else:",
            _I * 3 + "tb[ty, tx] = zero",
            _I * 2 + "cuda.syncthreads()",
            _I * 2 + f"for p in range({t}):",
            _I * 3 + "acc += ta[ty, p] * tb[p, tx]",
            _I * 2 + "cuda.syncthreads()",
            _I + f"if row < {g}m and col < {g}n:",
            _I * 2 + f"li = row * {g}n + col",
            *[_I * 2 + s for s in inner],
        ]
    lines = module_header(f"symdl cuda grouped GEMM {np.dtype(dtype)} tile {tile}: {len(loops)} problems.")
    lines += ["@cuda.jit", f"def kernel({', '.join(params + ['zero'])}):"]
    body = [
        f"ta = cuda.shared.array(({t}, {t}), {dt})",
        f"tb = cuda.shared.array(({t}, {t}), {dt})",
        "tx = cuda.threadIdx.x",
        "ty = cuda.threadIdx.y",
        "bid = cuda.blockIdx.x",
        *outer_all,
        *branches,
    ]
    return "\n".join(lines + [_I + s for s in body]) + "\n"


def build_gemm_group(kernel: Any) -> CudaCompiledKernel:
    """One launch for a :class:`compiler.horizontal.HorizontalKernel` whose parts are :func:`groupable_gemm`
    epilogues; ``run(*inputs, *outputs)``. Outputs in the kernel's ``in_place`` are written over their parameter."""
    from compiler.codegen.cuda.device import retarget
    from compiler.fusion import REDUCTION_OPS

    cfg = launch_config()
    splits = [split_epilogue(p, REDUCTION_OPS) for p in kernel.parts]
    dtype = kernel.parts[0].anchor.dtype
    source = gemm_group_source([sp.loop for sp in splits], dtype, cfg.tile)
    mod = load_cuda_module(source, "gemm_group")
    nin = len(kernel.inputs)
    position = {t.id: j for j, t in enumerate(kernel.inputs)}
    out_pos = {t.id: j for j, t in enumerate(kernel.outputs)}
    over = {m: position[kernel.in_place[t.id]] for m, t in enumerate(kernel.outputs) if t.id in kernel.in_place}
    plans = []
    for part, sp in zip(kernel.parts, splits):
        a_in = [position[t.id] for t in sp.anchor.inputs]
        e_in = [position[t.id] for t in sp.loop.inputs[1:]]
        outs = [out_pos[t.id] for t in part.outputs]
        plans.append((a_in, e_in, outs))
    original: dict[int, Any] = {}
    t = cfg.tile

    def go(values: tuple[DeviceValue, ...], writes_parameters: bool) -> None:
        outs = retarget(list(values[nin:]), values, over, original, writes_parameters)
        args: list[Any] = []
        hi = 0
        for a_in, e_in, o in plans:
            a, b = values[a_in[0]], values[a_in[1]]
            m, k = a.shape
            n = b.shape[1]
            lo, hi = hi, hi + (-(-m // t)) * (-(-n // t))
            args += [a.data, b.data, *(values[q].flat() for q in e_in), *(outs[q].flat() for q in o)]
            args += [m, n, k, a.strides[0], a.strides[1], b.strides[0], b.strides[1], a.offset, b.offset, lo, hi]
            args += [m, n]
        if hi == 0:
            return
        launch(mod.kernel, hi, (t, t))(*args, np.dtype(dtype).type(0))

    def run(*values: DeviceValue) -> None:
        go(values, True)

    def warm(*values: DeviceValue) -> None:
        go(values, False)

    return CudaCompiledKernel(kernel, run=run, serial=run, source=source, dispatchers=[mod.kernel], warm=warm)


# ----------------------------------------------------------------------------------------------------
# Direct convolutions
# ----------------------------------------------------------------------------------------------------

_GEOM = "n, c, h, wd, o, kh, kw, oh, ow, sh, sw, ph, pw, dh, dw, groups"


def conv_source(loop: Kernel | None, nin: int, nout: int) -> str:
    ein, outs, dims, outer, inner = _epilogue_code(loop, nin, nout)
    params = ["x", "w", *ein, *outs, "total", _GEOM, "zero", *dims]
    lines = module_header("symdl cuda direct convolution with a fused epilogue.")
    lines += ["@cuda.jit", f"def kernel({', '.join(params)}):"]
    body = [
        "cg = c // groups",
        "og = o // groups",
        *outer,
        "for li in range(cuda.grid(1), total, cuda.gridsize(1)):",
        _I + "ox = li % ow",
        _I + "q = li // ow",
        _I + "oy = q % oh",
        _I + "q = q // oh",
        _I + "oc = q % o",
        _I + "i = q // o",
        _I + "g = oc // og",
        _I + "acc = zero",
        _I + "for ci in range(cg):",
        _I * 2 + "xb = (i * c + g * cg + ci) * h",
        _I * 2 + "wb = (oc * cg + ci) * kh",
        _I * 2 + "for a in range(kh):",
        _I * 3 + "iy = oy * sh - ph + a * dh",
        _I * 3 + "if iy < 0 or iy >= h:",
        _I * 4 + "continue",
        _I * 3 + "for b in range(kw):",
        _I * 4 + "ix = ox * sw - pw + b * dw",
        _I * 4 + "if ix >= 0 and ix < wd:",
        _I * 5 + "acc += x[(xb + iy) * wd + ix] * w[(wb + a) * kw + b]",
        *[_I + s for s in inner],
    ]
    return "\n".join(lines + [_I + s for s in body]) + "\n"


_CONV_GRADS = '''
@cuda.jit
def conv_dx(gout, w, dx, total, {geom}, zero):
    """dx[i, cin, iy, ix] = the sum over the output elements whose window reads it (a gather, no atomics)."""
    cg = c // groups
    og = o // groups
    for t in range(cuda.grid(1), total, cuda.gridsize(1)):
        ix = t % wd
        q = t // wd
        iy = q % h
        q = q // h
        cin = q % c
        i = q // c
        g = cin // cg
        ci = cin - g * cg
        acc = zero
        for oo in range(og):
            oc = g * og + oo
            for a in range(kh):
                ny = iy + ph - a * dh
                if ny < 0 or ny % sh != 0:
                    continue
                oy = ny // sh
                if oy >= oh:
                    continue
                for b in range(kw):
                    nx = ix + pw - b * dw
                    if nx < 0 or nx % sw != 0:
                        continue
                    ox = nx // sw
                    if ox >= ow:
                        continue
                    acc += gout[((i * o + oc) * oh + oy) * ow + ox] * w[((oc * cg + ci) * kh + a) * kw + b]
        dx[t] = acc


@cuda.jit
def conv_dw(x, gout, out, nw, {geom}):
    """out[oc, ci, a, b] = the sum over (i, oy, ox) of x[...] * gout[i, oc, oy, ox]: one block per weight element,
    float64 partials combined by a shared-memory tree."""
    buf = cuda.shared.array({block}, numba.float64)
    tid = cuda.threadIdx.x
    cg = c // groups
    og = o // groups
    npix = n * oh * ow
    for widx in range(cuda.blockIdx.x, nw, cuda.gridDim.x):
        b = widx % kw
        q = widx // kw
        a = q % kh
        q = q // kh
        ci = q % cg
        oc = q // cg
        cin = (oc // og) * cg + ci
        s = 0.0
        for p in range(tid, npix, {block}):
            ox = p % ow
            q2 = p // ow
            oy = q2 % oh
            i = q2 // oh
            iy = oy * sh - ph + a * dh
            ix = ox * sw - pw + b * dw
            if iy >= 0 and iy < h and ix >= 0 and ix < wd:
                s += F64(x[((i * c + cin) * h + iy) * wd + ix]) * F64(gout[((i * o + oc) * oh + oy) * ow + ox])
        buf[tid] = s
        cuda.syncthreads()
        step = {half}
        while step > 0:
            if tid < step:
                buf[tid] += buf[tid + step]
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            out[widx] = buf[0]
        cuda.syncthreads()
'''


def conv_grads_module() -> Any:
    """The module of ``conv_dx`` and ``conv_dw`` (the tree's block size is the launch configuration's)."""
    block = launch_config().reduce_block
    src = _CONV_GRADS.replace("{geom}", _GEOM).replace("{block}", str(block)).replace("{half}", str(block // 2))
    return load_cuda_module("\n".join(module_header("symdl cuda direct conv gradients.")) + src, "conv_grads")


def _geom(op: Any, x_shape: tuple[int, ...], w_shape: tuple[int, ...], out_spatial: tuple[int, int]) -> list[int]:
    from compiler.codegen.cuda.library import _conv_geom

    if len(op.stride) not in (1, 2):
        raise OpRuntimeError(f"cuda {op.name}: only 1-d and 2-d convolutions are supported")
    sh, sw, ph, pw, dh, dw = _conv_geom(op)
    if len(x_shape) == 3:
        n, c, wd = x_shape
        h, kh, kw = 1, 1, w_shape[2]
    else:
        n, c, h, wd = x_shape
        kh, kw = w_shape[2], w_shape[3]
    return [n, c, h, wd, w_shape[0], kh, kw, *out_spatial, sh, sw, ph, pw, dh, dw, op.groups]


def _spatial(v: DeviceValue) -> tuple[int, int]:
    return (1, v.shape[2]) if v.ndim == 3 else (v.shape[2], v.shape[3])


def _conv_launcher(op: Any, loop: Kernel | None, nin: int, nout: int) -> tuple[Any, Any]:
    from compiler.codegen.cuda.library import materialize

    cfg = launch_config()
    mod = load_cuda_module(conv_source(loop, nin, nout), "conv_epilogue")

    def run(x: DeviceValue, w: DeviceValue, ein: Sequence[DeviceValue], outs: Sequence[DeviceValue]) -> None:
        out0 = outs[0]
        if out0.size == 0:
            return
        geom = _geom(op, x.shape, w.shape, _spatial(out0))
        dims = list(out0.shape) if loop is not None else []
        launch(mod.kernel, grid_for(out0.size, cfg), cfg.block)(
            materialize(x).flat(),
            materialize(w).flat(),
            *(v.flat() for v in ein),
            *(v.flat() for v in outs),
            out0.size,
            *geom,
            out0.dtype.type(0),
            *dims,
        )

    return run, mod.kernel


def conv_grad_input_kernel(kernel: Kernel) -> CudaCompiledKernel:
    """``run(g, w, ref, out)``: the input gradient of a conv in one launch."""
    from compiler.codegen.cuda.library import fill, materialize

    op = kernel.anchor.op
    cfg = launch_config()
    mod = conv_grads_module()

    def run(g: DeviceValue, w: DeviceValue, ref: DeviceValue, out: DeviceValue) -> None:
        if out.size == 0:
            return
        if g.size == 0:
            fill(out, 0)
            return
        geom = _geom(op, out.shape, w.shape, _spatial(g))
        launch(mod.conv_dx, grid_for(out.size, cfg), cfg.block)(
            materialize(g).flat(), materialize(w).flat(), out.flat(), out.size, *geom, out.dtype.type(0)
        )

    return CudaCompiledKernel(kernel, run=run, serial=run, dispatchers=[mod.conv_dx])


def conv_grad_weight_kernel(kernel: Kernel) -> CudaCompiledKernel:
    """``run(x, g, ref, out)``: the weight gradient of a conv in one launch (one block per weight element)."""
    from compiler.codegen.cuda.library import fill, materialize

    op = kernel.anchor.op
    cfg = launch_config()
    mod = conv_grads_module()

    def run(x: DeviceValue, g: DeviceValue, ref: DeviceValue, out: DeviceValue) -> None:
        if out.size == 0:
            return
        if g.size == 0:
            fill(out, 0)
            return
        geom = _geom(op, x.shape, out.shape, _spatial(g))
        blocks = max(1, min(out.size, cfg.max_blocks * 16))
        launch(mod.conv_dw, blocks, cfg.reduce_block)(
            materialize(x).flat(), materialize(g).flat(), out.flat(), out.size, *geom
        )

    return CudaCompiledKernel(kernel, run=run, serial=run, dispatchers=[mod.conv_dw])


def conv_forward_kernel(kernel: Kernel) -> CudaCompiledKernel:
    """``run(x, w, out)``: a conv without epilogue in one launch."""
    run3, disp = _conv_launcher(kernel.anchor.op, None, 0, 1)

    def run(x: DeviceValue, w: DeviceValue, out: DeviceValue) -> None:
        run3(x, w, (), (out,))

    return CudaCompiledKernel(kernel, run=run, serial=run, dispatchers=[disp])


# ----------------------------------------------------------------------------------------------------
# The epilogue kernels
# ----------------------------------------------------------------------------------------------------


def build_fused_epilogue(kernel: Kernel) -> CudaCompiledKernel:
    """One launch for an ``"epilogue"`` kernel that :func:`single_launch_epilogue` accepts; ``run(*inputs,
    *outputs)``. Outputs listed in the kernel's ``in_place`` (set by :mod:`compiler.horizontal`) are written over
    their parameter's storage."""
    from compiler.codegen.cuda.device import retarget
    from compiler.fusion import REDUCTION_OPS

    split = split_epilogue(kernel, REDUCTION_OPS)
    loop = split.loop
    nin, nout = len(loop.inputs), len(kernel.outputs)
    if isinstance(split.anchor.op, MatMul):
        inner, disp = _gemm_launcher(loop, nin, nout, split.anchor.dtype)
    else:
        inner, disp = _conv_launcher(split.anchor.op, loop, nin, nout)
    a_pos = split.anchor_args[:2]
    e_pos = split.loop_args[1:nin]
    n_kin = len(kernel.inputs)
    position = {t.id: j for j, t in enumerate(kernel.inputs)}
    in_place: dict[int, int] = getattr(kernel, "in_place", {})
    over = {m: position[in_place[t.id]] for m, t in enumerate(kernel.outputs) if t.id in in_place}
    original: dict[int, Any] = {}

    def go(values: tuple[DeviceValue, ...], writes_parameters: bool) -> None:
        outs = retarget(list(values[n_kin:]), values, over, original, writes_parameters)
        inner(values[a_pos[0]], values[a_pos[1]], [values[p] for p in e_pos], outs)

    def run(*values: DeviceValue) -> None:
        go(values, True)

    def warm(*values: DeviceValue) -> None:
        go(values, False)

    return CudaCompiledKernel(kernel, run=run, serial=run, dispatchers=[disp], warm=warm)
