// Token selection on the GPU: only the chosen id crosses to the host. Parameters live in
// device memory so that one captured decode graph serves every request.
//   fparams: temperature, top_p, min_p, repetition_penalty
//   iparams: top_k, seed low 32 bits, seed high 32 bits
// Order (as sampler.py, llama.cpp's): repetition penalty, top-k, top-p, min-p on the untempered
// distribution, then temperature and a draw from what is left. Temperature 0 is greedy: argmax
// of the penalised logits, lowest id on ties. Ties at the top-k boundary are all kept; top-p
// keeps the shortest prefix of the tokens ordered by logit, then id, as NumPy's stable sort.
//
// A draw is four launches with one argument list (kernels.sample), no host sync between them:
//   sample_select  (SELECT_BLOCKS blocks) max and argmax; greedy ends here. For top-k (or top-p
//                  alone) a histogram of the keys' top 12 bits finds the bin holding the
//                  need-th largest logit (need = top_k, or SAMPLE_CANDIDATES for top-p alone);
//   sample_refine  (SELECT_BLOCKS blocks) where that bin holds too many keys, a histogram of
//                  the next 12 bits inside it;
//   sample_gather  (SELECT_BLOCKS blocks) the candidates (keys from the threshold up, at most
//                  SAMPLE_CANDIDATES) into a list, and per-block sums of exp(l - max);
//   sample_pick    (one block) sorts the candidates and applies top-k, top-p, min-p and the
//                  draw to them in sampler.py's order, or draws over the whole vocabulary when
//                  only temperature and min-p are set.
// Where the candidates cannot hold the answer (top_k above SAMPLE_CANDIDATES, a top-p set larger
// than it, ties past it) sample_pick runs the exact search over every logit (`sample_exact`,
// slow but complete). Each step of the cross-block sums runs in a fixed order and integer
// atomics count, so a seed gives the same token every run (M0-W-1826).
#include "common.cuh"

#define SAMPLE_THREADS 1024

// Order-preserving map of a float onto unsigned ints (larger float, larger key).
__device__ __forceinline__ u32 order_key(float f) {
    const u32 b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// NaN is never chosen and +inf counts as the largest finite logit, as sampler.py.
__device__ __forceinline__ float clean(float l) { return l != l ? NEG_INF : fminf(l, __int_as_float(0x7f7fffff)); }

// The warp's largest value and its index, lowest index on ties, in every lane.
__device__ __forceinline__ void warp_argmax(float& bv, int& bi) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        const float v = __shfl_xor_sync(0xffffffffu, bv, o);
        const int i = __shfl_xor_sync(0xffffffffu, bi, o);
        if (v > bv || (v == bv && i < bi)) { bv = v; bi = i; }
    }
}

// The block's largest value and its index (lowest index on ties), in every thread.
__device__ void block_argmax_reduce(float& bv, int& bi) {
    __shared__ float sv[32];
    __shared__ int si[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    warp_argmax(bv, bi);
    __syncthreads();  // readers of an earlier call are done with sv and si
    if (lane == 0) { sv[warp] = bv; si[warp] = bi; }
    __syncthreads();
    bv = lane < warps ? sv[lane] : NEG_INF;
    bi = lane < warps ? si[lane] : 0x7fffffff;
    warp_argmax(bv, bi);
}

__device__ void block_argmax(const float* x, int n, int* out) {
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
    block_argmax_reduce(bv, bi);
    if (threadIdx.x == 0) *out = bi == 0x7fffffff ? 0 : bi;
}

extern "C" __global__ void argmax(const float* __restrict__ x, int n, int* __restrict__ out) {
    launch_dependents();
    wait_for_prerequisites();
    block_argmax(x, n, out);
}

// mask[id] = 1 for each of the first count[0] ids: marks tokens already seen.
extern "C" __global__ void mark_tokens(const int* __restrict__ ids, const int* __restrict__ count, int capacity,
                                       int* __restrict__ mask, int n_vocab) {
    launch_dependents();
    wait_for_prerequisites();
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
    launch_dependents();
    wait_for_prerequisites();
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
            const float l = clean(x[i]);
            const u32 k = order_key(l);
            if (k < floor) continue;
            const float w = MASS ? __expf(l - mx) : 1.0f;
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

// A uniform draw in [0, 1) from the request's seed and the position state[0].
__device__ __forceinline__ float draw_uniform(const unsigned int* iparams, const int* state) {
    const unsigned long long seed = ((unsigned long long)iparams[2] << 32) | iparams[1];
    return (float)(splitmix64(seed ^ splitmix64((unsigned long long)state[0])) >> 40) * (1.0f / 16777216.0f);
}

// Exclusive prefix sum of v over the block, in thread order (a fixed order: the same inputs give
// the same sums every run); `total` gets the sum of all. Every thread of the block must call it.
__device__ double block_exclusive_scan(double v, double* total) {
    __shared__ double sums[32];
    __shared__ double grand;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    double inclusive = v;
#pragma unroll
    for (int o = 1; o < 32; o <<= 1) {
        const double y = __shfl_up_sync(0xffffffffu, inclusive, o);
        if (lane >= o) inclusive += y;
    }
    __syncthreads();  // readers of an earlier call are done with sums
    if (lane == 31) sums[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
        const double t = lane < warps ? sums[lane] : 0.0;
        double run = t;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const double y = __shfl_up_sync(0xffffffffu, run, o);
            if (lane >= o) run += y;
        }
        if (lane < warps) sums[lane] = run - t;
        if (lane == 31) grand = run;
    }
    __syncthreads();
    *total = grand;
    return sums[warp] + inclusive - v;
}

// The index i in [lo, hi) where the running sum of weight(i) first passes `target` (a fraction
// of the range's total weight when `fraction`), or the last index of positive weight when
// rounding leaves the target past the end, or -1 when every weight is 0. With `residual`, also
// how far into the chosen index's weight the target lies (+inf for the last-index fallback).
// Each thread owns one contiguous chunk; a block-wide scan of the chunk masses finds the chunk
// holding the target, and its owner walks it.
template <typename Weight>
__device__ int block_pick(int lo, int hi, Weight weight, double target, bool fraction, double* residual = nullptr) {
    __shared__ int chosen, last;
    __shared__ double rest;
    const int chunk = (hi - lo + (int)blockDim.x - 1) / (int)blockDim.x;
    const int a = lo + (int)threadIdx.x * chunk, b = min(hi, a + chunk);
    double mass = 0.0;
    int last_positive = -1;
    for (int i = a; i < b; ++i) {
        const auto w = weight(i);
        mass += w;
        if (w > 0) last_positive = i;
    }
    double total;
    const double start = block_exclusive_scan(mass, &total);
    if (fraction) target *= total;
    if (threadIdx.x == 0) { chosen = 0x7fffffff; last = -1; rest = __longlong_as_double(0x7ff0000000000000ll); }
    __syncthreads();
    if (last_positive >= 0) atomicMax(&last, last_positive);
    int pick = -1;
    double before = start;
    if (mass > 0.0 && target >= start && target < start + mass) {
        double run = start;
        for (int i = a; i < b; ++i) {
            const auto w = weight(i);
            if (w > 0) { pick = i; before = run; run += w; if (run > target) break; }
        }
        atomicMin(&chosen, pick);  // rounding can let two chunks claim the target: the lower wins, every run
    }
    __syncthreads();
    if (residual != nullptr) {
        if (pick >= 0 && pick == chosen) rest = target - before;
        __syncthreads();
        *residual = rest;
    }
    return chosen != 0x7fffffff ? chosen : last;
}

// The exact search: every pass reads every logit. Writes the chosen id to state[1].
__device__ void sample_exact(const float* x, int n, const float* fparams, const unsigned int* iparams, int* state) {
    const float temperature = fparams[0], top_p = fparams[1], min_p = fparams[2];
    const int top_k = (int)iparams[0];
    const float inv_t = 1.0f / temperature;
    const float mx = block_max([&] {
        float v = NEG_INF;
        for (int i = threadIdx.x; i < n; i += blockDim.x) v = fmaxf(v, clean(x[i]));
        return v;
    }());
    u32 keep = 0;
    if (top_k > 0 && top_k < n) keep = largest_key<false>(x, n, 0, mx, (float)top_k);
    if (top_p < 1.0f) {
        float z = 0.0f;
        for (int i = threadIdx.x; i < n; i += blockDim.x) z += kept_weight(clean(x[i]), keep, mx, 1.0f);
        keep = largest_key<true>(x, n, keep, mx, top_p * block_sum(z));
    }
    if (min_p > 0.0f) keep = max(keep, order_key(mx + __logf(min_p)));
    const int pick = block_pick(0, n, [&](int i) { return kept_weight(clean(x[i]), keep, mx, inv_t); },
                                draw_uniform(iparams, state), true);
    if (pick < 0) block_argmax(x, n, state + 1);  // nothing kept has weight (all logits -inf)
    else if (threadIdx.x == 0) state[1] = pick;
}

#define SELECT_BLOCKS 128      // blocks of the three full passes (kernels.py: SELECT_BLOCKS)
#define SELECT_THREADS 256
#define SAMPLE_CANDIDATES 2048  // the most candidates sample_pick sorts: two per thread
#define KEY_BINS 4096           // 12 bits of a key per histogram

enum SampleMode { MODE_GREEDY, MODE_FULL, MODE_CANDIDATES, MODE_REFINE, MODE_EXACT };

// State shared by the four launches of one draw, in a zeroed device buffer the caller keeps
// (kernels.sample_scratch). The histogram and the arrival counter are left zero after each draw.
struct SampleScratch {
    int hist[KEY_BINS];
    unsigned int arrived;  // blocks done with the current pass; wraps to 0 (atomicInc)
    int mode;              // a SampleMode
    u32 theta;             // the candidates are the keys >= theta
    u32 bin;               // MODE_REFINE: the top-12-bit bin holding the need-th largest key
    int above;             // MODE_REFINE: keys in the bins above it
    int need;              // the rank sought: top_k, or SAMPLE_CANDIDATES for top-p alone
    int count;             // candidates gathered
    int arg;               // argmax (lowest id on ties)
    float mx;              // the largest logit
    float pad;             // keeps the doubles below 8-byte aligned without implicit padding
    float block_max[SELECT_BLOCKS];
    int block_arg[SELECT_BLOCKS];
    double block_z[SELECT_BLOCKS];  // sum of exp(l - mx) over the block's logits
    double block_w[SELECT_BLOCKS];  // MODE_FULL: sum of the draw's weights over them
    unsigned long long cand[SAMPLE_CANDIDATES];  // key << 32 | ~id: descending order is logit, then id
};
#define SAMPLE_SCRATCH_BYTES 35880  // kernels.py: SAMPLE_SCRATCH_BYTES
static_assert(sizeof(SampleScratch) == SAMPLE_SCRATCH_BYTES, "kernels.py allocates this many bytes");

__device__ __forceinline__ float key_logit(u32 k) { return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k); }

// The logits that block b of the SELECT_BLOCKS of a full pass covers.
__device__ __forceinline__ void block_slice(int n, int b, int* lo, int* hi) {
    const int per = (n + SELECT_BLOCKS - 1) / SELECT_BLOCKS;
    *lo = min(n, b * per);
    *hi = min(n, *lo + per);
}

// Whether this block is the last of the grid to finish the pass (its writes and the others'
// are then visible to it); the counter wraps back to 0 for the next pass.
__device__ bool last_block(SampleScratch* s) {
    __shared__ bool last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) last = atomicInc(&s->arrived, gridDim.x - 1) == gridDim.x - 1;
    __syncthreads();
    if (last) __threadfence();
    return last;
}

// Adds the block's histogram into s->hist (bins that are 0 cost nothing).
__device__ void merge_histogram(const int* hist, SampleScratch* s) {
    __syncthreads();
    for (int b = threadIdx.x; b < KEY_BINS; b += blockDim.x)
        if (hist[b]) atomicAdd(&s->hist[b], hist[b]);
}

// In the last block: the bin holding the need-th largest key of s->hist (counted from the top
// bin down), how many keys lie in the bins above it and in it; s->hist is zeroed for the next pass.
__device__ void rank_bin(SampleScratch* s, int need, u32* bin, int* above, int* inside) {
    constexpr int PER = KEY_BINS / SELECT_THREADS;
    __shared__ u32 found_bin;
    __shared__ int found_above, found_inside;
    const int top = KEY_BINS - 1 - (int)threadIdx.x * PER;
    int counts[PER], sum = 0;
#pragma unroll
    for (int j = 0; j < PER; ++j) { counts[j] = __ldcg(&s->hist[top - j]); sum += counts[j]; }
    double total;
    int run = (int)block_exclusive_scan((double)sum, &total);
    if (threadIdx.x == 0) { found_bin = 0; found_above = 0; found_inside = 0; }
    __syncthreads();
    if (run < need && need <= run + sum) {
        for (int j = 0; j < PER; ++j) {
            if (run + counts[j] >= need) { found_bin = top - j; found_above = run; found_inside = counts[j]; break; }
            run += counts[j];
        }
    }
#pragma unroll
    for (int j = 0; j < PER; ++j) s->hist[top - j] = 0;
    __syncthreads();
    *bin = found_bin;
    *above = found_above;
    *inside = found_inside;
}

__device__ __forceinline__ bool k_filters(int n, const unsigned int* iparams) {
    return iparams[0] > 0 && (int)iparams[0] < n;
}

__device__ __forceinline__ int plan_mode(int n, const float* fparams, const unsigned int* iparams) {
    if (fparams[0] <= 0.0f) return MODE_GREEDY;
    if (!k_filters(n, iparams)) return fparams[1] >= 1.0f ? MODE_FULL : MODE_CANDIDATES;
    return (int)iparams[0] > SAMPLE_CANDIDATES ? MODE_EXACT : MODE_CANDIDATES;
}

extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
sample_select(const float* __restrict__ x, int n, const float* __restrict__ fparams,
              const unsigned int* __restrict__ iparams, int* __restrict__ state, SampleScratch* s) {
    launch_dependents();
    wait_for_prerequisites();
    __shared__ int hist[KEY_BINS];
    const int mode = plan_mode(n, fparams, iparams);
    const bool histogram = mode == MODE_CANDIDATES && n > SAMPLE_CANDIDATES;
    int lo, hi;
    block_slice(n, blockIdx.x, &lo, &hi);
    if (histogram)
        for (int b = threadIdx.x; b < KEY_BINS; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    float bv = NEG_INF;
    int bi = 0x7fffffff;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const float l = clean(x[i]);
        if (l > bv) { bv = l; bi = i; }  // each thread meets its indices in increasing order
        if (histogram) atomicAdd(&hist[order_key(l) >> 20], 1);
    }
    block_argmax_reduce(bv, bi);
    if (threadIdx.x == 0) { s->block_max[blockIdx.x] = bv; s->block_arg[blockIdx.x] = bi; }
    if (histogram) merge_histogram(hist, s);
    if (!last_block(s)) return;

    // Blocks hold increasing ids, so the first block that reaches the maximum has its lowest id.
    bv = NEG_INF;
    bi = 0x7fffffff;
    for (int b = threadIdx.x; b < (int)gridDim.x; b += blockDim.x) {
        const float v = __ldcg(&s->block_max[b]);
        if (v > bv) { bv = v; bi = __ldcg(&s->block_arg[b]); }
    }
    block_argmax_reduce(bv, bi);
    const int need = k_filters(n, iparams) ? (int)iparams[0] : min(n, SAMPLE_CANDIDATES);
    u32 bin = 0;
    int above = 0, inside = 0;
    if (histogram) rank_bin(s, need, &bin, &above, &inside);
    if (threadIdx.x == 0) {
        const int arg = bi == 0x7fffffff ? 0 : bi;
        s->mx = bv;
        s->arg = arg;
        s->count = 0;
        s->need = need;
        s->theta = histogram ? bin << 20 : 0;  // without the histogram every logit is a candidate
        s->mode = histogram && above + inside > SAMPLE_CANDIDATES ? MODE_REFINE : mode;
        s->bin = bin;
        s->above = above;
        if (mode == MODE_GREEDY) state[1] = arg;
    }
}

// Where the need-th largest key's bin holds too many keys: the next 12 bits of the keys in it.
// Past that, top-k has more than SAMPLE_CANDIDATES keys within 256 ulps of its boundary (ties):
// the exact search takes it. Top-p alone takes the keys above the bin instead (fewer candidates;
// sample_pick checks that they hold the top-p mass).
extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
sample_refine(const float* __restrict__ x, int n, const float* __restrict__ fparams,
              const unsigned int* __restrict__ iparams, int* __restrict__ state, SampleScratch* s) {
    launch_dependents();
    wait_for_prerequisites();
    __shared__ int hist[KEY_BINS];
    if (s->mode != MODE_REFINE) return;
    const u32 outer = s->bin;
    int lo, hi;
    block_slice(n, blockIdx.x, &lo, &hi);
    for (int b = threadIdx.x; b < KEY_BINS; b += blockDim.x) hist[b] = 0;
    __syncthreads();
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const u32 k = order_key(clean(x[i]));
        if ((k >> 20) == outer) atomicAdd(&hist[(k >> 8) & (KEY_BINS - 1)], 1);
    }
    merge_histogram(hist, s);
    if (!last_block(s)) return;
    const int above_outer = s->above;
    u32 bin;
    int above, inside;
    rank_bin(s, s->need - above_outer, &bin, &above, &inside);
    if (threadIdx.x == 0) {
        const u32 theta = outer << 20 | bin << 8;
        if (above_outer + above + inside <= SAMPLE_CANDIDATES) { s->theta = theta; s->mode = MODE_CANDIDATES; }
        else if (k_filters(n, iparams)) s->mode = MODE_EXACT;
        else { s->theta = theta + 256; s->mode = MODE_CANDIDATES; }  // the keys above the bin
    }
}

// The draw's weight of a logit when only temperature and min-p filter (MODE_FULL).
__device__ __forceinline__ float full_weight(float l, float mx, float min_p, float inv_t) {
    return __expf(l - mx) >= min_p ? __expf((l - mx) * inv_t) : 0.0f;
}

extern "C" __global__ void __launch_bounds__(SELECT_THREADS)
sample_gather(const float* __restrict__ x, int n, const float* __restrict__ fparams,
              const unsigned int* __restrict__ iparams, int* __restrict__ state, SampleScratch* s) {
    launch_dependents();
    wait_for_prerequisites();
    const int mode = s->mode;
    if (mode != MODE_CANDIDATES && mode != MODE_FULL) return;
    const float mx = s->mx, min_p = fparams[2], inv_t = 1.0f / fparams[0];
    const u32 theta = s->theta;
    int lo, hi;
    block_slice(n, blockIdx.x, &lo, &hi);
    double z = 0.0, w = 0.0;
    for (int i = lo + threadIdx.x; i < hi; i += blockDim.x) {
        const float l = clean(x[i]);
        if (mode == MODE_FULL) {
            w += full_weight(l, mx, min_p, inv_t);
            continue;
        }
        z += __expf(l - mx);
        const u32 k = order_key(l);
        if (k >= theta) {
            const int at = atomicAdd(&s->count, 1);  // the histogram bounds the count; order is sorted away
            if (at < SAMPLE_CANDIDATES) s->cand[at] = (unsigned long long)k << 32 | (u32)~i;
        }
    }
    double z_total, w_total;
    block_exclusive_scan(z, &z_total);
    block_exclusive_scan(w, &w_total);
    if (threadIdx.x == 0) { s->block_z[blockIdx.x] = z_total; s->block_w[blockIdx.x] = w_total; }
}

// Sorts keys[0, size) descending, size a power of two at most 2 * blockDim.x (bitonic network).
__device__ void block_sort_descending(unsigned long long* keys, int size) {
    for (int span = 2; span <= size; span <<= 1) {
        for (int stride = span >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            const int t = threadIdx.x;
            if (t < size / 2) {
                const int i = 2 * t - (t & (stride - 1)), j = i + stride;
                const unsigned long long a = keys[i], b = keys[j];
                if ((a < b) == ((i & span) == 0)) { keys[i] = b; keys[j] = a; }
            }
        }
    }
    __syncthreads();
}

// How many of the first `m` entries satisfy keep(i); keep must hold for a prefix of them.
template <typename Keep>
__device__ int block_count_prefix(int m, Keep keep) {
    int count = 0;
    for (int i = threadIdx.x; i < m; i += blockDim.x) count += keep(i) ? 1 : 0;
    double total;
    block_exclusive_scan((double)count, &total);
    return (int)total;
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
sample_pick(const float* __restrict__ x, int n, const float* __restrict__ fparams,
            const unsigned int* __restrict__ iparams, int* __restrict__ state, SampleScratch* s) {
    launch_dependents();
    wait_for_prerequisites();
    __shared__ unsigned long long keys[SAMPLE_CANDIDATES];
    const int mode = s->mode;
    if (mode == MODE_GREEDY) return;
    if (mode == MODE_EXACT) { sample_exact(x, n, fparams, iparams, state); return; }
    const float top_p = fparams[1], min_p = fparams[2], inv_t = 1.0f / fparams[0], mx = s->mx;
    const float u = draw_uniform(iparams, state);
    int pick = -1;
    if (mode == MODE_FULL) {
        // The block of sample_gather whose weight holds the draw, then the logit in its slice.
        double rest;
        const int b = block_pick(0, SELECT_BLOCKS, [&](int i) { return __ldcg(&s->block_w[i]); }, u, true,
                                 &rest);
        if (b >= 0) {
            int lo, hi;
            block_slice(n, b, &lo, &hi);
            pick = block_pick(lo, hi, [&](int i) { return full_weight(clean(x[i]), mx, min_p, inv_t); }, rest, false);
        }
    } else {
        const int c = min(s->count, SAMPLE_CANDIDATES);
        int size = 2;
        while (size < c) size <<= 1;
        for (int i = threadIdx.x; i < size; i += blockDim.x) keys[i] = i < c ? __ldcg(&s->cand[i]) : 0ull;
        block_sort_descending(keys, size);  // by logit, then id: NumPy's stable argsort(-logits)
        const auto logit = [&](int i) { return key_logit((u32)(keys[i] >> 32)); };
        int m = c;  // the kept candidates are always a prefix
        if (k_filters(n, iparams)) {  // top_k_filter: every logit >= the k-th largest
            const u32 kth = (u32)(keys[iparams[0] - 1] >> 32);
            m = block_count_prefix(c, [&](int i) { return (u32)(keys[i] >> 32) >= kth; });
        }
        if (top_p < 1.0f) {  // top_p_filter: the prefix whose softmax mass first reaches top_p
            const int i0 = 2 * (int)threadIdx.x, i1 = i0 + 1;
            const double w0 = i0 < m ? __expf(logit(i0) - mx) : 0.0, w1 = i1 < m ? __expf(logit(i1) - mx) : 0.0;
            double kept, z;
            const double start = block_exclusive_scan(w0 + w1, &kept);
            // The softmax's denominator: the top-k set, or every logit when top-k is off.
            block_exclusive_scan(threadIdx.x < SELECT_BLOCKS ? __ldcg(&s->block_z[threadIdx.x]) : 0.0, &z);
            if (k_filters(n, iparams)) z = kept;
            else if (kept < top_p * z) { sample_exact(x, n, fparams, iparams, state); return; }  // top-p set too large
            const double target = top_p * z;
            double below;
            block_exclusive_scan((i0 < m && start + w0 < target) + (i1 < m && start + w0 + w1 < target), &below);
            m = min(m, (int)below + 1);
        }
        if (min_p > 0.0f)  // min_p_filter: probability at least min_p times the top token's
            m = block_count_prefix(m, [&](int i) { return __expf(logit(i) - mx) >= min_p; });
        pick = block_pick(0, m, [&](int i) { return __expf((logit(i) - mx) * inv_t); }, u, true);
        if (pick >= 0) pick = (int)~(u32)keys[pick];
    }
    if (threadIdx.x == 0) state[1] = pick < 0 ? s->arg : pick;  // no weight left (all -inf): the argmax
}
// The end of a decode step: history[state[2]++] = state[1]; state[0] += 1.
extern "C" __global__ void commit_token(int* state, int* history, int capacity) {
    launch_dependents();
    wait_for_prerequisites();
    if (state[2] < capacity) history[state[2]] = state[1];
    state[2] += 1;
    state[0] += 1;
}
