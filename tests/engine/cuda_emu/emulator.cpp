/*
 * Fiber scheduler behind emulator.h. Each CUDA thread is a fiber (started with makecontext,
 * switched with _setjmp/_longjmp, which avoids a system call per switch); fibers are reused
 * for every block and every launch. The scheduler runs runnable fibers in thread order until
 * each waits at a barrier or finishes, then releases a warp whose 32 lanes all wait at a warp
 * barrier, or the block when every unfinished thread waits at __syncthreads. Anything else is a
 * deadlock on a GPU too and is reported as a launch failure.
 */
#include "emulator.h"

#include <csetjmp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <ucontext.h>
#include <vector>

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h> /* tells memcheck that fiber stacks are stacks (no-op otherwise) */
#define RWKV7_EMU_STACK_REGISTER(start, end) VALGRIND_STACK_REGISTER(start, end)
#else
#define RWKV7_EMU_STACK_REGISTER(start, end) 0
#endif

namespace rwkv7_emu {

uint3 g_thread, g_block;
dim3 g_block_dim, g_grid_dim;

namespace {

enum State { RUNNABLE, WAIT_BLOCK, WAIT_WARP, FINISHED };

struct Fiber {
    jmp_buf context;
    ucontext_t start;
    char *stack = nullptr;
    State state = FINISHED;
    bool started = false;
    unsigned int index = 0;
    unsigned int exchanges = 0; /* warp exchanges so far: picks the slot buffer */
};

constexpr size_t kStackBytes = 256 * 1024;
constexpr unsigned int kMaxThreads = 1024;

std::vector<Fiber> fibers(kMaxThreads);
jmp_buf scheduler;
Fiber *current = nullptr;
const std::function<void()> *body = nullptr;
/* Two buffers used alternately: a lane can only write buffer p again after passing the barrier
 * of the next exchange, by which time every lane has read it, so one barrier per exchange. */
float float_slots[2][kMaxThreads];
unsigned int uint_slots[2][kMaxThreads];
std::string error_message;
bool failed = false;
unsigned long long launches = 0;

void wait(State state) {
    current->state = state;
    if (!_setjmp(current->context)) _longjmp(scheduler, 1);
}

void fiber_main() {
    for (;;) {
        (*body)();
        current->state = FINISHED;
        if (!_setjmp(current->context)) _longjmp(scheduler, 1);
    }
}

void resume(Fiber &fiber) {
    current = &fiber;
    const unsigned int bx = g_block_dim.x, by = g_block_dim.y;
    g_thread.x = fiber.index % bx;
    g_thread.y = (fiber.index / bx) % by;
    g_thread.z = fiber.index / (bx * by);
    if (!_setjmp(scheduler)) {
        if (!fiber.started) {
            fiber.started = true;
            if (!fiber.stack) {
                fiber.stack = static_cast<char *>(std::malloc(kStackBytes));
                (void)RWKV7_EMU_STACK_REGISTER(fiber.stack, fiber.stack + kStackBytes);
            }
            getcontext(&fiber.start);
            fiber.start.uc_stack.ss_sp = fiber.stack;
            fiber.start.uc_stack.ss_size = kStackBytes;
            fiber.start.uc_link = nullptr;
            makecontext(&fiber.start, fiber_main, 0);
            setcontext(&fiber.start);
        }
        _longjmp(fiber.context, 1);
    }
}

void fail(const std::string &message, unsigned int threads) {
    failed = true;
    if (error_message.empty()) error_message = message;
    /* Abandon the fibers' frames: they restart from the top next time. */
    for (unsigned int t = 0; t < threads; t++) fibers[t].started = false;
}

/* Run one block to completion; false on a barrier mismatch. */
bool run_block(unsigned int threads) {
    for (unsigned int t = 0; t < threads; t++) fibers[t].state = RUNNABLE;
    for (;;) {
        for (unsigned int t = 0; t < threads; t++) {
            if (fibers[t].state == RUNNABLE) resume(fibers[t]);
        }
        unsigned int finished = 0, at_block = 0;
        for (unsigned int t = 0; t < threads; t++) {
            finished += fibers[t].state == FINISHED;
            at_block += fibers[t].state == WAIT_BLOCK;
        }
        if (finished == threads) return true;
        bool released = false;
        for (unsigned int first = 0; first < threads; first += 32) {
            const unsigned int last = first + 32 < threads ? first + 32 : threads;
            unsigned int waiting = 0;
            for (unsigned int t = first; t < last; t++) waiting += fibers[t].state == WAIT_WARP;
            if (waiting == 0) continue;
            if (waiting != 32) {
                char text[160];
                std::snprintf(text, sizeof text,
                              "warp %u: %u of 32 lanes reached a shuffle/ballot (divergence or exited lanes) in block (%u,%u,%u)",
                              first / 32, waiting, g_block.x, g_block.y, g_block.z);
                fail(text, threads);
                return false;
            }
            for (unsigned int t = first; t < last; t++) fibers[t].state = RUNNABLE;
            released = true;
        }
        if (released) continue;
        if (at_block > 0 && at_block + finished == threads) {
            for (unsigned int t = 0; t < threads; t++) {
                if (fibers[t].state == WAIT_BLOCK) fibers[t].state = RUNNABLE;
            }
            continue;
        }
        fail("deadlock: threads wait at different barriers", threads);
        return false;
    }
}

}  // namespace

void launch(dim3 grid, dim3 block, const std::function<void()> &kernel) {
    launches++;
    const unsigned int threads = block.x * block.y * block.z;
    if (threads == 0 || threads > kMaxThreads || grid.x == 0 || grid.y == 0 || grid.z == 0) {
        failed = true;
        if (error_message.empty()) error_message = "invalid launch configuration";
        return;
    }
    body = &kernel;
    g_grid_dim = grid;
    g_block_dim = block;
    for (unsigned int z = 0; z < grid.z; z++) {
        for (unsigned int y = 0; y < grid.y; y++) {
            for (unsigned int x = 0; x < grid.x; x++) {
                g_block.x = x;
                g_block.y = y;
                g_block.z = z;
                for (unsigned int t = 0; t < threads; t++) {
                    fibers[t].index = t;
                    fibers[t].exchanges = 0;
                }
                if (!run_block(threads)) return;
            }
        }
    }
}

void block_barrier() { wait(WAIT_BLOCK); }

float shfl_xor(float value, int offset) {
    const unsigned int me = current->index, buffer = current->exchanges++ & 1u;
    float_slots[buffer][me] = value;
    wait(WAIT_WARP);
    return float_slots[buffer][me ^ static_cast<unsigned int>(offset)];
}

unsigned int ballot(int predicate) {
    const unsigned int me = current->index, first = me & ~31u, buffer = current->exchanges++ & 1u;
    uint_slots[buffer][me] = predicate ? 1u : 0u;
    wait(WAIT_WARP);
    unsigned int mask = 0;
    for (unsigned int lane = 0; lane < 32; lane++) mask |= uint_slots[buffer][first + lane] << lane;
    return mask;
}

}  // namespace rwkv7_emu

extern "C" cudaError_t cudaGetLastError(void) {
    const bool was = rwkv7_emu::failed;
    rwkv7_emu::failed = false;
    return was ? cudaErrorLaunchFailure : cudaSuccess;
}

/* The first failure since the last call, for test messages. */
extern "C" const char *rwkv7_emu_take_error(void) {
    static std::string taken;
    taken = rwkv7_emu::error_message;
    rwkv7_emu::error_message.clear();
    return taken.c_str();
}

/* Kernel launches so far (the decode driver's launch count is part of its design). */
extern "C" unsigned long long rwkv7_emu_launch_count(void) { return rwkv7_emu::launches; }
