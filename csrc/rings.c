/*
 * rings.c: a thread's buffer of records, a chain of single-producer single-consumer segments
 * that grows with what the thread samples.
 *
 * A thread starts with the few records that fit in the page of its state behind it (14 with 4
 * KiB pages). When the segment it writes is full, the thread maps one twice as large (at least a
 * page; all its segments together hold at most MAX_RECORDS_PER_THREAD records) and links it
 * behind the full one: nothing is copied, and the producer never blocks nor waits for the
 * drainer. The drainer reads the chain oldest first (records stay in time
 * order) and unmaps a segment once it has read it to the end and knows that the producer moved
 * on (the link is published after the producer's last write to it). A thread that samples little
 * holds a page; a thread that exited is given back whole once drained.
 *
 * Segments and thread states are whole pages from mmap, not malloc: the C library keeps freed
 * memory of per-thread arenas for reuse, so after 10,000 short-lived threads a malloc'd buffer
 * per thread stays in RSS for good, while an unmapped page goes back to the system at once.
 *
 * Who touches what. The producer (the owning thread, or whoever holds the orphan state's lock)
 * writes head, producer_high, wpos and the link of the segment it writes, and t->ring. The
 * drainer (under the registry lock, or the orphan lock for the orphan state) writes tail,
 * consumer_high, rpos and t->oldest once the chain exists. The producer writes t->oldest only
 * when it maps the first segment (t->oldest is NULL until then, and the drainer never sets it
 * back to NULL while the thread lives).
 */
#include <stddef.h>
#include <sys/mman.h>
#include <unistd.h>

#include "internal.h"

struct ms_ring {
    _Alignas(64) _Atomic uint64_t head; /* records (markers included) pushed to this segment */
    uint64_t producer_high; /* the high time bits of the last record pushed (see MS_EVENT_EPOCH) */
    uint32_t wpos;          /* the slot of the next push */
    _Alignas(64) _Atomic uint64_t tail; /* records the drainer moved out */
    uint64_t consumer_high; /* the high time bits at the tail */
    uint32_t rpos;          /* the slot of the next read */
    _Alignas(64) uint32_t capacity;    /* slots; set before the segment is published */
    uint32_t uncounted; /* left out of t->slots: larger than a maximum lowered since */
    uint64_t map_bytes;                /* 0: in the page of the thread state (ms_rings_embed) */
    _Atomic(struct ms_ring *) next;    /* the newer segment: set once the producer moved on */
    struct ms_ring *retired_next;      /* on the drainer's list of segments to unmap */
    ms_record_t slots[];
};

_Static_assert(offsetof(ms_ring_t, slots) % sizeof(ms_record_t) == 0, "slots are record-aligned");

static _Atomic uint64_t g_max_records = 16384;
static _Atomic uint64_t g_max_bytes = (uint64_t)128 << 20; /* no new segment past this */
static _Atomic uint64_t g_bytes; /* pages held by segments and thread states */

static uint64_t page_size(void)
{
    static _Atomic uint64_t page;
    uint64_t p = atomic_load_explicit(&page, memory_order_relaxed);
    if (p == 0) {
        long v = sysconf(_SC_PAGESIZE);
        p = v > 0 ? (uint64_t)v : 4096;
        atomic_store_explicit(&page, p, memory_order_relaxed);
    }
    return p;
}

uint64_t ms_pages_size(uint64_t bytes)
{
    uint64_t page = page_size();
    return (bytes + page - 1) / page * page;
}

void *ms_pages_map(uint64_t bytes)
{
    void *p = mmap(NULL, ms_pages_size(bytes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void *ms_pages_alloc(uint64_t bytes)
{
    bytes = ms_pages_size(bytes);
    void *p = ms_pages_map(bytes);
    if (p != NULL)
        atomic_fetch_add(&g_bytes, bytes);
    return p;
}

void ms_pages_free(void *p, uint64_t bytes)
{
    if (!p)
        return;
    bytes = ms_pages_size(bytes);
    munmap(p, bytes);
    atomic_fetch_sub(&g_bytes, bytes);
}

uint64_t ms_pages_held(void)
{
    return atomic_load(&g_bytes);
}

void ms_pages_set_held(uint64_t bytes)
{
    atomic_store(&g_bytes, bytes);
}

void ms_rings_configure(uint64_t max_records, uint64_t max_bytes)
{
    atomic_store(&g_max_records, max_records);
    atomic_store(&g_max_bytes, max_bytes);
}

/* Maps the segment that follows old (NULL: the thread's first) and makes it the producer's:
 * twice old's size, within what the thread may still hold (t->slots: all its segments together
 * hold at most max_records records), or one page after a restart lowered the maximum below old's
 * size. NULL when the thread holds its maximum, without memory, or past the budget (checked
 * before mapping, so racing threads may overshoot it by a segment each). */
static ms_ring_t *segment_next(ms_thread_t *t, ms_ring_t *old, uint64_t max_records)
{
    const uint64_t header = offsetof(ms_ring_t, slots);
    uint64_t held = atomic_load_explicit(&t->slots, memory_order_relaxed); /* (or less, by now) */
    uint64_t room = max_records > held ? max_records - held : 0;
    uint64_t want = old ? 2 * (uint64_t)old->capacity : 1;
    if (old && old->capacity > max_records) {
        /* Left for the drainer and out of the count at once: the lower maximum holds for the
         * new segments alone, or old (drained or not) would leave them no room. */
        held = held > old->capacity ? held - old->capacity : 0;
        room = max_records > held ? max_records - held : 0;
        want = 1;
    }
    want = want < room ? want : room;
    if (want == 0)
        return NULL;
    uint64_t bytes = ms_pages_size(header + want * sizeof(ms_record_t));
    if (atomic_load(&g_bytes) + bytes > atomic_load(&g_max_bytes))
        return NULL;
    ms_ring_t *r = ms_pages_alloc(bytes); /* zero-filled: head, tail, positions, link */
    if (!r)
        return NULL;
    /* The whole of the last page, within the room. */
    uint64_t fits = (bytes - header) / sizeof(ms_record_t);
    r->capacity = (uint32_t)(fits < room ? fits : room);
    r->map_bytes = bytes;
    atomic_fetch_add_explicit(&t->slots, r->capacity, memory_order_relaxed);
    if (old && old->capacity > max_records) {
        old->uncounted = 1;
        atomic_fetch_sub_explicit(&t->slots, old->capacity, memory_order_relaxed);
    }
    if (old) {
        /* The drainer carries its own high bits over from old (ms_rings_drain). */
        r->producer_high = old->producer_high;
        /* Release: r's fields and every write of the producer to old happen before the drainer,
         * which reads the link with acquire, reads old's final head or unmaps old. */
        atomic_store_explicit(&old->next, r, memory_order_release);
    } else {
        atomic_store_explicit(&t->oldest, r, memory_order_release);
    }
    atomic_store_explicit(&t->ring, r, memory_order_relaxed);
    return r;
}

/* Never blocks the application: a record with no room is counted and spilled. */
__attribute__((noinline, cold)) static void drop(ms_thread_t *t, const ms_record_t *rec)
{
    ms_bump(&t->dropped, 1);
    ms_spill_record(rec);
    ms_wake_mover();
}

void ms_ring_push(ms_thread_t *t, ms_record_t *rec, uint64_t time_us)
{
    uint64_t max_records = atomic_load_explicit(&g_max_records, memory_order_relaxed);
    ms_ring_t *r = atomic_load_explicit(&t->ring, memory_order_relaxed);
    if (MS_UNLIKELY(r == NULL || r->capacity > max_records))
        r = segment_next(t, r, max_records);
    if (MS_UNLIKELY(r == NULL)) {
        drop(t, rec);
        return;
    }
    uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    uint64_t high = time_us >> 32;
    bool marker = MS_UNLIKELY(high != r->producer_high);
    if (MS_UNLIKELY(head - tail + marker + 1 > r->capacity)) {
        ms_ring_t *next = segment_next(t, r, max_records);
        /* (The last room of a thread near its maximum may be a single slot.) */
        if (!next || marker + 1u > next->capacity) {
            drop(t, rec);
            return;
        }
        r = next;
        head = tail = 0;
    }
    uint64_t start = head;
    if (marker) {
        r->slots[r->wpos] = (ms_record_t){.address = high, .flags = MS_EVENT_EPOCH << MS_FLAG_EVENT_SHIFT};
        r->wpos = r->wpos + 1 == r->capacity ? 0 : r->wpos + 1;
        r->producer_high = high;
        head++;
    }
    /* The time goes into the slot, not into *rec first: a 4-byte store followed by a 32-byte
     * load over it cannot be forwarded, and the load would wait for the store to retire. */
    ms_record_t *slot = &r->slots[r->wpos];
    *slot = *rec;
    slot->time_delta_us = (uint32_t)time_us;
    r->wpos = r->wpos + 1 == r->capacity ? 0 : r->wpos + 1;
    atomic_store_explicit(&r->head, head + 1, memory_order_release);
    ms_bump(&t->samples, 1);
    /* The drainer is woken early once half the maximum waits, so that bursts are drained before
     * they overflow the thread's buffer (the older segments count as full: they were when the
     * producer left them, and the drainer takes them whole); and once the segment written is
     * half full when the next one could not be twice as large: a thread that samples fast keeps
     * wrapping around that segment rather than mapping (and faulting in) a new one whenever it
     * fills, with half a segment left for the drainer to come. */
    uint64_t slots = atomic_load_explicit(&t->slots, memory_order_relaxed);
    uint64_t older = slots - r->capacity, half = max_records / 2, seg_half = r->capacity / 2;
    if (MS_UNLIKELY((older + start - tail < half && older + head + 1 - tail >= half) ||
                    (start - tail < seg_half && head + 1 - tail >= seg_half &&
                     slots + 2 * (uint64_t)r->capacity > max_records)))
        ms_wake_mover();
}

/* ---- drainer side ---- */

static bool is_epoch(const ms_record_t *rec)
{
    return ms_flags_event(rec->flags) == MS_EVENT_EPOCH;
}

static uint32_t step(const ms_ring_t *r, uint32_t pos)
{
    return pos + 1 == r->capacity ? 0 : pos + 1;
}

uint64_t ms_rings_first_time(ms_ring_t *r)
{
    uint64_t high = r ? r->consumer_high : 0;
    while (r) {
        /* The link first: once it is set, the head read after it is final. */
        ms_ring_t *next = atomic_load_explicit(&r->next, memory_order_acquire);
        uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
        uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
        for (uint32_t pos = r->rpos; tail != head; tail++, pos = step(r, pos)) {
            const ms_record_t *rec = &r->slots[pos];
            if (!is_epoch(rec))
                return high << 32 | rec->time_delta_us;
            high = rec->address;
        }
        r = next;
    }
    return UINT64_MAX;
}

/* Moves up to room records out of one segment (markers consumed, not copied); stops before a
 * record outside [base, base + 2^32 us) and sets *more. */
static size_t drain_segment(ms_ring_t *r, ms_record_t *out, size_t room, uint64_t base, uint32_t *more)
{
    uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
    uint32_t pos = r->rpos;
    size_t n = 0;
    for (; tail != head; tail++, pos = step(r, pos)) {
        const ms_record_t *rec = &r->slots[pos];
        if (is_epoch(rec)) {
            r->consumer_high = rec->address;
            continue;
        }
        uint64_t time = r->consumer_high << 32 | rec->time_delta_us;
        /* (A record older than base was pushed after base was taken: it leads the next drain.) */
        if (n == room || time < base || time - base > UINT32_MAX) {
            *more = 1;
            break;
        }
        out[n] = *rec;
        out[n].time_delta_us = (uint32_t)(time - base);
        n++;
    }
    r->rpos = pos;
    atomic_store_explicit(&r->tail, tail, memory_order_release);
    return n;
}

static bool segment_empty(ms_ring_t *r)
{
    return atomic_load_explicit(&r->head, memory_order_acquire) == atomic_load_explicit(&r->tail, memory_order_relaxed);
}

size_t ms_rings_drain(ms_thread_t *t, ms_record_t *out, size_t room, uint64_t base, uint32_t *more,
                      ms_ring_t **retired)
{
    size_t n = 0;
    ms_ring_t *r = atomic_load_explicit(&t->oldest, memory_order_acquire);
    while (r) {
        ms_ring_t *next = atomic_load_explicit(&r->next, memory_order_acquire);
        n += drain_segment(r, out + n, room - n, base, more);
        if (!next || !segment_empty(r))
            break;
        /* The producer moved on before the head above was read: r is read to its end. */
        next->consumer_high = r->consumer_high;
        atomic_store_explicit(&t->oldest, next, memory_order_release);
        if (!r->uncounted)
            atomic_fetch_sub_explicit(&t->slots, r->capacity, memory_order_relaxed);
        r->retired_next = *retired;
        *retired = r;
        r = next;
    }
    return n;
}

uint64_t ms_rings_pending(ms_thread_t *t)
{
    uint64_t n = 0;
    for (ms_ring_t *r = atomic_load_explicit(&t->oldest, memory_order_acquire); r;
         r = atomic_load_explicit(&r->next, memory_order_acquire))
        n += atomic_load_explicit(&r->head, memory_order_acquire) - atomic_load_explicit(&r->tail, memory_order_relaxed);
    return n;
}

bool ms_rings_empty(ms_thread_t *t)
{
    return ms_rings_pending(t) == 0;
}

void ms_rings_retire_all(ms_thread_t *t, ms_ring_t **retired)
{
    ms_ring_t *r = atomic_load_explicit(&t->oldest, memory_order_acquire);
    atomic_store(&t->oldest, NULL);
    atomic_store(&t->ring, NULL);
    atomic_store(&t->slots, 0);
    while (r) {
        ms_ring_t *next = atomic_load_explicit(&r->next, memory_order_acquire);
        r->retired_next = *retired;
        *retired = r;
        r = next;
    }
}

void ms_rings_unmap(ms_ring_t *retired)
{
    while (retired) {
        ms_ring_t *next = retired->retired_next;
        if (retired->map_bytes) /* (an embedded one goes with its thread state) */
            ms_pages_free(retired, retired->map_bytes);
        retired = next;
    }
}

void ms_rings_embed(ms_thread_t *t, void *space, uint64_t bytes)
{
    uint64_t fits = bytes > offsetof(ms_ring_t, slots) ? (bytes - offsetof(ms_ring_t, slots)) / sizeof(ms_record_t) : 0;
    uint64_t max_records = atomic_load(&g_max_records);
    if (fits < 8 || (uintptr_t)space % 64 != 0)
        return; /* not worth a segment: the first sample maps one */
    ms_ring_t *r = space; /* zero-filled with the thread state's pages */
    r->capacity = (uint32_t)(fits < max_records ? fits : max_records);
    atomic_store_explicit(&t->slots, r->capacity, memory_order_relaxed);
    atomic_store_explicit(&t->oldest, r, memory_order_release);
    atomic_store_explicit(&t->ring, r, memory_order_relaxed);
}

uint64_t ms_rings_fork_reset(ms_thread_t *t, ms_ring_t *oldest)
{
    /* The newest segment of the chain stays (it was initialized before it was linked, even if
     * fork() came between the link and t->ring); the older ones are the child's copies of
     * segments the parent still reads, unmapped here. Not counted: the caller sets the total. */
    ms_ring_t *r = oldest;
    if (!r)
        return 0;
    for (ms_ring_t *next; (next = atomic_load(&r->next)) != NULL; r = next) {
        if (r->map_bytes)
            munmap(r, r->map_bytes);
    }
    atomic_store(&r->head, 0);
    atomic_store(&r->tail, 0);
    r->wpos = r->rpos = 0;
    r->producer_high = r->consumer_high = 0;
    atomic_store(&t->oldest, r);
    atomic_store(&t->ring, r);
    atomic_store(&t->slots, r->capacity);
    return r->map_bytes;
}
