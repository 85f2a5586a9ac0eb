#!/usr/bin/env python3
# Emulates reduced_bidir_build/step/apply of cuda/bidir.cu thread by thread, with the
# kernels' index math copied as written, and compares s = G̃·u with numpy.linalg.solve;
# asserts that no two CTAs of a launch write one address. Run it after changing that
# index math (needs numpy): python3 cuda/emulate/reduced_bidir.py
import numpy as np
KP, TW = 32, 64
def run(m, dv, heads, gamma, rng):
    w = m + dv
    G = rng.random((heads, m, m)); G /= G.sum(-1, keepdims=True)
    c = rng.random((heads, m)) * 0.9
    pbar = rng.standard_normal((heads, m, dv))
    minv = np.zeros(heads * m * w + heads * 2 * KP * w)
    # build
    for h in range(heads):
        for i in range(m):
            for j in range(w):
                minv[(h*m+i)*w + j] = ((1.0 if i == j else 0.0) - gamma*c[h,i]*G[h,i,j]) if j < m else pbar[h,i,j-m]
    def side(head, panel): return heads*m*w + (head*2 + (panel & 1))*KP*w
    for p0 in range(0, m, KP):
        right = w - min(p0+KP, m)
        grid = ((right + TW-1)//TW, (m+TW-1)//TW, heads)
        new = minv.copy()  # writes go to `new`; reads from minv (no CTA reads what another writes)
        written = np.zeros_like(minv, dtype=bool)
        for bx in range(grid[0]):
          for by in range(grid[1]):
            for head in range(heads):
                kp = min(KP, m-p0); panel = p0//KP
                abase = head*m*w; snew = side(head, panel); sold = side(head, panel+1)
                q0 = p0 - KP
                def rowbase(i): return sold + (i-q0)*w if (q0 <= i < p0) else abase + i*w
                j0 = p0 + kp + bx*TW; i0 = by*TW
                EC = (KP+TW)//8
                e = np.zeros((256, EC)); fv = np.zeros((256, KP*TW//256)); acc = np.zeros((256,4,4))
                fs = np.zeros((KP, TW+4)); bs = np.zeros((KP, TW+4))
                for tid in range(256):
                    r, tx = tid >> 3, tid & 7
                    for t in range(EC):
                        cc = tx + 8*t
                        if t < KP//8:
                            e[tid,t] = minv[abase+(p0+r)*w+p0+cc] if (r < kp and cc < kp) else (1.0 if r == cc else 0.0)
                        else:
                            e[tid,t] = minv[abase+(p0+r)*w+j0+cc-KP] if (r < kp and j0+cc-KP < w) else 0.0
                    for u in range(KP*TW//256):
                        idx = tid + 256*u; fr = idx//KP; ft = idx - fr*KP; i = i0+fr
                        fv[tid,u] = minv[rowbase(i)+p0+ft] if (ft < kp and i < m) else 0.0
                    ty, tc = tid >> 4, tid & 15
                    for rr in range(4):
                        i = i0+ty*4+rr
                        for u in range(4):
                            j = j0+tc+16*u
                            acc[tid,rr,u] = minv[rowbase(i)+j] if (i < m and j < w) else 0.0
                    for u in range(KP*TW//256):
                        idx = tid + 256*u; fr = idx//KP; ft = idx-fr*KP
                        fs[ft, fr] = fv[tid,u]
                cb = np.zeros((2,KP)); rb = np.zeros((2,KP+TW))
                for q in range(KP):
                    if q >= kp: break
                    tq, buf = q//8, q & 1
                    for tid in range(256):
                        r, tx = tid >> 3, tid & 7
                        if tx == (q & 7): cb[buf, r] = e[tid,tq] - (1.0 if r == q else 0.0)
                        if r == q:
                            for t in range(tq, EC): rb[buf, tx+8*t] = e[tid,t]
                    for tid in range(256):
                        r, tx = tid >> 3, tid & 7
                        f = cb[buf, r] / rb[buf, q]
                        for t in range(tq, EC): e[tid,t] -= f*rb[buf, tx+8*t]
                for tid in range(256):
                    r, tx = tid >> 3, tid & 7
                    for t in range(KP//8, EC): bs[r, tx+8*(t-KP//8)] = e[tid,t]
                for tid in range(256):
                    ty, tc = tid >> 4, tid & 15
                    for t in range(KP):
                        for rr in range(4):
                            for u in range(4): acc[tid,rr,u] -= fs[t, ty*4+rr]*bs[t, tc+16*u]
                    for rr in range(4):
                        i = i0+ty*4+rr
                        if i >= m: continue
                        piv = p0 <= i < p0+kp
                        for u in range(4):
                            cc = tc+16*u; j = j0+cc
                            if j >= w: continue
                            addr = snew+(i-p0)*w+j if piv else abase+i*w+j
                            assert not written[addr]; written[addr] = True
                            new[addr] = bs[i-p0, cc] if piv else acc[tid,rr,u]
        minv = new
    pl = (m-1)//KP*KP
    s = np.zeros((heads, m, dv))
    for bx in range((m+TW-1)//TW):
      for by in range((dv+TW-1)//TW):
        for bh in range(heads):
            i0, c0 = bx*TW, by*TW
            ub = bh*m*w + m; ulb = side(bh, pl//KP) + m
            acc = np.zeros((256,4,4))
            for k0 in range(0, m, KP):
                gs = np.zeros((KP, TW+4)); us = np.zeros((KP, TW+4))
                for tid in range(256):
                    for t in range(KP*TW//256):
                        idx = tid+256*t; gi = idx//KP; gj = idx-gi*KP
                        gs[gj, gi] = G[bh, i0+gi, k0+gj] if (i0+gi < m and k0+gj < m) else 0.0
                        uj = idx//TW; uc = idx-uj*TW; j = k0+uj; cc = c0+uc
                        us[uj, uc] = (minv[ub+j*w+cc] if j < pl else minv[ulb+(j-pl)*w+cc]) if (j < m and cc < dv) else 0.0
                for tid in range(256):
                    ty, tc = tid >> 4, tid & 15
                    for rr in range(4):
                        for v in range(4): acc[tid,rr,v] += gs[:, ty*4+rr] @ us[:, tc+16*v]
            for tid in range(256):
                ty, tc = tid >> 4, tid & 15
                for rr in range(4):
                    i = i0+ty*4+rr
                    if i >= m: continue
                    for v in range(4):
                        cc = c0+tc+16*v
                        if cc < dv: s[bh, i, cc] = acc[tid,rr,v]
    err = 0
    for h in range(heads):
        M = np.eye(m) - gamma*c[h][:,None]*G[h]
        u = np.linalg.solve(M, pbar[h]); ref = G[h] @ u
        err = max(err, np.abs(s[h]-ref).max()/np.abs(ref).max())
    return err
rng = np.random.default_rng(1)
for (m, dv, heads) in [(1,3,1), (5,3,2), (33,5,1), (70,7,2), (150,16,1), (130,65,1)]:
    print(m, dv, heads, run(m, dv, heads, 0.8, rng))
