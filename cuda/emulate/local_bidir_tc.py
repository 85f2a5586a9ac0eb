#!/usr/bin/env python3
# Replays local_bidir_tc (cuda/bidir_tc.cu) lane by lane in numpy, with the kernel's index
# math copied as written: the mma fragments (PTX m16n8k16 layouts), the quad softmax, the
# shared-memory layouts (Q/K, Vᵀ, E, W, Uᵀ hi/lo) and the panel loop. With exact
# arithmetic (rounding off) it must match a float64 solve of the same block system to
# ~1e-13; with the element type's rounding on, it shows the hi + lo products' error.
# Run: python3 cuda/emulate/local_bidir_tc.py  (needs numpy)
import numpy as np

def rnd_bf16(x):
    x = np.asarray(x, dtype=np.float32)
    u = x.view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    return u.astype(np.uint32).view(np.float32).astype(np.float64)

def rnd_f16(x):
    return np.asarray(x, dtype=np.float32).astype(np.float16).astype(np.float64)

def mma(acc, a, b):
    """acc[32][4] += A·B, a[32][4] pairs (lo, hi), b[32][2] pairs, PTX m16n8k16 layout."""
    A = np.full((16, 16), np.nan); B = np.full((16, 8), np.nan)
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        for reg, (r, c) in enumerate([(g, 2*t), (g+8, 2*t), (g, 2*t+8), (g+8, 2*t+8)]):
            A[r, c], A[r, c+1] = a[lane][reg]
        for reg, kr in enumerate([2*t, 2*t+8]):
            B[kr, g], B[kr+1, g] = b[lane][reg]
    assert not np.isnan(A).any() and not np.isnan(B).any()
    C = A @ B
    for lane in range(32):
        g, t = lane >> 2, lane & 3
        acc[lane] += [C[g, 2*t], C[g, 2*t+1], C[g+8, 2*t], C[g+8, 2*t+1]]

def run(nb, dk, dv, NWM, DM, gamma, rnd, rng):
    NR = 16*NWM; MT = NR//8; VT = DM//8; NT = MT+VT+1; ZT = NT-1
    LDV = NR+8; LW = 8*NT+4; UTS = 24
    T = rnd if rnd else (lambda x: np.asarray(x, dtype=np.float64))
    def split2(a, b):
        ha, hb = T(a), T(b)
        return (ha, hb), (T(a-ha), T(b-hb))
    q = T(rng.standard_normal((nb, dk))); k = T(rng.standard_normal((nb, dk)))
    v = T(rng.standard_normal((nb, dv)))
    scale = 1/np.sqrt(dk); sig = 0.3; gs = 2.5; h = rng.standard_normal(dv)
    dk16 = (dk+15)//16*16; lqh = dk16+8
    q16 = np.zeros((NR, lqh)); k16 = np.zeros((NR, lqh))
    q16[:nb, :dk] = q; k16[:nb, :dk] = k
    nw = NWM; nvt = (dv+7)//8
    live = lambda j: j < MT or j-MT < nvt or j == ZT
    acc = np.zeros((nw, NT, 32, 4))
    for w in range(nw):
        for kc in range(0, dk16, 16):
            af = [[(q16[16*w+g+dr, kc+2*t+dc], q16[16*w+g+dr, kc+2*t+dc+1]) for dr, dc in [(0,0),(8,0),(0,8),(8,8)]]
                  for g, t in [(l >> 2, l & 3) for l in range(32)]]
            for j in range(MT):
                bf = [[(k16[8*j+g, kc+2*t+dc], k16[8*j+g, kc+2*t+dc+1]) for dc in [0, 8]]
                      for g, t in [(l >> 2, l & 3) for l in range(32)]]
                mma(acc[w, j], af, bf)
    invz = np.zeros((nw, 32, 2)); zr = np.zeros((nw, 32, 2))
    for w in range(nw):
        for lane in range(32):
            g, t = lane >> 2, lane & 3
        mx = np.full((32, 2), sig)
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for j in range(MT):
                for e in range(4):
                    ok = 8*j+2*t+(e & 1) < nb
                    acc[w, j, lane, e] = acc[w, j, lane, e]*scale if ok else -np.inf
                    mx[lane, e >> 1] = max(mx[lane, e >> 1], acc[w, j, lane, e])
        for lane in range(32):  # quad max (xor 1, 2)
            pass
        mxq = mx.copy()
        for lane in range(32):
            quad = [lane ^ 0, lane ^ 1, lane ^ 2, lane ^ 3]
            mxq[lane] = np.max(mx[quad], axis=0)
        lsum = np.zeros((32, 2))
        for lane in range(32):
            for j in range(MT):
                for e in range(4):
                    ex = np.exp(acc[w, j, lane, e] - mxq[lane, e >> 1])
                    acc[w, j, lane, e] = ex; lsum[lane, e >> 1] += ex
        lq = np.array([lsum[[l, l ^ 1, l ^ 2, l ^ 3]].sum(axis=0) for l in range(32)])
        for lane in range(32):
            g = lane >> 2
            for hh in range(2):
                rowlive = 16*w+g+8*hh < nb
                ec = np.exp(sig-mxq[lane, hh]) if (gs > 0 and rowlive) else 0.0
                invz[w, lane, hh] = 1/(lq[lane, hh]+ec*gs) if rowlive else 0.0
                zr[w, lane, hh] = ec*invz[w, lane, hh]
            for j in range(MT):
                for e in range(4): acc[w, j, lane, e] *= invz[w, lane, e >> 1]
    Dfull = np.zeros((NR, NR))  # for the reference: D as the kernel holds it (f32-ish)
    for w in range(nw):
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for j in range(MT):
                for e in range(4):
                    Dfull[16*w+g+8*(e >> 1), 8*j+2*t+(e & 1)] = acc[w, j, lane, e]
    vt = np.zeros((DM, LDV)); vt[:dv, :nb] = v.T
    for w in range(nw):
        for j in range(NWM):
            da = [[T((acc[w, 2*j, l, 0], acc[w, 2*j, l, 1])), T((acc[w, 2*j, l, 2], acc[w, 2*j, l, 3])),
                   T((acc[w, 2*j+1, l, 0], acc[w, 2*j+1, l, 1])), T((acc[w, 2*j+1, l, 2], acc[w, 2*j+1, l, 3]))]
                  for l in range(32)]
            for u in range(VT):
                if u < nvt:
                    bf = [[(vt[8*u+g, 16*j+2*t+dc], vt[8*u+g, 16*j+2*t+dc+1]) for dc in [0, 8]]
                          for g, t in [(l >> 2, l & 3) for l in range(32)]]
                    mma(acc[w, MT+u], da, bf)
    for w in range(nw):
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for u in range(VT):
                for e in range(4):
                    c = 8*u+2*t+(e & 1)
                    if c < dv: acc[w, MT+u, lane, e] += zr[w, lane, e >> 1]*h[c]
            for e in range(4):
                acc[w, ZT, lane, e] = zr[w, lane, e >> 1] if (t == 0 and (e & 1) == 0) else 0.0
            for j in range(MT):
                for e in range(4):
                    r = 16*w+g+8*(e >> 1); c = 8*j+2*t+(e & 1)
                    acc[w, j, lane, e] = (1.0 if r == c else 0.0) - gamma*acc[w, j, lane, e]
    # reference system from the same D and the same rounded D for D·V
    Mref = np.eye(NR) - gamma*Dfull
    Xref = np.zeros((NR, dv+1))
    Xref[:, :dv] = T(Dfull) @ np.vstack([v, np.zeros((NR-nb, dv))])
    zcol = np.zeros(NR)
    for w in range(nw):
        for lane in range(32):
            g = lane >> 2
            zcol[16*w+g] = zr[w, lane, 0]; zcol[16*w+g+8] = zr[w, lane, 1]
    Xref[:, :dv] += np.outer(zcol, h); Xref[:, dv] = zcol
    Pref = np.linalg.solve(Mref, Xref)
    # panel loop
    UB = 8*NT*UTS
    ut = np.full((2, 2, 8*NT*UTS), np.nan)
    for p in range(NWM):
        if 16*p >= nb: break
        es = np.full((16, 17), np.nan); ws = np.full((16, LW), np.nan)
        w = p
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for e in range(4):
                r = g+8*(e >> 1); c = 2*t+(e & 1)
                es[r, c] = acc[w, 2*p, lane, e]; es[r, 8+c] = acc[w, 2*p+1, lane, e]
            for j in range(2*p+2, NT):
                if live(j):
                    ws[g, 8*j+2*t:8*j+2*t+2] = acc[w, j, lane, :2]
                    ws[g+8, 8*j+2*t:8*j+2*t+2] = acc[w, j, lane, 2:]
        for qq in range(16):
            old = es.copy()
            for lane in range(32):
                r, c0 = lane >> 1, (lane & 1)*8
                inv = 1.0/old[qq, qq]; f = old[r, qq]
                for c in range(8):
                    pc = c0+c == qq; pr = old[qq, c0+c]; own = old[r, c0+c]
                    if r == qq: x = inv if pc else pr*inv
                    else: x = -f*inv if pc else own - f*inv*pr
                    es[r, c0+c] = x
        ah = []; al = []
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            hs, ls = [], []
            for (r, c) in [(g, 2*t), (g+8, 2*t), (g, 2*t+8), (g+8, 2*t+8)]:
                hh, ll = split2(es[r, c], es[r, c+1]); hs.append(hh); ls.append(ll)
            ah.append(hs); al.append(ls)
        uh = ut[p & 1, 0]; ul = ut[p & 1, 1]
        for j in range(2*p+2, NT):
            if not live(j): continue
            bh = []; bl = []
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                h0, l0 = split2(ws[2*t, 8*j+g], ws[2*t+1, 8*j+g])
                h1, l1 = split2(ws[2*t+8, 8*j+g], ws[2*t+9, 8*j+g])
                bh.append([h0, h1]); bl.append([l0, l1])
            u4 = np.zeros((32, 4))
            mma(u4, ah, bh); mma(u4, ah, bl); mma(u4, al, bh)
            acc[w, j] = u4
            for lane in range(32):
                g, t = lane >> 2, lane & 3
                (a0, a1), (b0, b1) = split2(u4[lane, 0], u4[lane, 1])
                (c0_, c1_), (d0, d1) = split2(u4[lane, 2], u4[lane, 3])
                c = 8*j+2*t
                uh[c*UTS+g] = a0; uh[(c+1)*UTS+g] = a1; uh[c*UTS+g+8] = c0_; uh[(c+1)*UTS+g+8] = c1_
                ul[c*UTS+g] = b0; ul[(c+1)*UTS+g] = b1; ul[c*UTS+g+8] = d0; ul[(c+1)*UTS+g+8] = d1
        for wi in range(nw):
            if wi == p: continue
            Ah = []; Al = []
            for lane in range(32):
                hs, ls = [], []
                for (tile, e0) in [(2*p, 0), (2*p, 2), (2*p+1, 0), (2*p+1, 2)]:
                    hh, ll = split2(acc[wi, tile, lane, e0], acc[wi, tile, lane, e0+1])
                    hs.append((-hh[0], -hh[1])); ls.append((-ll[0], -ll[1]))
                Ah.append(hs); Al.append(ls)
            for j in range(2*p+2, NT):
                if not live(j): continue
                bh = []; bl = []
                for lane in range(32):
                    g, t = lane >> 2, lane & 3
                    base = (8*j+g)*UTS+2*t
                    bh.append([(uh[base], uh[base+1]), (uh[base+8], uh[base+9])])
                    bl.append([(ul[base], ul[base+1]), (ul[base+8], ul[base+9])])
                mma(acc[wi, j], Ah, bh); mma(acc[wi, j], Ah, bl); mma(acc[wi, j], Al, bh)
    P = np.zeros((NR, dv+1))
    for w in range(nw):
        for lane in range(32):
            g, t = lane >> 2, lane & 3
            for e in range(4):
                r = 16*w+g+8*(e >> 1)
                for u in range(VT):
                    c = 8*u+2*t+(e & 1)
                    if c < dv: P[r, c] = acc[w, MT+u, lane, e]
                if t == 0 and (e & 1) == 0: P[r, dv] = acc[w, ZT, lane, e]
    err = np.abs(P[:nb]-Pref[:nb]).max()/np.abs(Pref[:nb]).max()
    return err

rng = np.random.default_rng(3)
for (nb, dk, dv, NWM, DM) in [(64, 64, 64, 4, 64), (37, 5, 3, 4, 64), (100, 24, 72, 8, 128),
                              (128, 128, 128, 8, 128), (1, 16, 16, 4, 64), (50, 16, 100, 4, 128)]:
    e0 = run(nb, dk, dv, NWM, DM, 0.9, None, rng)
    eb = run(nb, dk, dv, NWM, DM, 0.9, rnd_bf16, rng)
    ef = run(nb, dk, dv, NWM, DM, 0.9, rnd_f16, rng)
    print(f"nb={nb} dk={dk} dv={dv} B={16*NWM} D={DM}: exact {e0:.1e}, bf16 {eb:.1e}, f16 {ef:.1e}")
