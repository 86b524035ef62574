// Just enough of CUDA to run the kernels of sampling.cu, attention.cu, moe.cu and the tensor-core
// GEMM on one CPU thread, for machines without a GPU: each CUDA thread is a ucontext fiber that runs
// until it waits at a barrier (a block's
// __syncthreads, or a warp's shuffle), blocks run one after another from the last (a schedule
// a GPU may pick; backwards, so that nothing passes by leaning on ids arriving in order), threads
// from the last too, __shared__ variables are function statics, atomics are plain updates.
// It checks a kernel's logic, not its races or memory ordering.
#pragma once
#include <ucontext.h>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned x = 1, unsigned y = 1, unsigned z = 1) : x(x), y(y), z(z) {}
};
inline dim3 threadIdx, blockIdx, blockDim, gridDim;
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(x)
#define __restrict__
#define __shared__ static
#define asm(...)
using std::min; using std::max;
#define __align__(n) __attribute__((aligned(n)))
struct float2 { float x, y; };
struct float4 { float x, y, z, w; };
struct uint2 { unsigned x, y; };
struct uint4 { unsigned x, y, z, w; };
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
struct Fiber { ucontext_t ctx; int waiting = 0; bool done = false; };
inline ucontext_t scheduler;
inline std::vector<Fiber> fibers;
inline std::vector<char> stacks;
inline int current;
constexpr size_t STACK = 256 * 1024;
inline void wait_at(int kind) { fibers[current].waiting = kind; swapcontext(&fibers[current].ctx, &scheduler); }
inline void __syncthreads() { wait_at(1); }
inline void warp_sync() { wait_at(2); }
inline void __threadfence() {}
// Kernels run one after another here: programmatic dependent launch and L2 prefetches (common.cuh)
// have nothing to do.
#define PDL_ON_CPU
inline void wait_for_prerequisites() {}
inline void launch_dependents() {}
inline void prefetch_l2(const void*, long long, int, int) {}
// stage_async's copy lands at once (the first thread copies; the block's others return the same place).
inline const unsigned char* stage_async(unsigned char* dst, const void* p, long long n, int thread, int) {
    unsigned char* at = dst + (reinterpret_cast<unsigned long long>(p) & 15);
    if (thread == 0) std::memcpy(at, p, n);
    return at;
}
inline void copy_async16(void* dst, const void* src) { std::memcpy(dst, src, 16); }
inline void stage_wait() {}
inline unsigned long long shuffle_buf[32][32];
template <class T> T shfl_from(T v, int src) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    std::memcpy(&shuffle_buf[warp][lane], &v, sizeof(T));
    warp_sync();
    T out; std::memcpy(&out, &shuffle_buf[warp][src], sizeof(T));
    warp_sync();
    return out;
}
template <class T> T __shfl_xor_sync(unsigned, T v, int o) { return shfl_from(v, (threadIdx.x & 31) ^ o); }
template <class T> T __shfl_up_sync(unsigned, T v, int d) { const int l = threadIdx.x & 31; return shfl_from(v, l >= d ? l - d : l); }
template <class T> T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
inline unsigned atomicInc(unsigned* p, unsigned val) { unsigned o = *p; *p = o >= val ? 0 : o + 1; return o; }
inline int atomicMin(int* p, int v) { int o = *p; if (v < o) *p = v; return o; }
inline int atomicMax(int* p, int v) { int o = *p; if (v > o) *p = v; return o; }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
inline float __uint_as_float(unsigned i) { float f; std::memcpy(&f, &i, 4); return f; }
inline unsigned __float_as_uint(float f) { unsigned i; std::memcpy(&i, &f, 4); return i; }
// PRMT's default mode: byte i of the result is byte (s >> 4i) & 7 of y:x (the sign-replicating
// selectors, bit 3, are not emulated).
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const unsigned long long v = (unsigned long long)y << 32 | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)(v >> (8 * ((s >> (4 * i)) & 7)) & 0xFF) << (8 * i);
    return r;
}
inline double __longlong_as_double(long long i) { double d; std::memcpy(&d, &i, 8); return d; }
inline float __expf(float x) { return expf(x); }
inline float __logf(float x) { return logf(x); }
template <class T> T __ldcg(const T* p) { return *p; }
inline void (*fiber_body)(void*);
inline void* fiber_arg;
inline void fiber_entry() { fiber_body(fiber_arg); fibers[current].done = true; swapcontext(&fibers[current].ctx, &scheduler); }
template <class F> void launch(dim3 grid, int block, F kernel) {
    gridDim = grid; blockDim.x = block;
    if (stacks.size() < block * STACK) stacks.resize(block * STACK);
    fiber_body = [](void* k) { (*static_cast<F*>(k))(); };
    fiber_arg = &kernel;
    for (int b = (int)(grid.x * grid.y * grid.z) - 1; b >= 0; --b) {
        blockIdx.x = b % grid.x; blockIdx.y = b / grid.x % grid.y; blockIdx.z = b / (grid.x * grid.y);
        fibers.assign(block, Fiber());
        for (int t = 0; t < block; ++t) {
            getcontext(&fibers[t].ctx);
            fibers[t].ctx.uc_stack.ss_sp = &stacks[t * STACK];
            fibers[t].ctx.uc_stack.ss_size = STACK;
            fibers[t].ctx.uc_link = nullptr;
            makecontext(&fibers[t].ctx, fiber_entry, 0);
        }
        for (;;) {
            bool ran = false, all_done = true;
            for (int t = block - 1; t >= 0; --t) {
                if (fibers[t].done) continue;
                all_done = false;
                if (fibers[t].waiting) continue;
                current = t; threadIdx.x = t; ran = true;
                swapcontext(&scheduler, &fibers[t].ctx);
            }
            if (all_done) break;
            // a block barrier opens when every live thread waits at it; a warp's when its 32 lanes do
            bool block_open = true;
            for (auto& f : fibers) if (!f.done && f.waiting != 1) block_open = false;
            bool released = false;
            if (block_open) { for (auto& f : fibers) f.waiting = 0; released = true; }
            for (int w = 0; w < block / 32; ++w) {
                bool open = true;
                for (int l = 0; l < 32; ++l) if (fibers[w * 32 + l].waiting != 2) open = false;
                if (open) { for (int l = 0; l < 32; ++l) fibers[w * 32 + l].waiting = 0; released = true; }
            }
            if (!ran && !released) { fprintf(stderr, "deadlock in block %d\n", b); abort(); }
        }
    }
}
