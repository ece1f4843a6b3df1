/*
 * nativeprobe.c: a shared object that calls the C library's allocator with known sizes, for the
 * native domain's tests (loaded with ctypes) and tests/native/elf_check.c. Each entry point does
 * its calls in one go, so that the caller's own allocations never mix with them.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { P_MALLOC, P_CALLOC, P_REALLOC_NULL, P_POSIX_MEMALIGN, P_ALIGNED_ALLOC, P_MEMALIGN, P_VALLOC, P_PVALLOC };

/* n blocks of size bytes from fn into out; returns how many succeeded. */
int probe_alloc(int fn, size_t size, void **out, int n)
{
    int ok = 0;
    void *volatile none = NULL; /* (a constant NULL: the compiler turns realloc into malloc) */
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        switch (fn) {
        case P_MALLOC: p = malloc(size); break;
        case P_CALLOC: p = calloc(1, size); break;
        case P_REALLOC_NULL: p = realloc(none, size); break;
        case P_POSIX_MEMALIGN: if (posix_memalign(&p, 64, size) != 0) p = NULL; break;
        case P_ALIGNED_ALLOC: p = aligned_alloc(64, (size + 63) / 64 * 64); break;
        case P_MEMALIGN: p = memalign(64, size); break;
        case P_VALLOC: p = valloc(size); break;
        case P_PVALLOC: p = pvalloc(size); break;
        default: break;
        }
        out[i] = p;
        ok += p != NULL;
    }
    return ok;
}

void probe_free(void **blocks, int n)
{
    for (int i = 0; i < n; i++)
        free(blocks[i]);
}

/* realloc of every block to size (0: the C library frees it and returns NULL). */
void probe_realloc(void **blocks, int n, size_t size)
{
    for (int i = 0; i < n; i++)
        blocks[i] = realloc(blocks[i], size);
}

/* Calls that allocate nothing: free(NULL), and a calloc whose size overflows. Returns the
 * number of calls that returned a block (0). */
int probe_nothing(int n)
{
    int got = 0;
    volatile size_t half = SIZE_MAX / 2; /* (volatile: the compiler would refuse the constant) */
    for (int i = 0; i < n; i++) {
        free(NULL);
        void *p = calloc(half, 4);
        got += p != NULL;
        free(p);
    }
    return got;
}

/* malloc + free pairs of one size, for the benchmarks; returns a value that depends on them. */
uintptr_t probe_loop(size_t size, long n)
{
    uintptr_t acc = 0;
    for (long i = 0; i < n; i++) {
        void *p = malloc(size);
        acc += (uintptr_t)p & 0xff;
        free(p);
    }
    return acc;
}

typedef struct {
    int fn;
    size_t size;
    int n;
} job_t;

static void *run_job(void *arg)
{
    job_t *job = arg;
    void **blocks = calloc((size_t)job->n, sizeof *blocks);
    if (blocks == NULL)
        return NULL;
    intptr_t ok = probe_alloc(job->fn, job->size, blocks, job->n);
    probe_free(blocks, job->n);
    free(blocks);
    return (void *)ok;
}

/* probe_alloc + probe_free of n blocks on a new pthread (no Python thread state), plus the
 * thread's own calloc and free of its pointer array; returns the allocations that succeeded. */
int probe_in_pthread(int fn, size_t size, int n)
{
    job_t job = {fn, size, n};
    pthread_t thread;
    void *result = NULL;
    if (pthread_create(&thread, NULL, run_job, &job) != 0)
        return -1;
    pthread_join(thread, &result);
    return (int)(intptr_t)result;
}

/* free as this object sees it (its GOT entry), to call after stop(). */
void *probe_free_address(void)
{
    return (void *)free;
}

void probe_call_free(void (*f)(void *), void *p)
{
    f(p);
}

/* dlopen from this object (a bare name is searched along its own RUNPATH). Not a tail call:
 * the loader takes the caller from the return address. */
void *probe_dlopen(const char *name, int flags)
{
    void *volatile handle = dlopen(name, flags);
    return handle;
}
