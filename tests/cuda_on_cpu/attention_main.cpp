// attention.cu's tensor-core kernel needs mma.sync; mma_emulation.h also brings the fp16
// conversions that common.cuh leaves to the emulation.
#include "mma_emulation.h"
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }  // layers.cu's other kernels need it to compile
#define STAGED_ON_CPU  // attention_split's dynamic shared memory (`extern __shared__` cannot be `extern static`)
static uint4 kv_stage[4 * 64 * 256 / 16];
#include "attention.cu"
#include "layers.cu"
#include <bit>
// attention_main IN OUT
// IN: int32 mode (0 prefill, 1 decode), n_tok, n_head, n_kv, head_dim, ctx, start, window,
// n_prev, has_sinks, neox, has_freqs, split_blocks (kernels.ATTN_SPLIT_BLOCKS); float32 scale, base, magnitude; then float32 q (n_tok,
// n_head, head_dim), k_prev and v_prev (n_prev, n_kv, head_dim: positions start - n_prev ..
// start - 1), k_new and v_new (n_tok, n_kv, head_dim), sinks (n_head) and freqs (head_dim / 2)
// when present. The caches (n_kv, ctx, head_dim) start as fp16 NaN; k_prev and v_prev go in with
// kv_store, then the tokens as kernels.py launches them: kv_store + attention for a prefill,
// attention_split (which stores the new key and value and merges the blocks) for a decode.
// OUT: float32 out (n_tok, n_head, head_dim), then the K and V caches as fp16 bits; for a decode
// then also: out of a second launch over the same counters (a graph replay), out of a separate
// combine_partials launch over the first launch's block states (a block per head of head_dim
// threads: the attention_combine kernel the merge replaced), and the counters (uint32 n_head).
template <class T> std::vector<T> read(FILE* f, size_t n) {
    std::vector<T> v(n);
    if (n && fread(v.data(), sizeof(T), n, f) != n) { fprintf(stderr, "short input\n"); exit(2); }
    return v;
}

int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb");
    const std::vector<int> h = read<int>(f, 13);
    const int mode = h[0], n_tok = h[1], n_head = h[2], n_kv = h[3], head_dim = h[4], ctx = h[5], start = h[6];
    const int window = h[7], n_prev = h[8], has_sinks = h[9], neox = h[10], has_freqs = h[11], split_blocks = h[12];
    const std::vector<float> g = read<float>(f, 3);
    auto q = read<float>(f, (size_t)n_tok * n_head * head_dim);
    auto k_prev = read<float>(f, (size_t)n_prev * n_kv * head_dim), v_prev = read<float>(f, k_prev.size());
    auto k_new = read<float>(f, (size_t)n_tok * n_kv * head_dim), v_new = read<float>(f, k_new.size());
    auto sinks = read<float>(f, has_sinks ? n_head : 0);
    auto freqs = read<float>(f, has_freqs ? head_dim / 2 : 0);
    fclose(f);

    std::vector<u16> k_cache((size_t)n_kv * ctx * head_dim, 0x7E00), v_cache(k_cache.size(), 0x7E00);
    std::vector<float> out((size_t)n_tok * n_head * head_dim, NAN);
    const float* sink = has_sinks ? sinks.data() : nullptr;
    const float* freq = has_freqs ? freqs.data() : nullptr;
    auto store = [&](const std::vector<float>& k, const std::vector<float>& v, int tokens, int pos) {
        const int pos0[1] = {pos};
        const int blocks = (int)((k.size() + 255) / 256);
        launch(blocks, 256, [&] { kv_store(k.data(), v.data(), k_cache.data(), v_cache.data(), tokens, n_kv,
                                           head_dim, ctx, pos0); });
    };
    if (n_prev) store(k_prev, v_prev, n_prev, start - n_prev);
    const int pos0[1] = {start};
    if (mode == 0) {
        store(k_new, v_new, n_tok, start);
        launch(dim3(n_head, n_tok), 32 * ATTN_WARPS, [&] {
            attention(q.data(), k_cache.data(), v_cache.data(), out.data(), n_head, n_kv, head_dim, ctx, pos0, g[0],
                      sink, window); });
    } else {
        const int span = window > 0 ? std::min(ctx, window) : ctx;  // kernels.decode_split
        const int chunks = std::max(1, std::min((span + CHUNK - 1) / CHUNK, split_blocks / n_head));
        std::vector<float> partial((size_t)n_head * chunks * (head_dim + 2), NAN);
        std::vector<u32> tickets(1024, 0);  // kernels.attention_tickets
        auto decode = [&](std::vector<float>& result) {
            launch(dim3(n_head, chunks), 32 * SPLIT_WARPS, [&] {
                attention_split(q.data(), k_new.data(), v_new.data(), k_cache.data(), v_cache.data(), partial.data(),
                                result.data(), tickets.data(), n_head, n_kv, head_dim, ctx, pos0, g[0], g[1], neox,
                                window, freq, g[2], sink); });
        };
        decode(out);
        const std::vector<float> states = partial;
        std::vector<float> replayed(out.size(), NAN), combined(out.size(), NAN);
        decode(replayed);
        const int first = window > 0 ? std::max(0, start - window + 1) : 0;
        const int used = std::min((start - first) / CHUNK + 1, chunks);
        launch(n_head, head_dim, [&] {
            const int h = blockIdx.x;
            combine_partials(states.data() + (size_t)h * chunks * (head_dim + 2), combined.data() + h * head_dim,
                             head_dim, used, sink ? sink + h : nullptr); });
        out.insert(out.end(), replayed.begin(), replayed.end());
        out.insert(out.end(), combined.begin(), combined.end());
        for (int h = 0; h < n_head; ++h) out.push_back(std::bit_cast<float>(tickets[h]));
    }
    FILE* o = fopen(argv[2], "wb");
    fwrite(out.data(), 4, out.size(), o);
    fwrite(k_cache.data(), 2, k_cache.size(), o);
    fwrite(v_cache.data(), 2, v_cache.size(), o);
    fclose(o);
    return 0;
}
