"""Direct stride-1 convolution with register-blocked SIMD micro-kernels: the forward pass (with its epilogue), the
input gradient and the weight gradient.

The layout trick: each sample's input is copied once into a zero-padded workspace ``xp`` (C, Hp, Wp), stored
flat. For a stride-1 convolution, output pixel ``(y, x)`` then reads ``xp[c, y + a*dh, x + b*dw]``, and over the
*flat* index ``p = y*Wp + x`` every tap ``(c, a, b)`` is a constant offset: ``out_flat[p] = sum w[c,a,b] *
xp_flat[c*Hp*Wp + a*dh*Wp + b*dw + p]``. So an output tile of 8 channels x 2 vectors of consecutive flat
positions (32 float32 values) accumulates in 16 vector registers over all taps, each step one pair of vector
loads, 8 weight broadcasts and 16 fused multiply-adds (:func:`_tile_rows`): no im2col matrix, no BLAS call
(``python benchmarks/bench_conv_kernels.py``: 144-177 GFLOP/s on the 2-core AVX-512 benchmark machine for a
16->32 3x3 layer at batch 64, against 61-94 for im2col + OpenBLAS). Without AVX-512 the vectors are 256 bits
wide (:mod:`simd`). The positions ``x >= OW`` of each padded row are computed and dropped when the tile is
copied out (waste ``(kw-1)*dw / Wp``). The copy-out is where the epilogue runs, on the tile while it is in
L1: a per-channel bias, ReLU, the ReLU mask a training step keeps, or (inference) a 2x2 max pool, so the
full-size output need never be stored (:func:`compiler.codegen.cpu.conv_epilogue_spec` says which kernels qualify).

The input gradient of a stride-1 convolution is the same kernel: a convolution of the output gradient with
the weights flipped in space and transposed per group (input channels become output channels), padded by
``dh*(kh-1) - ph``; any padding works because the copy into ``xp`` clips rows and columns that fall outside.

Work splits across the runtime's threads by (sample, group, 8-channel block) units, so batch-1 inference is
parallel too.

The weight gradient ``dw[o, c, a, b] = sum_{n,p} g[n, o, p] * xp[n, c, off(a, b) + p]`` is a reduction over the
flat positions of all samples: each thread lays its samples' padded inputs out per channel, one after the
other (C, n*Hp*Wp), and their output gradients the same way with zeros at the dropped positions, so that one
long dot product per (output channel, tap) runs across samples; a 4-channel x 4-tap tile keeps 16 vector
accumulators over blocks of positions (:func:`_gw_tile`). Thread partials are summed in thread order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from compiler.codegen.cpu.parallel import get_num_threads, task_runners
from compiler.codegen.cpu.simd import (
    lanes_for,
    vadd,
    vbcast,
    vfma,
    vlanes,
    vload,
    vmax,
    vsplat,
    vstore,
    vstore_greater,
    vsum,
    vzero,
)

__all__ = [
    "TILE_CHANNELS",
    "simd_conv_dispatchers",
    "simd_conv_efficiency",
    "simd_conv_runners",
    "simd_grad_weight_runners",
]

#: output channels per register tile (the kernel below is written out for exactly this many)
TILE_CHANNELS = 8


@njit(cache=True, nogil=True, error_model="numpy")
def _tile_rows(xpf, xoff, offs, wtf, woff, sf, npx, srow):  # noqa: ANN001, ANN202
    """``sf[j*srow + p] = sum_k wtf[woff + k*8 + j] * xpf[xoff + offs[k] + p]`` for the 8 rows ``j`` and ``p < npx``
    (a multiple of two vectors), over the taps ``k``: one flat loop over the offset table (``c*plane + a*dh*wp +
    b*dw``; nested channel/row/column loops measured the same speed, and the table serves any dilation)."""
    lanes = vlanes(xpf)
    step = 2 * lanes
    for p0 in range(0, npx, step):
        a00 = vzero(xpf)
        a01 = vzero(xpf)
        a10 = vzero(xpf)
        a11 = vzero(xpf)
        a20 = vzero(xpf)
        a21 = vzero(xpf)
        a30 = vzero(xpf)
        a31 = vzero(xpf)
        a40 = vzero(xpf)
        a41 = vzero(xpf)
        a50 = vzero(xpf)
        a51 = vzero(xpf)
        a60 = vzero(xpf)
        a61 = vzero(xpf)
        a70 = vzero(xpf)
        a71 = vzero(xpf)
        wi = woff
        xi = xoff + p0
        for k in range(offs.shape[0]):
            v0 = vload(xpf, xi + offs[k])
            v1 = vload(xpf, xi + offs[k] + lanes)
            w = vbcast(wtf, wi)
            a00 = vfma(w, v0, a00)
            a01 = vfma(w, v1, a01)
            w = vbcast(wtf, wi + 1)
            a10 = vfma(w, v0, a10)
            a11 = vfma(w, v1, a11)
            w = vbcast(wtf, wi + 2)
            a20 = vfma(w, v0, a20)
            a21 = vfma(w, v1, a21)
            w = vbcast(wtf, wi + 3)
            a30 = vfma(w, v0, a30)
            a31 = vfma(w, v1, a31)
            w = vbcast(wtf, wi + 4)
            a40 = vfma(w, v0, a40)
            a41 = vfma(w, v1, a41)
            w = vbcast(wtf, wi + 5)
            a50 = vfma(w, v0, a50)
            a51 = vfma(w, v1, a51)
            w = vbcast(wtf, wi + 6)
            a60 = vfma(w, v0, a60)
            a61 = vfma(w, v1, a61)
            w = vbcast(wtf, wi + 7)
            a70 = vfma(w, v0, a70)
            a71 = vfma(w, v1, a71)
            wi += 8
        o = p0
        vstore(sf, o, a00)
        vstore(sf, o + lanes, a01)
        o += srow
        vstore(sf, o, a10)
        vstore(sf, o + lanes, a11)
        o += srow
        vstore(sf, o, a20)
        vstore(sf, o + lanes, a21)
        o += srow
        vstore(sf, o, a30)
        vstore(sf, o + lanes, a31)
        o += srow
        vstore(sf, o, a40)
        vstore(sf, o + lanes, a41)
        o += srow
        vstore(sf, o, a50)
        vstore(sf, o + lanes, a51)
        o += srow
        vstore(sf, o, a60)
        vstore(sf, o + lanes, a61)
        o += srow
        vstore(sf, o, a70)
        vstore(sf, o + lanes, a71)


@njit(cache=True)
def _pack_weights(w, groups, transposed, wt):  # noqa: ANN001, ANN202
    """``wt (G, NCB, cg, kh, kw, 8)``: the tile-ordered weights of the convolution the kernel runs, zero past the
    last channel. Forward: ``w (O, cg, kh, kw)`` as is. ``transposed`` (the input gradient): per group, input and
    output channels swapped and the window flipped, ``wt[g, cb, co, a, b, j] = w[g*og + co, cb*8 + j, kh-1-a,
    kw-1-b]``."""
    kh, kw = w.shape[2], w.shape[3]
    og, cg_w = w.shape[0] // groups, w.shape[1]
    ncb, cin = wt.shape[1], wt.shape[2]
    wt[:] = 0
    for g in range(groups):
        for cb in range(ncb):
            for j in range(8):
                r = cb * 8 + j
                if r >= (cg_w if transposed else og):
                    break
                for c in range(cin):
                    for a in range(kh):
                        for b in range(kw):
                            if transposed:
                                wt[g, cb, c, a, b, j] = w[g * og + c, r, kh - 1 - a, kw - 1 - b]
                            else:
                                wt[g, cb, c, a, b, j] = w[g * og + r, c, a, b]


# The copies index with unsigned integers: a signed index costs a wraparound test per element and keeps LLVM
# from vectorising the copy (see library_linalg's im2col).
_U = np.uint64


@njit(cache=True, nogil=True, error_model="numpy")
def _pad_sample(xf, src, c, h, w, xp, plane, wp, ph, pw, y0, y1, x0, x1):  # noqa: ANN001, ANN202
    """Rows ``y0 .. y1`` and columns ``x0 .. x1`` of the sample at flat offset ``src`` of ``xf`` (C, H, W) into
    the zero-bordered ``xp`` (C, Hp, Wp) at (ph, pw). Explicit vectors, as in :func:`_unpad_tile`."""
    lanes = vlanes(xp)
    n = x1 - x0
    for ci in range(c):
        for y in range(y0, y1):
            s = src + (ci * h + y) * w + x0
            d = ci * plane + (y + ph) * wp + pw + x0
            k = 0
            while k + lanes <= n:
                vstore(xp, d + k, vload(xf, s + k))
                k += lanes
            for r in range(k, n):
                xp[d + r] = xf[s + r]


@njit(cache=True, nogil=True, error_model="numpy")
def _unpad_tile(sf, npx, wp, of, dst, rows, oh, ow, bias, relu, mf):  # noqa: ANN001, ANN202
    """The first ``ow`` of every ``wp`` positions of tile rows ``0 .. rows`` into ``of`` (rows, OH, OW) at
    ``dst``, plus ``bias[j]`` and then ReLU when ``relu`` (the fused epilogue: applied while the tile is in cache
    rather than in another pass over the output); a non-empty ``mf`` (boolean, laid out like ``of``) receives
    ``value + bias > 0`` (the ReLU mask of a training step). Explicit vectors: LLVM vectorises a loop 64
    elements at a time here and ran rows of 32 entirely in its scalar remainder (6.5 us per 8x32x32 tile
    instead of 0.6)."""
    lanes = vlanes(sf)
    zero = vzero(sf)
    end = dst + rows * oh * ow
    masked = mf.shape[0] > 0
    for j in range(rows):
        b = vsplat(zero, bias[j])
        for y in range(oh):
            s = j * npx + y * wp
            d = dst + (j * oh + y) * ow
            # a row may end with a whole vector too where that stays inside this tile's region: what it writes
            # past the row's end falls on a later row of the region, which is written after it
            k = 0
            while k + lanes <= ow or (k < ow and d + k + lanes <= end):
                v = vadd(vload(sf, s + k), b)
                if masked:
                    vstore_greater(mf, d + k, v, zero)
                vstore(of, d + k, vmax(v, zero) if relu else v)
                k += lanes
            for r in range(k, ow):
                v1 = sf[s + r] + bias[j]
                if masked:
                    mf[d + r] = v1 > 0
                of[d + r] = _relu(v1) if relu else v1


@njit(cache=True, nogil=True)
def _unpad_pool_tile(sf, npx, wp, of, dst, rows, oh, ow, bias, relu):  # noqa: ANN001, ANN202
    """Like :func:`_unpad_tile` with a 2x2 / stride-2 max pool (floor mode) fused in: ``of`` (rows, OH//2, OW//2)
    at ``dst`` gets the maximum of each window of the tile (NaN wins, as in ``max_pool``), plus ``bias[j]``,
    then ReLU. The order does not matter: adding a constant and ReLU are monotone, so they commute with the
    maximum, rounding included."""
    ph2, pw2 = oh // 2, ow // 2
    for j in range(rows):
        b = bias[j]
        for y in range(ph2):
            s0 = _U(j * npx + 2 * y * wp)
            s1 = s0 + _U(wp)
            d = _U(dst + (j * ph2 + y) * pw2)
            for k in range(_U(pw2)):
                m = _nan_max(_nan_max(sf[s0 + 2 * k], sf[s0 + 2 * k + 1]), _nan_max(sf[s1 + 2 * k], sf[s1 + 2 * k + 1]))
                m = m + b
                of[d + k] = _relu(m) if relu else m


@njit(cache=True, nogil=True, inline="always")
def _nan_max(a, b):  # noqa: ANN001, ANN202
    """The larger of ``a`` and ``b``, NaN if either is (``vmax``'s rule, for scalars)."""
    return a if (a > b or a != a) else b


@njit(cache=True, nogil=True, inline="always")
def _relu(v):  # noqa: ANN001, ANN202
    """ReLU with the generated loops' rule (``compiler.codegen.scalar``): NaN stays NaN, -0.0 becomes 0."""
    return v if (v > 0 or v != v) else 0


@njit(cache=True, nogil=True)
def _simd_conv_range(x, wt, out, dims, bias, relu, mask, xws, sws, t0, t1):  # noqa: ANN001, ANN202
    """Chunks ``t0 .. t1`` of ``xws.shape[0]``: the chunk's share of the (sample, group, channel block) units of
    the stride-1 convolution ``x (N, C, H, W) -> (N, O, OH, OW)`` with packed weights ``wt`` and ``dims = (ph,
    pw, dh, dw, OH, OW, pool)`` (top/left padding, may be negative; dilation; output size), plus ``bias`` (O + 8
    values, zero past O) and then ReLU when ``relu``, written to ``out``, or when ``pool`` its 2x2 max pool (N,
    O, OH//2, OW//2); a non-empty boolean ``mask`` (like ``out``) receives ``conv + bias > 0``.
    ``xws[t]``/``sws[t]``: the chunk's padded input and tile workspaces (flat)."""
    ph, pw, dh, dw, oh, ow, pool = dims
    n, c, h, w = x.shape
    groups, ncb, cg, kh, kw = wt.shape[0], wt.shape[1], wt.shape[2], wt.shape[3], wt.shape[4]
    o_n = out.shape[1]
    og = o_n // groups
    hp, wp = oh + dh * (kh - 1), ow + dw * (kw - 1)
    plane = hp * wp
    step = 2 * vlanes(xws)
    npx = ((oh - 1) * wp + ow + step - 1) // step * step
    y0, y1 = max(0, -ph), min(h, hp - ph)
    x0, x1 = max(0, -pw), min(w, wp - pw)
    wtf = wt.reshape(-1)
    offs = np.empty(cg * kh * kw, np.int64)
    for c_ in range(cg):
        for a_ in range(kh):
            for b_ in range(kw):
                offs[(c_ * kh + a_) * kw + b_] = c_ * plane + a_ * dh * wp + b_ * dw
    xf = x.reshape(-1)
    of = out.reshape(-1)
    mf = mask.reshape(-1)
    units = n * groups * ncb
    nt = xws.shape[0]
    for t in range(t0, t1):
        xp = xws[t]
        sf = sws[t]
        xp[:] = 0
        last = -1
        for u in range((t * units) // nt, ((t + 1) * units) // nt):
            i = u // (groups * ncb)
            g = (u // ncb) % groups
            cb = u % ncb
            if i != last:
                _pad_sample(xf, i * c * h * w, c, h, w, xp, plane, wp, ph, pw, y0, y1, x0, x1)
                last = i
            co0 = g * og + cb * 8
            _tile_rows(xp, g * cg * plane, offs, wtf, (g * ncb + cb) * cg * kh * kw * 8, sf, npx, npx)
            if pool:
                dst = ((i * o_n) + co0) * (oh // 2) * (ow // 2)
                _unpad_pool_tile(sf, npx, wp, of, dst, min(8, og - cb * 8), oh, ow, bias[co0 : co0 + 8], relu)
            else:
                dst = ((i * o_n) + co0) * oh * ow
                _unpad_tile(sf, npx, wp, of, dst, min(8, og - cb * 8), oh, ow, bias[co0 : co0 + 8], relu, mf)


_simd_conv_par, _simd_conv_ser = task_runners(
    _simd_conv_range, lambda x, wt, out, dims, bias, relu, mask, xws, sws: xws.shape[0]
)


def simd_conv_efficiency(
    w_shape: tuple, groups: int, dilation: tuple[int, ...], width: int | None, kind: str = "forward"
) -> float:
    """The share of the tile lanes that compute wanted values, for a stride-1 convolution with weights
    ``w_shape``: ``kind`` ``"forward"``, ``"input"`` (its input gradient; ``width`` is then the input's width)
    or ``"weight"`` (its weight gradient; ``width`` the output's). The tile's channels per group (the output
    channels, the input channels for the input gradient) over their round-up to the tile (8; 4 for the weight
    gradient), times ``width / (width + dw*(kw-1))`` (the padded columns computed and dropped; taken as 1 when
    the width is not static). 0 when the channel counts are not static."""
    o, cg = w_shape[0], w_shape[1]
    if o is None or cg is None or groups < 1:
        return 0.0
    per_group = cg if kind == "input" else o // groups
    tile = 4 if kind == "weight" else TILE_CHANNELS
    if per_group < 1:
        return 0.0
    eff = per_group / (tile * -(-per_group // tile))
    if width is not None and width > 0:
        eff *= width / (width + dilation[-1] * (w_shape[-1] - 1))
    return eff


_NO_MASK = np.empty((0, 0, 0, 0), np.bool_)


def _conv_out_size(
    out: np.ndarray, x_shape: tuple, lo_pads: tuple[int, int], hi_pads: tuple[int, int] | None, reach: tuple[int, int]
) -> tuple[int, int]:
    """The convolution's output height and width: ``out``'s own, or, when ``out`` is its 2x2 max pool (``hi_pads``
    the bottom/right padding given), the size the pool reads (input + padding - ``reach``, the window's extent
    minus 1), checked against ``out``."""
    if hi_pads is None:
        return out.shape[2], out.shape[3]
    oh = x_shape[2] + lo_pads[0] + hi_pads[0] - reach[0]
    ow = x_shape[3] + lo_pads[1] + hi_pads[1] - reach[1]
    if out.shape[2:] != (oh // 2, ow // 2):
        raise ValueError(f"conv+max_pool: output {out.shape} is not the 2x2 pool of ({oh}, {ow})")
    return oh, ow


def _padded_bias(buffer: _Workspaces, bias: np.ndarray | None, o_n: int, dtype: np.dtype) -> np.ndarray:
    """``bias`` (any shape of ``o_n`` values; None: zeros) as ``o_n + 8`` values in the runner's workspace, zero
    past ``o_n``: every 8-channel tile reads 8 entries."""
    bvec = buffer("b", o_n + 8, dtype)[: o_n + 8]
    bvec[:] = 0
    if bias is not None:
        bvec[:o_n] = np.reshape(bias, -1)
    return bvec


def _bias_alone(out: np.ndarray, bvec: np.ndarray, relu: bool, mask: np.ndarray | None) -> None:
    """The result of a convolution with no input channels (or no samples): the bias alone, then the epilogue
    (a 2x2 max pool of a constant is the constant)."""
    o_n = out.shape[1]
    out[...] = bvec[:o_n].reshape(o_n, 1, 1)
    if mask is not None:
        np.greater(out, 0, out=mask)
    if relu:
        np.maximum(out, 0, out=out)


class _Workspaces:
    """Flat scratch arrays by name, kept by a runner across calls and regrown only when a call needs more (each
    runner is one kernel of one compiled function, and a function runs one call at a time)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def __call__(self, key: str, size: int, dtype: np.dtype) -> np.ndarray:
        buf = self.arrays.get(key)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = self.arrays[key] = np.empty(size, dtype)
        return buf


def simd_conv_runners(
    pads: tuple[int, int, int, int],
    groups: int,
    transposed: bool,
    nsp: int,
    min_parallel_macs: int,
    pool_hi_pads: tuple[int, int] | None = None,
) -> tuple[Callable[..., None], Callable[..., None], list[object]]:
    """``(run, serial, dispatchers)``: ``run(a, b, out, bias=None, relu=False, mask=None)`` computing the
    convolution (``a`` = x, ``b`` = w) or, when ``transposed``, its input gradient (``a`` = the output gradient,
    ``b`` = w, ``out`` = dx) on C-contiguous arrays (1-d ones as 2-d with a unit height), plus a
    per-output-channel ``bias`` (any shape of O values) and then ReLU when ``relu`` (a fused epilogue; a boolean
    ``mask`` like ``out`` receives ``conv + bias > 0``), split across the threads from
    ``min_parallel_macs`` multiply-adds (4x that for a batch smaller than the thread count); ``serial`` is the
    one-thread twin. ``pads`` = (ph, pw, dh, dw) of the forward op. With ``pool_hi_pads`` (the bottom/right
    padding), ``out`` receives the 2x2 max pool of the result instead (floor mode; forward only)."""
    ph, pw, dh, dw = pads
    buffer = _Workspaces()

    def make(parallel: bool) -> Callable[..., None]:
        def run(
            a: np.ndarray,
            b: np.ndarray,
            out: np.ndarray,
            bias: np.ndarray | None = None,
            relu: bool = False,
            mask: np.ndarray | None = None,
        ) -> None:
            a = np.ascontiguousarray(a)
            b = np.ascontiguousarray(b)
            if nsp == 1:
                a, b, out = a[:, :, None, :], b[:, :, None, :], out[:, :, None, :]
            kh, kw = b.shape[2], b.shape[3]
            if transposed:
                cin, cout = b.shape[0] // groups, b.shape[1]
                p = (dh * (kh - 1) - ph, dw * (kw - 1) - pw, dh, dw)
            else:
                cin, cout = b.shape[1], b.shape[0] // groups
                p = (ph, pw, dh, dw)
            ncb = -(-cout // 8)
            wt = buffer("w", groups * ncb * cin * kh * kw * 8, b.dtype)
            wt = wt[: groups * ncb * cin * kh * kw * 8].reshape(groups, ncb, cin, kh, kw, 8)
            _pack_weights(b, groups, transposed, wt)
            o_n = out.shape[1]
            bvec = _padded_bias(buffer, bias, o_n, out.dtype)
            oh, ow = _conv_out_size(out, a.shape, (ph, pw), pool_hi_pads, (dh * (kh - 1), dw * (kw - 1)))
            hp, wp = oh + dh * (kh - 1), ow + dw * (kw - 1)
            step = 2 * lanes_for(a.dtype)
            npx = ((oh - 1) * wp + ow + step - 1) // step * step
            units = a.shape[0] * groups * ncb
            macs = a.shape[0] * o_n * oh * ow * cin * kh * kw
            threads = get_num_threads()
            # a batch smaller than the thread count splits channel blocks of one sample: shorter tasks, each
            # padding the sample again, so they pay later (batch-1 inference: 4x the threshold)
            least = min_parallel_macs if a.shape[0] >= threads else 4 * min_parallel_macs
            nt = min(threads, units) if parallel and macs >= least else 1
            nt = max(nt, 1)
            xsize, ssize = a.shape[1] * hp * wp + step, 8 * npx + step  # + step: _unpad_tile reads past rows
            xws = buffer("x", nt * xsize, a.dtype)[: nt * xsize].reshape(nt, xsize)
            sws = buffer("s", nt * ssize, a.dtype)[: nt * ssize].reshape(nt, ssize)
            if out.size == 0:
                return
            if nsp == 1 and mask is not None:
                mask = mask[:, :, None, :]
            if a.shape[0] == 0 or a.shape[1] == 0:
                _bias_alone(out, bvec, relu, mask)
                return
            dims = (*p, oh, ow, int(pool_hi_pads is not None))
            m = _NO_MASK if mask is None else mask
            (_simd_conv_par if nt > 1 else _simd_conv_ser)(a, wt, out, dims, bvec, relu, m, xws, sws)

        return run

    return make(True), make(False), simd_conv_dispatchers()


def simd_conv_dispatchers() -> list[object]:
    """The compiled functions behind :func:`simd_conv_runners` (compile statistics count them)."""
    return [_simd_conv_range, _tile_rows, _pad_sample, _unpad_tile, _unpad_pool_tile, _pack_weights]


# ----------------------------------------------------------------------------------------------------
# Weight gradient
# ----------------------------------------------------------------------------------------------------

#: positions per block of the weight-gradient reduction: (C + O) rows of this many values stay in L2
GW_BLOCK = 2048


@njit(cache=True, nogil=True, error_model="numpy")
def _gw_tile(xq, gq, xo, go, q0, q1, part, pi, t4):  # noqa: ANN001, ANN202
    """``part[pi + r*t4 + k] += sum_{q0 <= q < q1} gq[go[r] + q] * xq[xo[k] + q]`` for r, k < 4 (``q1 - q0`` a
    multiple of the vector length)."""
    lanes = vlanes(xq)
    x0, x1, x2, x3 = xo[0], xo[1], xo[2], xo[3]
    g0, g1, g2, g3 = go[0], go[1], go[2], go[3]
    a00 = vzero(xq)
    a01 = vzero(xq)
    a02 = vzero(xq)
    a03 = vzero(xq)
    a10 = vzero(xq)
    a11 = vzero(xq)
    a12 = vzero(xq)
    a13 = vzero(xq)
    a20 = vzero(xq)
    a21 = vzero(xq)
    a22 = vzero(xq)
    a23 = vzero(xq)
    a30 = vzero(xq)
    a31 = vzero(xq)
    a32 = vzero(xq)
    a33 = vzero(xq)
    for q in range(q0, q1, lanes):
        v0 = vload(xq, x0 + q)
        v1 = vload(xq, x1 + q)
        v2 = vload(xq, x2 + q)
        v3 = vload(xq, x3 + q)
        u = vload(gq, g0 + q)
        a00 = vfma(u, v0, a00)
        a01 = vfma(u, v1, a01)
        a02 = vfma(u, v2, a02)
        a03 = vfma(u, v3, a03)
        u = vload(gq, g1 + q)
        a10 = vfma(u, v0, a10)
        a11 = vfma(u, v1, a11)
        a12 = vfma(u, v2, a12)
        a13 = vfma(u, v3, a13)
        u = vload(gq, g2 + q)
        a20 = vfma(u, v0, a20)
        a21 = vfma(u, v1, a21)
        a22 = vfma(u, v2, a22)
        a23 = vfma(u, v3, a23)
        u = vload(gq, g3 + q)
        a30 = vfma(u, v0, a30)
        a31 = vfma(u, v1, a31)
        a32 = vfma(u, v2, a32)
        a33 = vfma(u, v3, a33)
    part[pi] += vsum(a00)
    part[pi + 1] += vsum(a01)
    part[pi + 2] += vsum(a02)
    part[pi + 3] += vsum(a03)
    pi += t4
    part[pi] += vsum(a10)
    part[pi + 1] += vsum(a11)
    part[pi + 2] += vsum(a12)
    part[pi + 3] += vsum(a13)
    pi += t4
    part[pi] += vsum(a20)
    part[pi + 1] += vsum(a21)
    part[pi + 2] += vsum(a22)
    part[pi + 3] += vsum(a23)
    pi += t4
    part[pi] += vsum(a30)
    part[pi + 1] += vsum(a31)
    part[pi + 2] += vsum(a32)
    part[pi + 3] += vsum(a33)


@njit(cache=True, nogil=True)
def _simd_gw_range(x, g, dw, pads, groups, xws, gws, pws, t0, t1):  # noqa: ANN001, ANN202
    """Chunks ``t0 .. t1`` of ``xws.shape[0]``: ``pws[t]`` (G*og4, T4) = the weight gradient of the chunk's
    samples, ``og4``/``T4`` the output channels per group / taps per group rounded up to 4. ``xws[t]``: the
    samples' padded inputs per channel (C, (n+1)*plane + lanes); ``gws[t]``: their output gradients at the flat
    positions (G*og4, n*plane rounded up), zero elsewhere."""
    ph, pw, dh, dw_ = pads
    n, c, h, w = x.shape
    o_n, oh, ow = g.shape[1], g.shape[2], g.shape[3]
    cg, kh, kw = dw.shape[1], dw.shape[2], dw.shape[3]
    og = o_n // groups
    og4 = (og + 3) // 4 * 4
    taps = cg * kh * kw
    t4 = (taps + 3) // 4 * 4
    hp, wp = oh + dh * (kh - 1), ow + dw_ * (kw - 1)
    plane = hp * wp
    lanes = vlanes(xws)
    y0, y1 = max(0, -ph), min(h, hp - ph)
    x0, x1 = max(0, -pw), min(w, wp - pw)
    xf = x.reshape(-1)
    gf = g.reshape(-1)
    nt = xws.shape[0]
    xo = np.zeros(4, np.int64)
    go = np.zeros(4, np.int64)
    offs = np.zeros(t4, np.int64)
    for t in range(t0, t1):
        i0, i1 = (t * n) // nt, ((t + 1) * n) // nt
        m = i1 - i0
        rx = (m + 1) * plane + lanes
        rg = (m * plane + lanes - 1) // lanes * lanes
        xq = xws[t]
        gq = gws[t]
        part = pws[t]
        xq[:] = 0
        gq[:] = 0
        part[:] = 0
        zero = ph - ph  # a run-time 0: literal arguments would compile _pad_sample again for them
        for k in range(m):
            i = i0 + k
            # channel ci of sample k at ci*rx + k*plane (the channel stride is rx)
            _pad_sample(xf, i * c * h * w, c, h, w, xq[k * plane :], rx, wp, ph, pw, y0, y1, x0, x1)
            for gr in range(groups):  # output-gradient rows at (gr*og4 + r)*rg + k*plane, unpadded
                src = ((i * o_n) + gr * og) * oh * ow
                _pad_sample(
                    gf, src, og, oh, ow, gq[gr * og4 * rg + k * plane :], rg, wp, zero, zero, zero, oh, zero, ow
                )
        if m == 0:
            continue
        for gr in range(groups):
            for tap in range(t4):
                cc, rem = tap // (kh * kw), tap % (kh * kw)
                offs[tap] = ((gr * cg + cc) * rx + (rem // kw) * dh * wp + (rem % kw) * dw_) if tap < taps else 0
            for q0 in range(0, rg, GW_BLOCK):
                q1 = min(rg, q0 + GW_BLOCK)
                for r0 in range(0, og4, 4):
                    for j in range(4):
                        go[j] = (gr * og4 + r0 + j) * rg
                    for k0 in range(0, t4, 4):
                        for j in range(4):
                            xo[j] = offs[k0 + j]
                        _gw_tile(xq, gq, xo, go, q0, q1, part, (gr * og4 + r0) * t4 + k0, t4)


@njit(cache=True)
def _gw_unpack(pws, dw, groups):  # noqa: ANN001, ANN202
    """``dw`` (O, Cg, kh, kw) = the sum over chunks (in order) of the tile-ordered partials ``pws``."""
    o_n, taps = dw.shape[0], dw.shape[1] * dw.shape[2] * dw.shape[3]
    og = o_n // groups
    og4, t4 = (og + 3) // 4 * 4, (taps + 3) // 4 * 4
    d2 = dw.reshape((o_n, taps))
    for gr in range(groups):
        for r in range(og):
            for k in range(taps):
                i = (gr * og4 + r) * t4 + k
                acc = pws[0, i]
                for t in range(1, pws.shape[0]):
                    acc += pws[t, i]
                d2[gr * og + r, k] = acc


def simd_grad_weight_runners(
    pads: tuple[int, int, int, int], groups: int, nsp: int, min_parallel_macs: int
) -> tuple[Callable[..., None], Callable[..., None], list[object]]:
    """``(run, serial, dispatchers)``: ``run(x, g, dw)``, the weight gradient of the stride-1 convolution with
    ``pads`` = (ph, pw, dh, dw), samples split across the threads from ``min_parallel_macs`` multiply-adds."""
    ph, pw, dh, dw_ = pads
    buffer = _Workspaces()

    def make(parallel: bool) -> Callable[..., None]:
        def run(x: np.ndarray, g: np.ndarray, dw: np.ndarray) -> None:
            x = np.ascontiguousarray(x)
            g = np.ascontiguousarray(g)
            if nsp == 1:
                x, g, dw = x[:, :, None, :], g[:, :, None, :], dw[:, :, None, :]
            n, o_n = x.shape[0], dw.shape[0]
            cg, kh, kw = dw.shape[1], dw.shape[2], dw.shape[3]
            og4, t4 = (o_n // groups + 3) // 4 * 4, (cg * kh * kw + 3) // 4 * 4
            plane = (g.shape[2] + dh * (kh - 1)) * (g.shape[3] + dw_ * (kw - 1))
            lanes = lanes_for(x.dtype)
            macs = g.size * cg * kh * kw
            nt = max(1, min(get_num_threads(), n)) if parallel and macs >= min_parallel_macs else 1
            m = -(-n // nt) if n else 0
            xsize = x.shape[1] * ((m + 1) * plane + lanes)
            gsize = groups * og4 * ((m * plane + lanes - 1) // lanes * lanes)
            psize = groups * og4 * t4
            xws = buffer("x", nt * xsize, x.dtype)[: nt * xsize].reshape(nt, xsize)
            gws = buffer("g", nt * gsize, x.dtype)[: nt * gsize].reshape(nt, gsize)
            pws = buffer("p", nt * psize, x.dtype)[: nt * psize].reshape(nt, psize)
            if dw.size == 0:
                return
            (_simd_gw_par if nt > 1 else _simd_gw_ser)(x, g, dw, (ph, pw, dh, dw_), groups, xws, gws, pws)
            _gw_unpack(pws, dw, groups)

        return run

    return make(True), make(False), [_simd_gw_range, _gw_tile, _gw_unpack, _pad_sample]


_simd_gw_par, _simd_gw_ser = task_runners(_simd_gw_range, lambda x, g, dw, pads, groups, xws, gws, pws: xws.shape[0])
