// SPEC §2 step 6, causal: the m×m reduced system (I − γ·diag(c)·G̃)·u = p̄ by blocked
// forward substitution, and s = G̃·u (what step 7 needs).
//
// Columns of u are independent, so the grid is (column group of 8, head): enough
// CTAs to fill the GPU at B·H = 16. The CTA's 8 columns of u live in shared memory
// (m×8 floats). Rows go in panels of 32: first the product with the finished rows
// (8 threads per row split j, G̃ rows read coalesced from global/L2), then the
// forward substitution inside the panel, one thread per column, with the panel's
// 32×32 diagonal block of G̃ staged in shared memory:
//   s_i = Σ_{j<i} G̃_ij·u_j,   u_i = p̄_i + γ·c_i·s_i.
#include "common.cuh"

#define PANEL 32
#define CW 8

extern "C" __global__ void __launch_bounds__(256) reduced_causal(
    const float* __restrict__ g, const float* __restrict__ pbar, const float* __restrict__ cvec,
    float* __restrict__ s, int m, int dv, float gamma) {
    extern __shared__ __align__(16) float us[];  // m × CW: this CTA's columns of u
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
    const int ri = tid >> 3, cc = tid & 7;  // row of the panel; column (or j-part)
    for (int a = 0; a < m; a += PANEL) {
        const int e = min(a + PANEL, m);
        const int i = a + ri;
        {
            // Product with the finished rows j < a: the 8 threads of row i split j
            // (coalesced 32-byte reads of G̃'s row), each keeps all 8 columns (two
            // 16-byte shared loads of u per j), then they add up by shuffles and
            // thread cc keeps column cc.
            float acc[CW];
#pragma unroll
            for (int k = 0; k < CW; ++k) acc[k] = 0.0f;
            if (i < e) {
                const float* gi = gh + (long long)i * m;
                // Unrolled 16 deep so that 16 independent L2 loads of G̃ are in flight.
#pragma unroll 16
                for (int j = cc; j < a; j += CW) {
                    const float gv = gi[j];
                    const float4 u0 = *reinterpret_cast<const float4*>(&us[j * CW]);
                    const float4 u1 = *reinterpret_cast<const float4*>(&us[j * CW + 4]);
                    acc[0] = fmaf(gv, u0.x, acc[0]);
                    acc[1] = fmaf(gv, u0.y, acc[1]);
                    acc[2] = fmaf(gv, u0.z, acc[2]);
                    acc[3] = fmaf(gv, u0.w, acc[3]);
                    acc[4] = fmaf(gv, u1.x, acc[4]);
                    acc[5] = fmaf(gv, u1.y, acc[5]);
                    acc[6] = fmaf(gv, u1.z, acc[6]);
                    acc[7] = fmaf(gv, u1.w, acc[7]);
                }
            }
            float mine = 0.0f;
#pragma unroll
            for (int k = 0; k < CW; ++k) {
                float v = acc[k];
                v += __shfl_xor_sync(0xffffffffu, v, 1);
                v += __shfl_xor_sync(0xffffffffu, v, 2);
                v += __shfl_xor_sync(0xffffffffu, v, 4);
                if (k == cc) mine = v;
            }
            sp[ri][cc] = mine;
        }
        pp[ri][cc] = (i < e && c0 + cc < dv) ? ph[(long long)i * dv + c0 + cc] : 0.0f;
        if (tid < PANEL) cp[tid] = a + tid < e ? ch[a + tid] : 0.0f;
#pragma unroll
        for (int idx = tid; idx < PANEL * PANEL; idx += 256) {
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
