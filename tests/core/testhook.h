/*
 * testhook.h: the interface of testhook.c. The block between the markers is read verbatim by
 * cffi (testhook.py), so it holds plain declarations only.
 */
#ifndef TESTHOOK_H
#define TESTHOOK_H
#include <stddef.h>
#include <stdint.h>

/* TESTHOOK_CDEF_BEGIN */
typedef struct {
    uint64_t allocations[3][3]; /* [domain: obj, mem, raw][size class] */
    uint64_t bytes[3][3];
    uint64_t deallocations[3];
    uint64_t by_size[3][65];
} th_counts_t;

typedef struct {
    uintptr_t ctx, malloc, calloc, realloc, free;
} th_allocator_t;

int th_install(uint64_t critical_size);
int th_uninstall(void);
int th_is_top(int domain);
void th_get_allocator(int domain, th_allocator_t *out);
void th_begin(uintptr_t snapshot, uintptr_t out);
void th_end(uintptr_t snapshot, uintptr_t out, th_counts_t *mine);
void th_counts(th_counts_t *mine);
int th_workload(uint64_t seed, int rounds);
uintptr_t th_alloc(int domain, size_t size);
uintptr_t th_calloc(int domain, size_t nelem, size_t elsize);
uintptr_t th_realloc(int domain, uintptr_t ptr, size_t size);
void th_free(int domain, uintptr_t p);
void th_class_mix(int domain, int rounds, size_t small, size_t medium);
void th_raw_alloc_many(uintptr_t *out, int count, size_t size);
void th_raw_free_many(const uintptr_t *ptrs, int count);
int th_native_threads(int threads, int count, size_t size);
int th_native_threads_keep(int threads, int count, size_t size, uintptr_t *keep);
int th_install_failing(uint64_t fail_size);
int th_uninstall_failing(void);
int th_hammer_start(int threads);
uint64_t th_hammer_stop(uint64_t *bad);
/* Calls stamp (a uint64_t (*)(void), e.g. ms_stamp_ns) back to back for duration_ns of
 * CLOCK_MONOTONIC; *calls: how many calls. Returns the largest step back between two consecutive
 * stamps in ns (0: none). */
uint64_t th_stamps_step_back(uintptr_t stamp, uint64_t duration_ns, uint64_t *calls);
/* A pthread with no Python thread state makes RAW allocations of size bytes, freeing each at
 * once, while another pthread stops it `pauses` times: a real-time signal whose handler sleeps
 * pause_ns (as a preemption or a throttled container would), then run_ns of running between two.
 * Returns the allocating thread's CPU time in ns (CLOCK_THREAD_CPUTIME_ID), or -1 if it could
 * not be set up; *pairs: its allocation and free pairs. */
int64_t th_paused_pairs(size_t size, int pauses, uint64_t pause_ns, uint64_t run_ns, uint64_t *pairs);
/* TESTHOOK_CDEF_END */

#endif
