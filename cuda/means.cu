// SPEC §2 step 1a: block means q̄, k̄, v̄ of every head (or each block's first query,
// coarse_query = first), and the non-finite check.
//
// One CTA per (block J, head), 256 threads as G row groups: group g sums rows g, g+G,
// ..., each thread 16 bytes of a row (V columns) when d allows, else one column; the
// groups are then added in shared memory. The same
// pass notes the flat index of the first non-finite element, so the inputs are read
// once for both purposes: `bad` (zeroed by the host) gets max(FLAG − index), i.e. 0
// means none and the smallest index wins.
#include "common.cuh"

#define FLAG (1ull << 62)

template <class T>
__device__ void block_means(const T* __restrict__ x, float* __restrict__ out,
                            u64* __restrict__ bad, long long head, int n, int d, int b, int m,
                            int first) {
    __shared__ float part[256 * 8];
    const int J = blockIdx.x;
    const int r0 = J * b;
    const int r1 = min(r0 + b, n);
    constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
    const int tid = threadIdx.x;
    int groups;
    if (d % V == 0) {
        // Vector path: a thread owns V consecutive columns of every groups-th row.
        const int dvec = d / V;
        groups = blockDim.x / dvec;
        const int g = tid / dvec, cv = tid - g * dvec;
        float s[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) s[k] = 0.0f;
        if (g < groups) {
            // Four rows' loads issued before any is used: one 16-byte load in flight per
            // thread left the kernel well under the read bandwidth.
            for (int r = r0 + g; r < r1; r += 4 * groups) {
                uint4 raw[4];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const int rr = r + u * groups;
                    raw[u] = rr < r1 ? *reinterpret_cast<const uint4*>(x + (head * n + rr) * d + cv * V)
                                     : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const T* e = reinterpret_cast<const T*>(&raw[u]);
                    const long long off = (head * n + r + u * groups) * d + cv * V;
#pragma unroll
                    for (int k = 0; k < V; ++k) {
                        const float v = to_f(e[k]);
                        if (!finite_f(v)) atomicMax(bad, FLAG - (u64)(off + k));
                        s[k] += v;
                    }
                }
            }
#pragma unroll
            for (int k = 0; k < V; ++k) part[g * d + cv * V + k] = s[k];
        }
    } else {
        groups = blockDim.x / d;  // host guarantees d ≤ blockDim.x
        const int g = tid / d, c = tid - g * d;
        float s = 0.0f;
        if (g < groups) {
            const T* base = x + (head * n) * d + c;
#pragma unroll 4
            for (int r = r0 + g; r < r1; r += groups) {
                const float v = to_f(base[(long long)r * d]);
                if (!finite_f(v)) atomicMax(bad, FLAG - (u64)((head * n + r) * d + c));
                s += v;
            }
            part[g * d + c] = s;
        }
    }
    __syncthreads();
    if (tid < d) {
        float t = 0.0f;
        for (int k = 0; k < groups; ++k) t += part[k * d + tid];
        // coarse_query = first (SPEC §2): the block's first row stands in for its mean;
        // the whole block was still scanned above for non-finite values.
        out[(head * m + J) * d + tid] =
            first ? to_f(x[(head * n + r0) * d + tid]) : t / (float)(r1 - r0);
    }
}

// Q, K and V in one launch (three launches of a third of the CTAs each left the device
// idle between them and in their tails: 3 × 31 µs at n = 32768 on the H200).
#define MEANS(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(256) block_means_##S(const MeansParams p) { \
        /* Selected, not indexed: a parameter array indexed at run time is copied to local \
           memory. */                                                                        \
        const int t = blockIdx.z, head = blockIdx.y;                                         \
        const bool q = t == 0, k = t == 1;                                                   \
        if (head >= (q ? p.heads[0] : k ? p.heads[1] : p.heads[2])) return; /* GQA */         \
        block_means<T>(static_cast<const T*>(q ? p.x[0] : k ? p.x[1] : p.x[2]),               \
                       q ? p.out[0] : k ? p.out[1] : p.out[2], p.bad + t, head, p.n,          \
                       q ? p.d[0] : k ? p.d[1] : p.d[2], p.b, p.m, q ? p.first : 0);          \
    }
BLOCKRES_FOR_TYPES(MEANS)
