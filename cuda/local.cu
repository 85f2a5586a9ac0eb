// SPEC §2 steps 2–5, causal, fused per block: one CTA per (block I, query head).
//
// The block's rows are taken in tiles of 64; keys in chunks of 64. For a row tile,
// one pass streams the key chunks up to the diagonal with an online softmax (running
// row max started at the coarse shift σ_I, accumulator rescaled when it grows); with
// the cross-block mass exp(σ_I − μ_i)·gsum_I that gives Z_i and z_i and the
// probabilities D_ij, and the accumulator becomes, for every row i of the tile,
//
//     R_i = Σ_{j in earlier tiles} D_ij·[V_j + γ·P_j | γ·w_j] + Σ_{j in tile} D_ij·[V_j | 0]
//           + z_i·[h_I | 1],
//
// which is the right side of the causal local system (I − γD)·[P | w] = [D·V + z⊗h | z]
// with the already solved rows moved over. The in-tile triangle is then solved in
// shared memory, one thread per column (8-row panels, register-blocked). P is written into y (it is the part
// of Y that step 7 completes in place), w into `wout`, and the block means p̄_I, c_I
// into `pbar`, `cvec`.
//
// f16/bf16: the logits and the product D·U use the tensor cores (m16n8k16, f32
// accumulation; D and U rounded to the element type for the product, U stored
// transposed as the column-major B operand). f32: both in f32 FMA. Softmax, z, the
// triangular solves and the block means are f32 for every type. Later tiles read
// earlier tiles' P back from y, i.e. rounded to the element type: for f16/bf16 that is a relative
// perturbation of 2^-11/2^-8 of a term already of that precision in the output.
//
// Limits (checked on the host): dk ≤ 128, dv ≤ 128.
#include "common.cuh"

#define TILE 64
#define NT 256
#define SS 65            // row stride of the probability tile
#define NCOL 17          // ceil((128 + 1) / 8): columns per thread of the f32 accumulator
#define PS 72            // row stride (16-bit) of the probability and Uᵀ tiles: 64 + 8
#define NTW 9            // 8-column tiles of D·U per warp: ceil(17 / 2)
#define SPANEL 8         // rows per panel of the in-tile triangular solve

template <class T> struct Storage { typedef u16 type; static const bool half = true; };
template <> struct Storage<float> { typedef float type; static const bool half = false; };

__host__ __device__ inline int round16(int x) { return (x + 15) & ~15; }

// Row stride (in elements) of the Q and K tiles in shared memory. Half types: padded
// to a multiple of 16 (the mma k-step) plus 8, so fragment loads of 8 rows hit 8
// different bank groups; f32: odd, so 16 rows read with one column hit 16 banks.
template <class T> __device__ __forceinline__ int qk_stride(int dk) {
    return Storage<T>::half ? round16(dk) + 8 : dk + 1;
}

// Copy rows [row0, row0 + rows) of a head (row-major, width d) into a tile of 64 rows
// and stride `ld`, zero-filling the padding (rows ≥ rows, columns ≥ d, up to dpad).
// 16-byte loads when d is a multiple of 16 bytes' worth of elements.
template <class T>
__device__ __forceinline__ void load_tile(typename Storage<T>::type* dst, const T* src,
                                          int rows, int d, int dpad, int ld) {
    typedef typename Storage<T>::type St;
    constexpr int V = 16 / sizeof(T);
    if (d % V == 0) {
        const int dvec = d / V;
        for (int idx = threadIdx.x; idx < TILE * dvec; idx += NT) {
            const int r = idx / dvec, cv = idx - r * dvec;
            uint4 raw = make_uint4(0, 0, 0, 0);
            if (r < rows) raw = *reinterpret_cast<const uint4*>(&src[(long long)r * d + cv * V]);
            const St* e = reinterpret_cast<const St*>(&raw);
#pragma unroll
            for (int k = 0; k < V; ++k) dst[r * ld + cv * V + k] = e[k];
        }
        for (int idx = threadIdx.x; idx < TILE * (dpad - d); idx += NT) {
            const int r = idx / (dpad - d), c = d + idx - r * (dpad - d);
            dst[r * ld + c] = 0;
        }
        return;
    }
    const int total = TILE * dpad;
    for (int idx = threadIdx.x; idx < total; idx += NT) {
        const int r = idx / dpad, c = idx - r * dpad;
        St v = 0;
        if (r < rows && c < d) v = *reinterpret_cast<const St*>(&src[(long long)r * d + c]);
        dst[r * ld + c] = v;
    }
}

// The augmented right-side chunk U (rows j < 64 of the chunk starting at c0, width
// dv + 1): [V_j + γ·P_j | γ·w_j] for rows already solved (prev), [V_j | 0] for the
// diagonal chunk, 0 beyond the block. put(j, c, u) stores one value (transposed 16-bit
// for the tensor cores, row-major f32 otherwise). 16-byte loads when dv allows.
template <class T, class Put>
__device__ __forceinline__ void load_u(const T* vh, const T* yh, const float* wh, int c0, int kv,
                                       int dv, bool prev, float gamma, Put put) {
    constexpr int V = 16 / sizeof(T);
    const int uw = dv + 1;
    if (dv % V == 0) {
        const int dvec = dv / V;
        for (int idx = threadIdx.x; idx < TILE * dvec; idx += NT) {
            const int j = idx / dvec, cv = idx - j * dvec;
            float u[V];
#pragma unroll
            for (int k = 0; k < V; ++k) u[k] = 0.0f;
            if (j < kv) {
                const long long off = (long long)(c0 + j) * dv + cv * V;
                uint4 rv = *reinterpret_cast<const uint4*>(&vh[off]);
                const T* ev = reinterpret_cast<const T*>(&rv);
#pragma unroll
                for (int k = 0; k < V; ++k) u[k] = to_f(ev[k]);
                if (prev) {
                    uint4 ry = *reinterpret_cast<const uint4*>(&yh[off]);
                    const T* ey = reinterpret_cast<const T*>(&ry);
#pragma unroll
                    for (int k = 0; k < V; ++k) u[k] += gamma * to_f(ey[k]);
                }
            }
#pragma unroll
            for (int k = 0; k < V; ++k) put(j, cv * V + k, u[k]);
        }
        for (int j = threadIdx.x; j < TILE; j += NT)
            put(j, dv, (j < kv && prev) ? gamma * wh[c0 + j] : 0.0f);
        return;
    }
    for (int idx = threadIdx.x; idx < TILE * uw; idx += NT) {
        const int j = idx / uw, c = idx - j * uw;
        float u = 0.0f;
        if (j < kv) {
            if (c < dv) {
                u = to_f(vh[(long long)(c0 + j) * dv + c]);
                if (prev) u += gamma * to_f(yh[(long long)(c0 + j) * dv + c]);
            } else if (prev) {
                u = gamma * wh[c0 + j];
            }
        }
        put(j, c, u);
    }
}

// S = scale·Q·Kᵀ (64×64) into `s` (stride SS), with the causal mask: entry (r, j)
// is kept when j ≤ r + diag_off and j < kvalid and r < rvalid, else −inf.
template <class T>
__device__ __forceinline__ void logits(float* s, const typename Storage<T>::type* qs,
                                       const typename Storage<T>::type* ks, int dk, int ld,
                                       float scale, int diag_off, int kvalid, int rvalid);

template <>
__device__ __forceinline__ void logits<float>(float* s, const float* qs, const float* ks, int dk,
                                              int ld, float scale, int diag_off, int kvalid,
                                              int rvalid) {
    const int tr = threadIdx.x >> 4, tc = threadIdx.x & 15;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int c = 0; c < dk; ++c) {
        float a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = qs[(tr * 4 + i) * ld + c];
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = ks[(tc + 16 * j) * ld + c];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
            for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int r = tr * 4 + i, col = tc + 16 * j;
            const bool ok = col <= r + diag_off && col < kvalid && r < rvalid;
            s[r * SS + col] = ok ? acc[i][j] * scale : neg_inf();
        }
}

template <class T>
__device__ __forceinline__ void logits_mma(float* s, const u16* qs, const u16* ks, int dk, int ld,
                                           float scale, int diag_off, int kvalid, int rvalid) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, t = lane & 3;
    const int rs = (warp >> 1) * 16;  // 16-row strip
    const int cb = (warp & 1) * 32;   // 32-column half: four 8-column tiles
    float c[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) c[i][j] = 0.0f;
    const int dkp = round16(dk);
    for (int kk = 0; kk < dkp; kk += 16) {
        u32 a[4];
        a[0] = *reinterpret_cast<const u32*>(&qs[(rs + g) * ld + kk + 2 * t]);
        a[1] = *reinterpret_cast<const u32*>(&qs[(rs + g + 8) * ld + kk + 2 * t]);
        a[2] = *reinterpret_cast<const u32*>(&qs[(rs + g) * ld + kk + 2 * t + 8]);
        a[3] = *reinterpret_cast<const u32*>(&qs[(rs + g + 8) * ld + kk + 2 * t + 8]);
#pragma unroll
        for (int nt = 0; nt < 4; ++nt) {
            const int n0 = cb + nt * 8;
            u32 b[2];
            b[0] = *reinterpret_cast<const u32*>(&ks[(n0 + g) * ld + kk + 2 * t]);
            b[1] = *reinterpret_cast<const u32*>(&ks[(n0 + g) * ld + kk + 2 * t + 8]);
            Mma<T>::run(c[nt], a, b);
        }
    }
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int r = rs + g + (e >> 1) * 8;
            const int col = cb + nt * 8 + 2 * t + (e & 1);
            const bool ok = col <= r + diag_off && col < kvalid && r < rvalid;
            s[r * SS + col] = ok ? c[nt][e] * scale : neg_inf();
        }
}

template <>
__device__ __forceinline__ void logits<bf16_t>(float* s, const u16* qs, const u16* ks, int dk,
                                               int ld, float scale, int diag_off, int kvalid,
                                               int rvalid) {
    logits_mma<bf16_t>(s, qs, ks, dk, ld, scale, diag_off, kvalid, rvalid);
}
template <>
__device__ __forceinline__ void logits<f16_t>(float* s, const u16* qs, const u16* ks, int dk,
                                              int ld, float scale, int diag_off, int kvalid,
                                              int rvalid) {
    logits_mma<f16_t>(s, qs, ks, dk, ld, scale, diag_off, kvalid, rvalid);
}

template <class T>
__device__ void local_causal(const T* __restrict__ q, const T* __restrict__ k,
                             const T* __restrict__ v, T* __restrict__ y,
                             float* __restrict__ wout, float* __restrict__ pbar,
                             float* __restrict__ cvec, const float* __restrict__ sigma,
                             const float* __restrict__ gsum, const float* __restrict__ hvec,
                             int H, int Hkv, int n, int dk, int dv, int b, int m, float scale,
                             float gamma) {
    typedef typename Storage<T>::type St;
    extern __shared__ __align__(16) unsigned char smem[];
    const int ld = qk_stride<T>(dk);
    const int dpad = Storage<T>::half ? round16(dk) : dk;
    const int qbytes = ((TILE * ld * (int)sizeof(St)) + 15) & ~15;
    St* qs = reinterpret_cast<St*>(smem);
    St* ks = reinterpret_cast<St*>(smem + qbytes);
    float* ss = reinterpret_cast<float*>(smem + 2 * qbytes);
    const int uw = dv + 1;  // augmented width: dv value columns and the w column
    const int ntu = (uw + 7) >> 3;  // 8-column tiles of the augmented width
    // After ss: f32 path: us (64×uw f32); half path: ps (64×PS) and ut (8·ntu×PS),
    // 16-bit. Then xs (64×uw f32) and zs (64 f32). Mirrored by local_smem() in src/gpu/plan.rs.
    unsigned char* after = smem + 2 * qbytes + TILE * SS * 4;
    float* us = reinterpret_cast<float*>(after);
    u16* ps = reinterpret_cast<u16*>(after);
    u16* ut = ps + TILE * PS;
    const int mid = Storage<T>::half ? (TILE * PS + 8 * ntu * PS) * 2 : TILE * uw * 4;
    float* xs = reinterpret_cast<float*>(after + ((mid + 15) & ~15));
    float* zs = xs + TILE * uw;
    float* dinv = zs + TILE;  // 1 / (1 − γ·D_ii) of the tile's rows
    float* izs = dinv + TILE; // 1 / Z_i
    float* rsc = izs + TILE;  // per-row rescale of the accumulator for the current chunk
    require_smem(reinterpret_cast<unsigned char*>(rsc + TILE) - smem);

    const int I = blockIdx.x;
    const int bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const int base = I * b;
    const int nb = min(b, n - base);
    const T* qh = q + ((long long)bh * n + base) * dk;
    const T* kh = k + (kvh * n + base) * dk;
    const T* vh = v + (kvh * n + base) * dv;
    T* yh = y + ((long long)bh * n + base) * dv;
    float* wh = wout + (long long)bh * n + base;
    const long long bi = (long long)bh * m + I;
    const float sig = sigma[bi];
    const float gs = gsum[bi];
    const float* hI = hvec + bi * dv;

    const int tid = threadIdx.x;
    const int srow = tid >> 2, spart = tid & 3;  // row statistics: 4 threads per row
    const int arow = (tid >> 3) * 2, acol = tid & 7;  // accumulator: 2 rows, cols acol + 8k
    float colsum = 0.0f;  // thread c < uw: Σ over the block's rows of [P | w]_c

    for (int r0 = 0; r0 < nb; r0 += TILE) {
        const int rows = min(TILE, nb - r0);
        load_tile<T>(qs, qh + (long long)r0 * dk, rows, dk, dpad, ld);

        // One pass over the key chunks, online softmax (as FlashAttention): the
        // accumulator holds Σ_j exp(ℓ_ij − m_i)·U_j for the running max m_i (started at
        // σ_I) and is rescaled by exp(m_old − m_new) when the max grows; Z_i, z_i and the
        // normalization come after the last (diagonal) chunk.
        const bool live = srow < rows;
        float mu = sig, l = 0.0f;
        // Statistics of one chunk's logits in ss: turn them into exp(ℓ − m_new) in place
        // (and the 16-bit copy for the tensor cores), update l, publish the rescale.
        auto chunk_stats = [&](bool half_copy) {
            float cm = neg_inf();
            for (int jj = 0; jj < 16; ++jj) cm = fmaxf(cm, ss[srow * SS + spart * 16 + jj]);
            cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, 1));
            cm = fmaxf(cm, __shfl_xor_sync(0xffffffffu, cm, 2));
            const float mn = fmaxf(mu, cm);
            // mu = mn (both −inf included) keeps the accumulator; exp(−inf) = 0 drops it.
            const float alpha = mu == mn ? 1.0f : __expf(mu - mn);
            float cs = 0.0f;
            for (int jj = 0; jj < 16; ++jj) {
                const int j = spart * 16 + jj;
                const float sv = ss[srow * SS + j];
                const float e = sv == neg_inf() ? 0.0f : __expf(sv - mn);
                ss[srow * SS + j] = e;
                if constexpr (Storage<T>::half) {
                    if (half_copy) ps[srow * PS + j] = from_f<T>(e).x;
                }
                cs += e;
            }
            cs += __shfl_xor_sync(0xffffffffu, cs, 1);
            cs += __shfl_xor_sync(0xffffffffu, cs, 2);
            l = l * alpha + cs;
            mu = mn;
            if (spart == 0) rsc[srow] = alpha;
        };
        // After the last (diagonal) chunk: Z_i with the cross-block mass, z_i, and the
        // diagonal chunk's probabilities normalized in place for the solve (with
        // 1/(1 − γ·D_ii) by the thread holding the diagonal entry). Padding rows
        // (srow ≥ rows) have no logit at all: their weights are zero.
        auto finish_stats = [&]() {
            const float ecross = (gs > 0.0f && live) ? __expf(sig - mu) : 0.0f;
            const float invz = live ? 1.0f / (l + ecross * gs) : 0.0f;
            for (int jj = 0; jj < 16; ++jj) {
                const int j = spart * 16 + jj;
                const float d = ss[srow * SS + j] * invz;
                ss[srow * SS + j] = d;
                if (j == srow) dinv[srow] = 1.0f / (1.0f - gamma * d);
            }
            if (spart == 0) {
                zs[srow] = ecross * invz;
                izs[srow] = invz;
            }
        };

        if constexpr (Storage<T>::half) {
            const int warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
            const int rs = (warp >> 1) * 16, par = warp & 1;
            float acc[NTW][4];
#pragma unroll
            for (int i = 0; i < NTW; ++i)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[i][e] = 0.0f;
            for (int c0 = 0; c0 <= r0; c0 += TILE) {
                const int kv = min(TILE, nb - c0);
                load_tile<T>(ks, kh + (long long)c0 * dk, kv, dk, dpad, ld);
                const bool prev = c0 < r0;  // a chunk of already solved rows
                load_u<T>(vh, yh, wh, c0, kv, dv, prev, gamma,
                          [&](int j, int c, float u) { ut[c * PS + j] = from_f<T>(u).x; });
                __syncthreads();
                logits<T>(ss, qs, ks, dk, ld, scale, r0 - c0, kv, rows);
                __syncthreads();
                chunk_stats(true);
                __syncthreads();
                const float a0 = rsc[rs + g], a1 = rsc[rs + g + 8];
#pragma unroll
                for (int tt = 0; tt < NTW; ++tt) {
                    acc[tt][0] *= a0;
                    acc[tt][1] *= a0;
                    acc[tt][2] *= a1;
                    acc[tt][3] *= a1;
                }
#pragma unroll
                for (int kk = 0; kk < TILE; kk += 16) {
                    u32 af[4];
                    af[0] = *reinterpret_cast<const u32*>(&ps[(rs + g) * PS + kk + 2 * t]);
                    af[1] = *reinterpret_cast<const u32*>(&ps[(rs + g + 8) * PS + kk + 2 * t]);
                    af[2] = *reinterpret_cast<const u32*>(&ps[(rs + g) * PS + kk + 2 * t + 8]);
                    af[3] = *reinterpret_cast<const u32*>(&ps[(rs + g + 8) * PS + kk + 2 * t + 8]);
#pragma unroll
                    for (int tt = 0; tt < NTW; ++tt) {
                        const int n0 = (2 * tt + par) * 8;
                        if (n0 < 8 * ntu) {
                            u32 bf[2];
                            bf[0] = *reinterpret_cast<const u32*>(&ut[(n0 + g) * PS + kk + 2 * t]);
                            bf[1] = *reinterpret_cast<const u32*>(&ut[(n0 + g) * PS + kk + 2 * t + 8]);
                            Mma<T>::run(acc[tt], af, bf);
                        }
                    }
                }
                __syncthreads();
            }
            finish_stats();
            __syncthreads();
#pragma unroll
            for (int tt = 0; tt < NTW; ++tt) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int r = rs + g + (e >> 1) * 8;
                    const int c = (2 * tt + par) * 8 + 2 * t + (e & 1);
                    if (c < uw) xs[r * uw + c] = acc[tt][e] * izs[r] + zs[r] * (c < dv ? hI[c] : 1.0f);
                }
            }
        } else {
            float acc[2][NCOL];
#pragma unroll
            for (int i = 0; i < 2; ++i)
#pragma unroll
                for (int kq = 0; kq < NCOL; ++kq) acc[i][kq] = 0.0f;
            for (int c0 = 0; c0 <= r0; c0 += TILE) {
                const int kv = min(TILE, nb - c0);
                load_tile<T>(ks, kh + (long long)c0 * dk, kv, dk, dpad, ld);
                const bool prev = c0 < r0;  // a chunk of already solved rows
                load_u<T>(vh, yh, wh, c0, kv, dv, prev, gamma,
                          [&](int j, int c, float u) { us[j * uw + c] = u; });
                __syncthreads();
                logits<T>(ss, qs, ks, dk, ld, scale, r0 - c0, kv, rows);
                __syncthreads();
                chunk_stats(false);
                __syncthreads();
                const float a0 = rsc[arow], a1 = rsc[arow + 1];
#pragma unroll
                for (int kq = 0; kq < NCOL; ++kq) {
                    acc[0][kq] *= a0;
                    acc[1][kq] *= a1;
                }
                for (int j = 0; j < TILE; ++j) {
                    const float p0 = ss[arow * SS + j], p1 = ss[(arow + 1) * SS + j];
#pragma unroll
                    for (int kq = 0; kq < NCOL; ++kq) {
                        const int c = acol + 8 * kq;
                        if (c < uw) {
                            const float u = us[j * uw + c];
                            acc[0][kq] = fmaf(p0, u, acc[0][kq]);
                            acc[1][kq] = fmaf(p1, u, acc[1][kq]);
                        }
                    }
                }
                __syncthreads();
            }
            finish_stats();
            __syncthreads();
#pragma unroll
            for (int kq = 0; kq < NCOL; ++kq) {
                const int c = acol + 8 * kq;
                if (c < uw) {
                    const float hc = c < dv ? hI[c] : 1.0f;
                    xs[arow * uw + c] = acc[0][kq] * izs[arow] + zs[arow] * hc;
                    xs[(arow + 1) * uw + c] = acc[1][kq] * izs[arow + 1] + zs[arow + 1] * hc;
                }
            }
        }
        __syncthreads();

        // Solve (I − γ·D_tt)·X = R in place; D_tt is the diagonal chunk's probability
        // tile, still in ss (the last chunk, normalized by finish_stats). Columns are independent, so
        // one thread owns a column for the whole tile and no barrier is needed until
        // the end. Rows go in panels of SPANEL: the finished rows' contribution as a
        // register-blocked product (one x_j load serves SPANEL rows), then a fully
        // unrolled substitution inside the panel with its values in registers.
        for (int c = tid; c < uw; c += NT) {
            for (int sp = 0; sp < rows; sp += SPANEL) {
                float acc[SPANEL];
#pragma unroll
                for (int r = 0; r < SPANEL; ++r) acc[r] = 0.0f;
                for (int j = 0; j < sp; ++j) {
                    const float xj = xs[j * uw + c];
#pragma unroll
                    for (int r = 0; r < SPANEL; ++r) acc[r] = fmaf(ss[(sp + r) * SS + j], xj, acc[r]);
                }
                const int pe = min(sp + SPANEL, rows);
                float xv[SPANEL];
#pragma unroll
                for (int ii = 0; ii < SPANEL; ++ii) {
                    const int i = sp + ii;
                    xv[ii] = 0.0f;
                    if (i < pe) {
                        float s = acc[ii];
#pragma unroll
                        for (int jj = 0; jj < ii; ++jj) s = fmaf(ss[i * SS + sp + jj], xv[jj], s);
                        const float x = (xs[i * uw + c] + gamma * s) * dinv[i];
                        xv[ii] = x;
                        xs[i * uw + c] = x;
                        colsum += x;
                    }
                }
            }
        }
        __syncthreads();
        // P into y, w into wout; the next tile reads them back (same CTA, after the
        // barrier, so the global writes are visible to it).
        {
            constexpr int V = 16 / sizeof(T);
            if (dv % V == 0) {
                const int dvec = dv / V;
                for (int idx = tid; idx < rows * dvec; idx += NT) {
                    const int r = idx / dvec, cv = idx - r * dvec;
                    uint4 raw;
                    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
                    for (int k = 0; k < V; ++k) e[k] = from_f<T>(xs[r * uw + cv * V + k]);
                    *reinterpret_cast<uint4*>(&yh[(long long)(r0 + r) * dv + cv * V]) = raw;
                }
                for (int r = tid; r < rows; r += NT) wh[r0 + r] = xs[r * uw + dv];
            } else {
                for (int idx = tid; idx < rows * uw; idx += NT) {
                    const int r = idx / uw, c = idx - r * uw;
                    const float x = xs[idx];
                    if (c < dv)
                        yh[(long long)(r0 + r) * dv + c] = from_f<T>(x);
                    else
                        wh[r0 + r] = x;
                }
            }
        }
        __syncthreads();
    }
    const float inv = 1.0f / (float)nb;
    for (int c = tid; c < uw; c += NT) {
        if (c < dv)
            pbar[bi * dv + c] = colsum * inv;
        else
            cvec[bi] = colsum * inv;
    }
}

// Three CTAs per SM (≤ 80 registers, about 71 KiB of shared memory each at d = 64):
// while one CTA is in its triangular solve (few warps busy), the others keep the SM
// fed; measured 6% faster at n = 32768 than two CTAs with 128 registers, despite
// some spilling (results/v8_*).
#define LOCAL(T, S)                                                                           \
    extern "C" __global__ void __launch_bounds__(NT, 3) local_causal_##S(const LocalParams p) { \
        pdl_trigger();                                                                         \
        pdl_wait();                                                                            \
        local_causal<T>(BLOCKRES_LOCAL_ARGS(T, p));                                            \
    }
BLOCKRES_FOR_TYPES(LOCAL)
