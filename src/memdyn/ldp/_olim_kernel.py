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
def _dot(m11, m12, m22, ux, uy, vx, vy):
    return ux * (m11 * vx + m12 * vy) + uy * (m12 * vx + m22 * vy)


@numba.njit(cache=True)
def _end_terms(wx, wy, bx, by, nx_, ny_, sgn, m11, m12, m22):
    """g at an end node of the arc, where the tangent is w = v + sgn 4c n and b is fixed, and its
    first two derivatives in c."""
    nw = max(_norm(m11, m12, m22, wx, wy), 1e-100)
    nb = _norm(m11, m12, m22, bx, by)
    w_n = _dot(m11, m12, m22, wx, wy, nx_, ny_)
    n_n = _dot(m11, m12, m22, nx_, ny_, nx_, ny_)
    g = nw * nb - _dot(m11, m12, m22, wx, wy, bx, by)
    dg = 4.0 * sgn * (w_n / nw * nb - _dot(m11, m12, m22, nx_, ny_, bx, by))
    d2g = 16.0 * nb * (n_n / nw - w_n * w_n / nw**3)
    return g, dg, d2g


@numba.njit(cache=True)
def _arc_action(c, vx, vy, b0x, b0y, bmx, bmy, jnx, jny, b1x, b1y, m11, m12, m22):
    """Simpson action of the arc p + s v + 4 s (1 - s) c n, n = v turned by 90 degrees, and its
    first two derivatives in c. b at the displaced midpoint is b_m + c J n (J at the chord midpoint)."""
    nx_, ny_ = -vy, vx
    g0, d0, e0 = _end_terms(vx + 4.0 * c * nx_, vy + 4.0 * c * ny_, b0x, b0y, nx_, ny_, 1.0, m11, m12, m22)
    g1, d1, e1 = _end_terms(vx - 4.0 * c * nx_, vy - 4.0 * c * ny_, b1x, b1y, nx_, ny_, -1.0, m11, m12, m22)
    bx, by = bmx + c * jnx, bmy + c * jny
    nv = _norm(m11, m12, m22, vx, vy)
    nb = max(_norm(m11, m12, m22, bx, by), 1e-100)
    b_j = _dot(m11, m12, m22, bx, by, jnx, jny)
    j_j = _dot(m11, m12, m22, jnx, jny, jnx, jny)
    gm = nv * nb - _dot(m11, m12, m22, vx, vy, bx, by)
    dm = nv * b_j / nb - _dot(m11, m12, m22, vx, vy, jnx, jny)
    em = nv * (j_j / nb - b_j * b_j / nb**3)
    return (g0 + 4.0 * gm + g1) / 6.0, (d0 + 4.0 * dm + d1) / 6.0, (e0 + 4.0 * em + e1) / 6.0


@numba.njit(cache=True)
def _arc(vx, vy, b0x, b0y, bmx, bmy, jxx, jxy, jyx, jyy, b1x, b1y, m11, m12, m22):
    """Least Simpson action over the arcs p -> p + v of :func:`_arc_action` (Newton's method in the
    bulge c, from the straight chord c = 0) and the bulge that attains it."""
    nx_, ny_ = -vy, vx
    jnx, jny = jxx * nx_ + jxy * ny_, jyx * nx_ + jyy * ny_
    s0, ds, d2s = _arc_action(0.0, vx, vy, b0x, b0y, bmx, bmy, jnx, jny, b1x, b1y, m11, m12, m22)
    best, cbest, c = s0, 0.0, 0.0
    for _ in range(6):
        if not d2s > 0.0:
            break
        step = min(max(-ds / d2s, -0.125), 0.125)
        c = min(max(c + step, -0.5), 0.5)
        s, ds, d2s = _arc_action(c, vx, vy, b0x, b0y, bmx, bmy, jnx, jny, b1x, b1y, m11, m12, m22)
        if s < best:
            best, cbest = s, c
        if abs(step) < 1e-7:
            break
    return best, cbest


@numba.njit(cache=True)
def _tri_f(lam, U0, dU, c2, v0x, v0y, ex, ey, c, J, B, m11, m12, m22):
    """U(p_lambda) + Simpson action of the arc p_lambda -> y with bulge c, and its lambda-derivative.

    B holds b at p0, p1, mid(p0, y), mid(p1, y), y (rows); J = db/dx (xx, xy, yx, yy) near the
    midpoints. With v(lambda) = y - p_lambda and n its normal, the tangents at the three Simpson
    nodes are v + 4c n, v, v - 4c n, and b at the displaced midpoint is b_mid + c J n: all linear
    in lambda."""
    f = U0 + lam * dU - 0.5 * c2 * lam * (1.0 - lam)
    df = dU - 0.5 * c2 * (1.0 - 2.0 * lam)
    vx, vy = v0x - lam * ex, v0y - lam * ey
    nx_, ny_ = -vy, vx
    rx, ry = -ey, ex  # e turned by 90 degrees: dn/dlambda = -r
    dbx, dby = B[1, 0] - B[0, 0], B[1, 1] - B[0, 1]
    g, dg = _g(vx + 4.0 * c * nx_, vy + 4.0 * c * ny_, B[0, 0] + lam * dbx, B[0, 1] + lam * dby,
               -ex - 4.0 * c * rx, -ey - 4.0 * c * ry, dbx, dby, m11, m12, m22)
    f += g / 6.0
    df += dg / 6.0
    jnx, jny = J[0] * nx_ + J[1] * ny_, J[2] * nx_ + J[3] * ny_
    jrx, jry = J[0] * rx + J[1] * ry, J[2] * rx + J[3] * ry
    dbx, dby = B[3, 0] - B[2, 0] - c * jrx, B[3, 1] - B[2, 1] - c * jry
    g, dg = _g(vx, vy, B[2, 0] + lam * (B[3, 0] - B[2, 0]) + c * jnx, B[2, 1] + lam * (B[3, 1] - B[2, 1]) + c * jny,
               -ex, -ey, dbx, dby, m11, m12, m22)
    f += 4.0 * g / 6.0
    df += 4.0 * dg / 6.0
    g, dg = _g(vx - 4.0 * c * nx_, vy - 4.0 * c * ny_, B[4, 0], B[4, 1],
               -ex + 4.0 * c * rx, -ey + 4.0 * c * ry, 0.0, 0.0, m11, m12, m22)
    f += g / 6.0
    df += dg / 6.0
    return f, df


@numba.njit(cache=True)
def _triangle(U0, U1, c2, v0x, v0y, ex, ey, c, J, B, m11, m12, m22, bound):
    """min over lambda in (0, 1) of U(p_lambda) + S(p_lambda -> y), or inf when the minimum is at
    an end (those are one-point updates) or cannot go below ``bound`` (the tangents at the ends
    of the convex function meet above it)."""
    dU = U1 - U0
    lo, hi = 0.0, 1.0
    flo, glo = _tri_f(lo, U0, dU, c2, v0x, v0y, ex, ey, c, J, B, m11, m12, m22)
    fhi, ghi = _tri_f(hi, U0, dU, c2, v0x, v0y, ex, ey, c, J, B, m11, m12, m22)
    if glo >= 0.0 or ghi <= 0.0:
        return np.inf
    if flo + glo * (fhi - flo - ghi) / (glo - ghi) >= bound:
        return np.inf
    # Illinois regula falsi on f'(lambda) = 0
    lam = 0.5
    side = 0
    for _ in range(60):
        lam = (lo * ghi - hi * glo) / (ghi - glo)
        _, g = _tri_f(lam, U0, dU, c2, v0x, v0y, ex, ey, c, J, B, m11, m12, m22)
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
    f, _ = _tri_f(lam, U0, dU, c2, v0x, v0y, ex, ey, c, J, B, m11, m12, m22)
    return f


@numba.njit(cache=True)
def sweep(U, frozen, xs, ys, Bh, Jh, Mh, oi, oj, vmax):
    nx, ny = xs.size, ys.size
    status = np.zeros(nx * ny, np.int8)  # 0 far, 1 considered, 2 accepted
    heap = [(0.0, 0)]
    heap.pop()
    for k in range(nx * ny):
        if frozen[k]:
            status[k] = 1
            heapq.heappush(heap, (U[k], k))
    ni = np.array([1, 0, -1, 0])  # the axis neighbours
    nj = np.array([0, 1, 0, -1])
    n_acc = 0
    Bt = np.empty((5, 2))
    Jt = np.empty(4)
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
            S, c = _arc(v0x, v0y, Bh[2 * i, 2 * j, 0], Bh[2 * i, 2 * j, 1], Bh[mi, mj, 0], Bh[mi, mj, 1],
                        Jh[mi, mj, 0], Jh[mi, mj, 1], Jh[mi, mj, 2], Jh[mi, mj, 3],
                        Bh[2 * yi, 2 * yj, 0], Bh[2 * yi, 2 * yj, 1], Mh[mi, mj, 0], Mh[mi, mj, 1], Mh[mi, mj, 2])
            q = U[k] + S
            # hierarchical update (as in OLIM): triangles only around a base point whose own segment
            # improves on the current value; this cuts the work several-fold at no measured loss
            for s in range(ni.size):
                i1, j1 = i + ni[s], j + nj[s]
                if i1 < 0 or i1 >= nx or j1 < 0 or j1 >= ny:
                    continue
                k1 = i1 * ny + j1
                if status[k1] != 2:
                    continue
                ai, aj = i1 + yi, j1 + yj
                for t2 in range(2):
                    Bt[0, t2] = Bh[2 * i, 2 * j, t2]
                    Bt[1, t2] = Bh[2 * i1, 2 * j1, t2]
                    Bt[2, t2] = Bh[mi, mj, t2]
                    Bt[3, t2] = Bh[ai, aj, t2]
                    Bt[4, t2] = Bh[2 * yi, 2 * yj, t2]
                for t2 in range(4):
                    Jt[t2] = 0.5 * (Jh[mi, mj, t2] + Jh[ai, aj, t2])
                # second difference of V along the edge, from an accepted point beyond either end:
                # quadratic rather than linear interpolation of V between p and p1
                c2 = 0.0
                i2, j2 = i - ni[s], j - nj[s]
                i3, j3 = i1 + ni[s], j1 + nj[s]
                if 0 <= i2 < nx and 0 <= j2 < ny and status[i2 * ny + j2] == 2:
                    c2 = U[i2 * ny + j2] - 2.0 * U[k] + U[k1]
                elif 0 <= i3 < nx and 0 <= j3 < ny and status[i3 * ny + j3] == 2:
                    c2 = U[k] - 2.0 * U[k1] + U[i3 * ny + j3]
                qt = _triangle(U[k], U[k1], c2, v0x, v0y, xs[i1] - xs[i], ys[j1] - ys[j], c, Jt, Bt,
                               0.5 * (Mh[mi, mj, 0] + Mh[ai, aj, 0]), 0.5 * (Mh[mi, mj, 1] + Mh[ai, aj, 1]),
                               0.5 * (Mh[mi, mj, 2] + Mh[ai, aj, 2]), min(q, U[ky]))
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
