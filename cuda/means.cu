// SPEC §2 step 1a: block means q̄, k̄, v̄ of every head (or each block's first query,
// coarse_query = first), and the non-finite check.
//
// One CTA per (block J, head), 256 threads as G row groups: group g sums rows g, g+G,
// ..., each thread 16 bytes of a row (V columns) when d allows, else one column; the
// groups are then added in shared memory, P threads per column (a power of two, lanes of
// one warp) and a shuffle. The same pass finds the flat index of the first non-finite
// element, so the inputs are read once for both purposes: a non-finite element makes
// its column's sum non-finite, and only then does the thread look at its elements again
// (an f32 overflow of finite values, the other way to a non-finite sum, finds nothing
// there). `bad` gets max(rec_value(epoch, index)) (common.cuh): the call's smallest index
// wins over it and over every earlier call's record. (Checking every element as it was summed cost the hot loop 64-bit
// index math and 58 registers: 4 CTAs per SM, 91 µs for Q, K, V at n = 32768.)
#include "common.cuh"

template <class T>
__device__ void block_means(const T* __restrict__ x, float* __restrict__ out,
                            u64* __restrict__ bad, long long head, int n, int d, int b, int m,
                            int first, u64 epoch) {
    __shared__ float part[256 * 8];
    const int J = blockIdx.x;
    const int r0 = J * b;
    const int r1 = min(r0 + b, n);
    constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
    const int tid = threadIdx.x;
    const T* xh = x + head * n * d;
    int groups;
    if (d % V == 0) {
        // Vector path: a thread owns V consecutive columns of every groups-th row.
        const int dvec = d / V;
        groups = blockDim.x / dvec;
        const int g = tid / dvec, cv = tid - g * dvec;
        float s[V];
#pragma unroll
        for (int k = 0; k < V; ++k) s[k] = 0.0f;
        if (g < groups) {
            // Four rows' loads issued before any is used: one 16-byte load in flight per
            // thread left the kernel well under the read bandwidth.
            for (int r = r0 + g; r < r1; r += 4 * groups) {
                uint4 raw[4];
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const int rr = r + u * groups;
                    raw[u] = rr < r1 ? *reinterpret_cast<const uint4*>(xh + (long long)rr * d + cv * V)
                                     : make_uint4(0, 0, 0, 0);
                }
#pragma unroll
                for (int u = 0; u < 4; ++u) {
                    const T* e = reinterpret_cast<const T*>(&raw[u]);
#pragma unroll
                    for (int k = 0; k < V; ++k) s[k] += to_f(e[k]);
                }
            }
            float chk = 0.0f;
#pragma unroll
            for (int k = 0; k < V; ++k) chk += s[k] - s[k];  // 0, or NaN
            if (!(chk == 0.0f)) {
                for (int r = r0 + g; r < r1; r += groups)
                    for (int k = 0; k < V; ++k) {
                        const long long off = (long long)r * d + cv * V + k;
                        if (!finite_f(to_f(xh[off]))) atomicMax(bad, rec_value(epoch, (u64)(head * n * d + off)));
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
            const T* base = xh + c;
            for (int r = r0 + g; r < r1; r += groups) s += to_f(base[(long long)r * d]);
            if (!finite_f(s)) {
                for (int r = r0 + g; r < r1; r += groups)
                    if (!finite_f(to_f(base[(long long)r * d])))
                        atomicMax(bad, rec_value(epoch, (u64)(head * n * d + (long long)r * d + c)));
            }
            part[g * d + c] = s;
        }
    }
    __syncthreads();
    // P threads per column, P a power of two ≤ 32 with P·d ≤ blockDim: thread (c, q)
    // adds groups q, q + P, ...; then the P lanes of a column (aligned in one warp) meet.
    int P = 1;
    while (P < 32 && 2 * P * d <= (int)blockDim.x) P *= 2;
    const int c = tid / P, qq = tid - c * P;
    float t = 0.0f;
    if (c < d)
        for (int k = qq; k < groups; k += P) t += part[k * d + c];
    for (int o = 1; o < P; o <<= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
    if (c < d && qq == 0) {
        // coarse_query = first (SPEC §2): the block's first row stands in for its mean;
        // the whole block was still scanned above for non-finite values.
        out[(head * m + J) * d + c] = first ? to_f(xh[(long long)r0 * d + c]) : t / (float)(r1 - r0);
    }
}

// Q, K and V in one launch (three launches of a third of the CTAs each left the device
// idle between them and in their tails: 3 × 31 µs at n = 32768 on the H200).
#define MEANS(T, S)                                                                          \
    extern "C" __global__ void __launch_bounds__(256) block_means_##S(const MeansParams p) { \
        /* The call's first launch, enqueued without the programmatic attribute: the     \
           wait is a no-op, kept so the kernel stays correct if that changes. */            \
        pdl_trigger();                                                                       \
        pdl_wait();                                                                          \
        /* Selected, not indexed: a parameter array indexed at run time is copied to local \
           memory. */                                                                        \
        const int t = blockIdx.z, head = blockIdx.y;                                         \
        const bool q = t == 0, k = t == 1;                                                   \
        if (head >= (q ? p.heads[0] : k ? p.heads[1] : p.heads[2])) return; /* GQA */         \
        block_means<T>(static_cast<const T*>(q ? p.x[0] : k ? p.x[1] : p.x[2]),               \
                       q ? p.out[0] : k ? p.out[1] : p.out[2], p.bad + t, head, p.n,          \
                       q ? p.d[0] : k ? p.d[1] : p.d[2], p.b, p.m, q ? p.first : 0, p.epoch); \
    }
BLOCKRES_FOR_TYPES(MEANS)
