// The mixture-of-experts feed-forward of gpt-oss (llama.cpp build_moe_ffn with
// LLM_FFN_SWIGLU_OAI_MOE and softmax-weight gating):
//   moe_topk        the router's k largest logits per token and a softmax over them
//   gate/up         act[t, j] = swiglu_oai(Wg[e] x[t] + bg[e], Wu[e] x[t] + bu[e]), e = ids[t, j]
//   down            y[t] = residual[t] + sum_j w[t, j] (Wd[e] act[t, j] + bd[e]), j in slot order
// The expert ids stay on the device (a decode step is one CUDA graph; prefill does not sync
// either), and only the routed experts' rows of the (E, rows, cols) stacks are read, decoded in
// registers from their file encoding (quant.cuh; MXFP4 for GPT-OSS, M0-W-1435). Two paths:
//   per token (decode)  moe_gate_up_* / moe_down_*: each (token, slot) reads its expert's rows,
//                       as matmul.cu's mat-vec (a warp per row, eight lanes per 32-value unit);
//   grouped (prefill)   moe_group sorts the (token, slot) pairs by expert on the device, then
//                       moe_mma_gate_up_* / moe_mma_down_* (tensor cores) or moe_tiled_* (fp32)
//                       take a tile of an expert's pairs and decode each weight once for the
//                       whole tile (matmul.cu's matmul_tiled with gathered rows of x), and
//                       moe_combine adds each token's k expert outputs in slot order, so the
//                       result does not depend on scheduling (no float atomics, M0-W-1826).
// Sums are fp32; the tensor-core kernels keep the fp32 kernels' precision (moe_mma_impl says how).
// NumPy twins: ops_numpy.route and ops_numpy.expert_ffn. tests/cuda_on_cpu runs the grouped path
// on the CPU (test_moe_kernels_on_cpu.py).
#include "quant.cuh"

#define MOE_WARPS 4
#define MAX_EXPERTS 256  // gpt_oss.MAX_EXPERTS
#define SWIGLU_OAI_ALPHA 1.702f
#define SWIGLU_OAI_LIMIT 7.0f
#define MOE_TILE 32          // pairs and rows of a moe_tiled_* block (64 threads, 4 x 4 each)
#define MOE_TILE_THREADS 64
#define MOE_TILE_LOADS (MOE_TILE * 8 / MOE_TILE_THREADS)  // (row or pair, 4 values) per thread per unit

// gpt-oss's clamped SwiGLU (ggml_swiglu_oai) of the biased gate and up sums.
__device__ __forceinline__ float swiglu_oai(float g, float u) {
    const float gate = fminf(g, SWIGLU_OAI_LIMIT);
    const float up = fminf(fmaxf(u, -SWIGLU_OAI_LIMIT), SWIGLU_OAI_LIMIT);
    return gate / (1.0f + __expf(-SWIGLU_OAI_ALPHA * gate)) * (up + 1.0f);
}

// Row `row` of a quantized matrix times x (n_in values), summed over the warp; every lane gets it.
template <int QT>
__device__ __forceinline__ float row_dot(const u8* wrow, const float* x, int n_in) {
    const int lane = threadIdx.x & 31, sub = lane & 7;
    float acc = 0.0f;
#pragma unroll 4
    for (int u = lane >> 3; u < (n_in >> 5); u += 4)
        acc += dot4(decode4<QT>(wrow, u, sub), *reinterpret_cast<const float4*>(x + u * 32 + 4 * sub));
    return warp_sum(acc);
}

// One thread per token: the k largest of its n_expert logits (ties to the lower id, as a stable
// descending sort), then weights = softmax of those k logits.
extern "C" __global__ void moe_topk(const float* __restrict__ logits, int* __restrict__ ids,
                                    float* __restrict__ weights, int n_tok, int n_expert, int k) {
    launch_dependents();
    wait_for_prerequisites();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_tok) return;
    const float* row = logits + (long long)t * n_expert;
    unsigned taken[MAX_EXPERTS / 32] = {0};
    float chosen[MAX_EXPERTS];
    for (int j = 0; j < k; ++j) {
        int best = -1;
        float best_v = NEG_INF;
        for (int e = 0; e < n_expert; ++e) {
            const bool free = !((taken[e >> 5] >> (e & 31)) & 1u);
            if (free && (best < 0 || row[e] > best_v)) { best = e; best_v = row[e]; }
        }
        taken[best >> 5] |= 1u << (best & 31);
        ids[t * k + j] = best;
        chosen[j] = best_v;
    }
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += __expf(chosen[j] - chosen[0]);
    for (int j = 0; j < k; ++j) weights[t * k + j] = __expf(chosen[j] - chosen[0]) / sum;
}

// Grid (rows / MOE_WARPS, n_tok * k): warp w of block (b, tj) computes row b * MOE_WARPS + w of
// slot j of token t through expert ids[t, j], gate and up in one pass over x[t].
template <int QT>
__device__ void moe_gate_up_impl(const u8* __restrict__ Wg, const u8* __restrict__ Wu,
                                 const float* __restrict__ bg, const float* __restrict__ bu,
                                 const float* __restrict__ x, const int* __restrict__ ids,
                                 float* __restrict__ act, int n_in, int n_ff, int k, long long row_bytes) {
    const int lane = threadIdx.x & 31, sub = lane & 7, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * MOE_WARPS + warp, tj = blockIdx.y, t = tj / k;
    if (row >= n_ff) return;  // a whole warp leaves together: row is uniform across it
    const int e = ids[tj];
    const long long at = ((long long)e * n_ff + row) * row_bytes;
    const float* xt = x + (long long)t * n_in;
    float g = 0.0f, u = 0.0f;
#pragma unroll 4
    for (int q = lane >> 3; q < (n_in >> 5); q += 4) {
        const float4 xv = *reinterpret_cast<const float4*>(xt + q * 32 + 4 * sub);
        g += dot4(decode4<QT>(Wg + at, q, sub), xv);
        u += dot4(decode4<QT>(Wu + at, q, sub), xv);
    }
    g = warp_sum(g);
    u = warp_sum(u);
    if (lane == 0) act[(long long)tj * n_ff + row] = swiglu_oai(g + bg[e * n_ff + row], u + bu[e * n_ff + row]);
}

// Grid (n_out / MOE_WARPS, n_tok): warp w of block (b, t) computes output row b * MOE_WARPS + w
// of token t, summing its k experts' down projections in slot order.
template <int QT>
__device__ void moe_down_impl(const u8* __restrict__ Wd, const float* __restrict__ bd,
                              const float* __restrict__ act, const int* __restrict__ ids,
                              const float* __restrict__ weights, const float* __restrict__ residual,
                              float* __restrict__ y, int n_ff, int n_out, int k, long long row_bytes) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * MOE_WARPS + warp, t = blockIdx.y;
    if (row >= n_out) return;
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) {
        const int e = ids[t * k + j];
        const float s = row_dot<QT>(Wd + ((long long)e * n_out + row) * row_bytes, act + ((long long)t * k + j) * n_ff,
                                    n_ff);
        sum += weights[t * k + j] * (s + bd[e * n_out + row]);
    }
    if (lane == 0) y[(long long)t * n_out + row] = residual[(long long)t * n_out + row] + sum;
}

#define MOE_GROUP_BATCHES 8  // batches of 32 pairs whose ids a warp loads before it looks at them

// visit(p, ids[p] or -1 past the end, the lanes whose pair has the same expert) for the warp's
// lanes, 32 pairs at a time in order of p; each batch's loads are issued together.
template <class Visit>
__device__ __forceinline__ void each_batch(const int* __restrict__ ids, int n_pairs, Visit visit) {
    const int lane = threadIdx.x & 31;
    for (int base = 0; base < n_pairs; base += 32 * MOE_GROUP_BATCHES) {
        int e[MOE_GROUP_BATCHES];
#pragma unroll
        for (int b = 0; b < MOE_GROUP_BATCHES; ++b) {
            const int p = base + 32 * b + lane;
            e[b] = p < n_pairs ? ids[p] : -1;
        }
#pragma unroll
        for (int b = 0; b < MOE_GROUP_BATCHES; ++b)
            visit(base + 32 * b + lane, e[b], __match_any_sync(0xffffffffu, e[b]));
    }
}

// One warp: a stable counting sort of the n_pairs (token, slot) pairs p = t * k + j by expert
// ids[p], so that order lists expert 0's pairs, then expert 1's, ..., each expert's by increasing
// p (by token); and the tile table: tile i < *n_tiles is tiles[3i..3i+2] = (expert, first index
// into order, pairs), up to MOE_TILE pairs of one expert (the launcher sizes the table for the
// most tiles n_pairs can make). Lanes of a batch of 32 pairs that share an expert find each
// other with __match_any_sync; the lowest of them moves the expert's cursor, so no atomics are
// needed and the order is the same on every run.
extern "C" __global__ void moe_group(const int* __restrict__ ids, int n_pairs, int n_expert,
                                     int* __restrict__ order, int* __restrict__ tiles,
                                     int* __restrict__ n_tiles) {
    launch_dependents();
    wait_for_prerequisites();
    __shared__ int cursor[MAX_EXPERTS], first_tile[MAX_EXPERTS + 1];
    const int lane = threadIdx.x;
    const unsigned below = (1u << lane) - 1u;
    for (int e = lane; e < n_expert; e += 32) cursor[e] = 0;
    __syncwarp();
    each_batch(ids, n_pairs, [&](int, int e, unsigned same) {  // pairs per expert
        if (e >= 0 && !(same & below)) cursor[e] += __popc(same);
        __syncwarp();
    });
    if (lane == 0) {  // cursor[e] becomes expert e's first index into order
        int pairs = 0, tiles_so_far = 0;
        for (int e = 0; e < n_expert; ++e) {
            const int count = cursor[e];
            cursor[e] = pairs;
            first_tile[e] = tiles_so_far;
            pairs += count;
            tiles_so_far += (count + MOE_TILE - 1) / MOE_TILE;
        }
        first_tile[n_expert] = tiles_so_far;
        *n_tiles = tiles_so_far;
    }
    __syncwarp();
    for (int e = lane; e < n_expert; e += 32) {
        const int tile0 = first_tile[e], end = e + 1 < n_expert ? cursor[e + 1] : n_pairs;
        for (int i = tile0; i < first_tile[e + 1]; ++i) {
            const int first = cursor[e] + (i - tile0) * MOE_TILE;
            tiles[3 * i] = e;
            tiles[3 * i + 1] = first;
            tiles[3 * i + 2] = min(MOE_TILE, end - first);
        }
    }
    __syncwarp();
    each_batch(ids, n_pairs, [&](int p, int e, unsigned same) {  // each pair to its place, in order of p
        if (e >= 0) order[cursor[e] + __popc(same & below)] = p;
        __syncwarp();
        if (e >= 0 && !(same & below)) cursor[e] += __popc(same);
        __syncwarp();
    });
}

// Values 4 sub.. of unit u of this thread's MOE_TILE_LOADS weight rows and input rows (a null
// input row, a tile slot without a pair, loads zeros).
template <int QT, int MATS>
__device__ __forceinline__ void moe_tile_load(const u8* const (&wrow)[MATS][MOE_TILE_LOADS],
                                              const float* const (&xrow)[MOE_TILE_LOADS], int u, int sub,
                                              float4 (&w)[MATS][MOE_TILE_LOADS], float4 (&x)[MOE_TILE_LOADS]) {
#pragma unroll
    for (int step = 0; step < MOE_TILE_LOADS; ++step) {
#pragma unroll
        for (int m = 0; m < MATS; ++m) w[m][step] = decode4<QT>(wrow[m][step], u, sub);
        x[step] = xrow[step] ? *reinterpret_cast<const float4*>(xrow[step] + u * 32 + 4 * sub)
                             : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
}

// Grid (rows / MOE_TILE, the launcher's bound on tiles), MOE_TILE_THREADS threads: block (b, i)
// computes rows b * MOE_TILE.. of tile i's expert e for the tile's pairs, each thread a 4 x 4
// piece (rows x pairs), as matmul.cu's matmul_tiled: per 32-value unit the block decodes the
// tile's weights and gathers its pairs' input rows into shared memory once, so each decoded
// weight serves the tile's pairs; the next unit's loads are issued before this unit's products.
// Pair p's input row is X[p / pairs_per_x] (the token's x for gate/up, k pairs a token; the
// pair's act for down). GATED (gate and up in one pass, MATS = 2): Y[p, row] = swiglu_oai(Wg x +
// bg, Wu x + bu); else Y[p, row] = W x + b. Blocks past *n_tiles leave at once.
template <int QT, bool GATED>
__device__ void moe_tiled_impl(const u8* __restrict__ W0, const u8* __restrict__ W1, const float* __restrict__ b0,
                               const float* __restrict__ b1, const float* __restrict__ X,
                               const int* __restrict__ order, const int* __restrict__ tiles,
                               const int* __restrict__ n_tiles, float* __restrict__ Y, int pairs_per_x, int n_in,
                               int n_out, long long row_bytes) {
    constexpr int MATS = GATED ? 2 : 1;
    __shared__ __align__(16) float ws[MATS][32][MOE_TILE + 4], xs[32][MOE_TILE + 4];
    __shared__ int pair[MOE_TILE];
    const int tile = blockIdx.y;
    if (tile >= *n_tiles) return;  // the whole block: tile is uniform across it
    const int e = tiles[3 * tile], first = tiles[3 * tile + 1], count = tiles[3 * tile + 2];
    const int row0 = blockIdx.x * MOE_TILE, sub = threadIdx.x & 7;
    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;  // pairs 4tx.., rows 4ty.. of the tile
    if (threadIdx.x < MOE_TILE) pair[threadIdx.x] = threadIdx.x < count ? order[first + threadIdx.x] : -1;
    __syncthreads();
    const u8* wrow[MATS][MOE_TILE_LOADS];
    const float* xrow[MOE_TILE_LOADS];
#pragma unroll
    for (int step = 0; step < MOE_TILE_LOADS; ++step) {
        const int r = (threadIdx.x + MOE_TILE_THREADS * step) >> 3;
        // rows past the end are read (as the last one) but not stored
        const long long at = ((long long)e * n_out + min(row0 + r, n_out - 1)) * row_bytes;
        wrow[0][step] = W0 + at;
        if (GATED) wrow[MATS - 1][step] = W1 + at;
        xrow[step] = pair[r] >= 0 ? X + (long long)(pair[r] / pairs_per_x) * n_in : nullptr;
    }
    const int units = n_in >> 5;
    float4 w[MATS][MOE_TILE_LOADS], x[MOE_TILE_LOADS];
    moe_tile_load<QT, MATS>(wrow, xrow, 0, sub, w, x);
    float acc[MATS][4][4] = {};
    for (int u = 0; u < units; ++u) {
#pragma unroll
        for (int step = 0; step < MOE_TILE_LOADS; ++step) {
            const int r = (threadIdx.x + MOE_TILE_THREADS * step) >> 3, k = 4 * sub;
#pragma unroll
            for (int m = 0; m < MATS; ++m) {
                ws[m][k][r] = w[m][step].x; ws[m][k + 1][r] = w[m][step].y;
                ws[m][k + 2][r] = w[m][step].z; ws[m][k + 3][r] = w[m][step].w;
            }
            xs[k][r] = x[step].x; xs[k + 1][r] = x[step].y; xs[k + 2][r] = x[step].z; xs[k + 3][r] = x[step].w;
        }
        __syncthreads();
        if (u + 1 < units) moe_tile_load<QT, MATS>(wrow, xrow, u + 1, sub, w, x);
#pragma unroll
        for (int k = 0; k < 32; ++k) {
            const float4 b = *reinterpret_cast<const float4*>(&xs[k][4 * tx]);
            const float bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int m = 0; m < MATS; ++m) {
                const float4 a = *reinterpret_cast<const float4*>(&ws[m][k][4 * ty]);
                const float av[4] = {a.x, a.y, a.z, a.w};
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[m][i][j] += av[i] * bv[j];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int row = row0 + 4 * ty + i, p = pair[4 * tx + j];
            if (row >= n_out || p < 0) continue;
            const int at = e * n_out + row;
            Y[(long long)p * n_out + row] = GATED ? swiglu_oai(acc[0][i][j] + b0[at], acc[MATS - 1][i][j] + b1[at])
                                                  : acc[0][i][j] + b0[at];
        }
}

// The grouped path on tensor cores: moe_tiled_impl's tiles of an expert's pairs, MOE_MMA_ROWS
// rows a block, products through mma.sync m16n8k16 on bf16 with fp32 accumulation. To keep the
// fp32 kernels' precision (a relative error of 1e-5, not bf16's 4e-3), every value goes in as
// the sum of two bf16 values, hi = bf16(v) and lo = bf16(v - hi), 16 significant bits in all,
// and a product as hi*hi + hi*lo + lo*hi (the lo*lo term is below fp32 rounding of the sum).
// MXFP4 and BF16 weights are bf16 values already (an fp4 value times a power of two), so their
// lo is zero and that product is left out: two mma per product instead of three.
#define MOE_MMA_ROWS 64     // rows a block: four warps of 16
#define MOE_MMA_THREADS 128
#define MOE_MMA_STRIDE 20   // u32 (bf16 pairs) a shared-memory row: a unit's 16 and 4 against bank conflicts
#define MOE_MMA_LOADS (MOE_MMA_ROWS * 8 / MOE_MMA_THREADS)   // weight pieces (row, 4 values) a thread a unit
#define MOE_MMA_X_LOADS (MOE_TILE * 8 / MOE_MMA_THREADS)     // input pieces (pair, 4 values) a thread a unit

// Bits of f rounded to the nearest bf16 (ties to even), and a bf16's value.
__device__ __forceinline__ u32 bf16_bits(float f) {
    const u32 u = __float_as_uint(f);
    return (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}
__device__ __forceinline__ float bf16_value(u32 bits) { return __uint_as_float(bits << 16); }

// Four values as bf16 pairs (the lower k in the low half, as mma fragments hold them): hi, and lo
// the rounding left over.
__device__ __forceinline__ void split_bf16(float4 v, uint2& hi, uint2& lo) {
    const u32 a = bf16_bits(v.x), b = bf16_bits(v.y), c = bf16_bits(v.z), d = bf16_bits(v.w);
    hi = make_uint2(a | (b << 16), c | (d << 16));
    lo = make_uint2(bf16_bits(v.x - bf16_value(a)) | (bf16_bits(v.y - bf16_value(b)) << 16),
                    bf16_bits(v.z - bf16_value(c)) | (bf16_bits(v.w - bf16_value(d)) << 16));
}

#ifndef MOE_ON_CPU  // tests/cuda_on_cpu/moe_emulation.h has a CPU version
// c (16 x 8, fp32) += a (16 x 16, row-major bf16) * b (16 x 8, column-major bf16). Fragments as
// the PTX ISA lays them out: lane l in group g = l / 4 with index t = l % 4 holds A's rows g and
// g + 8 at columns 2t..2t+1 (registers 0, 1) and 2t+8..2t+9 (2, 3), B's column g at rows 2t..2t+1
// and 2t+8..2t+9, and c's rows g (0, 1) and g + 8 (2, 3) at columns 2t..2t+1.
__device__ __forceinline__ void mma_bf16_16x8x16(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
#endif

// Weights that are bf16 values as decoded: no lo part.
template <int QT> struct ExactInBf16 { static constexpr bool value = QT == QT_MXFP4 || QT == QT_BF16; };

// Grid (rows / MOE_MMA_ROWS, the launcher's bound on tiles), MOE_MMA_THREADS threads; inputs and
// outputs as moe_tiled_impl. Per 32-value unit the block decodes its rows' weights and gathers its
// pairs' inputs, splits them into bf16 hi and lo parts in shared memory, and warp w multiplies
// rows 16w.. by all MOE_TILE pairs (four 8-pair fragments), both k halves of the unit; the next
// unit's loads are issued before this unit's products.
template <int QT, bool GATED>
__device__ void moe_mma_impl(const u8* __restrict__ W0, const u8* __restrict__ W1, const float* __restrict__ b0,
                             const float* __restrict__ b1, const float* __restrict__ X, const int* __restrict__ order,
                             const int* __restrict__ tiles, const int* __restrict__ n_tiles, float* __restrict__ Y,
                             int pairs_per_x, int n_in, int n_out, long long row_bytes) {
    constexpr int MATS = GATED ? 2 : 1, PARTS = ExactInBf16<QT>::value ? 1 : 2;  // weight parts: hi (, lo)
    __shared__ __align__(16) u32 ws[MATS][PARTS][MOE_MMA_ROWS][MOE_MMA_STRIDE], xs[2][MOE_TILE][MOE_MMA_STRIDE];
    __shared__ int pair[MOE_TILE];
    const int tile = blockIdx.y;
    if (tile >= *n_tiles) return;  // the whole block: tile is uniform across it
    const int e = tiles[3 * tile], first = tiles[3 * tile + 1], count = tiles[3 * tile + 2];
    const int row0 = blockIdx.x * MOE_MMA_ROWS, sub = threadIdx.x & 7;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tig = lane & 3;
    if (threadIdx.x < MOE_TILE) pair[threadIdx.x] = threadIdx.x < count ? order[first + threadIdx.x] : -1;
    __syncthreads();
    const u8* wrow[MATS][MOE_MMA_LOADS];
#pragma unroll
    for (int step = 0; step < MOE_MMA_LOADS; ++step) {
        const int r = (threadIdx.x + MOE_MMA_THREADS * step) >> 3;
        // rows past the end are read (as the last one) but not stored
        const long long at = ((long long)e * n_out + min(row0 + r, n_out - 1)) * row_bytes;
        wrow[0][step] = W0 + at;
        if (GATED) wrow[MATS - 1][step] = W1 + at;
    }
    const float* xrow[MOE_MMA_X_LOADS];
#pragma unroll
    for (int step = 0; step < MOE_MMA_X_LOADS; ++step) {
        const int p = pair[(threadIdx.x + MOE_MMA_THREADS * step) >> 3];
        xrow[step] = p >= 0 ? X + (long long)(p / pairs_per_x) * n_in : nullptr;
    }
    float4 w[MATS][MOE_MMA_LOADS], x[MOE_MMA_X_LOADS];
    auto load = [&](int u) {
#pragma unroll
        for (int step = 0; step < MOE_MMA_LOADS; ++step)
#pragma unroll
            for (int m = 0; m < MATS; ++m) w[m][step] = decode4<QT>(wrow[m][step], u, sub);
#pragma unroll
        for (int step = 0; step < MOE_MMA_X_LOADS; ++step)
            x[step] = xrow[step] ? *reinterpret_cast<const float4*>(xrow[step] + u * 32 + 4 * sub)
                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    };
    const int units = n_in >> 5;
    load(0);
    float acc[MATS][4][4] = {};
    for (int u = 0; u < units; ++u) {
        uint2 hi, lo;
#pragma unroll
        for (int step = 0; step < MOE_MMA_LOADS; ++step) {
            const int r = (threadIdx.x + MOE_MMA_THREADS * step) >> 3;
#pragma unroll
            for (int m = 0; m < MATS; ++m) {
                split_bf16(w[m][step], hi, lo);
                *reinterpret_cast<uint2*>(&ws[m][0][r][2 * sub]) = hi;
                if (PARTS > 1) *reinterpret_cast<uint2*>(&ws[m][PARTS - 1][r][2 * sub]) = lo;
            }
        }
#pragma unroll
        for (int step = 0; step < MOE_MMA_X_LOADS; ++step) {
            const int r = (threadIdx.x + MOE_MMA_THREADS * step) >> 3;
            split_bf16(x[step], hi, lo);
            *reinterpret_cast<uint2*>(&xs[0][r][2 * sub]) = hi;
            *reinterpret_cast<uint2*>(&xs[1][r][2 * sub]) = lo;
        }
        __syncthreads();
        if (u + 1 < units) load(u + 1);
#pragma unroll
        for (int half = 0; half < 2; ++half) {  // k 0..15 and 16..31 of the unit: u32 columns 8 half..
            const int c = 8 * half + tig, r = 16 * warp + g;
            u32 b[4][2][2];  // [pair fragment][hi, lo][k +0, +8]
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int part = 0; part < 2; ++part) {
                    b[nt][part][0] = xs[part][8 * nt + g][c];
                    b[nt][part][1] = xs[part][8 * nt + g][c + 4];
                }
#pragma unroll
            for (int m = 0; m < MATS; ++m) {
                u32 a[PARTS][4];
#pragma unroll
                for (int part = 0; part < PARTS; ++part) {
                    a[part][0] = ws[m][part][r][c];
                    a[part][1] = ws[m][part][r + 8][c];
                    a[part][2] = ws[m][part][r][c + 4];
                    a[part][3] = ws[m][part][r + 8][c + 4];
                }
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
                    mma_bf16_16x8x16(acc[m][nt], a[0], b[nt][0][0], b[nt][0][1]);
                    mma_bf16_16x8x16(acc[m][nt], a[0], b[nt][1][0], b[nt][1][1]);
                    if (PARTS > 1) mma_bf16_16x8x16(acc[m][nt], a[PARTS - 1], b[nt][0][0], b[nt][0][1]);
                }
            }
        }
        __syncthreads();
    }
    // acc[m][nt][i]: row 16 warp + g + 8 (i / 2) of the block's, pair slot 8 nt + 2 tig + i % 2
#pragma unroll
    for (int nt = 0; nt < 4; ++nt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int row = row0 + 16 * warp + g + 8 * (i >> 1), p = pair[8 * nt + 2 * tig + (i & 1)];
            if (row >= n_out || p < 0) continue;
            const int at = e * n_out + row;
            Y[(long long)p * n_out + row] = GATED ? swiglu_oai(acc[0][nt][i] + b0[at], acc[MATS - 1][nt][i] + b1[at])
                                                  : acc[0][nt][i] + b0[at];
        }
}

// out[t, r] = residual[t, r] + sum_j weights[t, j] * y[t * k + j, r], j in slot order (the order
// of moe_down's sum), one thread per value of out (n of them, n_out a token).
extern "C" __global__ void moe_combine(const float* __restrict__ y, const float* __restrict__ weights,
                                       const float* __restrict__ residual, float* __restrict__ out, int k,
                                       int n_out, long long n) {
    launch_dependents();
    wait_for_prerequisites();
    const long long at = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (at >= n) return;
    const long long t = at / n_out, r = at % n_out;
    float sum = 0.0f;
    for (int j = 0; j < k; ++j) sum += weights[t * k + j] * y[(t * k + j) * n_out + r];
    out[at] = residual[at] + sum;
}

#define MOE(NAME, QT)                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * MOE_WARPS)                                  \
    moe_gate_up_##NAME(const u8* Wg, const u8* Wu, const float* bg, const float* bu,              \
                       const float* x, const int* ids, float* act, int n_in, int n_ff, int k,     \
                       long long row_bytes) {                                                     \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        moe_gate_up_impl<QT>(Wg, Wu, bg, bu, x, ids, act, n_in, n_ff, k, row_bytes);              \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * MOE_WARPS)                                  \
    moe_down_##NAME(const u8* Wd, const float* bd, const float* act, const int* ids,              \
                    const float* weights, const float* residual, float* y, int n_ff, int n_out,   \
                    int k, long long row_bytes) {                                                 \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        moe_down_impl<QT>(Wd, bd, act, ids, weights, residual, y, n_ff, n_out, k, row_bytes);     \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MOE_TILE_THREADS)                                \
    moe_tiled_gate_up_##NAME(const u8* Wg, const u8* Wu, const float* bg, const float* bu,        \
                             const float* x, const int* order, const int* tiles,                  \
                             const int* n_tiles, float* act, int k, int n_in, int n_ff,           \
                             long long row_bytes) {                                               \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        moe_tiled_impl<QT, true>(Wg, Wu, bg, bu, x, order, tiles, n_tiles, act, k, n_in, n_ff,    \
                                 row_bytes);                                                      \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MOE_TILE_THREADS)                                \
    moe_tiled_down_##NAME(const u8* Wd, const float* bd, const float* act, const int* order,      \
                          const int* tiles, const int* n_tiles, float* y, int n_ff, int n_out,    \
                          long long row_bytes) {                                                  \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        moe_tiled_impl<QT, false>(Wd, Wd, bd, bd, act, order, tiles, n_tiles, y, 1, n_ff, n_out,  \
                                  row_bytes);                                                     \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MOE_MMA_THREADS)                                 \
    moe_mma_gate_up_##NAME(const u8* Wg, const u8* Wu, const float* bg, const float* bu,          \
                           const float* x, const int* order, const int* tiles,                    \
                           const int* n_tiles, float* act, int k, int n_in, int n_ff,             \
                           long long row_bytes) {                                                 \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        moe_mma_impl<QT, true>(Wg, Wu, bg, bu, x, order, tiles, n_tiles, act, k, n_in, n_ff,      \
                               row_bytes);                                                        \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MOE_MMA_THREADS)                                 \
    moe_mma_down_##NAME(const u8* Wd, const float* bd, const float* act, const int* order,        \
                        const int* tiles, const int* n_tiles, float* y, int n_ff, int n_out,      \
                        long long row_bytes) {                                                    \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        moe_mma_impl<QT, false>(Wd, Wd, bd, bd, act, order, tiles, n_tiles, y, 1, n_ff, n_out,    \
                                row_bytes);                                                       \
    }

MOE(f32, QT_F32)
MOE(f16, QT_F16)
MOE(bf16, QT_BF16)
MOE(q4_0, QT_Q4_0)
MOE(q5_0, QT_Q5_0)
MOE(q8_0, QT_Q8_0)
MOE(mxfp4, QT_MXFP4)
MOE(q4_k, QT_Q4_K)
MOE(q6_k, QT_Q6_K)
