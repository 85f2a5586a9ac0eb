// SPEC §2 step 1a: block means q̄, k̄, v̄ of every head, and the non-finite check.
//
// One CTA per (block J, head): each thread owns columns c, c+blockDim, ... and sums
// the block's rows, so the loads are coalesced along the row. The same pass notes the
// flat index of the first non-finite element, so the inputs are read once for both
// purposes: `bad` (zeroed by the host) gets max(FLAG − index), i.e. 0 means none and
// the smallest index wins.
#include "common.cuh"

#define FLAG (1ull << 62)

template <class T>
__device__ void block_means(const T* __restrict__ x, float* __restrict__ out,
                            u64* __restrict__ bad, int n, int d, int b, int m) {
    const int J = blockIdx.x;
    const long long head = blockIdx.y;
    const int r0 = J * b;
    const int r1 = min(r0 + b, n);
    const float inv = 1.0f / (float)(r1 - r0);
    for (int c = threadIdx.x; c < d; c += blockDim.x) {
        float s = 0.0f;
        for (int r = r0; r < r1; ++r) {
            const long long idx = (head * n + r) * d + c;
            const float v = to_f(x[idx]);
            if (!finite_f(v)) atomicMax(bad, FLAG - (u64)idx);
            s += v;
        }
        out[(head * m + J) * d + c] = s * inv;
    }
}

#define MEANS(T, S)                                                                   \
    extern "C" __global__ void block_means_##S(const T* x, float* out, u64* bad, int n, \
                                                int d, int b, int m) {                \
        block_means<T>(x, out, bad, n, d, b, m);                                      \
    }
BLOCKRES_FOR_TYPES(MEANS)
