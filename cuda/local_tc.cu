// SPEC §2 steps 2–5, causal, f16/bf16, blocks of at most 128 rows: the whole block is
// one tile and every product runs on the tensor cores.
//
// One CTA per (block I, query head), one warp per 16 rows of the block. Why this shape
// (local.cu, the general kernel, spent most of its time with 3 of 8 warps solving a
// 64-row triangle column by column while the rest waited at a barrier):
//
// - The block's Q, K, V rows make one trip from memory (cp.async, all in flight at once).
// - Each warp keeps its 16×(keys) logits in mma accumulators and does the softmax in
//   registers (quad shuffles), then reuses the accumulators, rounded to the element type,
//   as the A operand of D·V (the accumulator layout of m16n8 is the A layout of k16).
// - The local causal system (I − γD)·[P | w] = [D·V + z⊗h | z] is solved by 16-row
//   panels, one per warp, across warps: with the inverses L_p⁻¹ of the 16×16 diagonal
//   blocks (every warp computes its own, in parallel) and C_wp = γ·D_wp·L_p⁻¹, warp p
//   publishes its finished right side R_p, every later warp w adds C_wp·R_p to its
//   own, and warp p forms P_p = L_p⁻¹·R_p. All products are mma; the right sides and
//   the inverses go through the tensor cores as a hi + lo pair of the element type
//   (three products for P_p, two for C_wp and for the update), about twice the type's
//   significand (bf16: 2^-16 instead of 2^-9). D itself is used at the element type's
//   precision, as in D·V.
// - Warps signal each other through mbarriers (inverse ready, right side ready), so the
//   chain runs as a pipeline and warps with less causal work finish early.
//
// Outputs as local.cu: P into y (the combine step completes it in place), w into wout,
// the block means p̄_I, c_I into pbar, cvec.
//
// NWM: warps (16-row panels) at most, 4, 6 or 8 (b ≤ 64, ≤ 96, ≤ 128); DM: bound of dk and dv,
// 64 or 128. The launch uses ceil(min(b, n)/16) warps. Shared memory, mirrored by
// local_tc_smem() in src/gpu/plan.rs: Q (later R_p hi), K (later R_p lo) and V tiles
// (16·NWM × (DM + 8) 16-bit each), the inverses of the diagonal blocks (NWM × DWS
// f32), the warps' column sums of P and of V (2 × NWM × (DM + 8) f32), h_I (DM + 8 f32)
// and 2·NWM + 2 mbarriers.
#include "common.cuh"

#define DWS 384  // floats per warp for the inverse of its diagonal block: 16-bit hi, lo tiles
#define LIS 24   // row stride (16-bit) of those tiles: 48 bytes, an odd number of 16-byte units
#define FUSED_MAX 64  // the most blocks per head the plan fuses (plan::FUSED_MAX_BLOCKS)

// ldmatrix from a shared-memory address (bytes): each lane's row address is formed once
// per kernel and the tile offsets added as constants.
__device__ __forceinline__ void ldsm_x4(u32* r, u32 a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
__device__ __forceinline__ void ldsm_x4_t(u32* r, u32 a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}
// The transpose of an 8×8 16-bit matrix held as one fragment register per lane (sm_75+).
__device__ __forceinline__ u32 movmatrix_t(u32 a) {
    u32 d;
    asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(d) : "r"(a));
    return d;
}
__device__ __forceinline__ void ldsm_x2_t(u32* r, u32 a) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1])
                 : "r"(a));
}
// A warp's 16-row panel from fragments to shared memory (row stride LD): r0[nt], r1[nt]
// hold rows g and g + 8, columns 8nt + 2t, 2t + 1, of the value tiles nt < nvt and, with
// wcol, of tile VT (the w column). `a`: the lane's ldmatrix-style address of the panel
// (row lr, column lc). sm_90: stmatrix, one instruction per four 8×8 blocks instead of
// one store per register.
__device__ __forceinline__ void stsm_x4(u32 a, u32 r0, u32 r1, u32 r2, u32 r3) {
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1,%2,%3,%4};" ::"r"(a), "r"(r0),
                 "r"(r1), "r"(r2), "r"(r3)
                 : "memory");
}
__device__ __forceinline__ void stsm_x2(u32 a, u32 r0, u32 r1) {
    asm volatile("stmatrix.sync.aligned.m8n8.x2.shared.b16 [%0], {%1,%2};" ::"r"(a), "r"(r0), "r"(r1)
                 : "memory");
}
template <int VT, int LD>
__device__ __forceinline__ void store_tiles(u16* panel, u32 a, const u32* r0, const u32* r1, int nvt,
                                            bool wcol, int g, int t) {
#if __CUDA_ARCH__ >= 900
#pragma unroll
    for (int np = 0; np < VT / 2; ++np)
        if (2 * np < nvt) stsm_x4(a + 2 * 16 * np, r0[2 * np], r1[2 * np], r0[2 * np + 1], r1[2 * np + 1]);
    if (wcol) stsm_x2(a + 2 * 8 * VT, r0[VT], r1[VT]);
#else
#pragma unroll
    for (int nt = 0; nt <= VT; ++nt) {
        if (nt < nvt || (wcol && nt == VT)) {
            const int c = nt * 8 + 2 * t;
            *reinterpret_cast<u32*>(&panel[g * LD + c]) = r0[nt];
            *reinterpret_cast<u32*>(&panel[(g + 8) * LD + c]) = r1[nt];
        }
    }
#endif
}

// mbarrier (sm_80+): one-shot "panel p is ready" signals between warps, so a warp waits
// only for the panels it needs instead of for the whole CTA.
__device__ __forceinline__ void mbar_init(u64* bar, int count) {
    asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(u64* bar) {
    asm volatile("{ .reg .b64 st; mbarrier.arrive.shared.b64 st, [%0]; }" ::"r"(smem_addr(bar))
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(u64* bar) {  // phase 0
    u32 done;
    do {
#if __CUDA_ARCH__ >= 900  // try_wait suspends the warp until the phase completes or the hint
        // (10 ms) runs out; without a hint the limit is the system's, and the retries came to
        // 7% of the kernel's instructions (ncu v40)
        asm volatile(
            "{ .reg .pred P; mbarrier.try_wait.parity.shared.b64 P, [%1], 0, %2; selp.u32 %0, 1, 0, P; }"
            : "=r"(done)
            : "r"(smem_addr(bar)), "r"(0x989680)
            : "memory");
#else
        asm volatile(
            "{ .reg .pred P; mbarrier.test_wait.parity.shared.b64 P, [%1], 0; selp.u32 %0, 1, 0, P; }"
            : "=r"(done)
            : "r"(smem_addr(bar))
            : "memory");
#endif
    } while (!done);
}

// Rows [0, 16·nw) × columns [0, DM) of one head's tensor (width d, `rows` valid rows) into
// a tile of stride DM + 8, zero elsewhere. 16-byte asynchronous copies when d allows.
// The usual block (d = DM, every row valid, all NWM warps) takes a path whose offsets are
// all constants: one instruction per copy instead of about 37 (ncu, v31: the general loop
// was 11% of the local kernel's instructions).
template <class T, int NWM, int DM>
__device__ __forceinline__ void load_block(u16* dst, const T* src, int rows, int d, int nrow) {
    constexpr int LD = DM + 8, C8 = DM / 8;
    constexpr int NT = 32 * NWM, RP = NT / C8;  // threads; rows per pass
    static_assert(NT % C8 == 0 && (16 * NWM) % RP == 0, "whole passes");
    if (d == DM && rows == 16 * NWM && nrow == rows && blockDim.x == NT) {
        const int r = threadIdx.x / C8, c = (threadIdx.x % C8) * 8;
        u16* p = dst + r * LD + c;
        const T* g = src + r * DM + c;
#pragma unroll
        for (int i = 0; i < 16 * NWM / RP; ++i) cp_async16(p + i * RP * LD, g + i * RP * DM);
    } else if (d % 8 == 0) {
        for (int idx = threadIdx.x; idx < nrow * C8; idx += blockDim.x) {
            const int r = idx / C8, c = (idx - r * C8) * 8;
            u16* p = dst + r * LD + c;
            if (r < rows && c < d)
                cp_async16(p, src + (long long)r * d + c);
            else
                *reinterpret_cast<uint4*>(p) = make_uint4(0, 0, 0, 0);
        }
    } else {
        for (int idx = threadIdx.x; idx < nrow * DM; idx += blockDim.x) {
            const int r = idx / DM, c = idx - r * DM;
            dst[r * LD + c] =
                (r < rows && c < d) ? reinterpret_cast<const u16*>(src)[(long long)r * d + c] : 0;
        }
    }
}

// Column sums of a warp's 16 rows of a 16-bit tile on the tensor cores: with a matrix
// of ones as the A operand every row of the product is the column sums of B, so the
// sums cost two mma per 16 columns and no shuffles. `a`: the lane's ldmatrix address of
// the rows' first column (row lr, column lc of the usual lane roles); the first 16·np
// columns go to out[0, 16·np), written by the lanes of group 0.
template <class T, int NP>
__device__ __forceinline__ void ones_colsums(u32 a, int np, float* out, int gq, int t) {
    const u32 one = pack2<T>(1.0f, 1.0f);
    const u32 ones[4] = {one, one, one, one};
#pragma unroll
    for (int j = 0; j < NP; ++j) {
        if (j < np) {
            u32 bb[4];
            ldsm_x4_t(bb, a + 2 * j * 16);
            float c0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, c1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            Mma<T>::run(c0, ones, bb);
            Mma<T>::run(c1, ones, bb + 2);
            if (gq == 0) {
                float* o = out + j * 16 + 2 * t;
                o[0] = c0[0];
                o[1] = c0[1];
                o[8] = c1[0];
                o[9] = c1[1];
            }
        }
    }
}

// Column c of a tile's nb rows (stride LD), whose column sum came out non-finite: the
// flat index of its first non-finite element into *bad, as means.cu keeps it (max of
// rec_value, so the call's smallest index wins). Row r is row row0 + r of a tensor of
// width d.
template <class T, int LD>
__device__ __forceinline__ void record_nonfinite(const u16* tile, int nb, int c, long long row0, int d,
                                                 u64* bad, u64 epoch) {
    for (int r = 0; r < nb; ++r) {
        T e;
        e.x = tile[r * LD + c];
        if (!finite_f(to_f(e))) atomicMax(bad, rec_value(epoch, (u64)((row0 + r) * d + c)));
    }
}

// The fused prologue (LocalParams.fused, the causal tensor-core path): SPEC §2 steps 1a
// and 1b for block row I inside the local kernel, so Q, K and V make one trip from memory
// and the call needs no means or coarse launch. With the block's tiles in shared memory:
//
// - Column sums on the tensor cores (a 16×16 matrix of ones times each warp's 16 rows),
//   added over the warps in a fixed order: q̄_I stays here, k̄_I and v̄_I go to global
//   memory (one copy per query head, so a CTA waits only for its own head) and flag
//   (bh, I) is released. A non-finite column sum sends the thread back over that column
//   of the tile for the first non-finite element's flat index (as in means.cu).
// - Then it acquires the flags of blocks J < I (all published by CTAs that started
//   earlier: the CTA took its (I, bh) from a ticket, so those CTAs are resident and none
//   of them waits before publishing) and forms row I of the coarse matrix as coarse.cu
//   does: L_IJ = scale·q̄_I·k̄_J + ln b, σ_I, G̃_IJ = exp(L_IJ − σ_I) into g (zeros for
//   J ≥ I), gsum_I and h_I = Σ_J G̃_IJ v̄_J (into hs).
//
// Every thread returns σ_I and gsum_I. `red`: 32 floats of shared memory; `part`: the
// dws region, NWM·(DWS + DM + 8) floats, free until the inverses go there.
__device__ __forceinline__ u64 flag_acquire(const u64* f) {
    u64 v;
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(f) : "memory");
    return v;
}

template <class T, int NWM, int DM>
__device__ void fused_coarse_row(const u16* qs, const u16* ks, const u16* vs, float* part,
                                 float* red, float* hs, float* __restrict__ kbar,
                                 float* __restrict__ vbar, float* __restrict__ g, u64* bad,
                                 int I, int bh, long long kvh, int n, int dk, int dv, int b,
                                 int m, int nb, float scale, int first, u64 epoch, float& sig,
                                 float& gs) {
    constexpr int LD = DM + 8;
    const int tid = threadIdx.x, nt = blockDim.x, nw = nt >> 5;
    const int w = warp_index(), lane = tid & 31, gq = lane >> 2, t = lane & 3;
    {
        const int lr = (lane & 7) + ((lane >> 3) & 1) * 8, lc = (lane >> 4) * 8;
        const u16* tiles[3] = {qs, ks, vs};
#pragma unroll
        for (int x = 0; x < 3; ++x)
            ones_colsums<T, DM / 16>(smem_addr(tiles[x] + (16 * w + lr) * LD + lc), DM / 16,
                                     part + (w * 3 + x) * DM, gq, t);
    }
    __syncthreads();
    const long long bi = (long long)bh * m + I;
    const float inv = 1.0f / (float)nb;
    for (int idx = tid; idx < 3 * DM; idx += nt) {
        const int x = idx / DM, c = idx - x * DM;
        const int d = x == 2 ? dv : dk;
        if (c >= d) continue;
        float s = 0.0f;
        for (int j = 0; j < nw; ++j) s += part[(j * 3 + x) * DM + c];
        if (!finite_f(s))
            record_nonfinite<T, LD>(x == 0 ? qs : x == 1 ? ks : vs, nb, c,
                                    (x == 0 ? bh : kvh) * n + (long long)I * b, d, bad + x, epoch);
        if (x == 0) {
            T e;
            e.x = qs[c];
            hs[c] = first ? to_f(e) : s * inv;  // q̄_I until h_I replaces it
        } else {
            (x == 1 ? kbar + bi * dk : vbar + bi * dv)[c] = s * inv;
        }
    }
    u64* flags = bad + 4;
    __syncthreads();  // every k̄_I, v̄_I store of the CTA is done
    if (tid == 0) gpu_release_store(flags + bi, epoch);  // the flag: the call's epoch
    float* grow = g + bi * m;
    for (int J = I + tid; J < m; J += nt) grow[J] = 0.0f;
    if (I == 0) {
        sig = neg_inf();
        gs = 0.0f;
        for (int c = tid; c < dv; c += nt) hs[c] = 0.0f;
        __syncthreads();
        return;
    }
    const u64* hf = flags + (long long)bh * m;
    // The row's logits and weights stay in shared memory: the last FUSED_MAX floats of
    // `part`, free from here on (the plan fuses only m ≤ FUSED_MAX; local_tc checks).
    float* lrow = part + NWM * (DWS + DM + 8) - FUSED_MAX;
    // Logits, one thread per J, each right after that thread's own acquire of flag J (no
    // barrier between: only this thread reads k̄_J here); k̄ through L2 only (.cg): L1 is
    // not coherent with the other CTAs' stores. (One warp polling with relaxed loads and
    // a fence after measured the same on the H100, results/v31_*.)
    const float lnb = logf((float)b);
    const float* kb = kbar + (long long)bh * m * dk;
    float mx = neg_inf();
    for (int J = tid; J < I; J += nt) {
        while (flag_acquire(hf + J) != epoch) __nanosleep(32);
        const float* kr = kb + (long long)J * dk;
        float acc = 0.0f;
        if (dk % 4 == 0) {
            for (int c = 0; c < dk; c += 4) {
                const float4 kv = __ldcg(reinterpret_cast<const float4*>(kr + c));
                acc = fmaf(hs[c], kv.x, fmaf(hs[c + 1], kv.y, fmaf(hs[c + 2], kv.z, fmaf(hs[c + 3], kv.w, acc))));
            }
        } else {
            for (int c = 0; c < dk; ++c) acc = fmaf(hs[c], __ldcg(kr + c), acc);
        }
        const float l = scale * acc + lnb;
        lrow[J] = l;
        mx = fmaxf(mx, l);
    }
    sig = block_max(mx, red);  // its barriers also order every thread's acquires before
                               // the v̄ loads below
    // h_I: P groups of threads over J (J ≡ group mod P), four columns (a float4) each
    // where dv allows, else one: more groups, so fewer dependent L2 round trips each.
    // The first 4·U of a thread's v̄ rows are loaded before the exponentials, so their
    // latency overlaps them and the sum's barriers.
    const int w4 = dv % 4 == 0 ? 4 : 1, cg = dv / w4;
    const int P = max(1, nt / cg);
    const float* vb = vbar + (long long)bh * m * dv;
    auto vload = [&](int J, int c) {
        const float* vr = vb + (long long)J * dv + c;
        return J >= I   ? make_float4(0.0f, 0.0f, 0.0f, 0.0f)
               : w4 == 4 ? __ldcg(reinterpret_cast<const float4*>(vr))
                         : make_float4(__ldcg(vr), 0.0f, 0.0f, 0.0f);
    };
    // This thread's first (group, columns): idx = tid (usually its only one).
    constexpr int U = 2;
    float4 vpre[4 * U];
    {
        const int pp = tid / cg, c = (tid - pp * cg) * w4;
#pragma unroll
        for (int u = 0; u < 4 * U; ++u)
            vpre[u] = tid < P * cg ? vload(pp + u * P, c) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    float sum = 0.0f;
    for (int J = tid; J < I; J += nt) {  // the thread's own logits above
        const float e = __expf(lrow[J] - sig);
        lrow[J] = e;
        grow[J] = e;
        sum += e;
    }
    gs = block_sum(sum, red);  // its barriers also publish the weights to the CTA
    for (int idx = tid; idx < P * cg; idx += nt) {
        const int pp = idx / cg, c = (idx - pp * cg) * w4;
        float4 acc = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
        auto add = [&](float gv, float4 vv) {
            acc.x = fmaf(gv, vv.x, acc.x);
            acc.y = fmaf(gv, vv.y, acc.y);
            acc.z = fmaf(gv, vv.z, acc.z);
            acc.w = fmaf(gv, vv.w, acc.w);
        };
        int J0 = pp;
        if (idx == tid) {
#pragma unroll
            for (int u = 0; u < 4 * U; ++u) {
                const int J = pp + u * P;
                add(J < I ? lrow[J] : 0.0f, vpre[u]);
            }
            J0 += 4 * U * P;
        }
        // The rest, four J per step, their loads issued before any is used.
        for (; J0 < I; J0 += 4 * P) {
            float gv[4];
            float4 vv[4];
#pragma unroll
            for (int u = 0; u < 4; ++u) {
                const int J = J0 + u * P;
                gv[u] = J < I ? lrow[J] : 0.0f;
                vv[u] = vload(J, c);
            }
#pragma unroll
            for (int u = 0; u < 4; ++u) add(gv[u], vv[u]);
        }
        float* o = part + pp * dv + c;
        o[0] = acc.x;
        if (w4 == 4) {
            o[1] = acc.y;
            o[2] = acc.z;
            o[3] = acc.w;
        }
    }
    __syncthreads();
    for (int cc = tid; cc < dv; cc += nt) {
        float h = 0.0f;
        for (int q = 0; q < P; ++q) h += part[q * dv + cc];
        hs[cc] = h;
    }
    __syncthreads();
}

template <class T, int NWM, int DM>
__device__ void local_tc(const T* __restrict__ q, const T* __restrict__ k,
                         const T* __restrict__ v, T* __restrict__ y, float* __restrict__ wout,
                         float* __restrict__ pbar, float* __restrict__ cvec,
                         const float* __restrict__ sigma, const float* __restrict__ gsum,
                         const float* __restrict__ hvec, int H, int Hkv, int n, int dk, int dv,
                         int b, int m, float scale, float gamma, float* __restrict__ kbar,
                         float* __restrict__ vbar, float* __restrict__ gout, u64* bad, int first,
                         int fused, u64 epoch, u64 ticket0) {
    constexpr int LD = DM + 8;      // stride (16-bit) of every tile; odd in 16-byte units
    constexpr int VT = DM / 8;      // value n-tiles at most; the w column is tile VT
    constexpr int XT = VT + 1;
    constexpr int R = 16 * NWM;
    extern __shared__ __align__(16) unsigned char smem[];
    u16* qs = reinterpret_cast<u16*>(smem);
    // The published right sides R_p over tiles read only before them: hi over Q (warp p
    // writes its own rows, which only it read, for its logits), lo over K (every warp
    // reads all of K's earlier rows; mbar[2·NWM] says all logits are done). Three tiles,
    // not five: the 4-warp variants run 5 CTAs per SM at d ≤ 64 and 3 at d ≤ 128.
    u16* ph = qs;
    u16* ks = qs + R * LD;
    u16* vs = ks + R * LD;
    u16* pl = ks;  // R_p, lo
    float* dws = reinterpret_cast<float*>(vs + R * LD);  // NWM × DWS
    float* csum = dws + NWM * DWS;                  // NWM × LD: per-warp column sums
    float* vsum = csum + NWM * LD;                  // NWM × LD: the same of V (deferred h)
    // mbar[p]: L_p⁻¹ is in dws; mbar[NWM + p]: R_p is in ph/pl (32 arrivals, one warp);
    // mbar[2·NWM]: every warp is past its logits, K's tile is free (32·nw arrivals);
    // mbar[2·NWM + 1]: V's tile has landed (one arrival per thread).
    float* hs = vsum + NWM * LD;                    // LD: h_I
    u64* mbar = reinterpret_cast<u64*>(hs + LD);
    float* red = reinterpret_cast<float*>(mbar + 2 * NWM + 2);  // 32 floats, then the ticket
    int* tk = reinterpret_cast<int*>(red + 32);
    require_smem(reinterpret_cast<unsigned char*>(tk + 2) - smem);

    int I = blockIdx.x, bh = blockIdx.y;
    if (fused) {
        if (m > FUSED_MAX) asm volatile("trap;");  // the coarse row's shared-memory bound
        // (I, bh) in the order CTAs start, so every block a CTA waits for (fused_coarse_row)
        // belongs to a CTA already running.
        if (threadIdx.x == 0) *tk = (int)(atomicAdd(bad + 3, 1ull) - ticket0);
        __syncthreads();
        I = *tk % m;
        bh = *tk / m;
    }
    const long long kvh = kv_head(bh, H, Hkv);
    const int base = I * b;
    const int nb = min(b, n - base);
    const int nw = blockDim.x >> 5;
    const int nrow = 16 * nw;
    const long long bi = (long long)bh * m + I;

    // V's copies go last and, in a whole block without the fused prologue (which sums V
    // first), on their own: the warps wait for Q and K only, and for V (mbar[2·NWM + 1],
    // one arrival per thread when its copies land) just before D·V, so V's transfer
    // overlaps the logits and the softmax. A partial block zero-fills its tiles with
    // plain stores, which that arrival does not cover: it waits for all three at once.
    const bool vlate = !fused && nb == nrow && nrow == R && dk == DM && dv == DM;
    load_block<T, NWM, DM>(qs, q + ((long long)bh * n + base) * dk, nb, dk, nrow);
    load_block<T, NWM, DM>(ks, k + (kvh * n + base) * dk, nb, dk, nrow);
    if (!vlate) load_block<T, NWM, DM>(vs, v + (kvh * n + base) * dv, nb, dv, nrow);
    asm volatile("cp.async.commit_group;");
    if (threadIdx.x < 2 * nw) mbar_init(&mbar[threadIdx.x < nw ? threadIdx.x : NWM + threadIdx.x - nw], 32);
    if (threadIdx.x == 2 * nw) mbar_init(&mbar[2 * NWM], 32 * nw);
    if (threadIdx.x == 2 * nw + 1) mbar_init(&mbar[2 * NWM + 1], blockDim.x);
    __syncthreads();  // the initialized mbarriers before any arrival on them
    if (vlate) load_block<T, NWM, DM>(vs, v + (kvh * n + base) * dv, nb, dv, nrow);
    asm volatile("cp.async.commit_group;");
    asm volatile("cp.async.mbarrier.arrive.noinc.shared.b64 [%0];" ::"r"(smem_addr(&mbar[2 * NWM + 1]))
                 : "memory");
    // The coarse stage's results from here on: loading Q, K, V may overlap the kernels
    // before (programmatic dependent launch, common.cuh).
    pdl_wait();
    float sig, gs;
    // Deferred h (common.cuh, LocalParams): v̄_I from V's tile here, and h left to the
    // reduced and combine stages, so the means pass reads Q and K only and the coarse
    // stage skips its G̃·v̄ product (v71: 0.364–0.365 against 0.400 ms at n = 32768,
    // H100, BENCHMARKS.md).
    const bool defer = !fused && hvec == nullptr;
    if (!fused) {
        sig = sigma[bi];
        gs = gsum[bi];
        // h_I through shared memory: its load overlaps the Q, K, V copies still in flight
        // instead of stalling every warp after D·V.
        if (!defer)
            for (int c = threadIdx.x; c < dv; c += blockDim.x) hs[c] = hvec[bi * dv + c];
    }
    asm volatile("cp.async.wait_group 1;" ::: "memory");  // Q and K (and V unless vlate)
    __syncthreads();
    if (fused)
        fused_coarse_row<T, NWM, DM>(qs, ks, vs, dws, red, hs, kbar, vbar, gout, bad, I, bh, kvh, n,
                                     dk, dv, b, m, nb, scale, first, epoch, sig, gs);

    const int w = warp_index();
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const int r0 = 16 * w;  // the warp's first row in the block
    const int dkp = (dk + 15) & ~15, nvt = ((dv + 15) & ~15) / 8;
    // ldmatrix lane roles: row within a 16-row operand and 8-column half.
    const int lr = (lane & 7) + ((lane >> 3) & 1) * 8, lc = (lane >> 4) * 8;
    const u32 qa = smem_addr(qs + (r0 + lr) * LD + lc);
    const u32 ka = smem_addr(ks + ((lane & 7) + (lane >> 4) * 8) * LD + ((lane >> 3) & 1) * 8);
    const u32 va = smem_addr(vs + lr * LD + lc);
    const u32 pha = smem_addr(ph + lr * LD + lc), pla = smem_addr(pl + lr * LD + lc);

    // S = Q_w·Kᵀ over keys [0, 16(w+1)), two 8-key n-tiles per step.
    float s[2 * NWM][4];
#pragma unroll
    for (int i = 0; i < 2 * NWM; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < DM; kk += 16) {
        if (kk < dkp) {
            u32 a[4];
            // A (16×16): matrices rows 0–7 / 8–15 × columns kk / kk+8.
            ldsm_x4(a, qa + 2 * kk);
#pragma unroll
            for (int np = 0; np < NWM; ++np) {
                if (np <= w) {
                    u32 bb[4];
                    // B (keys as n): matrices keys np·16 + 0–7 / +8–15 × columns kk / kk+8.
                    ldsm_x4(bb, ka + 2 * (np * 16 * LD + kk));
                    Mma<T>::run(s[2 * np], a, bb);
                    Mma<T>::run(s[2 * np + 1], a, bb + 2);
                }
            }
        }
    }

    mbar_arrive(&mbar[2 * NWM]);  // done with K (release: the reads above come first)

    // Softmax with the coarse normalizer, in registers. Rows g (e = 0, 1) and g + 8
    // (e = 2, 3) of the warp's panel; a row is spread over the 4 lanes of a quad. Only
    // the warp's own 16-key step (j = w) needs the causal mask; rows past the block's
    // end (padding) get weight 0 through invz.
    // The logits stay unscaled: scale > 0 commutes with the maximum, and each
    // exponential is then one FFMA and one ex2 (scaled_exp, common.cuh).
    const int ra = r0 + g, rb = r0 + g + 8;
    const bool la = ra < nb, lb = rb < nb;
    // By 16-key steps j, each under one warp-uniform branch: steps j < w need no mask,
    // step j = w masks keys after the row (a test on the lane's place in the 16×16 tile,
    // the same in every warp), steps j > w stay zero from the start and are never read.
    float mx[2] = {neg_inf(), neg_inf()};
#pragma unroll
    for (int j = 0; j < NWM; ++j) {
        if (j < w) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                for (int e = 0; e < 4; ++e) mx[e >> 1] = fmaxf(mx[e >> 1], s[2 * j + hh][e]);
        } else if (j == w) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const bool ok = hh * 8 + 2 * t + (e & 1) <= g + (e >> 1) * 8;
                    s[2 * j + hh][e] = ok ? s[2 * j + hh][e] : neg_inf();
                    mx[e >> 1] = fmaxf(mx[e >> 1], s[2 * j + hh][e]);
                }
        }
    }
    float lsum[2] = {0.0f, 0.0f};
    float mb[2];
    quad_shift(mx, scale, sig, mb);
    const float kl = scale * LOG2E;
#pragma unroll
    for (int j = 0; j < NWM; ++j) {
        if (j <= w) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const float ex = scaled_exp(s[2 * j + hh][e], kl, mb[e >> 1]);  // 0 for −inf
                    s[2 * j + hh][e] = ex;
                    lsum[e >> 1] += ex;
                }
        }
    }
    float invz[2], zr[2];
    const bool live[2] = {la, lb};
    quad_normalizer(lsum, mx, sig, gs, live, invz, zr);
    // D, as A fragments, one per 16-key step (the m16n8 accumulator pair is the k16 A);
    // the diagonal 16×16 block also in f32 (dg) for its inverse.
    u32 da[NWM][4];
    float dg[2][4];
#pragma unroll
    for (int j = 0; j < NWM; ++j) {
        if (j <= w) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                for (int e = 0; e < 4; ++e) s[2 * j + hh][e] *= invz[e >> 1];
            if (j == w) {
#pragma unroll
                for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                    for (int e = 0; e < 4; ++e) dg[hh][e] = s[2 * j + hh][e];
            }
        }
        da[j][0] = pack2<T>(s[2 * j][0], s[2 * j][1]);
        da[j][1] = pack2<T>(s[2 * j][2], s[2 * j][3]);
        da[j][2] = pack2<T>(s[2 * j + 1][0], s[2 * j + 1][1]);
        da[j][3] = pack2<T>(s[2 * j + 1][2], s[2 * j + 1][3]);
    }

    if (vlate) mbar_wait(&mbar[2 * NWM + 1]);  // V's tile is complete (else it was at the start)
    // X = D·V + z⊗[h | 1]: the right side, w column in tile VT.
    float x[XT][4];
#pragma unroll
    for (int i = 0; i < XT; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) x[i][e] = 0.0f;
#pragma unroll
    for (int j = 0; j < NWM; ++j) {
        if (j <= w) {
#pragma unroll
            for (int np = 0; np < VT / 2; ++np) {
                if (2 * np < nvt) {
                    u32 bb[4];
                    ldsm_x4_t(bb, va + 2 * (j * 16 * LD + np * 16));
                    Mma<T>::run(x[2 * np], da[j], bb);
                    Mma<T>::run(x[2 * np + 1], da[j], bb + 2);
                }
            }
        }
    }
    if (!defer) {
#pragma unroll
        for (int nt = 0; nt < VT; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int c = nt * 8 + 2 * t + (e & 1);
                if (c < dv) x[nt][e] += zr[e >> 1] * hs[c];
            }
    }
#pragma unroll
    for (int e = 0; e < 4; ++e) x[VT][e] = (t == 0 && (e & 1) == 0) ? zr[e >> 1] : 0.0f;

    // Inverse of the diagonal block L = I − γ·D_ww on the tensor cores, from the warp's
    // own fragments. With Δ = diag(L) and M = γ·Δ⁻¹·(D_ww below the diagonal), L =
    // Δ·(I − M) and M¹⁶ = 0, so L⁻¹ = (I + M)(I + M²)(I + M⁴)(I + M⁸)·Δ⁻¹: six 16×16
    // products (three squarings, three updates S += S·M^(2^k)), each as hi + lo pairs
    // (three mma per 8 columns), so about twice T's significand as before. (A lane per
    // column solving by substitution took 16% of the kernel's instructions, ncu v40.)
    // The accumulator layout is the A layout; movmatrix transposes A fragments into B.
    u32 lh[4], ll[4];  // the warp's own L⁻¹ as A fragments, hi and lo
    {
        // The diagonal: D_rr for the lane's rows g, g + 8 and its columns 2t, 2t + 1,
        // 8 + 2t, 9 + 2t, each from the lane that holds it (row r < 8: lane 4r + r/2).
        const float o0 = (g & 1) ? dg[0][1] : dg[0][0], o1 = (g & 1) ? dg[1][3] : dg[1][2];
        const int src = 4 * g + (g >> 1);
        const float ir[2] = {rcp_approx(1.0f - gamma * __shfl_sync(0xffffffffu, o0, src)),
                             rcp_approx(1.0f - gamma * __shfl_sync(0xffffffffu, o1, src))};
        float ic[2][2];
#pragma unroll
        for (int u = 0; u < 2; ++u) {
            const int cl = 8 * t + 4 * u + t;  // the holder of column 2t + u (and 8 + 2t + u)
            ic[0][u] = rcp_approx(1.0f - gamma * __shfl_sync(0xffffffffu, o0, cl));
            ic[1][u] = rcp_approx(1.0f - gamma * __shfl_sync(0xffffffffu, o1, cl));
        }
        float pm[2][4], sm[2][4];  // M^(2^k) and the partial product S, accumulator layout
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = g + 8 * (e >> 1), col = 8 * hh + 2 * t + (e & 1);
                pm[hh][e] = col < row ? gamma * dg[hh][e] * ir[e >> 1] : 0.0f;
                sm[hh][e] = pm[hh][e] + (col == row ? 1.0f : 0.0f);
            }
        auto to_a = [&](const float (*c)[4], u32* hi, u32* lo) {
            split2<T>(c[0][0], c[0][1], hi[0], lo[0]);
            split2<T>(c[0][2], c[0][3], hi[1], lo[1]);
            split2<T>(c[1][0], c[1][1], hi[2], lo[2]);
            split2<T>(c[1][2], c[1][3], hi[3], lo[3]);
        };
        // B of 8 columns nt: the transposes of A's blocks (rows 0–7 | 8–15, those columns).
        auto to_b = [&](const u32* a, u32 (*bt)[2]) {
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                bt[nt][0] = movmatrix_t(a[2 * nt]);
                bt[nt][1] = movmatrix_t(a[2 * nt + 1]);
            }
        };
        auto mul = [&](float (*acc)[4], const u32* ah, const u32* al, u32 (*bh)[2], u32 (*bl)[2]) {
#pragma unroll
            for (int nt = 0; nt < 2; ++nt) {
                Mma<T>::run(acc[nt], ah, bh[nt]);
                Mma<T>::run(acc[nt], ah, bl[nt]);
                Mma<T>::run(acc[nt], al, bh[nt]);
            }
        };
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            u32 ph4[4], pl4[4], pbh[2][2], pbl[2][2];
            to_a(pm, ph4, pl4);
            to_b(ph4, pbh);
            to_b(pl4, pbl);
            if (k > 0) {  // S += S·M^(2^k)
                u32 sh4[4], sl4[4];
                to_a(sm, sh4, sl4);
                mul(sm, sh4, sl4, pbh, pbl);
            }
            if (k < 3) {  // M^(2^(k+1))
                float q[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
                mul(q, ph4, pl4, pbh, pbl);
#pragma unroll
                for (int hh = 0; hh < 2; ++hh)
#pragma unroll
                    for (int e = 0; e < 4; ++e) pm[hh][e] = q[hh][e];
            }
        }
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
            for (int e = 0; e < 4; ++e) sm[hh][e] *= ic[hh][e & 1];
        to_a(sm, lh, ll);
        // The hi and lo tiles, row-major (ldmatrix), for the later warps' C_wp.
        u16* li = reinterpret_cast<u16*>(dws + w * DWS);
#pragma unroll
        for (int q = 0; q < 4; ++q) {
            const int off = (g + 8 * (q & 1)) * LIS + 8 * (q >> 1) + 2 * t;
            *reinterpret_cast<u32*>(li + off) = lh[q];
            *reinterpret_cast<u32*>(li + 16 * LIS + off) = ll[q];
        }
        __syncwarp();
    }
    mbar_arrive(&mbar[w]);  // L_w⁻¹ published (each lane releases its own writes)
    // Lane addresses of the hi and lo tiles of panel p's L⁻¹.
    auto lih = [&](int p) { return smem_addr(reinterpret_cast<u16*>(dws + p * DWS) + lr * LIS + lc); };
    const u32 lio = 2 * 16 * LIS;  // bytes from hi to lo
    // C_wp = γ·D_wp·L_p⁻¹ for the earlier panels p < w, as A fragments: with them the
    // update from panel p needs only p's right side R_p (P_p = L_p⁻¹·R_p), so the chain
    // below publishes each panel once and its step is one product deep. Computed here,
    // off the chain, while the D fragments are still live.
    u32 ca[NWM][4];
#pragma unroll
    for (int p = 0; p < NWM; ++p) {
        if (p < w) {
            mbar_wait(&mbar[p]);
            float c0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, c1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            // B = L_p⁻¹ (k = row, n = column), columns 0–7 and 8–15, hi and lo.
            u32 bh[4], bl[4];
            ldsm_x4_t(bh, lih(p));
            ldsm_x4_t(bl, lih(p) + lio);
            Mma<T>::run(c0, da[p], bh);
            Mma<T>::run(c0, da[p], bl);
            Mma<T>::run(c1, da[p], bh + 2);
            Mma<T>::run(c1, da[p], bl + 2);
            ca[p][0] = pack2<T>(gamma * c0[0], gamma * c0[1]);
            ca[p][1] = pack2<T>(gamma * c0[2], gamma * c0[3]);
            ca[p][2] = pack2<T>(gamma * c1[0], gamma * c1[1]);
            ca[p][3] = pack2<T>(gamma * c1[2], gamma * c1[3]);
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e) ca[p][e] = 0u;
        }
    }

    // Panel chain: warp w takes C_wp·R_p from every earlier panel as soon as that panel
    // is published (mbarrier, no CTA-wide barrier: warps with little work run ahead),
    // publishes its finished right side R_w (hi, lo), and forms P_w = L_w⁻¹·R_w.
    // A tile is live when it holds values (< nvt) or is the w column (VT).
    // acc (+)= A·B_hi + A·B_lo (+ A_lo·B_hi when al is given) for every live tile, with
    // B the 16-row right side at (oh, ol).
    auto product = [&](u32 oh, u32 ol, const u32* ah, const u32* al, bool fresh) {
#pragma unroll
        for (int np = 0; np < VT / 2; ++np) {
            if (2 * np < nvt) {
                u32 bh4[4], bl4[4];
                ldsm_x4_t(bh4, oh + 2 * np * 16);
                ldsm_x4_t(bl4, ol + 2 * np * 16);
#pragma unroll
                for (int hh = 0; hh < 2; ++hh) {
                    float* acc = x[2 * np + hh];
                    if (fresh) {
#pragma unroll
                        for (int e = 0; e < 4; ++e) acc[e] = 0.0f;
                    }
                    Mma<T>::run(acc, ah, bh4 + 2 * hh);
                    Mma<T>::run(acc, ah, bl4 + 2 * hh);
                    if (al) Mma<T>::run(acc, al, bh4 + 2 * hh);
                }
            }
        }
        u32 bh2[2], bl2[2];
        ldsm_x2_t(bh2, oh + 2 * VT * 8);
        ldsm_x2_t(bl2, ol + 2 * VT * 8);
        float* acc = x[VT];
        if (fresh) {
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[e] = 0.0f;
        }
        Mma<T>::run(acc, ah, bh2);
        Mma<T>::run(acc, ah, bl2);
        if (al) Mma<T>::run(acc, al, bh2);
    };
#pragma unroll
    for (int p = 0; p < NWM; ++p) {
        if (p < w) {
            mbar_wait(&mbar[NWM + p]);
            product(pha + 2 * p * 16 * LD, pla + 2 * p * 16 * LD, ca[p], nullptr, false);
        }
    }
    mbar_wait(&mbar[2 * NWM]);  // R_w lo overwrites K rows later warps' logits read
    {
        // Rows 0–7 (h0, l0) and 8–15 (h1, l1) of each tile.
        u32 h0[XT], l0[XT], h1[XT], l1[XT];
#pragma unroll
        for (int nt = 0; nt < XT; ++nt) {
            split2<T>(x[nt][0], x[nt][1], h0[nt], l0[nt]);
            split2<T>(x[nt][2], x[nt][3], h1[nt], l1[nt]);
        }
        store_tiles<VT, LD>(ph + r0 * LD, pha + 2 * r0 * LD, h0, h1, nvt, true, g, t);
        store_tiles<VT, LD>(pl + r0 * LD, pla + 2 * r0 * LD, l0, l1, nvt, true, g, t);
    }
    __syncwarp();
    if (w + 1 < nw) mbar_arrive(&mbar[NWM + w]);
    product(pha + 2 * r0 * LD, pla + 2 * r0 * LD, lh, ll, true);

    if (defer) {
        // The column sums of the warp's own 16 rows of V (v̄_I). Here, off the chain and
        // out of D·V's unrolled loop: inside it (a branch on j = w), the 8-warp kernel
        // took 238–242 µs at n = 32768 against 216–221 here (ncu, v69 and v70).
        ones_colsums<T, VT / 2>(va + 2 * r0 * LD, (nvt + 1) / 2, vsum + w * LD, g, t);
    }
    // Outputs. w and the column sums from the fragments; P through shared memory for
    // 16-byte stores, in the warp's own rows of ph once every warp is past the chain
    // (later warps read R_w there until then).
    float* wh = wout + (long long)bh * n + base;
    if (t == 0) {
        if (la) wh[ra] = x[VT][0];
        if (lb) wh[rb] = x[VT][2];
    }
#pragma unroll
    for (int nt = 0; nt < XT; ++nt) {
        if (nt < nvt || nt == VT) {
#pragma unroll
            for (int hh = 0; hh < 2; ++hh) {
                float cs = x[nt][hh] + x[nt][hh + 2];
                cs += __shfl_xor_sync(0xffffffffu, cs, 4);
                cs += __shfl_xor_sync(0xffffffffu, cs, 8);
                cs += __shfl_xor_sync(0xffffffffu, cs, 16);
                if (g == 0) csum[w * LD + nt * 8 + 2 * t + hh] = cs;
            }
        }
    }
    __syncthreads();
    u16* st = ph + r0 * LD;
    {
        u32 p0[XT], p1[XT];
#pragma unroll
        for (int nt = 0; nt < XT; ++nt) {
            p0[nt] = pack2<T>(x[nt][0], x[nt][1]);
            p1[nt] = pack2<T>(x[nt][2], x[nt][3]);
        }
        store_tiles<VT, LD>(st, pha + 2 * r0 * LD, p0, p1, nvt, false, g, t);
    }
    __syncwarp();
    T* yh = y + ((long long)bh * n + base + r0) * dv;
    const int rows = min(16, nb - r0);
    if (dv == DM && rows == 16) {  // the usual case: every offset a constant
        constexpr int C8 = DM / 8;
        const int r = lane / C8, c = (lane % C8) * 8;
#pragma unroll
        for (int i = 0; i < 16 * C8 / 32; ++i) {
            constexpr int RS = 32 / C8;  // rows a pass
            *reinterpret_cast<uint4*>(&yh[(long long)(r + i * RS) * DM + c]) =
                *reinterpret_cast<const uint4*>(&st[(r + i * RS) * LD + c]);
        }
    } else if (dv == DM) {  // a constant row length, so no run-time division
        constexpr int C8 = DM / 8;
        for (int idx = lane; idx < rows * C8; idx += 32) {
            const int r = idx / C8, c = (idx - r * C8) * 8;
            *reinterpret_cast<uint4*>(&yh[(long long)r * DM + c]) =
                *reinterpret_cast<const uint4*>(&st[r * LD + c]);
        }
    } else if (dv % 8 == 0) {
        const int c8 = dv / 8;
        for (int idx = lane; idx < rows * c8; idx += 32) {
            const int r = idx / c8, c = (idx - r * c8) * 8;
            *reinterpret_cast<uint4*>(&yh[(long long)r * dv + c]) =
                *reinterpret_cast<const uint4*>(&st[r * LD + c]);
        }
    } else {
        for (int idx = lane; idx < rows * dv; idx += 32) {
            const int r = idx / dv, c = idx - r * dv;
            reinterpret_cast<u16*>(yh)[(long long)r * dv + c] = st[r * LD + c];
        }
    }
    // Column sums over the warps in a fixed order (no atomics: the same inputs give the
    // same bits on every run).
    const float inv = 1.0f / (float)nb;
    for (int c = threadIdx.x; c <= dv; c += blockDim.x) {
        const int cc = c < dv ? c : VT * 8;
        float sum = 0.0f;
        for (int j = 0; j < nw; ++j) sum += csum[j * LD + cc];
        if (c == dv) {
            cvec[bi] = sum * inv;
        } else if (!defer) {
            pbar[bi * dv + c] = sum * inv;
        } else {
            // Deferred h: the reduced system's right side v̄_I + γ·p̄′_I in place of p̄_I
            // (common.cuh, ReducedParams), so the solve reads nothing more.
            float sv = 0.0f;
            for (int j = 0; j < nw; ++j) sv += vsum[j * LD + c];
            if (!finite_f(sv)) record_nonfinite<T, LD>(vs, nb, c, kvh * n + base, dv, bad + 2, epoch);
            pbar[bi * dv + c] = fmaf(gamma, sum * inv, sv * inv);
        }
    }
}

// Entry points local_tc_{f16,bf16}_{W}_{D}: W = warps at most (b ≤ 16·W), D = bound of
// dk and dv. Register caps as far as shared memory lets CTAs in (sm_90): 2 CTAs of 8
// warps per SM at d ≤ 64 (69 KB of shared memory each); 5 of 4 warps at d ≤ 64 (96
// registers, 35 KB each; a cap of 6 spilled 48 bytes), 3 at d ≤ 128 (168 registers, 60 KB
// each); 2 of 6 warps at d ≤ 128 (168 registers, 89 KB each); 1 of 8 warps at d ≤ 128
// (119 KB: 2 would need ≤ 128 registers; it uses 180). Stack frames (cuobjdump
// -res-usage, 2026-12-06, bf16 / f16): 8 / 16 bytes for 4 warps at d ≤ 64, none elsewhere.
#define LOCAL_TC(T, S, W, D, MINB)                                                            \
    extern "C" __global__ void __launch_bounds__(32 * W, MINB)                                \
        local_tc_##S##_##W##_##D(const LocalParams p) {                                       \
        pdl_trigger();                                                                        \
        local_tc<T, W, D>(BLOCKRES_LOCAL_ARGS(T, p), p.kbar, p.vbar, p.g, p.bad, p.first,     \
                          p.fused, p.epoch, p.ticket0);                                       \
    }
#define LOCAL_TC_ALL(T, S) \
    LOCAL_TC(T, S, 4, 64, 5) LOCAL_TC(T, S, 8, 64, 2) LOCAL_TC(T, S, 4, 128, 3) LOCAL_TC(T, S, 8, 128, 1) LOCAL_TC(T, S, 6, 128, 2)
LOCAL_TC_ALL(f16_t, f16)
LOCAL_TC_ALL(bf16_t, bf16)
