// SPEC §2, bidirectional (causal = 0): the local and the reduced systems are full, and
// both are solved by Gauss–Jordan elimination without pivoting (I − γD and I − γ·diag(c)·G̃
// are strictly diagonally dominant by rows for γ < 1, SPEC §1–2, so no pivot is small).
// f32 arithmetic throughout (the host caps γ, src/gpu/plan.rs).
//
// Steps 1 (block means) and 1b (coarse, with causal = 0: every J ≠ I) and 7 (combine) are
// the causal path's kernels.
#include "common.cuh"

// ---------------------------------------------------------------------------------------
// Local stage: one CTA of 256 threads per (block I, query head), the block's system held
// in registers. Thread (ty, tx) of a 16 × 16 grid owns rows i = ty + 16k (k < R) and
// columns j = tx + 16l of [M | X]: l < R are M = I − γD (the block padded to 16R rows and
// columns), l = R + lv the right side X = D·V + z⊗h (column c = tx + 16lv, padded to
// 16V). The w column (z) of its rows is held by all 16 threads of a row group, so the
// elimination needs no divergent lanes. Register tiles make each elimination step cost R
// shared-memory reads of the pivot column, R + V of the pivot row and R·(R + V) FMA,
// where the previous kernel (1024 threads, the system in shared memory) read and wrote
// shared memory for every FMA: 6× slower at b = 128 (docs/gpu.md).
//
// Shared memory (mirrored by bidir_smem() in src/gpu/plan.rs), one region reused by the
// phases: Q and K rows (2 · 16R × lq floats, lq = dk rounded up to 8, + 4, so that
// float4 reads of 8 consecutive rows hit distinct banks); then D (16R × (16R + 4)) and
// V (16R × 16V); then P and w for the output (nb × (dv + 1)). After the region, the
// double-buffered pivot column (2 × 16R) and pivot row (2 × (16(R + V) + 1)).
__host__ __device__ constexpr int bidir_lq(int dk) { return (dk + 7) / 8 * 8 + 4; }

template <class T, int R, int V>
__device__ void local_bidir(const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, T* __restrict__ y, float* __restrict__ wout,
                            float* __restrict__ pbar, float* __restrict__ cvec,
                            const float* __restrict__ sigma, const float* __restrict__ gsum,
                            const float* __restrict__ hvec, int H, int Hkv, int n, int dk, int dv,
                            int b, int m, float scale, float gamma) {
    constexpr int NR = 16 * R, NC = 16 * (R + V), NV = 16 * V, LD = NR + 4;
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
    const T* qh = q + ((long long)bh * n + base) * dk;
    const T* kh = k + (kvh * n + base) * dk;
    const T* vh = v + (kvh * n + base) * dv;

    // Q and K rows, zero-padded to NR rows and lq columns.
    float* qs = sm;
    float* ks = sm + NR * lq;
    for (int idx = tid; idx < NR * lq; idx += 256) {
        const int r = idx / lq, c = idx - r * lq;
        const bool in = r < nb && c < dk;
        qs[idx] = in ? to_f(qh[(long long)r * dk + c]) : 0.0f;
        ks[idx] = in ? to_f(kh[(long long)r * dk + c]) : 0.0f;
    }
    __syncthreads();
    float a[R][R + V];  // the right side's columns are first written below, with z⊗h
    float z[R];
#pragma unroll
    for (int kk = 0; kk < R; ++kk)
#pragma unroll
        for (int l = 0; l < R; ++l) a[kk][l] = 0.0f;
    for (int c = 0; c < dk; c += 4) {  // columns dk.. of qs, ks are 0
        float4 qv[R], kv[R];
#pragma unroll
        for (int kk = 0; kk < R; ++kk) qv[kk] = *reinterpret_cast<const float4*>(qs + (ty + 16 * kk) * lq + c);
#pragma unroll
        for (int l = 0; l < R; ++l) kv[l] = *reinterpret_cast<const float4*>(ks + (tx + 16 * l) * lq + c);
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int l = 0; l < R; ++l) {
                float s = a[kk][l];
                s = fmaf(qv[kk].x, kv[l].x, s);
                s = fmaf(qv[kk].y, kv[l].y, s);
                s = fmaf(qv[kk].z, kv[l].z, s);
                s = fmaf(qv[kk].w, kv[l].w, s);
                a[kk][l] = s;
            }
    }
    // Softmax with the coarse normalizer; a row's NR values lie in the 16 lanes of one
    // half-warp. D in a[·][< R], z per row; padded rows and columns are 0.
    const float sig = sigma[bi], gs = gsum[bi];
#pragma unroll
    for (int kk = 0; kk < R; ++kk) {
        const int i = ty + 16 * kk;
        float mx = sig;
#pragma unroll
        for (int l = 0; l < R; ++l) {
            a[kk][l] *= scale;
            if (tx + 16 * l < nb) mx = fmaxf(mx, a[kk][l]);
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        float l_ = 0.0f;
#pragma unroll
        for (int l = 0; l < R; ++l) {
            const float e = tx + 16 * l < nb ? __expf(a[kk][l] - mx) : 0.0f;
            a[kk][l] = e;
            l_ += e;
        }
#pragma unroll
        for (int o = 8; o > 0; o >>= 1) l_ += __shfl_xor_sync(0xffffffffu, l_, o);
        const float ec = gs > 0.0f ? __expf(sig - mx) : 0.0f;
        const float invz = i < nb ? 1.0f / (l_ + ec * gs) : 0.0f;
#pragma unroll
        for (int l = 0; l < R; ++l) a[kk][l] *= invz;
        z[kk] = ec * invz;
    }
    __syncthreads();  // Q and K are consumed
    // X = D·V + z⊗h through shared memory: D (rows padded to float4), V (zero-padded).
    float* ds = sm;
    float* vs = sm + NR * LD;
#pragma unroll
    for (int kk = 0; kk < R; ++kk)
#pragma unroll
        for (int l = 0; l < R; ++l) ds[(ty + 16 * kk) * LD + tx + 16 * l] = a[kk][l];
    for (int idx = tid; idx < NR * NV; idx += 256) {
        const int r = idx / NV, c = idx - r * NV;
        vs[idx] = r < nb && c < dv ? to_f(vh[(long long)r * dv + c]) : 0.0f;
    }
    __syncthreads();
    const float* hI = hvec + bi * dv;
#pragma unroll
    for (int lv = 0; lv < V; ++lv) {
        const int c = tx + 16 * lv;
        const float hc = c < dv ? hI[c] : 0.0f;
#pragma unroll
        for (int kk = 0; kk < R; ++kk) a[kk][R + lv] = z[kk] * hc;
    }
    const int nb4 = (nb + 3) & ~3;
    for (int j = 0; j < nb4; j += 4) {
        float4 dv4[R];
        float vv[4][V];
#pragma unroll
        for (int kk = 0; kk < R; ++kk) dv4[kk] = *reinterpret_cast<const float4*>(ds + (ty + 16 * kk) * LD + j);
#pragma unroll
        for (int t = 0; t < 4; ++t)
#pragma unroll
            for (int lv = 0; lv < V; ++lv) vv[t][lv] = vs[(j + t) * NV + tx + 16 * lv];
#pragma unroll
        for (int kk = 0; kk < R; ++kk)
#pragma unroll
            for (int lv = 0; lv < V; ++lv) {
                float s = a[kk][R + lv];
                s = fmaf(dv4[kk].x, vv[0][lv], s);
                s = fmaf(dv4[kk].y, vv[1][lv], s);
                s = fmaf(dv4[kk].z, vv[2][lv], s);
                s = fmaf(dv4[kk].w, vv[3][lv], s);
                a[kk][R + lv] = s;
            }
    }
    // M = I − γD.
#pragma unroll
    for (int kk = 0; kk < R; ++kk)
#pragma unroll
        for (int l = 0; l < R; ++l) a[kk][l] = (kk == l && ty == tx ? 1.0f : 0.0f) - gamma * a[kk][l];
    // Gauss–Jordan, one barrier per pivot (double-buffered pivot row and column). The
    // pivot column's entry of the pivot row is published as a_pp − 1, so that the one
    // update a_ij −= f_i·a_pj/a_pp also turns the pivot row into a_pj/a_pp. Columns of M
    // left of the pivot's 16-column group are done and skipped (lp is a compile-time
    // index: R unrolled groups of 16 pivots).
#pragma unroll
    for (int lp = 0; lp < R; ++lp) {
        for (int tp = 0; tp < 16; ++tp) {
            const int p = tp + 16 * lp;
            if (p >= nb) break;
            float* cbs = cb + (p & 1) * NR;
            float* rbs = rb + (p & 1) * (NC + 1);
            if (tx == tp) {
#pragma unroll
                for (int kk = 0; kk < R; ++kk) cbs[ty + 16 * kk] = a[kk][lp] - (kk == lp && ty == tp ? 1.0f : 0.0f);
            }
            if (ty == tp) {
#pragma unroll
                for (int l = lp; l < R + V; ++l) rbs[tx + 16 * l] = a[lp][l];
                if (tx == 0) rbs[NC] = z[lp];
            }
            __syncthreads();
            const float inv = 1.0f / rbs[p];
            float r[R + V];
#pragma unroll
            for (int l = lp; l < R + V; ++l) r[l] = rbs[tx + 16 * l] * inv;
            const float rz = rbs[NC] * inv;
#pragma unroll
            for (int kk = 0; kk < R; ++kk) {
                const float f = cbs[ty + 16 * kk];
#pragma unroll
                for (int l = lp; l < R + V; ++l) a[kk][l] = fmaf(-f, r[l], a[kk][l]);
                z[kk] = fmaf(-f, rz, z[kk]);
            }
        }
    }
    // [P | w] is in the right-side columns: through shared memory (stride dv + 1) to Y
    // (coalesced), w, and the block means p̄, c.
    __syncthreads();
    float* ps = sm;
    const int lp1 = dv + 1;
#pragma unroll
    for (int kk = 0; kk < R; ++kk) {
        const int i = ty + 16 * kk;
        if (i >= nb) continue;
#pragma unroll
        for (int lv = 0; lv < V; ++lv) {
            const int c = tx + 16 * lv;
            if (c < dv) ps[i * lp1 + c] = a[kk][R + lv];
        }
        if (tx == 0) ps[i * lp1 + dv] = z[kk];
    }
    __syncthreads();
    T* yh = y + ((long long)bh * n + base) * dv;
    for (int idx = tid; idx < nb * dv; idx += 256) {
        const int r = idx / dv, c = idx - r * dv;
        yh[idx] = from_f<T>(ps[r * lp1 + c]);
    }
    float* wh = wout + (long long)bh * n + base;
    for (int r = tid; r < nb; r += 256) wh[r] = ps[r * lp1 + dv];
    const float invn = 1.0f / (float)nb;
    for (int c = tid; c <= dv; c += 256) {
        float s = 0.0f;
        for (int r = 0; r < nb; ++r) s += ps[r * lp1 + c];
        if (c < dv)
            pbar[bi * dv + c] = s * invn;
        else
            cvec[bi] = s * invn;
    }
}

// Entry points local_bidir_r{R}v{V}_{f32,f16,bf16}: blocks of at most 16R rows, dv ≤ 16V
// (the host picks the smallest that fits, src/gpu/plan.rs).
#define LOCAL_BIDIR_RV(R, V)                                                                  \
    template <class T>                                                                        \
    __device__ void local_bidir_r##R##v##V(const LocalParams& p) {                            \
        local_bidir<T, R, V>(BLOCKRES_LOCAL_ARGS(T, p));                                      \
    }
LOCAL_BIDIR_RV(4, 4)
LOCAL_BIDIR_RV(4, 8)
LOCAL_BIDIR_RV(8, 4)
LOCAL_BIDIR_RV(8, 8)
#define LOCAL_BIDIR(T, S)                                                                     \
    extern "C" __global__ void __launch_bounds__(256) local_bidir_r4v4_##S(const LocalParams p) { \
        local_bidir_r4v4<T>(p);                                                               \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) local_bidir_r4v8_##S(const LocalParams p) { \
        local_bidir_r4v8<T>(p);                                                               \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) local_bidir_r8v4_##S(const LocalParams p) { \
        local_bidir_r8v4<T>(p);                                                               \
    }                                                                                         \
    extern "C" __global__ void __launch_bounds__(256) local_bidir_r8v8_##S(const LocalParams p) { \
        local_bidir_r8v8<T>(p);                                                               \
    }
BLOCKRES_FOR_TYPES(LOCAL_BIDIR)

// ---------------------------------------------------------------------------------------
// Reduced stage: [I − γ·diag(c)·G̃ | p̄] per head (m × (m + dv), row-major, in global
// memory), solved by blocked Gauss–Jordan over panels of KP pivots. Per panel (p.p0 =
// its first pivot) two launches: reduced_bidir_panel replaces the panel rows right of
// the panel by D_P⁻¹·(those rows), D_P its KP × KP diagonal block; reduced_bidir_update
// subtracts A[i, panel]·(new panel rows) from every other row i, right of the panel.
// Columns left of a panel are never read again, so neither kernel writes them; u ends
// in the last dv columns. Many CTAs per head where one CTA of 1024 threads eliminated
// one pivot per barrier (466 µs at m = 128, 16 heads, results/v24_ncu_bidir_16384.txt).
#define KP 32
#define TW 64  // columns per CTA (both kernels), rows per CTA (update)

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

// Grid (⌈(w − p0 − kp)/TW⌉, heads), 256 threads: each CTA inverts D_P (Gauss–Jordan on
// [D_P | I] in shared memory, redundantly: 32 pivots of a 32 × 64 system) and applies
// the inverse to its TW columns of the panel rows.
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_panel(const ReducedParams p) {
    __shared__ float e[KP][2 * KP + 1];
    __shared__ float bs[KP][TW + 1];
    const int m = p.m, w = m + p.dv, p0 = p.p0, kp = min(KP, m - p0);
    float* a = p.minv + (long long)blockIdx.y * m * w;
    const int j0 = p0 + kp + blockIdx.x * TW;
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
        const int r = idx / TW, c = idx - r * TW;
        bs[r][c] = r < kp && j0 + c < w ? a[(long long)(p0 + r) * w + j0 + c] : 0.0f;
    }
    __syncthreads();
    // 8 threads per row, 8 columns each (row ty = tid / 8, columns tx + 8t).
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
    // Panel rows ← D_P⁻¹ · B over this CTA's columns (row ty, columns tx + 8t).
    float acc[8];
#pragma unroll
    for (int t = 0; t < 8; ++t) acc[t] = 0.0f;
    for (int s = 0; s < KP; ++s) {
        const float d = e[ty][KP + s];
#pragma unroll
        for (int t = 0; t < 8; ++t) acc[t] = fmaf(d, bs[s][tx + 8 * t], acc[t]);
    }
    if (ty < kp)
#pragma unroll
        for (int t = 0; t < 8; ++t) {
            const int j = j0 + tx + 8 * t;
            if (j < w) a[(long long)(p0 + ty) * w + j] = acc[t];
        }
}

// Grid (⌈(w − p0 − kp)/TW⌉, ⌈m/TW⌉, heads), 256 threads, 4 × 4 outputs each:
// A[i, j] −= Σ_t A[i, p0 + t]·A[p0 + t, j] for rows i outside the panel, j ≥ p0 + kp.
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_update(const ReducedParams p) {
    __shared__ __align__(16) float fs[KP][TW + 4];  // A[i, panel], transposed: fs[t][i]
    __shared__ float bs[KP][TW + 4];  // panel rows
    const int m = p.m, w = m + p.dv, p0 = p.p0, kp = min(KP, m - p0);
    float* a = p.minv + (long long)blockIdx.z * m * w;
    const int j0 = p0 + kp + blockIdx.x * TW, i0 = blockIdx.y * TW;
    const int tid = threadIdx.x;
    for (int idx = tid; idx < KP * TW; idx += 256) {
        const int r = idx / KP, t = idx - r * KP;  // coalesced along the panel's columns
        const int i = i0 + r;
        fs[t][r] = t < kp && i < m ? a[(long long)i * w + p0 + t] : 0.0f;
        const int s = idx / TW, c = idx - s * TW;
        bs[s][c] = s < kp && j0 + c < w ? a[(long long)(p0 + s) * w + j0 + c] : 0.0f;
    }
    __syncthreads();
    const int ty = tid >> 4, tx = tid & 15;  // rows ty·4.., columns tx + 16u
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
        if (i >= m || (i >= p0 && i < p0 + kp)) continue;
#pragma unroll
        for (int u = 0; u < 4; ++u) {
            const int j = j0 + tx + 16 * u;
            if (j < w) a[(long long)i * w + j] -= acc[r][u];
        }
    }
}

// s = G̃·u (u in the augmented matrix's last dv columns). Grid (row, head), dv threads
// at most 128 (the host's limit on dv).
extern "C" __global__ void __launch_bounds__(128) reduced_bidir_apply(const ReducedParams p) {
    const float* __restrict__ g = p.g;
    const float* __restrict__ aug = p.minv;
    float* __restrict__ s = p.s;
    const int m = p.m, dv = p.dv;
    const int i = blockIdx.x, bh = blockIdx.y, c = threadIdx.x;
    if (c >= dv) return;
    const long long row = (long long)bh * m + i;
    const float* gi = g + row * m;
    const float* u = aug + (long long)bh * m * (m + dv) + m + c;
    float acc = 0.0f;
    for (int j = 0; j < m; ++j) acc = fmaf(gi[j], u[(long long)j * (m + dv)], acc);
    s[row * dv + c] = acc;
}
