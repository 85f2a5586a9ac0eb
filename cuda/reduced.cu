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

// A 16-byte shared-memory load the compiler may not move: u_P is the same for every row
// of the update, and hoisting its 64 loads out of the row loop took 256 registers and a
// spill.
__device__ __forceinline__ float4 lds4(const float* p) {
    float4 v;
    asm volatile("ld.shared.v4.f32 {%0,%1,%2,%3}, [%4];"
                 : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
                 : "r"(smem_addr(p))
                 : "memory");
    return v;
}

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
    // m × CW: for the rows not yet solved, Σ_j G̃_ij·u_j over the finished panels
    // (right-looking: each finished panel is added to every later row at once, so a
    // panel's step needs no load that depends on u).
    extern __shared__ __align__(16) float fin[];
    require_smem(4ll * m * CW);
    __shared__ float gp[PANEL][PANEL + 1];          // G̃_PP
    __shared__ float mi[PANEL][PANEL + 1];          // M_P⁻¹
    __shared__ float ep[PANEL][CW];                 // e_P
    __shared__ __align__(16) float up[PANEL][CW];   // u_P
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
    const int ri = tid >> 3, cc = tid & 7;  // row of the panel; column
    const bool small = m <= SMALL_M;
    for (int idx = tid; idx < m * CW; idx += blockDim.x) fin[idx] = 0.0f;
    if (small) {
        const int wp = tid >> 5;
        if (wp < np) panel_inverse(gh, ch, m, wp * PANEL, gamma, tid & 31, &mis[wp][0][0], cps[wp], &mis[wp][0][0], PANEL + 1);
    }
    // The next panel's own blocks, p̄ and c in registers, loaded one step ahead.
    constexpr int PB = PANEL * PANEL / 256;
    float gt[PB], mt[PB], pv, cv;
    auto prefetch = [&](int a) {
        const int e = min(a + PANEL, m), i = a + ri;
        pv = (i < e && c0 + cc < dv) ? ph[(long long)i * dv + c0 + cc] : 0.0f;
        cv = i < e ? ch[i] : 0.0f;
        const float* mg = minv + ((long long)bh * np + a / PANEL) * PANEL * PANEL;
#pragma unroll
        for (int u = 0; u < PB; ++u) {
            const int idx = tid + 256 * u, r = idx / PANEL, k = idx - r * PANEL;
            gt[u] = (a + r < e && a + k < e) ? gh[(long long)(a + r) * m + a + k] : 0.0f;
            mt[u] = small ? 0.0f : mg[idx];
        }
    };
    prefetch(0);
    __syncthreads();  // fin zeroed, the small path's inverses formed
    for (int a = 0; a < m; a += PANEL) {
        const int e = min(a + PANEL, m);
        const int i = a + ri;
        // This thread's first later row for the update below: its 32 weights G̃_{r,P}
        // now, so their latency overlaps the panel's solve.
        const int r1 = e + tid;
        float4 gu[PANEL / 4];
#pragma unroll
        for (int q = 0; q < PANEL / 4; ++q) {
            gu[q] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            if (r1 < m) {
                const float* gr = gh + (long long)r1 * m + a + 4 * q;
                if ((m & 3) == 0 && a + 4 * q + 4 <= e)
                    gu[q] = *reinterpret_cast<const float4*>(gr);
                else {
                    if (a + 4 * q < e) gu[q].x = gr[0];
                    if (a + 4 * q + 1 < e) gu[q].y = gr[1];
                    if (a + 4 * q + 2 < e) gu[q].z = gr[2];
                    if (a + 4 * q + 3 < e) gu[q].w = gr[3];
                }
            }
        }
#pragma unroll
        for (int u = 0; u < PB; ++u) {
            const int idx = tid + 256 * u, r = idx / PANEL, k = idx - r * PANEL;
            gp[r][k] = gt[u];
            if (!small) mi[r][k] = mt[u];
        }
        const float fi = i < e ? fin[i * CW + cc] : 0.0f;
        ep[ri][cc] = pv + gamma * cv * fi;
        __syncthreads();
        if (a + PANEL < m) prefetch(a + PANEL);
        // u_P = M_P⁻¹·e_P (lower triangular).
        const float(*mp)[PANEL + 1] = small ? mis[a / PANEL] : mi;
        float u = 0.0f;
        for (int j = 0; j <= ri; ++j) u = fmaf(mp[ri][j], ep[j][cc], u);
        up[ri][cc] = i < e ? u : 0.0f;
        __syncthreads();
        // s_P = (finished panels' part) + G̃_PP·u_P (strictly lower).
        if (i < e) {
            float sv = fi;
            for (int j = 0; j < ri; ++j) sv = fmaf(gp[ri][j], up[j][cc], sv);
            if (c0 + cc < dv) sh[(long long)i * dv + c0 + cc] = sv;
        }
        // Every later row r: fin_r += G̃_{r,P}·u_P, one row a thread, all CW columns.
        for (int r = r1; r < m; r += blockDim.x) {
            if (r != r1) {
                const float* gr = gh + (long long)r * m + a;
#pragma unroll
                for (int q = 0; q < PANEL / 4; ++q) {
                    if ((m & 3) == 0 && a + 4 * q + 4 <= e)
                        gu[q] = *reinterpret_cast<const float4*>(gr + 4 * q);
                    else {
                        gu[q].x = a + 4 * q < e ? gr[4 * q] : 0.0f;
                        gu[q].y = a + 4 * q + 1 < e ? gr[4 * q + 1] : 0.0f;
                        gu[q].z = a + 4 * q + 2 < e ? gr[4 * q + 2] : 0.0f;
                        gu[q].w = a + 4 * q + 3 < e ? gr[4 * q + 3] : 0.0f;
                    }
                }
            }
            float acc[CW];
            {
                const float4 f0 = *reinterpret_cast<const float4*>(&fin[r * CW]);
                const float4 f1 = *reinterpret_cast<const float4*>(&fin[r * CW + 4]);
                acc[0] = f0.x, acc[1] = f0.y, acc[2] = f0.z, acc[3] = f0.w;
                acc[4] = f1.x, acc[5] = f1.y, acc[6] = f1.z, acc[7] = f1.w;
            }
#pragma unroll
            for (int q = 0; q < PANEL / 4; ++q) {
                const float gw[4] = {gu[q].x, gu[q].y, gu[q].z, gu[q].w};
#pragma unroll
                for (int l = 0; l < 4; ++l) {
                    const float4 u0 = lds4(&up[4 * q + l][0]);
                    const float4 u1 = lds4(&up[4 * q + l][4]);
                    acc[0] = fmaf(gw[l], u0.x, acc[0]);
                    acc[1] = fmaf(gw[l], u0.y, acc[1]);
                    acc[2] = fmaf(gw[l], u0.z, acc[2]);
                    acc[3] = fmaf(gw[l], u0.w, acc[3]);
                    acc[4] = fmaf(gw[l], u1.x, acc[4]);
                    acc[5] = fmaf(gw[l], u1.y, acc[5]);
                    acc[6] = fmaf(gw[l], u1.z, acc[6]);
                    acc[7] = fmaf(gw[l], u1.w, acc[7]);
                }
            }
            *reinterpret_cast<float4*>(&fin[r * CW]) = make_float4(acc[0], acc[1], acc[2], acc[3]);
            *reinterpret_cast<float4*>(&fin[r * CW + 4]) = make_float4(acc[4], acc[5], acc[6], acc[7]);
        }
        __syncthreads();
    }
}
