// y[t, r] = sum_k W[r, k] * x[t, k] (+ bias[r]) (+ residual[t, r]) with W quantized in VRAM and
// decoded in registers. The optional bias (qwen2's q/k/v) and residual (the skip connection
// after the o and down projections) ride on the projection, saving a launch each; in decode, so
// do the RMSNorm before q/k/v and before the gate (a norm read by all of a block's rows), and
// q, k and v share one launch.
// In the mat-vecs and matmul_few, eight lanes share a 32-value unit (quant.cuh), so a warp walks
// four units per step with coalesced loads of both the weights and x (matvec_gated and
// matvec_many: four lanes for the types of PAIRS, eight units a step, unit_dot; matmul_few: of 2
// or 4 rows and up to FEW_TOKENS tokens, each x value loaded once for all the rows; kernels.py
// runs it for prefill="tiled" only); matmul_few_mma (prompts of 2..31 tokens by default) multiplies weights
// decoded straight into mma fragments (gemm_mma.cuh); matmul_tiled (prompts of a tile of tokens or
// more) works on tiles in shared memory, and matmul_mma (the same prompts, on tensor cores:
// gemm_mma.cuh) on fp16 tiles. Accumulation is in fp32 (finer than the fp16 accumulation
// M0-W-1201 allows).
// Launched with programmatic dependent launch (common.cuh), the decode mat-vecs copy their rows'
// weights into shared memory and matmul_few asks L2 for its rows before they wait for the kernel
// before them, so those reads overlap its tail; the other kernels wait first.
#include "gemm_mma.cuh"

#define WARPS 4
#define FEW_TOKENS 8     // tokens per weight pass in matmul_few
#define PREFILL_TILE 32  // rows and tokens of a matmul_tiled block (64 threads, 4 x 4 each)

// The decode mat-vecs stage what they read in shared memory with stage_async (common.cuh): the
// weight rows (and the norm's weight) before they wait for the kernel before them, x after. Each
// thread's copies are all in flight at once, where loads into registers were issued a step or
// two ahead of their use (the compiler's schedule), so a warp waited on memory several times per
// row. Dynamic shared memory, in this order (kernels.py's matvec_shared gives its size): the
// block's rows, a stage_bytes(row_bytes) slot each; x (n_in floats); with a norm, its weight.
// The split mat-vec (long rows, a row a block) reads x where it is instead: staging all of x for
// every row cost more than its one row (down: 19 KB of x against 2.7-4 KB of weights); so does
// matvec_many_* (launches of many rows, kernels.MATVEC_STAGED_X_ROWS: the output head), where a
// copy of x per block of four rows would be as many bytes again as the weights.

#ifndef STAGED_ON_CPU  // tests/cuda_on_cpu/matmul_main.cpp defines it as a plain array
extern __shared__ float4 staged[];
#endif

// RMSNorm folded into a decode mat-vec: x * w / rms(x) (as layers.cu's rmsnorm), in place in the
// staged x, by the whole block. Recomputing rms(x) per block (n values, from shared memory) costs
// less than a launch of its own. The sum of squares is dealt to NORM_THREADS threads whatever the
// block's size (the others add nothing), so every block size gives the same bits.
#define NORM_THREADS 128
__device__ void rmsnorm_in_shared(float* x, const float* w, float eps, int n) {
    float ss = 0.0f;
    if (threadIdx.x < NORM_THREADS)
        for (int i = threadIdx.x; i < n; i += NORM_THREADS) ss += x[i] * x[i];
    const float inv = rsqrtf(block_sum(ss) / (float)n + eps);  // every thread's reads of x come before its barriers
    for (int i = threadIdx.x; i < n; i += blockDim.x) x[i] = x[i] * inv * w[i];
    __syncthreads();
}

// Waits for the kernel before this one, then stages x (unless stage_x is false: then x stays
// where it is), waits for every copy of the block, and normalises x where there is a norm (its
// weight staged at norm_at before the wait). Returns x. The staged kernels let their dependents
// launch (launch_dependents) only once their sums are done, not before this wait: launched early,
// the next kernels' blocks held shared memory and issued their copies while this one still
// needed the SMs and the memory (H200 decode: 1,076-1,089 tokens/s with the early trigger,
// 1,118-1,153 with no PDL at all, 1,220-1,247 with the late one; NOTES.md).
__device__ const float* stage_inputs(u8* x_at, const float* x, bool stage_x, const float* norm, const u8* norm_at,
                                     float eps, int n) {
    wait_for_prerequisites();
    if (stage_x) x = reinterpret_cast<const float*>(stage_async(x_at, x, 4ll * n, threadIdx.x, blockDim.x));
    stage_wait();
    __syncthreads();
    if (norm) rmsnorm_in_shared(const_cast<float*>(x), reinterpret_cast<const float*>(norm_at), eps, n);
    return x;
}

// acc plus a lane's share of unit u of a row times x: decode4's group lane % 8 (eight lanes a
// unit), or, PAIRED, decode_pair's groups g = lane % 8 and g ^ 4 (four lanes a unit, u = lane / 4
// modulo 8: one decode of the scale and high bits for eight values, where eight lanes each
// decoded them for four), its eight products added to acc one by one (FMAs). The lanes of odd
// units thus start from their unit's second half, and the eight lanes of a shared-memory phase
// (two units) read x from 32 different banks.
template <int QT, bool PAIRED>
__device__ __forceinline__ float unit_dot(float acc, const u8* wrow, const float* x, int u, int lane) {
    if constexpr (PAIRED) {
        const int g = lane & 7;
        const Float4Pair w = decode_pair<QT>(wrow, u, g);
        const float4 xa = *reinterpret_cast<const float4*>(x + u * 32 + 4 * g);
        const float4 xb = *reinterpret_cast<const float4*>(x + u * 32 + 4 * (g ^ 4));
        acc += w.a.x * xa.x; acc += w.a.y * xa.y; acc += w.a.z * xa.z; acc += w.a.w * xa.w;
        acc += w.b.x * xb.x; acc += w.b.y * xb.y; acc += w.b.z * xb.z; acc += w.b.w * xb.w;
        return acc;
    } else {
        return acc + dot4(decode4<QT>(wrow, u, lane & 7), *reinterpret_cast<const float4*>(x + u * 32 + 4 * (lane & 7)));
    }
}

// Calls step(u, inside) for the units of a row of `units` that this lane takes with unit_dot
// (LANES lanes a unit, a warp step STEP = 32 / LANES units; SPLIT warps a row: units
// part * STEP + lane / LANES, every SPLIT * STEP-th on), in trips the same for every lane: 28
// units in steps of 8 would otherwise leave half the lanes 3 trips and half 4, run one after the
// other. Past the last unit a lane gets the last unit again with inside false, to keep its sums
// (selects, not a branch: the steps stay one block to schedule).
template <bool PAIRED, int SPLIT, typename Step>
__device__ __forceinline__ void each_unit(int units, int part, int lane, Step step) {
    constexpr int LANES = PAIRED ? 4 : 8, STEP = 32 / LANES;
#pragma unroll 4
    for (int u0 = part * STEP; u0 < units; u0 += STEP * SPLIT) {
        const int u = u0 + lane / LANES;
        step(u < units ? u : units - 1, u < units);
    }
}

// A lane's share of a row's dot product with x: units part * 4 + lane / 8, every 4 * SPLIT-th on,
// or PAIRED (the types of PAIRS) those each_unit gives.
template <int QT, int SPLIT, bool PAIRED = false>
__device__ __forceinline__ float row_dot(const u8* wrow, const float* x, int units, int part, int lane) {
    float acc = 0.0f;
    if constexpr (PAIRED) {
        each_unit<true, SPLIT>(units, part, lane, [&](int u, bool inside) {
            const float with_u = unit_dot<QT, true>(acc, wrow, x, u, lane);
            acc = inside ? with_u : acc;
        });
    } else {
#pragma unroll 4
        for (int u = part * 4 + (lane >> 3); u < units; u += 4 * SPLIT) acc = unit_dot<QT, false>(acc, wrow, x, u, lane);
    }
    return acc;
}

// Decode (one token): a warp per row, or SPLIT warps per row for long rows that come few
// (the down projection), each summing every SPLIT-th step; partial sums meet in shared memory.
// With norm, x is first RMS-normalised with weight norm (rmsnorm_in_shared). The third matrix of
// the stack may be of type QT2 (its rows row_bytes2 long): q and k of one type, v of another in
// one launch (matvec_normed2_*). PAIRED: four lanes a unit (row_dot).
template <int QT, int SPLIT, bool STAGE_X = SPLIT == 1, int QT2 = QT, bool PAIRED = false>
__device__ void matvec_impl(const Stack& s, const float* x, const float* norm, float eps, const float* residual,
                            int n_in, int n_out, long long row_bytes, long long row_bytes2 = 0) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * (WARPS / SPLIT) + warp / SPLIT, part = warp % SPLIT;
    const bool active = row < n_out;
    const int which = (row >= s.end0) + (row >= s.end1);
    const int local = row - pick(which, 0, s.end0, s.end1);  // the row within its matrix
    const bool second = QT2 != QT && which == 2;             // the same for the whole warp
    const long long slot = stage_bytes(QT2 != QT ? max(row_bytes, row_bytes2) : row_bytes);
    u8* slots = reinterpret_cast<u8*>(staged);
    u8* x_at = slots + WARPS / SPLIT * slot;
    u8* norm_at = x_at + stage_bytes(4ll * n_in);
    const u8* wrow = nullptr;
    if (active) {  // the row's SPLIT warps share its copy
        const long long bytes = second ? row_bytes2 : row_bytes;
        wrow = stage_async(slots + warp / SPLIT * slot, pick(which, s.W0, s.W1, s.W2) + local * bytes, bytes,
                           32 * part + lane, 32 * SPLIT);
    }
    if (norm) norm_at = const_cast<u8*>(stage_async(norm_at, norm, 4ll * n_in, threadIdx.x, blockDim.x));
    x = stage_inputs(x_at, x, STAGE_X, norm, norm_at, eps, n_in);
    const float* bias = pick(which, s.bias0, s.bias1, s.bias2);
    float* y = pick(which, s.y0, s.y1, s.y2);
    const int units = active ? n_in >> 5 : 0;
    float acc = second ? row_dot<QT2, SPLIT, PAIRED>(wrow, x, units, part, lane)
                       : row_dot<QT, SPLIT, PAIRED>(wrow, x, units, part, lane);
    launch_dependents();  // late: see stage_inputs
    acc = warp_sum(acc);
    if (SPLIT == 1) {
        if (lane == 0 && active) y[local] = epilogue(acc, bias, residual, local, local);
        return;
    }
    __shared__ float partial[WARPS];
    if (lane == 0) partial[warp] = acc;
    __syncthreads();
    if (part == 0 && lane == 0 && active) {
        float sum = 0.0f;
#pragma unroll
        for (int p = 0; p < SPLIT; ++p) sum += partial[warp + p];
        y[local] = epilogue(sum, bias, residual, local, local);
    }
}

// Decode of the SwiGLU gate from the un-normalised x: y[r] = silu(Wg[r] . h) * (Wu[r] . h) with
// h = rmsnorm(x) * norm, a warp per row reading both matrices (of one quant type) in one pass,
// four lanes a unit for the types of PAIRS (unit_dot), else in matvec_impl's order of
// summation. Shared memory as matvec_impl's, two slots a warp (its gate row, then its up row).
// GATED_WARPS rows a block: each block stages and normalises x, which for 4864 rows in blocks of
// 4 moved more bytes from L2 than the weights did.
#define GATED_WARPS 8
template <int QT>
__device__ void matvec_gated_impl(const u8* __restrict__ Wg, const u8* __restrict__ Wu, const float* x,
                                  const float* norm, float eps, float* __restrict__ y, int n_in, int n_out,
                                  long long row_bytes) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = blockIdx.x * GATED_WARPS + warp;
    const bool active = row < n_out;
    u8* slots = reinterpret_cast<u8*>(staged);
    u8* x_at = slots + 2 * GATED_WARPS * stage_bytes(row_bytes);
    const u8* norm_at = stage_async(x_at + stage_bytes(4ll * n_in), norm, 4ll * n_in, threadIdx.x, blockDim.x);
    const u8 *gate = nullptr, *up = nullptr;
    if (active) {
        gate = stage_async(slots + 2 * warp * stage_bytes(row_bytes), Wg + row * row_bytes, row_bytes, lane, 32);
        up = stage_async(slots + (2 * warp + 1) * stage_bytes(row_bytes), Wu + row * row_bytes, row_bytes, lane, 32);
    }
    x = stage_inputs(x_at, x, true, norm, norm_at, eps, n_in);
    const int units = active ? n_in >> 5 : 0;
    float g = 0.0f, u = 0.0f;
    each_unit<PAIRS<QT>, 1>(units, 0, lane, [&](int k, bool inside) {
        const float g_k = unit_dot<QT, PAIRS<QT>>(g, gate, x, k, lane);
        const float u_k = unit_dot<QT, PAIRS<QT>>(u, up, x, k, lane);
        g = inside ? g_k : g;
        u = inside ? u_k : u;
    });
    launch_dependents();  // late: see stage_inputs
    g = warp_sum(g);
    u = warp_sum(u);
    if (lane == 0 && active) y[row] = g / (1.0f + __expf(-g)) * u;  // as layers.cu's swiglu
}

// Prefill of fewer tokens than a tile (matmul_tiled below would leave most of a tile empty and
// the GPU idle): a block per ROWS rows (2 or 4: kernels.py picks per shape) and group of
// FEW_TOKENS tokens (blockIdx.y), of one warp, or of SPLIT warps for long rows (as matvec_split:
// each sums every SPLIT-th step, the parts meeting in shared memory in order). For each 32-value
// unit a lane loads its four values of every token's x once and multiplies them with its four
// values of each of the ROWS rows, decoded in registers, so x is read once per ROWS rows (with a
// warp per row, x was most of the traffic: ~25 MB from L2 for 8 tokens of an 896 x 896 matrix,
// against 0.45 MB of weights). Each token's sum runs in the mat-vec's order, bit for bit
// (tests/test_matmul_kernels_on_cpu.py).
template <int QT, int ROWS, int SPLIT>
__device__ void matmul_few_impl(const u8* __restrict__ W, const float* __restrict__ X, float* __restrict__ Y,
                                const float* bias, const float* residual, int n_in, int n_out, int n_tok,
                                long long row_bytes) {
    const int lane = threadIdx.x & 31, sub = lane & 7, part = threadIdx.x >> 5;
    const int row0 = blockIdx.x * ROWS, n_rows = min(ROWS, n_out - row0);
    const int t0 = blockIdx.y * FEW_TOKENS, n_t = min(FEW_TOKENS, n_tok - t0);
    const u8* wrows = W + row0 * row_bytes;
    prefetch_l2(wrows, n_rows * row_bytes, threadIdx.x, 32 * SPLIT);  // the block's rows, one after another
    launch_dependents();
    wait_for_prerequisites();
    const float* x = X + (long long)t0 * n_in + 4 * sub;
    const int units = n_in >> 5;
    float acc[ROWS][FEW_TOKENS] = {};
    for (int u = part * 4 + (lane >> 3); u < units; u += 4 * SPLIT) {
        float4 xv[FEW_TOKENS];
#pragma unroll
        for (int t = 0; t < FEW_TOKENS; ++t)
            if (t < n_t) xv[t] = *reinterpret_cast<const float4*>(x + (long long)t * n_in + u * 32);
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {  // rows past the end (the last block's) repeat its last, not stored
            const float4 w = decode4<QT>(wrows + min(r, n_rows - 1) * row_bytes, u, sub);
#pragma unroll
            for (int t = 0; t < FEW_TOKENS; ++t)
                if (t < n_t) acc[r][t] += dot4(w, xv[t]);
        }
    }
    __shared__ float partial[SPLIT][ROWS][FEW_TOKENS];
#pragma unroll
    for (int r = 0; r < ROWS; ++r)
#pragma unroll
        for (int t = 0; t < FEW_TOKENS; ++t) {
            if (t >= n_t) continue;  // the same for the whole block
            const float s = warp_sum(acc[r][t]);
            if (SPLIT == 1 && lane == 0 && r < n_rows) {
                const long long at = (long long)(t0 + t) * n_out + row0 + r;
                Y[at] = epilogue(s, bias, residual, row0 + r, at);
            }
            if (SPLIT > 1 && lane == 0) partial[part][r][t] = s;
        }
    if (SPLIT == 1) return;
    __syncthreads();
    const int r = threadIdx.x / FEW_TOKENS, t = threadIdx.x % FEW_TOKENS;  // adds row r's token t's parts, in order
    if (r < n_rows && t < n_t) {
        float s = 0.0f;
#pragma unroll
        for (int p = 0; p < SPLIT; ++p) s += partial[p][r][t];
        const long long at = (long long)(t0 + t) * n_out + row0 + r;
        Y[at] = epilogue(s, bias, residual, row0 + r, at);
    }
}

// Prefill of a tile of tokens or more: a block of 64 threads computes a PREFILL_TILE x
// PREFILL_TILE tile of Y (rows x tokens), each thread a 4 x 4 piece of it. For each 32-value unit
// of the rows, the block decodes the tile's weights and loads its tokens' x into shared memory
// (k-major, padded against bank conflicts) once, so every decoded weight serves PREFILL_TILE
// tokens and every x value PREFILL_TILE rows; each sum runs over k in order, in fp32. The next
// unit's loads are issued before the current unit's products, so their latency hides behind them.
#define PREFILL_LOADS (PREFILL_TILE * 8 / 64)  // (row or token, 4 values) pairs per thread per unit

template <int QT>
__device__ __forceinline__ void prefill_load(const u8* W, const float* X, int u, int row0, int t0, int n_in,
                                             int n_out, int n_tok, long long row_bytes, float4* w, float4* x) {
#pragma unroll
    for (int step = 0; step < PREFILL_LOADS; ++step) {
        const int r = (threadIdx.x + 64 * step) >> 3, sub = threadIdx.x & 7;
        w[step] = decode4<QT>(W + min(row0 + r, n_out - 1) * row_bytes, u, sub);  // rows past the end are not stored
        x[step] = t0 + r < n_tok ? *reinterpret_cast<const float4*>(X + (long long)(t0 + r) * n_in + u * 32 + 4 * sub)
                                 : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
}

// A launch of too few tiles to fill the GPU (kernels.py decides) splits the rows over blockIdx.z,
// each part summing split_units units into its own slice of `partial`; sum_splits then adds the
// slices in order, so the result does not depend on which block finishes first (M0-W-1826).
template <int QT>
__device__ void matmul_tiled_impl(const u8* __restrict__ W, const float* __restrict__ X, float* __restrict__ Y,
                                  const float* bias, const float* residual, float* __restrict__ partial,
                                  int split_units, int n_in, int n_out, int n_tok, long long row_bytes) {
    __shared__ __align__(16) float ws[32][PREFILL_TILE + 4], xs[32][PREFILL_TILE + 4];
    const int tx = threadIdx.x & 7, ty = threadIdx.x >> 3;  // tokens 4tx.., rows 4ty.. of the tile
    const int row0 = blockIdx.x * PREFILL_TILE, t0 = blockIdx.y * PREFILL_TILE;
    const int first = blockIdx.z * split_units, units = min(n_in >> 5, first + split_units);
    float4 w[PREFILL_LOADS], x[PREFILL_LOADS];
    prefill_load<QT>(W, X, first, row0, t0, n_in, n_out, n_tok, row_bytes, w, x);
    float acc[4][4] = {};
    for (int u = first; u < units; ++u) {
#pragma unroll
        for (int step = 0; step < PREFILL_LOADS; ++step) {
            const int r = (threadIdx.x + 64 * step) >> 3, k = 4 * (threadIdx.x & 7);
            ws[k][r] = w[step].x; ws[k + 1][r] = w[step].y; ws[k + 2][r] = w[step].z; ws[k + 3][r] = w[step].w;
            xs[k][r] = x[step].x; xs[k + 1][r] = x[step].y; xs[k + 2][r] = x[step].z; xs[k + 3][r] = x[step].w;
        }
        __syncthreads();
        if (u + 1 < units) prefill_load<QT>(W, X, u + 1, row0, t0, n_in, n_out, n_tok, row_bytes, w, x);
#pragma unroll
        for (int k = 0; k < 32; ++k) {
            const float4 a = *reinterpret_cast<const float4*>(&ws[k][4 * ty]);
            const float4 b = *reinterpret_cast<const float4*>(&xs[k][4 * tx]);
            const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int row = row0 + 4 * ty + i, t = t0 + 4 * tx + j;
            const long long at = (long long)t * n_out + row;
            if (row >= n_out || t >= n_tok) continue;
            if (gridDim.z == 1) Y[at] = epilogue(acc[i][j], bias, residual, row, at);
            else partial[blockIdx.z * (long long)n_tok * n_out + at] = acc[i][j];
        }
}

// Y = the sum of the `splits` slices of partial (n_tok x n_out each, from matmul_tiled or
// matmul_mma), in order, with the epilogue.
extern "C" __global__ void sum_splits(const float* __restrict__ partial, float* __restrict__ Y, const float* bias,
                                      const float* residual, int splits, int n_out, long long n) {
    launch_dependents();
    wait_for_prerequisites();
    const long long at = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (at >= n) return;
    float s = 0.0f;
    for (int z = 0; z < splits; ++z) s += partial[z * n + at];
    Y[at] = epilogue(s, bias, residual, (int)(at % n_out), at);
}

// The stacked outputs of matmul_stacked_mma's split launch: element (t, r) of matrix i (rows
// [start, end) of the stack) is the sum of its `splits` slices in partial (gemm_mma.cuh's layout), in
// order, plus matrix i's bias, stored at row r - start, token t of y_i; n = n_tok x the stack's rows.
extern "C" __global__ void sum_splits_stacked(const float* __restrict__ partial, const float* bias0,
                                              const float* bias1, const float* bias2, float* y0, float* y1,
                                              float* y2, int end0, int end1, int splits, int n_out, int n_tok) {
    launch_dependents();
    wait_for_prerequisites();
    const long long at = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (at >= (long long)n_tok * n_out) return;
    const int which = (at >= (long long)n_tok * end0) + (at >= (long long)n_tok * end1);
    const int start = pick(which, 0, end0, end1), rows = pick(which, end0, end1, n_out) - start;
    const long long local = at - (long long)n_tok * start;  // t * rows + r within matrix i
    const float* p = partial + (long long)splits * n_tok * start + local;
    float s = 0.0f;
    for (int z = 0; z < splits; ++z) s += p[z * (long long)n_tok * rows];
    pick(which, y0, y1, y2)[local] = epilogue(s, pick(which, bias0, bias1, bias2), nullptr, (int)(local % rows), local);
}

// The tensor-core prefill kernels (gemm_mma.cuh) of one type and token tile: matmul_mma_,
// matmul_stacked_mma_ and matmul_gated_mma_<type>_<tokens per block>.
#define MATMUL_MMA(NAME, QT, TOKENS)                                                              \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                     \
    matmul_mma_##NAME##_##TOKENS(const u8* W, const float* X, float* Y, const float* bias,        \
                                 const float* residual, float* partial, int split_units, int n_in, \
                                 int n_out, int n_tok, long long row_bytes) {                     \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        matmul_mma_impl<QT, TOKENS>(W, X, Y, bias, residual, partial, split_units, n_in, n_out,   \
                                    n_tok, row_bytes);                                            \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                     \
    matmul_stacked_mma_##NAME##_##TOKENS(const u8* W0, const u8* W1, const u8* W2,               \
                                         const float* bias0, const float* bias1,                  \
                                         const float* bias2, float* y0, float* y1, float* y2,     \
                                         int end0, int end1, const float* X, float* partial,      \
                                         int split_units, int n_in, int n_out, int n_tok,         \
                                         long long row_bytes) {                                   \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        const Stack s{W0, W1, W2, bias0, bias1, bias2, y0, y1, y2, end0, end1};                   \
        matmul_stacked_mma_impl<QT, TOKENS>(s, X, partial, split_units, n_in, n_out, n_tok,       \
                                            row_bytes);                                           \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                     \
    matmul_gated_mma_##NAME##_##TOKENS(const u8* Wg, const u8* Wu, const float* X, float* Y,     \
                                       int n_in, int n_out, int n_tok, long long row_bytes) {     \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        matmul_gated_mma_impl<QT, TOKENS>(Wg, Wu, X, Y, n_in, n_out, n_tok, row_bytes);           \
    }

// matmul_mma_rows32_<type>_64 and matmul_gated_mma_rows32_<type>_64: 64-token tiles in blocks
// of 32 rows.
#define MATMUL_MMA_ROWS32(NAME, QT)                                                               \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                     \
    matmul_mma_rows32_##NAME##_64(const u8* W, const float* X, float* Y, const float* bias,       \
                                  const float* residual, float* partial, int split_units,         \
                                  int n_in, int n_out, int n_tok, long long row_bytes) {          \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        matmul_mma_impl<QT, 64, 32>(W, X, Y, bias, residual, partial, split_units, n_in, n_out,   \
                                    n_tok, row_bytes);                                            \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(MMA_THREADS)                                     \
    matmul_gated_mma_rows32_##NAME##_64(const u8* Wg, const u8* Wu, const float* X, float* Y,    \
                                        int n_in, int n_out, int n_tok, long long row_bytes) {    \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        matmul_gated_mma_impl<QT, 64, 32>(Wg, Wu, X, Y, n_in, n_out, n_tok, row_bytes);           \
    }

// matmul_few_mma_<type>_<NT> and matmul_gated_few_mma_<type>_<NT>: 8 NT tokens a block on tensor
// cores (gemm_mma.cuh's few_mma_tiles), the launcher choosing 1..FEW_MMA_MAX_WARPS warps a block.
#define MATMUL_FEW_MMA(NAME, QT, NT)                                                              \
    extern "C" __global__ void __launch_bounds__(32 * FEW_MMA_MAX_WARPS)                          \
    matmul_few_mma_##NAME##_##NT(const u8* W, const float* X, float* Y, const float* bias,        \
                                 const float* residual, int n_in, int n_out, int n_tok,           \
                                 long long row_bytes) {                                           \
        matmul_few_mma_impl<QT, NT>(W, X, Y, bias, residual, n_in, n_out, n_tok, row_bytes);      \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * FEW_MMA_MAX_WARPS)                          \
    matmul_gated_few_mma_##NAME##_##NT(const u8* Wg, const u8* Wu, const float* X, float* Y,     \
                                       int n_in, int n_out, int n_tok, long long row_bytes) {     \
        matmul_gated_few_mma_impl<QT, NT>(Wg, Wu, X, Y, n_in, n_out, n_tok, row_bytes);           \
    }

// matmul_few<ROWS>_<type>: a warp a block; matmul_few<ROWS>_split_<type>: WARPS warps a block.
#define MATMUL_FEW(NAME, QT, ROWS)                                                                \
    extern "C" __global__ void __launch_bounds__(32)                                              \
    matmul_few##ROWS##_##NAME(const u8* W, const float* X, float* Y, const float* bias,           \
                              const float* residual, int n_in, int n_out, int n_tok,              \
                              long long row_bytes) {                                              \
        matmul_few_impl<QT, ROWS, 1>(W, X, Y, bias, residual, n_in, n_out, n_tok, row_bytes);     \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS)                                      \
    matmul_few##ROWS##_split_##NAME(const u8* W, const float* X, float* Y, const float* bias,     \
                                    const float* residual, int n_in, int n_out, int n_tok,        \
                                    long long row_bytes) {                                        \
        matmul_few_impl<QT, ROWS, WARPS>(W, X, Y, bias, residual, n_in, n_out, n_tok, row_bytes); \
    }

#define MATMUL(NAME, QT)                                                                          \
    extern "C" __global__ void __launch_bounds__(32 * WARPS)                                      \
    matvec_##NAME(const u8* W, const float* x, float* y, const float* bias, const float* residual, \
                  int n_in, int n_out, long long row_bytes) {                                     \
        const Stack s{W, W, W, bias, bias, bias, y, y, y, n_out, n_out};                          \
        matvec_impl<QT, 1>(s, x, nullptr, 0.0f, residual, n_in, n_out, row_bytes);                \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS)                                      \
    matvec_many_##NAME(const u8* W, const float* x, float* y, const float* bias,                  \
                       const float* residual, int n_in, int n_out, long long row_bytes) {         \
        const Stack s{W, W, W, bias, bias, bias, y, y, y, n_out, n_out};                          \
        constexpr bool PAIRED = PAIRS<QT>;                                                        \
        matvec_impl<QT, 1, false, QT, PAIRED>(s, x, nullptr, 0.0f, residual, n_in, n_out,         \
                                              row_bytes);                                         \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS)                                      \
    matvec_split_##NAME(const u8* W, const float* x, float* y, const float* bias,                 \
                        const float* residual, int n_in, int n_out, long long row_bytes) {        \
        const Stack s{W, W, W, bias, bias, bias, y, y, y, n_out, n_out};                          \
        matvec_impl<QT, WARPS>(s, x, nullptr, 0.0f, residual, n_in, n_out, row_bytes);            \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * WARPS)                                      \
    matvec_normed_##NAME(const u8* W0, const u8* W1, const u8* W2, const float* bias0,            \
                         const float* bias1, const float* bias2, float* y0, float* y1, float* y2, \
                         int end0, int end1, const float* x, const float* norm, float eps,        \
                         int n_in, int n_out, long long row_bytes) {                              \
        const Stack s{W0, W1, W2, bias0, bias1, bias2, y0, y1, y2, end0, end1};                   \
        matvec_impl<QT, 1>(s, x, norm, eps, nullptr, n_in, n_out, row_bytes);                     \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(32 * GATED_WARPS)                                \
    matvec_gated_##NAME(const u8* Wg, const u8* Wu, const float* x, const float* norm, float eps,  \
                        float* y, int n_in, int n_out, long long row_bytes) {                     \
        matvec_gated_impl<QT>(Wg, Wu, x, norm, eps, y, n_in, n_out, row_bytes);                   \
    }                                                                                             \
    MATMUL_FEW(NAME, QT, 2)                                                                       \
    MATMUL_FEW(NAME, QT, 4)                                                                       \
    MATMUL_FEW_MMA(NAME, QT, 1)                                                                   \
    MATMUL_FEW_MMA(NAME, QT, 2)                                                                   \
    extern "C" __global__ void __launch_bounds__(64)                                              \
    matmul_tiled_##NAME(const u8* W, const float* X, float* Y, const float* bias,                 \
                        const float* residual, float* partial, int split_units, int n_in,         \
                        int n_out, int n_tok, long long row_bytes) {                              \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        matmul_tiled_impl<QT>(W, X, Y, bias, residual, partial, split_units, n_in, n_out, n_tok,  \
                              row_bytes);                                                         \
    }                                                                                             \
    MATMUL_MMA(NAME, QT, 32)                                                                      \
    MATMUL_MMA(NAME, QT, 64)                                                                      \
    MATMUL_MMA(NAME, QT, 128)                                                                     \
    MATMUL_MMA_ROWS32(NAME, QT)

// matvec_normed2_<q and k's type>_<v's type>: the pairs of kernels.NORMED_PAIRS.
#define MATVEC_NORMED2(NAME, QT, NAME2, QT2)                                                      \
    extern "C" __global__ void __launch_bounds__(32 * WARPS)                                      \
    matvec_normed2_##NAME##_##NAME2(const u8* W0, const u8* W1, const u8* W2, const float* bias0,  \
                                    const float* bias1, const float* bias2, float* y0, float* y1, \
                                    float* y2, int end0, int end1, const float* x,                \
                                    const float* norm, float eps, int n_in, int n_out,            \
                                    long long row_bytes, long long row_bytes2) {                  \
        const Stack s{W0, W1, W2, bias0, bias1, bias2, y0, y1, y2, end0, end1};                   \
        matvec_impl<QT, 1, true, QT2>(s, x, norm, eps, nullptr, n_in, n_out, row_bytes, row_bytes2); \
    }

MATVEC_NORMED2(q5_0, QT_Q5_0, q8_0, QT_Q8_0)
MATVEC_NORMED2(q4_k, QT_Q4_K, q6_k, QT_Q6_K)

MATMUL(f32, QT_F32)
MATMUL(f16, QT_F16)
MATMUL(bf16, QT_BF16)
MATMUL(q4_0, QT_Q4_0)
MATMUL(q5_0, QT_Q5_0)
MATMUL(q8_0, QT_Q8_0)
MATMUL(mxfp4, QT_MXFP4)
MATMUL(q4_k, QT_Q4_K)
MATMUL(q6_k, QT_Q6_K)

// out[t, :] = row ids[t] of the quantized table E, decoded (the embedding lookup); one thread
// per four values. Nothing to prefetch before the wait: the rows are ids an earlier kernel may
// have written (in decode, the token just sampled).
template <int QT>
__device__ void embed_impl(const u8* __restrict__ E, const int* __restrict__ ids, float* __restrict__ out,
                           int n_embd, int n_tok, int n_rows, long long row_bytes) {
    const int t = blockIdx.y;
    const int q = blockIdx.x * blockDim.x + threadIdx.x;  // which group of four values
    if (t >= n_tok || q >= (n_embd >> 2)) return;
    int id = ids[t];
    id = id < 0 ? 0 : (id >= n_rows ? n_rows - 1 : id);  // bounds: the launcher validates ids
    reinterpret_cast<float4*>(out + (long long)t * n_embd)[q] = decode4<QT>(E + id * row_bytes, q >> 3, q & 7);
}

#define EMBED(NAME, QT)                                                                           \
    extern "C" __global__ void embed_##NAME(const u8* E, const int* ids, float* out, int n_embd,  \
                                            int n_tok, int n_rows, long long row_bytes) {         \
        launch_dependents();                                                                      \
        wait_for_prerequisites();                                                                 \
        embed_impl<QT>(E, ids, out, n_embd, n_tok, n_rows, row_bytes);                            \
    }

EMBED(f32, QT_F32)
EMBED(f16, QT_F16)
EMBED(bf16, QT_BF16)
EMBED(q4_0, QT_Q4_0)
EMBED(q5_0, QT_Q5_0)
EMBED(q8_0, QT_Q8_0)
EMBED(mxfp4, QT_MXFP4)
EMBED(q4_k, QT_Q4_K)
EMBED(q6_k, QT_Q6_K)
