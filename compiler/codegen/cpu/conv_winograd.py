"""Winograd F(2x2, 3x3) and F(4x4, 3x3): the forward pass of 3x3, stride-1, undilated, ungrouped convolutions in
16/36 and 36/144 of the multiplications (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2015).

Each t x t output tile ``Y`` of an output channel (t = 2 or 4) comes from the (t+2) x (t+2) input patch ``d``
at t times its position::

    Y = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A          (* elementwise over the (t+2)^2 "frequencies" k)

so per tile the 9 t^2 multiply-adds per input channel of a direct convolution become (t+2)^2, in independent
GEMMs ``M[k] (O x T) = U[k] (O x C) @ V[k] (C x T)`` over the tiles T, with ``U = G g G^T`` transformed once
per call and ``V = B^T d B`` per tile. The GEMMs run on the register tile of
:mod:`compiler.codegen.cpu.conv_simd` (8 output channels x 2 vectors of tiles), frequency-major so that each
frequency's transformed input stays in L1 across the channel blocks.

The layout trick: each channel of the zero-padded input is split into its t^2 polyphase planes (rows and
columns by their remainder mod t), each ``(TH + 1) x (TW + 1)`` (TH x TW tiles). Over the *flat* index ``q =
i*(TW+1) + m`` of tile ``(i, m)``, every patch value ``d[a][b]`` is then plane ``(a%t, b%t)`` at the constant
offset ``(a//t)*(TW+1) + b//t``: the input transform is contiguous vector loads, like the taps of the direct
kernel. Column ``m = TW`` and row ``i = TH`` of each plane only feed their neighbours. Samples lie one after
another in the planes, so one loop runs over a whole group of samples.

Which tiles a vector of lanes holds: where rows are long enough that a vector spans at most three tile rows
(``2 TW >= lanes - 1``: TW >= 8 in float32 with AVX-512), only the tiles that store, in order; each run of a
tile row is then one masked load (:func:`vload_merge`) at its own offset, three per patch value
(:func:`_segments` finds the runs). Otherwise the vector holds consecutive plane positions, and the tiles of
the extra column and row are computed and dropped (17 of 81 positions with 8x8 tiles per sample, 9 of 25 with
4x4). Packing the tiles cut F(2x2) on 32->32 channels at 16x16 by 19% and F(4x4) on 16->32 at 32x32 by 17%
(``benchmarks/bench_conv_kernels.py``).

The output transform runs on each 8-channel block of ``M`` with the epilogue the direct kernel applies
(per-channel bias, ReLU, the boolean ReLU mask of a training step, or a following 2x2 max pool, whose windows
tile the t x t tiles exactly), and stores with masked vector stores (:func:`vstore_pairs` and
:func:`vstore_quads` interleave the columns of a tile row), so every output element is written once and no
thread writes past its range: the work splits across threads at any tile, batch-1 inference included.

Accuracy: F(2x2)'s transforms only add, subtract and halve; F(4x4)'s scale by up to 8 and divide by 6 and 24,
so its float32 error is about 6x larger (~3e-6 of the largest output on random data), still far inside the
float32 tolerances (``tests/test_cpu_conv_winograd.py`` checks both against a float64 reference). A
non-finite input spreads to the whole tile whose patch holds it, as in any Winograd convolution.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from compiler.codegen.cpu.conv_simd import _bias_alone, _conv_out_size, _padded_bias, _tile_rows, _Workspaces
from compiler.codegen.cpu.gemm import gemm
from compiler.codegen.cpu.parallel import get_num_threads, task_runners
from compiler.codegen.cpu.simd import (
    lanes_for,
    prefetch,
    vadd,
    vfma,
    vlanes,
    vload,
    vload_merge,
    vload_strided2,
    vload_strided4,
    vmax,
    vmul,
    vsplat,
    vstore,
    vstore_lanes,
    vstore_pairs,
    vstore_quads,
    vsub,
    vzero,
)

__all__ = ["WINOGRAD_CHUNK", "winograd_applies", "winograd_conv_dispatchers", "winograd_conv_runners"]

#: tile positions per chunk: the chunk's transformed input ((t+2)^2 x C x chunk values) and its GEMM results
#: ((t+2)^2 x O x chunk) stay in L2; a multiple of every vector pair width (32 float32 values)
WINOGRAD_CHUNK = 128

#: F(4x4, 3x3) where both output dims are at least this and the channels are few (input + output <=
#: :data:`WINOGRAD_F4_MAX_CHANNELS`), or both dims are at least twice this: 36 multiplications per 16 outputs
#: instead of 64, but larger transforms (their share grows with the channels' working set) and 6x the rounding
#: error of F(2x2) (both far inside float32 test tolerances). Measured single-threaded per sample (F(4x4) against
#: F(2x2)): 16->32 channels at 32x32 56 against 71 us; 32->32 at 16x16 with a 2x2 pool 31-36 against 35-38;
#: 64->64 at 16x16 101 against 123; 128->128 at 16x16 519 against 420; 128->128 at 32x32 1865 against 2106
WINOGRAD_F4_MIN_SIZE = 16
WINOGRAD_F4_MAX_CHANNELS = 128

#: at most this many bytes of a chunk's transformed input and GEMM results (``(C + O) (t+2)^2 chunk`` values),
#: so that they stay in L2 (1 MiB per core here): with 128+ channels the chunk shrinks from WINOGRAD_CHUNK toward
#: 32 tile positions (measured: 8-17% faster on 128-512 channels)
_CHUNK_BYTES = 1280 * 1024

#: the planes of at most this many bytes of samples are built at once (per thread), so that they stay in L2
_GROUP_BYTES = 256 * 1024


def winograd_applies(w_shape: tuple, stride: tuple, dilation: tuple, groups: int) -> bool:
    """Whether a forward convolution with weights ``w_shape`` can run Winograd F(t x t, 3x3): 2-d, 3x3, stride
    1, undilated, ungrouped."""
    return (
        len(w_shape) == 4
        and tuple(w_shape[2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
    )


def _filter_transform(t: int) -> np.ndarray:
    """``G`` of F(t x t, 3x3) ((t+2) x 3; Lavin & Gray's points 0, +-1 for t = 2 and 0, +-1, +-2 for t = 4)."""
    if t == 2:
        return np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    return np.array(
        [
            [1 / 4, 0, 0],
            [-1 / 6, -1 / 6, -1 / 6],
            [-1 / 6, 1 / 6, -1 / 6],
            [1 / 24, 1 / 12, 1 / 6],
            [1 / 24, -1 / 12, 1 / 6],
            [0, 0, 1],
        ]
    )


#: per tile size and float dtype, ``U = G g G^T`` as one matrix on the 9 filter taps:
#: ``U.flat[k] = sum_q M[k, q] g.flat[q]`` (built in float64, then rounded once per dtype)
_FILTER_MATRICES = {
    (t, np.dtype(dt)): np.einsum("aq,bs->abqs", _filter_transform(t), _filter_transform(t)).reshape(-1, 9).astype(dt)
    for t in (2, 4)
    for dt in (np.float32, np.float64)
}


def _transform_weights(w: np.ndarray, ut: np.ndarray, t: int) -> None:
    """``ut (K, NCB, C, 8)``, ``K = (t+2)**2``: ``U = G g G^T`` of each 3x3 filter ``g = w[o, c]`` for F(t x t,
    3x3) (``t`` 2 or 4), at ``ut[k, o // 8, c, o % 8]`` with ``k = (t+2)*row + col``; zero past the last output
    channel. One BLAS product of the (K x 9) transform with all filters' taps, in ``w``'s dtype (float32 adds
    ~1e-7 of relative error to ``U``, far below F(4x4)'s own): a scalar loop took 14 ms for 512 x 512 filters,
    more than the convolution of a 14x14 image. The product runs on the single-threaded BLAS of the compiled
    kernels (:mod:`compiler.codegen.cpu.gemm`): NumPy's own ``np.dot`` woke its BLAS's threads, whose spinning
    slowed the next kernels by 10-20%."""
    nk, ncb, c_n = ut.shape[0], ut.shape[1], w.shape[1]
    taps = np.empty((9, ncb, c_n, 8), w.dtype)
    _transform_taps(w.reshape(w.shape[0], c_n, 9), _FILTER_MATRICES[t, w.dtype], taps, ut.reshape(nk, -1))


@njit(cache=True, nogil=True)
def _transform_taps(w9, m, taps, ut2):  # noqa: ANN001, ANN202
    """``taps[q, o // 8, c, o % 8] = w9[o, c, q]`` (zero past the last output channel, one pass over ``w9``),
    then ``ut2 = m @ taps`` (as ``(9, NCB * C * 8)``)."""
    o_n, c_n = w9.shape[0], w9.shape[1]
    for cb in range(taps.shape[1]):  # writes: nine sequential streams; reads: eight
        for c in range(c_n):
            for j in range(8):
                o = cb * 8 + j
                for q in range(9):
                    taps[q, cb, c, j] = w9[o, c, q] if o < o_n else 0
    gemm(m, taps.reshape(9, -1), ut2, 0.0)


@njit(cache=True, nogil=True, error_model="numpy")
def _build_planes(xf, src, c_n, h, w, pl, plen, off, th, r, ph, pw, t):  # noqa: ANN001, ANN202
    """The polyphase planes (stride ``t``, 2 or 4) of the sample at flat offset ``src`` of ``xf`` (C, H, W),
    padded by (ph, pw) at the top/left and with zeros past its end: ``pl[(c*t*t + t*pr + pc)*plen + off + i*r +
    m] = xpad[c, t*i + pr, t*m + pc]`` for ``i <= th``, ``m < r``. Explicit vectors (:func:`vload_strided2` and
    :func:`vload_strided4` split a row's columns by phase, masked at its ends): LLVM's vectoriser left rows of
    16-17 columns in its scalar remainder."""
    lanes = vlanes(pl)
    zero = vzero(pl)
    for c in range(c_n):
        for i in range(th + 1):
            for pr in range(t):  # the rows of the sample in order, for the hardware prefetcher
                y = t * i + pr - ph
                d0 = (c * t * t + t * pr) * plen + off + i * r
                inside = 0 <= y < h
                s = src + (c * h + y) * w - pw  # padded column x of the row is xf[s + x]
                for m0 in range(0, r, lanes):
                    n = min(lanes, r - m0)
                    if not inside:
                        for pc in range(t):
                            vstore_lanes(pl, d0 + pc * plen + m0, zero, 0, n)
                        continue
                    # stream element e = padded column t*m0 + e; real columns pw .. pw + w - 1
                    lo, hi = pw - t * m0, pw + w - t * m0
                    # all loads before the stores (which might alias them), so that LLVM loads the stream once
                    if t == 2:
                        v0 = vload_strided2(xf, s + 2 * m0, lo, hi, 0)
                        v1 = vload_strided2(xf, s + 2 * m0, lo, hi, 1)
                        vstore_lanes(pl, d0 + m0, v0, 0, n)
                        vstore_lanes(pl, d0 + plen + m0, v1, 0, n)
                    else:
                        e = s + 4 * m0
                        v0 = vload_strided4(xf, e, lo, hi, 0)
                        v1 = vload_strided4(xf, e, lo, hi, 1)
                        v2 = vload_strided4(xf, e, lo, hi, 2)
                        v3 = vload_strided4(xf, e, lo, hi, 3)
                        vstore_lanes(pl, d0 + m0, v0, 0, n)
                        vstore_lanes(pl, d0 + plen + m0, v1, 0, n)
                        vstore_lanes(pl, d0 + 2 * plen + m0, v2, 0, n)
                        vstore_lanes(pl, d0 + 3 * plen + m0, v3, 0, n)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _bt6(d0, d1, d2, d3, d4, d5, four, five, two):  # noqa: ANN001, ANN202
    """``B^T d`` of F(4x4, 3x3) on six vectors (``four``, ``five``, ``two``: splat constants)."""
    u0 = vfma(four, d0, vsub(d4, vmul(five, d2)))
    a = vsub(d4, vmul(four, d2))
    b = vsub(d3, vmul(four, d1))
    c = vsub(d4, d2)
    e = vmul(two, vsub(d3, d1))
    u5 = vfma(four, d1, vsub(d5, vmul(five, d3)))
    return u0, vadd(a, b), vsub(a, b), vadd(c, e), vsub(c, e), u5


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _seg_load(pl, b, sg):  # noqa: ANN001, ANN202
    """The vector of tiles described by ``sg = (f0, lo0, hi0, f1, lo1, hi1, f2, lo2, hi2)`` at plane offset ``b``:
    lanes ``lo_k <= l < hi_k`` from ``pl[b + f_k + l]`` (up to three runs of consecutive plane positions), 0 in
    the lanes past the group's last tile."""
    v = vload_merge(pl, b + sg[0], vzero(pl), sg[1], sg[2])
    v = vload_merge(pl, b + sg[3], v, sg[4], sg[5])
    v = vload_merge(pl, b + sg[6], v, sg[7], sg[8])
    return vload_merge(pl, b + sg[9], v, sg[10], sg[11])


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _row6(pl, a, plen, sg):  # noqa: ANN001, ANN202
    """The six values of one patch row of F(4x4, 3x3) (``a``: the start of its four column-phase planes): the
    planes of column phases 0-3, then phases 0 and 1 one tile column on."""
    return (
        _seg_load(pl, a, sg),
        _seg_load(pl, a + plen, sg),
        _seg_load(pl, a + 2 * plen, sg),
        _seg_load(pl, a + 3 * plen, sg),
        _seg_load(pl, a + 1, sg),
        _seg_load(pl, a + plen + 1, sg),
    )


@njit(cache=True, nogil=True, error_model="numpy")
def _transform_input4(pl, plen, segs, c_n, r, vt, chunk, ncols, step):  # noqa: ANN001, ANN202
    """F(4x4, 3x3): ``vt[k*step + c*chunk + p] = (B^T d B)[k]`` (``k = 6*row + col``) of the 6x6 patches of the
    chunk's tiles (``segs[p // lanes]``: where vector ``p``'s tiles lie in the planes, see :func:`_segments`):
    patch value ``(a, b)`` is plane ``(a % 4, b % 4)`` at offset ``(a // 4)*r + b // 4``."""
    lanes = vlanes(pl)
    four, five, two = vsplat(vzero(pl), 4.0), vsplat(vzero(pl), 5.0), vsplat(vzero(pl), 2.0)
    for c in range(c_n):
        base = c * 16 * plen
        for p in range(0, ncols, lanes):
            g = segs[p // lanes]
            sg = (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11])
            # plane (pr, pc) starts at base + (4*pr + pc)*plen; patch rows 4 and 5 are rows 0 and 1 one tile on
            x0 = _row6(pl, base, plen, sg)
            x1 = _row6(pl, base + 4 * plen, plen, sg)
            x2 = _row6(pl, base + 8 * plen, plen, sg)
            x3 = _row6(pl, base + 12 * plen, plen, sg)
            x4 = _row6(pl, base + r, plen, sg)
            x5 = _row6(pl, base + 4 * plen + r, plen, sg)
            # B^T down each column, then B^T along each row
            c0 = _bt6(x0[0], x1[0], x2[0], x3[0], x4[0], x5[0], four, five, two)
            c1 = _bt6(x0[1], x1[1], x2[1], x3[1], x4[1], x5[1], four, five, two)
            c2 = _bt6(x0[2], x1[2], x2[2], x3[2], x4[2], x5[2], four, five, two)
            c3 = _bt6(x0[3], x1[3], x2[3], x3[3], x4[3], x5[3], four, five, two)
            c4 = _bt6(x0[4], x1[4], x2[4], x3[4], x4[4], x5[4], four, five, two)
            c5 = _bt6(x0[5], x1[5], x2[5], x3[5], x4[5], x5[5], four, five, two)
            o = c * chunk + p
            v = _bt6(c0[0], c1[0], c2[0], c3[0], c4[0], c5[0], four, five, two)
            _store6(vt, o, step, v)
            v = _bt6(c0[1], c1[1], c2[1], c3[1], c4[1], c5[1], four, five, two)
            _store6(vt, o + 6 * step, step, v)
            v = _bt6(c0[2], c1[2], c2[2], c3[2], c4[2], c5[2], four, five, two)
            _store6(vt, o + 12 * step, step, v)
            v = _bt6(c0[3], c1[3], c2[3], c3[3], c4[3], c5[3], four, five, two)
            _store6(vt, o + 18 * step, step, v)
            v = _bt6(c0[4], c1[4], c2[4], c3[4], c4[4], c5[4], four, five, two)
            _store6(vt, o + 24 * step, step, v)
            v = _bt6(c0[5], c1[5], c2[5], c3[5], c4[5], c5[5], four, five, two)
            _store6(vt, o + 30 * step, step, v)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _store6(vt, o, step, v):  # noqa: ANN001, ANN202
    """The six vectors ``v`` at ``o``, ``o + step``, ... (one patch row's frequencies)."""
    vstore(vt, o, v[0])
    vstore(vt, o + step, v[1])
    vstore(vt, o + 2 * step, v[2])
    vstore(vt, o + 3 * step, v[3])
    vstore(vt, o + 4 * step, v[4])
    vstore(vt, o + 5 * step, v[5])


@njit(cache=True, nogil=True, error_model="numpy")
def _transform_input(pl, plen, segs, c_n, r, vt, chunk, ncols, step):  # noqa: ANN001, ANN202
    """``vt[k*step + c*chunk + p] = (B^T d B)[k]`` of the chunk's tiles (``segs`` as in
    :func:`_transform_input4`)."""
    lanes = vlanes(pl)
    for c in range(c_n):
        e0 = c * 4 * plen  # even rows, even columns
        e1 = e0 + plen  # even rows, odd columns
        o0 = e1 + plen  # odd rows, even columns
        o1 = o0 + plen
        for p in range(0, ncols, lanes):
            g = segs[p // lanes]
            sg = (g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11])
            # patch rows a = 0..3: plane row parity a % 2, row offset (a // 2) * r
            d00, d01, d02, d03 = (
                _seg_load(pl, e0, sg),
                _seg_load(pl, e1, sg),
                _seg_load(pl, e0 + 1, sg),
                _seg_load(pl, e1 + 1, sg),
            )
            d10, d11, d12, d13 = (
                _seg_load(pl, o0, sg),
                _seg_load(pl, o1, sg),
                _seg_load(pl, o0 + 1, sg),
                _seg_load(pl, o1 + 1, sg),
            )
            e0r, e1r, o0r, o1r = e0 + r, e1 + r, o0 + r, o1 + r
            d20, d21, d22, d23 = (
                _seg_load(pl, e0r, sg),
                _seg_load(pl, e1r, sg),
                _seg_load(pl, e0r + 1, sg),
                _seg_load(pl, e1r + 1, sg),
            )
            d30, d31, d32, d33 = (
                _seg_load(pl, o0r, sg),
                _seg_load(pl, o1r, sg),
                _seg_load(pl, o0r + 1, sg),
                _seg_load(pl, o1r + 1, sg),
            )
            # B^T on the rows
            t00, t01, t02, t03 = vsub(d00, d20), vsub(d01, d21), vsub(d02, d22), vsub(d03, d23)
            t10, t11, t12, t13 = vadd(d10, d20), vadd(d11, d21), vadd(d12, d22), vadd(d13, d23)
            t20, t21, t22, t23 = vsub(d20, d10), vsub(d21, d11), vsub(d22, d12), vsub(d23, d13)
            t30, t31, t32, t33 = vsub(d10, d30), vsub(d11, d31), vsub(d12, d32), vsub(d13, d33)
            # B on the columns, stored at k = 4*row + col
            base = c * chunk + p
            vstore(vt, base, vsub(t00, t02))
            vstore(vt, base + step, vadd(t01, t02))
            vstore(vt, base + 2 * step, vsub(t02, t01))
            vstore(vt, base + 3 * step, vsub(t01, t03))
            vstore(vt, base + 4 * step, vsub(t10, t12))
            vstore(vt, base + 5 * step, vadd(t11, t12))
            vstore(vt, base + 6 * step, vsub(t12, t11))
            vstore(vt, base + 7 * step, vsub(t11, t13))
            vstore(vt, base + 8 * step, vsub(t20, t22))
            vstore(vt, base + 9 * step, vadd(t21, t22))
            vstore(vt, base + 10 * step, vsub(t22, t21))
            vstore(vt, base + 11 * step, vsub(t21, t23))
            vstore(vt, base + 12 * step, vsub(t30, t32))
            vstore(vt, base + 13 * step, vadd(t31, t32))
            vstore(vt, base + 14 * step, vsub(t32, t31))
            vstore(vt, base + 15 * step, vsub(t31, t33))


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _output_tile(mf, base, p, chunk, blk):  # noqa: ANN001, ANN202
    """``A^T M A`` (the 2x2 outputs y00, y01, y10, y11) of the vector of tiles at ``p`` of the channel whose 16
    frequencies' rows (``blk`` apart) start at ``base`` in ``mf``."""
    o = base + p
    m00, m01, m02, m03 = vload(mf, o), vload(mf, o + blk), vload(mf, o + 2 * blk), vload(mf, o + 3 * blk)
    m10, m11, m12, m13 = vload(mf, o + 4 * blk), vload(mf, o + 5 * blk), vload(mf, o + 6 * blk), vload(mf, o + 7 * blk)
    o += 8 * blk
    m20, m21, m22, m23 = vload(mf, o), vload(mf, o + blk), vload(mf, o + 2 * blk), vload(mf, o + 3 * blk)
    m30, m31, m32, m33 = vload(mf, o + 4 * blk), vload(mf, o + 5 * blk), vload(mf, o + 6 * blk), vload(mf, o + 7 * blk)
    s00, s01, s02, s03 = (
        vadd(vadd(m00, m10), m20),
        vadd(vadd(m01, m11), m21),
        vadd(vadd(m02, m12), m22),
        vadd(vadd(m03, m13), m23),
    )
    s10, s11, s12, s13 = (
        vsub(vsub(m10, m20), m30),
        vsub(vsub(m11, m21), m31),
        vsub(vsub(m12, m22), m32),
        vsub(vsub(m13, m23), m33),
    )
    y00 = vadd(vadd(s00, s01), s02)
    y01 = vsub(vsub(s01, s02), s03)
    y10 = vadd(vadd(s10, s11), s12)
    y11 = vsub(vsub(s11, s12), s13)
    return y00, y01, y10, y11


@njit(cache=True, nogil=True, error_model="numpy")
def _tile_runs(q, lim, q_lane0, geo, runs):  # noqa: ANN001, ANN202
    """The tiles at local flat positions ``q .. lim`` (one vector's, lane 0 at ``q_lane0``) that store outputs,
    as runs along tile rows in ``runs``: (first lane, count, sample, tile row, tile column); returns how many.
    ``geo = (s0, S, R, TH, TW, OH, OW, O, pool, t)``: the group's first sample, the plane geometry, the output
    size and channel count, whether the output is the 2x2 max pool, and the tile size."""
    s0, ss, r, th, tw, oh, ow, o_n, pool, t = geo
    if pool:  # a tile covers t/2 x t/2 pooled outputs
        tile_rows, cols = (oh // 2 + t // 2 - 1) // (t // 2), (ow // 2 + t // 2 - 1) // (t // 2)
    else:
        tile_rows, cols = th, tw
    sl = q // ss
    rem = q - sl * ss
    i = rem // r
    m = rem - i * r
    nrun = 0
    while q < lim:
        n = min(lim - q, r - m)
        nv = min(n, cols - m)
        if i < tile_rows and nv > 0:
            runs[nrun, 0] = q - q_lane0
            runs[nrun, 1] = nv
            runs[nrun, 2] = s0 + sl
            runs[nrun, 3] = i
            runs[nrun, 4] = m
            nrun += 1
        q += n
        m += n
        if m == r:
            m = 0
            i += 1
            if i == ss // r:
                i = 0
                sl += 1
    return nrun


@njit(cache=True, nogil=True, error_model="numpy")
def _segments(q0, qend, ss, rw, ss_flat, r, ncols, lanes, segs):  # noqa: ANN001, ANN202
    """Where the tiles of the chunk at local position ``q0`` lie in the planes: per vector ``v`` of ``lanes``
    positions, ``segs[v] = (f0, lo0, hi0, f1, lo1, hi1, f2, lo2, hi2)``, lanes ``lo_k .. hi_k`` at plane
    positions ``f_k + l`` (empty runs past the tiles before ``qend``). Positions count ``ss`` tiles per sample
    and ``rw`` per tile row; the planes hold ``ss_flat`` per sample and ``r`` per row. With ``rw == r`` (the
    plane layout itself, its last row and column computed and dropped) a vector is one run; with ``rw = TW``
    (only the tiles that store) a tile row is a run, and a vector spans at most three when ``2 TW >= lanes - 1``."""
    segs[:] = 0
    for v in range(ncols // lanes):
        j0 = q0 + v * lanes
        nl = min(lanes, qend - j0)
        if rw == r:  # the plane layout: one run
            segs[v, 0], segs[v, 2] = j0, max(nl, 0)
            continue
        lane = 0
        k = 0
        while lane < nl and k < 4:
            j = j0 + lane
            sl = j // ss
            rem = j - sl * ss
            i = rem // rw
            m = rem - i * rw
            run = min(nl - lane, rw - m)
            segs[v, 3 * k] = sl * ss_flat + i * r + m - lane
            segs[v, 3 * k + 1] = lane
            segs[v, 3 * k + 2] = lane + run
            lane += run
            k += 1


@njit(cache=True, nogil=True, error_model="numpy")
def _store_block(mf, chunk, ncols, mrow, cb, rows, geo, bias, relu, of, mk, runs, nruns):  # noqa: ANN001, ANN202
    """F(2x2, 3x3): output transform + epilogue of block ``cb`` (``rows`` channels) of a chunk's first ``ncols``
    tiles (``mf``: per channel, ``mrow`` apart, its 16 frequencies' rows of ``chunk`` values), stored where
    ``runs[v, :nruns[v]]`` say (:func:`_tile_runs` of vector ``v``; ``geo`` as there)."""
    oh, ow, o_n, pool = geo[5], geo[6], geo[7], geo[8]
    lanes = vlanes(mf)
    zero = vzero(mf)
    masked = mk.shape[0] > 0
    pw2, ph2 = ow // 2, oh // 2
    for j in range(rows):  # channel by channel: each writes its own output plane in order
        co = cb * 8 + j
        b = vsplat(zero, bias[co])
        for vi in range(ncols // lanes):
            nrun = nruns[vi]
            if nrun == 0:
                continue
            y00, y01, y10, y11 = _output_tile(mf, co * mrow, vi * lanes, chunk, chunk)
            if pool:
                v = vadd(vmax(vmax(y00, y01), vmax(y10, y11)), b)
                if relu:
                    v = vmax(v, zero)
                for u in range(nrun):
                    a, nv, s, i, m = runs[vi, u, 0], runs[vi, u, 1], runs[vi, u, 2], runs[vi, u, 3], runs[vi, u, 4]
                    vstore_lanes(of, ((s * o_n + co) * ph2 + i) * pw2 + m - a, v, a, a + nv)
                continue
            y00, y01, y10, y11 = vadd(y00, b), vadd(y01, b), vadd(y10, b), vadd(y11, b)
            r00, r01, r10, r11 = y00, y01, y10, y11
            if relu:
                r00, r01, r10, r11 = vmax(y00, zero), vmax(y01, zero), vmax(y10, zero), vmax(y11, zero)
            for u in range(nrun):
                a, nv, s, i, m = runs[vi, u, 0], runs[vi, u, 1], runs[vi, u, 2], runs[vi, u, 3], runs[vi, u, 4]
                d = ((s * o_n + co) * oh + 2 * i) * ow + 2 * (m - a)
                e1 = 2 * (a + nv) - max(0, 2 * (m + nv) - ow)  # an odd width: the last tile's second column
                if masked:
                    vstore_pairs(mk, d, y00, y01, 2 * a, e1)
                vstore_pairs(of, d, r00, r01, 2 * a, e1)
                if 2 * i + 1 < oh:
                    if masked:
                        vstore_pairs(mk, d + ow, y10, y11, 2 * a, e1)
                    vstore_pairs(of, d + ow, r10, r11, 2 * a, e1)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _at6(m0, m1, m2, m3, m4, m5, two, four, eight):  # noqa: ANN001, ANN202
    """``A^T m`` of F(4x4, 3x3) on six vectors (``two``, ``four``, ``eight``: splat constants)."""
    s12, d12, s34, d34 = vadd(m1, m2), vsub(m1, m2), vadd(m3, m4), vsub(m3, m4)
    return vadd(vadd(m0, s12), s34), vfma(two, d34, d12), vfma(four, s34, s12), vadd(vfma(eight, d34, d12), m5)


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _freq_column(mf, o, blk, b, two, four, eight):  # noqa: ANN001, ANN202
    """``A^T`` down column ``b`` of the 6x6 frequencies (``k = 6*row + col``, rows ``blk`` apart from ``o``)."""
    return _at6(
        vload(mf, o + b * blk),
        vload(mf, o + (6 + b) * blk),
        vload(mf, o + (12 + b) * blk),
        vload(mf, o + (18 + b) * blk),
        vload(mf, o + (24 + b) * blk),
        vload(mf, o + (30 + b) * blk),
        two,
        four,
        eight,
    )


@njit(cache=True, nogil=True, error_model="numpy", inline="always")
def _nan_max4(a, b, c, d):  # noqa: ANN001, ANN202
    return vmax(vmax(a, b), vmax(c, d))


@njit(cache=True, nogil=True, error_model="numpy")
def _store_block4(mf, chunk, ncols, mrow, cb, rows, geo, bias, relu, of, mk, runs, nruns):  # noqa: ANN001, ANN202
    """F(4x4, 3x3): as :func:`_store_block`, 36 frequencies per channel and 4x4 output tiles: rows of four
    interleaved vectors (:func:`vstore_quads`), or with the pool 2x2 pooled values per tile (pairs)."""
    oh, ow, o_n, pool = geo[5], geo[6], geo[7], geo[8]
    lanes = vlanes(mf)
    zero = vzero(mf)
    two, four, eight = vsplat(zero, 2.0), vsplat(zero, 4.0), vsplat(zero, 8.0)
    masked = mk.shape[0] > 0
    pw2, ph2 = ow // 2, oh // 2
    for j in range(rows):  # channel by channel: each writes its own output plane in order
        co = cb * 8 + j
        b = vsplat(zero, bias[co])
        for vi in range(ncols // lanes):
            nrun = nruns[vi]
            if nrun == 0:
                continue
            o = co * mrow + vi * lanes
            s0 = _freq_column(mf, o, chunk, 0, two, four, eight)
            s1 = _freq_column(mf, o, chunk, 1, two, four, eight)
            s2 = _freq_column(mf, o, chunk, 2, two, four, eight)
            s3 = _freq_column(mf, o, chunk, 3, two, four, eight)
            s4 = _freq_column(mf, o, chunk, 4, two, four, eight)
            s5 = _freq_column(mf, o, chunk, 5, two, four, eight)
            y0 = _at6(s0[0], s1[0], s2[0], s3[0], s4[0], s5[0], two, four, eight)
            y1 = _at6(s0[1], s1[1], s2[1], s3[1], s4[1], s5[1], two, four, eight)
            y2 = _at6(s0[2], s1[2], s2[2], s3[2], s4[2], s5[2], two, four, eight)
            y3 = _at6(s0[3], s1[3], s2[3], s3[3], s4[3], s5[3], two, four, eight)
            if pool:
                p00 = vadd(_nan_max4(y0[0], y0[1], y1[0], y1[1]), b)
                p01 = vadd(_nan_max4(y0[2], y0[3], y1[2], y1[3]), b)
                p10 = vadd(_nan_max4(y2[0], y2[1], y3[0], y3[1]), b)
                p11 = vadd(_nan_max4(y2[2], y2[3], y3[2], y3[3]), b)
                if relu:
                    p00, p01, p10, p11 = vmax(p00, zero), vmax(p01, zero), vmax(p10, zero), vmax(p11, zero)
                for u in range(nrun):
                    a, nv, s, i, m = runs[vi, u, 0], runs[vi, u, 1], runs[vi, u, 2], runs[vi, u, 3], runs[vi, u, 4]
                    d = ((s * o_n + co) * ph2 + 2 * i) * pw2 + 2 * (m - a)
                    e1 = 2 * (a + nv) - max(0, 2 * (m + nv) - pw2)
                    vstore_pairs(of, d, p00, p01, 2 * a, e1)
                    if 2 * i + 1 < ph2:
                        vstore_pairs(of, d + pw2, p10, p11, 2 * a, e1)
                continue
            for u in range(nrun):
                a, nv, s, i, m = runs[vi, u, 0], runs[vi, u, 1], runs[vi, u, 2], runs[vi, u, 3], runs[vi, u, 4]
                d = ((s * o_n + co) * oh + 4 * i) * ow + 4 * (m - a)
                e0, e1 = 4 * a, 4 * (a + nv) - max(0, 4 * (m + nv) - ow)  # the last tile's columns past OW
                for row in range(min(4, oh - 4 * i)):
                    y = y0 if row == 0 else y1 if row == 1 else y2 if row == 2 else y3
                    v0, v1, v2, v3 = vadd(y[0], b), vadd(y[1], b), vadd(y[2], b), vadd(y[3], b)
                    if masked:
                        vstore_quads(mk, d + row * ow, v0, v1, v2, v3, e0, e1)
                    if relu:
                        v0, v1, v2, v3 = vmax(v0, zero), vmax(v1, zero), vmax(v2, zero), vmax(v3, zero)
                    vstore_quads(of, d + row * ow, v0, v1, v2, v3, e0, e1)


@njit(cache=True, nogil=True, error_model="numpy")
def _prefetch_outputs(of, q_lo, q_hi, geo):  # noqa: ANN001, ANN202
    """Prefetch for writing the output lines the tiles at local positions ``q_lo .. q_hi`` store (``geo`` as in
    :func:`_store_block`): issued before the chunk's GEMMs, so that its stores, which would otherwise each wait
    for their line to come from memory, find them in cache."""
    s0, ss, r, th, tw, oh, ow, o_n, pool, t = geo
    step = vlanes(of)
    sl_a, sl_b = q_lo // ss, (q_hi - 1) // ss
    i_a, i_b = (q_lo - sl_a * ss) // r, (q_hi - 1 - sl_b * ss) // r
    rows, cols = (oh // 2, ow // 2) if pool else (oh, ow)
    per_tile = t // 2 if pool else t  # output rows per tile row
    for sl in range(sl_a, sl_b + 1):
        lo = i_a if sl == sl_a else 0
        hi = min(i_b if sl == sl_b else th - 1, th - 1)
        r0, r1 = lo * per_tile, min((hi + 1) * per_tile, rows)
        if r0 >= r1:
            continue
        for co in range(o_n):
            plane = ((s0 + sl) * o_n + co) * rows
            for e in range((plane + r0) * cols, (plane + r1) * cols, step):
                prefetch(of, e, True)


@njit(cache=True, nogil=True)
def _winograd_range(x, ut, out, dims, bias, relu, mask, pws, vws, mws, offs, tile, t0, t1):  # noqa: ANN001, ANN202
    """Tasks ``t0 .. t1`` of ``pws.shape[0]``: each its share of the chunks of tile positions of the whole batch
    (``dims = (ph, pw, OH, OW, group, pool, chunk, vstep, mstep)``, the last two the strides of the frequencies
    in ``vws[t]`` and of the output channels in ``mws[t]``): planes of up to ``group`` samples at a time into
    ``pws[t]``, the input transform of a chunk into ``vws[t]``, its (t+2)^2 GEMMs (frequency-major) into ``mws[t]``,
    then per 8-channel block the output transform and epilogue into ``out`` (and ``mask`` when non-empty)."""
    ph, pw, oh, ow, group, pool, chunk, vstep, mstep = dims
    # the tile size is a compile-time constant: an empty array with t dims (one compiled function per tile size,
    # so that each holds only its own transforms: with both in one, the F(2x2) path ran 20-35% slower)
    tsize = tile.ndim
    n, c_n, h, w = x.shape
    nk, ncb = ut.shape[0], ut.shape[1]
    o_n = out.shape[1]
    th, tw = (oh + tsize - 1) // tsize, (ow + tsize - 1) // tsize
    r = tw + 1
    ss_flat = (th + 1) * r  # plane positions per sample
    # only the tiles that store, when a vector of them spans at most three runs of plane positions (a tile row
    # each); else every plane position, the last row and column of each sample computed and dropped
    lanes = vlanes(x)
    compact = 3 * tw >= lanes - 1 or (lanes % tw == 0 and chunk % tw == 0 and 4 * tw >= lanes)
    rw = tw if compact else r
    ss = th * rw if compact else ss_flat
    plen = pws.shape[1] // (tsize * tsize * c_n)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    mk = mask.reshape(-1)
    utf = ut.reshape(-1)
    total = n * ss
    nchunks = (total + chunk - 1) // chunk
    nt = pws.shape[0]
    runs = np.empty((chunk // vlanes(xf), vlanes(xf) + 2, 5), np.int64)
    nruns = np.empty(chunk // vlanes(xf), np.int64)
    segs = np.empty((chunk // vlanes(xf), 12), np.int64)
    for t in range(t0, t1):
        pl = pws[t]
        vt = vws[t]
        mt = mws[t]
        start = min(((t * nchunks) // nt) * chunk, total)
        end = min((((t + 1) * nchunks) // nt) * chunk, total)
        pos = start
        while pos < end:
            sa = pos // ss
            sb = min(sa + group, n)
            for sl in range(sb - sa):
                _build_planes(xf, (sa + sl) * c_n * h * w, c_n, h, w, pl, plen, sl * ss_flat, th, r, ph, pw, tsize)
            qend = min(end, sb * ss) - sa * ss
            geo = (sa, ss, rw, th, tw, oh, ow, o_n, pool, tsize)
            # the next group's input, fetched a share per chunk while this group computes
            nxt0 = sb * c_n * h * w
            nxt1 = min(sb + group, (end + ss - 1) // ss, n) * c_n * h * w
            q_first = pos - sa * ss
            nq = (qend - q_first + chunk - 1) // chunk
            for q0 in range(q_first, qend, chunk):
                share = (q0 - q_first) // chunk
                a0 = nxt0 + (nxt1 - nxt0) * share // nq
                a1 = nxt0 + (nxt1 - nxt0) * (share + 1) // nq
                for e in range(a0, a1, vlanes(xf)):
                    prefetch(xf, e, False)
                _prefetch_outputs(of, q0, min(q0 + chunk, qend), geo)
                # the chunk's columns, in whole register tiles (a group's last chunk may be short)
                ncols = -(-(min(q0 + chunk, qend) - q0) // (2 * vlanes(xf))) * 2 * vlanes(xf)
                _segments(q0, qend, ss, rw, ss_flat, r, ncols, vlanes(xf), segs)
                if tile.ndim == 2:
                    _transform_input(pl, plen, segs, c_n, r, vt, chunk, ncols, vstep)
                else:
                    _transform_input4(pl, plen, segs, c_n, r, vt, chunk, ncols, vstep)
                for v in range(ncols // vlanes(xf)):  # where each vector's tiles store
                    q = q0 + v * vlanes(xf)
                    nruns[v] = _tile_runs(q, min(q + vlanes(xf), qend), q, geo, runs[v])
                # frequency-major: each frequency's transformed input (C x chunk) stays in L1 across the blocks
                for k in range(nk):
                    for cb in range(ncb):
                        m0 = cb * 8 * mstep + k * chunk
                        woff = (k * ncb + cb) * c_n * 8
                        _tile_rows(vt, k * vstep, offs, utf, woff, mt[m0 : m0 + 8 * mstep], ncols, mstep)
                for cb in range(ncb):
                    rows = min(8, o_n - cb * 8)
                    if tile.ndim == 2:
                        _store_block(mt, chunk, ncols, mstep, cb, rows, geo, bias, relu, of, mk, runs, nruns)
                    else:
                        _store_block4(mt, chunk, ncols, mstep, cb, rows, geo, bias, relu, of, mk, runs, nruns)
            pos = sb * ss if sb * ss < end else end


_winograd_par, _winograd_ser = task_runners(
    _winograd_range, lambda x, ut, out, dims, bias, relu, mask, pws, vws, mws, offs, tile: pws.shape[0]
)

_NO_MASK = np.empty((0, 0, 0, 0), np.bool_)
#: the tile size as a type (see _winograd_range)
_TILE_TYPES = {2: np.empty((0, 0), np.int8), 4: np.empty((0, 0, 0, 0), np.int8)}


def _skew(n: int) -> int:
    """``n`` rounded up to a multiple of 1024 elements, plus 16: the stride between the blocks (one per frequency
    or channel) a kernel reads or writes in one step. A stride that is a multiple of 4 KiB maps them all to one
    L1 set, which holds 8 lines (measured: the transforms ran 3-5x slower)."""
    return -(-n // 1024) * 1024 + 16


def _tile_size(oh: int, ow: int, channels: int) -> int:
    """4 (F(4x4, 3x3)) or 2 for an ``oh x ow`` output with ``channels`` input + output channels (see
    :data:`WINOGRAD_F4_MIN_SIZE`)."""
    size = min(oh, ow)
    if size >= 2 * WINOGRAD_F4_MIN_SIZE or (size >= WINOGRAD_F4_MIN_SIZE and channels <= WINOGRAD_F4_MAX_CHANNELS):
        return 4
    return 2


def winograd_conv_runners(
    pads: tuple[int, int], min_parallel_macs: int, pool_hi_pads: tuple[int, int] | None = None, tile: int | None = None
) -> tuple[Callable[..., None], Callable[..., None], list[object]]:
    """``(run, serial, dispatchers)``: ``run(x, w, out, bias=None, relu=False, mask=None)`` computing the 3x3
    stride-1 convolution of ``x (N, C, H, W)`` with ``w (O, C, 3, 3)`` padded by ``pads = (ph, pw)`` at the
    top/left (the bottom/right padding follows from ``out``'s shape), plus a per-channel ``bias`` (any shape of
    O values) and then ReLU when ``relu``; a boolean ``mask`` like ``out`` receives ``conv + bias > 0``. With
    ``pool_hi_pads`` (the bottom/right padding) ``out`` is the 2x2 max pool of the result (floor mode). Split
    across the threads from ``min_parallel_macs`` direct multiply-adds; ``serial`` is the one-thread twin.
    ``tile``: the output tile, 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)); None picks by size and channel count
    (:data:`WINOGRAD_F4_MIN_SIZE`)."""
    ph, pw = pads
    buffer = _Workspaces()
    warmed = [False]  # both tile sizes compiled (see run)

    def make(parallel: bool) -> Callable[..., None]:
        def run(
            x: np.ndarray,
            w: np.ndarray,
            out: np.ndarray,
            bias: np.ndarray | None = None,
            relu: bool = False,
            mask: np.ndarray | None = None,
        ) -> None:
            x = np.ascontiguousarray(x)
            w = np.ascontiguousarray(w)
            oh, ow = _conv_out_size(out, x.shape, pads, pool_hi_pads, (2, 2))
            t = tile or _tile_size(oh, ow, x.shape[1] + w.shape[0])
            if tile is None and not warmed[0]:
                # which tile size a call takes depends on its image size, and each is its own compiled function:
                # the first call (compile's warm-up) also runs the other one first (same result; the chosen one
                # writes last), so that no image size compiles anything later
                warmed[0] = convolve(x, w, out, bias, relu, mask, oh, ow, 6 - t)
            convolve(x, w, out, bias, relu, mask, oh, ow, t)

        def convolve(
            x: np.ndarray,
            w: np.ndarray,
            out: np.ndarray,
            bias: np.ndarray | None,
            relu: bool,
            mask: np.ndarray | None,
            oh: int,
            ow: int,
            t: int,
        ) -> bool:
            """The convolution with tile size ``t``; whether the compiled kernel ran (not for empty inputs)."""
            n, c_n = x.shape[0], x.shape[1]
            o_n = w.shape[0]
            nk = (t + 2) * (t + 2)
            ncb = -(-o_n // 8)
            ut = buffer("u", nk * ncb * c_n * 8, w.dtype)[: nk * ncb * c_n * 8].reshape(nk, ncb, c_n, 8)
            _transform_weights(w, ut, t)
            bvec = _padded_bias(buffer, bias, o_n, out.dtype)
            if out.size == 0:
                return False
            if n == 0 or c_n == 0:
                _bias_alone(out, bvec, relu, mask)
                return False
            th, tw = (oh + t - 1) // t, (ow + t - 1) // t
            r = tw + 1
            ss = (th + 1) * r
            # the chunk's transformed input and GEMM results within L2: fewer tile positions for many channels
            per_column = (c_n + 8 * ncb) * nk * x.dtype.itemsize
            chunk = max(32, min(WINOGRAD_CHUNK, _CHUNK_BYTES // per_column // 32 * 32))
            lanes = lanes_for(x.dtype)
            group = max(1, min(n, _GROUP_BYTES // (t * t * c_n * ss * x.dtype.itemsize)))
            macs = out.size * c_n * 9 * (4 if pool_hi_pads is not None else 1)
            threads = get_num_threads()
            nchunks = -(-n * ss // chunk)
            # a batch smaller than the thread count splits one sample's tiles, each thread building its planes
            least = min_parallel_macs if n >= threads else 4 * min_parallel_macs
            nt = min(threads, nchunks) if parallel and macs >= least else 1
            plen = _skew(group * ss + chunk + r + 2 + lanes)
            vstep, mstep = _skew(c_n * chunk), _skew(nk * chunk)
            size = nt * t * t * c_n * plen
            old = buffer.arrays.get("p")
            pws = buffer("p", size, x.dtype)
            if pws is not old:  # zeroed when allocated: dropped tiles (unpacked rows) read past a group's planes
                pws[:] = 0
            pws = pws[:size].reshape(nt, t * t * c_n * plen)
            vws = buffer("v", nt * nk * vstep, x.dtype)[: nt * nk * vstep].reshape(nt, -1)
            mws = buffer("m", nt * ncb * 8 * mstep, x.dtype)[: nt * ncb * 8 * mstep].reshape(nt, -1)
            offs = buffer("o", c_n, np.dtype(np.int64))[:c_n]
            offs[:] = np.arange(c_n) * chunk
            dims = (ph, pw, oh, ow, group, int(pool_hi_pads is not None), chunk, vstep, mstep)
            m = _NO_MASK if mask is None else mask
            (_winograd_par if nt > 1 else _winograd_ser)(
                x, ut, out, dims, bvec, relu, m, pws, vws, mws, offs, _TILE_TYPES[t]
            )
            return True

        return run

    return make(True), make(False), winograd_conv_dispatchers()


def winograd_conv_dispatchers() -> list[object]:
    """The compiled functions behind :func:`winograd_conv_runners` (compile statistics count them)."""
    return [
        _winograd_range,
        _transform_input4,
        _store_block4,
        _tile_runs,
        _segments,
        _transform_taps,
        gemm,
        _build_planes,
        _transform_input,
        _output_tile,
        _store_block,
        _prefetch_outputs,
        _tile_rows,
    ]
