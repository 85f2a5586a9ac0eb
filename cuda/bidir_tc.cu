// SPEC §2, bidirectional, f16/bf16, blocks of at most 128 rows: the block's full system
// (I − γD)·[P | w] = [D·V + z⊗h | z] solved by block Gauss–Jordan elimination over
// 16-row panels on the tensor cores (bidir.cu's local_bidir does it pivot by pivot on
// the CUDA cores: 64–128 dependent steps of issue-bound FMA per block).
//
// One CTA per (block I, query head), warp w owns rows 16w..16w+15 of [M | X | z] in mma
// accumulators (m16n8 tiles: NR/8 of M, DM/8 of X, one for z in its column 0). Per panel
// p: warp p inverts its 16×16 diagonal block M_pp in f32 (Gauss–Jordan in shared
// memory, one warp), forms U_p = M_pp⁻¹·[M_p,rest | X_p] and publishes it; every other
// warp i then takes [M_i,rest | X_i] −= M_ip·U_p. One CTA barrier per panel. Products
// with f32 operands go through the tensor cores as hi + lo pairs of the element type
// (three products, about twice its significand: 2^-16 for bf16), as in local_tc.cu.
// No pivoting: I − γD is strictly diagonally dominant by rows, and so are its Schur
// complements, so no diagonal block is near singular (γ capped by the host).
//
// Shared memory, one region reused by the phases (mirrored by bidir_tc_smem() in
// src/gpu/plan.rs): Q and K (16-bit, stride dk16 + 8); then Vᵀ (DM × (NR + 8), 16-bit);
// then the elimination's buffers: E (16 × 17 f32, M_pp and its inverse), W (16 × (8·NT
// + 4) f32, the pivot rows), Uᵀ hi and lo (16-bit, stride 24, two panels' worth); then
// [P | w] (nb × (dv + 1) f32) for the outputs.
#include "common.cuh"

#define UTS 24  // stride (16-bit) of a column of Uᵀ: 48 bytes, odd in 16-byte units

template <class T, int NWM, int DM>
__device__ void local_bidir_tc(const T* __restrict__ q, const T* __restrict__ k,
                               const T* __restrict__ v, T* __restrict__ y,
                               float* __restrict__ wout, float* __restrict__ pbar,
                               float* __restrict__ cvec, const float* __restrict__ sigma,
                               const float* __restrict__ gsum, const float* __restrict__ hvec,
                               int H, int Hkv, int n, int dk, int dv, int b, int m, float scale,
                               float gamma) {
    constexpr int NR = 16 * NWM, MT = NR / 8, VT = DM / 8, NT = MT + VT + 1, ZT = NT - 1;
    constexpr int LDV = NR + 8, LW = 8 * NT + 4, UB = 8 * NT * UTS;  // halves per Uᵀ tile set
    extern __shared__ __align__(16) float sm[];
    const int I = blockIdx.x, bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const int base = I * b, nb = min(b, n - base);
    const long long bi = (long long)bh * m + I;
    const int dk16 = (dk + 15) & ~15, lqh = dk16 + 8;
    const int region = max(max(NR * lqh, DM * LDV / 2),
                           max(16 * 17 + 16 * LW + 2 * UB, nb * (dv + 1)));
    require_smem(4ll * region);
    const int w = warp_index(), lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int nvt = (dv + 7) / 8;  // live value tiles
    // A tile is live when it can hold a nonzero: all of M, the value tiles below dv, z.
    auto live = [&](int j) { return j < MT || j - MT < nvt || j == ZT; };

    float acc[NT][4];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

    // S = Q_w·Kᵀ into the M tiles.
    {
        T* q16 = reinterpret_cast<T*>(sm);
        T* k16 = q16 + NR * lqh;
        stage_rows16(q16, lqh, q + ((long long)bh * n + base) * dk, NR, nb, dk, dk16, threadIdx.x, blockDim.x);
        stage_rows16(k16, lqh, k + (kvh * n + base) * dk, NR, nb, dk, dk16, threadIdx.x, blockDim.x);
        __syncthreads();
        strip_logits<T, MT>(acc, q16 + 16 * w * lqh, k16, lqh, dk16, g, t);
    }
    // Softmax with the coarse normalizer, in registers: rows ra = 16w + g (e = 0, 1) and
    // rb = ra + 8 (e = 2, 3), each spread over the 4 lanes of a quad.
    pdl_wait();  // the logits above read only Q and K
    const float sig = sigma[bi], gs = gsum[bi];
    // Unscaled logits (scale > 0 commutes with the maximum): one FFMA and one ex2 per
    // exponential (scaled_exp, common.cuh).
    const int ra = 16 * w + g;
    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const bool ok = 8 * j + 2 * t + (e & 1) < nb;
            acc[j][e] = ok ? acc[j][e] : neg_inf();
            mx[e >> 1] = fmaxf(mx[e >> 1], acc[j][e]);
        }
    float lsum[2] = {0.0f, 0.0f};
    float mb[2];
    quad_shift(mx, scale, sig, mb);
    const float kl = scale * LOG2E;
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const float ex = scaled_exp(acc[j][e], kl, mb[e >> 1]);  // 0 for −inf
            acc[j][e] = ex;
            lsum[e >> 1] += ex;
        }
    float invz[2], zr[2];
    const bool rowlive[2] = {ra < nb, ra + 8 < nb};
    quad_normalizer(lsum, mx, sig, gs, rowlive, invz, zr);
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[j][e] *= invz[e >> 1];

    // X = D·V (D rounded to the element type, as the causal path's D·V) + z⊗h; z.
    __syncthreads();  // Q and K are consumed; Vᵀ goes over them
    {
        T* vt = reinterpret_cast<T*>(sm);
        stage_cols16(vt, LDV, v + (kvh * n + base) * dv, NR, nb, dv, DM, threadIdx.x, blockDim.x);
        __syncthreads();
#pragma unroll
        for (int j = 0; j < NWM; ++j) {
            // The m16n8 accumulator pair of keys 16j..16j+15 is the k16 A fragment.
            const u32 da[4] = {pack2<T>(acc[2 * j][0], acc[2 * j][1]), pack2<T>(acc[2 * j][2], acc[2 * j][3]),
                               pack2<T>(acc[2 * j + 1][0], acc[2 * j + 1][1]),
                               pack2<T>(acc[2 * j + 1][2], acc[2 * j + 1][3])};
#pragma unroll
            for (int u = 0; u < VT; ++u) {
                if (u < nvt) {
                    const T* vb = vt + (8 * u + g) * LDV + 16 * j + 2 * t;
                    const u32 bf[2] = {ld_u32(vb), ld_u32(vb + 8)};
                    Mma<T>::run(acc[MT + u], da, bf);
                }
            }
        }
    }
    const float* hI = hvec + bi * dv;
#pragma unroll
    for (int u = 0; u < VT; ++u)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int c = 8 * u + 2 * t + (e & 1);
            if (c < dv) acc[MT + u][e] = fmaf(zr[e >> 1], hI[c], acc[MT + u][e]);
        }
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[ZT][e] = (t == 0 && (e & 1) == 0) ? zr[e >> 1] : 0.0f;
    // M = I − γD.
#pragma unroll
    for (int j = 0; j < MT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = ra + 8 * (e >> 1), c = 8 * j + 2 * t + (e & 1);
            acc[j][e] = (r == c ? 1.0f : 0.0f) - gamma * acc[j][e];
        }

    // Block Gauss–Jordan over the panels of 16 rows.
    __syncthreads();  // Vᵀ is consumed; the elimination's buffers go over it
    float* es = sm;             // 16 × 17
    float* ws = es + 16 * 17;   // 16 × LW
    u16* ut = reinterpret_cast<u16*>(ws + 16 * LW);  // [panel & 1][hi, lo] × 8·NT × UTS
#pragma unroll
    for (int p = 0; p < NWM; ++p) {
        if (16 * p >= nb) break;  // padded panels: identity rows, zero right sides
        u16* uh = ut + (p & 1) * 2 * UB;
        u16* ul = uh + UB;
        if (w == p) {
            // M_pp to E, the pivot rows' remaining tiles to W (f32).
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int r = g + 8 * (e >> 1), c = 2 * t + (e & 1);
                es[r * 17 + c] = acc[2 * p][e];
                es[r * 17 + 8 + c] = acc[2 * p + 1][e];
            }
#pragma unroll
            for (int j = 2 * p + 2; j < NT; ++j) {
                if (live(j)) {
                    float* r0 = ws + g * LW + 8 * j + 2 * t;
                    *reinterpret_cast<float2*>(r0) = make_float2(acc[j][0], acc[j][1]);
                    *reinterpret_cast<float2*>(r0 + 8 * LW) = make_float2(acc[j][2], acc[j][3]);
                }
            }
            __syncwarp();
            // E ← E⁻¹ in place: lane l holds row l/2, columns 8(l & 1) .. + 7.
            {
                const int r = lane >> 1, c0 = (lane & 1) * 8;
#pragma unroll
                for (int qq = 0; qq < 16; ++qq) {
                    const float inv = rcp_approx(es[qq * 17 + qq]);  // diagonally dominant
                    const float f = es[r * 17 + qq];
                    float pr[8], own[8];
#pragma unroll
                    for (int c = 0; c < 8; ++c) {
                        pr[c] = es[qq * 17 + c0 + c];
                        own[c] = es[r * 17 + c0 + c];
                    }
                    __syncwarp();
#pragma unroll
                    for (int c = 0; c < 8; ++c) {
                        const bool pc = c0 + c == qq;
                        float x;
                        if (r == qq)
                            x = pc ? inv : pr[c] * inv;
                        else
                            x = pc ? -f * inv : fmaf(-f * inv, pr[c], own[c]);
                        es[r * 17 + c0 + c] = x;
                    }
                    __syncwarp();
                }
            }
            // U_p = E⁻¹·W on the tensor cores (hi + lo), into the warp's own tiles and,
            // split, to Uᵀ for the other warps' B fragments.
            u32 ah[4], al[4];
            split2<T>(es[g * 17 + 2 * t], es[g * 17 + 2 * t + 1], ah[0], al[0]);
            split2<T>(es[(g + 8) * 17 + 2 * t], es[(g + 8) * 17 + 2 * t + 1], ah[1], al[1]);
            split2<T>(es[g * 17 + 2 * t + 8], es[g * 17 + 2 * t + 9], ah[2], al[2]);
            split2<T>(es[(g + 8) * 17 + 2 * t + 8], es[(g + 8) * 17 + 2 * t + 9], ah[3], al[3]);
#pragma unroll
            for (int j = 2 * p + 2; j < NT; ++j) {
                if (live(j)) {
                    const float* wc = ws + 8 * j + g;  // column 8j + g of W, rows 2t, ...
                    u32 bh[2], bl[2];
                    split2<T>(wc[(2 * t) * LW], wc[(2 * t + 1) * LW], bh[0], bl[0]);
                    split2<T>(wc[(2 * t + 8) * LW], wc[(2 * t + 9) * LW], bh[1], bl[1]);
                    float u4[4] = {0.0f, 0.0f, 0.0f, 0.0f};
                    Mma<T>::run(u4, ah, bh);
                    Mma<T>::run(u4, ah, bl);
                    Mma<T>::run(u4, al, bh);
#pragma unroll
                    for (int e = 0; e < 4; ++e) acc[j][e] = u4[e];
                    // Uᵀ[column][row]: this lane's (row g / g + 8, columns 8j + 2t, +1).
                    u32 h0, l0, h1, l1;
                    split2<T>(u4[0], u4[1], h0, l0);
                    split2<T>(u4[2], u4[3], h1, l1);
                    const int c = 8 * j + 2 * t;
                    uh[c * UTS + g] = (u16)(h0 & 0xffffu);
                    uh[(c + 1) * UTS + g] = (u16)(h0 >> 16);
                    uh[c * UTS + g + 8] = (u16)(h1 & 0xffffu);
                    uh[(c + 1) * UTS + g + 8] = (u16)(h1 >> 16);
                    ul[c * UTS + g] = (u16)(l0 & 0xffffu);
                    ul[(c + 1) * UTS + g] = (u16)(l0 >> 16);
                    ul[c * UTS + g + 8] = (u16)(l1 & 0xffffu);
                    ul[(c + 1) * UTS + g + 8] = (u16)(l1 >> 16);
                }
            }
        }
        __syncthreads();  // U_p published (and E, W free again for the next panel)
        if (w != p) {
            // [M_i,rest | X_i] −= M_ip·U_p: A = −M_ip (hi, lo) from the tiles 2p, 2p + 1.
            u32 ah[4], al[4];
            split2<T>(acc[2 * p][0], acc[2 * p][1], ah[0], al[0]);
            split2<T>(acc[2 * p][2], acc[2 * p][3], ah[1], al[1]);
            split2<T>(acc[2 * p + 1][0], acc[2 * p + 1][1], ah[2], al[2]);
            split2<T>(acc[2 * p + 1][2], acc[2 * p + 1][3], ah[3], al[3]);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                ah[e] ^= 0x80008000u;  // the sign bits of both halves
                al[e] ^= 0x80008000u;
            }
#pragma unroll
            for (int j = 2 * p + 2; j < NT; ++j) {
                if (live(j)) {
                    const u16* bhp = uh + (8 * j + g) * UTS + 2 * t;
                    const u16* blp = ul + (8 * j + g) * UTS + 2 * t;
                    const u32 bh[2] = {ld_u32(bhp), ld_u32(bhp + 8)};
                    const u32 bl[2] = {ld_u32(blp), ld_u32(blp + 8)};
                    Mma<T>::run(acc[j], ah, bh);
                    Mma<T>::run(acc[j], ah, bl);
                    Mma<T>::run(acc[j], al, bh);
                }
            }
        }
    }

    // [P | w] in the value tiles and the z tile: through shared memory (f32, stride
    // dv + 1) to Y, w, and the block means p̄, c.
    __syncthreads();  // every warp is done with Uᵀ
    float* ps = sm;
    const int lp1 = dv + 1;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
        const int r = ra + 8 * (e >> 1);
        if (r >= nb) continue;
#pragma unroll
        for (int u = 0; u < VT; ++u) {
            const int c = 8 * u + 2 * t + (e & 1);
            if (c < dv) ps[r * lp1 + c] = acc[MT + u][e];
        }
        if (t == 0 && (e & 1) == 0) ps[r * lp1 + dv] = acc[ZT][e];
    }
    __syncthreads();
    store_block_outputs(ps, nb, dv, y + ((long long)bh * n + base) * dv,
                        wout + (long long)bh * n + base, pbar + bi * dv, cvec + bi, threadIdx.x,
                        blockDim.x);
}

// Entry points local_bidir_tc_b{B}v{D}_{f16,bf16}: blocks of at most B rows (B/16 warps),
// dv ≤ D (the host picks the smallest that fits, src/gpu/plan.rs). LB: the launch bounds;
// the caps fill the SM as far as shared memory allows (by ptxas for sm_90): b64v64 five
// CTAs (96 registers, no spills; 35 KB each), b64v128 four (128, no spills; 51 KB),
// b128v64 two (128, 32 bytes spilled; 51 KB) where it ran one at 182. b128v128 keeps
// one: at two it spills 732 bytes.
#define LOCAL_BIDIR_TC_ONE(T, S, B, D, LB)                                                    \
    extern "C" __global__ void __launch_bounds__ LB local_bidir_tc_b##B##v##D##_##S(         \
        const LocalParams p) {                                                                \
        pdl_trigger();                                                                        \
        local_bidir_tc<T, B / 16, D>(BLOCKRES_LOCAL_ARGS(T, p));                              \
    }
#define LOCAL_BIDIR_TC(T, S)                                                                  \
    LOCAL_BIDIR_TC_ONE(T, S, 64, 64, (128, 5))                                                \
    LOCAL_BIDIR_TC_ONE(T, S, 64, 128, (128, 4))                                               \
    LOCAL_BIDIR_TC_ONE(T, S, 128, 64, (256, 2)) LOCAL_BIDIR_TC_ONE(T, S, 128, 128, (256))
LOCAL_BIDIR_TC(f16_t, f16)
LOCAL_BIDIR_TC(bf16_t, bf16)
