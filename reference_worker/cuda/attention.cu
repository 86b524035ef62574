// Causal grouped-query attention over an fp16 KV cache, for prefill (n_tok > 1) and decode
// (n_tok == 1). Query t sits at position p = pos0[0] + t and sees cache positions 0..p, or with
// a sliding window (window > 0, gpt-oss) only p - window + 1..p. A cache layer of ctx slots holds
// position p in slot p % ctx (ring_slot): a sliding-window layer's cache is a ring of window +
// one prefill chunk, and the launcher checks that it still holds what the queries read. With
// sinks (gpt-oss: a learned logit per query head) the softmax has one more term, exp(sinks[h]),
// that carries no value.
// One block per (head, query); each warp keeps an online softmax over a strided share of the
// positions, and the warps' partial results are merged at the end.
#include "common.cuh"

#define MAX_HEAD_DIM 256
#define ATTN_WARPS 8

extern "C" __global__ void __launch_bounds__(32 * ATTN_WARPS)
attention(const float* __restrict__ q, const u16* __restrict__ k_cache, const u16* __restrict__ v_cache,
          float* __restrict__ out, int n_head, int n_kv, int head_dim, int ctx,
          const int* __restrict__ pos0, float scale, const float* __restrict__ sinks, int window) {
    constexpr int PER_LANE = MAX_HEAD_DIM / 32;
    const int h = blockIdx.x, t = blockIdx.y;
    const int kvh = h / (n_head / n_kv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int last = pos0[0] + t;
    const int first = window > 0 ? max(0, last - window + 1) : 0;
    const float* qrow = q + ((long long)t * n_head + h) * head_dim;

    float qv[PER_LANE], acc[PER_LANE];
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + 32 * i;
        qv[i] = d < head_dim ? qrow[d] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const u16* kbase = k_cache + (long long)kvh * ctx * head_dim;
    const u16* vbase = v_cache + (long long)kvh * ctx * head_dim;
    for (int p = first + warp; p <= last; p += ATTN_WARPS) {
        const long long row = (long long)ring_slot(p, ctx) * head_dim;
        const u16* krow = kbase + row;
        float s = 0.0f;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) s += qv[i] * half_to_float(krow[d]);
        }
        s = warp_sum(s);
        const float m_new = fmaxf(m, s);
        const float corr = __expf(m - m_new), e = __expf(s - m_new);
        l = l * corr + e;
        const u16* vrow = vbase + row;
#pragma unroll
        for (int i = 0; i < PER_LANE; ++i) {
            const int d = lane + 32 * i;
            if (d < head_dim) acc[i] = acc[i] * corr + e * half_to_float(vrow[d]);
        }
        m = m_new;
    }

    __shared__ float wm[ATTN_WARPS], wl[ATTN_WARPS];
    __shared__ float wacc[ATTN_WARPS][MAX_HEAD_DIM];
    if (lane == 0) { wm[warp] = m; wl[warp] = l; }
#pragma unroll
    for (int i = 0; i < PER_LANE; ++i) {
        const int d = lane + 32 * i;
        if (d < head_dim) wacc[warp][d] = acc[i];
    }
    __syncthreads();
    float mx = sinks ? sinks[h] : NEG_INF;
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) mx = fmaxf(mx, wm[w]);
    float total = sinks ? __expf(sinks[h] - mx) : 0.0f, f[ATTN_WARPS];
#pragma unroll
    for (int w = 0; w < ATTN_WARPS; ++w) { f[w] = __expf(wm[w] - mx); total += wl[w] * f[w]; }
    float* orow = out + ((long long)t * n_head + h) * head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int w = 0; w < ATTN_WARPS; ++w) s += wacc[w][d] * f[w];
        orow[d] = s / total;
    }
}

// Decode (one query per head) split over the positions, flash-decoding style: a single query
// gives too few (head, query) blocks to fill the GPU, so the positions first..p (first: the
// window's first position, else 0) are cut in chunks of CHUNK and block (h, c) of a grid of
// n_chunks handles chunks c, c + n_chunks, ... and writes its partial softmax state (max, sum,
// weighted values) to `partial`; attention_combine merges the blocks. The launcher caps
// n_chunks (kernels.ATTN_SPLIT_BLOCKS), so a cache of a whole 131,072-token context costs no more
// blocks than a short one; blocks with no chunk below the position return at once. Within a block, eight lanes share a
// position (each holding head_dim/8 dimensions, 16-byte loads), so a warp scores four
// positions per step with coalesced reads of the fp16 cache.
#define CHUNK 64
#define SPLIT_WARPS 4
#define MAX_DIMS_PER_LANE (MAX_HEAD_DIM / 8)

__device__ __forceinline__ void unpack8(uint4 raw, float* out) {
    const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = half_to_float(w[i] & 0xFFFF);
        out[2 * i + 1] = half_to_float(w[i] >> 16);
    }
}

// q and the new key arrive un-rotated: each block rotates them (common.cuh's rope_pair, with
// the YaRN table freqs when it is not null) as it reads them, which saves decode a launch per
// layer. The block that holds the new position's chunk first stores the new key and value there
// (fp16): every query head of a KV group stores the same values, and no other block reads that
// slot (in a ring it held position p - ctx, outside the window), so the store needs no launch
// of its own. The cache pointers are therefore not read-only.
extern "C" __global__ void __launch_bounds__(32 * SPLIT_WARPS)
attention_split(const float* __restrict__ q, const float* __restrict__ k_new, const float* __restrict__ v_new,
                u16* k_cache, u16* v_cache, float* __restrict__ partial, int n_head, int n_kv, int head_dim,
                int ctx, const int* __restrict__ pos0, float scale, float freq_base, int neox, int window,
                const float* __restrict__ freqs, float magnitude) {
    const int h = blockIdx.x, c = blockIdx.y, n_chunks = gridDim.y;
    const int kvh = h / (n_head / n_kv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int group = threadIdx.x >> 3, sub = lane & 7;  // 16 groups of 8 lanes per block
    const int pos = pos0[0];
    const int first = window > 0 ? max(0, pos - window + 1) : 0;
    const int last_chunk = (pos - first) / CHUNK;  // the chunk of the new position
    if (c > last_chunk) return;  // attention_combine does not read it
    __shared__ float rotated_q[MAX_HEAD_DIM];
    for (int i = threadIdx.x; i < head_dim >> 1; i += blockDim.x) {
        const RopePair r = rope_pair(q + h * head_dim, i, head_dim, pos, freq_base, neox, freqs, magnitude);
        rotated_q[r.a] = r.va;
        rotated_q[r.b] = r.vb;
    }
    if (c == last_chunk % n_chunks) {
        const long long at = ((long long)kvh * ctx + ring_slot(pos, ctx)) * head_dim;
        for (int i = threadIdx.x; i < head_dim >> 1; i += blockDim.x) {
            const RopePair r = rope_pair(k_new + kvh * head_dim, i, head_dim, pos, freq_base, neox, freqs, magnitude);
            k_cache[at + r.a] = float_to_half(r.va);
            k_cache[at + r.b] = float_to_half(r.vb);
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) v_cache[at + d] = float_to_half(v_new[kvh * head_dim + d]);
    }
    __syncthreads();
    const int per_lane = head_dim >> 3, vecs = per_lane >> 3;  // dimensions, and 8-wide loads, per lane
    float qv[MAX_DIMS_PER_LANE], acc[MAX_DIMS_PER_LANE];
#pragma unroll
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i) {
        qv[i] = i < per_lane ? rotated_q[sub * per_lane + i] * scale : 0.0f;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const long long base = (long long)kvh * ctx * head_dim + sub * per_lane;
    // The bounds are the same for the whole warp (its four groups step together) so that the
    // shuffles below always have all 32 lanes.
    for (int chunk = c; chunk <= last_chunk; chunk += n_chunks) {
        const int begin = first + chunk * CHUNK, end = min(begin + CHUNK, pos + 1);
        for (int p0 = begin + 4 * warp; p0 < end; p0 += 4 * SPLIT_WARPS) {
            const int p = p0 + (lane >> 3);
            const bool valid = p < end;
            const long long row = (long long)ring_slot(p, ctx) * head_dim;
            const uint4* krow = reinterpret_cast<const uint4*>(k_cache + base + row);
            const uint4* vrow = reinterpret_cast<const uint4*>(v_cache + base + row);
            float s = 0.0f;
#pragma unroll
            for (int j = 0; j < MAX_DIMS_PER_LANE / 8; ++j) {
                if (valid && j < vecs) {
                    float kf[8];
                    unpack8(krow[j], kf);
#pragma unroll
                    for (int i = 0; i < 8; ++i) s += qv[8 * j + i] * kf[i];
                }
            }
            s += __shfl_xor_sync(0xffffffffu, s, 1);
            s += __shfl_xor_sync(0xffffffffu, s, 2);
            s += __shfl_xor_sync(0xffffffffu, s, 4);
            if (!valid) continue;
            const float m_new = fmaxf(m, s);
            const float corr = __expf(m - m_new), e = __expf(s - m_new);
            l = l * corr + e;
#pragma unroll
            for (int j = 0; j < MAX_DIMS_PER_LANE / 8; ++j) {
                if (j < vecs) {
                    float vf[8];
                    unpack8(vrow[j], vf);
#pragma unroll
                    for (int i = 0; i < 8; ++i) acc[8 * j + i] = acc[8 * j + i] * corr + e * vf[i];
                }
            }
            m = m_new;
        }
    }
    // Merge the 16 groups of this block, then write its (max, sum, values).
    __shared__ float gm[4 * SPLIT_WARPS], gl[4 * SPLIT_WARPS];
    __shared__ float gacc[4 * SPLIT_WARPS][MAX_HEAD_DIM];
    if (sub == 0) { gm[group] = m; gl[group] = l; }
#pragma unroll
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i)
        if (i < per_lane) gacc[group][sub * per_lane + i] = acc[i];
    __syncthreads();
    float mx = NEG_INF;
#pragma unroll
    for (int g = 0; g < 4 * SPLIT_WARPS; ++g) mx = fmaxf(mx, gm[g]);
    float* out = partial + ((long long)h * n_chunks + c) * (head_dim + 2);
    float total = 0.0f;
#pragma unroll
    for (int g = 0; g < 4 * SPLIT_WARPS; ++g) total += gl[g] * __expf(gm[g] - mx);
    if (threadIdx.x == 0) { out[0] = mx; out[1] = total; }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int g = 0; g < 4 * SPLIT_WARPS; ++g) s += gacc[g][d] * __expf(gm[g] - mx);
        out[2 + d] = s;
    }
}

// out[h] = the merge of head h's block states from attention_split (those with a chunk below the
// position) and of its sink logit, when there are sinks.
extern "C" __global__ void attention_combine(const float* __restrict__ partial, float* __restrict__ out,
                                             int head_dim, int n_chunks, const int* __restrict__ pos0,
                                             const float* __restrict__ sinks, int window) {
    const int h = blockIdx.x;
    const int first = window > 0 ? max(0, pos0[0] - window + 1) : 0;
    const int used = min((pos0[0] - first) / CHUNK + 1, n_chunks);
    const float* part = partial + (long long)h * n_chunks * (head_dim + 2);
    float mx = sinks ? sinks[h] : NEG_INF;
    for (int c = 0; c < used; ++c) mx = fmaxf(mx, part[c * (head_dim + 2)]);
    float total = sinks ? __expf(sinks[h] - mx) : 0.0f;
    for (int c = 0; c < used; ++c) total += part[c * (head_dim + 2) + 1] * __expf(part[c * (head_dim + 2)] - mx);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < used; ++c) s += part[c * (head_dim + 2) + 2 + d] * __expf(part[c * (head_dim + 2)] - mx);
        out[h * head_dim + d] = s / total;
    }
}
