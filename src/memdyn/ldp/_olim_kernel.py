"""numba kernel of :func:`memdyn.ldp.quasipotential_grid` (see :mod:`memdyn.ldp.olim` for the
method). Kept apart so that importing memdyn does not import numba."""

import heapq
import math

import numba
import numpy as np


@numba.njit(cache=True, fastmath=False)
def _norm(m11, m12, m22, vx, vy):
    return math.sqrt(max(vx * (m11 * vx + m12 * vy) + vy * (m12 * vx + m22 * vy), 0.0))


@numba.njit(cache=True)
def _g(vx, vy, bx, by, dvx, dvy, dbx, dby, m11, m12, m22):
    """Action density g = |v|_M |b|_M - <v, b>_M and its derivative along (dv, db)."""
    nb = _norm(m11, m12, m22, bx, by)
    nv = _norm(m11, m12, m22, vx, vy)
    v_b = vx * (m11 * bx + m12 * by) + vy * (m12 * bx + m22 * by)
    b_db = bx * (m11 * dbx + m12 * dby) + by * (m12 * dbx + m22 * dby)
    v_dv = vx * (m11 * dvx + m12 * dvy) + vy * (m12 * dvx + m22 * dvy)
    dv_b = dvx * (m11 * bx + m12 * by) + dvy * (m12 * bx + m22 * by)
    v_db = vx * (m11 * dbx + m12 * dby) + vy * (m12 * dbx + m22 * dby)
    g = nv * nb - v_b
    dg = b_db / max(nb, 1e-300) * nv + nb * v_dv / max(nv, 1e-300) - dv_b - v_db
    return g, dg


@numba.njit(cache=True)
def _segment(bsx, bsy, bmx, bmy, bex, bey, m11, m12, m22, vx, vy):
    """Geometric action of the straight segment v, Simpson's rule in b (start, middle, end)."""
    g0, _ = _g(vx, vy, bsx, bsy, 0.0, 0.0, 0.0, 0.0, m11, m12, m22)
    g1, _ = _g(vx, vy, bmx, bmy, 0.0, 0.0, 0.0, 0.0, m11, m12, m22)
    g2, _ = _g(vx, vy, bex, bey, 0.0, 0.0, 0.0, 0.0, m11, m12, m22)
    return (g0 + 4.0 * g1 + g2) / 6.0


@numba.njit(cache=True)
def _tri_f(lam, U0, dU, c2, v0x, v0y, ex, ey, B, m11, m12, m22):
    """U(p_lambda) + Simpson action of y - p_lambda and its lambda-derivative; B holds b at
    p0, p1, mid(p0, y), mid(p1, y), y (rows)."""
    vx, vy = v0x - lam * ex, v0y - lam * ey
    f = U0 + lam * dU - 0.5 * c2 * lam * (1.0 - lam)
    df = dU - 0.5 * c2 * (1.0 - 2.0 * lam)
    for r, w in ((0, 1.0), (2, 4.0), (4, 1.0)):
        if r == 4:
            bx, by, dbx, dby = B[4, 0], B[4, 1], 0.0, 0.0
        else:
            dbx, dby = B[r + 1, 0] - B[r, 0], B[r + 1, 1] - B[r, 1]
            bx, by = B[r, 0] + lam * dbx, B[r, 1] + lam * dby
        g, dg = _g(vx, vy, bx, by, -ex, -ey, dbx, dby, m11, m12, m22)
        f += w * g / 6.0
        df += w * dg / 6.0
    return f, df


@numba.njit(cache=True)
def _triangle(U0, U1, c2, v0x, v0y, ex, ey, B, m11, m12, m22):
    """min over lambda in (0, 1) of U(p_lambda) + S(y - p_lambda), or inf when the minimum is at
    an end (those are one-point updates)."""
    dU = U1 - U0
    lo, hi = 0.0, 1.0
    _, glo = _tri_f(lo, U0, dU, c2, v0x, v0y, ex, ey, B, m11, m12, m22)
    _, ghi = _tri_f(hi, U0, dU, c2, v0x, v0y, ex, ey, B, m11, m12, m22)
    if glo >= 0.0 or ghi <= 0.0:
        return np.inf
    # Illinois regula falsi on f'(lambda) = 0
    lam = 0.5
    side = 0
    for _ in range(60):
        lam = (lo * ghi - hi * glo) / (ghi - glo)
        _, g = _tri_f(lam, U0, dU, c2, v0x, v0y, ex, ey, B, m11, m12, m22)
        if g > 0.0:
            hi, ghi = lam, g
            if side == -1:
                glo *= 0.5
            side = -1
        else:
            lo, glo = lam, g
            if side == 1:
                ghi *= 0.5
            side = 1
        if hi - lo < 1e-12 or abs(g) < 1e-14:
            break
    f, _ = _tri_f(lam, U0, dU, c2, v0x, v0y, ex, ey, B, m11, m12, m22)
    return f


@numba.njit(cache=True)
def sweep(U, frozen, xs, ys, Bh, Mh, oi, oj, vmax):
    nx, ny = xs.size, ys.size
    status = np.zeros(nx * ny, np.int8)  # 0 far, 1 considered, 2 accepted
    heap = [(0.0, 0)]
    heap.pop()
    for k in range(nx * ny):
        if frozen[k]:
            status[k] = 1
            heapq.heappush(heap, (U[k], k))
    ni = np.array([1, 1, 0, -1, -1, -1, 0, 1])
    nj = np.array([0, 1, 1, 1, 0, -1, -1, -1])
    n_acc = 0
    Bt = np.empty((5, 2))
    while len(heap) > 0:
        u, k = heapq.heappop(heap)
        if status[k] == 2 or u > U[k]:
            continue
        status[k] = 2
        n_acc += 1
        if u > vmax:
            break
        i, j = k // ny, k % ny
        for t in range(oi.size):
            yi, yj = i + oi[t], j + oj[t]
            if yi < 0 or yi >= nx or yj < 0 or yj >= ny:
                continue
            ky = yi * ny + yj
            if status[ky] == 2 or frozen[ky]:
                continue
            mi, mj = i + yi, j + yj
            v0x, v0y = xs[yi] - xs[i], ys[yj] - ys[j]
            q = U[k] + _segment(Bh[2 * i, 2 * j, 0], Bh[2 * i, 2 * j, 1], Bh[mi, mj, 0], Bh[mi, mj, 1],
                                Bh[2 * yi, 2 * yj, 0], Bh[2 * yi, 2 * yj, 1], Mh[mi, mj, 0], Mh[mi, mj, 1],
                                Mh[mi, mj, 2], v0x, v0y)
            # hierarchical update (as in OLIM): triangles only around a base point whose own segment
            # improves on the current value; this cuts the work several-fold at no measured loss
            if q >= U[ky]:
                continue
            for s in range(8):
                i1, j1 = i + ni[s], j + nj[s]
                if i1 < 0 or i1 >= nx or j1 < 0 or j1 >= ny:
                    continue
                k1 = i1 * ny + j1
                if status[k1] != 2:
                    continue
                ai, aj = i1 + yi, j1 + yj
                for c in range(2):
                    Bt[0, c] = Bh[2 * i, 2 * j, c]
                    Bt[1, c] = Bh[2 * i1, 2 * j1, c]
                    Bt[2, c] = Bh[mi, mj, c]
                    Bt[3, c] = Bh[ai, aj, c]
                    Bt[4, c] = Bh[2 * yi, 2 * yj, c]
                # second difference of V along the edge, from an accepted point beyond either end:
                # quadratic rather than linear interpolation of V between p and p1
                c2 = 0.0
                i2, j2 = i - ni[s], j - nj[s]
                i3, j3 = i1 + ni[s], j1 + nj[s]
                if 0 <= i2 < nx and 0 <= j2 < ny and status[i2 * ny + j2] == 2:
                    c2 = U[i2 * ny + j2] - 2.0 * U[k] + U[k1]
                elif 0 <= i3 < nx and 0 <= j3 < ny and status[i3 * ny + j3] == 2:
                    c2 = U[k] - 2.0 * U[k1] + U[i3 * ny + j3]
                qt = _triangle(U[k], U[k1], c2, v0x, v0y, xs[i1] - xs[i], ys[j1] - ys[j], Bt,
                               0.5 * (Mh[mi, mj, 0] + Mh[ai, aj, 0]), 0.5 * (Mh[mi, mj, 1] + Mh[ai, aj, 1]),
                               0.5 * (Mh[mi, mj, 2] + Mh[ai, aj, 2]))
                if qt < q:
                    q = qt
            if q < U[ky]:
                U[ky] = q
                status[ky] = 1
                heapq.heappush(heap, (q, ky))
    for k in range(nx * ny):
        if status[k] != 2:
            U[k] = np.inf
    return n_acc
