// SPEC §2 step 1b: coarse logits, the shifted coarse matrix G̃ and h = G̃·v̄.
//
// For the allowed J of block row I (J < I when causal, J ≠ I otherwise):
// L_IJ = scale·q̄_I·k̄_J + ln n_J, σ_I = max_J L_IJ, G̃_IJ = exp(L_IJ − σ_I) (0 where not
// allowed), gsum_I = Σ_J G̃_IJ and h_I = Σ_J G̃_IJ·v̄_J. The shift keeps every
// exponential ≤ 1; the local kernel folds σ_I back into the row normalizer. Block 0 of
// a causal head has no allowed J: σ = −inf, gsum = 0, h = 0, and the local kernel then
// adds no cross-block mass.
//
// One CTA (256 threads) per (group of `ig` ≤ 8 block rows, query head), so each k̄_J
// and v̄_J read from L2 serves ig rows. Logits: one thread per J, ig dot products,
// k̄ staged transposed in shared memory 256 rows at a time.
// Max and sum: warp r takes row r. h: 4 groups of 64 threads over J, ig rows each.
// The ig rows of G̃ live in shared memory (ig·m floats).
#include "common.cuh"

#define IGMAX 8
#define KTS 257  // row stride of the transposed k̄ chunk (256 + 1: no bank conflicts)

extern "C" __global__ void __launch_bounds__(256) coarse(
    const float* __restrict__ qbar, const float* __restrict__ kbar, const float* __restrict__ vbar,
    float* __restrict__ g, float* __restrict__ sigma, float* __restrict__ gsum,
    float* __restrict__ h, int H, int Hkv, int n, int dk, int dv, int b, int m, float scale,
    int causal, int ig) {
    __shared__ float qrows[IGMAX][128];
    __shared__ float hpart[4][IGMAX][64];
    extern __shared__ float grow[];  // ig × m, then the k̄ chunk (dk × KTS)
    const int I0 = blockIdx.x * ig;
    const int bh = blockIdx.y;
    const int nI = min(ig, m - I0);
    const long long kvh = kv_head(bh, H, Hkv);
    const float* kb = kbar + kvh * m * dk;
    const float* vb = vbar + kvh * m * dv;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int idx = tid; idx < IGMAX * dk; idx += blockDim.x) {
        const int r = idx / dk, c = idx - r * dk;
        qrows[r][c] = r < nI ? qbar[((long long)bh * m + I0 + r) * dk + c] : 0.0f;
    }
    __syncthreads();
    const float ln_b = logf((float)b);
    const float ln_last = logf((float)(n - (m - 1) * b));
    const int jend = causal ? I0 + nI - 1 : m;  // no row of the group allows J ≥ jend
    // k̄ in chunks of 256 rows, staged transposed in shared memory (coalesced global
    // reads, conflict-free column reads); thread J computes ig dot products.
    float* kt = grow + ig * m;  // dk × KTS
    for (int J0 = 0; J0 < jend; J0 += 256) {
        const int nj = min(256, jend - J0);
        __syncthreads();
        // 8 independent loads in flight per thread before the stores (one dependent L2
        // round trip per element made this the kernel's cost).
        const float* src = kb + (long long)J0 * dk;
        for (int i0 = tid; i0 < nj * dk; i0 += 8 * 256) {
            float tmp[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int idx = i0 + u * 256;
                tmp[u] = idx < nj * dk ? src[idx] : 0.0f;
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const int idx = i0 + u * 256;
                if (idx < nj * dk) {
                    const int jl = idx / dk, c = idx - jl * dk;
                    kt[c * KTS + jl] = tmp[u];
                }
            }
        }
        __syncthreads();
        const int J = J0 + tid;
        if (tid < nj) {
            float acc[IGMAX];
#pragma unroll
            for (int r = 0; r < IGMAX; ++r) acc[r] = 0.0f;
            for (int c = 0; c < dk; ++c) {
                const float kv = kt[c * KTS + tid];
#pragma unroll
                for (int r = 0; r < IGMAX; ++r) acc[r] = fmaf(qrows[r][c], kv, acc[r]);
            }
            const float lnj = J == m - 1 ? ln_last : ln_b;
#pragma unroll
            for (int r = 0; r < IGMAX; ++r) {
                if (r < nI) {
                    const int I = I0 + r;
                    const bool ok = causal ? J < I : J != I;
                    grow[r * m + J] = ok ? scale * acc[r] + lnj : neg_inf();
                }
            }
        }
    }
    __syncthreads();
    if (warp < nI) {
        float* row = grow + warp * m;
        float mx = neg_inf();
        for (int J = lane; J < jend; J += 32) mx = fmaxf(mx, row[J]);
        mx = warp_max(mx);
        float sum = 0.0f;
        for (int J = lane; J < jend; J += 32) {
            const float l = row[J];
            const float e = l == neg_inf() ? 0.0f : __expf(l - mx);
            row[J] = e;
            sum += e;
        }
        sum = warp_sum(sum);
        if (lane == 0) {
            sigma[(long long)bh * m + I0 + warp] = mx;
            gsum[(long long)bh * m + I0 + warp] = sum;
        }
    }
    __syncthreads();
    for (int r = 0; r < nI; ++r) {
        float* gout = g + ((long long)bh * m + I0 + r) * m;
        for (int J = tid; J < m; J += blockDim.x) gout[J] = J < jend ? grow[r * m + J] : 0.0f;
    }
    // h_I = Σ_J G̃_IJ v̄_J: thread (part, c) sums J ≡ part (mod 4) for every row.
    const int part = tid >> 6, c = tid & 63;
    for (int c0 = 0; c0 < dv; c0 += 64) {
        float acc[IGMAX];
#pragma unroll
        for (int r = 0; r < IGMAX; ++r) acc[r] = 0.0f;
        if (c0 + c < dv) {
            // 8 rows of v̄ in flight per step.
            for (int J = part; J < jend; J += 32) {
                float vv[8];
#pragma unroll
                for (int u = 0; u < 8; ++u) {
                    const int Ju = J + 4 * u;
                    vv[u] = Ju < jend ? vb[(long long)Ju * dv + c0 + c] : 0.0f;
                }
#pragma unroll
                for (int u = 0; u < 8; ++u) {
                    const int Ju = J + 4 * u;
                    if (Ju < jend) {
#pragma unroll
                        for (int r = 0; r < IGMAX; ++r)
                            if (r < nI) acc[r] = fmaf(grow[r * m + Ju], vv[u], acc[r]);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < IGMAX; ++r) hpart[part][r][c] = acc[r];
        __syncthreads();
        for (int idx = tid; idx < nI * 64; idx += blockDim.x) {
            const int r = idx >> 6, cc = idx & 63;
            if (c0 + cc < dv)
                h[((long long)bh * m + I0 + r) * dv + c0 + cc] =
                    hpart[0][r][cc] + hpart[1][r][cc] + hpart[2][r][cc] + hpart[3][r][cc];
        }
        __syncthreads();
    }
}
