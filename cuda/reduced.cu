// SPEC §2 step 6, causal: the m×m reduced system (I − γ·diag(c)·G̃)·u = p̄ by blocked
// forward substitution, and s = G̃·u (what step 7 needs).
//
// Rows go in panels of 32. With e_P = p̄_P + γ·c_P ⊙ (G̃_{P,<P}·u_{<P}) (the finished
// rows' part), the panel's own rows satisfy M_P·u_P = e_P with M_P = I − γ·diag(c_P)·G̃_PP,
// unit lower triangular. `reduced_inverses` forms every M_P⁻¹ first, all panels of all
// heads in parallel (one warp per panel, a column per lane), so the sequential part of
// `reduced_causal` is, per panel, one product with the finished rows and two 32-deep
// products (u_P = M_P⁻¹·e_P, s_P += G̃_PP·u_P) spread over all 256 threads, instead of a
// 32-step substitution by a few threads.
//
// Columns of u are independent, so the grid of `reduced_causal` is (column group of 8,
// head): enough CTAs to fill the GPU at B·H = 16. The CTA's 8 columns of u live in
// shared memory (m×8 floats).
#include "common.cuh"

#define PANEL 32
#define CW 8
#define SMALL_M 64  // plan::REDUCED_SMALL_M

// M_P⁻¹ of panel P (rows a = 32·P on) of head bh by one warp, a column per lane, into
// out[i·ld + lane]; rows and columns past m are those of the identity. gp, cp: the warp's
// scratch (the panel of G̃, γ·c); gp may be out itself (the columns stay in registers
// until the end).
__device__ __forceinline__ void panel_inverse(const float* __restrict__ gh, const float* __restrict__ ch,
                                              int m, int a, float gamma, int lane, float* gp, float* cp,
                                              float* out, int ld) {
    const int rows = min(PANEL, m - a);
    float tmp[PANEL];
#pragma unroll
    for (int r = 0; r < PANEL; ++r) tmp[r] = (r < rows && lane < rows) ? gh[(long long)(a + r) * m + a + lane] : 0.0f;
#pragma unroll
    for (int r = 0; r < PANEL; ++r) gp[r * (PANEL + 1) + lane] = tmp[r];
    cp[lane] = lane < rows ? gamma * ch[a + lane] : 0.0f;
    __syncwarp();
    // Column `lane` of M_P⁻¹: x_i = δ_i,lane + γ·c_i·Σ_{j<i} G̃_ij·x_j.
    float x[PANEL];
#pragma unroll
    for (int i = 0; i < PANEL; ++i) {
        float acc = 0.0f;
#pragma unroll
        for (int j = 0; j < i; ++j) acc = fmaf(gp[i * (PANEL + 1) + j], x[j], acc);
        x[i] = (i == lane ? 1.0f : 0.0f) + cp[i] * acc;
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < PANEL; ++i) out[i * ld + lane] = x[i];
}

// M_P⁻¹ of every 32-row panel: minv[((bh·np + P)·32 + i)·32 + j], np = ceil(m/32).
// Not launched for m ≤ SMALL_M: reduced_causal then forms them itself.
extern "C" __global__ void __launch_bounds__(32) reduced_inverses(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    __shared__ float gp[PANEL * (PANEL + 1)];
    __shared__ float cp[PANEL];
    const int P = blockIdx.x, bh = blockIdx.y;
    const int np = (p.m + PANEL - 1) / PANEL;
    panel_inverse(p.g + (long long)bh * p.m * p.m, p.cvec + (long long)bh * p.m, p.m, P * PANEL, p.gamma,
                  threadIdx.x, gp, cp, p.minv + ((long long)bh * np + P) * PANEL * PANEL, PANEL);
}

extern "C" __global__ void __launch_bounds__(256) reduced_causal(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    const float* __restrict__ g = p.g;
    const float* __restrict__ pbar = p.pbar;
    const float* __restrict__ cvec = p.cvec;
    const float* __restrict__ minv = p.minv;
    float* __restrict__ s = p.s;
    const int m = p.m, dv = p.dv;
    const float gamma = p.gamma;
    extern __shared__ __align__(16) float us[];  // m × CW: this CTA's columns of u
    require_smem(4ll * m * CW);
    __shared__ float gp[PANEL][PANEL + 1];   // G̃_PP
    __shared__ float mi[PANEL][PANEL + 1];   // M_P⁻¹
    __shared__ float sp[PANEL][CW];          // the panel's s (finished rows' part first)
    __shared__ float ep[PANEL][CW];          // e_P
    // m ≤ SMALL_M: every M_P⁻¹ formed here at the start, one warp a panel (a launch of
    // reduced_inverses saved: about 5 µs of a 70 µs call at n = 4096 on the H100).
    __shared__ float mis[SMALL_M / PANEL][PANEL][PANEL + 1];
    __shared__ float cps[SMALL_M / PANEL][PANEL];
    const int bh = blockIdx.y;
    const int c0 = blockIdx.x * CW;
    const int np = (m + PANEL - 1) / PANEL;
    const float* gh = g + (long long)bh * m * m;
    const float* ph = pbar + (long long)bh * m * dv;
    const float* ch = cvec + (long long)bh * m;
    float* sh = s + (long long)bh * m * dv;
    const int tid = threadIdx.x;
    const int ri = tid >> 3, cc = tid & 7;  // row of the panel; column (or j-part)
    const bool small = m <= SMALL_M;
    if (small) {
        const int wp = tid >> 5;
        if (wp < np) panel_inverse(gh, ch, m, wp * PANEL, gamma, tid & 31, &mis[wp][0][0], cps[wp], &mis[wp][0][0], PANEL + 1);
        __syncthreads();
    }
    for (int a = 0; a < m; a += PANEL) {
        const int e = min(a + PANEL, m);
        const int i = a + ri;
        // Every load of the panel first (independent of u), then the product.
        const float pv = (i < e && c0 + cc < dv) ? ph[(long long)i * dv + c0 + cc] : 0.0f;
        const float cv = i < e ? ch[i] : 0.0f;
        const float* mg = minv + ((long long)bh * np + a / PANEL) * PANEL * PANEL;
        // The panel's blocks into registers now, into shared memory after the product,
        // so their loads overlap the product's instead of preceding them.
        float gt[PANEL * PANEL / 256], mt[PANEL * PANEL / 256];
#pragma unroll
        for (int u = 0; u < PANEL * PANEL / 256; ++u) {
            const int idx = tid + 256 * u, r = idx / PANEL, k = idx - r * PANEL;
            gt[u] = (a + r < e && a + k < e) ? gh[(long long)(a + r) * m + a + k] : 0.0f;
            mt[u] = small ? 0.0f : mg[idx];
        }
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
            ep[ri][cc] = pv + gamma * cv * mine;
        }
#pragma unroll
        for (int u = 0; u < PANEL * PANEL / 256; ++u) {
            const int idx = tid + 256 * u, r = idx / PANEL, k = idx - r * PANEL;
            gp[r][k] = gt[u];
            if (!small) mi[r][k] = mt[u];
        }
        __syncthreads();
        // u_P = M_P⁻¹·e_P (lower triangular).
        const float(*mp)[PANEL + 1] = small ? mis[a / PANEL] : mi;
        float u = 0.0f;
        for (int j = 0; j <= ri; ++j) u = fmaf(mp[ri][j], ep[j][cc], u);
        if (i < e) us[i * CW + cc] = u;
        __syncthreads();
        // s_P = (finished rows' part) + G̃_PP·u_P (strictly lower).
        if (i < e) {
            float sv = sp[ri][cc];
            for (int j = 0; j < ri; ++j) sv = fmaf(gp[ri][j], us[(a + j) * CW + cc], sv);
            if (c0 + cc < dv) sh[(long long)i * dv + c0 + cc] = sv;
        }
        __syncthreads();
    }
}
