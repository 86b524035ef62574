#include "mma_emulation.h"
#include "gemm_mma.cuh"
#define STAGED_ON_CPU  // attention_split's dynamic shared memory, unused here
static uint4 kv_stage[1];
#include "attention.cu"
#include <cstdio>
#include <cstdlib>
#include <type_traits>
// mma_main gemm QTYPE TOKENS ROWS COLS ROW_BYTES N_TOK SPLITS W X BIAS|- RESIDUAL|- OUT (TOKENS 64r32:
//   64-token tiles in blocks of 32 rows)
// mma_main gated QTYPE TOKENS BLOCK_ROWS ROWS COLS ROW_BYTES N_TOK W_GATE W_UP X OUT (BLOCK_ROWS 64 or 32)
// mma_main stacked QTYPE TOKENS COLS ROW_BYTES N_TOK ROWS0 ROWS1 ROWS2 SPLITS W BIAS|- X OUT (ROWS2 0: two;
//   W and BIAS the matrices' rows one after another, OUT their products one after another; SPLITS > 1
//   then sum_splits_stacked's ordered sums)
// mma_main few QTYPE NT WARPS ROWS COLS ROW_BYTES N_TOK W X BIAS|- RESIDUAL|- OUT
// mma_main fewgated QTYPE NT WARPS ROWS COLS ROW_BYTES N_TOK W_GATE W_UP X OUT
// mma_main attention N_TOK N_HEAD N_KV HEAD_DIM CTX POS0 WINDOW Q K V SINKS|- OUT
// (few, fewgated: matmul_few_mma_impl or matmul_gated_few_mma_impl, NT n8 tiles and WARPS warps a
// block, as kernels.matmul and matmul_gated launch them below 32 tokens.)
// Runs matmul_mma_impl (then, with SPLITS > 1, sum_splits' ordered sum), matmul_gated_mma_impl,
// matmul_stacked_mma_impl or attention_mma_* on the CPU over the binary files named (float32; the
// caches fp16, the weights their raw blocks) and writes OUT (float32). TOKENS: 32, 64 or 128.
template <class T> std::vector<T> read_file(const char* path, size_t n) {
    std::vector<T> v(n);
    if (std::strcmp(path, "-") == 0) return {};
    FILE* f = fopen(path, "rb");
    if (!f || fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "cannot read %zu values from %s\n", n, path); exit(2); }
    fclose(f);
    return v;
}

template <class T> const T* or_null(const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }
template <class T> T* or_null(std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }

// block(integral_constant<int, TOKENS>) for the token tile `tokens` (32, 64 or 128).
template <class Block> void by_tokens(int tokens, Block block) {
    switch (tokens) {
        case 32: block(std::integral_constant<int, 32>()); break;
        case 64: block(std::integral_constant<int, 64>()); break;
        case 128: block(std::integral_constant<int, 128>()); break;
        default: fprintf(stderr, "tokens per block %d\n", tokens); exit(2);
    }
}

template <class Block> void by_type(int qtype, Block block) {
    switch (qtype) {
        case QT_F32: block(std::integral_constant<int, QT_F32>()); break;
        case QT_F16: block(std::integral_constant<int, QT_F16>()); break;
        case QT_BF16: block(std::integral_constant<int, QT_BF16>()); break;
        case QT_Q4_0: block(std::integral_constant<int, QT_Q4_0>()); break;
        case QT_Q5_0: block(std::integral_constant<int, QT_Q5_0>()); break;
        case QT_Q8_0: block(std::integral_constant<int, QT_Q8_0>()); break;
        case QT_MXFP4: block(std::integral_constant<int, QT_MXFP4>()); break;
        case QT_Q4_K: block(std::integral_constant<int, QT_Q4_K>()); break;
        case QT_Q6_K: block(std::integral_constant<int, QT_Q6_K>()); break;
        default: fprintf(stderr, "type %d\n", qtype); exit(2);
    }
}

void write_file(const char* path, const std::vector<float>& v) {
    FILE* f = fopen(path, "wb");
    fwrite(v.data(), 4, v.size(), f);
    fclose(f);
}

int gemm(char** a) {
    const int qtype = atoi(a[0]), tokens = atoi(a[1]), rows = atoi(a[2]), cols = atoi(a[3]);
    const int block_rows = std::strcmp(a[1], "64r32") == 0 ? 32 : MMA_ROWS;
    const long long row_bytes = atoll(a[4]);
    const int n_tok = atoi(a[5]), splits = atoi(a[6]);
    const auto W = read_file<u8>(a[7], rows * row_bytes);
    const auto X = read_file<float>(a[8], (size_t)n_tok * cols);
    const auto bias = read_file<float>(a[9], rows), residual = read_file<float>(a[10], (size_t)n_tok * rows);
    std::vector<float> Y((size_t)n_tok * rows, NAN), partial(splits > 1 ? (size_t)splits * n_tok * rows : 0);
    const int units = cols / 32, split_units = (units + splits - 1) / splits;
    const dim3 grid{(unsigned)(rows + block_rows - 1) / block_rows, (unsigned)(n_tok + tokens - 1) / tokens,
                    (unsigned)splits};
    launch(grid, MMA_THREADS, [&] {
        by_type(qtype, [&](auto qt) {
            if (block_rows == 32)
                matmul_mma_impl<qt(), 64, 32>(W.data(), X.data(), Y.data(), or_null(bias), or_null(residual),
                                              or_null(partial), split_units, cols, rows, n_tok, row_bytes);
            else
                by_tokens(tokens, [&](auto tile) {
                    matmul_mma_impl<qt(), tile()>(W.data(), X.data(), Y.data(), or_null(bias), or_null(residual),
                                                  or_null(partial), split_units, cols, rows, n_tok, row_bytes);
                });
        });
    });
    const long long n = (long long)n_tok * rows;
    for (long long at = 0; splits > 1 && at < n; ++at) {  // as sum_splits (matmul.cu)
        float s = 0.0f;
        for (int z = 0; z < splits; ++z) s += partial[z * n + at];
        Y[at] = epilogue(s, or_null(bias), or_null(residual), (int)(at % rows), at);
    }
    write_file(a[11], Y);
    return 0;
}

int gated(char** a) {
    const int qtype = atoi(a[0]), tokens = atoi(a[1]), block_rows = atoi(a[2]), rows = atoi(a[3]), cols = atoi(a[4]);
    const long long row_bytes = atoll(a[5]);
    const int n_tok = atoi(a[6]);
    const auto Wg = read_file<u8>(a[7], rows * row_bytes), Wu = read_file<u8>(a[8], rows * row_bytes);
    const auto X = read_file<float>(a[9], (size_t)n_tok * cols);
    std::vector<float> Y((size_t)n_tok * rows, NAN);
    const dim3 grid{(unsigned)(rows + block_rows - 1) / block_rows, (unsigned)(n_tok + tokens - 1) / tokens, 1};
    launch(grid, MMA_THREADS, [&] {
        by_type(qtype, [&](auto qt) {
            if (block_rows == 32 && tokens == 64)
                matmul_gated_mma_impl<qt(), 64, 32>(Wg.data(), Wu.data(), X.data(), Y.data(), cols, rows, n_tok,
                                                    row_bytes);
            else
                by_tokens(tokens, [&](auto tile) {
                    matmul_gated_mma_impl<qt(), tile()>(Wg.data(), Wu.data(), X.data(), Y.data(), cols, rows, n_tok,
                                                        row_bytes);
                });
        });
    });
    write_file(a[10], Y);
    return 0;
}

int stacked(char** a) {
    const int qtype = atoi(a[0]), tokens = atoi(a[1]), cols = atoi(a[2]), n_tok = atoi(a[4]);
    const long long row_bytes = atoll(a[3]);
    const int r[3] = {atoi(a[5]), atoi(a[6]), atoi(a[7])}, n_out = r[0] + r[1] + r[2], parts = r[2] ? 3 : 2;
    const int splits = atoi(a[8]), split_units = (cols / 32 + splits - 1) / splits;
    a += 1;
    const auto W = read_file<u8>(a[8], n_out * row_bytes);
    const auto bias = read_file<float>(a[9], n_out);
    const auto X = read_file<float>(a[10], (size_t)n_tok * cols);
    std::vector<float> Y((size_t)n_tok * n_out, NAN), partial(splits > 1 ? (size_t)splits * n_tok * n_out : 0);
    const u8* w[3];
    const float* b[3];
    float* y[3];
    for (int p = 0, row = 0; p < 3; row += r[p], ++p) {
        const int at = p < parts ? row : 0;  // a missing third points at the first: the kernel never reaches it
        w[p] = W.data() + at * row_bytes;
        b[p] = bias.empty() ? nullptr : bias.data() + at;
        y[p] = Y.data() + (size_t)n_tok * at;
    }
    const Stack s{w[0], w[1], w[2], b[0], b[1], b[2], y[0], y[1], y[2], r[0], parts == 3 ? r[0] + r[1] : n_out};
    const dim3 grid{(unsigned)(n_out + MMA_ROWS - 1) / MMA_ROWS, (unsigned)(n_tok + tokens - 1) / tokens,
                    (unsigned)splits};
    launch(grid, MMA_THREADS, [&] {
        by_type(qtype, [&](auto qt) {
            by_tokens(tokens, [&](auto tile) {
                matmul_stacked_mma_impl<qt(), tile()>(s, X.data(), or_null(partial), split_units, cols, n_out, n_tok,
                                                      row_bytes);
            });
        });
    });
    for (int p = 0, start = 0; splits > 1 && p < parts; start += r[p], ++p)  // as sum_splits_stacked (matmul.cu)
        for (long long local = 0; local < (long long)n_tok * r[p]; ++local) {
            float sum = 0.0f;
            const float* part = partial.data() + (size_t)splits * n_tok * start + local;
            for (int z = 0; z < splits; ++z) sum += part[z * (size_t)n_tok * r[p]];
            y[p][local] = epilogue(sum, b[p], nullptr, (int)(local % r[p]), local);
        }
    write_file(a[11], Y);
    return 0;
}

// block(integral_constant<int, NT>) for 1 or 2 n8 tiles a block of matmul_few_mma_impl.
template <class Block> void by_tiles(int tiles, Block block) {
    switch (tiles) {
        case 1: block(std::integral_constant<int, 1>()); break;
        case 2: block(std::integral_constant<int, 2>()); break;
        default: fprintf(stderr, "n8 tiles per block %d\n", tiles); exit(2);
    }
}

int few(char** a, bool gated_ffn) {
    const int qtype = atoi(a[0]), tiles = atoi(a[1]), warps = atoi(a[2]), rows = atoi(a[3]), cols = atoi(a[4]);
    const long long row_bytes = atoll(a[5]);
    const int n_tok = atoi(a[6]);
    const auto W = read_file<u8>(a[7], rows * row_bytes);
    const auto U = gated_ffn ? read_file<u8>(a[8], rows * row_bytes) : std::vector<u8>();
    const auto X = read_file<float>(a[gated_ffn ? 9 : 8], (size_t)n_tok * cols);
    const auto bias = gated_ffn ? std::vector<float>() : read_file<float>(a[9], rows);
    const auto residual = gated_ffn ? std::vector<float>() : read_file<float>(a[10], (size_t)n_tok * rows);
    std::vector<float> Y((size_t)n_tok * rows, NAN);
    const dim3 grid{(unsigned)(rows + 15) / 16, (unsigned)(n_tok + 8 * tiles - 1) / (8 * tiles), 1};
    launch(grid, 32 * warps, [&] {
        by_type(qtype, [&](auto qt) {
            by_tiles(tiles, [&](auto nt) {
                if (gated_ffn)
                    matmul_gated_few_mma_impl<qt(), nt()>(W.data(), U.data(), X.data(), Y.data(), cols, rows, n_tok,
                                                          row_bytes);
                else
                    matmul_few_mma_impl<qt(), nt()>(W.data(), X.data(), Y.data(), or_null(bias), or_null(residual),
                                                    cols, rows, n_tok, row_bytes);
            });
        });
    });
    write_file(a[gated_ffn ? 10 : 11], Y);
    return 0;
}

int attention(char** a) {
    const int n_tok = atoi(a[0]), n_head = atoi(a[1]), n_kv = atoi(a[2]), d = atoi(a[3]), ctx = atoi(a[4]);
    const int pos0[1] = {atoi(a[5])}, window = atoi(a[6]);
    const auto q = read_file<float>(a[7], (size_t)n_tok * n_head * d);
    const auto k = read_file<u16>(a[8], (size_t)n_kv * ctx * d), v = read_file<u16>(a[9], (size_t)n_kv * ctx * d);
    const auto sinks = read_file<float>(a[10], n_head);
    std::vector<float> out((size_t)n_tok * n_head * d, NAN);
    const float scale = 1.0f / std::sqrt((float)d);
    const dim3 grid{(unsigned)n_head, (unsigned)(n_tok + FA_QUERIES - 1) / FA_QUERIES, 1};
    launch(grid, FA_THREADS, [&] {
        auto run = [&](auto kernel) {
            kernel(q.data(), k.data(), v.data(), out.data(), n_tok, n_head, n_kv, ctx, pos0, scale, or_null(sinks), window);
        };
        switch (d) {
            case 64: run(attention_mma_64); break;
            case 96: run(attention_mma_96); break;
            case 128: run(attention_mma_128); break;
            default: fprintf(stderr, "head_dim %d\n", d); exit(2);
        }
    });
    write_file(a[11], out);
    return 0;
}

int main(int argc, char** argv) {
    if (argc == 14 && std::strcmp(argv[1], "gemm") == 0) return gemm(argv + 2);
    if (argc == 13 && std::strcmp(argv[1], "gated") == 0) return gated(argv + 2);
    if (argc == 15 && std::strcmp(argv[1], "stacked") == 0) return stacked(argv + 2);
    if (argc == 14 && std::strcmp(argv[1], "attention") == 0) return attention(argv + 2);
    if (argc == 14 && std::strcmp(argv[1], "few") == 0) return few(argv + 2, false);
    if (argc == 13 && std::strcmp(argv[1], "fewgated") == 0) return few(argv + 2, true);
    fprintf(stderr, "usage: see mma_main.cpp\n");
    return 2;
}
