// SPEC §2 step 6, causal: the m×m reduced system (I − γ·diag(c)·G̃)·u = p̄ by blocked
// forward substitution, and s = G̃·u (what step 7 needs).
//
// Columns of u are independent, so the grid is (column group of 8, head): enough
// CTAs to fill the GPU at B·H = 16. Rows go in panels of 32: first a product with the
// finished panels (one output per thread: 32 rows × 8 columns), then a short forward
// substitution inside the panel by warp 0 (8 columns × 4 partial sums over j).
//   s_i = Σ_{j<i} G̃_ij·u_j,   u_i = p̄_i + γ·c_i·s_i.
#include "common.cuh"

#define PANEL 32
#define CW 8

extern "C" __global__ void __launch_bounds__(256) reduced_causal(
    const float* __restrict__ g, const float* __restrict__ pbar, const float* __restrict__ cvec,
    float* __restrict__ u, float* __restrict__ s, int m, int dv, float gamma) {
    const int bh = blockIdx.y;
    const int c0 = blockIdx.x * CW;
    const float* gh = g + (long long)bh * m * m;
    const float* ph = pbar + (long long)bh * m * dv;
    const float* ch = cvec + (long long)bh * m;
    float* uh = u + (long long)bh * m * dv;
    float* sh = s + (long long)bh * m * dv;
    const int tid = threadIdx.x;
    for (int a = 0; a < m; a += PANEL) {
        const int e = min(a + PANEL, m);
        {
            // Product with the finished rows j < a.
            const int i = a + (tid >> 3), c = c0 + (tid & 7);
            if (i < e && c < dv) {
                const float* gi = gh + (long long)i * m;
                float acc0 = 0.0f, acc1 = 0.0f;
                int j = 0;
                for (; j + 1 < a; j += 2) {
                    acc0 = fmaf(gi[j], uh[(long long)j * dv + c], acc0);
                    acc1 = fmaf(gi[j + 1], uh[(long long)(j + 1) * dv + c], acc1);
                }
                if (j < a) acc0 = fmaf(gi[j], uh[(long long)j * dv + c], acc0);
                sh[(long long)i * dv + c] = acc0 + acc1;
            }
        }
        __syncthreads();
        if (tid < 32) {
            const int c = c0 + (tid & 7), part = tid >> 3;
            for (int i = a; i < e; ++i) {
                float acc = 0.0f;
                if (c < dv)
                    for (int j = a + part; j < i; j += 4)
                        acc = fmaf(gh[(long long)i * m + j], uh[(long long)j * dv + c], acc);
                acc += __shfl_xor_sync(0xffffffffu, acc, 8);
                acc += __shfl_xor_sync(0xffffffffu, acc, 16);
                if (part == 0 && c < dv) {
                    const float si = sh[(long long)i * dv + c] + acc;
                    sh[(long long)i * dv + c] = si;
                    uh[(long long)i * dv + c] = ph[(long long)i * dv + c] + gamma * ch[i] * si;
                }
                __syncwarp();
            }
        }
        __syncthreads();
    }
}
