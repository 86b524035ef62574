#include "moe_emulation.h"
#include "moe.cu"
#include <cstdio>
#include <string>
#include <vector>
// moe_main IN OUT KERNELS (tiled: the fp32 kernels, mma: the tensor-core ones)
// IN: int32 qtype, n_expert, n_ff, n_embd, n_tok, k, row_bytes of gate/up, row_bytes of down;
// then the gate, up and down stacks' bytes, the float32 biases (gate, up, down), x, the int32
// ids, the float32 weights and residual. Runs kernels.moe_ffn_grouped's four launches as the GPU
// would and writes to OUT: int32 n_tiles, order (n_tok * k), the tile table (3 n_tiles), then
// the float32 output (n_tok, n_embd).
template <class T> std::vector<T> take(FILE* f, size_t n) {
    std::vector<T> v(n);
    if (fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "short input\n"); exit(2); }
    return v;
}

template <class T> void put(FILE* f, const std::vector<T>& v, size_t n) { fwrite(v.data(), sizeof(T), n, f); }

int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb");
    const auto h = take<int>(f, 8);
    const int qtype = h[0], E = h[1], n_ff = h[2], n_embd = h[3], n_tok = h[4], k = h[5];
    const long long rb_gu = h[6], rb_d = h[7];
    const auto gate = take<u8>(f, (size_t)E * n_ff * rb_gu), up = take<u8>(f, (size_t)E * n_ff * rb_gu);
    const auto down = take<u8>(f, (size_t)E * n_embd * rb_d);
    const auto bg = take<float>(f, (size_t)E * n_ff), bu = take<float>(f, (size_t)E * n_ff);
    const auto bd = take<float>(f, (size_t)E * n_embd);
    const auto x = take<float>(f, (size_t)n_tok * n_embd);
    const auto ids = take<int>(f, (size_t)n_tok * k);
    const auto w = take<float>(f, (size_t)n_tok * k), residual = take<float>(f, (size_t)n_tok * n_embd);
    fclose(f);

    const int n_pairs = n_tok * k, max_tiles = (n_pairs + std::min(E, n_pairs) * (MOE_TILE - 1)) / MOE_TILE;
    std::vector<int> order(n_pairs, -1), tiles(3 * max_tiles, -1), n_tiles(1, -1);
    std::vector<float> act((size_t)n_pairs * n_ff, NAN), y((size_t)n_pairs * n_embd, NAN);
    std::vector<float> out((size_t)n_tok * n_embd, NAN);
    const bool mma = std::string(argv[3]) == "mma";
    const int rows = mma ? MOE_MMA_ROWS : MOE_TILE, threads = mma ? MOE_MMA_THREADS : MOE_TILE_THREADS;
    const int gu_blocks = (n_ff + rows - 1) / rows, d_blocks = (n_embd + rows - 1) / rows;
    const int combine_blocks = (n_tok * n_embd + 255) / 256;
#define RUN(NAME)                                                                                                    \
    launch(1, 32, [&] { moe_group(ids.data(), n_pairs, E, order.data(), tiles.data(), n_tiles.data()); });           \
    launch(dim3(gu_blocks, max_tiles), threads, [&] {                                                                \
        (mma ? moe_mma_gate_up_##NAME : moe_tiled_gate_up_##NAME)(gate.data(), up.data(), bg.data(), bu.data(),      \
            x.data(), order.data(), tiles.data(), n_tiles.data(), act.data(), k, n_embd, n_ff, rb_gu);               \
    });                                                                                                              \
    launch(dim3(d_blocks, max_tiles), threads, [&] {                                                                 \
        (mma ? moe_mma_down_##NAME : moe_tiled_down_##NAME)(down.data(), bd.data(), act.data(), order.data(),        \
            tiles.data(), n_tiles.data(), y.data(), n_ff, n_embd, rb_d);                                             \
    });                                                                                                              \
    launch(combine_blocks, 256, [&] {                                                                                \
        moe_combine(y.data(), w.data(), residual.data(), out.data(), k, n_embd, (long long)n_tok * n_embd);          \
    });
    switch (qtype) {  // the types whose decoders need no fp16 (the emulation has no PTX cvt)
        case QT_F32: RUN(f32) break;
        case QT_BF16: RUN(bf16) break;
        case QT_MXFP4: RUN(mxfp4) break;
        default: fprintf(stderr, "type %d not emulated\n", qtype); return 2;
    }
    FILE* o = fopen(argv[2], "wb");
    put(o, n_tiles, 1);
    put(o, order, n_pairs);
    put(o, tiles, 3 * n_tiles[0]);
    put(o, out, out.size());
    fclose(o);
    return 0;
}
