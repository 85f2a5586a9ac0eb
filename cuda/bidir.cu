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

    float a[R][MC + V];  // the right side's columns are first written below, with z⊗h
    float z[R];
    constexpr bool TC = sizeof(T) == 2;
    const int warp = warp_index(), g = (tid >> 2) & 7, t4 = tid & 3;
    if constexpr (TC) {
        // Logits on the tensor cores: warp w owns rows 16w..16w+15 of S = Q·Kᵀ (NR/16 =
        // TR/2 warps), Q and K staged as the element type, zero-padded to 16 columns.
        constexpr int NT8 = NR / 8;
        T* q16 = reinterpret_cast<T*>(sm);
        const int dk16 = (dk + 15) & ~15, lqh = dk16 + 8;  // odd count of 16-byte units
        T* k16 = q16 + NR * lqh;
        stage_rows16(q16, lqh, q + ((long long)bh * n + base) * dk, NR, nb, dk, dk16, tid, NT);
        stage_rows16(k16, lqh, k + (kvh * n + base) * dk, NR, nb, dk, dk16, tid, NT);
        __syncthreads();
        float sacc[NT8][4];
#pragma unroll
        for (int j = 0; j < NT8; ++j) sacc[j][0] = sacc[j][1] = sacc[j][2] = sacc[j][3] = 0.0f;
        strip_logits<T, NT8>(sacc, q16 + 16 * warp * lqh, k16, lqh, dk16, g, t4);
        __syncthreads();  // Q and K are consumed; S goes over them
        float* ss = sm;
#pragma unroll
        for (int j = 0; j < NT8; ++j) {
            float* r0 = ss + (16 * warp + g) * LD + 8 * j + 2 * t4;
            *reinterpret_cast<float2*>(r0) = make_float2(sacc[j][0], sacc[j][1]);
            *reinterpret_cast<float2*>(r0 + 8 * LD) = make_float2(sacc[j][2], sacc[j][3]);
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int l = 0; l < MC; ++l) a[kk][l] = ss[(ty + TR * kk) * LD + tx + 16 * l];
    } else {
        // Q and K rows, zero-padded to NR rows and to a multiple of 4 columns.
        float* qs = sm;
        float* ks = sm + NR * lq;
        const int dk4 = (dk + 3) & ~3;
        stage_rows(qs, lq, q + ((long long)bh * n + base) * dk, NR, nb, dk, dk4, tid, NT);
        stage_rows(ks, lq, k + (kvh * n + base) * dk, NR, nb, dk, dk4, tid, NT);
        __syncthreads();
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
    }
    // Softmax with the coarse normalizer; a row's NR values lie in the 16 lanes of one
    // half-warp. D in a[·][< MC], z per row; padded rows and columns are 0.
    pdl_wait();  // the logits above read only Q and K
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
    __syncthreads();  // S (or Q and K) are consumed
    const float* hI = hvec + bi * dv;
    if constexpr (TC) {
        // X = D·V on the tensor cores, D rounded to the element type (as the causal path's
        // D·V): D row-major and Vᵀ (so that a B fragment's two k values are adjacent),
        // both with row stride NR + 8; warp w forms rows 16w..16w+15, then X goes
        // through shared memory (f32, stride NV + 4) into the row layout.
        constexpr int LDD = NR + 8, XS = NV + 4;
        T* d16 = reinterpret_cast<T*>(sm);
        T* vt = d16 + NR * LDD;
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int l = 0; l < MC; ++l) d16[(ty + TR * kk) * LDD + tx + 16 * l] = from_f<T>(a[kk][l]);
        stage_cols16(vt, LDD, v + (kvh * n + base) * dv, NR, nb, dv, NV, tid, NT);
        __syncthreads();
        float xacc[2 * V][4];
#pragma unroll
        for (int j = 0; j < 2 * V; ++j) xacc[j][0] = xacc[j][1] = xacc[j][2] = xacc[j][3] = 0.0f;
#pragma unroll
        for (int kc = 0; kc < NR; kc += 16) {
            const T* da = d16 + (16 * warp + g) * LDD + kc + 2 * t4;
            const u32 af[4] = {ld_u32(da), ld_u32(da + 8 * LDD), ld_u32(da + 8), ld_u32(da + 8 * LDD + 8)};
#pragma unroll
            for (int j = 0; j < 2 * V; ++j) {
                const T* vb = vt + (8 * j + g) * LDD + kc + 2 * t4;
                const u32 bf[2] = {ld_u32(vb), ld_u32(vb + 8)};
                Mma<T>::run(xacc[j], af, bf);
            }
        }
        __syncthreads();
        float* xs = sm;
#pragma unroll
        for (int j = 0; j < 2 * V; ++j) {
            float* r0 = xs + (16 * warp + g) * XS + 8 * j + 2 * t4;
            *reinterpret_cast<float2*>(r0) = make_float2(xacc[j][0], xacc[j][1]);
            *reinterpret_cast<float2*>(r0 + 8 * XS) = make_float2(xacc[j][2], xacc[j][3]);
        }
        __syncthreads();
#pragma unroll
        for (int lv = 0; lv < V; ++lv) {
            const int c = tx + 16 * lv;
            const float hc = c < dv ? hI[c] : 0.0f;
#pragma unroll
            for (int kk = 0; kk < R; ++kk)
                a[kk][MC + lv] = fmaf(z[kk], hc, xs[(ty + TR * kk) * XS + c]);
        }
    } else {
        // X = D·V + z⊗h through shared memory: D (rows padded to float4), V (zero-padded).
        float* ds = sm;
        float* vs = sm + NR * LD;
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int l = 0; l < MC; ++l) ds[(ty + TR * kk) * LD + tx + 16 * l] = a[kk][l];
        stage_rows(vs, NV, v + (kvh * n + base) * dv, NR, nb, dv, NV, tid, NT);
        __syncthreads();
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
    store_block_outputs(ps, nb, dv, y + ((long long)bh * n + base) * dv,
                        wout + (long long)bh * n + base, pbar + bi * dv, cvec + bi, tid, NT);
}

// Entry points local_bidir_b{B}v{D}_{f32,f16,bf16}: blocks of at most B rows (TR = B/8
// thread rows, 2B threads), dv ≤ D (the host picks the smallest that fits,
// src/gpu/plan.rs).
#define LOCAL_BIDIR_ONE(T, S, B, D)                                                           \
    extern "C" __global__ void __launch_bounds__(2 * B) local_bidir_b##B##v##D##_##S(        \
        const LocalParams p) {                                                                \
        pdl_trigger();                                                                        \
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
    pdl_trigger();
    pdl_wait();
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

// Grid (⌈(w − p0 − kp)/TW⌉, ⌈m/TW⌉, heads), 256 threads. Each CTA issues all its global
// reads first (one memory latency, not one per phase), eliminates [D_P | B] over its TW
// columns by Gauss–Jordan in registers (redundantly across CTAs: 32 pivots of a
// 32 × 96 system, one barrier each), and updates its TW rows there.
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_step(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    constexpr int EC = (KP + TW) / 8;  // GJ columns per thread: j = tx + 8t
    __shared__ __align__(16) float bs[KP][TW + 4];  // D_P⁻¹·B
    __shared__ __align__(16) float fs[KP][TW + 4];  // A[rows, panel], transposed: fs[t][r]
    __shared__ float cb[2][KP], rb[2][KP + TW];     // pivot column and row, double-buffered
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
    // Reads: [D_P | B] (row r = tid/8), A[rows, panel] (8 per thread), the tile (4 × 4).
    const int r = tid >> 3, tx = tid & 7;
    float e[EC];
#pragma unroll
    for (int t = 0; t < EC; ++t) {
        const int c = tx + 8 * t;
        if (t < KP / 8)
            e[t] = r < kp && c < kp ? a[(long long)(p0 + r) * w + p0 + c] : (r == c ? 1.0f : 0.0f);
        else
            e[t] = r < kp && j0 + c - KP < w ? a[(long long)(p0 + r) * w + j0 + c - KP] : 0.0f;
    }
    float fv[KP * TW / 256];
#pragma unroll
    for (int u = 0; u < KP * TW / 256; ++u) {
        const int idx = tid + 256 * u, fr = idx / KP, ft = idx - fr * KP;  // coalesced in ft
        const int i = i0 + fr;
        fv[u] = ft < kp && i < m ? row(i)[p0 + ft] : 0.0f;
    }
    const int ty = tid >> 4, tc = tid & 15;  // update: rows ty·4 + rr, columns tc + 16u
    float acc[4][4];
#pragma unroll
    for (int rr = 0; rr < 4; ++rr) {
        const int i = i0 + ty * 4 + rr;
        const float* src = i < m ? row(i) : a;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int j = j0 + tc + 16 * u;
            acc[rr][u] = i < m && j < w ? src[j] : 0.0f;
        }
    }
#pragma unroll
    for (int u = 0; u < KP * TW / 256; ++u) {
        const int idx = tid + 256 * u, fr = idx / KP, ft = idx - fr * KP;
        fs[ft][fr] = fv[u];
    }
    // Gauss–Jordan on [D_P | B] as in local_bidir: the pivot column is published as
    // a_qq − 1, so one update also scales the pivot row. Pivots past kp are skipped
    // (uniformly: kp is the CTA's).
#pragma unroll
    for (int q = 0; q < KP; ++q) {
        if (q >= kp) break;
        const int tq = q / 8, buf = q & 1;
        if (tx == (q & 7)) cb[buf][r] = e[tq] - (r == q ? 1.0f : 0.0f);
        if (r == q) {
#pragma unroll
            for (int t = tq; t < EC; ++t) rb[buf][tx + 8 * t] = e[t];
        }
        __syncthreads();
        const float f = cb[buf][r] * __fdividef(1.0f, rb[buf][q]);
#pragma unroll
        for (int t = tq; t < EC; ++t) e[t] = fmaf(-f, rb[buf][tx + 8 * t], e[t]);
    }
#pragma unroll
    for (int t = KP / 8; t < EC; ++t) bs[r][tx + 8 * (t - KP / 8)] = e[t];
    __syncthreads();
#pragma unroll 8
    for (int t = 0; t < KP; ++t) {
        const float4 f4 = *reinterpret_cast<const float4*>(&fs[t][ty * 4]);
        const float fr[4] = {f4.x, f4.y, f4.z, f4.w};
        float bv[4];
#pragma unroll
        for (int u = 0; u < 4; ++u) bv[u] = bs[t][tc + 16 * u];
#pragma unroll
        for (int rr = 0; rr < 4; ++rr)
#pragma unroll
            for (int u = 0; u < 4; ++u) acc[rr][u] = fmaf(-fr[rr], bv[u], acc[rr][u]);
    }
#pragma unroll
    for (int rr = 0; rr < 4; ++rr) {
        const int i = i0 + ty * 4 + rr;
        if (i >= m) continue;
        const bool pivot = i >= p0 && i < p0 + kp;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int c = tc + 16 * u, j = j0 + c;
            if (j >= w) continue;
            if (pivot)
                snew[(long long)(i - p0) * w + j] = bs[i - p0][c];
            else
                a[(long long)i * w + j] = acc[rr][u];
        }
    }
}

// s = G̃·u (u in the augmented matrix's last dv columns; the last panel's rows, from p.p0
// on, in its side buffer), a TW × TW tile of s per CTA. Grid (⌈m/TW⌉, ⌈dv/TW⌉, heads),
// 256 threads, each 4 rows × 4 columns; G̃ and u through shared memory in chunks of KP.
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_apply(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    __shared__ __align__(16) float gs[KP][TW + 4];  // G̃ tile, transposed: gs[j][i]
    __shared__ __align__(16) float us[KP][TW + 4];
    const int m = p.m, dv = p.dv, w = m + dv, pl = p.p0;
    const long long heads = gridDim.z, bh = blockIdx.z;
    const int i0 = blockIdx.x * TW, c0 = blockIdx.y * TW, tid = threadIdx.x;
    const float* g = p.g + bh * m * m;
    const float* u = p.minv + bh * m * w + m;
    const float* ul = side(p.minv, heads, bh, m, w, pl / KP) + m;
    const int ty = tid >> 4, tc = tid & 15;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < m; k0 += KP) {
        float gv[KP * TW / 256], uv[KP * TW / 256];
#pragma unroll
        for (int t = 0; t < KP * TW / 256; ++t) {
            const int idx = tid + 256 * t;
            const int gi = idx / KP, gj = idx - gi * KP;  // coalesced along G̃'s rows
            gv[t] = i0 + gi < m && k0 + gj < m ? g[(long long)(i0 + gi) * m + k0 + gj] : 0.0f;
            const int uj = idx / TW, uc = idx - uj * TW;
            const int j = k0 + uj, c = c0 + uc;
            uv[t] = j < m && c < dv ? (j < pl ? u[(long long)j * w + c] : ul[(long long)(j - pl) * w + c]) : 0.0f;
        }
        __syncthreads();  // the previous chunk is consumed
#pragma unroll
        for (int t = 0; t < KP * TW / 256; ++t) {
            const int idx = tid + 256 * t;
            const int gi = idx / KP, gj = idx - gi * KP;
            gs[gj][gi] = gv[t];
            const int uj = idx / TW, uc = idx - uj * TW;
            us[uj][uc] = uv[t];
        }
        __syncthreads();
#pragma unroll 8
        for (int t = 0; t < KP; ++t) {
            const float4 g4 = *reinterpret_cast<const float4*>(&gs[t][ty * 4]);
            const float gr[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
            for (int rr = 0; rr < 4; ++rr)
#pragma unroll
                for (int v = 0; v < 4; ++v) acc[rr][v] = fmaf(gr[rr], us[t][tc + 16 * v], acc[rr][v]);
        }
    }
#pragma unroll
    for (int rr = 0; rr < 4; ++rr) {
        const int i = i0 + ty * 4 + rr;
        if (i >= m) continue;
#pragma unroll
        for (int v = 0; v < 4; ++v) {
            const int c = c0 + tc + 16 * v;
            if (c < dv) p.s[(bh * m + i) * dv + c] = acc[rr][v];
        }
    }
}
