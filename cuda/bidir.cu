// SPEC §2, bidirectional (causal = 0): the local and the reduced systems are full, and
// both are solved by Gauss–Jordan elimination without pivoting (I − γD and I − γ·diag(c)·G̃
// are strictly diagonally dominant by rows for γ < 1, SPEC §1–2, so no pivot is small).
// f32 arithmetic throughout (the host caps γ, src/gpu/plan.rs).
//
// Steps 1 (block means) and 1b (coarse, with causal = 0: every J ≠ I) and 7 (combine) are
// the causal path's kernels.
#include "common.cuh"

// ---------------------------------------------------------------------------------------
// Local stage: one CTA of 16·TR threads per (block I, query head), the block's system
// held in registers. Thread (ty, tx) of a TR × 16 grid owns the 8 rows i = ty + TR·k of
// [M | X] and its columns j = tx + 16l: l < MC = NR/16 are M = I − γD (the block padded
// to NR = 8·TR rows and columns), l = MC + lv the right side X = D·V + z⊗h (column
// c = tx + 16lv, padded to 16V). The w column (z) of its rows is held by all 16 threads
// of a row group, so the elimination needs no divergent lanes. Each elimination step
// then costs a thread 8 shared-memory reads of the pivot column, MC + V of the pivot row
// and 8·(MC + V) FMA. Eight rows per thread (128 threads for b ≤ 64) rather than four
// (256 threads): the same FMA for 2/3 of the instructions per FMA (Nsight Compute: the
// 256-thread version was issue-bound, 3.0 instructions per cycle, FMA pipe 39%).
//
// Shared memory (mirrored by bidir_smem() in src/gpu/plan.rs), one region reused by the
// phases: Q and K rows (2 · NR × lq floats, lq = dk rounded up to 8, + 4, so that
// float4 reads of 8 consecutive rows hit distinct banks); then D (NR × (NR + 4)) and
// V (NR × 16V); then P and w for the output (nb × (dv + 1)). After the region, the
// double-buffered pivot column (2 × NR) and pivot row (2 × (NC + 1)).
__host__ __device__ constexpr int bidir_lq(int dk) { return (dk + 7) / 8 * 8 + 4; }

// Rows [0, rows) of a row-major rows_valid × cols source into dst (row stride ld, f32),
// zero past rows_valid and in columns [cols, zero_to). 16-byte loads where the rows
// allow them.
template <class T>
__device__ __forceinline__ void stage_rows(float* dst, int ld, const T* __restrict__ src, int rows,
                                           int rows_valid, int cols, int zero_to, int tid, int nt) {
    constexpr int E = 16 / sizeof(T);
    if (cols % E == 0 && ((unsigned long long)src & 15) == 0) {
        const int vr = cols / E;
        for (int idx = tid; idx < rows * vr; idx += nt) {
            const int r = idx / vr, c = (idx - r * vr) * E;
            float* d = dst + r * ld + c;
            if (r < rows_valid) {
                const uint4 raw = *reinterpret_cast<const uint4*>(src + (long long)r * cols + c);
                const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
                for (int t = 0; t < E; ++t) d[t] = to_f(e[t]);
            } else {
#pragma unroll
                for (int t = 0; t < E; ++t) d[t] = 0.0f;
            }
        }
    } else {
        for (int idx = tid; idx < rows * cols; idx += nt) {
            const int r = idx / cols, c = idx - r * cols;
            dst[r * ld + c] = r < rows_valid ? to_f(src[(long long)r * cols + c]) : 0.0f;
        }
    }
    const int zw = zero_to - cols;
    for (int idx = tid; idx < rows * zw; idx += nt) {
        const int r = idx / zw;
        dst[r * ld + cols + idx - r * zw] = 0.0f;
    }
}

template <class T, int TR, int V>
__device__ void local_bidir(const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, T* __restrict__ y, float* __restrict__ wout,
                            float* __restrict__ pbar, float* __restrict__ cvec,
                            const float* __restrict__ sigma, const float* __restrict__ gsum,
                            const float* __restrict__ hvec, int H, int Hkv, int n, int dk, int dv,
                            int b, int m, float scale, float gamma) {
    constexpr int R = 8, NT = 16 * TR, NR = 8 * TR, MC = NR / 16, NC = 16 * (MC + V),
                  NV = 16 * V, LD = NR + 4;
    extern __shared__ float sm[];
    const int I = blockIdx.x, bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const int base = I * b, nb = min(b, n - base);
    const long long bi = (long long)bh * m + I;
    const int lq = bidir_lq(dk);
    const int region = max(2 * NR * lq, max(NR * LD + NR * NV, nb * (dv + 1)));
    float* cb = sm + region;  // pivot columns, 2 × NR
    float* rb = cb + 2 * NR;  // pivot rows, 2 × (NC + 1)
    require_smem(4ll * (region + 2 * NR + 2 * (NC + 1)));
    const int tid = threadIdx.x, ty = tid >> 4, tx = tid & 15;

    // Q and K rows, zero-padded to NR rows and to a multiple of 4 columns.
    float* qs = sm;
    float* ks = sm + NR * lq;
    const int dk4 = (dk + 3) & ~3;
    stage_rows(qs, lq, q + ((long long)bh * n + base) * dk, NR, nb, dk, dk4, tid, NT);
    stage_rows(ks, lq, k + (kvh * n + base) * dk, NR, nb, dk, dk4, tid, NT);
    __syncthreads();
    float a[R][MC + V];  // the right side's columns are first written below, with z⊗h
    float z[R];
#pragma unroll
    for (int kk = 0; kk < R; ++kk)
#pragma unroll
        for (int l = 0; l < MC; ++l) a[kk][l] = 0.0f;
    for (int c = 0; c < dk4; c += 4) {
        float4 qv[R], kv[MC];
#pragma unroll
        for (int kk = 0; kk < R; ++kk) qv[kk] = *reinterpret_cast<const float4*>(qs + (ty + TR * kk) * lq + c);
#pragma unroll
        for (int l = 0; l < MC; ++l) kv[l] = *reinterpret_cast<const float4*>(ks + (tx + 16 * l) * lq + c);
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int l = 0; l < MC; ++l) {
                float s = a[kk][l];
                s = fmaf(qv[kk].x, kv[l].x, s);
                s = fmaf(qv[kk].y, kv[l].y, s);
                s = fmaf(qv[kk].z, kv[l].z, s);
                s = fmaf(qv[kk].w, kv[l].w, s);
                a[kk][l] = s;
            }
    }
    // Softmax with the coarse normalizer; a row's NR values lie in the 16 lanes of one
    // half-warp. D in a[·][< MC], z per row; padded rows and columns are 0.
    const float sig = sigma[bi], gs = gsum[bi];
#pragma unroll
    for (int kk = 0; kk < R; ++kk) {
        const int i = ty + TR * kk;
        float mx = sig;
#pragma unroll
        for (int l = 0; l < MC; ++l) {
            a[kk][l] *= scale;
            if (tx + 16 * l < nb) mx = fmaxf(mx, a[kk][l]);
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float l_ = 0.0f;
#pragma unroll
        for (int l = 0; l < MC; ++l) {
            const float e = tx + 16 * l < nb ? __expf(a[kk][l] - mx) : 0.0f;
            a[kk][l] = e;
            l_ += e;
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) l_ += __shfl_xor_sync(0xffffffffu, l_, o);
        const float ec = gs > 0.0f ? __expf(sig - mx) : 0.0f;
        const float invz = i < nb ? 1.0f / (l_ + ec * gs) : 0.0f;
#pragma unroll
        for (int l = 0; l < MC; ++l) a[kk][l] *= invz;
        z[kk] = ec * invz;
    }
    __syncthreads();  // Q and K are consumed
    // X = D·V + z⊗h through shared memory: D (rows padded to float4), V (zero-padded).
    float* ds = sm;
    float* vs = sm + NR * LD;
#pragma unroll
    for (int kk = 0; kk < R; ++kk)
#pragma unroll
        for (int l = 0; l < MC; ++l) ds[(ty + TR * kk) * LD + tx + 16 * l] = a[kk][l];
    stage_rows(vs, NV, v + (kvh * n + base) * dv, NR, nb, dv, NV, tid, NT);
    __syncthreads();
    const float* hI = hvec + bi * dv;
#pragma unroll
    for (int lv = 0; lv < V; ++lv) {
        const int c = tx + 16 * lv;
        const float hc = c < dv ? hI[c] : 0.0f;
#pragma unroll
        for (int kk = 0; kk < R; ++kk) a[kk][MC + lv] = z[kk] * hc;
    }
    const int nb4 = (nb + 3) & ~3;
    for (int j = 0; j < nb4; j += 4) {
        float4 d4[R];
        float vv[4][V];
#pragma unroll
        for (int kk = 0; kk < R; ++kk) d4[kk] = *reinterpret_cast<const float4*>(ds + (ty + TR * kk) * LD + j);
#pragma unroll
        for (int t = 0; t < 4; ++t)
#pragma unroll
            for (int lv = 0; lv < V; ++lv) vv[t][lv] = vs[(j + t) * NV + tx + 16 * lv];
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int lv = 0; lv < V; ++lv) {
                float s = a[kk][MC + lv];
                s = fmaf(d4[kk].x, vv[0][lv], s);
                s = fmaf(d4[kk].y, vv[1][lv], s);
                s = fmaf(d4[kk].z, vv[2][lv], s);
                s = fmaf(d4[kk].w, vv[3][lv], s);
                a[kk][MC + lv] = s;
            }
    }
    // M = I − γD.
#pragma unroll
    for (int kk = 0; kk < R; ++kk)
#pragma unroll
        for (int l = 0; l < MC; ++l)
            a[kk][l] = (ty + TR * kk == tx + 16 * l ? 1.0f : 0.0f) - gamma * a[kk][l];
    // Gauss–Jordan, one barrier per pivot (double-buffered pivot row and column). Pivot
    // p = tp + TR·kp is row slot kp of thread row tp and column group lp = p / 16; kp
    // and lp are compile-time (8 unrolled groups of TR pivots), so every register index
    // is. The pivot column's entry of the pivot row is published as a_pp − 1, so the
    // one update a_ij −= (f_i / a_pp)·a_pj also turns the pivot row into a_pj / a_pp.
    // Columns of M left of the pivot's group of 16 are done and skipped.
#pragma unroll
    for (int kp = 0; kp < R; ++kp) {
        const int lp = (TR * kp) / 16;
        for (int tp = 0; tp < TR; ++tp) {
            const int p = tp + TR * kp;
            if (p >= nb) break;
            float* cbs = cb + (p & 1) * NR;
            float* rbs = rb + (p & 1) * (NC + 1);
            if (tx == (p & 15)) {
#pragma unroll
                for (int kk = 0; kk < R; ++kk)
                    cbs[ty + TR * kk] = a[kk][lp] - (kk == kp && ty == tp ? 1.0f : 0.0f);
            }
            if (ty == tp) {
#pragma unroll
                for (int l = lp; l < MC + V; ++l) rbs[tx + 16 * l] = a[kp][l];
                if (tx == 0) rbs[NC] = z[kp];
            }
            __syncthreads();
            const float inv = __fdividef(1.0f, rbs[p]);
            float f[R];
#pragma unroll
            for (int kk = 0; kk < R; ++kk) f[kk] = cbs[ty + TR * kk] * inv;
#pragma unroll
            for (int l = lp; l < MC + V; ++l) {
                const float r = rbs[tx + 16 * l];
#pragma unroll
                for (int kk = 0; kk < R; ++kk) a[kk][l] = fmaf(-f[kk], r, a[kk][l]);
            }
            const float rz = rbs[NC];
#pragma unroll
            for (int kk = 0; kk < R; ++kk) z[kk] = fmaf(-f[kk], rz, z[kk]);
        }
    }
    // [P | w] is in the right-side columns: through shared memory (stride dv + 1) to Y,
    // w, and the block means p̄, c.
    __syncthreads();
    float* ps = sm;
    const int lp1 = dv + 1;
#pragma unroll
    for (int kk = 0; kk < R; ++kk) {
        const int i = ty + TR * kk;
        if (i >= nb) continue;
#pragma unroll
        for (int lv = 0; lv < V; ++lv) {
            const int c = tx + 16 * lv;
            if (c < dv) ps[i * lp1 + c] = a[kk][MC + lv];
        }
        if (tx == 0) ps[i * lp1 + dv] = z[kk];
    }
    __syncthreads();
    T* yh = y + ((long long)bh * n + base) * dv;
    constexpr int E = 16 / sizeof(T);
    if (dv % E == 0 && ((unsigned long long)yh & 15) == 0) {
        const int vr = dv / E;
        for (int idx = tid; idx < nb * vr; idx += NT) {
            const int r = idx / vr, c = (idx - r * vr) * E;
            uint4 raw;
            T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
            for (int t = 0; t < E; ++t) e[t] = from_f<T>(ps[r * lp1 + c + t]);
            *reinterpret_cast<uint4*>(yh + (long long)r * dv + c) = raw;
        }
    } else {
        for (int idx = tid; idx < nb * dv; idx += NT) {
            const int r = idx / dv, c = idx - r * dv;
            yh[idx] = from_f<T>(ps[r * lp1 + c]);
        }
    }
    float* wh = wout + (long long)bh * n + base;
    for (int r = tid; r < nb; r += NT) wh[r] = ps[r * lp1 + dv];
    const float invn = 1.0f / (float)nb;
    for (int c = tid; c <= dv; c += NT) {
        float s = 0.0f;
        for (int r = 0; r < nb; ++r) s += ps[r * lp1 + c];
        if (c < dv)
            pbar[bi * dv + c] = s * invn;
        else
            cvec[bi] = s * invn;
    }
}

// Entry points local_bidir_b{B}v{D}_{f32,f16,bf16}: blocks of at most B rows (TR = B/8
// thread rows, 2B threads), dv ≤ D (the host picks the smallest that fits,
// src/gpu/plan.rs).
#define LOCAL_BIDIR_ONE(T, S, B, D)                                                           \
    extern "C" __global__ void __launch_bounds__(2 * B) local_bidir_b##B##v##D##_##S(        \
        const LocalParams p) {                                                                \
        local_bidir<T, B / 8, D / 16>(BLOCKRES_LOCAL_ARGS(T, p));                             \
    }
#define LOCAL_BIDIR(T, S)                                                                     \
    LOCAL_BIDIR_ONE(T, S, 64, 64)                                                             \
    LOCAL_BIDIR_ONE(T, S, 64, 128) LOCAL_BIDIR_ONE(T, S, 128, 64) LOCAL_BIDIR_ONE(T, S, 128, 128)
BLOCKRES_FOR_TYPES(LOCAL_BIDIR)

// ---------------------------------------------------------------------------------------
// Reduced stage: [I − γ·diag(c)·G̃ | p̄] per head (m × w, w = m + dv, row-major, in global
// memory), solved by blocked Gauss–Jordan over panels of KP pivots, one launch of
// reduced_bidir_step per panel (p.p0 = its first pivot). With D_P the panel's KP × KP
// diagonal block and B its rows: the panel rows become D_P⁻¹·B, and every other row i
// loses A[i, panel]·D_P⁻¹·B. Columns left of a panel are never read again, so no kernel
// writes them; u ends in the last dv columns.
//
// Every CTA of a step reads the panel rows B, so the new panel rows cannot be written
// over them in the same launch: they go to a per-head side buffer S (two of KP × w,
// alternating by panel, after the bh matrices), and the next step reads the previous
// panel's rows from there and writes them back updated. The last panel's rows stay in S
// (reduced_bidir_apply reads them there). One launch per panel where a panel kernel and
// an update kernel took two (Nsight Compute at n = 16384, m = 256: 24 µs per panel launch
// for the 32-pivot inverse alone).
#define KP 32
#define TW 64  // columns and rows per CTA

// The side buffer of panel P of head `head` (after the gridDim-many heads' matrices).
__device__ __forceinline__ float* side(float* minv, long long heads, long long head, int m, int w,
                                       int panel) {
    return minv + heads * m * w + (head * 2 + (panel & 1)) * KP * w;
}

// Grid (row, head).
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_build(const ReducedParams p) {
    const float* __restrict__ g = p.g;
    const float* __restrict__ pbar = p.pbar;
    const float* __restrict__ cvec = p.cvec;
    float* __restrict__ aug = p.minv;
    const int m = p.m, dv = p.dv;
    const float gamma = p.gamma;
    const int i = blockIdx.x, bh = blockIdx.y;
    const long long row = (long long)bh * m + i;
    const float gc = gamma * cvec[row];
    const float* gi = g + row * m;
    float* ai = aug + row * (m + dv);
    for (int j = threadIdx.x; j < m + dv; j += blockDim.x)
        ai[j] = j < m ? (i == j ? 1.0f : 0.0f) - gc * gi[j] : pbar[row * dv + j - m];
}

// Grid (⌈(w − p0 − kp)/TW⌉, ⌈m/TW⌉, heads), 256 threads. Each CTA inverts D_P
// (Gauss–Jordan on [D_P | I] in shared memory, redundantly: 32 pivots of a 32 × 64
// system), forms D_P⁻¹·B over its TW columns, and updates its TW rows there.
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_step(const ReducedParams p) {
    __shared__ float e[KP][2 * KP + 1];
    __shared__ __align__(16) float bs[KP][TW + 4];  // B, then D_P⁻¹·B
    __shared__ __align__(16) float fs[KP][TW + 4];  // A[rows, panel], transposed: fs[t][r]
    const int m = p.m, w = m + p.dv, p0 = p.p0, kp = min(KP, m - p0), panel = p0 / KP;
    const long long heads = gridDim.z, head = blockIdx.z;
    float* a = p.minv + head * m * w;
    float* snew = side(p.minv, heads, head, m, w, panel);
    const float* sold = side(p.minv, heads, head, m, w, panel + 1);
    const int q0 = p0 - KP;  // the previous panel's rows (full: only the last is short)
    auto row = [&](int i) -> const float* {
        return i >= q0 && i < p0 ? sold + (long long)(i - q0) * w : a + (long long)i * w;
    };
    const int j0 = p0 + kp + blockIdx.x * TW, i0 = blockIdx.y * TW;
    const int tid = threadIdx.x;
    for (int idx = tid; idx < KP * 2 * KP; idx += 256) {
        const int r = idx / (2 * KP), c = idx - r * 2 * KP;
        float x;
        if (c < KP)
            x = r < kp && c < kp ? a[(long long)(p0 + r) * w + p0 + c] : (r == c ? 1.0f : 0.0f);
        else
            x = r == c - KP ? 1.0f : 0.0f;
        e[r][c] = x;
    }
    for (int idx = tid; idx < KP * TW; idx += 256) {
        const int s = idx / TW, c = idx - s * TW;
        bs[s][c] = s < kp && j0 + c < w ? a[(long long)(p0 + s) * w + j0 + c] : 0.0f;
        const int r = idx / KP, t = idx - r * KP;  // coalesced along the panel's columns
        const int i = i0 + r;
        fs[t][r] = t < kp && i < m ? row(i)[p0 + t] : 0.0f;
    }
    __syncthreads();
    // D_P⁻¹: 8 threads per row, 8 columns each (row ty = tid / 8, columns tx + 8t).
    {
        const int ty = tid >> 3, tx = tid & 7;
        for (int q = 0; q < KP; ++q) {
            const float inv = 1.0f / e[q][q];
            const float f = e[ty][q];
            float rq[8];
#pragma unroll
            for (int t = 0; t < 8; ++t) rq[t] = e[q][tx + 8 * t] * inv;
            __syncthreads();
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                const int c = tx + 8 * t;
                e[ty][c] = ty == q ? rq[t] : fmaf(-f, rq[t], e[ty][c]);
            }
            __syncthreads();
        }
        float acc[8];
#pragma unroll
        for (int t = 0; t < 8; ++t) acc[t] = 0.0f;
        for (int s = 0; s < KP; ++s) {
            const float d = e[ty][KP + s];
#pragma unroll
            for (int t = 0; t < 8; ++t) acc[t] = fmaf(d, bs[s][tx + 8 * t], acc[t]);
        }
        __syncthreads();
#pragma unroll
        for (int t = 0; t < 8; ++t) bs[ty][tx + 8 * t] = acc[t];
        __syncthreads();
    }
    // Rows ty·4 .. ty·4 + 3, columns tx + 16u of the tile.
    const int ty = tid >> 4, tx = tid & 15;
    float acc[4][4] = {};
#pragma unroll 8
    for (int t = 0; t < KP; ++t) {
        const float4 f4 = *reinterpret_cast<const float4*>(&fs[t][ty * 4]);
        const float fr[4] = {f4.x, f4.y, f4.z, f4.w};
        float bv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) bv[u] = bs[t][tx + 16 * u];
#pragma unroll
        for (int r = 0; r < 4; ++r)
#pragma unroll
            for (int u = 0; u < 4; ++u) acc[r][u] = fmaf(fr[r], bv[u], acc[r][u]);
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {
        const int i = i0 + ty * 4 + r;
        if (i >= m) continue;
        const bool pivot = i >= p0 && i < p0 + kp;
        const float* src = row(i);
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = tx + 16 * u, j = j0 + c;
            if (j >= w) continue;
            if (pivot)
                snew[(long long)(i - p0) * w + j] = bs[i - p0][c];
            else
                a[(long long)i * w + j] = src[j] - acc[r][u];
        }
    }
}

// s = G̃·u (u in the augmented matrix's last dv columns; the last panel's rows, from p.p0
// on, in its side buffer). Grid (row, head), dv threads at most 128 (the host's limit).
extern "C" __global__ void __launch_bounds__(128) reduced_bidir_apply(const ReducedParams p) {
    const float* __restrict__ g = p.g;
    const int m = p.m, dv = p.dv, w = m + dv, pl = p.p0;
    const int i = blockIdx.x, bh = blockIdx.y, c = threadIdx.x;
    if (c >= dv) return;
    const long long row = (long long)bh * m + i;
    const float* gi = g + row * m;
    const float* u = p.minv + (long long)bh * m * w + m + c;
    const float* ul = side(p.minv, gridDim.y, bh, m, w, pl / KP) + m + c;
    float acc = 0.0f;
    for (int j = 0; j < pl; ++j) acc = fmaf(gi[j], u[(long long)j * w], acc);
    for (int j = pl; j < m; ++j) acc = fmaf(gi[j], ul[(long long)(j - pl) * w], acc);
    p.s[row * dv + c] = acc;
}
