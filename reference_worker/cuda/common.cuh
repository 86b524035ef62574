// Shared device helpers for the reference worker's kernels (loaded through NVRTC by
// cupy.RawModule, so no host headers: half <-> float goes through PTX cvt instructions).
#pragma once

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)

#ifndef CUDA_ON_CPU  // tests/cuda_on_cpu has its own for the CPU
__device__ __forceinline__ float half_to_float(u16 h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

__device__ __forceinline__ u16 float_to_half(float f) {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}
#endif

#ifndef PDL_ON_CPU  // tests/cuda_on_cpu runs kernels one after another and has no-op versions
// Programmatic dependent launch (PDL): kernels.py launches every kernel with it on sm_90 and later,
// so a kernel may start while the one before it on the stream still runs. Until
// wait_for_prerequisites returns, a kernel must neither read nor write any buffer another kernel
// writes or reads (read after write, write after read): only the immutable weights may be touched
// (prefetch_l2). Every kernel executes the wait, even one with nothing to read: one that finished
// before its predecessor would let its successor, which waits only for it, overtake both. Without
// a programmatic edge (or below sm_90) the wait returns at once.
__device__ __forceinline__ void wait_for_prerequisites() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

// Lets the next kernel on the stream start once every block of this one has called it or exited;
// that kernel's blocks then run up to their own wait. Called early (after the prefetches), except
// by the kernels that stage their weights in shared memory, which call it once their sums are
// done (matmul.cu's stage_inputs says why).
__device__ __forceinline__ void launch_dependents() {
#if __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;");
#endif
}

// Asks for the 128-byte lines holding bytes [p, p + n) to be brought into L2, the lines dealt out
// to `threads` threads of which this is `thread`: a hint that nothing waits for, issued before
// the wait so that a kernel's weight reads overlap its predecessor's tail.
__device__ __forceinline__ void prefetch_l2(const void* p, long long n, int thread, int threads) {
    const unsigned long long first = reinterpret_cast<unsigned long long>(p) & ~127ull;
    const unsigned long long end = reinterpret_cast<unsigned long long>(p) + n;
    for (unsigned long long line = first + 128ull * thread; line < end; line += 128ull * threads)
        asm volatile("prefetch.global.L2 [%0];" ::"l"(line));
}

// One 16-byte asynchronous copy (cp.async, through L2 only) from global to shared memory; both
// addresses 16-byte aligned. Waited for by stage_wait.
__device__ __forceinline__ void copy_async16(void* dst, const void* src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;"
                 ::"r"(static_cast<unsigned>(__cvta_generic_to_shared(dst))), "l"(src));
}

// Asynchronous copy (cp.async, through L2 only) of bytes [p, p + n) of global memory into shared
// memory at dst, in 16-byte pieces dealt to `threads` threads of which this is `thread`; returns
// where p's first byte lands. dst is 16-byte aligned and holds stage_bytes(n): the copy covers
// [p, p + n) widened to 16-byte boundaries (GGUF rows are only 2-byte aligned), and tensors in the
// weight arena start and end on 256-byte boundaries (arena.py), so the widening stays inside them.
// Nothing waits for it until stage_wait: a kernel issues its weights' copies before
// wait_for_prerequisites (they are immutable), so all of a row's loads are in flight at once.
__device__ __forceinline__ const u8* stage_async(u8* dst, const void* p, long long n, int thread, int threads) {
    const unsigned long long start = reinterpret_cast<unsigned long long>(p) & ~15ull;
    const unsigned long long end = (reinterpret_cast<unsigned long long>(p) + n + 15) & ~15ull;
    for (unsigned long long at = start + 16ull * thread; at < end; at += 16ull * threads)
        copy_async16(dst + (at - start), reinterpret_cast<const void*>(at));
    return dst + (reinterpret_cast<unsigned long long>(p) & 15);
}

// Waits for this thread's stage_async copies; a __syncthreads after it makes every thread's
// copies visible to the block.
__device__ __forceinline__ void stage_wait() { asm volatile("cp.async.wait_all;" ::: "memory"); }
#endif

// Shared memory a stage_async copy of n bytes takes (16-byte pieces, and one more where the
// source does not start on a 16-byte boundary); kernels.py's stage_bytes is the same.
__device__ __forceinline__ long long stage_bytes(long long n) { return (n + 31) / 16 * 16; }

// Little-endian fp16 at a 2-byte-aligned address.
__device__ __forceinline__ float load_half(const u8* p) {
    return half_to_float(*reinterpret_cast<const u16*>(p));
}

// RoPE: pair i of a head of head_dim values is the dimensions (i, i + head_dim/2) with neox
// (qwen2, phi3, gpt-oss), else (2i, 2i + 1) (llama); at position pos it turns by
// pos * base^(-2i/head_dim), or with a frequency table (YaRN, gpt-oss: ops_numpy.YaRN) by
// pos * freqs[i], cos and sin then scaled by `magnitude`.
// rope_pair gives pair i of the head x rotated: its dimensions a, b and their new values.
struct RopePair {
    int a, b;
    float va, vb;
};

__device__ __forceinline__ RopePair rope_pair(const float* x, int i, int head_dim, int pos, float base, int neox,
                                              const float* freqs = nullptr, float magnitude = 1.0f) {
    const int a = neox ? i : 2 * i, b = neox ? i + (head_dim >> 1) : 2 * i + 1;
    float s, c;
    sincosf((float)pos * (freqs ? freqs[i] : powf(base, -2.0f * (float)i / (float)head_dim)), &s, &c);
    s *= magnitude;
    c *= magnitude;
    const float x0 = x[a], x1 = x[b];
    return {a, b, x0 * c - x1 * s, x0 * s + x1 * c};
}

struct SumOp { __device__ __forceinline__ float operator()(float a, float b) const { return a + b; } };
struct MaxOp { __device__ __forceinline__ float operator()(float a, float b) const { return fmaxf(a, b); } };

template <typename Op>
__device__ __forceinline__ float warp_reduce(float v, Op op) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ __forceinline__ float warp_sum(float v) { return warp_reduce(v, SumOp()); }

// Reduction over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets
// the result. `identity` fills the lanes of warps the block does not have.
template <typename Op>
__device__ float block_reduce(float v, Op op, float identity) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_reduce(v, op);
    __syncthreads();
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : identity;
    return warp_reduce(v, op);
}

__device__ float block_sum(float v) { return block_reduce(v, SumOp(), 0.0f); }
__device__ float block_max(float v) { return block_reduce(v, MaxOp(), NEG_INF); }

// The slot of position p in a KV-cache layer of `capacity` slots: p itself in a full-attention
// layer (p < capacity), p mod capacity in a sliding-window layer's ring.
__device__ __forceinline__ int ring_slot(int p, int capacity) { return p < capacity ? p : p % capacity; }
