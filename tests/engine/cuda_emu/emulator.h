/*
 * A CPU emulator for the kernels in cuda/, used by the tests on machines without a GPU.
 *
 * The kernel sources are compiled unchanged as C++ with this header force-included
 * (g++ -x c++ -include emulator.h). Every CUDA thread of a block runs as a fiber on one OS
 * thread; __syncthreads is a block barrier, warp shuffles and ballots are warp barriers, and
 * a mismatch (a barrier in divergent code, a shuffle with exited lanes) is reported as a launch
 * error instead of hanging. Blocks of a grid run one after another in index order, which is one
 * legal CUDA schedule, so last-block epilogues and atomics work as on a GPU; what it cannot
 * show is a race between blocks or any timing.
 */
#ifndef RWKV7_EMULATOR_H
#define RWKV7_EMULATOR_H

#include <cuda_runtime.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>

namespace rwkv7_emu {

extern uint3 g_thread, g_block;
extern dim3 g_block_dim, g_grid_dim;

void launch(dim3 grid, dim3 block, const std::function<void()> &body);
void block_barrier();
float shfl_xor(float value, int offset);
unsigned int ballot(int predicate);

}  // namespace rwkv7_emu

#define threadIdx (rwkv7_emu::g_thread)
#define blockIdx (rwkv7_emu::g_block)
#define blockDim (rwkv7_emu::g_block_dim)
#define gridDim (rwkv7_emu::g_grid_dim)

#undef __shared__
#define __shared__ static
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#define RWKV7_LAUNCH(kernel, grid, block, stream, ...)                                            \
    ((void)(stream), rwkv7_emu::launch(dim3(grid), dim3(block), [&]() { kernel(__VA_ARGS__); }))

inline void __syncthreads() { rwkv7_emu::block_barrier(); }
inline void __threadfence() {}
inline float __shfl_xor_sync(unsigned int, float value, int offset) { return rwkv7_emu::shfl_xor(value, offset); }
inline unsigned int __ballot_sync(unsigned int, int predicate) { return rwkv7_emu::ballot(predicate); }
inline int __popc(unsigned int x) { return __builtin_popcount(x); }
inline unsigned int atomicAdd(unsigned int *address, unsigned int value) {
    const unsigned int old = *address;
    *address = old + value;
    return old;
}
inline float __uint_as_float(unsigned int u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
template <typename T> inline T __ldg(const T *p) { return *p; }
template <typename T> inline T __ldcg(const T *p) { return *p; }

#endif /* RWKV7_EMULATOR_H */
