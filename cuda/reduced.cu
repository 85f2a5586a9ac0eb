// SPEC §2 step 6, causal: the m×m reduced system (I − γ·diag(c)·G̃)·u = p̄ by blocked
// forward substitution, and s = G̃·u (what step 7 needs).
//
// Rows go in panels of 32. With f_P = G̃_{P,<P}·u_{<P} (the finished panels' part) and
// e_P = p̄_P + γ·c_P ⊙ f_P, the panel's own rows satisfy M_P·u_P = e_P with M_P =
// I − γ·diag(c_P)·G̃_PP, unit lower triangular, and s_P = f_P + G̃_PP·u_P.
// `reduced_inverses` forms every M_P⁻¹ first, all panels of all heads in parallel (one
// warp per panel, a column per lane), so per panel `reduced_causal` does two 32-deep
// products over all 256 threads instead of a 32-step substitution by a few. f is
// right-looking: once u_P is known every later row adds G̃_{r,P}·u_P, with weights loaded
// a panel ahead, so no load waits on u (left-looking, each panel first read its rows of
// G̃ up to the diagonal from L2: 28.0 µs at n = 32768 in v45's profile, the first
// right-looking form 24.6 in v46's; H100, two calls, BENCHMARKS.md).
//
// Columns of u are independent, so the grid of `reduced_causal` is (column group of 8,
// head): enough CTAs to fill the GPU at B·H = 16. The CTA's f lives in shared memory
// (m × 8 floats).
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

// Row stride of a panel in shared memory: 16-byte aligned rows for vector loads.
#define GS (PANEL + 4)

// M_P⁻¹ of panel P (rows a = 32·P on) of head bh by one warp, a column per lane, into
// out[i·ld + lane]; rows and columns past m are those of the identity. gp (PANEL·GS
// floats), cp: the warp's scratch (the panel of G̃ transposed, γ·c); gp may be out itself
// (the columns stay in registers until the end).
//
// Right-looking: once x_j is known every later x_i's sum takes G̃_ij·x_j, so the chain
// from x_j to x_{j+1} is two FMAs, and the rest of step j is independent FMAs on
// broadcast vector loads of column j. (Left-looking, x_i = δ + γc_i·Σ_{j<i} G̃_ij·x_j as
// one accumulator per row, the 496 FMAs and 496 scalar loads formed a single in-order
// chain.)
__device__ __forceinline__ void panel_inverse(const float* __restrict__ gh, const float* __restrict__ ch,
                                              int m, int a, float gamma, int lane, float* gp, float* cp,
                                              float* out, int ld) {
    const int rows = min(PANEL, m - a);
    // Lane i reads row a + i of the panel and writes it as column i of gp: gp[j·GS + i]
    // = G̃_{a+i, a+j}, so that step j below reads column j of G̃ contiguously.
    float tmp[PANEL];
    const float* gr = gh + (long long)(a + lane) * m + a;
#pragma unroll
    for (int q = 0; q < PANEL / 4; ++q) {
        if (lane < rows && (m & 3) == 0 && 4 * q + 4 <= rows) {
            const float4 v = *reinterpret_cast<const float4*>(gr + 4 * q);
            tmp[4 * q] = v.x;
            tmp[4 * q + 1] = v.y;
            tmp[4 * q + 2] = v.z;
            tmp[4 * q + 3] = v.w;
        } else {
#pragma unroll
            for (int u = 0; u < 4; ++u) tmp[4 * q + u] = (lane < rows && 4 * q + u < rows) ? gr[4 * q + u] : 0.0f;
        }
    }
    // Neither caller uses gp before this; the barrier keeps a warp that reused it (gp may
    // be out itself) from overwriting what another lane still reads. Kept as v72a tested it.
    __syncwarp();
#pragma unroll
    for (int r = 0; r < PANEL; ++r) gp[r * GS + lane] = tmp[r];
    cp[lane] = lane < rows ? gamma * ch[a + lane] : 0.0f;
    __syncwarp();
    // Column `lane` of M_P⁻¹: x_j = δ_j,lane + γ·c_j·acc_j, acc_i += G̃_ij·x_j for i > j.
    float x[PANEL], acc[PANEL];
#pragma unroll
    for (int i = 0; i < PANEL; ++i) acc[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < PANEL; ++j) {
        x[j] = (j == lane ? 1.0f : 0.0f) + cp[j] * acc[j];
#pragma unroll
        for (int q = (j + 1) / 4; q < PANEL / 4; ++q) {
            const float4 g4 = *reinterpret_cast<const float4*>(gp + j * GS + 4 * q);
            const float gv[4] = {g4.x, g4.y, g4.z, g4.w};
#pragma unroll
            for (int u = 0; u < 4; ++u)
                if (4 * q + u > j) acc[4 * q + u] = fmaf(gv[u], x[j], acc[4 * q + u]);
        }
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < PANEL; ++i) out[i * ld + lane] = x[i];
}

// M_P⁻¹ of every 32-row panel: minv[((bh·np + P)·32 + i)·32 + j], np = ceil(m/32).
// Not launched for m ≤ SMALL_M: reduced_causal_small then forms them itself.
extern "C" __global__ void __launch_bounds__(32) reduced_inverses(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    __shared__ __align__(16) float gp[PANEL * GS];
    __shared__ float cp[PANEL];
    const int P = blockIdx.x, bh = blockIdx.y;
    const int np = (p.m + PANEL - 1) / PANEL;
    panel_inverse(p.g + (long long)bh * p.m * p.m, p.cvec + (long long)bh * p.m, p.m, P * PANEL, p.gamma,
                  threadIdx.x, gp, cp, p.minv + ((long long)bh * np + P) * PANEL * PANEL, PANEL);
}

// The update of the rows after a panel (rows [e, m), the panel's columns [a, e)): each
// row split over tpr threads (1, 2, 4 or 8, as many as 256 threads allow), thread part
// pt taking the panel's columns [a + pt·32/tpr, +32/tpr) of G̃, all CW columns of u.
struct Split {
    int tpr, row, pt;  // threads a row; this thread's first row (≥ m: none); its part
};
// SMALL (m ≤ SMALL_M): at most 32 rows follow a panel, so tpr is 8 at compile time.
template <bool SMALL>
__device__ __forceinline__ Split split_rows(int e, int m, int tid) {
    const int left = m - e;
    const int tpr = SMALL || left <= 32 ? 8 : left <= 64 ? 4 : left <= 128 ? 2 : 1;
    return {tpr, e + tid / tpr, tid % tpr};
}
// Row r's weights G̃_{r, a + pt·32/tpr + 0..}, zero past e, as float4 (w[q], q < 8/tpr).
__device__ __forceinline__ void load_weights(float4* w, const float* gh, int m, int a, int e, int r,
                                             const Split& sp) {
    const int c0 = a + sp.pt * (PANEL / sp.tpr);
    const float* gr = gh + (long long)r * m + c0;
#pragma unroll
    for (int q = 0; q < PANEL / 4; ++q) {
        w[q] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        if (q < PANEL / 4 / sp.tpr && r < m) {
            const int c = c0 + 4 * q;
            if ((m & 3) == 0 && c + 4 <= e) {
                w[q] = *reinterpret_cast<const float4*>(gr + 4 * q);
            } else {
                if (c < e) w[q].x = gr[4 * q];
                if (c + 1 < e) w[q].y = gr[4 * q + 1];
                if (c + 2 < e) w[q].z = gr[4 * q + 2];
                if (c + 3 < e) w[q].w = gr[4 * q + 3];
            }
        }
    }
}

// SMALL: m ≤ SMALL_M, every M_P⁻¹ formed here (no reduced_inverses launch). A template
// rather than a flag, so that each entry holds only its own path: with both in one
// kernel it was 5.8 k instructions (93 KB of code, run about once at m = 64).
template <bool SMALL>
__device__ __forceinline__ void reduced_causal_body(const ReducedParams& p) {
    const float* __restrict__ g = p.g;
    const float* __restrict__ pbar = p.pbar;
    const float* __restrict__ cvec = p.cvec;
    const float* __restrict__ minv = p.minv;
    float* __restrict__ s = p.s;
    const int m = p.m, dv = p.dv;
    const float gamma = p.gamma;
    // m × CW: for the rows not yet solved, Σ_j G̃_ij·u_j over the finished panels
    // (right-looking: each finished panel is added to every later row at once, with
    // weights loaded a panel ahead, so no load waits on u).
    extern __shared__ __align__(16) float fin[];
    require_smem(4ll * m * CW);
    __shared__ float gp[PANEL][PANEL + 1];          // G̃_PP
    __shared__ float mi[SMALL ? 1 : PANEL][GS];     // M_P⁻¹
    __shared__ float ep[PANEL][CW];                 // e_P
    __shared__ __align__(16) float up[PANEL][CW];   // u_P
    // m ≤ SMALL_M: every M_P⁻¹ formed here at the start, one warp a panel (a launch of
    // reduced_inverses saved: about 5 µs of a 70 µs call at n = 4096 on the H100).
    __shared__ __align__(16) float mis[SMALL ? SMALL_M / PANEL : 1][PANEL][GS];
    __shared__ float cps[SMALL ? SMALL_M / PANEL : 1][PANEL];
    const int bh = blockIdx.y;
    const int c0 = blockIdx.x * CW;
    const int np = (m + PANEL - 1) / PANEL;
    const float* gh = g + (long long)bh * m * m;
    const float* ph = pbar + (long long)bh * m * dv;
    const float* ch = cvec + (long long)bh * m;
    float* sh = s + (long long)bh * m * dv;
    const int tid = threadIdx.x;
    const int ri = tid >> 3, cc = tid & 7;  // row of the panel; column
    for (int idx = tid; idx < m * CW; idx += blockDim.x) fin[idx] = 0.0f;
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
            mt[u] = SMALL ? 0.0f : mg[idx];
        }
    };
    prefetch(0);
    float4 wn[PANEL / 4];  // the weights of this thread's first row in the next update
    {
        const Split s0 = split_rows<SMALL>(min(PANEL, m), m, tid);
        load_weights(wn, gh, m, 0, min(PANEL, m), s0.row, s0);
    }
    if constexpr (SMALL) {
        const int wp = tid >> 5;
        if (wp < np) panel_inverse(gh, ch, m, wp * PANEL, gamma, tid & 31, &mis[wp][0][0], cps[wp], &mis[wp][0][0], GS);
    }
    __syncthreads();  // fin zeroed, the small path's inverses formed
    for (int a = 0; a < m; a += PANEL) {
        const int e = min(a + PANEL, m);
        const int i = a + ri;
#pragma unroll
        for (int u = 0; u < PB; ++u) {
            const int idx = tid + 256 * u, r = idx / PANEL, k = idx - r * PANEL;
            gp[r][k] = gt[u];
            if constexpr (!SMALL) mi[r][k] = mt[u];
        }
        const float fi = i < e ? fin[i * CW + cc] : 0.0f;
        ep[ri][cc] = pv + gamma * cv * fi;
        __syncthreads();
        const Split sp = split_rows<SMALL>(e, m, tid);
        float4 w[PANEL / 4];
#pragma unroll
        for (int q = 0; q < PANEL / 4; ++q) w[q] = wn[q];
        if (e < m) {
            const int e2 = min(e + PANEL, m);
            prefetch(e);
            const Split s2 = split_rows<SMALL>(e2, m, tid);
            load_weights(wn, gh, m, e, e2, s2.row, s2);
        }
        // u_P = M_P⁻¹·e_P (lower triangular).
        // Over all 32 columns (M_P⁻¹ is zero above its diagonal), in four partial sums:
        // a 32-step chain of FMAs on loads that waited in turn was most of the panel's time.
        const float(*mp)[GS] = SMALL ? mis[min(a / PANEL, SMALL_M / PANEL - 1)] : mi;
        float u4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
#pragma unroll
        for (int j = 0; j < PANEL; ++j) u4[j & 3] = fmaf(mp[ri][j], ep[j][cc], u4[j & 3]);
        up[ri][cc] = i < e ? (u4[0] + u4[1]) + (u4[2] + u4[3]) : 0.0f;
        __syncthreads();
        // s_P = (finished panels' part) + G̃_PP·u_P (strictly lower: the mask keeps
        // whatever G̃ holds on and above the diagonal out).
        if (i < e) {
            float s4[4] = {fi, 0.0f, 0.0f, 0.0f};
#pragma unroll
            for (int j = 0; j < PANEL; ++j) s4[j & 3] = fmaf(j < ri ? gp[ri][j] : 0.0f, up[j][cc], s4[j & 3]);
            if (c0 + cc < dv) sh[(long long)i * dv + c0 + cc] = (s4[0] + s4[1]) + (s4[2] + s4[3]);
        }
        // Every later row r: fin_r += G̃_{r,P}·u_P.
        const int nq = PANEL / 4 / sp.tpr, j0 = sp.pt * (PANEL / sp.tpr);
        for (int r = sp.row; r - tid / sp.tpr < m; r += 256 / sp.tpr) {
            if (r != sp.row) load_weights(w, gh, m, a, e, r, sp);
            float acc[CW];
#pragma unroll
            for (int k = 0; k < CW; ++k) acc[k] = 0.0f;
#pragma unroll
            for (int q = 0; q < PANEL / 4; ++q) {
                if (q < nq) {
                    const float gw[4] = {w[q].x, w[q].y, w[q].z, w[q].w};
#pragma unroll
                    for (int l = 0; l < 4; ++l) {
                        const float4 u0 = lds4(&up[j0 + 4 * q + l][0]);
                        const float4 u1 = lds4(&up[j0 + 4 * q + l][4]);
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
            }
            // The parts of a row are adjacent lanes of one warp.
            for (int off = 1; off < sp.tpr; off <<= 1)
#pragma unroll
                for (int k = 0; k < CW; ++k) acc[k] += __shfl_xor_sync(0xffffffffu, acc[k], off);
            if (sp.pt == 0 && r < m) {
                float4* f = reinterpret_cast<float4*>(&fin[r * CW]);
                const float4 f0 = f[0], f1 = f[1];
                f[0] = make_float4(f0.x + acc[0], f0.y + acc[1], f0.z + acc[2], f0.w + acc[3]);
                f[1] = make_float4(f1.x + acc[4], f1.y + acc[5], f1.z + acc[6], f1.w + acc[7]);
            }
        }
        __syncthreads();
    }
}

extern "C" __global__ void __launch_bounds__(256) reduced_causal(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    reduced_causal_body<false>(p);
}
extern "C" __global__ void __launch_bounds__(256) reduced_causal_small(const ReducedParams p) {
    pdl_trigger();
    pdl_wait();
    if (p.m > SMALL_M) asm volatile("trap;");  // its shared memory holds SMALL_M / 32 inverses
    reduced_causal_body<true>(p);
}
