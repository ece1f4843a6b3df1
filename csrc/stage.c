/*
 * stage.c: the mover, a native thread that empties the threads' rings into one staging buffer
 * whenever a ring fills, so that the drainer (a Python thread) comes back only every interval or
 * when the stage is half full.
 *
 * Why: a program that samples fast fills a ring many times a second, and each wake-up of the
 * Python drainer makes it take the GIL back from the application (a forced switch of the
 * application's thread, and the drainer's own fixed cost per drain). The mover never takes the
 * GIL and runs no Python: it moves records (ms_drain), and it frees the rings and states of
 * exited threads on the way. Unless a sink wants every record (the dump writer: ms_stage_keep
 * 1), it reduces what it moves into a summary of its own (sums.c) and stages none of it, so a
 * busy program's records no longer fill the stage: the drainer comes back at its interval, not
 * at every half stage. Sites and the sinks stay with the Python drain, which takes the staged
 * records first and adds the mover's summary (ms_drain_reduce): a complete drain still sees
 * every record made before it began, wherever the record waited.
 *
 * Records leave the rings here alone, by the mover's passes or by a drain's (under
 * g_stage_lock both), so this is where the workload recognizer's window is given them
 * (ms_window_attach): in C, without the GIL on the mover, and with no copy of them kept for it.
 *
 * The stage is a sequence of chunks, one per pass of the mover, each with the base time that its
 * records' 32-bit time deltas count from (ms_drain's info->base_us). It is mapped when the mover
 * starts (pages are touched as records arrive) and given back once drained after a stop.
 */
#include <semaphore.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"

#define STAGE_RECORDS 65536u /* 2 MiB; the drainer is woken at half */
#define STAGE_CHUNKS 256u
#define STAGE_BYTES ((uint64_t)STAGE_RECORDS * sizeof(ms_record_t))
#define MOVE_STEP_RECORDS 2048u /* 64 KiB: as many as give_back_unused leaves touched */

typedef struct {
    uint32_t start, n;
    uint64_t base_us;
} chunk_t;

/* Everything below under g_stage_lock, but g_running (read by the hooks' wake-ups). */
static pthread_mutex_t g_stage_lock = PTHREAD_MUTEX_INITIALIZER;
static ms_record_t *g_stage;
static chunk_t g_chunks[STAGE_CHUNKS];
static uint32_t g_first_chunk, g_nchunks, g_staged;
/* Records' worth of the stage touched since its pages were last given back, and how full it was
 * when last emptied (see give_back_unused). */
static uint32_t g_touched, g_last_fill;
/* The touched records' pages (at least a step's), in bytes, for ms_stage_footprint (which takes
 * no lock); 0 while unmapped. */
static _Atomic uint64_t g_touched_bytes;
static bool g_stopping;
static pthread_t g_thread;
static _Atomic bool g_running;
static _Atomic uint32_t g_paused; /* ms_mover_pause: the mover moves nothing while nonzero */
static uint64_t g_cpu_done_ns; /* CPU time of movers that ended */
/* What the mover reduced and no drain has added to the summary yet. */
static double g_id_count[MS_MAX_IDS], g_id_bytes[MS_MAX_IDS], g_id_live_bytes[MS_MAX_IDS];
static ms_sums_t g_sums = MS_SUMS_INIT(g_id_count, g_id_bytes, g_id_live_bytes);
/* ms_stage_keep's setting, read at every pass (written under g_stage_lock) */
static _Atomic bool g_keep_all = true;
/* The window given the records that leave the rings (ms_window_attach), or NULL. */
static ms_window_t *g_window;

/* Under g_stage_lock (or in a forked child): the stage's first `records` records are, or may
 * be, in RAM. The footprint counts a mapped stage's first step whatever was touched: the mover's
 * first passes touch it (all of it once a pass finds a step's worth of records), so a steady
 * program's footprint does not move with the size of the mover's passes. */
static void set_touched(uint32_t records)
{
    g_touched = records;
    uint32_t counted = records > MOVE_STEP_RECORDS ? records : MOVE_STEP_RECORDS;
    atomic_store_explicit(&g_touched_bytes, g_stage ? ms_pages_size((uint64_t)counted * sizeof(ms_record_t)) : 0,
                          memory_order_relaxed);
}

static void touch(uint32_t records)
{
    if (records > g_touched)
        set_touched(records);
}

static void stage_unmap(void)
{
    if (g_stage)
        munmap(g_stage, STAGE_BYTES);
    g_stage = NULL;
    set_touched(0);
    g_last_fill = 0;
}

uint64_t ms_stage_footprint(void)
{
    return atomic_load_explicit(&g_touched_bytes, memory_order_relaxed);
}

/* A semaphore for the same reason as the drainer's (buffers.c): a hook may post it. */
static sem_t g_move;
static pthread_once_t g_move_once = PTHREAD_ONCE_INIT;

static void init_move(void)
{
    sem_init(&g_move, 0, 0);
}

void ms_wake_mover(void)
{
    if (!atomic_load_explicit(&g_running, memory_order_acquire)) {
        ms_wake_drainer();
        return;
    }
    int pending = 0;
    if (sem_getvalue(&g_move, &pending) == 0 && pending > 0)
        return;
    sem_post(&g_move);
}

/* Under g_stage_lock: records that just left the rings go to the recognizer's window first. */
static void leave(const ms_record_t *records, size_t n, uint64_t base_us)
{
    if (g_window != NULL && n > 0)
        ms_window_take(g_window, records, n, (int64_t)base_us);
}

/* Under g_stage_lock: moves what the rings hold, then wakes the drainer when the stage is half
 * full, or full while records are left in the rings. Records a sink wants every one of are
 * moved in one step; others are taken MOVE_STEP_RECORDS at a time and reduced, through the
 * stage's free part, so that its touched pages stay near what it keeps rather than what the
 * rings held. */
static void move_once(void)
{
    if (atomic_load(&g_paused))
        return;
    bool wake = false;
    bool keep_all = atomic_load_explicit(&g_keep_all, memory_order_relaxed);
    /* At most a stage's worth a call, as in one step: a program that fills its rings as fast as
     * they are read must not keep the lock (and the drainer, ms_mover_pause) waiting. */
    for (size_t moved = 0;;) {
        if (!g_stage || g_first_chunk + g_nchunks >= STAGE_CHUNKS || g_staged >= STAGE_RECORDS) {
            wake = true;
            break;
        }
        uint32_t room = STAGE_RECORDS - g_staged;
        if (!keep_all && room > MOVE_STEP_RECORDS)
            room = MOVE_STEP_RECORDS;
        ms_drain_info_t info;
        ms_record_t *at = g_stage + g_staged;
        size_t n = ms_rings_drain_all(at, room, &info);
        moved += n;
        touch(g_staged + (uint32_t)n);
        leave(at, n, info.base_us);
        if (n > 0 && keep_all) {
            g_chunks[g_first_chunk + g_nchunks++] = (chunk_t){g_staged, (uint32_t)n, info.base_us};
            g_staged += (uint32_t)n;
        } else if (n > 0) {
            ms_sums_add(&g_sums, at, n);
        }
        /* (more with nothing taken: a record pushed after the base was read leads the next pass) */
        if (!info.more || n == 0 || keep_all || moved >= STAGE_RECORDS) {
            wake = info.more != 0;
            break;
        }
    }
    if (wake || g_staged >= STAGE_RECORDS / 2 || g_first_chunk + g_nchunks >= STAGE_CHUNKS / 2)
        ms_wake_drainer();
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void *mover_main(void *arg)
{
    (void)arg;
    /* The first pass comes early: it calibrates the time stamps' counter (csrc/clock.c), which
     * needs 50 ms since ms_start's reference. */
    for (uint32_t wait_ms = 60;; wait_ms = MS_NATIVE_POLL_MS) {
        int woken = ms_sem_wait_ms(&g_move, wait_ms);
        /* The native domain's poll, here rather than in a drain: it takes the loader's lock,
         * and the drainer calls into C keeping the GIL (see ms_native_poll). */
        ms_native_poll();
        ms_clock_tick();
        pthread_mutex_lock(&g_stage_lock);
        if (g_stopping) {
            g_cpu_done_ns += thread_cpu_ns();
            pthread_mutex_unlock(&g_stage_lock);
            return NULL;
        }
        if (woken)
            move_once();
        pthread_mutex_unlock(&g_stage_lock);
    }
}

int ms_mover_start(void)
{
    pthread_once(&g_move_once, init_move);
    pthread_mutex_lock(&g_stage_lock);
    int rc = 0;
    if (!atomic_load(&g_running)) {
        if (!g_stage) {
            /* Address space that becomes memory as it is written: not counted whole in
             * ms_pages_held (ms_pages_map), but by its touched part (set_touched). */
            g_stage = ms_pages_map(STAGE_BYTES);
            set_touched(0);
        }
        g_stopping = false;
        /* No signal is ever delivered to the mover: a handler of the application's (or a
         * profiler's) must not run on a thread it does not know. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        rc = g_stage ? pthread_create(&g_thread, NULL, mover_main, NULL) : -1;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc == 0)
            atomic_store_explicit(&g_running, true, memory_order_release);
        else
            rc = -1;
    }
    pthread_mutex_unlock(&g_stage_lock);
    return rc;
}

void ms_mover_stop(void)
{
    pthread_mutex_lock(&g_stage_lock);
    bool running = atomic_load(&g_running);
    if (running) {
        g_stopping = true;
        atomic_store_explicit(&g_running, false, memory_order_release);
    }
    pthread_mutex_unlock(&g_stage_lock);
    if (running) {
        sem_post(&g_move);
        pthread_join(g_thread, NULL);
    }
}

void ms_mover_pause(int pause)
{
    if (pause) {
        atomic_fetch_add(&g_paused, 1);
        /* A pass under way ends before this returns. */
        pthread_mutex_lock(&g_stage_lock);
        pthread_mutex_unlock(&g_stage_lock);
    } else if (atomic_fetch_sub(&g_paused, 1) == 1) {
        ms_wake_mover(); /* what filled meanwhile */
    }
}

uint64_t ms_mover_cpu_ns(void)
{
    pthread_mutex_lock(&g_stage_lock);
    uint64_t ns = g_cpu_done_ns;
    clockid_t clock;
    struct timespec ts;
    if (atomic_load(&g_running) && pthread_getcpuclockid(g_thread, &clock) == 0 && clock_gettime(clock, &ts) == 0)
        ns += (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    pthread_mutex_unlock(&g_stage_lock);
    return ns;
}

uint64_t ms_stage_pending(void)
{
    pthread_mutex_lock(&g_stage_lock);
    uint64_t n = g_staged - (g_nchunks ? g_chunks[g_first_chunk].start : g_staged);
    pthread_mutex_unlock(&g_stage_lock);
    return n;
}

#define STAGE_KEEP_RECORDS 2048u /* 64 KiB stay touched whatever happens */

/* Under g_stage_lock, the stage just emptied after holding fill records: the pages touched
 * beyond twice what the last two emptyings needed go back to the system. A program that samples
 * steadily keeps its pages (no fault per drain); one that had a burst, or whose threads exited,
 * does not keep a burst's worth resident for good. */
static void give_back_unused(uint32_t fill)
{
    uint32_t need = fill > g_last_fill ? fill : g_last_fill;
    g_last_fill = fill;
    need = 2 * need > STAGE_KEEP_RECORDS ? 2 * need : STAGE_KEEP_RECORDS;
    if (g_touched <= need)
        return;
    uint64_t page = ms_pages_size(1);
    uint64_t from = ((uint64_t)need * sizeof(ms_record_t) + page - 1) / page * page;
    uint64_t to = ((uint64_t)g_touched * sizeof(ms_record_t) + page - 1) / page * page;
    if (to > from)
        madvise((char *)g_stage + from, to - from, MADV_DONTNEED);
    set_touched(need);
}

/* Under g_stage_lock: moves up to capacity staged records into out, their deltas rewritten
 * against the first chunk's base; stops before a record 2^32 us or more after it. */
static size_t take_staged(ms_record_t *out, size_t capacity, ms_drain_info_t *info)
{
    size_t n = 0;
    uint64_t base = g_chunks[g_first_chunk].base_us;
    while (g_nchunks > 0 && n < capacity) {
        chunk_t *c = &g_chunks[g_first_chunk];
        if (c->base_us < base) /* (a record pushed late can make a later pass start earlier) */
            break;                /* its own call rebases it */
        uint64_t shift = c->base_us - base;
        uint32_t k = 0;
        for (; k < c->n && n < capacity; k++) {
            const ms_record_t *rec = &g_stage[c->start + k];
            uint64_t delta = shift + rec->time_delta_us;
            if (delta > UINT32_MAX)
                break;
            out[n] = *rec;
            out[n].time_delta_us = (uint32_t)delta;
            n++;
        }
        c->start += k;
        c->n -= k;
        if (c->n > 0)
            break;
        g_first_chunk++;
        g_nchunks--;
    }
    if (g_nchunks == 0) {
        give_back_unused(g_staged);
        g_first_chunk = g_staged = 0;
    }
    info->base_us = base;
    return n;
}

size_t ms_drain(ms_record_t *out, size_t capacity, ms_drain_info_t *info)
{
    pthread_mutex_lock(&g_stage_lock);
    size_t n;
    info->more = 0;
    if (g_nchunks > 0) {
        n = take_staged(out, capacity, info); /* (given to the window when they were moved) */
        info->more = 1; /* the rings, and what may be left of the stage */
    } else {
        n = ms_rings_drain_all(out, capacity, info);
        leave(out, n, info->base_us);
        if (!atomic_load(&g_running) && g_stage) {
            /* Stopped and drained: the pages go back until the next start. */
            stage_unmap();
        }
    }
    pthread_mutex_unlock(&g_stage_lock);
    return n;
}

void ms_stage_keep(int all)
{
    /* Under the lock of a pass: a pass under way (which reads the setting once, and may take a
     * stage's worth of records made meanwhile) ends first, so every record made after this
     * returns is moved under the new setting. */
    pthread_mutex_lock(&g_stage_lock);
    atomic_store_explicit(&g_keep_all, all != 0, memory_order_relaxed);
    pthread_mutex_unlock(&g_stage_lock);
}

void ms_window_attach(ms_window_t *w)
{
    pthread_mutex_lock(&g_stage_lock);
    g_window = w;
    pthread_mutex_unlock(&g_stage_lock);
}

void ms_window_detach(ms_window_t *w)
{
    pthread_mutex_lock(&g_stage_lock);
    if (g_window == w)
        g_window = NULL;
    pthread_mutex_unlock(&g_stage_lock);
}

uint64_t ms_stage_fold(ms_summary_t *summary)
{
    if (!atomic_load_explicit(&g_sums.dirty, memory_order_relaxed))
        return 0;
    pthread_mutex_lock(&g_stage_lock);
    uint64_t records = g_sums.s.records;
    ms_sums_fold(&g_sums, summary);
    pthread_mutex_unlock(&g_stage_lock);
    return records;
}

/* In the child, inside fork(): the mover is gone, maybe holding the lock; the child starts
 * from zero, so what the parent staged or reduced is dropped with the parent's records, and its pages
 * go back. The window is let go too: the mover may have held its lock (the Python side gives the
 * child a new one). */
void ms_stage_fork_child(void)
{
    pthread_mutex_init(&g_stage_lock, NULL);
    stage_unmap();
    pthread_once(&g_move_once, init_move);
    sem_init(&g_move, 0, 0);
    atomic_store(&g_running, false);
    atomic_store(&g_paused, 0);
    g_stopping = false;
    g_first_chunk = g_nchunks = g_staged = 0;
    g_window = NULL;
    ms_sums_clear(&g_sums);
}
