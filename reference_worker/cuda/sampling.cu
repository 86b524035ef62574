// Token selection on the GPU: only the chosen id crosses to the host. Parameters live in
// device memory so that one captured decode graph serves every request.
//   fparams: temperature, top_p, min_p, repetition_penalty
//   iparams: top_k, seed low 32 bits, seed high 32 bits
// Order (as sampler.py, llama.cpp's): repetition penalty, top-k, top-p, min-p on the untempered
// distribution, then temperature and a draw from what is left. Temperature 0 is greedy: argmax
// of the penalised logits, lowest id on ties. Ties at a top-k or top-p boundary are all kept.
#include "common.cuh"

#define SAMPLE_THREADS 1024

// Order-preserving map of a float onto unsigned ints (larger float, larger key).
__device__ __forceinline__ u32 order_key(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// The warp's largest value and its index, lowest index on ties, in every lane.
__device__ __forceinline__ void warp_argmax(float& bv, int& bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, bv, o);
        const int i = __shfl_xor_sync(0xffffffffu, bi, o);
        if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
    }
}

__device__ void block_argmax(const float* x, int n, int* out) {
    __shared__ float sv[32];
    __shared__ int si[32];
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    // 16-byte loads where x is aligned for them (more bytes in flight per thread); each thread
    // meets its indices in increasing order, so a strict > keeps the lowest index of a tie.
    const int n4 = (reinterpret_cast<unsigned long long>(x) & 15) == 0 ? n >> 2 : 0;
    for (int i = threadIdx.x; i < n4; i += blockDim.x) {
        const float4 v = reinterpret_cast<const float4*>(x)[i];
        if (v.x > bv) { bv = v.x; bi = 4 * i; }
        if (v.y > bv) { bv = v.y; bi = 4 * i + 1; }
        if (v.z > bv) { bv = v.z; bi = 4 * i + 2; }
        if (v.w > bv) { bv = v.w; bi = 4 * i + 3; }
    }
    for (int i = 4 * n4 + threadIdx.x; i < n; i += blockDim.x) {
        const float v = x[i];
        if (v > bv) { bv = v; bi = i; }
    }
    warp_argmax(bv, bi);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    if (warp == 0) {
        bv = lane < (int)(blockDim.x >> 5) ? sv[lane] : NEG_INF;
        bi = lane < (int)(blockDim.x >> 5) ? si[lane] : 0x7fffffff;
        warp_argmax(bv, bi);
        if (lane == 0) *out = bi == 0x7fffffff ? 0 : bi;
    }
}

extern "C" __global__ void argmax(const float* __restrict__ x, int n, int* __restrict__ out) {
    block_argmax(x, n, out);
}

// mask[id] = 1 for each of the first count[0] ids: marks tokens already seen.
extern "C" __global__ void mark_tokens(const int* __restrict__ ids, const int* __restrict__ count, int capacity,
                                       int* __restrict__ mask, int n_vocab) {
    const int n = min(count[0], capacity);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
        const int id = ids[i];
        if (id >= 0 && id < n_vocab) mask[id] = 1;
    }
}

// Repetition penalty on marked tokens (positive logits divided, negative multiplied),
// clearing the mask for the next step. A no-op where the penalty is 1.
extern "C" __global__ void apply_penalty(float* __restrict__ logits, int* __restrict__ mask, int n,
                                         const float* __restrict__ fparams) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n || !mask[i]) return;
    mask[i] = 0;
    const float penalty = fparams[3], l = logits[i];
    if (penalty != 1.0f) logits[i] = l > 0.0f ? l / penalty : l * penalty;
}

__device__ __forceinline__ unsigned long long splitmix64(unsigned long long x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

// Weight of token i kept by threshold key `keep`: exp((l - max) / T), or 0.
__device__ __forceinline__ float kept_weight(float l, u32 keep, float mx, float inv_t) {
    return order_key(l) >= keep ? __expf((l - mx) * inv_t) : 0.0f;
}

// The search below finds the largest key K (an order_key) for which a monotone block-wide
// quantity still reaches a target, four bits per pass over the logits: each pass tries the 15
// candidates that extend the bits found so far, all in one read of the data.
#define RADIX_CANDIDATES 15

// Sums v[0..14] over the block; every thread gets the totals in `out`.
__device__ void block_sum15(float v[RADIX_CANDIDATES], float out[RADIX_CANDIDATES]) {
    __shared__ float partial[32][RADIX_CANDIDATES];
    __shared__ float total[RADIX_CANDIDATES];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
    for (int j = 0; j < RADIX_CANDIDATES; ++j) {
        const float s = warp_sum(v[j]);
        if (lane == 0) partial[warp][j] = s;
    }
    __syncthreads();
    if (threadIdx.x < RADIX_CANDIDATES) {
        float s = 0.0f;
        for (int w = 0; w < warps; ++w) s += partial[w][threadIdx.x];
        total[threadIdx.x] = s;
    }
    __syncthreads();
#pragma unroll
    for (int j = 0; j < RADIX_CANDIDATES; ++j) out[j] = total[j];
    __syncthreads();
}

// Largest K with sum over tokens of key >= max(K, floor) of weight(token) >= target, where the
// weight is 1 (count) or the token's probability weight exp(l - mx) (mass).
template <bool MASS>
__device__ u32 largest_key(const float* x, int n, u32 floor, float mx, float target) {
    u32 key = 0;
    for (int shift = 28; shift >= 0; shift -= 4) {
        float acc[RADIX_CANDIDATES];
#pragma unroll
        for (int j = 0; j < RADIX_CANDIDATES; ++j) acc[j] = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) {
            const u32 k = order_key(x[i]);
            if (k < floor) continue;
            const float w = MASS ? __expf(x[i] - mx) : 1.0f;
#pragma unroll
            for (int j = 0; j < RADIX_CANDIDATES; ++j) acc[j] += k >= (key | ((u32)(j + 1) << shift)) ? w : 0.0f;
        }
        float total[RADIX_CANDIDATES];
        block_sum15(acc, total);
        u32 step = 0;
#pragma unroll
        for (int j = 0; j < RADIX_CANDIDATES; ++j)
            if (total[j] >= target) step = j + 1;
        key |= step << shift;
    }
    return max(key, floor);
}

// Writes the chosen token id to state[1]; the draw is seeded by (seed, state[0] = position).
extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample(const float* __restrict__ x, int n, const float* __restrict__ fparams,
       const unsigned int* __restrict__ iparams, int* __restrict__ state) {
    const float temperature = fparams[0], top_p = fparams[1], min_p = fparams[2];
    if (temperature <= 0.0f) {
        block_argmax(x, n, state + 1);
        return;
    }
    const int top_k = (int)iparams[0];
    const float inv_t = 1.0f / temperature;
    const float mx = block_max([&] {
        float v = NEG_INF;
        for (int i = threadIdx.x; i < n; i += blockDim.x) v = fmaxf(v, x[i]);
        return v;
    }());
    u32 keep = 0;
    if (top_k > 0 && top_k < n) keep = largest_key<false>(x, n, 0, mx, (float)top_k);
    if (top_p < 1.0f) {
        float z = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) z += kept_weight(x[i], keep, mx, 1.0f);
        keep = largest_key<true>(x, n, keep, mx, top_p * block_sum(z));
    }
    if (min_p > 0.0f) keep = max(keep, order_key(mx + __logf(min_p)));

    // Each thread owns one contiguous chunk; a block-wide exclusive scan of the chunk masses
    // finds the chunk holding the drawn point, whose owner walks it.
    const int chunk = (n + blockDim.x - 1) / blockDim.x;
    const int lo = threadIdx.x * chunk, hi = min(n, lo + chunk);
    float mass = 0.0f;
    for (int i = lo; i < hi; ++i) mass += kept_weight(x[i], keep, mx, inv_t);
    __shared__ float prefix[SAMPLE_THREADS];
    prefix[threadIdx.x] = mass;
    __syncthreads();
    for (int o = 1; o < (int)blockDim.x; o <<= 1) {
        const float add = threadIdx.x >= (unsigned)o ? prefix[threadIdx.x - o] : 0.0f;
        __syncthreads();
        prefix[threadIdx.x] += add;
        __syncthreads();
    }
    const float total = prefix[blockDim.x - 1];
    const unsigned long long seed = ((unsigned long long)iparams[2] << 32) | iparams[1];
    const float u = (float)(splitmix64(seed ^ splitmix64((unsigned long long)state[0])) >> 40) * (1.0f / 16777216.0f);
    const float target = u * total;
    const float start = prefix[threadIdx.x] - mass;
    // The pick meets in shared memory, not in `state`: a restrict pointer lets the compiler keep
    // a thread's own earlier store to state[1] across the barrier, so threads would disagree on
    // whether to take the fallback below and split around its barriers and shuffles.
    __shared__ int chosen;
    if (threadIdx.x == 0) chosen = 0x7fffffff;
    __syncthreads();
    if (mass > 0.0f && target >= start && target < start + mass) {
        float run = start;
        int pick = -1;
        for (int i = lo; i < hi; ++i) {
            const float w = kept_weight(x[i], keep, mx, inv_t);
            if (w > 0.0f) { pick = i; run += w; if (run > target) break; }
        }
        atomicMin(&chosen, pick);  // rounding can let two chunks claim the point: the lower wins, every run
    }
    __syncthreads();
    if (chosen == 0x7fffffff) block_argmax(x, n, state + 1);  // rounding left the draw past the last chunk
    else if (threadIdx.x == 0) state[1] = chosen;
}

// The end of a decode step: history[state[2]++] = state[1]; state[0] += 1.
extern "C" __global__ void commit_token(int* state, int* history, int capacity) {
    if (state[2] < capacity) history[state[2]] = state[1];
    state[2] += 1;
    state[0] += 1;
}
