// A small CUDA execution model on the host, for checking the kernels of gtl/cuda_*.cuh without a GPU.
//
// Every CUDA thread of a block is a cooperative fiber (ucontext); blocks run one after another. __syncthreads,
// __syncwarp and the warp shuffles/votes are barriers between fibers, so a barrier that some thread of a block (or
// lane of a warp) never reaches is reported as a deadlock instead of passing silently; a shuffle in a partial warp
// aborts. __shared__ variables become function-local statics, which is exact because one block runs at a time.
// Arithmetic is the host's (no fast-math approximations), so results match the GPU to a few ulp, not bit for bit.
// Fibers switch only at barriers and collectives, each running its stretch to the next one in thread order. A missing
// __syncthreads between a shared-memory write and a read by another thread shows only when the reader runs later:
// GTL_CUDA_EMU_REVERSE=1 runs the threads in reverse order to catch the other direction. This is a heuristic;
// compute-sanitizer racecheck on the GPU is the real check.
//
// Include this header before any gtl/cuda_*.cuh header, in a translation unit compiled by a host C++ compiler.
#pragma once

#define GTL_CUDA_EMULATION 1

#include <setjmp.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

struct uint3 {
  unsigned x = 0, y = 0, z = 0;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct uint2 {
  unsigned x, y;
};
struct uint4 {
  unsigned x, y, z, w;
};
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float a, float b, float c, float d) { return float4{a, b, c, d}; }

namespace emu {

constexpr size_t kStackBytes = 256 * 1024;

// A fiber starts once through makecontext/swapcontext and afterwards switches with _setjmp/_longjmp, which skip the
// signal-mask system calls of swapcontext (the emulation spends most of its time switching).
struct Thread {
  ucontext_t ctx;
  jmp_buf jb;
  uint3 tid;
  int linear = 0;
  bool started = false, done = false;
};

struct Block {
  std::vector<Thread> threads;
  ucontext_t sched;
  jmp_buf sched_jb;
  int cur = 0, live = 0;
  unsigned bar_count = 0, bar_gen = 0;
  std::vector<unsigned> warp_count, warp_gen, warp_live;
  std::vector<std::array<uint64_t, 32>> slots;
  uint64_t progress = 0;
  uint3 block_idx;
  dim3 block_dim, grid_dim;
  std::function<void()> body;
};

inline Block*& current() {
  static Block* b = nullptr;
  return b;
}
inline Thread& me() { return current()->threads[current()->cur]; }

[[noreturn]] inline void fail(const char* what) {
  const Block* b = current();
  std::fprintf(stderr, "cuda_emu: %s (block %u,%u,%u thread %d)\n", what, b->block_idx.x, b->block_idx.y,
               b->block_idx.z, b->threads[b->cur].linear);
  std::abort();
}

inline void yield() {
  Block* b = current();
  if (_setjmp(b->threads[b->cur].jb) == 0) _longjmp(b->sched_jb, 1);
}

inline void release_if_complete(Block* b) {
  if (b->bar_count > 0 && b->bar_count == static_cast<unsigned>(b->live)) {
    b->bar_count = 0;
    ++b->bar_gen;
  }
  for (size_t w = 0; w < b->warp_count.size(); ++w)
    if (b->warp_count[w] > 0 && b->warp_count[w] == b->warp_live[w]) {
      b->warp_count[w] = 0;
      ++b->warp_gen[w];
    }
}

inline void sync_block() {
  Block* b = current();
  const unsigned gen = b->bar_gen;
  ++b->progress;
  if (++b->bar_count == static_cast<unsigned>(b->live)) {
    b->bar_count = 0;
    ++b->bar_gen;
    return;
  }
  while (b->bar_gen == gen) yield();
}

inline void sync_warp() {
  Block* b = current();
  const int w = me().linear / 32;
  const unsigned gen = b->warp_gen[w];
  ++b->progress;
  if (++b->warp_count[w] == b->warp_live[w]) {
    b->warp_count[w] = 0;
    ++b->warp_gen[w];
    return;
  }
  while (b->warp_gen[w] == gen) yield();
}

inline void trampoline() {
  Block* b = current();
  b->body();
  Thread& t = b->threads[b->cur];
  t.done = true;
  --b->live;
  --b->warp_live[t.linear / 32];
  ++b->progress;
  release_if_complete(b);
  _longjmp(b->sched_jb, 1);  // never return: the fiber's stack is abandoned
}

// Runs thread i until it yields or ends. Kept out of line so that no local of the scheduler loop lives across the
// _setjmp.
__attribute__((noinline)) inline void resume(Block& b, int i) {
  b.cur = i;
  Thread& t = b.threads[i];
  if (_setjmp(b.sched_jb) != 0) return;
  if (!t.started) {
    t.started = true;
    swapcontext(&b.sched, &t.ctx);
  } else {
    _longjmp(t.jb, 1);
  }
}

inline std::vector<char*>& stacks() {
  static std::vector<char*> s;
  return s;
}

inline void run_block(Block& b) {
  const int n = static_cast<int>(b.block_dim.x * b.block_dim.y * b.block_dim.z);
  const int n_warps = (n + 31) / 32;
  b.threads.assign(n, Thread{});
  b.warp_count.assign(n_warps, 0);
  b.warp_gen.assign(n_warps, 0);
  b.warp_live.assign(n_warps, 0);
  b.slots.assign(n_warps, {});
  while (static_cast<int>(stacks().size()) < n) {
    void* s = mmap(nullptr, kStackBytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s == MAP_FAILED) std::abort();
    stacks().push_back(static_cast<char*>(s));
  }
  Block* saved = current();
  current() = &b;
  for (int i = 0; i < n; ++i) {
    Thread& t = b.threads[i];
    t.linear = i;
    t.tid.x = i % b.block_dim.x;
    t.tid.y = (i / b.block_dim.x) % b.block_dim.y;
    t.tid.z = i / (b.block_dim.x * b.block_dim.y);
    ++b.warp_live[i / 32];
    getcontext(&t.ctx);
    t.ctx.uc_stack.ss_sp = stacks()[i];
    t.ctx.uc_stack.ss_size = kStackBytes;
    t.ctx.uc_link = nullptr;
    makecontext(&t.ctx, trampoline, 0);
  }
  b.live = n;
  static const bool reverse = std::getenv("GTL_CUDA_EMU_REVERSE") && std::getenv("GTL_CUDA_EMU_REVERSE")[0] == '1';
  while (b.live > 0) {
    const uint64_t before = b.progress;
    for (int j = 0; j < n; ++j) {
      const int i = reverse ? n - 1 - j : j;
      if (b.threads[i].done) continue;
      resume(b, i);
    }
    if (b.live > 0 && b.progress == before) {
      b.cur = 0;
      while (b.threads[b.cur].done) ++b.cur;
      fail("deadlock: a barrier or warp collective is not reached by every live thread");
    }
  }
  current() = saved;
}

// Runs kernel<<<grid, block>>>(args...) to completion.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        Block b;
        b.block_idx.x = x;
        b.block_idx.y = y;
        b.block_idx.z = z;
        b.block_dim = block;
        b.grid_dim = grid;
        b.body = [&]() { kernel(args...); };
        run_block(b);
      }
}

struct Launcher {
  template <class... Params, class... Args>
  void operator()(void (*kernel)(Params...), dim3 grid, dim3 block, Args... args) {
    launch(kernel, grid, block, args...);
  }
};

inline int lane() { return me().linear % 32; }

inline void check_full_warp(unsigned mask) {
  if (mask != 0xffffffffu) fail("warp collective with a partial mask");
  if (current()->warp_live[me().linear / 32] != 32) fail("warp collective in a partial or partly exited warp");
}

template <class T>
T exchange(T v, int src) {
  static_assert(sizeof(T) <= 8, "shuffle of more than 8 bytes");
  Block* b = current();
  const int w = me().linear / 32;
  std::memcpy(&b->slots[w][lane()], &v, sizeof(T));
  sync_warp();
  T r;
  std::memcpy(&r, &b->slots[w][src], sizeof(T));
  sync_warp();
  return r;
}

}  // namespace emu

#define threadIdx (::emu::me().tid)
#define blockIdx (::emu::current()->block_idx)
#define blockDim (::emu::current()->block_dim)
#define gridDim (::emu::current()->grid_dim)

inline void __syncthreads() { emu::sync_block(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::check_full_warp(mask);
  emu::sync_warp();
}
template <class T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
  emu::check_full_warp(mask);
  if (width != 32) emu::fail("shuffle width other than 32");
  return emu::exchange(v, emu::lane() ^ lane_mask);
}
template <class T>
T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  emu::check_full_warp(mask);
  if (width != 32) emu::fail("shuffle width other than 32");
  return emu::exchange(v, src & 31);
}
template <class T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  emu::check_full_warp(mask);
  if (width != 32) emu::fail("shuffle width other than 32");
  const int src = emu::lane() - static_cast<int>(delta);
  const T r = emu::exchange(v, src < 0 ? emu::lane() : src);
  return r;
}
template <class T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  emu::check_full_warp(mask);
  if (width != 32) emu::fail("shuffle width other than 32");
  const int src = emu::lane() + static_cast<int>(delta);
  return emu::exchange(v, src > 31 ? emu::lane() : src);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  emu::check_full_warp(mask);
  emu::Block* b = emu::current();
  const int w = emu::me().linear / 32;
  b->slots[w][emu::lane()] = pred != 0 ? 1u : 0u;
  emu::sync_warp();
  unsigned bits = 0;
  for (int o = 0; o < 32; ++o) bits |= static_cast<unsigned>(b->slots[w][o] != 0) << o;
  emu::sync_warp();
  return bits;
}
inline bool __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline bool __all_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) == mask; }

template <class T>
T __ldg(const T* p) {
  return *p;
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  const unsigned old = *p;
  *p = old + v;
  return old;
}
inline int atomicAdd(int* p, int v) {
  const int old = *p;
  *p = old + v;
  return old;
}
inline void __threadfence() {}
