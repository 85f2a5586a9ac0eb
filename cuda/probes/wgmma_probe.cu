// wgmma probe (sm_90a): checks that we drive Hopper's warpgroup MMA (wgmma.mma_async) right,
// with the shared-memory layouts planned for a wgmma version of cuda/local_tc.cu, before any
// kernel relies on them. Standalone: CUDA runtime + inline PTX only (no CUTLASS/CuTe).
//
//   nvcc -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a cuda/probes/wgmma_probe.cu \
//        -o /tmp/wgmma_probe && /tmp/wgmma_probe
//
// One warpgroup (128 threads, warps 0-3) per case. bf16 inputs, f32 accumulate; references on
// the host in double from the same bf16 values. Cases:
//   logits_64x64, logits_64x128   S = Q·Kᵀ, Q 64×64, K N×64 (d = 64 contiguous), both operands
//                                 from shared memory, K-major, 128-byte swizzle, 4 k-steps.
//   logits_64x64_noswizzle        the same with the unswizzled ("interleave") layout of 8×16-byte
//                                 core matrices, to contrast. NB: a padded row-major tile (local_tc's
//                                 LD = DM + 8) has no wgmma descriptor: a core matrix's 8 rows must
//                                 be 16 contiguous bytes each, 128 bytes in all.
//   p_bf16_from_acc               P = bf16(S/64) packed from the accumulators (FA3's reuse of P).
//   dv_64x64_A_regs, dv_64x128_A_regs   Y = P·V, P the register A operand, V 64 keys × dv
//                                 (dv contiguous) read as MN-major B (imm-trans-b = 1), 128B swizzle;
//                                 dv = 128 is stored as two 64-column swizzled halves (tests LBO).
// The accumulators start as a poison value: scale-d = 0 on the first k-step must ignore them
// (kk > 0 is a constant after unrolling; the SASS shows ptxas passing RZ as the input instead).
// Exit status 0 only when every case passes. Host code is hidden from NVRTC (__CUDACC_RTC__) so
// the kernels can be compile-checked for sm_90a without a GPU.
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
struct __align__(16) U4 { u32 x, y, z, w; };

#define POISON 1.0e30f

__device__ __forceinline__ u32 smem_u32(const void* p) {
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
}
__device__ __forceinline__ void st_shared16(u32 addr, U4 v) {
    asm volatile("st.shared.v4.b32 [%0], {%1,%2,%3,%4};" ::"r"(addr), "r"(v.x), "r"(v.y), "r"(v.z),
                 "r"(v.w)
                 : "memory");
}

// Byte offset of the 16-byte chunk c (elements 8c..8c+7) of row r in a tile of `rows` rows.
// SW128 (layout 0): rows of 64 bf16 = 128 bytes; the chunk index is XORed with r % 8 (CuTe's
//   Swizzle<3,4,3>: address bits [4,7) ^= bits [7,10), so the tile base must be 1024-aligned).
//   Wider rows (V with dv = 128) are split into 64-column halves, each a rows × 128 B SW128 tile.
// INTERLEAVE (layout 1, 64 columns): core matrix (r / 8, c) = 8 rows × 16 B contiguous; the 8 core
//   matrices of a k-chunk c are adjacent (stride 128 B = SBO), k-chunks `rows`·16 B apart (LBO).
__device__ __forceinline__ u32 tile_off(int layout, int r, int c, int rows) {
    if (layout == 0) return (c >> 3) * rows * 128 + r * 128 + (((c & 7) ^ (r & 7)) << 4);
    return c * rows * 16 + r * 16;
}
// Global row-major rows × cols bf16 tile → shared memory, ordinary (generic-proxy) stores.
__device__ void load_tile(u32 base, const u16* g, int rows, int cols, int layout) {
    const U4* src = reinterpret_cast<const U4*>(g);
    for (int i = threadIdx.x; i < rows * cols / 8; i += 128)
        st_shared16(base + tile_off(layout, i / (cols / 8), i % (cols / 8), rows), src[i]);
}

// Matrix descriptor (PTX ISA "Matrix Descriptor Format" for wgmma; CuTe GmmaDescriptor in
// include/cute/arch/mma_sm90_desc.hpp): bits 0-13 start address >> 4, 16-29 leading dimension
// byte offset >> 4, 32-45 stride dimension byte offset >> 4, 49-51 base offset (0 here: every
// tile base is 1024-aligned and the k-step advances keep address bits 7-9 at 0), 62-63 swizzle
// (0 none, 1 = 128B, 2 = 64B, 3 = 32B).
__device__ __forceinline__ u64 make_desc(u32 addr, u32 lbo, u32 sbo, u32 swz) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)((lbo >> 4) & 0x3FFF) << 16) |
           ((u64)((sbo >> 4) & 0x3FFF) << 32) | ((u64)swz << 62);
}

__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wg_wait0() { asm volatile("wgmma.wait_group.sync.aligned 0;" ::: "memory"); }
// The accumulators are written asynchronously: after wait_group, an empty asm that "rewrites"
// them keeps the compiler from reading them before the wait (CuTe's warpgroup_fence_operand).
template <int R>
__device__ __forceinline__ void fence_regs(float (&d)[R]) {
#pragma unroll
    for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}

#define F8(d, i) "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
                 "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define F32(d, i) F8(d, i), F8(d, i + 8), F8(d, i + 16), F8(d, i + 24)
#define D32 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
            "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define D64 "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15," \
            "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31," \
            "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47," \
            "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"
// D (+)= A·B, both from shared memory: operands d, a-desc, b-desc, scale-d (predicate: 0 = ignore
// D), imm-scale-a = 1, imm-scale-b = 1, imm-trans-a = 0, imm-trans-b = 0 (both K-major).
__device__ __forceinline__ void wg_ss(float (&d)[32], u64 da, u64 db, int scale_d) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %34, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " D32 ", %32, %33, p, 1, 1, 0, 0; }"
                 : F32(d, 0) : "l"(da), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_ss(float (&d)[64], u64 da, u64 db, int scale_d) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " D64 ", %64, %65, p, 1, 1, 0, 0; }"
                 : F32(d, 0), F32(d, 32) : "l"(da), "l"(db), "r"(scale_d));
}
// D (+)= A·B, A from registers (4 × bf16x2 per thread), B from shared memory, MN-major:
// operands d, {a}, b-desc, scale-d, imm-scale-a = 1, imm-scale-b = 1, imm-trans-b = 1 (the
// register-A form has no imm-trans-a).
__device__ __forceinline__ void wg_rs(float (&d)[32], const u32 (&a)[4], u64 db, int scale_d) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %37, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " D32 ", {%32,%33,%34,%35}, %36, p, 1, 1, 1; }"
                 : F32(d, 0) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}
__device__ __forceinline__ void wg_rs(float (&d)[64], const u32 (&a)[4], u64 db, int scale_d) {
    asm volatile("{ .reg .pred p; setp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " D64 ", {%64,%65,%66,%67}, %68, p, 1, 1, 1; }"
                 : F32(d, 0), F32(d, 32) : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(scale_d));
}

// S = Q·Kᵀ for a 64×64 Q tile at qs and an N×64 K tile at ks (layout 0 or 1, see tile_off).
// K-step kk covers d = 16kk..16kk+15 = 32 bytes of each row.
// SW128 K-major: LBO unused (encoded 1, CuTe's convention: "Unused for all SWIZZLE_* layouts (and
//   assumed to be 1)"), SBO = 1024 B between 8-row groups; the k-step moves the start address by
//   32 B inside the swizzled row; the hardware applies the XOR to the final address, the way
//   CUTLASS/DeepGEMM advance the descriptor.
// INTERLEAVE K-major (CuTe: ((8,n),2):((1,SBO),LBO) in 16-byte units): SBO = 128 B between 8-row
//   groups, LBO = rows·16 B between the two k-chunks of a k-step; the k-step moves 2·LBO.
// The layout is a template parameter: a run-time choice of descriptors inside the k-loop made
// ptxas serialize the wgmmas (info C7519, one arrive + wait per k-step).
template <int N, int layout>
__device__ __forceinline__ void qk(float (&d)[N / 2], u32 qs, u32 ks) {
#pragma unroll
    for (int i = 0; i < N / 2; i++) d[i] = POISON;
    wg_fence();  // before the first wgmma, after the threads' own writes of d
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
        u64 da, db;
        if constexpr (layout == 0) {
            da = make_desc(qs + 32 * kk, 16, 1024, 1);
            db = make_desc(ks + 32 * kk, 16, 1024, 1);
        } else {
            da = make_desc(qs + kk * 2 * (64 * 16), 64 * 16, 128, 0);
            db = make_desc(ks + kk * 2 * (N * 16), N * 16, 128, 0);
        }
        wg_ss(d, da, db, kk > 0);
    }
    wg_commit();
    wg_wait0();
    fence_regs(d);
}

// Accumulator layout of m64nNk16 f32 (PTX ISA "Matrix fragments for wgmma .m64nNk16"; CuTe
// CLayout_64xN = ((4,8,4),(2,2,N/8)):((128,1,16),(64,8,512)), column-major 64×N): thread
// 32w + lane holds N/2 floats, d[j] at row 16w + lane/4 + 8·((j/2)%2), col 8·(j/4) + 2·(lane%4) + j%2.
template <int N>
__device__ __forceinline__ void store_acc(const float (&d)[N / 2], float* out) {
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int j = 0; j < N / 2; j++)
        out[(16 * w + (lane >> 2) + 8 * ((j >> 1) & 1)) * N + 8 * (j >> 2) + 2 * (lane & 3) + (j & 1)] = d[j];
}

// Cases logits_*: S (64×N f32, row-major) = Q·Kᵀ.
template <int N, int layout>
__global__ void __launch_bounds__(128) logits_kernel(const u16* q, const u16* k, float* s) {
    __shared__ __align__(1024) unsigned char raw[1024 + 64 * 128 + N * 128];
    const u32 qs = (smem_u32(raw) + 1023) & ~1023u, ks = qs + 64 * 128;  // 1024-aligned either way
    load_tile(qs, q, 64, 64, layout);
    load_tile(ks, k, N, 64, layout);
    // Generic-proxy stores → visible to the async proxy (wgmma reads), then to every thread.
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    float d[N / 2];
    qk<N, layout>(d, qs, ks);
    store_acc<N>(d, s);
}

// Cases p_bf16_from_acc, dv_*: S = Q·Kᵀ (64 keys), P = bf16(S/64), Y (64×N) = P·V, V 64 × N.
// P's A fragment for k-step kk (keys 16kk..16kk+15) is the accumulators of those columns:
// register r = {d[8kk+2r] (low half), d[8kk+2r+1] (high)}, i.e. row 16w + g + 8(r%2),
// cols 16kk + 8(r/2) + 2t, +1 (g = lane/4, t = lane%4): the A layout of m64nNk16 (CuTe
// ALayout_64x16 = CLayout_64x16), as FA3 reuses P.
// V as MN-major B, as FA3 does for 16-bit types (MmaMajorV = GMMA::Major::MN in
// hopper/mainloop_fwd_sm90_tma_gmma_ws.hpp), SW128 (CuTe make_gmma_desc<Major::MN>:
// ((8,n),(8,k)):((1,LBO),(8,SBO)) in 16-byte units): each key row is 64 dv = 128 B swizzled like Q/K rows; SBO = 1024 B between
// 8-key groups; LBO = 64·128 B between 64-column halves (only read when N > 64); the k-step
// (16 keys) moves the start by 2048 B.
template <int N>
__global__ void __launch_bounds__(128) pv_kernel(const u16* q, const u16* k, const u16* v, u16* p, float* y) {
    __shared__ __align__(1024) unsigned char raw[1024 + 2 * 64 * 128 + 64 * N * 2];
    const u32 qs = (smem_u32(raw) + 1023) & ~1023u, ks = qs + 64 * 128, vs = ks + 64 * 128;
    load_tile(qs, q, 64, 64, 0);
    load_tile(ks, k, 64, 64, 0);
    load_tile(vs, v, 64, N, 0);
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    __syncthreads();
    float s[32];
    qk<64, 0>(s, qs, ks);
    const int w = threadIdx.x >> 5, g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
    u32 a[4][4];
#pragma unroll
    for (int kk = 0; kk < 4; kk++)
#pragma unroll
        for (int r = 0; r < 4; r++) {
            // cvt.rn.bf16x2.f32 d, hi, lo: the first source goes to the upper half.
            asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(a[kk][r])
                : "f"(s[8 * kk + 2 * r + 1] * (1.f / 64)), "f"(s[8 * kk + 2 * r] * (1.f / 64)));
            *reinterpret_cast<u32*>(p + (16 * w + g + 8 * (r & 1)) * 64 + 16 * kk + 8 * (r >> 1) + 2 * t) = a[kk][r];
        }
    float d[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; i++) d[i] = POISON;
    wg_fence();  // the A registers and d were written by the threads
#pragma unroll
    for (int kk = 0; kk < 4; kk++) wg_rs(d, a[kk], make_desc(vs + kk * 16 * 128, 64 * 128, 1024, 1), kk > 0);
    wg_commit();
    wg_wait0();
    fence_regs(d);
    store_acc<N>(d, y);
}

// Explicit instantiations, so NVRTC (no host code) compiles every kernel the host launches.
template __global__ void logits_kernel<64, 0>(const u16*, const u16*, float*);
template __global__ void logits_kernel<128, 0>(const u16*, const u16*, float*);
template __global__ void logits_kernel<64, 1>(const u16*, const u16*, float*);
template __global__ void pv_kernel<64>(const u16*, const u16*, const u16*, u16*, float*);
template __global__ void pv_kernel<128>(const u16*, const u16*, const u16*, u16*, float*);

#ifndef __CUDACC_RTC__
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <vector>

static int g_fail = 0;
#define CK(x)                                                                                \
    do {                                                                                     \
        cudaError_t e_ = (x);                                                                \
        if (e_ != cudaSuccess) {                                                             \
            printf("CUDA error %s at %s:%d (%s)\nSOME FAIL\n", cudaGetErrorString(e_), __FILE__, \
                   __LINE__, #x);                                                            \
            exit(2);                                                                         \
        }                                                                                    \
    } while (0)

static u64 g_seed = 0x2545F4914F6CDD1DULL;
static float bf2f(u16 b) { u32 u = (u32)b << 16; float f; memcpy(&f, &u, 4); return f; }
static u16 f2bf(float f) {  // round to nearest even (inputs are finite)
    u32 u; memcpy(&u, &f, 4);
    return (u16)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}
// Fixed-seed LCG (Knuth's MMIX constants), uniform in [-1, 1), rounded to bf16.
static std::vector<u16> rand_bf16(int n) {
    std::vector<u16> v(n);
    for (auto& x : v) {
        g_seed = g_seed * 6364136223846793005ULL + 1442695040888963407ULL;
        x = f2bf((float)((double)(g_seed >> 40) / (double)(1ULL << 23) - 1.0));
    }
    return v;
}
template <class T> static T* dev_copy(const std::vector<T>& h) {
    T* d; CK(cudaMalloc(&d, h.size() * sizeof(T)));
    CK(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
    return d;
}
template <class T> static std::vector<T> host_copy(const T* d, size_t n) {
    std::vector<T> h(n);
    CK(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
}
// ref[i·n + j] = Σ_c a(i, c)·b(c, j) in double; scale = the largest Σ_c |a||b| (for the tolerance).
template <class FA, class FB>
static std::vector<double> ref_mm(int m, int n, int kd, FA a, FB b, double& scale) {
    std::vector<double> r(m * n);
    scale = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0, sa = 0;
            for (int c = 0; c < kd; c++) s += a(i, c) * b(c, j), sa += fabs(a(i, c) * b(c, j));
            r[i * n + j] = s;
            scale = fmax(scale, sa);
        }
    return r;
}
// One CASE line; NaN or inf on the device count as failures. Prints the first bad element.
template <class F>
static void report(const char* name, const std::vector<double>& ref, F dev, int n, double tol) {
    double err = 0;
    int bad = -1;
    for (size_t i = 0; i < ref.size(); i++) {
        double e = fabs((double)dev(i) - ref[i]);
        if (!(e <= tol) && bad < 0) bad = (int)i;
        err = (e == e) ? fmax(err, e) : INFINITY;
    }
    bool pass = err <= tol;
    printf("CASE %s: max_abs_err %.3g (tol %.3g) %s\n", name, err, tol, pass ? "PASS" : "FAIL");
    if (!pass) {
        printf("  first bad (row %d, col %d): device %.6g, reference %.6g\n", bad / n, bad % n,
               (double)dev(bad), ref[bad]);
        g_fail++;
    }
}

template <int N, int L>
static void run_logits(const char* name) {
    auto q = rand_bf16(64 * 64), k = rand_bf16(N * 64);
    u16 *dq = dev_copy(q), *dk = dev_copy(k);
    float* ds; CK(cudaMalloc(&ds, 64 * N * sizeof(float)));
    logits_kernel<N, L><<<1, 128>>>(dq, dk, ds);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    auto s = host_copy(ds, 64 * N);
    double scale;
    auto ref = ref_mm(64, N, 64, [&](int i, int c) { return (double)bf2f(q[i * 64 + c]); },
                      [&](int c, int j) { return (double)bf2f(k[j * 64 + c]); }, scale);
    report(name, ref, [&](size_t i) { return s[i]; }, N, 1e-3 * scale);
    cudaFree(dq); cudaFree(dk); cudaFree(ds);
}

template <int N>
static void run_pv(const char* name, bool check_p) {
    auto q = rand_bf16(64 * 64), k = rand_bf16(64 * 64), v = rand_bf16(64 * N);
    u16 *dq = dev_copy(q), *dk = dev_copy(k), *dv = dev_copy(v), *dp;
    float* dy;
    CK(cudaMalloc(&dp, 64 * 64 * sizeof(u16)));
    CK(cudaMalloc(&dy, 64 * N * sizeof(float)));
    pv_kernel<N><<<1, 128>>>(dq, dk, dv, dp, dy);
    CK(cudaGetLastError());
    CK(cudaDeviceSynchronize());
    auto p = host_copy(dp, 64 * 64);
    auto y = host_copy(dy, 64 * N);
    double scale;
    if (check_p) {  // P against S/64 in double: bf16 rounding (2^-9 relative) plus S's own error
        auto sref = ref_mm(64, 64, 64, [&](int i, int c) { return (double)bf2f(q[i * 64 + c]); },
                           [&](int c, int j) { return (double)bf2f(k[j * 64 + c]); }, scale);
        double mx = 0;
        for (auto& x : sref) x /= 64, mx = fmax(mx, fabs(x));
        report("p_bf16_from_acc", sref, [&](size_t i) { return bf2f(p[i]); }, 64,
               mx / 256 + 1e-3 * scale / 64);
    }
    // Y against the device's own P (exactly the bf16 values it fed to the MMA) times V.
    auto ref = ref_mm(64, N, 64, [&](int i, int c) { return (double)bf2f(p[i * 64 + c]); },
                      [&](int c, int j) { return (double)bf2f(v[c * N + j]); }, scale);
    report(name, ref, [&](size_t i) { return y[i]; }, N, 1e-3 * scale);
    cudaFree(dq); cudaFree(dk); cudaFree(dv); cudaFree(dp); cudaFree(dy);
}

int main() {
    cudaDeviceProp prop;
    CK(cudaGetDeviceProperties(&prop, 0));
    printf("device: %s (sm_%d%d)\n", prop.name, prop.major, prop.minor);
    if (prop.major != 9 || prop.minor != 0) printf("warning: wgmma needs sm_90a (H100/H200)\n");
    run_logits<64, 0>("logits_64x64");
    run_logits<128, 0>("logits_64x128");
    run_logits<64, 1>("logits_64x64_noswizzle");
    run_pv<64>("dv_64x64_A_regs", true);
    run_pv<128>("dv_64x128_A_regs", false);
    printf(g_fail ? "SOME FAIL\n" : "ALL PASS\n");
    return g_fail ? 1 : 0;
}
#endif
