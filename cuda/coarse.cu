// SPEC §2 step 1b: coarse logits, the shifted coarse matrix G̃ and h = G̃·v̄.
//
// One CTA (256 threads) per (block row I, query head). For the allowed J (J < I when
// causal, J ≠ I otherwise): L_IJ = scale·q̄_I·k̄_J + ln n_J, σ_I = max_J L_IJ,
// G̃_IJ = exp(L_IJ − σ_I) (0 where not allowed), gsum_I = Σ_J G̃_IJ and
// h_I = Σ_J G̃_IJ·v̄_J. The shift keeps every exponential ≤ 1; the local kernel folds
// σ_I back into the row normalizer. Block 0 of a causal head has no allowed J:
// σ = −inf, gsum = 0, h = 0, and the local kernel then adds no cross-block mass.
//
// Dot products: one warp per J, lanes along dk (coalesced k̄ reads). The row of G̃ is
// kept in shared memory (m floats) for h, which 4 groups of 64 threads sum over J.
#include "common.cuh"

extern "C" __global__ void __launch_bounds__(256) coarse(
    const float* __restrict__ qbar, const float* __restrict__ kbar, const float* __restrict__ vbar,
    float* __restrict__ g, float* __restrict__ sigma, float* __restrict__ gsum,
    float* __restrict__ h, int H, int Hkv, int n, int dk, int dv, int b, int m, float scale,
    int causal) {
    __shared__ float red[32];
    __shared__ float qrow[128];
    __shared__ float hpart[4][128];
    extern __shared__ float grow[];  // m floats
    const int I = blockIdx.x;
    const int bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const float* qi = qbar + ((long long)bh * m + I) * dk;
    const float* kb = kbar + kvh * m * dk;
    const float* vb = vbar + kvh * m * dv;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    for (int c = tid; c < dk; c += blockDim.x) qrow[c] = qi[c];
    __syncthreads();
    const float ln_b = logf((float)b);
    const float ln_last = logf((float)(n - (m - 1) * b));
    const int jend = causal ? I : m;  // J ≥ jend is never allowed
    for (int J = warp; J < jend; J += 8) {
        const float* kj = kb + (long long)J * dk;
        float s = 0.0f;
        for (int c = lane; c < dk; c += 32) s += qrow[c] * kj[c];
        s = warp_sum(s);
        if (lane == 0) grow[J] = (J == I) ? neg_inf() : scale * s + (J == m - 1 ? ln_last : ln_b);
    }
    __syncthreads();
    float mx = neg_inf();
    for (int J = tid; J < jend; J += blockDim.x) mx = fmaxf(mx, grow[J]);
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int J = tid; J < jend; J += blockDim.x) {
        const float l = grow[J];
        const float e = l == neg_inf() ? 0.0f : __expf(l - mx);
        grow[J] = e;
        sum += e;
    }
    sum = block_sum(sum, red);  // its barriers also publish grow[] to every thread
    float* gout = g + ((long long)bh * m + I) * m;
    for (int J = tid; J < m; J += blockDim.x) gout[J] = J < jend ? grow[J] : 0.0f;
    if (tid == 0) {
        sigma[(long long)bh * m + I] = mx;
        gsum[(long long)bh * m + I] = sum;
    }
    // h_I = Σ_J G̃_IJ v̄_J: thread (part, c) sums J ≡ part (mod 4).
    const int part = tid >> 6, c = tid & 63;
    for (int c0 = 0; c0 < dv; c0 += 64) {
        float s = 0.0f;
        if (c0 + c < dv) {
#pragma unroll 4
            for (int J = part; J < jend; J += 4) s += grow[J] * vb[(long long)J * dv + c0 + c];
        }
        hpart[part][c] = s;
        __syncthreads();
        if (tid < 64 && c0 + tid < dv)
            h[((long long)bh * m + I) * dv + c0 + tid] =
                hpart[0][tid] + hpart[1][tid] + hpart[2][tid] + hpart[3][tid];
        __syncthreads();
    }
}
