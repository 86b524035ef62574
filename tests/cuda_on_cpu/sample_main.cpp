#include "cuda_emulation.h"
#include "sampling.cu"
#include <cstdio>
#include <cstdlib>
// sample_main LOGITS.f32 N TEMPERATURE TOP_P MIN_P TOP_K SEED POSITION...
// Runs kernels.sample's four launches once per position, as the GPU would, and prints per draw:
// position, token, mode after sample_select, final mode, candidates, theta, and what the draw
// left behind that the next one needs zero (the arrival counter, nonzero histogram bins).
int main(int argc, char** argv) {
    FILE* f = fopen(argv[1], "rb"); const int n = atoi(argv[2]);
    std::vector<float> x(n); if (fread(x.data(), 4, n, f) != (size_t)n) return 2; fclose(f);
    float fp[4] = {(float)atof(argv[3]), (float)atof(argv[4]), (float)atof(argv[5]), 1.0f};
    const unsigned long long seed = strtoull(argv[7], nullptr, 10);
    unsigned ip[3] = {(unsigned)atoi(argv[6]), (unsigned)(seed & 0xffffffffu), (unsigned)(seed >> 32)};

    SampleScratch* s = (SampleScratch*)aligned_alloc(256, sizeof(SampleScratch)); memset(s, 0, sizeof(SampleScratch));
    for (int a = 8; a < argc; ++a) {
        const int pos = atoi(argv[a]);
        int state[3] = {pos, -1, 0};
        launch(SELECT_BLOCKS, SELECT_THREADS, [&] { sample_select(x.data(), n, fp, ip, state, s); });
        const int mode1 = s->mode;
        launch(SELECT_BLOCKS, SELECT_THREADS, [&] { sample_refine(x.data(), n, fp, ip, state, s); });
        launch(SELECT_BLOCKS, SELECT_THREADS, [&] { sample_gather(x.data(), n, fp, ip, state, s); });
        launch(1, SAMPLE_THREADS, [&] { sample_pick(x.data(), n, fp, ip, state, s); });
        int nonzero = 0; for (int b = 0; b < KEY_BINS; ++b) nonzero += s->hist[b] != 0;
        printf("%d %d %d %d %d %u %u %d\n", pos, state[1], mode1, s->mode, s->count, s->theta, s->arrived, nonzero);
    }
    return 0;
}
