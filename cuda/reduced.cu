// SPEC §2 step 6, causal: the m×m reduced system (I − γ·diag(c)·G̃)·u = p̄ by blocked
// forward substitution, and s = G̃·u (what step 7 needs).
//
// Columns of u are independent, so the grid is (column group of 8, head): enough
// CTAs to fill the GPU at B·H = 16. The CTA's 8 columns of u live in shared memory
// (m×8 floats). Rows go in panels of 32: first the product with the finished rows
// (one output per thread: 32 rows × 8 columns, G̃ rows read from global/L2), then the
// forward substitution inside the panel, one thread per column, with the panel's
// 32×32 diagonal block of G̃ staged in shared memory:
//   s_i = Σ_{j<i} G̃_ij·u_j,   u_i = p̄_i + γ·c_i·s_i.
#include "common.cuh"

#define PANEL 32
#define CW 8

extern "C" __global__ void __launch_bounds__(256) reduced_causal(
    const float* __restrict__ g, const float* __restrict__ pbar, const float* __restrict__ cvec,
    float* __restrict__ s, int m, int dv, float gamma) {
    extern __shared__ float us[];            // m × CW: this CTA's columns of u
    __shared__ float gp[PANEL][PANEL + 1];   // diagonal block of the panel
    __shared__ float sp[PANEL][CW];          // the panel's partial s
    __shared__ float pp[PANEL][CW];          // the panel's p̄ and c, staged so the
    __shared__ float cp[PANEL];              // sequential part reads no global memory
    const int bh = blockIdx.y;
    const int c0 = blockIdx.x * CW;
    const float* gh = g + (long long)bh * m * m;
    const float* ph = pbar + (long long)bh * m * dv;
    const float* ch = cvec + (long long)bh * m;
    float* sh = s + (long long)bh * m * dv;
    const int tid = threadIdx.x;
    const int ri = tid >> 3, cc = tid & 7;
    for (int a = 0; a < m; a += PANEL) {
        const int e = min(a + PANEL, m);
        const int i = a + ri;
        float acc0 = 0.0f, acc1 = 0.0f;
        if (i < e) {
            const float* gi = gh + (long long)i * m;
            int j = 0;
#pragma unroll 8
            for (; j + 1 < a; j += 2) {
                acc0 = fmaf(gi[j], us[j * CW + cc], acc0);
                acc1 = fmaf(gi[j + 1], us[(j + 1) * CW + cc], acc1);
            }
            if (j < a) acc0 = fmaf(gi[j], us[j * CW + cc], acc0);
        }
        sp[ri][cc] = acc0 + acc1;
        pp[ri][cc] = (i < e && c0 + cc < dv) ? ph[(long long)i * dv + c0 + cc] : 0.0f;
        if (tid < PANEL) cp[tid] = a + tid < e ? ch[a + tid] : 0.0f;
        for (int idx = tid; idx < PANEL * PANEL; idx += blockDim.x) {
            const int r = idx / PANEL, k = idx - r * PANEL;
            gp[r][k] = (a + r < e && a + k < e) ? gh[(long long)(a + r) * m + a + k] : 0.0f;
        }
        __syncthreads();
        if (tid < CW) {
            // Forward substitution in the panel, one thread per column: sub-panels of
            // 8 rows, the finished rows' part register-blocked, the 8-row triangle
            // fully unrolled with its values in registers.
            for (int sb = 0; sb < e - a; sb += 8) {
                float acc[8];
#pragma unroll
                for (int r = 0; r < 8; ++r) acc[r] = sp[min(sb + r, PANEL - 1)][tid];
                for (int k = 0; k < sb; ++k) {
                    const float uk = us[(a + k) * CW + tid];
#pragma unroll
                    for (int r = 0; r < 8; ++r) acc[r] = fmaf(gp[min(sb + r, PANEL - 1)][k], uk, acc[r]);
                }
                float uv[8];
#pragma unroll
                for (int rr = 0; rr < 8; ++rr) {
                    const int r = sb + rr;
                    uv[rr] = 0.0f;
                    if (r < e - a) {
                        float si = acc[rr];
#pragma unroll
                        for (int k = 0; k < rr; ++k) si = fmaf(gp[r][sb + k], uv[k], si);
                        sp[r][tid] = si;
                        uv[rr] = pp[r][tid] + gamma * cp[r] * si;
                        us[(a + r) * CW + tid] = uv[rr];
                    }
                }
            }
        }
        __syncthreads();
        if (i < e && c0 + cc < dv) sh[(long long)i * dv + c0 + cc] = sp[ri][cc];
        __syncthreads();
    }
}
