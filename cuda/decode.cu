// SPEC §6 on the GPU: incremental causal decoding with the state on the device.
//
// State (f32; rows at absolute token positions, so a step never moves data):
//   kc [B·Hkv, cap, dk]   keys              ks [B·Hkv, maxb, dk]  key sums of finished blocks
//   zc [B·H,   cap, dv]   resolved values   zs [B·H,   maxb, dv]  their z sums
//   co [B·H, dv + 2]      the current block's coarse terms (σ, gsum, hsum[dv])
// Dense is block with b > cap: one block that never finishes, so no sums and the coarse
// terms stay empty (gsum = 0), the same single code path as the CPU decoder.
//
// A call appending s tokens at length len is two launches on one stream: decode_keys
// (per kv head) and then decode_step (per query head), or decode_prefill after a prefill
// through the full kernels. The split is for ordering: every query head of a GQA group
// reads the keys and key sums its kv head gains in this call, and the CTAs of one launch
// cannot wait for each other.
//
// Row t of block I (r0 = I·b), as src/decode/kernel.rs: ℓ_j = scale·q_t·k_j for
// j ∈ [r0, t], μ = max(max ℓ, σ), e = exp(ℓ − μ), c = exp(σ − μ) (0 when gsum = 0),
//   w_t = (Σ_{j<t} e_j z_j + e_t v_t + c·hsum) / (Σ_j e_j + c·gsum − γ e_t),
// y_t = (1−γ)·w_t, z_t = v_t + γ·w_t. It is evaluated as online softmax over chunks of
// rows started from the coarse terms (max σ, sum gsum, accumulator hsum), which is the
// same expression and lets dense rows run over any number of cached tokens. The coarse
// terms of block I are the same online pass over the finished blocks' key sums (logit
// scale/b, values their z sums), anchored at the block's first query.
//
// Non-finite values are recorded in the decoder's flag buffer `bad` (u64[4], zeroed by
// the host, read and cleared by GpuDecoder::check_finite), never by a wait: slots 0, 1, 2
// get max(FLAG − flat index) of a NaN/∞ read from the new tokens' Q, K, V (0 = none, the
// smallest index among those seen wins, as in means.cu); slot 3 gets 1 when a value
// written (y, z, a key or z sum, a coarse term) is not finite, which from finite inputs is
// an overflow. A predicate per element; the atomic only when it fires.
#include "common.cuh"

#define BAD_OUT 3

// The atomic is out of line: the hot loops' register allocation must not pay for a
// path that runs only on bad input.
__device__ __noinline__ void dec_flag(u64* bad, int slot, u64 value) {
    atomicMax(bad + slot, value);
}
__device__ __forceinline__ void dec_in(u64* bad, int slot, float x, long long idx) {
    if (!finite_f(x)) dec_flag(bad, slot, FLAG - (u64)idx);
}
__device__ __forceinline__ void dec_out(u64* bad, float x) {
    if (!finite_f(x)) dec_flag(bad, BAD_OUT, 1ull);
}

#define DEC_THREADS 256
#define DEC_CHUNK 256  // rows of logits held in shared memory at a time
#define DEC_MAXD 128   // dk, dv bound (the host checks MAX_HEAD_DIM)

// Shared memory of the two per-query-head kernels.
struct DecShared {
    float q[DEC_MAXD];     // the query of the current row, f32
    float lg[DEC_CHUNK];   // logits, then their exponentials
    float part[DEC_THREADS];  // per row group partial sums of the accumulator
    float hs[DEC_MAXD];    // hsum of the current block
    float red[32];         // block reductions
};

// Fold rows [0, nrows) into the running online softmax (mu, sum: the same in every
// thread; acc: column c of row group g): ℓ_r = scale·q·keys_r, and acc gains e_r·vals_r
// for r < nval only (the query's own row enters with v_t, which is not a cached z). On
// return sh.lg holds the exponentials of the last chunk, rescaled to the final mu.
// Out of line: its loads-in-flight loops keep their registers whatever the caller holds.
__device__ __noinline__ void dec_attend(const float* __restrict__ keys, const float* __restrict__ vals,
                           int nrows, int nval, int dk, int dv, float scale, DecShared& sh,
                           float& mu, float& sum, float& acc, int g, int c, int G) {
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, nw = blockDim.x >> 5;
    for (int c0 = 0; c0 < nrows; c0 += DEC_CHUNK) {
        const int cn = min(DEC_CHUNK, nrows - c0);
        // A warp per row, lanes across dk (coalesced), eight rows in flight per warp: a
        // step is latency-bound, not bandwidth-bound, with one CTA per head.
        for (int r = warp; r < cn; r += 8 * nw) {
            float d[8];
#pragma unroll
            for (int u = 0; u < 8; ++u) d[u] = 0.0f;
            for (int j = lane; j < dk; j += 32) {
                const float qj = sh.q[j];
#pragma unroll
                for (int u = 0; u < 8; ++u) {
                    const int rr = r + u * nw;
                    if (rr < cn) d[u] += qj * keys[(long long)(c0 + rr) * dk + j];
                }
            }
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                const float s = warp_sum(d[u]);
                const int rr = r + u * nw;
                if (lane == 0 && rr < cn) sh.lg[rr] = scale * s;
            }
        }
        __syncthreads();
        float mx = neg_inf();
        for (int r = tid; r < cn; r += blockDim.x) mx = fmaxf(mx, sh.lg[r]);
        mx = block_max(mx, sh.red);
        const float mn = fmaxf(mu, mx);
        const float alpha = expf(mu - mn);  // exp(−inf) = 0 for the first chunk
        float ps = 0.0f;
        for (int r = tid; r < cn; r += blockDim.x) {
            const float e = expf(sh.lg[r] - mn);
            sh.lg[r] = e;
            ps += e;
        }
        ps = block_sum(ps, sh.red);  // its barriers also publish sh.lg
        sum = sum * alpha + ps;
        mu = mn;
        if (g < G) {
            float a = acc * alpha;
            const int nv = min(cn, nval - c0);
            const float* vc = vals + (long long)c0 * dv + c;
            int r = g;
            // Eight loads issued before their products, for the same reason.
            for (; r + 7 * G < nv; r += 8 * G) {
                float x[8];
#pragma unroll
                for (int u = 0; u < 8; ++u) x[u] = vc[(long long)(r + u * G) * dv];
#pragma unroll
                for (int u = 0; u < 8; ++u) a += sh.lg[r + u * G] * x[u];
            }
            for (; r < nv; r += G) a += sh.lg[r] * vc[(long long)r * dv];
            acc = a;
        }
        __syncthreads();
    }
}

// Σ over the row groups of acc: the column total, in threads tid < dv. Ends with the
// partial sums read, not with a barrier: the caller's next barrier precedes any reuse.
__device__ __forceinline__ float dec_groups(float acc, DecShared& sh, int g, int c, int G, int dv) {
    if (g < G) sh.part[g * dv + c] = acc;
    __syncthreads();
    float t = 0.0f;
    if ((int)threadIdx.x < dv)
        for (int k = 0; k < G; ++k) t += sh.part[k * dv + threadIdx.x];
    return t;
}

// The coarse terms of block I from its anchor query (in sh.q) and the finished blocks
// 0..I: (σ, gsum) returned, hsum into sh.hs and, with σ and gsum, into co. Ends with a
// barrier (sh.hs is read by every thread next).
__device__ void dec_coarse(const float* __restrict__ ksh, const float* __restrict__ zsh, float* co,
                           u64* bad, int I, int b, int dk, int dv, float scale, DecShared& sh, int g,
                           int c, int G, float& sigma, float& gsum) {
    float mu = neg_inf(), sum = 0.0f, acc = 0.0f;
    // k̄_J = Σk_J / b: every finished block holds b tokens.
    if (I > 0) dec_attend(ksh, zsh, I, I, dk, dv, scale / (float)b, sh, mu, sum, acc, g, c, G);
    const float h = dec_groups(acc, sh, g, c, G, dv);
    sigma = mu;
    gsum = I > 0 ? (float)b * sum : 0.0f;
    if ((int)threadIdx.x < dv) {
        sh.hs[threadIdx.x] = h;
        co[2 + threadIdx.x] = h;
        dec_out(bad, h);
    }
    if (threadIdx.x == 0) {
        co[0] = sigma;
        co[1] = gsum;
        if (I > 0) {  // σ = −∞ is the empty coarse part
            dec_out(bad, sigma);
            dec_out(bad, gsum);
        }
    }
    __syncthreads();
}

// Per kv head: keys of tokens len..len+s into kc, then the key sums of the blocks they
// finish (rows added in order from 0, as the CPU's sum_rows, so the sums agree bitwise).
template <class T>
__device__ void decode_keys(const T* __restrict__ k, float* __restrict__ kc, float* __restrict__ ks,
                            u64* __restrict__ bad, int s, int len, int cap, int dk, int b, int maxb) {
    const long long h = blockIdx.x;
    const T* kh = k + h * s * dk;
    float* kch = kc + h * cap * dk;
    const long long total = (long long)s * dk;
    float* dst = kch + (long long)len * dk;
    for (long long i = threadIdx.x; i < total; i += blockDim.x) {
        const float x = to_f(kh[i]);
        dec_in(bad, 1, x, h * total + i);
        dst[i] = x;
    }
    __syncthreads();  // the sums below read keys other threads wrote
    const int j0 = len / b, j1 = (len + s) / b;
    for (long long idx = threadIdx.x; idx < (long long)(j1 - j0) * dk; idx += blockDim.x) {
        const int J = j0 + (int)(idx / dk), c = (int)(idx % dk);
        const float* src = kch + (long long)J * b * dk + c;
        float a = 0.0f;
        for (int r = 0; r < b; ++r) a += src[(long long)r * dk];
        dec_out(bad, a);
        ks[(h * maxb + J) * dk + c] = a;
    }
}

// Per query head: rows len..len+s in order (each row reads the z of the rows before it).
template <class T>
__device__ void decode_step(const T* __restrict__ q, const T* __restrict__ v, T* __restrict__ y,
                            const float* __restrict__ kc, float* __restrict__ zc,
                            const float* __restrict__ ks, float* __restrict__ zs, float* __restrict__ co,
                            u64* __restrict__ bad, int H, int Hkv, int s, int len, int cap, int dk,
                            int dv, int b, int maxb, float scale, float gamma) {
    __shared__ DecShared sh;
    const int bh = blockIdx.x, tid = threadIdx.x;
    const long long kvh = kv_head(bh, H, Hkv);
    const int G = blockDim.x / dv;  // row groups of the value sums (dv ≤ 128: G ≥ 2)
    const int g = tid / dv, c = tid - g * dv;
    const float* kch = kc + kvh * cap * dk;
    float* zch = zc + (long long)bh * cap * dv;
    const float* ksh = ks + kvh * maxb * dk;
    float* zsh = zs + (long long)bh * maxb * dv;
    float* coh = co + (long long)bh * (dv + 2);
    float sigma = coh[0], gsum = coh[1];
    for (int i = tid; i < dv; i += blockDim.x) sh.hs[i] = coh[2 + i];
    for (int i = 0; i < s; ++i) {
        const int t = len + i;
        for (int j = tid; j < dk; j += blockDim.x) {
            const long long qi = ((long long)bh * s + i) * dk + j;
            const float x = to_f(q[qi]);
            dec_in(bad, 0, x, qi);
            sh.q[j] = x;
        }
        __syncthreads();  // also publishes the previous row's z, z sum and sh.hs
        const int r0 = t - t % b;
        if (t == r0) dec_coarse(ksh, zsh, coh, bad, t / b, b, dk, dv, scale, sh, g, c, G, sigma, gsum);
        const int nl = t - r0 + 1;
        float mu = gsum > 0.0f ? sigma : neg_inf();
        float sum = gsum;
        float acc = (g == 0 && gsum > 0.0f) ? sh.hs[c] : 0.0f;
        dec_attend(kch + (long long)r0 * dk, zch + (long long)r0 * dv, nl, nl - 1, dk, dv, scale, sh,
                   mu, sum, acc, g, c, G);
        const float et = sh.lg[(nl - 1) % DEC_CHUNK];  // the row's own term, last of the last chunk
        const float a = dec_groups(acc, sh, g, c, G, dv);
        if (tid < dv) {
            const long long vi = (kvh * s + i) * dv + tid;
            const float vv = to_f(v[vi]);
            dec_in(bad, 2, vv, vi);
            const float w = (a + et * vv) * (1.0f / (sum - gamma * et));
            const T yt = from_f<T>((1.0f - gamma) * w);
            const float zt = vv + gamma * w;
            dec_out(bad, to_f(yt));  // after rounding: f16 overflows long before f32
            dec_out(bad, zt);
            y[((long long)bh * s + i) * dv + tid] = yt;
            zch[(long long)t * dv + tid] = zt;
            if ((t + 1) % b == 0) {
                // Only this thread wrote column tid of the block's z rows in this launch.
                float z = 0.0f;
                for (int r = r0; r <= t; ++r) z += zch[(long long)r * dv + tid];
                dec_out(bad, z);
                zsh[(long long)(t / b) * dv + tid] = z;
            }
        }
        __syncthreads();  // sh.lg and sh.part are rewritten by the next row
    }
}

// Per query head, after the full kernels wrote rows 0..s of an empty state into y (and
// decode_keys the keys): z = v + γ/(1−γ)·y, the z sums of the finished blocks, and the
// coarse terms of the block the prefill ends in (its anchor query is already known).
template <class T>
__device__ void decode_prefill(const T* __restrict__ q, const T* __restrict__ v, const T* __restrict__ y,
                               const float* __restrict__ ks, float* __restrict__ zc, float* __restrict__ zs,
                               float* __restrict__ co, u64* __restrict__ bad, int H, int Hkv, int s,
                               int cap, int dk, int dv, int b, int maxb, float scale, float gamma) {
    __shared__ DecShared sh;
    const int bh = blockIdx.x, tid = threadIdx.x;
    const long long kvh = kv_head(bh, H, Hkv);
    const int G = blockDim.x / dv;
    const int g = tid / dv, c = tid - g * dv;
    float* zch = zc + (long long)bh * cap * dv;
    const float* ksh = ks + kvh * maxb * dk;
    float* zsh = zs + (long long)bh * maxb * dv;
    float* coh = co + (long long)bh * (dv + 2);
    const float f = gamma / (1.0f - gamma);
    const T* vh = v + kvh * s * dv;
    const T* yh = y + (long long)bh * s * dv;
    const long long total = (long long)s * dv;
    for (long long i = tid; i < total; i += blockDim.x) {
        const float vv = to_f(vh[i]), yy = to_f(yh[i]);
        dec_in(bad, 2, vv, kvh * total + i);
        const float z = vv + f * yy;
        dec_out(bad, yy);
        dec_out(bad, z);
        zch[i] = z;
    }
    // The full kernels read Q whole; only the anchor row below is read here, so Q is
    // scanned for the record (once per prefill, O(s·dk) per head).
    const T* qh = q + (long long)bh * s * dk;
    const long long qtotal = (long long)s * dk;
    for (long long i = tid; i < qtotal; i += blockDim.x) dec_in(bad, 0, to_f(qh[i]), bh * qtotal + i);
    __syncthreads();
    const int I = s / b;
    for (long long idx = tid; idx < (long long)I * dv; idx += blockDim.x) {
        const int J = (int)(idx / dv), cc = (int)(idx % dv);
        const float* src = zch + (long long)J * b * dv + cc;
        float a = 0.0f;
        for (int r = 0; r < b; ++r) a += src[(long long)r * dv];
        dec_out(bad, a);
        zsh[(long long)J * dv + cc] = a;
    }
    // A prefill ending on a block boundary leaves the next block's terms to its first step.
    if (s % b == 0) return;
    for (int j = tid; j < dk; j += blockDim.x) sh.q[j] = to_f(q[((long long)bh * s + (long long)I * b) * dk + j]);
    __syncthreads();  // sh.q, and the z sums for dec_coarse
    float sigma, gsum;
    dec_coarse(ksh, zsh, coh, bad, I, b, dk, dv, scale, sh, g, c, G, sigma, gsum);
}

#define DECODE(T, S)                                                                              \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) decode_keys_##S(const DecodeParams p) { \
        decode_keys<T>(static_cast<const T*>(p.k), p.kc, p.ks, p.bad, p.s, p.len, p.cap, p.dk, p.b,  \
                       p.maxb);                                                                    \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS) decode_step_##S(const DecodeParams p) { \
        decode_step<T>(static_cast<const T*>(p.q), static_cast<const T*>(p.v), static_cast<T*>(p.y), \
                       p.kc, p.zc, p.ks, p.zs, p.co, p.bad, p.H, p.Hkv, p.s, p.len, p.cap, p.dk,     \
                       p.dv, p.b, p.maxb, p.scale, p.gamma);                                         \
    }                                                                                              \
    extern "C" __global__ void __launch_bounds__(DEC_THREADS)                                      \
        decode_prefill_##S(const DecodeParams p) {                                                 \
        decode_prefill<T>(static_cast<const T*>(p.q), static_cast<const T*>(p.v),                  \
                          static_cast<const T*>(p.y), p.ks, p.zc, p.zs, p.co, p.bad, p.H, p.Hkv,   \
                          p.s, p.cap, p.dk, p.dv, p.b, p.maxb, p.scale, p.gamma);                  \
    }
BLOCKRES_FOR_TYPES(DECODE)
