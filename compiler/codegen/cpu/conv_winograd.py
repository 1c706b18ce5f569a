"""Winograd F(2x2, 3x3): the forward pass of 3x3, stride-1, undilated, ungrouped convolutions in 16/36 of the
multiplications (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

Each 2x2 output tile ``Y`` of an output channel comes from the 4x4 input patch ``d`` at twice its position::

    Y = A^T [ sum_c (G g_c G^T) * (B^T d_c B) ] A          (* elementwise over the 4x4 "frequencies" k)

so per tile the 9 x 4 multiply-adds per input channel of a direct convolution become 16, in 16 independent
GEMMs ``M[k] (O x T) = U[k] (O x C) @ V[k] (C x T)`` over the tiles T, with ``U = G g G^T`` transformed once
per call and ``V = B^T d B`` per tile: 16 loads and 32 additions per tile and channel. The GEMMs run on the
register tile of :mod:`compiler.codegen.cpu.conv_simd` (8 output channels x 2 vectors of tiles).

The layout trick: each channel of the zero-padded input is split into its four polyphase planes (even/odd
rows x even/odd columns), each ``(TH + 1) x (TW + 1)`` (TH x TW tiles). Over the *flat* index ``t = i*(TW+1)
+ m`` of tile ``(i, m)``, every one of the 16 patch values ``d[a][b]`` is then plane ``(a%2, b%2)`` at the
constant offset ``(a//2)*(TW+1) + b//2``: the input transform is 16 contiguous vector loads per channel, like
the taps of the direct kernel. Column ``m = TW`` and row ``i = TH`` of each plane only feed their neighbours;
the tiles there are computed and dropped. Samples lie one after another in the planes, so one flat loop runs
over a whole group of samples and the dropped tiles are the only waste (11% for 16x16 tiles, 21% for 8x8).

The output transform runs on each 8-channel block of ``M`` while it is in L1, with the epilogue the direct
kernel applies (per-channel bias, ReLU, the boolean ReLU mask of a training step, or a following 2x2 max
pool, whose windows are exactly the 2x2 tiles), and stores with masked vector stores (:func:`vstore_pairs`
interleaves the two columns of a tile row), so every output element is written once and no thread writes
past its range: the work splits across threads at any tile, batch-1 inference included.

Accuracy: the transforms only add, subtract and halve, so float32 results differ from the direct sum by a few
ulp of the largest partial sums (``tests/test_cpu_conv_winograd.py`` checks them against a float64 reference).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from compiler.codegen.cpu.conv_simd import _bias_alone, _padded_bias, _tile_rows, _Workspaces
from compiler.codegen.cpu.parallel import get_num_threads, task_runners
from compiler.codegen.cpu.simd import (
    lanes_for,
    prefetch,
    vadd,
    vlanes,
    vload,
    vload_strided2,
    vmax,
    vsplat,
    vstore,
    vstore_lanes,
    vstore_pairs,
    vsub,
    vzero,
)

__all__ = ["WINOGRAD_CHUNK", "winograd_applies", "winograd_conv_dispatchers", "winograd_conv_runners"]

#: tile positions per chunk: the chunk's transformed input (16 x C x chunk values) and one 8-channel block of
#: its GEMM results (16 x 8 x chunk) stay in L2/L1; a multiple of every vector pair width (32 float32 values)
WINOGRAD_CHUNK = 128

#: the planes of at most this many bytes of samples are built at once (per thread), so that they stay in L2
_GROUP_BYTES = 256 * 1024


def winograd_applies(w_shape: tuple, stride: tuple, dilation: tuple, groups: int) -> bool:
    """Whether a forward convolution with weights ``w_shape`` can run F(2x2, 3x3): 2-d, 3x3, stride 1,
    undilated, ungrouped."""
    return (
        len(w_shape) == 4
        and tuple(w_shape[2:]) == (3, 3)
        and tuple(stride) == (1, 1)
        and tuple(dilation) == (1, 1)
        and groups == 1
    )


@njit(cache=True)
def _transform_weights(w, ut):  # noqa: ANN001, ANN202
    """``ut (16, NCB, C, 8)``: ``U = G g G^T`` of each 3x3 filter ``g = w[o, c]`` (computed in float64), at
    ``ut[k, o // 8, c, o % 8]`` with ``k = 4*row + col``; zero past the last output channel."""
    o_n, c_n = w.shape[0], w.shape[1]
    ut[:] = 0
    t = np.empty((4, 3))
    for o in range(o_n):
        for c in range(c_n):
            for s in range(3):
                g0, g1, g2 = np.float64(w[o, c, 0, s]), np.float64(w[o, c, 1, s]), np.float64(w[o, c, 2, s])
                t[0, s] = g0
                t[1, s] = 0.5 * (g0 + g1 + g2)
                t[2, s] = 0.5 * (g0 - g1 + g2)
                t[3, s] = g2
            for a in range(4):
                u = (t[a, 0], 0.5 * (t[a, 0] + t[a, 1] + t[a, 2]), 0.5 * (t[a, 0] - t[a, 1] + t[a, 2]), t[a, 2])
                for b in range(4):
                    ut[4 * a + b, o // 8, c, o % 8] = u[b]


@njit(cache=True, nogil=True, error_model="numpy")
def _build_planes(xf, src, c_n, h, w, pl, plen, off, th, r, ph, pw):  # noqa: ANN001, ANN202
    """The polyphase planes of the sample at flat offset ``src`` of ``xf`` (C, H, W), padded by (ph, pw) at the
    top/left and with zeros past its end: ``pl[(c*4 + 2*pr + pc)*plen + off + i*r + m] = xpad[c, 2i+pr,
    2m+pc]`` for ``i <= th``, ``m < r``. Explicit vectors (:func:`vload_strided2` splits a row's even and odd
    columns, masked at its ends): LLVM's vectoriser left rows of 16-17 columns in its scalar remainder."""
    lanes = vlanes(pl)
    zero = vzero(pl)
    for c in range(c_n):
        for i in range(th + 1):
            for pr in range(2):  # the rows of the sample in order, for the hardware prefetcher
                y = 2 * i + pr - ph
                d0 = (c * 4 + 2 * pr) * plen + off + i * r
                d1 = d0 + plen
                inside = 0 <= y < h
                s = src + (c * h + y) * w - pw  # padded column x of the row is xf[s + x]
                for m0 in range(0, r, lanes):
                    n = min(lanes, r - m0)
                    if inside:
                        # stream element e = padded column 2*m0 + e; real columns pw .. pw + w - 1
                        lo, hi = pw - 2 * m0, pw + w - 2 * m0
                        vstore_lanes(pl, d0 + m0, vload_strided2(xf, s + 2 * m0, lo, hi, 0), 0, n)
                        vstore_lanes(pl, d1 + m0, vload_strided2(xf, s + 2 * m0, lo, hi, 1), 0, n)
                    else:
                        vstore_lanes(pl, d0 + m0, zero, 0, n)
                        vstore_lanes(pl, d1 + m0, zero, 0, n)


@njit(cache=True, nogil=True, error_model="numpy")
def _transform_input(pl, plen, q0, c_n, r, vt, chunk, step):  # noqa: ANN001, ANN202
    """``vt[k*step + c*chunk + p] = (B^T d B)[k]`` of the tiles at flat positions ``q0 + p``, ``p < chunk``."""
    lanes = vlanes(pl)
    for c in range(c_n):
        e0 = c * 4 * plen + q0  # even rows, even columns
        e1 = e0 + plen  # even rows, odd columns
        o0 = e1 + plen  # odd rows, even columns
        o1 = o0 + plen
        for p in range(0, chunk, lanes):
            # patch rows a = 0..3: plane row parity a % 2, row offset (a // 2) * r
            d00, d01, d02, d03 = vload(pl, e0 + p), vload(pl, e1 + p), vload(pl, e0 + p + 1), vload(pl, e1 + p + 1)
            d10, d11, d12, d13 = vload(pl, o0 + p), vload(pl, o1 + p), vload(pl, o0 + p + 1), vload(pl, o1 + p + 1)
            e0r, e1r, o0r, o1r = e0 + p + r, e1 + p + r, o0 + p + r, o1 + p + r
            d20, d21, d22, d23 = vload(pl, e0r), vload(pl, e1r), vload(pl, e0r + 1), vload(pl, e1r + 1)
            d30, d31, d32, d33 = vload(pl, o0r), vload(pl, o1r), vload(pl, o0r + 1), vload(pl, o1r + 1)
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
def _store_block(mf, chunk, mrow, q0, qend, cb, rows, geo, bias, relu, of, mk, runs):  # noqa: ANN001, ANN202
    """Output transform + epilogue of block ``cb`` (``rows`` channels) of the chunk at local flat position
    ``q0`` (``mf``: per channel, ``mrow`` apart, its 16 frequencies' rows of ``chunk`` values), stored for the
    tiles before ``qend``. ``geo = (s0, S, R, TH, TW, OH, OW, O, pool)``: the group's first sample and the plane
    geometry, the output size and channel count, and whether ``of`` is the 2x2 max pool. ``runs``: scratch for
    one vector's runs of stored tiles."""
    s0, ss, r, th, tw, oh, ow, o_n, pool = geo
    lanes = vlanes(mf)
    zero = vzero(mf)
    masked = mk.shape[0] > 0
    pw2, ph2 = ow // 2, oh // 2
    cols, tile_rows = (pw2, ph2) if pool else (tw, th)
    plane = ph2 * pw2 if pool else oh * ow  # the output's channel stride
    for p in range(0, chunk, lanes):
        # the vector's tiles that are stored, as runs along tile rows: (first lane, count, output offset of the
        # block's first channel, end of the pair stream, whether a second output row exists)
        q = q0 + p
        lim = min(q + lanes, qend)
        if q >= lim:
            break
        sl = q // ss
        rem = q - sl * ss
        i = rem // r
        m = rem - i * r
        nrun = 0
        while q < lim:
            n = min(lim - q, r - m)
            nv = min(n, cols - m)
            if i < tile_rows and nv > 0:
                a = q - q0 - p
                ch0 = (s0 + sl) * o_n + cb * 8
                runs[nrun, 0] = a
                runs[nrun, 1] = a + nv
                if pool:
                    runs[nrun, 2] = (ch0 * ph2 + i) * pw2 + m - a
                else:
                    runs[nrun, 2] = (ch0 * oh + 2 * i) * ow + 2 * (m - a)
                    runs[nrun, 3] = 2 * (a + nv) - (1 if (m + nv == tw and ow % 2) else 0)
                    runs[nrun, 4] = 2 * i + 1 < oh
                nrun += 1
            q += n
            m += n
            if m == r:
                m = 0
                i += 1
                if i == th + 1:
                    i = 0
                    sl += 1
        if nrun == 0:
            continue
        for j in range(rows):
            y00, y01, y10, y11 = _output_tile(mf, (cb * 8 + j) * mrow, p, chunk, chunk)
            b = vsplat(zero, bias[cb * 8 + j])
            if pool:
                v = vadd(vmax(vmax(y00, y01), vmax(y10, y11)), b)
                if relu:
                    v = vmax(v, zero)
                for u in range(nrun):
                    vstore_lanes(of, runs[u, 2] + j * plane, v, runs[u, 0], runs[u, 1])
                continue
            y00, y01, y10, y11 = vadd(y00, b), vadd(y01, b), vadd(y10, b), vadd(y11, b)
            r00, r01, r10, r11 = y00, y01, y10, y11
            if relu:
                r00, r01, r10, r11 = vmax(y00, zero), vmax(y01, zero), vmax(y10, zero), vmax(y11, zero)
            for u in range(nrun):
                d, e0, e1 = runs[u, 2] + j * plane, 2 * runs[u, 0], runs[u, 3]
                if masked:
                    vstore_pairs(mk, d, y00, y01, e0, e1)
                vstore_pairs(of, d, r00, r01, e0, e1)
                if runs[u, 4]:
                    if masked:
                        vstore_pairs(mk, d + ow, y10, y11, e0, e1)
                    vstore_pairs(of, d + ow, r10, r11, e0, e1)


@njit(cache=True, nogil=True, error_model="numpy")
def _prefetch_outputs(of, q_lo, q_hi, geo):  # noqa: ANN001, ANN202
    """Prefetch for writing the output lines the tiles at local positions ``q_lo .. q_hi`` store (``geo`` as in
    :func:`_store_block`): issued before the chunk's GEMMs, so that its stores, which would otherwise each wait
    for their line to come from memory, find them in cache."""
    s0, ss, r, th, tw, oh, ow, o_n, pool = geo
    step = vlanes(of)
    sl_a, sl_b = q_lo // ss, (q_hi - 1) // ss
    i_a, i_b = (q_lo - sl_a * ss) // r, (q_hi - 1 - sl_b * ss) // r
    rows, cols = (oh // 2, ow // 2) if pool else (oh, ow)
    for sl in range(sl_a, sl_b + 1):
        lo = i_a if sl == sl_a else 0
        hi = min(i_b if sl == sl_b else th - 1, th - 1)
        r0, r1 = (lo, min(hi + 1, rows)) if pool else (2 * lo, min(2 * hi + 2, rows))
        if r0 >= r1:
            continue
        for co in range(o_n):
            plane = ((s0 + sl) * o_n + co) * rows
            for e in range((plane + r0) * cols, (plane + r1) * cols, step):
                prefetch(of, e, True)


@njit(cache=True, nogil=True)
def _winograd_range(x, ut, out, dims, bias, relu, mask, pws, vws, mws, offs, t0, t1):  # noqa: ANN001, ANN202
    """Tasks ``t0 .. t1`` of ``pws.shape[0]``: each its share of the chunks of tile positions of the whole batch
    (``dims = (ph, pw, OH, OW, group, pool, chunk, vstep, mstep)``, the last two the strides of the frequencies
    in ``vws[t]`` and of the output channels in ``mws[t]``): planes of up to ``group`` samples at a time into
    ``pws[t]``, the input transform of a chunk into ``vws[t]``, its 16 GEMMs (frequency-major) into ``mws[t]``,
    then per 8-channel block the output transform and epilogue into ``out`` (and ``mask`` when non-empty)."""
    ph, pw, oh, ow, group, pool, chunk, vstep, mstep = dims
    n, c_n, h, w = x.shape
    ncb = ut.shape[1]
    o_n = out.shape[1]
    th, tw = (oh + 1) // 2, (ow + 1) // 2
    r = tw + 1
    ss = (th + 1) * r
    plen = pws.shape[1] // (4 * c_n)
    xf = x.reshape(-1)
    of = out.reshape(-1)
    mk = mask.reshape(-1)
    utf = ut.reshape(-1)
    total = n * ss
    nchunks = (total + chunk - 1) // chunk
    nt = pws.shape[0]
    runs = np.empty((vlanes(xf) + 2, 5), np.int64)
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
                _build_planes(xf, (sa + sl) * c_n * h * w, c_n, h, w, pl, plen, sl * ss, th, r, ph, pw)
            qend = min(end, sb * ss) - sa * ss
            geo = (sa, ss, r, th, tw, oh, ow, o_n, pool)
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
                _transform_input(pl, plen, q0, c_n, r, vt, chunk, vstep)
                # frequency-major: each frequency's transformed input (C x chunk) stays in L1 across the blocks
                for k in range(16):
                    for cb in range(ncb):
                        m0 = cb * 8 * mstep + k * chunk
                        woff = (k * ncb + cb) * c_n * 8
                        _tile_rows(vt, k * vstep, offs, utf, woff, mt[m0 : m0 + 8 * mstep], chunk, mstep)
                for cb in range(ncb):
                    rows = min(8, o_n - cb * 8)
                    _store_block(mt, chunk, mstep, q0, qend, cb, rows, geo, bias, relu, of, mk, runs)
            pos = sb * ss if sb * ss < end else end


_winograd_par, _winograd_ser = task_runners(
    _winograd_range, lambda x, ut, out, dims, bias, relu, mask, pws, vws, mws, offs: pws.shape[0]
)

_NO_MASK = np.empty((0, 0, 0, 0), np.bool_)


def _skew(n: int) -> int:
    """``n`` rounded up to a multiple of 1024 elements, plus 16: the stride between the 16 blocks a kernel reads
    or writes in one step. A stride that is a multiple of 4 KiB maps them all to one L1 set, which holds 8
    lines (measured: the transforms ran 3-5x slower)."""
    return -(-n // 1024) * 1024 + 16


def winograd_conv_runners(
    pads: tuple[int, int], min_parallel_macs: int, pool_hi_pads: tuple[int, int] | None = None
) -> tuple[Callable[..., None], Callable[..., None], list[object]]:
    """``(run, serial, dispatchers)``: ``run(x, w, out, bias=None, relu=False, mask=None)`` computing the 3x3
    stride-1 convolution of ``x (N, C, H, W)`` with ``w (O, C, 3, 3)`` padded by ``pads = (ph, pw)`` at the
    top/left (the bottom/right padding follows from ``out``'s shape), plus a per-channel ``bias`` (any shape of
    O values) and then ReLU when ``relu``; a boolean ``mask`` like ``out`` receives ``conv + bias > 0``. With
    ``pool_hi_pads`` (the bottom/right padding) ``out`` is the 2x2 max pool of the result (floor mode). Split
    across the threads from ``min_parallel_macs`` direct multiply-adds; ``serial`` is the one-thread twin."""
    ph, pw = pads
    buffer = _Workspaces()

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
            n, c_n, h, wd = x.shape
            o_n = w.shape[0]
            if pool_hi_pads is None:
                oh, ow = out.shape[2], out.shape[3]
            else:
                oh, ow = h + ph + pool_hi_pads[0] - 2, wd + pw + pool_hi_pads[1] - 2
                if out.shape[2:] != (oh // 2, ow // 2):
                    raise ValueError(f"conv+max_pool: output {out.shape} is not the 2x2 pool of ({oh}, {ow})")
            ncb = -(-o_n // 8)
            ut = buffer("u", 16 * ncb * c_n * 8, w.dtype)[: 16 * ncb * c_n * 8].reshape(16, ncb, c_n, 8)
            _transform_weights(w, ut)
            bvec = _padded_bias(buffer, bias, o_n, out.dtype)
            if out.size == 0:
                return
            if n == 0 or c_n == 0:
                _bias_alone(out, bvec, relu, mask)
                return
            th, tw = (oh + 1) // 2, (ow + 1) // 2
            r = tw + 1
            ss = (th + 1) * r
            chunk = WINOGRAD_CHUNK
            lanes = lanes_for(x.dtype)
            group = max(1, min(n, _GROUP_BYTES // (4 * c_n * ss * x.dtype.itemsize)))
            macs = out.size * c_n * 9 * (4 if pool_hi_pads is not None else 1)
            threads = get_num_threads()
            nchunks = -(-n * ss // chunk)
            # a batch smaller than the thread count splits one sample's tiles, each thread building its planes
            least = min_parallel_macs if n >= threads else 4 * min_parallel_macs
            nt = min(threads, nchunks) if parallel and macs >= least else 1
            plen = _skew(group * ss + chunk + r + 2 + lanes)
            vstep, mstep = _skew(c_n * chunk), _skew(16 * chunk)
            size = nt * 4 * c_n * plen
            old = buffer.arrays.get("p")
            pws = buffer("p", size, x.dtype)
            if pws is not old:  # zeroed when allocated: the tiles computed and dropped read past a group's planes
                pws[:] = 0
            pws = pws[:size].reshape(nt, 4 * c_n * plen)
            vws = buffer("v", nt * 16 * vstep, x.dtype)[: nt * 16 * vstep].reshape(nt, -1)
            mws = buffer("m", nt * ncb * 8 * mstep, x.dtype)[: nt * ncb * 8 * mstep].reshape(nt, -1)
            offs = buffer("o", c_n, np.dtype(np.int64))[:c_n]
            offs[:] = np.arange(c_n) * chunk
            dims = (ph, pw, oh, ow, group, int(pool_hi_pads is not None), chunk, vstep, mstep)
            m = _NO_MASK if mask is None else mask
            (_winograd_par if nt > 1 else _winograd_ser)(x, ut, out, dims, bvec, relu, m, pws, vws, mws, offs)

        return run

    return make(True), make(False), winograd_conv_dispatchers()


def winograd_conv_dispatchers() -> list[object]:
    """The compiled functions behind :func:`winograd_conv_runners` (compile statistics count them)."""
    return [
        _winograd_range,
        _transform_weights,
        _build_planes,
        _transform_input,
        _output_tile,
        _store_block,
        _tile_rows,
    ]
