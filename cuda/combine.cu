// SPEC §2 step 7: Y_I = (1−γ)·(P_I + γ·w_I ⊗ s_I), in place over y (which holds P); with
// deferred h (common.cuh, CombineParams) coef = 1 in place of γ.
// Grid (row chunks, head); each thread walks elements of one head with 32-bit
// indices (a head holds n·dv < 2^31 elements, checked on the host); 16-byte accesses
// when dv is a multiple of 16 bytes' worth of elements.
#include "common.cuh"

#define CU 2  // plan::COMBINE_UNROLL

__device__ __forceinline__ uint4 ld_cg_v4(const void* p) {
    uint4 v;
    asm volatile("ld.global.cg.v4.u32 {%0,%1,%2,%3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}
__device__ __forceinline__ float ld_cg_f(const float* p) {
    float v;
    asm volatile("ld.global.cg.f32 %0, [%1];" : "=f"(v) : "l"(p));
    return v;
}

// One 16-byte access of Y at element idx (V elements of row i = idx / dv): P's values in
// raw, f = coef·w_i.
template <class T>
__device__ __forceinline__ void combine_vec(T* yh, const float* shh, int idx, uint4 raw, float f, int dv, int b,
                                            float gamma) {
    constexpr int V = 16 / sizeof(T);
    const int i = idx / dv;
    const float* si = shh + (i / b) * dv + (idx - i * dv);
    T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
    for (int k = 0; k < V; ++k) e[k] = from_f<T>((1.0f - gamma) * (to_f(e[k]) + f * si[k]));
    *reinterpret_cast<uint4*>(yh + idx) = raw;
}

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
        // 16-byte loads and stores: V elements of one row, sharing i and the block. A
        // thread's first CU accesses (plan::COMBINE_UNROLL) are loaded before pdl_wait:
        // P and w come from the local kernel, which had finished before the kernel ahead
        // (the reduced solve) signalled, so under programmatic dependent launch they
        // arrive while that kernel still runs, and in any case CU loads are in flight at
        // once. Through L2 (ld.global.cg): no L1 line of an earlier call's Y can answer.
        const int items = total / V, stride = gridDim.x * blockDim.x;
        const int iv0 = blockIdx.x * blockDim.x + threadIdx.x;
        uint4 raw[CU];
        float wi[CU];
#pragma unroll
        for (int u = 0; u < CU; ++u) {
            const int iv = iv0 + u * stride;
            raw[u] = iv < items ? ld_cg_v4(yh + iv * V) : make_uint4(0, 0, 0, 0);
            wi[u] = iv < items ? ld_cg_f(wh + iv * V / dv) : 0.0f;
        }
        pdl_wait();
#pragma unroll
        for (int u = 0; u < CU; ++u) {
            const int iv = iv0 + u * stride;
            if (iv < items) combine_vec<T>(yh, shh, iv * V, raw[u], coef * wi[u], dv, b, gamma);
        }
        for (int iv = iv0 + CU * stride; iv < items; iv += stride) {
            const int idx = iv * V;
            combine_vec<T>(yh, shh, idx, *reinterpret_cast<const uint4*>(yh + idx), coef * wh[idx / dv], dv,
                           b, gamma);
        }
        return;
    }
    pdl_wait();
    for (int idx = blockIdx.x * blockDim.x + threadIdx.x; idx < total; idx += gridDim.x * blockDim.x) {
        const int i = idx / dv;
        const int c = idx - i * dv;
        const float si = shh[(i / b) * dv + c];
        yh[idx] = from_f<T>((1.0f - gamma) * (to_f(yh[idx]) + coef * wh[i] * si));
    }
}

#define COMBINE(T, S)                                                                       \
    extern "C" __global__ void combine_##S(const CombineParams p) {                          \
        combine<T>(static_cast<T*>(p.y), p.w, p.s, p.n, p.dv, p.b, p.m, p.gamma, p.coef);    \
    }
BLOCKRES_FOR_TYPES(COMBINE)
