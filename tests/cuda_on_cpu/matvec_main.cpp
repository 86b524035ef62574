// matvec_main MODE QTYPE N_OUT N_IN ROW_BYTES IN OUT: matmul.cu's decode mat-vecs that give a unit
// four lanes (unit_dot's PAIRED) and the decoders they use, for one token.
// gated: IN holds the gate's and the up matrix's raw blocks (N_OUT x ROW_BYTES each), x and the
//   norm's weight (float32 N_IN each) and eps (float32); runs matvec_gated_<type> as
//   kernels.matvec_gated launches it and writes y (float32 N_OUT).
// many: IN holds raw blocks (N_OUT x ROW_BYTES), x, bias (N_OUT) and residual (N_OUT) float32;
//   runs matvec_many_<type> as kernels.matmul launches it for a head (a block per four rows, x
//   read in place) and writes y (float32 N_OUT).
// pairs: IN holds raw blocks (N_OUT x ROW_BYTES); writes, for every row, unit u and group g in
//   0..7, decode_pair(row, u, g) (a, then b) and decode4(row, u, g), decode4(row, u, g ^ 4): 16
//   float32 each (types of PAIRS only).
#include "mma_emulation.h"
#define STAGED_ON_CPU  // matmul.cu's dynamic shared memory (`extern __shared__` cannot be `extern static`)
static float4 staged[1 << 16];
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
#include "matmul.cu"
#include <string>

using Gated = void (*)(const u8*, const u8*, const float*, const float*, float, float*, int, int, long long);
using Many = void (*)(const u8*, const float*, float*, const float*, const float*, int, int, long long);

Many many_of(int qtype) {
    switch (qtype) {
        case QT_Q5_0: return matvec_many_q5_0;
        case QT_Q8_0: return matvec_many_q8_0;
        case QT_Q4_K: return matvec_many_q4_k;
        case QT_Q6_K: return matvec_many_q6_k;
        default: fprintf(stderr, "type %d\n", qtype); exit(2);
    }
}

Gated gated_of(int qtype) {
    switch (qtype) {
        case QT_Q4_0: return matvec_gated_q4_0;
        case QT_Q5_0: return matvec_gated_q5_0;
        case QT_Q8_0: return matvec_gated_q8_0;
        case QT_Q4_K: return matvec_gated_q4_k;
        case QT_Q6_K: return matvec_gated_q6_k;
        default: fprintf(stderr, "type %d\n", qtype); exit(2);
    }
}

template <int QT> void pairs(const u8* W, int n_out, int units, long long row_bytes, std::vector<float>& out) {
    for (int r = 0; r < n_out; ++r)
        for (int u = 0; u < units; ++u)
            for (int g = 0; g < 8; ++g) {
                const u8* row = W + r * row_bytes;
                const Float4Pair p = decode_pair<QT>(row, u, g);
                for (const float4 v : {p.a, p.b, decode4<QT>(row, u, g), decode4<QT>(row, u, g ^ 4)})
                    out.insert(out.end(), {v.x, v.y, v.z, v.w});
            }
}

int main(int argc, char** argv) {
    if (argc != 8) { fprintf(stderr, "usage: see the header of matvec_main.cpp\n"); return 2; }
    const std::string mode = argv[1];
    const int qtype = atoi(argv[2]), n_out = atoi(argv[3]), n_in = atoi(argv[4]);
    const long long row_bytes = atoll(argv[5]);
    FILE* f = fopen(argv[6], "rb");
    auto read = [&](void* to, size_t bytes) {
        if (fread(to, 1, bytes, f) != bytes) { fprintf(stderr, "short input\n"); exit(2); }
    };
    std::vector<u8> W((size_t)n_out * row_bytes);
    read(W.data(), W.size());
    std::vector<float> out;
    if (mode == "gated") {
        std::vector<u8> U(W.size());
        std::vector<float> x(n_in), norm(n_in);
        float eps;
        read(U.data(), U.size()); read(x.data(), 4 * n_in); read(norm.data(), 4 * n_in); read(&eps, 4);
        out.assign(n_out, NAN);
        const Gated gated = gated_of(qtype);
        launch((n_out + GATED_WARPS - 1) / GATED_WARPS, 32 * GATED_WARPS, [&] {
            gated(W.data(), U.data(), x.data(), norm.data(), eps, out.data(), n_in, n_out, row_bytes); });
    } else if (mode == "many") {
        std::vector<float> x(n_in), bias(n_out), residual(n_out);
        read(x.data(), 4 * n_in); read(bias.data(), 4 * n_out); read(residual.data(), 4 * n_out);
        out.assign(n_out, NAN);
        const Many many = many_of(qtype);
        launch((n_out + WARPS - 1) / WARPS, 32 * WARPS, [&] {
            many(W.data(), x.data(), out.data(), bias.data(), residual.data(), n_in, n_out, row_bytes); });
    } else if (mode == "pairs") {
        const int units = n_in / 32;
        switch (qtype) {
            case QT_Q5_0: pairs<QT_Q5_0>(W.data(), n_out, units, row_bytes, out); break;
            case QT_Q8_0: pairs<QT_Q8_0>(W.data(), n_out, units, row_bytes, out); break;
            default: fprintf(stderr, "type %d\n", qtype); return 2;
        }
    } else {
        fprintf(stderr, "mode %s\n", argv[1]);
        return 2;
    }
    fclose(f);
    FILE* o = fopen(argv[7], "wb");
    fwrite(out.data(), 4, out.size(), o);
    fclose(o);
    return 0;
}
