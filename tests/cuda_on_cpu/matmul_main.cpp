// matmul_main KERNEL QTYPE N_OUT N_IN ROW_BYTES N_TOK W X BIAS|- RESIDUAL|- OUT
// KERNEL: few2, few4, few2_split or few4_split runs matmul_<KERNEL>_<type> (matmul.cu) over all
// N_TOK tokens as kernels.matmul launches it (a block per 2 or 4 rows, of one warp or, split,
// WARPS; a group of FEW_TOKENS tokens per blockIdx.y); vec or vec_split runs matvec_<type> or
// matvec_split_<type> once per token, as a decode step does. Reads the raw weight blocks and the
// float32 x (N_TOK, N_IN), bias (N_OUT) and residual (N_TOK, N_OUT) from the files named, and
// writes y (N_TOK, N_OUT) float32 to OUT (NaN where nothing stored).
#include "mma_emulation.h"
// The mat-vecs' dynamic shared memory (matmul.cu's `extern __shared__`, which cannot be `extern
// static`): their staged rows and x.
#define STAGED_ON_CPU
static float4 staged[1 << 16];
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#include "matmul.cu"
#include <string>

template <class T> std::vector<T> read_file(const char* path, size_t n) {
    if (std::strcmp(path, "-") == 0) return {};
    std::vector<T> v(n);
    FILE* f = fopen(path, "rb");
    if (!f || fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "cannot read %zu values from %s\n", n, path); exit(2); }
    fclose(f);
    return v;
}

template <class T> const T* or_null(const std::vector<T>& v) { return v.empty() ? nullptr : v.data(); }

using Few = void (*)(const u8*, const float*, float*, const float*, const float*, int, int, int, long long);
using Vec = void (*)(const u8*, const float*, float*, const float*, const float*, int, int, long long);
struct Kernels { Few few2, few4, few2_split, few4_split; Vec vec, vec_split; };
#define KERNELS(NAME) Kernels{matmul_few2_##NAME, matmul_few4_##NAME, matmul_few2_split_##NAME, \
                              matmul_few4_split_##NAME, matvec_##NAME, matvec_split_##NAME}

Kernels kernels_of(int qtype) {
    switch (qtype) {
        case QT_F32: return KERNELS(f32);
        case QT_F16: return KERNELS(f16);
        case QT_BF16: return KERNELS(bf16);
        case QT_Q4_0: return KERNELS(q4_0);
        case QT_Q5_0: return KERNELS(q5_0);
        case QT_Q8_0: return KERNELS(q8_0);
        case QT_MXFP4: return KERNELS(mxfp4);
        case QT_Q4_K: return KERNELS(q4_k);
        case QT_Q6_K: return KERNELS(q6_k);
        default: fprintf(stderr, "type %d\n", qtype); exit(2);
    }
}

int main(int argc, char** argv) {
    if (argc != 12) { fprintf(stderr, "usage: see the header of matmul_main.cpp\n"); return 2; }
    const std::string kernel = argv[1];
    if (kernel != "few2" && kernel != "few4" && kernel != "few2_split" && kernel != "few4_split" && kernel != "vec" &&
        kernel != "vec_split") { fprintf(stderr, "kernel %s\n", argv[1]); return 2; }
    const int qtype = atoi(argv[2]), n_out = atoi(argv[3]), n_in = atoi(argv[4]);
    const long long row_bytes = atoll(argv[5]);
    const int n_tok = atoi(argv[6]);
    const auto W = read_file<u8>(argv[7], (size_t)n_out * row_bytes);
    const auto X = read_file<float>(argv[8], (size_t)n_tok * n_in);
    const auto bias = read_file<float>(argv[9], n_out), residual = read_file<float>(argv[10], (size_t)n_tok * n_out);
    std::vector<float> Y((size_t)n_tok * n_out, NAN);
    const Kernels k = kernels_of(qtype);
    const bool split = kernel.ends_with("_split");
    if (kernel.starts_with("vec")) {
        const Vec vec = split ? k.vec_split : k.vec;
        for (int t = 0; t < n_tok; ++t) {
            const float* res = residual.empty() ? nullptr : residual.data() + (size_t)t * n_out;
            launch(split ? n_out : (n_out + WARPS - 1) / WARPS, 32 * WARPS, [&] {
                vec(W.data(), X.data() + (size_t)t * n_in, Y.data() + (size_t)t * n_out, or_null(bias), res, n_in,
                    n_out, row_bytes);
            });
        }
    } else {
        const int rows = kernel.starts_with("few4") ? 4 : 2;
        const Few few = rows == 4 ? (split ? k.few4_split : k.few4) : (split ? k.few2_split : k.few2);
        const dim3 grid((n_out + rows - 1) / rows, (n_tok + FEW_TOKENS - 1) / FEW_TOKENS);
        launch(grid, split ? 32 * WARPS : 32, [&] {
            few(W.data(), X.data(), Y.data(), or_null(bias), or_null(residual), n_in, n_out, n_tok, row_bytes);
        });
    }
    FILE* o = fopen(argv[11], "wb");
    fwrite(Y.data(), 4, Y.size(), o);
    fclose(o);
    return 0;
}
