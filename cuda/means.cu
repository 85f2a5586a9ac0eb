// SPEC §2 step 1a: block means q̄, k̄, v̄ of every head, and the non-finite check.
//
// One CTA per (block J, head), 256 threads as G = 256/d row groups × d columns (d ≤ 128
// → at least 2 groups): group g sums rows g, g+G, ..., loads coalesced along the row
// and G rows in flight at once; the groups are then added in shared memory. The same
// pass notes the flat index of the first non-finite element, so the inputs are read
// once for both purposes: `bad` (zeroed by the host) gets max(FLAG − index), i.e. 0
// means none and the smallest index wins.
#include "common.cuh"

#define FLAG (1ull << 62)

template <class T>
__device__ void block_means(const T* __restrict__ x, float* __restrict__ out,
                            u64* __restrict__ bad, int n, int d, int b, int m) {
    __shared__ float part[256];
    const int J = blockIdx.x;
    const long long head = blockIdx.y;
    const int r0 = J * b;
    const int r1 = min(r0 + b, n);
    const int groups = blockDim.x / d;  // host guarantees d ≤ blockDim.x
    const int g = threadIdx.x / d, c = threadIdx.x - g * d;
    float s = 0.0f;
    if (g < groups) {
        const T* base = x + (head * n) * d + c;
#pragma unroll 4
        for (int r = r0 + g; r < r1; r += groups) {
            const float v = to_f(base[(long long)r * d]);
            if (!finite_f(v)) atomicMax(bad, FLAG - (u64)((head * n + r) * d + c));
            s += v;
        }
    }
    part[threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.x < d) {
        float t = 0.0f;
        for (int k = 0; k < groups; ++k) t += part[k * d + threadIdx.x];
        out[(head * m + J) * d + threadIdx.x] = t / (float)(r1 - r0);
    }
}

#define MEANS(T, S)                                                                   \
    extern "C" __global__ void __launch_bounds__(256) block_means_##S(               \
        const T* x, float* out, u64* bad, int n, int d, int b, int m) {               \
        block_means<T>(x, out, bad, n, d, b, m);                                      \
    }
BLOCKRES_FOR_TYPES(MEANS)
