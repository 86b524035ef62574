// Prefill GEMM on tensor cores: Y[t, r] = sum_k W[r, k] * X[t, k] (+ bias[r]) (+ residual[t, r])
// for any weight type decode4 knows (quant.cuh). Each block decodes a ROWS x 32 tile of W (one
// 32-value unit of each of its 64 or 32 rows) and converts a TOKENS x 32 tile of X (TOKENS 32, 64
// or 128), both to fp16 in shared memory, and its four warps multiply them with mma.sync m16n8k16
// (fp16 inputs, fp32 accumulation: M0-W-1201 allows fp16 inputs and accumulation, and fp32 sums
// are finer). Shared memory is double-buffered: unit u + 1 is loaded and decoded into registers
// while unit u's products run, then stored into the other buffer, so a unit costs one barrier.
// Wider token tiles decode each weight for more tokens; narrower ones, and 32-row blocks, give
// more blocks, which is what hides each unit's wait on device memory. With two matrices (gate
// and up) a block multiplies the same x tile by both and stores their SwiGLU. Below 32 tokens,
// few_mma_tiles (at the end) feeds mma straight from the decoded weights, without shared memory.
// The header takes nothing but a weight's blocks, its row length and count, and its type, so other
// modules (the experts of moe.cu) can use matmul_mma_impl on a slice of a weight stack.
#pragma once
#include "mma.cuh"
#include "quant.cuh"

#define MMA_ROWS 64      // rows of W per block (mma_tiles also takes 32)
#define MMA_THREADS 128  // four warps, each 32 rows and TOKENS / 2 tokens of the tile (TOKENS / 4 with 32 rows)
#define MMA_STRIDE 40    // fp16 values per shared-memory row: a unit's 32 plus 8 against bank conflicts

// The sum plus what rides on it; bias and residual may be null.
__device__ __forceinline__ float epilogue(float s, const float* bias, const float* residual, int row, long long at) {
    if (bias) s += bias[row];
    if (residual) s += residual[at];
    return s;
}

// Up to three matrices of one type and row length, stacked by rows so that one launch serves
// them all (q, k and v), each with its own bias and output; rows end0.. belong to the second,
// end1.. to the third. A plain mat-vec is a stack of one (end0 = end1 = n_out).
struct Stack {
    const u8 *W0, *W1, *W2;
    const float *bias0, *bias1, *bias2;
    float *y0, *y1, *y2;
    int end0, end1;
};

template <typename T>
__device__ __forceinline__ T pick(int part, T a, T b, T c) { return part == 0 ? a : (part == 1 ? b : c); }

// Unit u of the tile's ROWS rows of each of the NMAT matrices (decoded) and of its tokens, as
// fp16, into registers: piece `step` of a thread is row or token (threadIdx.x + MMA_THREADS * step)
// / 8, values 4 (threadIdx.x % 8)..+3, so eight threads read one row's unit and one token's 32
// values contiguously.
template <int ROWS> struct MmaRowLoads { static constexpr int n = ROWS * 8 / MMA_THREADS; };

template <int QT, int TOKENS, int NMAT, int ROWS>
__device__ __forceinline__ void mma_load(const u8* const* W, const float* X, int u, int row0, int t0, int n_in,
                                         int n_out, int n_tok, long long row_bytes,
                                         uint2 (*w)[MmaRowLoads<ROWS>::n], uint2* x) {
    const int sub = threadIdx.x & 7;
#pragma unroll
    for (int mat = 0; mat < NMAT; ++mat)
#pragma unroll
        for (int step = 0; step < MmaRowLoads<ROWS>::n; ++step) {
            const int r = (threadIdx.x + MMA_THREADS * step) >> 3;
            // Rows past the end read the last row's weights and are never stored.
            w[mat][step] = pack_half4(decode4<QT>(W[mat] + min(row0 + r, n_out - 1) * row_bytes, u, sub));
        }
#pragma unroll
    for (int step = 0; step < TOKENS * 8 / MMA_THREADS; ++step) {
        const int t = t0 + ((threadIdx.x + MMA_THREADS * step) >> 3);
        x[step] = t < n_tok ? pack_half4(*reinterpret_cast<const float4*>(X + (long long)t * n_in + u * 32 + 4 * sub))
                            : make_uint2(0u, 0u);
    }
}

template <int TOKENS, int NMAT, int ROWS>
__device__ __forceinline__ void mma_store(u16 (*ws)[2][ROWS][MMA_STRIDE], u16 (*xs)[MMA_STRIDE], int buf,
                                          const uint2 (*w)[MmaRowLoads<ROWS>::n], const uint2* x) {
    const int k = 4 * (threadIdx.x & 7);
#pragma unroll
    for (int mat = 0; mat < NMAT; ++mat)
#pragma unroll
        for (int step = 0; step < MmaRowLoads<ROWS>::n; ++step)
            *reinterpret_cast<uint2*>(&ws[mat][buf][(threadIdx.x + MMA_THREADS * step) >> 3][k]) = w[mat][step];
#pragma unroll
    for (int step = 0; step < TOKENS * 8 / MMA_THREADS; ++step)
        *reinterpret_cast<uint2*>(&xs[(threadIdx.x + MMA_THREADS * step) >> 3][k]) = x[step];
}

// A block computes ROWS rows (64: its warps two by two over rows and tokens, each 32 rows and
// TOKENS / 2 tokens; 32: the four side by side over tokens, each 32 rows and TOKENS / 4 tokens,
// twice the blocks for the same decoding of a weight per token) from row0 on and tokens
// blockIdx.y * TOKENS.. of the product of X with each of the NMAT matrices W[0..] (one type and
// shape), and stores
// - with NMAT == 1: Y = W[0] x (+ bias) (+ residual), or, with gridDim.z > 1, the sum over
//   split_units units from z * split_units into slice z of `partial` (n_tok x n_out each), which
//   sum_splits (matmul.cu) adds in order (M0-W-1826);
// - with NMAT == 2: Y = silu(W[0] x) * (W[1] x), the SwiGLU of gate and up (as layers.cu's).
// X is (n_tok, n_in) fp32, n_in a multiple of 32.
template <int QT, int TOKENS, int NMAT, int ROWS = MMA_ROWS>
__device__ void mma_tiles(const u8* const* W, int row0, const float* __restrict__ X, float* __restrict__ Y,
                          const float* bias, const float* residual, float* __restrict__ partial, int split_units,
                          int n_in, int n_out, int n_tok, long long row_bytes) {
    constexpr int WM = ROWS / 32, WN = MMA_THREADS / 32 / WM;  // warps over rows and over tokens
    constexpr int NI = TOKENS / WN / 8;  // 8-token mma tiles per warp
    static_assert((ROWS == 32 || ROWS == 64) && NI % 2 == 0, "a warp takes 32 rows and pairs of 8-token tiles");
    __shared__ __align__(16) u16 ws[NMAT][2][ROWS][MMA_STRIDE], xs[2][TOKENS][MMA_STRIDE];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, tig = lane & 3;
    const int m = lane >> 3, i = lane & 7;  // the ldmatrix matrix and row this lane points at
    const int wr = 32 * (warp % WM), wt = TOKENS / WN * (warp / WM);  // the warp's first row and token in the tile
    const int t0 = blockIdx.y * TOKENS;
    const int first = blockIdx.z * split_units, units = min(n_in >> 5, first + split_units);
    uint2 w[NMAT][MmaRowLoads<ROWS>::n], x[TOKENS * 8 / MMA_THREADS];
    float acc[NMAT][2][NI][4] = {};
    if (first < units) {
        mma_load<QT, TOKENS, NMAT, ROWS>(W, X, first, row0, t0, n_in, n_out, n_tok, row_bytes, w, x);
        mma_store<TOKENS, NMAT, ROWS>(ws, xs[0], 0, w, x);
    }
    __syncthreads();
    for (int u = first; u < units; ++u) {
        const int buf = (u - first) & 1;
        if (u + 1 < units)
            mma_load<QT, TOKENS, NMAT, ROWS>(W, X, u + 1, row0, t0, n_in, n_out, n_tok, row_bytes, w, x);
#pragma unroll
        for (int kk = 0; kk < 32; kk += 16) {
            u32 b[NI][2];  // b[ni]: tokens 8ni.. of the warp's, k kk.. and kk + 8..
#pragma unroll
            for (int ni = 0; ni < NI; ni += 2)  // matrices: k +0 / +8 of tokens 8ni.., then of 8ni + 8..
                ldmatrix_x4(&b[ni][0], &xs[buf][wt + 8 * ni + i + 8 * (m >> 1)][kk + 8 * (m & 1)]);
#pragma unroll
            for (int mat = 0; mat < NMAT; ++mat)
#pragma unroll
                for (int mi = 0; mi < 2; ++mi) {
                    u32 a[4];  // rows 16mi.. of the warp's; matrices: rows +0 / +8, k +0 / +8 (a0..a3)
                    ldmatrix_x4(a, &ws[mat][buf][wr + 16 * mi + i + 8 * (m & 1)][kk + 8 * (m >> 1)]);
#pragma unroll
                    for (int ni = 0; ni < NI; ++ni) mma_16x8x16(acc[mat][mi][ni], a, b[ni][0], b[ni][1]);
                }
        }
        if (u + 1 < units) mma_store<TOKENS, NMAT, ROWS>(ws, xs[buf ^ 1], buf ^ 1, w, x);
        __syncthreads();
    }
    // acc[mat][mi][ni][2h + j] is row 16mi + g + 8h, token 8ni + 2tig + j of the warp's quarter.
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
        for (int ni = 0; ni < NI; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int row = row0 + wr + 16 * mi + g + 8 * (e >> 1), t = t0 + wt + 8 * ni + 2 * tig + (e & 1);
                if (row >= n_out || t >= n_tok) continue;
                const long long at = (long long)t * n_out + row;
                const float v = acc[0][mi][ni][e];
                if (NMAT == 2) Y[at] = v / (1.0f + __expf(-v)) * acc[NMAT - 1][mi][ni][e];
                else if (gridDim.z == 1) Y[at] = epilogue(v, bias, residual, row, at);
                else partial[blockIdx.z * (long long)n_tok * n_out + at] = v;
            }
}

// Y = W x (+ bias) (+ residual) over one matrix, block x taking rows ROWS x.. (mma_tiles, NMAT == 1).
template <int QT, int TOKENS, int ROWS = MMA_ROWS>
__device__ void matmul_mma_impl(const u8* W, const float* X, float* Y, const float* bias, const float* residual,
                                float* partial, int split_units, int n_in, int n_out, int n_tok, long long row_bytes) {
    const u8* const Ws[1] = {W};
    mma_tiles<QT, TOKENS, 1, ROWS>(Ws, blockIdx.x * ROWS, X, Y, bias, residual, partial, split_units, n_in, n_out,
                                   n_tok, row_bytes);
}

// Y = silu(W_gate x) * (W_up x), both matrices of one type and shape, no split (mma_tiles with
// NMAT == 2), block x taking rows ROWS x..
template <int QT, int TOKENS, int ROWS = MMA_ROWS>
__device__ void matmul_gated_mma_impl(const u8* W_gate, const u8* W_up, const float* X, float* Y, int n_in, int n_out,
                                      int n_tok, long long row_bytes) {
    const u8* const Ws[2] = {W_gate, W_up};
    mma_tiles<QT, TOKENS, 2, ROWS>(Ws, blockIdx.x * ROWS, X, Y, nullptr, nullptr, nullptr, n_in >> 5, n_in, n_out,
                                   n_tok, row_bytes);
}

// Prefill of up to three matrices of one type and row length stacked by rows (q, k and v) on
// tensor cores in one launch: block x takes rows 64x.. of the stack, which lie in one matrix
// (the launcher checks that all but the last have a multiple of MMA_ROWS rows), and stores them
// with that matrix's bias into its output; or, with gridDim.z > 1, the sum over split_units units
// from z * split_units into `partial`, where matrix i of rows [start, end) has splits slices of
// n_tok x (end - start) from splits * n_tok * start on, which sum_splits_stacked (matmul.cu) adds.
template <int QT, int TOKENS>
__device__ void matmul_stacked_mma_impl(const Stack& s, const float* X, float* partial, int split_units, int n_in,
                                        int n_out, int n_tok, long long row_bytes) {
    const int row = blockIdx.x * MMA_ROWS, which = (row >= s.end0) + (row >= s.end1);
    const int start = pick(which, 0, s.end0, s.end1), end = pick(which, s.end0, s.end1, n_out);
    const u8* const W[1] = {pick(which, s.W0, s.W1, s.W2)};
    mma_tiles<QT, TOKENS, 1>(W, row - start, X, pick(which, s.y0, s.y1, s.y2), pick(which, s.bias0, s.bias1, s.bias2),
                             nullptr, partial ? partial + (long long)gridDim.z * n_tok * start : nullptr, split_units,
                             n_in, end - start, n_tok, row_bytes);
}

// Prefill of 2..31 tokens on tensor cores (matmul_few_mma_*): a block of `warps` warps per 16 rows
// (one m16 tile) and 8 NT tokens (NT n8 tiles), the rows' units dealt out to the warps in turn,
// each warp's sums then added in warp order through shared memory (the same order every run,
// M0-W-1826). Nothing is staged: mma's sum over k does not care in which order the 16 k of a step
// come, so A and B take k in the order that lets each lane fill its fragments straight from
// decode4 and a float4 of x. Lane (g, t) holds slots 2t, 2t + 1, 2t + 8, 2t + 9 of each step; with
// slots 2t, 2t + 1, 2t + 8, 2t + 9 standing for values 4t..4t + 3 of the step's 16, its A fragment
// is decode4(row g and row g + 8, u, 4 half + t) and its B fragment the same four values of token
// g's x. So every decoded weight serves 8 NT tokens and every x value 16 rows, without the
// per-token FMAs and x loads that made the fp32 matmul_few instruction-bound (NOTES.md).
#define FEW_MMA_MAX_WARPS 16

template <int QT, int NT, int NMAT>
__device__ void few_mma_tiles(const u8* const* W, const float* __restrict__ X, float* __restrict__ Y,
                              const float* bias, const float* residual, int n_in, int n_out, int n_tok,
                              long long row_bytes) {
    __shared__ float partial[FEW_MMA_MAX_WARPS][NMAT * NT * 4][32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    const int g = lane >> 2, t = lane & 3;
    const int row0 = blockIdx.x * 16, t0 = blockIdx.y * 8 * NT;
    for (int mat = 0; mat < NMAT; ++mat)  // the block's rows, asked for before the wait
        prefetch_l2(W[mat] + row0 * row_bytes, min(16, n_out - row0) * row_bytes, threadIdx.x, blockDim.x);
    launch_dependents();
    wait_for_prerequisites();
    const u8* wrow[NMAT][2];  // rows g and g + 8 of the tile; rows past the end repeat the last, never stored
#pragma unroll
    for (int mat = 0; mat < NMAT; ++mat)
#pragma unroll
        for (int h = 0; h < 2; ++h) wrow[mat][h] = W[mat] + min(row0 + g + 8 * h, n_out - 1) * row_bytes;
    const float* xrow[NT];  // token g of each n8 tile; null past n_tok (zeros)
#pragma unroll
    for (int ni = 0; ni < NT; ++ni) {
        const int tok = t0 + 8 * ni + g;
        xrow[ni] = tok < n_tok ? X + (long long)tok * n_in : nullptr;
    }
    float acc[NMAT][NT][4] = {};
    const int units = n_in >> 5;
#pragma unroll 2
    for (int u = warp; u < units; u += warps) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const int s = 4 * half + t;  // values 4s..4s + 3 of unit u
            u32 b[NT][2];
#pragma unroll
            for (int ni = 0; ni < NT; ++ni) {
                const float4 v = xrow[ni] ? *reinterpret_cast<const float4*>(xrow[ni] + u * 32 + 4 * s)
                                          : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
                b[ni][0] = pack_half2(v.x, v.y);
                b[ni][1] = pack_half2(v.z, v.w);
            }
#pragma unroll
            for (int mat = 0; mat < NMAT; ++mat) {
                const float4 lo = decode4<QT>(wrow[mat][0], u, s), hi = decode4<QT>(wrow[mat][1], u, s);
                const u32 a[4] = {pack_half2(lo.x, lo.y), pack_half2(hi.x, hi.y), pack_half2(lo.z, lo.w),
                                  pack_half2(hi.z, hi.w)};
#pragma unroll
                for (int ni = 0; ni < NT; ++ni) mma_16x8x16(acc[mat][ni], a, b[ni][0], b[ni][1]);
            }
        }
    }
#pragma unroll
    for (int mat = 0; mat < NMAT; ++mat)
#pragma unroll
        for (int ni = 0; ni < NT; ++ni)
#pragma unroll
            for (int e = 0; e < 4; ++e) partial[warp][(mat * NT + ni) * 4 + e][lane] = acc[mat][ni][e];
    __syncthreads();
    // acc[mat][ni][e] of lane 4g + t is row g + 8 (e >> 1), token 8 ni + 2t + (e & 1) of the tile.
    for (int i = threadIdx.x; i < 16 * 8 * NT; i += blockDim.x) {
        const int r = i / (8 * NT), n = i % (8 * NT), ni = n >> 3, nn = n & 7;
        const int row = row0 + r, tok = t0 + n;
        if (row >= n_out || tok >= n_tok) continue;
        const int at_lane = 4 * (r & 7) + (nn >> 1), e = 2 * (r >> 3) + (nn & 1);
        float sum[NMAT];
#pragma unroll
        for (int mat = 0; mat < NMAT; ++mat) {
            sum[mat] = 0.0f;
            for (int w = 0; w < warps; ++w) sum[mat] += partial[w][(mat * NT + ni) * 4 + e][at_lane];
        }
        const long long at = (long long)tok * n_out + row;
        if (NMAT == 2) Y[at] = sum[0] / (1.0f + __expf(-sum[0])) * sum[NMAT - 1];  // as layers.cu's swiglu
        else Y[at] = epilogue(sum[0], bias, residual, row, at);
    }
}

// Y = W x (+ bias) (+ residual) for up to 8 NT tokens a block (few_mma_tiles, NMAT == 1).
template <int QT, int NT>
__device__ void matmul_few_mma_impl(const u8* W, const float* X, float* Y, const float* bias, const float* residual,
                                    int n_in, int n_out, int n_tok, long long row_bytes) {
    const u8* const Ws[1] = {W};
    few_mma_tiles<QT, NT, 1>(Ws, X, Y, bias, residual, n_in, n_out, n_tok, row_bytes);
}

// Y = silu(W_gate x) * (W_up x), both of one type and shape (few_mma_tiles, NMAT == 2).
template <int QT, int NT>
__device__ void matmul_gated_few_mma_impl(const u8* W_gate, const u8* W_up, const float* X, float* Y, int n_in,
                                          int n_out, int n_tok, long long row_bytes) {
    const u8* const Ws[2] = {W_gate, W_up};
    few_mma_tiles<QT, NT, 2>(Ws, X, Y, nullptr, nullptr, n_in, n_out, n_tok, row_bytes);
}
