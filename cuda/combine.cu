// SPEC §2 step 7: Y_I = (1−γ)·(P_I + γ·w_I ⊗ s_I), in place over y (which holds P); with
// deferred h (common.cuh, CombineParams) coef = 1 in place of γ.
// Grid (row chunks, head); each thread walks elements of one head with 32-bit
// indices (a head holds n·dv < 2^31 elements, checked on the host); 16-byte accesses
// when dv is a multiple of 16 bytes' worth of elements.
#include "common.cuh"

template <class T>
__device__ void combine(T* __restrict__ y, const float* __restrict__ w,
                        const float* __restrict__ s, int n, int dv, int b, int m, float gamma,
                        float coef) {
    const long long bh = blockIdx.y;
    T* yh = y + bh * n * dv;
    const float* wh = w + bh * n;
    const float* shh = s + bh * m * dv;
    const int total = n * dv;
    constexpr int V = 16 / sizeof(T);  // elements per 16-byte access
    if (dv % V == 0) {
        // 16-byte loads and stores: V elements of one row, sharing i and the block.
        for (int iv = blockIdx.x * blockDim.x + threadIdx.x; iv < total / V; iv += gridDim.x * blockDim.x) {
            const int idx = iv * V;
            const int i = idx / dv;
            const int c = idx - i * dv;
            const float* si = shh + (i / b) * dv + c;
            const float f = coef * wh[i];
            uint4 raw = *reinterpret_cast<const uint4*>(yh + idx);
            T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
            for (int k = 0; k < V; ++k) e[k] = from_f<T>((1.0f - gamma) * (to_f(e[k]) + f * si[k]));
            *reinterpret_cast<uint4*>(yh + idx) = raw;
        }
        return;
    }
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const int i = idx / dv;
        const int c = idx - i * dv;
        const float si = shh[(i / b) * dv + c];
        yh[idx] = from_f<T>((1.0f - gamma) * (to_f(yh[idx]) + coef * wh[i] * si));
    }
}

#define COMBINE(T, S)                                                                       \
    extern "C" __global__ void combine_##S(const CombineParams p) {                          \
        pdl_wait();                                                                          \
        combine<T>(static_cast<T*>(p.y), p.w, p.s, p.n, p.dv, p.b, p.m, p.gamma, p.coef);    \
    }
BLOCKRES_FOR_TYPES(COMBINE)
