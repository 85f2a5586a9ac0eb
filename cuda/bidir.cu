// SPEC §2, bidirectional (causal = 0): the local and the reduced systems are full, and
// both are solved by Gauss–Jordan elimination without pivoting (I − γD and I − γ·diag(c)·G̃
// are strictly diagonally dominant by rows for γ < 1, SPEC §1–2, so no pivot is small).
//
// Correct first, not tuned (the speed bars are for causal attention): f32 arithmetic
// throughout, plain FMA, one CTA per block for the local systems (b ≤ 128, the block's
// augmented system [I − γD | D·V + z⊗h | z] in shared memory), one CTA per head for the
// m×m reduced system (in global memory, so any m that fits the device).
//
// Steps 1 (block means) and 1b (coarse, with causal = 0: every J ≠ I) and 7 (combine) are
// the causal path's kernels.
#include "common.cuh"

#define NT 1024
#define NR (NT / 32)  // rows of workers (warps)

// One CTA (1024 threads as 32 rows × 32 columns of workers) per (block I, query head):
// the shared memory allows one CTA per SM, so it brings its own warps to hide latency
// (256 threads took 3× as long at n = 32768).
// Shared memory (mirrored by bidir_smem() in src/gpu/plan.rs): the augmented matrix
// (nb × (nb + dv + 2) floats), then scratch for Q and K (2 · nb × (dk + 1)) or V
// (nb × (dv + 1)).
template <class T>
__device__ void local_bidir(const T* __restrict__ q, const T* __restrict__ k,
                            const T* __restrict__ v, T* __restrict__ y, float* __restrict__ wout,
                            float* __restrict__ pbar, float* __restrict__ cvec,
                            const float* __restrict__ sigma, const float* __restrict__ gsum,
                            const float* __restrict__ hvec, int H, int Hkv, int n, int dk, int dv,
                            int b, int m, float scale, float gamma) {
    extern __shared__ float sm[];
    const int I = blockIdx.x, bh = blockIdx.y;
    const long long kvh = kv_head(bh, H, Hkv);
    const int base = I * b, nb = min(b, n - base);
    const long long bi = (long long)bh * m + I;
    const int as = nb + dv + 2;   // row stride of the augmented matrix
    const int wa = nb + dv + 1;   // its width: M, then dv value columns, then the w column
    float* A = sm;
    float* scr = A + nb * as;
    require_smem(4ll * (nb * as + max(2 * nb * (dk + 1), nb * (dv + 1))));
    const int tid = threadIdx.x, ty = tid >> 5, tx = tid & 31;
    const T* qh = q + ((long long)bh * n + base) * dk;
    const T* kh = k + (kvh * n + base) * dk;
    const T* vh = v + (kvh * n + base) * dv;

    // Logits of every pair of the block.
    const int lq = dk + 1;
    float* qs = scr;
    float* ks = scr + nb * lq;
    for (int idx = tid; idx < nb * dk; idx += NT) {
        const int r = idx / dk, c = idx - r * dk;
        qs[r * lq + c] = to_f(qh[idx]);
        ks[r * lq + c] = to_f(kh[idx]);
    }
    __syncthreads();
    for (int i = ty; i < nb; i += NR)
        for (int j = tx; j < nb; j += 32) {
            float s = 0.0f;
            for (int c = 0; c < dk; ++c) s = fmaf(qs[i * lq + c], ks[j * lq + c], s);
            A[i * as + j] = scale * s;
        }
    __syncthreads();
    // Softmax with the coarse normalizer (warp per row): D in place, z in the w column.
    const float sig = sigma[bi], gs = gsum[bi];
    for (int i = ty; i < nb; i += NR) {
        float* row = A + i * as;
        float mx = sig;
        for (int j = tx; j < nb; j += 32) mx = fmaxf(mx, row[j]);
        mx = warp_max(mx);
        float l = 0.0f;
        for (int j = tx; j < nb; j += 32) {
            const float e = __expf(row[j] - mx);
            row[j] = e;
            l += e;
        }
        l = warp_sum(l);
        const float ec = gs > 0.0f ? __expf(sig - mx) : 0.0f;
        const float invz = 1.0f / (l + ec * gs);
        for (int j = tx; j < nb; j += 32) row[j] *= invz;
        if (tx == 0) row[nb + dv] = ec * invz;
    }
    __syncthreads();
    // Right side X = D·V + z⊗h, then M = I − γD.
    const int lv = dv + 1;
    float* vs = scr;
    for (int idx = tid; idx < nb * dv; idx += NT) {
        const int r = idx / dv, c = idx - r * dv;
        vs[r * lv + c] = to_f(vh[idx]);
    }
    __syncthreads();
    const float* hI = hvec + bi * dv;
    for (int i = ty; i < nb; i += NR)
        for (int c = tx; c < dv; c += 32) {
            float s = 0.0f;
            for (int j = 0; j < nb; ++j) s = fmaf(A[i * as + j], vs[j * lv + c], s);
            A[i * as + nb + c] = s + A[i * as + nb + dv] * hI[c];
        }
    __syncthreads();
    for (int i = ty; i < nb; i += NR)
        for (int j = tx; j < nb; j += 32) A[i * as + j] = (i == j ? 1.0f : 0.0f) - gamma * A[i * as + j];
    __syncthreads();
    // Gauss–Jordan: scale pivot row p, subtract it from every other row (columns > p).
    for (int p = 0; p < nb; ++p) {
        const float inv = 1.0f / A[p * as + p];
        __syncthreads();
        for (int j = p + 1 + tid; j < wa; j += NT) A[p * as + j] *= inv;
        __syncthreads();
        for (int i = ty; i < nb; i += NR) {
            if (i == p) continue;
            const float f = A[i * as + p];
            for (int j = p + 1 + tx; j < wa; j += 32) A[i * as + j] = fmaf(-f, A[p * as + j], A[i * as + j]);
        }
        __syncthreads();
    }
    // [P | w] is in the right-side columns: P into y, w into wout, block means.
    T* yh = y + ((long long)bh * n + base) * dv;
    for (int idx = tid; idx < nb * dv; idx += NT) {
        const int r = idx / dv, c = idx - r * dv;
        yh[idx] = from_f<T>(A[r * as + nb + c]);
    }
    float* wh = wout + (long long)bh * n + base;
    for (int r = tid; r < nb; r += NT) wh[r] = A[r * as + nb + dv];
    const float invn = 1.0f / (float)nb;
    for (int c = tid; c <= dv; c += NT) {
        float s = 0.0f;
        for (int r = 0; r < nb; ++r) s += A[r * as + nb + c];
        if (c < dv)
            pbar[bi * dv + c] = s * invn;
        else
            cvec[bi] = s * invn;
    }
}

#define LOCAL_BIDIR(T, S)                                                                     \
    extern "C" __global__ void __launch_bounds__(NT) local_bidir_##S(const LocalParams p) { \
        local_bidir<T>(BLOCKRES_LOCAL_ARGS(T, p));                                            \
    }
BLOCKRES_FOR_TYPES(LOCAL_BIDIR)

// The reduced system's augmented matrix per head, aug: m × (m + dv), row-major:
// [I − γ·diag(c)·G̃ | p̄]. Grid (row, head).
extern "C" __global__ void __launch_bounds__(256) reduced_bidir_build(const ReducedParams p) {
    const float* __restrict__ g = p.g;
    const float* __restrict__ pbar = p.pbar;
    const float* __restrict__ cvec = p.cvec;
    float* __restrict__ aug = p.minv;
    const int m = p.m, dv = p.dv;
    const float gamma = p.gamma;
    const int i = blockIdx.x, bh = blockIdx.y;
    const long long row = (long long)bh * m + i;
    const float gc = gamma * cvec[row];
    const float* gi = g + row * m;
    float* ai = aug + row * (m + dv);
    for (int j = threadIdx.x; j < m + dv; j += blockDim.x)
        ai[j] = j < m ? (i == j ? 1.0f : 0.0f) - gc * gi[j] : pbar[row * dv + j - m];
}

// Gauss–Jordan on one head's augmented matrix, in place (u replaces p̄). One CTA of 1024
// threads (32 rows × 32 columns of workers) per head; global memory writes of a step are
// visible to the whole CTA after its barrier.
extern "C" __global__ void __launch_bounds__(1024) reduced_bidir_solve(const ReducedParams p) {
    float* __restrict__ aug = p.minv;
    const int m = p.m, dv = p.dv;
    const int bh = blockIdx.x;
    const int w = m + dv;
    float* a = aug + (long long)bh * m * w;
    const int tid = threadIdx.x, ty = tid >> 5, tx = tid & 31;
    for (int p = 0; p < m; ++p) {
        const float inv = 1.0f / a[(long long)p * w + p];
        __syncthreads();
        for (int j = p + 1 + tid; j < w; j += 1024) a[(long long)p * w + j] *= inv;
        __syncthreads();
        for (int i = ty; i < m; i += 32) {
            if (i == p) continue;
            const float f = a[(long long)i * w + p];
            if (f == 0.0f) continue;
            for (int j = p + 1 + tx; j < w; j += 32)
                a[(long long)i * w + j] = fmaf(-f, a[(long long)p * w + j], a[(long long)i * w + j]);
        }
        __syncthreads();
    }
}

// s = G̃·u (u in the augmented matrix's last dv columns). Grid (row, head), dv threads
// at most 128 (the host's limit on dv).
extern "C" __global__ void __launch_bounds__(128) reduced_bidir_apply(const ReducedParams p) {
    const float* __restrict__ g = p.g;
    const float* __restrict__ aug = p.minv;
    float* __restrict__ s = p.s;
    const int m = p.m, dv = p.dv;
    const int i = blockIdx.x, bh = blockIdx.y, c = threadIdx.x;
    if (c >= dv) return;
    const long long row = (long long)bh * m + i;
    const float* gi = g + row * m;
    const float* u = aug + (long long)bh * m * (m + dv) + m + c;
    float acc = 0.0f;
    for (int j = 0; j < m; ++j) acc = fmaf(gi[j], u[(long long)j * (m + dv)], acc);
    s[row * dv + c] = acc;
}
