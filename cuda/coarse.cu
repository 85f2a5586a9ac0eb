// SPEC §2 step 1b: coarse logits, the shifted coarse matrix G̃ and h = G̃·v̄.
//
// One CTA per (block row I, query head). For the allowed J (J < I when causal,
// J ≠ I otherwise): L_IJ = scale·q̄_I·k̄_J + ln n_J, σ_I = max_J L_IJ,
// G̃_IJ = exp(L_IJ − σ_I) (0 where not allowed), gsum_I = Σ_J G̃_IJ and
// h_I = Σ_J G̃_IJ·v̄_J. The shift keeps every exponential ≤ 1; the local kernel folds
// σ_I back into the row normalizer. Block 0 of a causal head has no allowed J:
// σ = −inf, gsum = 0, h = 0, and the local kernel then adds no cross-block mass.
#include "common.cuh"

extern "C" __global__ void coarse(const float* __restrict__ qbar, const float* __restrict__ kbar,
                                  const float* __restrict__ vbar, float* __restrict__ g,
                                  float* __restrict__ sigma, float* __restrict__ gsum,
                                  float* __restrict__ h, int H, int Hkv, int n, int dk, int dv,
                                  int b, int m, float scale, int causal) {
    __shared__ float red[32];
    extern __shared__ float qrow[];  // dk floats: q̄_I
    const int I = blockIdx.x;
    const int bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const float* qi = qbar + ((long long)bh * m + I) * dk;
    const float* kb = kbar + kvh * m * dk;
    const float* vb = vbar + kvh * m * dv;
    float* grow = g + ((long long)bh * m + I) * m;
    for (int c = threadIdx.x; c < dk; c += blockDim.x) qrow[c] = qi[c];
    __syncthreads();
    const float ln_b = logf((float)b);
    const float ln_last = logf((float)(n - (m - 1) * b));
    float mx = neg_inf();
    for (int J = threadIdx.x; J < m; J += blockDim.x) {
        const bool ok = causal ? (J < I) : (J != I);
        float l = neg_inf();
        if (ok) {
            const float* kj = kb + (long long)J * dk;
            float s = 0.0f;
            for (int c = 0; c < dk; ++c) s += qrow[c] * kj[c];
            l = scale * s + (J == m - 1 ? ln_last : ln_b);
        }
        grow[J] = l;
        mx = fmaxf(mx, l);
    }
    mx = block_max(mx, red);
    float sum = 0.0f;
    for (int J = threadIdx.x; J < m; J += blockDim.x) {
        const float l = grow[J];
        const float e = l == neg_inf() ? 0.0f : expf(l - mx);
        grow[J] = e;
        sum += e;
    }
    sum = block_sum(sum, red);  // its barriers also publish grow[] to every thread
    if (threadIdx.x == 0) {
        sigma[(long long)bh * m + I] = mx;
        gsum[(long long)bh * m + I] = sum;
    }
    float* hi = h + ((long long)bh * m + I) * dv;
    for (int c = threadIdx.x; c < dv; c += blockDim.x) {
        float s = 0.0f;
        const int jend = causal ? I : m;
        for (int J = 0; J < jend; ++J) s += grow[J] * vb[(long long)J * dv + c];
        hi[c] = s;
    }
}
