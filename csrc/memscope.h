/*
 * memscope.h: the one interface between the C sampler and Python.
 *
 * Everything between the CDEF markers is read verbatim by cffi (memscope_otel/_build.py),
 * so that block holds plain declarations only: no #if, no includes, no inline code.
 * Every public name of the C side is declared here and documented here, once.
 */
#ifndef MEMSCOPE_H
#define MEMSCOPE_H

#include <stddef.h>
#include <stdint.h>

/* MEMSCOPE_CDEF_BEGIN */

/* Domains: the three CPython allocator domains, the manual API (track_allocation), and the C
 * library's allocator as other shared objects call it (native, csrc/native.c). */
#define MS_DOMAIN_OBJ 0
#define MS_DOMAIN_MEM 1
#define MS_DOMAIN_RAW 2
#define MS_DOMAIN_MANUAL 3
#define MS_DOMAIN_NATIVE 4
#define MS_DOMAINS 5

/* Size classes, decided on the requested size: small < 1024 <= medium < critical <= large. */
#define MS_CLASS_SMALL 0
#define MS_CLASS_MEDIUM 1
#define MS_CLASS_LARGE 2
#define MS_CLASSES 3
#define MS_MEDIUM_MIN 1024

/* Power-of-two size buckets: bucket k counts requests with 2^(k-1) < size <= 2^k
 * (sizes 0 and 1 fall in bucket 0), so bucket k's upper bound is 2^k bytes. */
#define MS_BUCKETS 65

/* Record flags (u16): bits 0-2 domain, bits 3-4 event, bits 5-6 size class, then single bits.
 * (Dump format 2; format 1 had two domain bits.) */
#define MS_FLAG_DOMAIN_MASK 7
#define MS_FLAG_EVENT_SHIFT 3
#define MS_FLAG_EVENT_MASK 24
#define MS_FLAG_CLASS_SHIFT 5
#define MS_FLAG_CLASS_MASK 96
#define MS_EVENT_ALLOC 0
#define MS_EVENT_FREE 1
#define MS_EVENT_REALLOC 2
/* Set on an allocation record whose block is not in the live table (left out by the table's
 * own sampling past its budget, or no room at all): the reducer leaves it out of the live
 * estimate, since its free will not be seen. Past the budget, the live part of a block taken in
 * with a raised weight is added through the spill instead (see ms_drain_reduce), so this flag is
 * set then too. */
#define MS_FLAG_NOLIVE_SHIFT 7
#define MS_FLAG_NOLIVE 128
/* Set on an allocation sampled by the frequency guarantee (weight 1). Informational. */
#define MS_FLAG_FREQUENCY 256

/* Site / stack / type ids. A sampled allocation carries the id of its stack for the allocator
 * domains, or an interned type name for the manual domain. Stacks are interned as a tree of
 * nodes in the one id table, from the outermost frame in: a node is (code object, bytecode
 * offset, domain, key = the id of its caller's node, 0 for an outermost frame). The node of the
 * innermost frame (a leaf) has the allocation's domain; the nodes of the frames around it have
 * MS_FRAME_DOMAIN, so callers are shared between stacks and domains. With MAX_STACK_DEPTH 1 a
 * stack is its innermost frame alone, the site of earlier versions. A record's id names a leaf;
 * the id's own (code, offset) is its innermost frame, the site.
 * Ids are dense, so per-id sums are plain arrays of MS_MAX_IDS entries.
 * Ids below MS_FIRST_DYNAMIC_ID are fixed: MS_ID_NATIVE + domain is "<native>" (no Python frame),
 * MS_ID_OVERFLOW + domain is "<overflow>" (every id was taken), MS_ID_STACK_OVERFLOW is the
 * caller of a leaf whose outer frames found no id (the stack keeps its innermost frame; the
 * callers' nodes leave the last quarter of the ids to leaves and types, so sites outlast
 * stacks when the table fills). A node
 * whose code object has died, and every node under it, is reused once nothing can carry it any
 * more (see "site ids" below), so one id may name different stacks over time; type ids are never
 * reused. */
#define MS_MAX_IDS 32768
#define MS_ID_NATIVE 0
#define MS_ID_OVERFLOW 8
#define MS_ID_STACK_OVERFLOW 15
#define MS_FIRST_DYNAMIC_ID 16
/* The domain of a stack node that is not a leaf: a caller's frame, never in a record. */
#define MS_FRAME_DOMAIN 7
/* MAX_STACK_DEPTH's upper bound: the hook reads the stack into an array of this many frames on
 * the thread's C stack (16 bytes each). */
#define MS_MAX_STACK_DEPTH 128

/* The drainer's periodic drain is skipped, up to MS_DRAIN_SKIPS periods in a row, while fewer
 * than MS_DRAIN_MIN_RECORDS records wait in the stage and the rings (ms_wait_for_work), and for
 * as long as none waits at all, unless a dump wants every interval's records. */
#define MS_DRAIN_MIN_RECORDS 16384
#define MS_DRAIN_SKIPS 4

/* The 32-byte record (little-endian; mirrored by memscope_otel.records.RECORD_DTYPE).
 * time_delta_us: microseconds since the base time of the chunk it was drained in.
 * For a free event, size/weight/site are those of the sampled allocation being freed. */
typedef struct {
    uint64_t address;
    uint64_t size;
    uint32_t time_delta_us;
    uint32_t site;
    float weight;
    uint16_t flags;
    uint16_t thread;
} ms_record_t;

/* Settings the hooks read. Rates are probabilities in [0, 1]. */
typedef struct {
    int domains_mask;               /* bit d set: hook domain d (obj, mem, raw, native) */
    uint64_t critical_size;         /* sizes >= this are large: always sampled */
    double medium_rate;
    double small_rate;
    uint64_t frequency_interval;    /* every Nth allocation of a thread is sampled; 0 = off */
    uint64_t ring_capacity;         /* records per thread ring; rounded up to a power of two */
    uint64_t seed;                  /* seeds the per-thread sampling RNGs; 0 = from the clock */
    uint64_t live_max_entries;      /* the live table's budget, in entries of 32 bytes */
    uint64_t rings_max_bytes;       /* all rings together (thread states included) */
    uint32_t max_stack_depth;       /* Python frames per sampled stack, 1 .. MS_MAX_STACK_DEPTH */
} ms_config_t;

/* Exact counters, summed over live threads, exited threads and the thread-less path.
 * Semantics: see DESIGN.md ("Counting semantics"). */
typedef struct {
    uint64_t allocations[5][3];     /* [domain][size class] */
    uint64_t bytes[5][3];           /* requested bytes */
    uint64_t deallocations[5];      /* [domain] */
    uint64_t by_size[5][65];        /* [domain][bucket] allocation counts */
    uint64_t samples;               /* records written into rings (allocation and free events) */
    uint64_t dropped;               /* records that found no room in a ring (full, no memory, or the
                                       rings' budget spent): they reach the estimates through the
                                       spill, but not the dump file or the workload recognizer */
    uint64_t live_untracked;        /* sampled allocations the live table had no room for (no
                                       memory): their frees are not seen, the estimate misses them */
    uint64_t slow_path_calls;       /* sampled events */
    uint64_t slow_path_ns;          /* nanoseconds spent in the sampled path, estimated (hooks.c: one event in 8 timed, 100 us at most) */
    uint64_t threads_seen;          /* threads that ever entered a hook */
    uint64_t threads_live;          /* threads registered now */
    uint64_t ids_used;              /* ids ever handed out (fixed ones too): every id in use is below */
    uint64_t footprint_bytes;       /* memory the C side holds now (rings, tables, states) */
    uint64_t live_entries;          /* sampled blocks in the live table now */
    uint64_t live_capacity;         /* entries the live table has room for now (it grows) */
    double live_threshold;          /* tau, in weighted bytes: past its budget the live table takes
                                       a sampled block of weight x size v < tau with probability
                                       v / tau (0 until the table reaches its budget) */
    uint64_t relinks;               /* times a hook found unlinked by another tool while running
                                       was installed again (ms_drain_reduce) */
    uint64_t native_objects;        /* shared objects whose calls into the C library's allocator
                                       reach memscope now (native domain) */
    uint64_t native_entries;        /* their GOT entries pointing at memscope's wrappers now */
    uint64_t native_skipped;        /* allocator entries left alone: bound to a fifth distinct
                                       allocator, or on a page that could not be made writable */
    uint64_t stack_overflows;       /* sampled stacks whose outer frames found no free id: kept as
                                       their innermost frame under MS_ID_STACK_OVERFLOW */
} ms_counters_t;

/* What an id stands for. code: the code object while the id table holds a strong reference to
 * it (from the hook that interned the site until ms_sites_take_held hands it over), else NULL
 * (fixed ids, types, and sites already handed over); offset is the bytecode offset in bytes;
 * key is the caller-given 64-bit key for types, and for a stack node the id of its caller's
 * node (0: none; MS_ID_STACK_OVERFLOW: cut). dead (ms_sites_take_held only): 1 when the node was
 * forgotten with a caller's node before Python took it (see ms_sites_take_forgotten). */
typedef struct {
    void *code;
    int32_t offset;
    int32_t domain;
    uint64_t key;
    uint32_t dead;
} ms_site_t;

/* Cumulative estimates from records (Horvitz-Thompson: each record counts weight times).
 * The per-id arrays (MS_MAX_IDS doubles each) belong to the caller. */
typedef struct {
    double count[5][3];             /* [domain][class] estimated allocations */
    double bytes[5][3];             /* estimated requested bytes */
    double bucket_count[5][65];     /* [domain][bucket] estimated allocations */
    double live_bytes[5];           /* estimated bytes allocated and not yet freed */
    double live_count[5];
    uint64_t records;               /* records reduced */
    uint64_t free_records;
    double *id_count;
    double *id_bytes;
    double *id_live_bytes;
} ms_summary_t;

/* --- control (call with the GIL held) --- */
/* Installs the hooks for cfg->domains_mask and starts counting. On success 0, or the mask of
 * the domains (bit 1 << MS_DOMAIN_*) whose hook another tool had unlinked since ms_stop() left
 * it under that tool's hook, installed again; -1 if already active; -2 if cfg is invalid.
 * Counters are cumulative across stop/start. */
int ms_start(const ms_config_t *cfg);
/* Stops counting and removes every hook still on top of its domain (a hook that another
 * allocator was installed over stays in the chain, passing calls through), and points every
 * GOT entry that the native domain changed back at what it pointed to. Returns 0. */
int ms_stop(void);
int ms_is_active(void);
/* 1 where the native domain can be hooked (Linux with glibc, on x86-64 or AArch64), else 0:
 * ms_start then leaves the native bit of domains_mask uncounted. */
int ms_native_supported(void);
/* The check for objects loaded since the last pass by a dlopen that memscope's did not see (a
 * bare library name, a call from the C library itself), closed since, or left for later by a
 * pass (being loaded, entries not bound yet): patches them. The mover runs it every
 * MS_NATIVE_POLL_MS; a collection runs it first, so that it counts what was just loaded. Call
 * WITHOUT the GIL (cffi releases it): it takes the loader's lock, which a thread whose library
 * constructor waits for the GIL may hold. */
#define MS_NATIVE_POLL_MS 200
void ms_native_poll(void);
/* Atomic rate change, seen by every thread within one frequency interval of its own. */
void ms_set_rates(double medium_rate, double small_rate);
void ms_get_rates(double *medium_rate, double *small_rate);
/* Marks the calling thread as the tracker's own (1) or not (0): its allocations are not counted.
 * Returns the previous setting. */
int ms_set_thread_ignored(int ignored);
/* Heavy part of the fork-child reset; the Python side calls it from os.register_at_fork. */
void ms_after_fork_child(void);
/* In a forked child: a sampled allocation delay_ns or more after the child's first one has
 * CPython call starter (the address of a callable taking no argument, which the caller keeps
 * alive for good) in the main thread at its next safe point, once (csrc/child.c). 0 disarms. */
void ms_child_start_arm(uintptr_t starter, uint64_t delay_ns);

/* --- reading (may be called without the GIL) --- */
void ms_read_counters(ms_counters_t *out);
/* What a drain reports besides its records. */
typedef struct {
    uint64_t base_us;   /* microseconds since the Unix epoch of the earliest record drained */
    uint64_t folded;    /* ms_drain_reduce: records the mover had reduced, added to the summary
                           by this call (see ms_stage_keep) */
    uint32_t more;      /* 1: records are left that did not fit (capacity, or more than 2^32 us
                           after the earliest one): drain again */
    uint32_t relinked;  /* bit 1 << MS_DOMAIN_*: that domain's hook had been unlinked by another
                           tool while running and was installed again during this call */
} ms_drain_info_t;

/* Moves up to capacity records out of the stage (stage.c), or when it is empty out of every
 * thread's ring, into out, rewriting their time deltas against info->base_us. Frees the rings
 * of exited threads once empty. Returns the number of records. */
size_t ms_drain(ms_record_t *out, size_t capacity, ms_drain_info_t *info);
/* The drainer's sleep (on the monotonic clock: a step of the wall clock changes nothing):
 * returns 1 when woken early (the stage half full, or ms_wake_drainer was called), 0 after
 * timeout_ms, or after up to MS_DRAIN_SKIPS more periods of timeout_ms while fewer than
 * min_records records wait in the stage and the rings (0: never longer than timeout_ms), and
 * as long as no record waits and no thread that exited waits to be given back: a quiet program
 * does not get its GIL taken. Every hook is still where it was put meanwhile. Call without the
 * GIL (cffi releases it). */
int ms_wait_for_work(uint32_t timeout_ms, uint32_t min_records);
void ms_wake_drainer(void);
/* Fills out with what id stands for; 0 on success, -1 if id is not handed out now. */
int ms_site_info(uint32_t id, ms_site_t *out);
/* Adds a batch of records to a cumulative summary (the SIMD or scalar reducer, see below). */
void ms_reduce(const ms_record_t *records, size_t n, ms_summary_t *summary);
/* The drainer's one call per drain: ms_drain, ms_reduce of the records it moved, the mover's
 * summary (info->folded), then the spill (the weighted totals of records that found no room in a
 * ring, and the live table's own adjustments) added into summary. First it checks that every hook is still in its allocator
 * chain: one that another tool unlinked while running (tracemalloc.stop() when memscope started
 * over it) is installed again, taking the GIL for that (info->relinked says which). Python calls
 * it keeping the GIL (ctypes, see sampler.DrainBuffer): a background thread that gives the GIL
 * up and takes it back from a busy application waits up to the switch interval and forces a
 * switch on it. A call moves at most capacity records (16,384: well under a millisecond) and
 * waits only for locks whose holders never wait for the GIL (not the loader's: the native
 * domain's poll is apart, see ms_native_poll). */
size_t ms_drain_reduce(ms_record_t *out, size_t capacity, ms_drain_info_t *info, ms_summary_t *summary);
/* What the mover keeps of the records it moves, for every record made after this returns (it
 * waits for a pass under way: a few milliseconds at most). 1 (the default): every record,
 * unreduced, for a sink that wants them all (the dump writer); 0: it reduces every record into a
 * summary of its own, which ms_drain_reduce adds into the drainer's, and stages none. Short:
 * Python calls it keeping the GIL. */
void ms_stage_keep(int all);
/* The mover (csrc/stage.c): a native thread, started and stopped with the drainer, that moves
 * records out of rings that fill into a staging buffer without the GIL, so that the drainer is
 * woken only when the stage is half full (ms_drain and ms_drain_reduce take the staged records
 * first). ms_mover_start returns 0, or -1 when it cannot start (the rings then wake the drainer
 * as they would without it); ms_mover_stop ends it and waits for it. ms_mover_cpu_ns: the CPU
 * time of every mover so far. Call without the GIL (cffi releases it). */
int ms_mover_start(void);
/* pause 1: the mover moves nothing until the matching call with 0 (nested pauses count); a pass
 * under way ends before it returns. Short: Python calls it keeping the GIL. */
void ms_mover_pause(int pause);
/* Passes over the threads' rings so far (the mover's and the drainer's); *fullest_sum: the sum
 * over them of the most records one thread's ring gave (how full rings get before emptied). */
uint64_t ms_ring_passes(uint64_t *fullest_sum);
void ms_mover_stop(void);
uint64_t ms_mover_cpu_ns(void);

/* --- the time stamps of records (csrc/clock.c) --- */
/* Nanoseconds on the CLOCK_MONOTONIC time line, as a record's time stamp is taken: from the
 * processor's time-stamp counter where the kernel keeps time with it (x86-64, clocksource
 * "tsc"), scaled against CLOCK_MONOTONIC by the mover, else clock_gettime itself. */
uint64_t ms_stamp_ns(void);
/* 1 while ms_stamp_ns reads the time-stamp counter, 0 while it reads clock_gettime (another
 * platform or clocksource, not calibrated yet, a mover stopped for 2 s, or ms_clock_use_system). */
int ms_clock_source(void);
/* Re-anchors the counter's scale (the mover's pass does, at most every 100 ms); the first call
 * takes a reference and checks the platform. Call without the GIL (cffi releases it). */
void ms_clock_tick(void);
/* 1: ms_stamp_ns reads clock_gettime whatever the platform (tests of the other path). */
void ms_clock_use_system(int system);

/* --- site ids: resolution and reuse (memscope_otel/sites.py drives these, with the GIL) ---
 * A hook that interns a new site takes a strong reference to its code object, so that the code
 * outlives the id until Python has read its file, function and line. Python then takes that
 * reference over (ms_sites_take_held), resolves the site, keeps a weak reference to the code
 * object and drops the strong one. When the code object dies, the weak reference's callback
 * (run with the GIL before the object's memory is freed) calls ms_site_forget: the key leaves
 * the lookup table at once, so a new code object at the same address gets a new id. The id
 * itself is reused only after ms_sites_reclaim, which Python calls once no record in a ring or
 * in a drain buffer and no live block can carry it any more, having moved the id's sums under
 * its resolved site and zeroed them. */
/* Moves up to capacity ids whose code object the table still holds into ids[] / out[]; each
 * out[k].code is a strong reference that now belongs to the caller (who must release it). The
 * ids become watched: their code pointer is borrowed from then on. Returns the number moved. */
uint32_t ms_sites_take_held(uint32_t *ids, ms_site_t *out, uint32_t capacity);
/* The code objects of sites[0..n) (just taken by ms_sites_take_held) as a new Python list, a
 * PyObject * returned as void * (cffi has no PyObject): their references move into the list,
 * so one call does for a batch what a reference taken and one released would do per site. The
 * code pointers stay in sites[], borrowed. NULL with a Python exception set when the list
 * cannot be made: the references then still belong to the caller. Call with the GIL held (from
 * Python through ctypes' PYFUNCTYPE, never through cffi, which releases it). */
void *ms_sites_code_list(const ms_site_t *sites, uint32_t n);
/* The number of ids whose code object the table holds: a counter the caller may read at any
 * time through this pointer, without a call (nonzero: ms_sites_take_held has work). */
const uint32_t *ms_sites_held_count(void);
/* The code object of a watched id is being freed: its key leaves the lookup table, and so do
 * the keys of every node under it (their key names it as a caller): those are queued for
 * ms_sites_take_forgotten. 0 on success, -1 if id was not watched. */
int ms_site_forget(uint32_t id);
/* Moves up to capacity ids forgotten because a caller's node was (not through their own
 * ms_site_forget) into ids[]; they are reclaimed like the others. Returns the number moved. */
uint32_t ms_sites_take_forgotten(uint32_t *ids, uint32_t capacity);
/* Makes the forgotten ids among ids[0..n) reusable (the caller vouches that nothing carries
 * them any more); then, if in_use is not NULL, clears it (MS_MAX_IDS bytes) and sets in_use[id]
 * for every id that a block in the live table carries. Returns the number of ids reclaimed. */
uint32_t ms_sites_reclaim(const uint32_t *ids, uint32_t n, uint8_t *in_use);

/* The live table now, per id: count[id] += the live weight of each block, bytes[id] += that
 * weight times its size (the caller's arrays of MS_MAX_IDS doubles). The heap profile. */
void ms_live_by_id(double *count, double *bytes);

/* --- manual API (GIL held) --- */
/* The id of a type, interned by a caller-computed 64-bit key of its name. */
uint32_t ms_type_id(uint64_t key);
void ms_track_allocation(uint64_t address, uint64_t size, uint32_t type_id);
void ms_track_deallocation(uint64_t address);

/* --- reduce.c --- */
/* The two reducer paths behind ms_reduce; same semantics, bit-identical summaries (each
 * block of 8192 records is summed in integer fixed point, see reduce.c; counts in units of
 * 2^-24, bytes of 2^-10). ms_reduce_simd falls back to the scalar path when the CPU has no
 * vector path. */
void ms_reduce_scalar(const ms_record_t *records, size_t n, ms_summary_t *summary);
void ms_reduce_simd(const ms_record_t *records, size_t n, ms_summary_t *summary);
/* 1 when this CPU has the vector path (AVX2 on x86-64, NEON on AArch64). */
int ms_reduce_simd_available(void);
/* ENABLE_SIMD: 0 makes ms_reduce (and the frame-clock search, ms_window_simd_active) use the
 * scalar path; 1 (default) the vector path if available. */
void ms_reduce_use_simd(int enabled);
/* 1 when ms_reduce currently takes the vector path. */
int ms_reduce_simd_active(void);

/* --- window.c: the workload recognizer's window ---
 * What the recognizer keeps of the records it reads during one recognition window
 * (memscope_otel/optimizer/recognizer.py), and the features it computes from them, in C: no
 * Python object and no numpy call per read, so a read costs the application no GIL handoff
 * beyond its own call, and the memory is these arrays alone. A window keeps the records' times,
 * the threads that wrote them, the sampled weight of allocations by site, and the lifetimes of
 * blocks at followed addresses (a fixed pseudo-random 1 in 2^level of them) whose allocation
 * and free it read, matched through a table of the allocations whose free it awaits. The
 * tracker's window is given the records as they leave the rings (ms_window_attach). Bounded: once it holds max_times
 * times it times no more records (the batch that crosses it is kept whole); at most
 * max_lifetimes lifetimes (the earliest frees); at most max_pending awaited allocations (one
 * beyond it is not followed; those already awaited stay). Its arrays are mapped pages, grown by
 * doubling as they fill and unmapped by ms_window_free. Calls on one window are serialized by
 * its own lock; ms_window_free must not run beside another call on it. */
#define MS_WINDOW_IDLE_GAP_US 4000        /* a gap between consecutive records longer than this is idle time */
#define MS_WINDOW_SHORT_LIVED_US 1000     /* a lifetime shorter than this is short */
#define MS_WINDOW_FOLLOWED_PER_BATCH 8192 /* a read follows about this many of its records at most */
#define MS_WINDOW_MIN_PERIOD_US 5000      /* frame periods looked for: 5 ms (200 fps) ... */
#define MS_WINDOW_MAX_PERIOD_US 100000    /* ... to 100 ms (10 fps), exclusive, */
#define MS_WINDOW_PERIOD_STEP_US 50       /* in steps of 50 us */
#define MS_WINDOW_FRAME_SPAN_US 10000000  /* the frame clock is read from the last 10 s of records, */
#define MS_WINDOW_FRAME_STARTS 128        /* ... at most their last 128 burst starts */
#define MS_WINDOW_MIN_STARTS 8            /* fewer burst starts than this: no frame clock */
#define MS_WINDOW_PENDING_MIN_SLOTS 4096  /* the awaited allocations' table starts this large */
#define MS_WINDOW_THREADS 65536           /* a record's thread index is a u16 */

typedef struct ms_window ms_window_t;

typedef struct {
    uint64_t n_times;          /* record times kept */
    uint64_t n_lifetimes;      /* lifetimes kept */
    uint64_t allocs_followed;  /* allocation records read at followed addresses */
    uint64_t n_pending;        /* allocations whose free is awaited */
    uint64_t n_sites;          /* sites with sampled allocation weight */
    uint64_t threads_active;   /* threads that wrote a record read */
    uint64_t failures;         /* reads that could not keep everything: no memory for a table */
    uint32_t follow_level;     /* lifetimes are followed at 1 in 2^level addresses */
    uint32_t reading_level;    /* ms_window_take reads the records of 1 in 2^level addresses */
    /* bytes of the arrays now (mapped, whole pages) */
    uint64_t times_bytes, lifetimes_bytes, pending_bytes, sites_bytes, threads_bytes, order_bytes;
    /* features, from ms_window_features only (0 from ms_window_stats): */
    double span_us;            /* from the earliest kept time to the latest */
    double idle_us;            /* sum of the gaps between consecutive times longer than IDLE_GAP */
    double frame_period_us;    /* the frame clock's period (0: none), see window.c */
    double frame_clock;        /* its strength in [0, 1] */
    double short_lived;        /* fraction of the lifetimes shorter than SHORT_LIVED_US */
    double median_lifetime_us; /* numpy.median's definition; 0 without lifetimes */
} ms_window_stats_t;

/* A new empty window, or NULL without memory. ms_window_free detaches it first (see
 * ms_window_attach). */
ms_window_t *ms_window_new(uint64_t max_times, uint64_t max_lifetimes, uint64_t max_pending);
void ms_window_free(ms_window_t *w);
/* Reads, of n records drained at base_us, those at the addresses followed at `level` (1 in
 * 2^level: window.c's followed), their weights times 2^level: their times, threads and allocation
 * weights by site; lifetimes at the window's follow level (the highest of its own, `level`, and
 * what keeps a read to about FOLLOWED_PER_BATCH records: once raised, the awaited allocations no
 * longer followed are forgotten). Events of one address are taken in time order, records of
 * the same microsecond in batch order. Returns 0, or -1 when a table could not grow (what did
 * not fit is not kept; counted in failures). */
int ms_window_read(ms_window_t *w, const ms_record_t *records, size_t n, int64_t base_us, uint32_t level);
/* ms_window_read at the window's reading level, raised first as these n records require: the
 * first read_all_first records offered to the window are all read; past them, the level is the
 * lowest that keeps the records offered since the first one, over their span of time (a second
 * at least), within budget_per_s records a second of those read, and it never comes down (a
 * block allocated in one call and freed in a later one is kept or left whole). */
int ms_window_take(ms_window_t *w, const ms_record_t *records, size_t n, int64_t base_us);
/* Sets the reading budget of ms_window_take (a new window reads every record). */
void ms_window_budget(ms_window_t *w, double budget_per_s, uint64_t read_all_first);
/* From now on the records that leave the threads' rings (the mover's passes and every drain,
 * whoever takes them: stage.c) are given to w by ms_window_take, in the order they leave, before
 * they are reduced or staged; NULL: to none. When it returns, no call gives records to the
 * window set before. ms_window_detach(w): to none if w is the one attached (ms_window_free does
 * it). A forked child starts with none. Call both without the GIL (they wait for a pass of the
 * mover). */
void ms_window_attach(ms_window_t *w);
void ms_window_detach(ms_window_t *w);
/* Counts and bytes (cheap); the feature fields are 0. */
void ms_window_stats(ms_window_t *w, ms_window_stats_t *out);
/* Counts, bytes and features, computed on copies of the times and lifetimes taken under the
 * window's lock and given back before the sort and the frame-clock search (a read waits for the
 * copies only); the copies and temporaries (about three times the times' bytes) are unmapped
 * before it returns. */
void ms_window_features(ms_window_t *w, ms_window_stats_t *out);
/* 1 when ms_window_features searches the frame clock with its vector twin (AVX2 on x86-64,
 * allowed by ms_reduce_use_simd like the reducers'), bit-identical to the scalar search. */
int ms_window_simd_active(void);
/* Copies out (at most capacity): sites ascending with their summed weights; the kept times
 * (in no particular order); the lifetimes (us, in no particular order); the awaited allocations
 * (address, time allocated); threads[i] = 1 when thread i wrote a record read
 * (MS_WINDOW_THREADS bytes). Each returns how many it wrote. */
size_t ms_window_sites(ms_window_t *w, uint32_t *ids, double *weights, size_t capacity);
size_t ms_window_times(ms_window_t *w, int64_t *times, size_t capacity);
size_t ms_window_lifetimes(ms_window_t *w, int64_t *lifetimes, size_t capacity);
size_t ms_window_pending(ms_window_t *w, uint64_t *addresses, int64_t *times, size_t capacity);
void ms_window_threads(ms_window_t *w, uint8_t *threads);

/* MEMSCOPE_CDEF_END */

/* The domain that record flags name. Three bits hold up to eight values: one past the last
 * domain (only a corrupt or synthetic record has it) reads as the last, so that every reducer
 * path indexes within its tables and all agree. */
static inline unsigned ms_flags_domain(unsigned flags)
{
    unsigned d = flags & MS_FLAG_DOMAIN_MASK;
    return d < MS_DOMAINS ? d : MS_DOMAINS - 1;
}

/* The event (MS_EVENT_*) that record flags name. */
static inline unsigned ms_flags_event(unsigned flags)
{
    return (flags & MS_FLAG_EVENT_MASK) >> MS_FLAG_EVENT_SHIFT;
}

/* The summary row a record adds to: its site, or its domain's <overflow> row past MS_MAX_IDS. */
static inline uint32_t ms_record_id(const ms_record_t *r)
{
    return r->site < MS_MAX_IDS ? r->site : (uint32_t)(MS_ID_OVERFLOW + ms_flags_domain(r->flags));
}

#endif
