// SPEC §2 step 7: Y_I = (1−γ)·(P_I + γ·w_I ⊗ s_I), in place over y (which holds P).
// One thread per element; rows of a block share s_I.
#include "common.cuh"

template <class T>
__device__ void combine(T* __restrict__ y, const float* __restrict__ w,
                        const float* __restrict__ s, long long total, int n, int dv, int b,
                        int m, float gamma) {
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (long long)gridDim.x * blockDim.x) {
        const long long row = idx / dv;  // bh·n + i
        const int c = (int)(idx - row * dv);
        const long long bh = row / n;
        const int i = (int)(row - bh * n);
        const float si = s[(bh * m + i / b) * dv + c];
        const float p = to_f(y[idx]);
        y[idx] = from_f<T>((1.0f - gamma) * (p + gamma * w[row] * si));
    }
}

#define COMBINE(T, S)                                                                       \
    extern "C" __global__ void combine_##S(T* y, const float* w, const float* s,           \
                                           long long total, int n, int dv, int b, int m,   \
                                           float gamma) {                                  \
        combine<T>(y, w, s, total, n, dv, b, m, gamma);                                    \
    }
BLOCKRES_FOR_TYPES(COMBINE)
