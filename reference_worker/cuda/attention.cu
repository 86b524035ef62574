// Causal grouped-query attention over an fp16 KV cache, for prefill (n_tok > 1) and decode
// (n_tok == 1). Query t sits at position p = pos0[0] + t and sees cache positions 0..p, or with
// a sliding window (window > 0, gpt-oss) only p - window + 1..p. A cache layer of ctx slots holds
// position p in slot p % ctx (ring_slot): a sliding-window layer's cache is a ring of window +
// one prefill chunk, and the launcher checks that it still holds what the queries read. With
// sinks (gpt-oss: a learned logit per query head) the softmax has one more term, exp(sinks[h]),
// that carries no value.
// `attention`: one block per (head, query); each warp keeps an online softmax over a strided
// share of the positions, and the warps' partial results are merged at the end.
// `attention_mma_*` (prefill of many queries): the same on tensor cores, flash-attention style.
#include "mma.cuh"

#define MAX_HEAD_DIM 256
#define ATTN_WARPS 8

extern "C" __global__ void __launch_bounds__(32 * ATTN_WARPS)
attention(const float* __restrict__ q, const u16* __restrict__ k_cache, const u16* __restrict__ v_cache,
          float* __restrict__ out, int n_head, int n_kv, int head_dim, int ctx,
          const int* __restrict__ pos0, float scale, const float* __restrict__ sinks, int window) {
    launch_dependents();
    wait_for_prerequisites();
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

// Prefill on tensor cores: block (h, y) takes queries y * FA_QUERIES.. of head h, 16 per warp,
// and walks the cache FA_KEYS positions at a time: the block loads the tile's keys and values
// (fp16, as stored) into shared memory, each warp scores its queries against them with
// mma.sync (q scaled and rounded to fp16, scores in fp32), masks what its queries may not see,
// updates its online softmax (max and sum per query row, in fp32) and adds the tile's
// probabilities (rounded to fp16) times the values into its fp32 output. Positions after the
// block's last query are neither loaded nor seen; a warp skips tiles none of its queries sees.
#define FA_THREADS 64             // two warps: 256 queries of 14 heads make 112 blocks
#define FA_QUERIES (FA_THREADS / 2)  // queries per block: 16 a warp
#define FA_KEYS 64                 // cache positions per step

template <int D>
__device__ void attention_mma_impl(const float* __restrict__ q, const u16* __restrict__ k_cache,
                                   const u16* __restrict__ v_cache, float* __restrict__ out, int n_tok, int n_head,
                                   int n_kv, int ctx, const int* __restrict__ pos0, float scale,
                                   const float* __restrict__ sinks, int window) {
    static_assert(D % 16 == 0 && D <= 128, "head_dim: a multiple of 16, at most 128 (shared memory)");
    __shared__ __align__(16) u16 ks[FA_KEYS][D + 8], vs[FA_KEYS][D + 8];  // +8: no bank conflicts for ldmatrix
    const int h = blockIdx.x, t0 = blockIdx.y * FA_QUERIES, kvh = h / (n_head / n_kv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tig = lane & 3;
    const int mat = lane >> 3, mrow = lane & 7;  // the ldmatrix matrix and row this lane points at
    const int p0 = pos0[0], wq = t0 + 16 * warp;  // the warp's first query
    const int block_last = p0 + min(t0 + FA_QUERIES, n_tok) - 1;  // the launcher checked the cache holds it
    const int block_first = window > 0 ? max(0, p0 + t0 - window + 1) : 0;
    const int warp_last = p0 + min(wq + 15, n_tok - 1);
    const int warp_first = window > 0 ? max(0, p0 + wq - window + 1) : 0;
    // Query rows g and g + 8 of the warp as A fragments, one per 16 dimensions.
    u32 qa[D / 16][4];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int t = wq + g + 8 * half;
        const float* qrow = q + ((long long)min(t, n_tok - 1) * n_head + h) * D;
#pragma unroll
        for (int c = 0; c < D / 16; ++c)
#pragma unroll
            for (int k8 = 0; k8 < 2; ++k8) {
                const float2 v = t < n_tok ? *reinterpret_cast<const float2*>(qrow + 16 * c + 8 * k8 + 2 * tig)
                                           : make_float2(0.0f, 0.0f);
                qa[c][half + 2 * k8] = pack_half2(v.x * scale, v.y * scale);
            }
    }
    // Row `half` of this lane's: query position, and the cache positions it sees.
    int lo[2], hi[2];
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        const int p = p0 + wq + g + 8 * half;
        lo[half] = window > 0 ? p - window + 1 : 0;
        hi[half] = p;
    }
    float o[D / 8][4] = {}, m[2] = {NEG_INF, NEG_INF}, l[2] = {0.0f, 0.0f};
    const u16* kbase = k_cache + (long long)kvh * ctx * D;
    const u16* vbase = v_cache + (long long)kvh * ctx * D;
    for (int k0 = block_first / FA_KEYS * FA_KEYS; k0 <= block_last; k0 += FA_KEYS) {
        __syncthreads();  // the last tile's readers are done with it
        for (int i = threadIdx.x; i < FA_KEYS * D / 8; i += FA_THREADS) {  // 8 values (16 bytes) each
            const int r = i / (D / 8), c = 8 * (i % (D / 8));
            const long long at = (long long)ring_slot(k0 + r, ctx) * D + c;
            // Positions outside the block's span may hold anything, NaN included (a ring slot never
            // written, a slot past the prompt): zeros keep them out of P . V.
            const bool stored = k0 + r >= block_first && k0 + r <= block_last;
            const uint4 zero = make_uint4(0u, 0u, 0u, 0u);
            *reinterpret_cast<uint4*>(&ks[r][c]) = stored ? *reinterpret_cast<const uint4*>(kbase + at) : zero;
            *reinterpret_cast<uint4*>(&vs[r][c]) = stored ? *reinterpret_cast<const uint4*>(vbase + at) : zero;
        }
        __syncthreads();
        if (wq >= n_tok || k0 > warp_last || k0 + FA_KEYS <= warp_first) continue;
        float s[FA_KEYS / 8][4] = {};  // s[j][e]: row g + 8 (e / 2), position k0 + 8j + 2 tig + e % 2
#pragma unroll
        for (int c = 0; c < D / 16; ++c)
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; j += 2) {
                u32 kb[4];  // positions 8j.. then 8j + 8.., dimensions 16c.. and 16c + 8.. each
                ldmatrix_x4(kb, &ks[8 * j + mrow + 8 * (mat >> 1)][16 * c + 8 * (mat & 1)]);
                mma_16x8x16(s[j], qa[c], kb[0], kb[1]);
                mma_16x8x16(s[j + 1], qa[c], kb[2], kb[3]);
            }
        float corr[2];
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            float mx = NEG_INF;
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; ++j)
#pragma unroll
                for (int e = 2 * half; e < 2 * half + 2; ++e) {
                    const int p = k0 + 8 * j + 2 * tig + (e & 1);
                    if (p < lo[half] || p > hi[half]) s[j][e] = NEG_INF;
                    mx = fmaxf(mx, s[j][e]);
                }
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));  // the four lanes of a row
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m[half], mx);
            const float base = m_new == NEG_INF ? 0.0f : m_new;  // a row that has seen nothing yet stays 0
            corr[half] = __expf(m[half] - base);
            m[half] = m_new;
            float sum = 0.0f;
#pragma unroll
            for (int j = 0; j < FA_KEYS / 8; ++j)
#pragma unroll
                for (int e = 2 * half; e < 2 * half + 2; ++e) {
                    s[j][e] = __expf(s[j][e] - base);
                    sum += s[j][e];
                }
            l[half] = l[half] * corr[half] + sum;  // this lane's share of the row; summed over the row at the end
        }
#pragma unroll
        for (int d = 0; d < D / 8; ++d) {
            o[d][0] *= corr[0]; o[d][1] *= corr[0]; o[d][2] *= corr[1]; o[d][3] *= corr[1];
        }
#pragma unroll
        for (int kc = 0; kc < FA_KEYS / 16; ++kc) {
            // The probabilities of positions 16kc.. as an A fragment: the accumulator layout of two
            // adjacent 8-position tiles is the A layout of their 16.
            const u32 pa[4] = {pack_half2(s[2 * kc][0], s[2 * kc][1]), pack_half2(s[2 * kc][2], s[2 * kc][3]),
                               pack_half2(s[2 * kc + 1][0], s[2 * kc + 1][1]),
                               pack_half2(s[2 * kc + 1][2], s[2 * kc + 1][3])};
#pragma unroll
            for (int d = 0; d < D / 8; d += 2) {
                u32 vb[4];  // positions 16kc.. and 16kc + 8.. of dimensions 8d.., then of 8d + 8..
                ldmatrix_x4_trans(vb, &vs[16 * kc + mrow + 8 * (mat & 1)][8 * d + 8 * (mat >> 1)]);
                mma_16x8x16(o[d], pa, vb[0], vb[1]);
                mma_16x8x16(o[d + 1], pa, vb[2], vb[3]);
            }
        }
    }
    if (wq >= n_tok) return;
#pragma unroll
    for (int half = 0; half < 2; ++half) {
        float sum = l[half];
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        // With a sink, its term joins the sum at the larger of the two maxima (m is finite: every
        // query sees its own position).
        const float mx = sinks ? fmaxf(m[half], sinks[h]) : m[half], f = __expf(m[half] - mx);
        const float norm = f / (sum * f + (sinks ? __expf(sinks[h] - mx) : 0.0f));
        const int t = wq + g + 8 * half;
        if (t >= n_tok) continue;
        float* orow = out + ((long long)t * n_head + h) * D;
#pragma unroll
        for (int d = 0; d < D / 8; ++d)
            *reinterpret_cast<float2*>(orow + 8 * d + 2 * tig) =
                make_float2(o[d][2 * half] * norm, o[d][2 * half + 1] * norm);
    }
}

#define ATTENTION_MMA(D)                                                                          \
    extern "C" __global__ void __launch_bounds__(FA_THREADS)                                      \
    attention_mma_##D(const float* q, const u16* k_cache, const u16* v_cache, float* out,         \
                      int n_tok, int n_head, int n_kv, int ctx, const int* pos0, float scale,     \
                      const float* sinks, int window) {                                           \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        attention_mma_impl<D>(q, k_cache, v_cache, out, n_tok, n_head, n_kv, ctx, pos0, scale,    \
                              sinks, window);                                                     \
    }

ATTENTION_MMA(64)
ATTENTION_MMA(96)
ATTENTION_MMA(128)

// Decode (one query per head) split over the positions, flash-decoding style: a single query
// gives too few (head, query) blocks to fill the GPU, so the positions first..p (first: the
// window's first position, else 0) are cut in chunks of CHUNK and block (h, c) of a grid of
// n_chunks handles chunks c, c + n_chunks, ... and writes its partial softmax state (max, sum,
// weighted values) to `partial`; the last of a head's blocks to finish merges them
// (combine_partials), so decode attention is one launch. The launcher caps
// n_chunks (kernels.ATTN_SPLIT_BLOCKS), so a cache of a whole 131,072-token context costs no more
// blocks than a short one; blocks with no chunk below the position return at once. Within a block, eight lanes share a
// position (each holding head_dim/8 dimensions, 16-byte loads), so a warp scores four
// positions per step with coalesced reads of the fp16 cache.
// A block stages its chunk's keys and values in shared memory (cp.async: every row of the chunk
// in flight at once; loads into registers waited on memory once per step of four positions) and
// scores them from there; the first chunk's copy is issued before q is rotated. Dynamic shared
// memory: CHUNK keys, then CHUNK values, head_dim fp16 each (kernels.attention_decode's
// 4 * CHUNK * head_dim bytes), which the merge at the end reuses for the groups' values.
#define CHUNK 64
#define SPLIT_WARPS 4
#define MAX_DIMS_PER_LANE (MAX_HEAD_DIM / 8)

#ifndef STAGED_ON_CPU  // tests/cuda_on_cpu/attention_main.cpp defines it as a plain array
extern __shared__ uint4 kv_stage[];
#endif

// Copies the cache rows of positions [begin, end) (their ring slots) into rows 0.. of k_st and
// v_st, in 16-byte pieces over the block.
__device__ void stage_chunk(const u16* k_cache, const u16* v_cache, u16* k_st, u16* v_st, long long base, int begin,
                            int end, int ctx, int head_dim) {
    const int pieces = head_dim >> 3, n = (end - begin) * pieces;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
        const int r = i / pieces, at = r * head_dim + 8 * (i - r * pieces);
        const long long from = base + (long long)ring_slot(begin + r, ctx) * head_dim + (at - r * head_dim);
        copy_async16(k_st + at, k_cache + from);
        copy_async16(v_st + at, v_cache + from);
    }
}

// out_h = the merge of a head's `used` block states in part (max, sum, values; rows of head_dim
// + 2) and of its sink logit, when there is one, over the block's threads. The states may come
// from other blocks: read through L2 (ld.cg), past this SM's L1.
__device__ void combine_partials(const float* part, float* out_h, int head_dim, int used, const float* sink) {
    const int row = head_dim + 2;
    float mx = sink ? *sink : NEG_INF;
    for (int c = 0; c < used; ++c) mx = fmaxf(mx, __ldcg(part + c * row));
    float total = sink ? __expf(*sink - mx) : 0.0f;
    for (int c = 0; c < used; ++c) total += __ldcg(part + c * row + 1) * __expf(__ldcg(part + c * row) - mx);
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float s = 0.0f;
        for (int c = 0; c < used; ++c) s += __ldcg(part + c * row + 2 + d) * __expf(__ldcg(part + c * row) - mx);
        out_h[d] = s / total;
    }
}

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
                u16* k_cache, u16* v_cache, float* partial, float* __restrict__ out, u32* tickets, int n_head,
                int n_kv, int head_dim, int ctx, const int* __restrict__ pos0, float scale, float freq_base,
                int neox, int window, const float* __restrict__ freqs, float magnitude,
                const float* __restrict__ sinks) {
    wait_for_prerequisites();
    const int h = blockIdx.x, c = blockIdx.y, n_chunks = gridDim.y;
    const int kvh = h / (n_head / n_kv);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int group = threadIdx.x >> 3, sub = lane & 7;  // 16 groups of 8 lanes per block
    const int pos = pos0[0];
    const int first = window > 0 ? max(0, pos - window + 1) : 0;
    const int last_chunk = (pos - first) / CHUNK;  // the chunk of the new position
    if (c > last_chunk) return;  // takes no ticket: combine_partials does not read it
    u16* k_st = reinterpret_cast<u16*>(kv_stage);
    u16* v_st = k_st + CHUNK * head_dim;
    const long long kv_base = (long long)kvh * ctx * head_dim;
    stage_chunk(k_cache, v_cache, k_st, v_st, kv_base, first + c * CHUNK, min(first + (c + 1) * CHUNK, pos + 1), ctx,
                head_dim);
    __shared__ float rotated_q[MAX_HEAD_DIM];
    __shared__ u16 new_k[MAX_HEAD_DIM], new_v[MAX_HEAD_DIM];  // the new position's row, for its chunk's stage
    for (int i = threadIdx.x; i < head_dim >> 1; i += blockDim.x) {
        const RopePair r = rope_pair(q + h * head_dim, i, head_dim, pos, freq_base, neox, freqs, magnitude);
        rotated_q[r.a] = r.va;
        rotated_q[r.b] = r.vb;
    }
    if (c == last_chunk % n_chunks) {
        const long long at = ((long long)kvh * ctx + ring_slot(pos, ctx)) * head_dim;
        for (int i = threadIdx.x; i < head_dim >> 1; i += blockDim.x) {
            const RopePair r = rope_pair(k_new + kvh * head_dim, i, head_dim, pos, freq_base, neox, freqs, magnitude);
            k_cache[at + r.a] = new_k[r.a] = float_to_half(r.va);
            k_cache[at + r.b] = new_k[r.b] = float_to_half(r.vb);
        }
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
            v_cache[at + d] = new_v[d] = float_to_half(v_new[kvh * head_dim + d]);
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
    // The bounds are the same for the whole warp (its four groups step together) so that the
    // shuffles below always have all 32 lanes.
    for (int chunk = c; chunk <= last_chunk; chunk += n_chunks) {
        const int begin = first + chunk * CHUNK, end = min(begin + CHUNK, pos + 1);
        if (chunk != c) {  // the last chunk's rows are read: stage this one
            __syncthreads();
            stage_chunk(k_cache, v_cache, k_st, v_st, kv_base, begin, end, ctx, head_dim);
        }
        stage_wait();
        __syncthreads();
        if (chunk == last_chunk) {  // the new position's row, as stored above (its copy may predate the store)
            for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
                k_st[(pos - begin) * head_dim + d] = new_k[d];
                v_st[(pos - begin) * head_dim + d] = new_v[d];
            }
            __syncthreads();
        }
        for (int p0 = begin + 4 * warp; p0 < end; p0 += 4 * SPLIT_WARPS) {
            const int p = p0 + (lane >> 3);
            const bool valid = p < end;
            const uint4* krow = reinterpret_cast<const uint4*>(k_st + (p - begin) * head_dim + sub * per_lane);
            const uint4* vrow = reinterpret_cast<const uint4*>(v_st + (p - begin) * head_dim + sub * per_lane);
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
    // Late, as the staged mat-vecs (matmul.cu's stage_inputs); before the merges below, which is
    // safe: a dependent's wait_for_prerequisites returns only once this whole grid has finished.
    launch_dependents();
    // Merge the 16 groups of this block, then write its (max, sum, values).
    __shared__ float gm[4 * SPLIT_WARPS], gl[4 * SPLIT_WARPS];
    float* gacc = reinterpret_cast<float*>(kv_stage);  // group g's values at g * head_dim, over the stage
    __syncthreads();  // every warp is done with the stage
    if (sub == 0) { gm[group] = m; gl[group] = l; }
#pragma unroll
    for (int i = 0; i < MAX_DIMS_PER_LANE; ++i)
        if (i < per_lane) gacc[group * head_dim + sub * per_lane + i] = acc[i];
    __syncthreads();
    float mx = NEG_INF;
#pragma unroll
    for (int g = 0; g < 4 * SPLIT_WARPS; ++g) mx = fmaxf(mx, gm[g]);
    float* head_part = partial + (long long)h * n_chunks * (head_dim + 2);
    float* state = head_part + c * (head_dim + 2);
    float total = 0.0f;
#pragma unroll
    for (int g = 0; g < 4 * SPLIT_WARPS; ++g) total += gl[g] * __expf(gm[g] - mx);
    if (threadIdx.x == 0) { state[0] = mx; state[1] = total; }
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float s = 0.0f;
#pragma unroll
        for (int g = 0; g < 4 * SPLIT_WARPS; ++g) s += gacc[g * head_dim + d] * __expf(gm[g] - mx);
        state[2 + d] = s;
    }
    // The head's blocks take a ticket each once their state is written (threadFenceReduction's
    // pattern); the one that draws the last merges them. It sets the counter back to 0 for the
    // next launch (a graph replays this one with the same counters): every block of the head has
    // drawn by then, and the next launch draws only after its wait_for_prerequisites, that is
    // after this grid has finished. A head of one block merges its own state.
    const int used = min(last_chunk + 1, n_chunks);
    if (used > 1) {
        __shared__ bool last;
        __threadfence();  // this thread's share of the state, before the block's ticket
        __syncthreads();
        if (threadIdx.x == 0) {
            last = atomicAdd(tickets + h, 1u) == (u32)(used - 1);
            if (last) tickets[h] = 0;
        }
        __syncthreads();
        if (!last) return;
        __threadfence();  // the other blocks' states, after their tickets
    } else {
        __syncthreads();
    }
    combine_partials(head_part, out + h * head_dim, head_dim, used, sinks ? sinks + h : nullptr);
}
