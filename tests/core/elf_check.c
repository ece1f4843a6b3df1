/*
 * elf_check.c: csrc/native.c on its own, natively and (cross-compiled) under qemu-user for
 * AArch64. Stand-in wrappers count the calls that reach them; the shared objects named on the
 * command line are builds of nativeprobe.c:
 *   argv[1] loaded before install (full RELRO: its GOT is read-only),
 *   argv[2] loaded after install, by a path, from argv[1] (its dlopen goes through memscope's),
 *   argv[3] a bare name that argv[1]'s RUNPATH alone finds,
 *   argv[4] lazily bound, loaded after install with RTLD_LAZY | RTLD_DEEPBIND.
 * (native.c is linked into this executable, so the executable counts as memscope itself here:
 * every dlopen of interest goes through argv[1].)
 * Two more modes, for what a real process may do around a pass:
 *   elf_check race LIB: a thread loads and unloads LIB (no PLT entries, full RELRO, thousands of
 *     relocations: a long relocation window) while this one polls; no pass may touch the
 *     object before the loader is done with it.
 *   elf_check own-allocator LIB: LIB depends on an allocator of its own (it defines malloc and
 *     free, tagging its blocks), loaded lazily with RTLD_DEEPBIND; its malloc entry is bound at
 *     install, its free entry not yet: a block it allocated must reach that allocator's free.
 * Prints one line per check; exits 1 if one failed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* AddressSanitizer refuses RTLD_DEEPBIND: its build passes -DLAZY_FLAGS without it. */
#ifndef LAZY_FLAGS
#define LAZY_FLAGS (RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND)
#endif

__thread struct ms_tls ms_tls __attribute__((tls_model("initial-exec")));
static _Atomic long g_calls[MS_NATIVE_FNS];
static int g_woken;

void ms_wake_drainer(void)
{
    g_woken = 1;
}

_Atomic(void *) ms_native_next[MS_NATIVE_FNS][MS_NATIVE_VARIANTS];

#define NEXT(fn, v, type) ((type)atomic_load(&ms_native_next[fn][v]))
#define STAND_INS(v)                                                                         \
    static void *malloc_##v(size_t s)                                                        \
    {                                                                                        \
        g_calls[MS_FN_MALLOC]++;                                                             \
        return NEXT(MS_FN_MALLOC, v, void *(*)(size_t))(s);                                  \
    }                                                                                        \
    static void *calloc_##v(size_t n, size_t s)                                              \
    {                                                                                        \
        g_calls[MS_FN_CALLOC]++;                                                             \
        return NEXT(MS_FN_CALLOC, v, void *(*)(size_t, size_t))(n, s);                       \
    }                                                                                        \
    static void *realloc_##v(void *p, size_t s)                                              \
    {                                                                                        \
        g_calls[MS_FN_REALLOC]++;                                                            \
        return NEXT(MS_FN_REALLOC, v, void *(*)(void *, size_t))(p, s);                      \
    }                                                                                        \
    static void free_##v(void *p)                                                            \
    {                                                                                        \
        g_calls[MS_FN_FREE]++;                                                               \
        NEXT(MS_FN_FREE, v, void (*)(void *))(p);                                            \
    }                                                                                        \
    static int posix_memalign_##v(void **o, size_t a, size_t s)                              \
    {                                                                                        \
        g_calls[MS_FN_POSIX_MEMALIGN]++;                                                     \
        return NEXT(MS_FN_POSIX_MEMALIGN, v, int (*)(void **, size_t, size_t))(o, a, s);     \
    }                                                                                        \
    static void *aligned_alloc_##v(size_t a, size_t s)                                       \
    {                                                                                        \
        g_calls[MS_FN_ALIGNED_ALLOC]++;                                                      \
        return NEXT(MS_FN_ALIGNED_ALLOC, v, void *(*)(size_t, size_t))(a, s);                \
    }                                                                                        \
    static void *memalign_##v(size_t a, size_t s)                                            \
    {                                                                                        \
        g_calls[MS_FN_MEMALIGN]++;                                                           \
        return NEXT(MS_FN_MEMALIGN, v, void *(*)(size_t, size_t))(a, s);                     \
    }                                                                                        \
    static void *valloc_##v(size_t s)                                                        \
    {                                                                                        \
        g_calls[MS_FN_VALLOC]++;                                                             \
        return NEXT(MS_FN_VALLOC, v, void *(*)(size_t))(s);                                  \
    }                                                                                        \
    static void *pvalloc_##v(size_t s)                                                       \
    {                                                                                        \
        g_calls[MS_FN_PVALLOC]++;                                                            \
        return NEXT(MS_FN_PVALLOC, v, void *(*)(size_t))(s);                                 \
    }
STAND_INS(0)
STAND_INS(1)
STAND_INS(2)
STAND_INS(3)
#define ROW(f) {(void *)f##_0, (void *)f##_1, (void *)f##_2, (void *)f##_3}
void *const ms_native_wrapper[MS_NATIVE_FNS][MS_NATIVE_VARIANTS] = {
    ROW(malloc), ROW(calloc), ROW(realloc), ROW(free), ROW(posix_memalign),
    ROW(aligned_alloc), ROW(memalign), ROW(valloc), ROW(pvalloc),
};

typedef int (*alloc_fn)(int, size_t, void **, int);
typedef void (*free_fn)(void **, int);
typedef void (*realloc_fn)(void **, int, size_t);
typedef int (*thread_fn)(int, size_t, int);
typedef void *(*dlopen_fn)(const char *, int);

static int g_failed;

static void check(int ok, const char *what)
{
    printf("%s: %s\n", ok ? "ok" : "FAILED", what);
    if (!ok)
        g_failed = 1;
}

static long calls(int fn)
{
    return atomic_load(&g_calls[fn]);
}

/* Every allocating function of one probe object, n calls each: whether each reached its
 * stand-in exactly n times (expect) or not at all (!expect). */
static void exercise(void *lib, int expect, const char *what)
{
    alloc_fn probe_alloc = (alloc_fn)dlsym(lib, "probe_alloc");
    free_fn probe_free = (free_fn)dlsym(lib, "probe_free");
    realloc_fn probe_realloc = (realloc_fn)dlsym(lib, "probe_realloc");
    thread_fn probe_in_pthread = (thread_fn)dlsym(lib, "probe_in_pthread");
    static const int fns[] = {MS_FN_MALLOC, MS_FN_CALLOC, MS_FN_REALLOC, MS_FN_POSIX_MEMALIGN,
                              MS_FN_ALIGNED_ALLOC, MS_FN_MEMALIGN, MS_FN_VALLOC, MS_FN_PVALLOC};
    void *blocks[8];
    int ok = probe_alloc && probe_free && probe_realloc && probe_in_pthread;
    for (int k = 0; ok && k < 8; k++) {
        long before = calls(fns[k]), frees = calls(MS_FN_FREE);
        ok &= probe_alloc(k, 100, blocks, 8) == 8;
        probe_free(blocks, 8);
        ok &= calls(fns[k]) - before == (expect ? 8 : 0) && calls(MS_FN_FREE) - frees == (expect ? 8 : 0);
        if (getenv("ELF_CHECK_DEBUG"))
            fprintf(stderr, "fn %d: %ld calls, %ld frees\n", fns[k], calls(fns[k]) - before, calls(MS_FN_FREE) - frees);
    }
    long before = calls(MS_FN_REALLOC);
    if (ok) {
        ok &= probe_alloc(0, 16, blocks, 8) == 8;
        probe_realloc(blocks, 8, 4096);
        probe_free(blocks, 8);
        ok &= calls(MS_FN_REALLOC) - before == (expect ? 8 : 0);
        before = calls(MS_FN_MALLOC);
        ok &= probe_in_pthread(0, 64, 10) == 10;
        ok &= calls(MS_FN_MALLOC) - before == (expect ? 10 : 0);
    }
    char text[160];
    snprintf(text, sizeof text, "%s: every function %s", what, expect ? "reaches the wrappers" : "bypasses them");
    check(ok, text);
}

/* Whether the page of address has protection "r--" (read-only) in /proc/self/maps. */
static int read_only(const void *address)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int result = -1;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) == 3 && (uintptr_t)address >= lo && (uintptr_t)address < hi)
            result = perms[1] == '-';
    }
    if (maps)
        fclose(maps);
    return result;
}

static const char *g_race_path;
static _Atomic int g_race_done, g_race_failed;

static void *race_loader(void *arg)
{
    (void)arg;
    for (int i = 0; i < 400; i++) {
        void *h = dlopen(g_race_path, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            fprintf(stderr, "dlopen %s: %s\n", g_race_path, dlerror());
            atomic_store(&g_race_failed, 1);
            break;
        }
        dlclose(h);
    }
    atomic_store(&g_race_done, 1);
    return NULL;
}

static int race(const char *path)
{
    g_race_path = path;
    ms_native_install();
    pthread_t thread;
    if (pthread_create(&thread, NULL, race_loader, NULL) != 0)
        return 2;
    long polls = 0;
    while (!atomic_load(&g_race_done)) {
        ms_native_poll();
        polls++;
    }
    pthread_join(thread, NULL);
    ms_native_uninstall();
    char text[96];
    snprintf(text, sizeof text, "400 loads of an object racing %ld polls", polls);
    /* (a pass that wrote into the object mid-relocation crashes the loader) */
    check(!atomic_load(&g_race_failed), text);
    return g_failed;
}

typedef void *(*user_malloc_fn)(size_t);
typedef void (*user_free_fn)(void *);

static int own_allocator(const char *path)
{
    void *lib = dlopen(path, RTLD_LAZY | RTLD_LOCAL | RTLD_DEEPBIND);
    check(lib != NULL, "an object with an allocator of its own loads (RTLD_LAZY | RTLD_DEEPBIND)");
    if (!lib)
        return 1;
    user_malloc_fn user_malloc = (user_malloc_fn)dlsym(lib, "user_malloc");
    user_free_fn user_free = (user_free_fn)dlsym(lib, "user_free");
    void *block = user_malloc(10); /* binds its malloc entry (to its own allocator), not free's */
    check(memcmp((char *)block - 16, "MYALLOC!", 8) == 0, "its malloc is its own allocator's (a tagged block)");
    ms_native_install();
    long frees = calls(MS_FN_FREE);
    user_free(block); /* its own allocator's free (it traps on a block of another) */
    check(calls(MS_FN_FREE) == frees, "its free entry, not bound yet, is left to the loader (its own free)");
    long before = calls(MS_FN_MALLOC);
    block = user_malloc(10);
    user_free(block);
    check(calls(MS_FN_MALLOC) - before == 1, "its bound malloc entry reaches the wrappers");
    struct timespec wait = {0, 300000000}; /* past the first retry delay */
    nanosleep(&wait, NULL);
    ms_native_poll();
    before = calls(MS_FN_FREE);
    block = user_malloc(10);
    user_free(block);
    check(calls(MS_FN_FREE) - before == 1, "its free entry, bound since, reaches them after a retry");
    ms_native_uninstall();
    before = calls(MS_FN_MALLOC) + calls(MS_FN_FREE);
    block = user_malloc(10);
    check(memcmp((char *)block - 16, "MYALLOC!", 8) == 0, "after uninstall its malloc is its own allocator's");
    user_free(block);
    check(calls(MS_FN_MALLOC) + calls(MS_FN_FREE) == before, "after uninstall its calls bypass the wrappers");
    return g_failed;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "race") == 0)
        return race(argv[2]);
    if (argc == 3 && strcmp(argv[1], "own-allocator") == 0)
        return own_allocator(argv[2]);
    if (argc != 5) {
        fprintf(stderr, "usage: elf_check RELRO_LIB LATER_LIB BARE_NAME LAZY_LIB\n");
        return 2;
    }
    void *first = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    check(first != NULL, "the first object loads");
    if (!first)
        return 1;
    void **(*free_address)(void) = (void **(*)(void))dlsym(first, "probe_free_address");
    exercise(first, 0, "before install");

    ms_native_install();
    uint64_t objects, entries, skipped;
    ms_native_stats(&objects, &entries, &skipped);
    check(objects >= 1 && entries >= 9 && skipped == 0, "install patches the loaded object");
    exercise(first, 1, "after install, a full-RELRO object");
    check(read_only(free_address) == 1, "its RELRO pages are read-only again");

    dlopen_fn probe_dlopen = (dlopen_fn)dlsym(first, "probe_dlopen");
    void *later = probe_dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
    check(later != NULL, "an object loaded by path from a patched object");
    exercise(later, 1, "that object, at once");

#ifndef NO_BARE_NAME
    /* (Not under the sanitizers: their dlopen interceptor is the caller then, whatever ours does.) */
    g_woken = 0;
    void *bare = probe_dlopen(argv[3], RTLD_NOW | RTLD_LOCAL);
    check(bare != NULL, "a bare name found through the caller's RUNPATH only");
    ms_native_poll();
    if (bare)
        exercise(bare, 1, "that object, after the drainer's poll");
    /* $ORIGIN is the caller's directory: argv[1]'s, where hidden/ lies. */
    void *origin = probe_dlopen("$ORIGIN/hidden/libbare.so", RTLD_NOW | RTLD_LOCAL);
    check(origin != NULL && origin == bare, "a $ORIGIN name expands from the caller's directory");
#endif

    void *lazy = probe_dlopen(argv[4], LAZY_FLAGS);
    check(lazy != NULL, "a lazily bound object loaded with RTLD_DEEPBIND");
    if (lazy) {
        /* Its PLT entries are bound at their first calls, by the loader; until then they are
         * left alone (the loader decides where they lead), and the next retry patches them. */
        alloc_fn probe_alloc = (alloc_fn)dlsym(lazy, "probe_alloc");
        free_fn probe_free = (free_fn)dlsym(lazy, "probe_free");
        realloc_fn probe_realloc = (realloc_fn)dlsym(lazy, "probe_realloc");
        thread_fn probe_in_pthread = (thread_fn)dlsym(lazy, "probe_in_pthread");
        void *blocks[1];
        long before = calls(MS_FN_MALLOC);
        probe_alloc(0, 100, blocks, 1);
        check(calls(MS_FN_MALLOC) == before, "that object's malloc entry, not bound yet, is left to the loader");
        probe_free(blocks, 1);
        for (int k = 1; k < 8; k++) { /* binds the other entries */
            probe_alloc(k, 100, blocks, 1);
            probe_free(blocks, 1);
        }
        probe_alloc(0, 16, blocks, 1);
        probe_realloc(blocks, 1, 64);
        probe_free(blocks, 1);
        probe_in_pthread(0, 64, 1);
        struct timespec wait = {0, 300000000}; /* past the first retry delay */
        nanosleep(&wait, NULL);
        ms_native_poll();
        exercise(lazy, 1, "that object, once its entries are bound");
    }

    check(dlclose(later) == 0, "dlclose of a patched object");
    ms_native_poll();
    exercise(first, 1, "the other objects after that dlclose");

    ms_native_uninstall();
    ms_native_stats(&objects, &entries, &skipped);
    check(objects == 0 && entries == 0, "uninstall leaves no entry pointing at the wrappers");
    exercise(first, 0, "after uninstall");
    if (lazy)
        exercise(lazy, 0, "after uninstall, the lazy object");
    check(read_only(free_address) == 1, "RELRO pages read-only after uninstall");

    ms_native_install();
    exercise(first, 1, "after a second install");
    ms_native_uninstall();
    exercise(first, 0, "after a second uninstall");
    return g_failed;
}
