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
// and v̄_J read from L2 serves ig rows. k̄ and v̄ are staged in shared memory 128 rows at
// a time with asynchronous 16-byte copies, all in flight at once (one dependent L2 load
// per element made this kernel latency-bound). Logits: two threads per J (the halves of
// dk, added by a shuffle), ig dot products in float4 steps. Max and sum: warp r takes
// row r. h: 16 groups of 16 threads over J, four columns a thread, ig rows each. The ig
// rows of G̃ live in shared memory (ig·m floats). (256-row chunks, one thread per J, took
// 70 KB of staging: two CTAs per SM, 23% of warps active at n = 16384 on the H200.) On
// sm_90 at most 64 registers and the largest shared-memory carveout (module.rs), so four
// CTAs fit an SM: the 512 CTAs of n = 32768, H = 16 in one wave (with 79 registers,
// three: 1.29 waves, ncu v47).
#include "common.cuh"

#define IGMAX 8
#define CH 128  // rows of k̄ / v̄ per staged chunk

// Rows [0, nj) × columns [c0, c0 + w4·4) of a row-major f32 matrix of width d into `dst`
// (row stride ld), zero past d; w4 ≤ 32 (d ≤ 128, the plan's limit). Asynchronous when
// d allows 16-byte copies; the caller waits (cp.async.wait_group) and synchronizes. A
// power of two of threads per row and the addresses stepped, not recomputed: with a flat
// index divided by w4 each copy took about 45 instructions, and staging was most of the
// kernel's.
__device__ __forceinline__ void stage(float* dst, const float* src, int nj, int d, int c0, int w4,
                                      int ld) {
    const int tl = w4 <= 1 ? 0 : 32 - __clz(w4 - 1);  // log2 of threads per row
    const int q = threadIdx.x & ((1 << tl) - 1), rpp = blockDim.x >> tl;
    const int c = c0 + 4 * q;
    int jl = threadIdx.x >> tl;
    if (q < w4) {
        const float* sr = src + (long long)jl * d + c;
        float* o = dst + jl * ld + 4 * q;
        if (d % 4 == 0 && c + 4 <= d) {
            u32 oa = smem_addr(o);
            for (; jl < nj; jl += rpp, sr += (long long)rpp * d, oa += 4 * rpp * ld)
                cp_async16(oa, sr);
        } else {
            for (; jl < nj; jl += rpp, sr += (long long)rpp * d, o += rpp * ld)
#pragma unroll
                for (int u = 0; u < 4; ++u) o[u] = c + u < d ? sr[u] : 0.0f;
        }
    }
    asm volatile("cp.async.commit_group;");
}

// sm_90 only: an A100's 164 KiB hold three CTAs whatever their registers.
#if __CUDA_ARCH__ >= 900
#define COARSE_MIN_CTAS 4
#else
#define COARSE_MIN_CTAS 1
#endif
extern "C" __global__ void __launch_bounds__(256, COARSE_MIN_CTAS) coarse(const CoarseParams p) {
    pdl_trigger();
    pdl_wait();
    const float* __restrict__ qbar = p.qbar;
    const float* __restrict__ kbar = p.kbar;
    const float* __restrict__ vbar = p.vbar;
    float* __restrict__ g = p.g;
    float* __restrict__ sigma = p.sigma;
    float* __restrict__ gsum = p.gsum;
    float* __restrict__ h = p.h;
    const int H = p.H, Hkv = p.Hkv, n = p.n, dk = p.dk, dv = p.dv, b = p.b, m = p.m;
    const float scale = p.scale;
    const int causal = p.causal, ig = p.ig;
    __shared__ __align__(16) float qrows[IGMAX][128];
    // ig × m floats of G̃ rows (rounded up to 4), then the staging area: CH × ks (k̄) or
    // CH × 64 (v̄) floats. Mirrored by coarse_stage() in src/gpu/plan.rs.
    extern __shared__ __align__(16) float grow[];
    const int I0 = blockIdx.x * ig;
    const int bh = blockIdx.y;
    const int nI = min(ig, m - I0);
    const long long kvh = kv_head(bh, H, Hkv);
    const float* kb = kbar + kvh * m * dk;
    const float* vb = vbar + kvh * m * dv;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int dk4 = (dk + 3) / 4;
    // Row stride of the staged k̄: an odd number of 16-byte units, so the 8 threads of a
    // float4 load phase (consecutive J) hit different banks.
    const int ks = (dk4 % 2 == 0 ? dk4 + 1 : dk4) * 4;
    float* stg = grow + ((ig * m + 3) & ~3);
    require_smem(4ll * (((ig * m + 3) & ~3) + CH * max(ks, 64)));
    for (int idx = tid; idx < IGMAX * 128; idx += blockDim.x) {
        const int r = idx >> 7, c = idx & 127;
        qrows[r][c] = (r < nI && c < dk) ? qbar[((long long)bh * m + I0 + r) * dk + c] : 0.0f;
    }
    const float ln_b = logf((float)b);
    const float ln_last = logf((float)(n - (m - 1) * b));
    const int jend = causal ? I0 + nI - 1 : m;  // no row of the group allows J ≥ jend
    for (int J0 = 0; J0 < jend; J0 += CH) {
        const int nj = min(CH, jend - J0);
        __syncthreads();
        stage(stg, kb + (long long)J0 * dk, nj, dk, 0, dk4, ks);
        asm volatile("cp.async.wait_group 0;" ::: "memory");
        __syncthreads();
        // Thread (jl, half): row jl of the chunk, float4 columns [c4a, c4b) of dk. Each
        // 8-lane phase of a 16-byte load takes one half and 8 consecutive rows (odd
        // row stride in 16-byte units): no bank conflict, and one q̄ address a phase
        // (lanes of both halves in a phase conflicted: 33% excess wavefronts, ncu v47).
        const int jl = (tid >> 4) * 8 + (tid & 7), half = (tid >> 3) & 1, J = J0 + jl;
        const int c4a = half ? (dk4 + 1) / 2 : 0, c4b = half ? dk4 : (dk4 + 1) / 2;
        float acc[IGMAX];
#pragma unroll
        for (int r = 0; r < IGMAX; ++r) acc[r] = 0.0f;
        if (jl < nj) {
            const float* kr = stg + jl * ks;
            for (int c4 = c4a; c4 < c4b; ++c4) {
                const float4 kv = *reinterpret_cast<const float4*>(kr + 4 * c4);
#pragma unroll
                for (int r = 0; r < IGMAX; ++r) {
                    const float4 qv = *reinterpret_cast<const float4*>(&qrows[r][4 * c4]);
                    acc[r] = fmaf(qv.x, kv.x, fmaf(qv.y, kv.y, fmaf(qv.z, kv.z, fmaf(qv.w, kv.w, acc[r]))));
                }
            }
        }
#pragma unroll
        for (int r = 0; r < IGMAX; ++r) acc[r] += __shfl_xor_sync(0xffffffffu, acc[r], 8);
        if (jl < nj && half == 0) {
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
    // h_I = Σ_J G̃_IJ v̄_J: v̄ staged 128 rows × 64 columns at a time. Lane (half, c4) of
    // warp wp takes 4 columns and J ≡ 2·wp + half (mod 16) for every row: per J a 16-byte
    // load of v̄, ig broadcast loads of G̃ and 4·ig FMAs (one column a thread took 9 loads
    // for 8 FMAs). The halves add by a shuffle, the warps through the free staging area.
    const int half = lane >> 4, c4 = lane & 15, part = 2 * warp + half;
    float* hpart = stg;  // 8 warps × IGMAX × 64, after the last chunk
    for (int c0 = 0; c0 < dv; c0 += 64) {
        float4 acc[IGMAX];
#pragma unroll
        for (int r = 0; r < IGMAX; ++r) acc[r] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        for (int J0 = 0; J0 < jend; J0 += CH) {
            const int nj = min(CH, jend - J0);
            __syncthreads();
            stage(stg, vb + (long long)J0 * dv, nj, dv, c0, 16, 64);
            asm volatile("cp.async.wait_group 0;" ::: "memory");
            __syncthreads();
#pragma unroll 2
            for (int jl = part; jl < nj; jl += 16) {
                const float4 vv = *reinterpret_cast<const float4*>(&stg[jl * 64 + 4 * c4]);
#pragma unroll
                for (int r = 0; r < IGMAX; ++r) {
                    if (r < nI) {
                        const float gv = grow[r * m + J0 + jl];
                        acc[r].x = fmaf(gv, vv.x, acc[r].x);
                        acc[r].y = fmaf(gv, vv.y, acc[r].y);
                        acc[r].z = fmaf(gv, vv.z, acc[r].z);
                        acc[r].w = fmaf(gv, vv.w, acc[r].w);
                    }
                }
            }
        }
#pragma unroll
        for (int r = 0; r < IGMAX; ++r) {
            acc[r].x += __shfl_xor_sync(0xffffffffu, acc[r].x, 16);
            acc[r].y += __shfl_xor_sync(0xffffffffu, acc[r].y, 16);
            acc[r].z += __shfl_xor_sync(0xffffffffu, acc[r].z, 16);
            acc[r].w += __shfl_xor_sync(0xffffffffu, acc[r].w, 16);
        }
        __syncthreads();  // every warp is done with the staged v̄
        if (half == 0) {
#pragma unroll
            for (int r = 0; r < IGMAX; ++r)
                *reinterpret_cast<float4*>(&hpart[(warp * IGMAX + r) * 64 + 4 * c4]) = acc[r];
        }
        __syncthreads();
        for (int idx = tid; idx < nI * 64; idx += blockDim.x) {
            const int r = idx >> 6, cc = idx & 63;
            float hv = 0.0f;
#pragma unroll
            for (int wq = 0; wq < 8; ++wq) hv += hpart[(wq * IGMAX + r) * 64 + cc];
            if (c0 + cc < dv) h[((long long)bh * m + I0 + r) * dv + c0 + cc] = hv;
        }
    }
}
