// The small steps that let each chunk of a prompt run as one CUDA graph recorded for a fixed
// number of rows (a bucket for the last chunk, a whole chunk for those before it, decode.py),
// whatever the chunk's position and true length. Everything they need comes from `state`
// (position of the chunk's first token, token, prompt length), which the host sets before the
// first launch:
//   chunk_ids     the chunk's ids from the history buffer; rows past the prompt get id 0 (padding);
//   last_row      the row of the prompt's last token, for the output head;
//   chunk_done    the position moves past a whole chunk, to the next chunk's first token;
//   prefill_done  the position moves to the prompt's last token, as sampling expects.
// Padding rows never reach the real ones: attention is causal, every other op works row by
// row, and their cache entries lie past the prompt, where decode writes before it reads.
#include "common.cuh"

extern "C" __global__ void chunk_ids(const int* __restrict__ history, const int* __restrict__ state,
                                     int* __restrict__ ids, int n_rows, int capacity) {
    launch_dependents();
    wait_for_prerequisites();
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_rows) return;
    const int p = state[0] + t;
    ids[t] = p < state[2] && p < capacity ? history[p] : 0;
}

extern "C" __global__ void last_row(const float* __restrict__ x, const int* __restrict__ state,
                                    float* __restrict__ out, int n_rows, int cols) {
    launch_dependents();
    wait_for_prerequisites();
    const int row = min(max(state[2] - 1 - state[0], 0), n_rows - 1);
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < cols; i += gridDim.x * blockDim.x)
        out[i] = x[(long long)row * cols + i];
}

extern "C" __global__ void chunk_done(int* state, int n_rows) {
    launch_dependents();
    wait_for_prerequisites();
    state[0] += n_rows;
}

extern "C" __global__ void prefill_done(int* state) {
    launch_dependents();
    wait_for_prerequisites();
    state[0] = state[2] - 1;
}
