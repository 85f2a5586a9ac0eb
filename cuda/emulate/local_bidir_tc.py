#!/usr/bin/env python3
# Checks the fragment addressing of local_bidir's tensor-core products (cuda/bidir.cu)
# against the PTX m16n8k16 layouts: the A and B tiles each lane's loads assemble must be
# the intended sub-blocks, and the C write-back must land on the right S / X entries.
import numpy as np
rng = np.random.default_rng(0)
def check(NR, dk, NV):
    dk16 = (dk + 15) // 16 * 16; lqh = dk16 + 8
    Q = np.zeros((NR, lqh)); K = np.zeros((NR, lqh))
    Q[:, :dk] = rng.standard_normal((NR, dk)); K[:, :dk] = rng.standard_normal((NR, dk))
    LD = NR + 4
    S = np.full((NR, LD), np.nan)
    for warp in range(NR // 16):
        acc = np.zeros((NR // 8, 32, 4))
        for kc in range(0, dk16, 16):
            for j in range(NR // 8):
                A = np.full((16, 16), np.nan); B = np.full((16, 8), np.nan)
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    qa = (16*warp + g, kc + 2*t4)   # (row, col) in q16
                    for reg, (dr, dc) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
                        r, c = qa[0] + dr, qa[1] + dc
                        # reg a_k holds two halves: lower column first
                        arow, acol = [(g, 2*t4), (g+8, 2*t4), (g, 2*t4+8), (g+8, 2*t4+8)][reg]
                        A[arow, acol] = Q[r, c]; A[arow, acol+1] = Q[r, c+1]
                    kb = (8*j + g, kc + 2*t4)
                    for reg, dc in enumerate([0, 8]):
                        r, c = kb[0], kb[1] + dc
                        krow = [2*t4, 2*t4+8][reg]
                        B[krow, g] = K[r, c]; B[krow+1, g] = K[r, c+1]
                assert not np.isnan(A).any() and not np.isnan(B).any()
                C = A @ B
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    acc[j, lane] += [C[g, 2*t4], C[g, 2*t4+1], C[g+8, 2*t4], C[g+8, 2*t4+1]]
        for j in range(NR // 8):
            for lane in range(32):
                g, t4 = lane >> 2, lane & 3
                r0 = (16*warp + g, 8*j + 2*t4)
                S[r0[0], r0[1]:r0[1]+2] = acc[j, lane, :2]
                S[r0[0]+8, r0[1]:r0[1]+2] = acc[j, lane, 2:]
    ref = Q[:, :dk] @ K[:, :dk].T
    e1 = np.abs(S[:, :NR] - ref).max()
    # D·V: d16[i][k] row-major (stride LDD), vt[c][k] (V transposed), X[i][c]
    LDD = NR + 8; XS = NV + 4
    D = rng.random((NR, NR)); V = rng.standard_normal((NR, NV))
    d16 = np.zeros((NR, LDD)); d16[:, :NR] = D
    vt = np.zeros((NV, LDD)); vt[:, :NR] = V.T
    X = np.full((NR, XS), np.nan)
    for warp in range(NR // 16):
        acc = np.zeros((NV // 8, 32, 4))
        for kc in range(0, NR, 16):
            for j in range(NV // 8):
                A = np.full((16, 16), np.nan); B = np.full((16, 8), np.nan)
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    for reg, (dr, dc) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
                        r, c = 16*warp + g + dr, kc + 2*t4 + dc
                        arow, acol = [(g, 2*t4), (g+8, 2*t4), (g, 2*t4+8), (g+8, 2*t4+8)][reg]
                        A[arow, acol] = d16[r, c]; A[arow, acol+1] = d16[r, c+1]
                    for reg, dc in enumerate([0, 8]):
                        r, c = 8*j + g, kc + 2*t4 + dc
                        krow = [2*t4, 2*t4+8][reg]
                        B[krow, g] = vt[r, c]; B[krow+1, g] = vt[r, c+1]
                C = A @ B
                for lane in range(32):
                    g, t4 = lane >> 2, lane & 3
                    acc[j, lane] += [C[g, 2*t4], C[g, 2*t4+1], C[g+8, 2*t4], C[g+8, 2*t4+1]]
        for j in range(NV // 8):
            for lane in range(32):
                g, t4 = lane >> 2, lane & 3
                r0, c0 = 16*warp + g, 8*j + 2*t4
                X[r0, c0:c0+2] = acc[j, lane, :2]; X[r0+8, c0:c0+2] = acc[j, lane, 2:]
    e2 = np.abs(X[:, :NV] - D @ V).max()
    return e1, e2
for NR, dk, NV in [(64, 64, 64), (64, 5, 16), (128, 128, 128), (128, 40, 64), (64, 24, 128)]:
    print(NR, dk, NV, check(NR, dk, NV))
