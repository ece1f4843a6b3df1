/*
 * clockshim.c: a preloaded clock_gettime that lets a test move this process's clocks.
 *
 * The kernel's own clocks (which sem_timedwait's and sem_clockwait's deadlines are measured on)
 * do not move: a shifted CLOCK_REALTIME is exactly what a process sees when the wall clock was
 * stepped back after it computed a deadline; a shifted CLOCK_MONOTONIC is a process that slept
 * (a drain stalled) for that long.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdatomic.h>
#include <time.h>

static _Atomic long g_realtime_shift_s, g_monotonic_shift_s, g_monotonic_shift_ns;

void clockshim_shift(long realtime_s, long monotonic_s)
{
    atomic_store(&g_realtime_shift_s, realtime_s);
    atomic_store(&g_monotonic_shift_s, monotonic_s);
}

/* A step of CLOCK_MONOTONIC under a second (0 <= |ns| < 10^9), added to clockshim_shift's. */
void clockshim_shift_monotonic_ns(long ns)
{
    atomic_store(&g_monotonic_shift_ns, ns);
}

int clock_gettime(clockid_t id, struct timespec *ts)
{
    static int (*real)(clockid_t, struct timespec *);
    if (real == NULL)
        real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
    int rc = real(id, ts);
    if (rc == 0 && id == CLOCK_REALTIME)
        ts->tv_sec += atomic_load(&g_realtime_shift_s);
    else if (rc == 0 && id == CLOCK_MONOTONIC) {
        ts->tv_sec += atomic_load(&g_monotonic_shift_s);
        ts->tv_nsec += atomic_load(&g_monotonic_shift_ns);
        if (ts->tv_nsec >= 1000000000L)
            ts->tv_sec++, ts->tv_nsec -= 1000000000L;
        else if (ts->tv_nsec < 0)
            ts->tv_sec--, ts->tv_nsec += 1000000000L;
    }
    return rc;
}
