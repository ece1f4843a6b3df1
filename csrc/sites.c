/*
 * sites.c: dense ids for allocation stacks and manual-API types, reused once their code is gone.
 *
 * A stack is a chain of nodes, each (code object, bytecode offset, domain, key = its caller's
 * node id), interned from the outermost frame in (memscope.h, "Site / stack / type ids"); a
 * type is (64-bit key of its name, manual domain). A node whose code object dies takes every
 * node under it along (ms_site_forget): a dead node's id may be reused, and a live node must
 * never name a reused id as its caller. Ids index plain arrays downstream (the reducer's per-id
 * sums), so they are dense and bounded by MS_MAX_IDS. Lookups are lock-free (hot on the sampled path); inserts, deletions and
 * reclamation take one spin lock. Nothing here allocates: ms_site_intern runs inside the hooks.
 *
 * The life of a site id (g_state):
 *   FREE     never handed out, or reclaimed (then on g_free).
 *   HELD     interned by a hook, which took a strong reference to the code object: the code must
 *            outlive the id until Python has read its file, function and line.
 *   WATCHED  Python took the reference over (ms_sites_take_held), resolved the site and watches
 *            the code object with a weak reference. The table's code pointer is now borrowed.
 *   DEAD     the code object is being freed: its weakref callback (which CPython runs with the GIL
 *            before the memory goes back) called ms_site_forget, so the key left the lookup table
 *            and a new code object at the same address gets a new id. The id itself stays taken
 *            while records or live blocks may still carry it. A WATCHED node under a forgotten
 *            one (a caller's code died) becomes DEAD with it, and is queued for Python
 *            (ms_sites_take_forgotten), which reclaims it like the others.
 *   HELD_DEAD a HELD node under a forgotten one: out of the lookup table, queued likewise, its
 *            code reference still to be handed over; ms_sites_take_held makes it DEAD.
 *   FIXED    a type id (no code object): never forgotten.
 * Python calls ms_sites_reclaim once no record in flight and no live block carries a DEAD id
 * (see memscope_otel/sites.py for the protocol); the id then goes back to FREE.
 *
 * The lookup table is open addressing with linear probing over ids. Deleted keys leave a
 * tombstone, so that probes for keys behind them go on; a lookup that misses (a tombstone-laden
 * table, a concurrent rebuild, an entry being rewritten) is never wrong, only slower: it takes
 * the locked path, which looks again. Entries are rewritten only when a reclaimed id is reused,
 * under a per-entry sequence count, so that a lock-free reader that loaded the id before the
 * rewrite cannot match a torn mix of the old and the new key.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string.h>

#include "internal.h"

#define SLOT_BITS 16 /* twice MS_MAX_IDS: probes stay short */
#define SLOTS (1u << SLOT_BITS)
#define SLOT_EMPTY 0u
#define SLOT_TOMB UINT32_MAX
/* Above this many tombstones the table is rebuilt (by ms_site_forget, outside any hook): every
 * miss probes up to the next empty slot, and tombstones only ever replace empty slots. */
#define TOMB_LIMIT (SLOTS / 4)

enum { ID_FREE = 0, ID_HELD, ID_WATCHED, ID_DEAD, ID_FIXED, ID_HELD_DEAD };

typedef struct {
    _Atomic uint32_t seq;        /* odd while the key below is being rewritten */
    _Atomic uintptr_t code;
    _Atomic uint64_t where;      /* offset (low 32 bits) | domain << 32 */
    _Atomic uint64_t key;
} ms_site_entry_t;

static ms_site_entry_t g_ids[MS_MAX_IDS];
static _Atomic uint8_t g_state[MS_MAX_IDS];
static _Atomic uint32_t g_slots[SLOTS]; /* SLOT_EMPTY, SLOT_TOMB, or an id */
static _Atomic uint32_t g_next_id = MS_FIRST_DYNAMIC_ID;
static _Atomic uint32_t g_held;          /* ids in the HELD state; Python polls it after drains */
static uint32_t g_free[MS_MAX_IDS];      /* reclaimed ids, a stack; under g_lock */
static uint32_t g_free_count;
static uint32_t g_tombs;                 /* under g_lock */
static ms_spin_t g_lock;
/* Under g_lock: the live stack nodes (HELD or WATCHED) whose caller each id is, so that a node
 * without callees (most: the leaves) is forgotten without a scan for them. */
static uint32_t g_callees[MS_MAX_IDS];
/* Under g_lock: ids forgotten along with a caller's node, for ms_sites_take_forgotten. An id is
 * queued once (then DEAD) and stays DEAD until Python has taken it, so MS_MAX_IDS entries hold
 * every one. */
static uint32_t g_forgotten[MS_MAX_IDS];
static uint32_t g_forgotten_count;
static _Atomic uint64_t g_stack_overflows;
/* Moves on whenever a node is forgotten (under g_lock, with the GIL): the threads' stack memos
 * filled before then no longer count (ms_stack_intern). Never 0, an empty memo's. */
static _Atomic uint64_t g_epoch = 1;

/* The drainer is woken (from inside the hook, like a half-full ring wakes it) when this many
 * sites hold their code objects: Python resolves them after the drain, and lets the code go. A
 * program that makes code and drops it at a high rate (exec-generated functions) would
 * otherwise keep a drain interval's worth of dead code alive (20 MB and more), and its ids with
 * it. Startup, which interns thousands of sites in a burst, costs a drain per this many. */
#define HELD_WAKE 512u

static inline uint64_t where_of(int32_t offset, int domain)
{
    return (uint64_t)(uint32_t)offset | (uint64_t)(uint32_t)domain << 32;
}

static uint32_t slot_of(uintptr_t code, uint64_t where, uint64_t key)
{
    uint64_t h = (uint64_t)code * 0x9E3779B97F4A7C15ull;
    h ^= ((where & 0xFFFFFFFFu) << 2 | where >> 32) * 0xC2B2AE3D27D4EB4Full;
    h ^= key * 0x165667B19E3779F9ull;
    h ^= h >> 29;
    return (uint32_t)(h >> (64 - SLOT_BITS));
}

/* Whether id's entry holds this key, read as one consistent snapshot (a sequence lock on the
 * reader's side: a rewrite in progress or in between reads as "no"). */
static bool matches(uint32_t id, uintptr_t code, uint64_t where, uint64_t key)
{
    ms_site_entry_t *e = &g_ids[id];
    uint32_t seq = atomic_load_explicit(&e->seq, memory_order_acquire);
    if (seq & 1u)
        return false;
    bool same = atomic_load_explicit(&e->code, memory_order_relaxed) == code &&
                atomic_load_explicit(&e->where, memory_order_relaxed) == where &&
                atomic_load_explicit(&e->key, memory_order_relaxed) == key;
    atomic_thread_fence(memory_order_acquire);
    if (!same || atomic_load_explicit(&e->seq, memory_order_relaxed) != seq)
        return false;
    /* A reader that took the id from its slot before the key was forgotten must not hand it
     * (dead, or reclaimed with the old key still in its entry) to a new code object at the dead
     * one's address. With the GIL held by every caller naming a code object this cannot
     * interleave; the check costs one load on the sampled path. */
    int state = atomic_load_explicit(&g_state[id], memory_order_acquire);
    return state == ID_HELD || state == ID_WATCHED || state == ID_FIXED;
}

/* Under g_lock: the writer's side of the sequence lock. */
static void write_entry(uint32_t id, uintptr_t code, uint64_t where, uint64_t key)
{
    ms_site_entry_t *e = &g_ids[id];
    uint32_t seq = atomic_load_explicit(&e->seq, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 1, memory_order_relaxed);
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->code, code, memory_order_relaxed);
    atomic_store_explicit(&e->where, where, memory_order_relaxed);
    atomic_store_explicit(&e->key, key, memory_order_relaxed);
    atomic_store_explicit(&e->seq, seq + 2, memory_order_release);
}

/* The id of key, or 0 with *free_slot set to where it would go (the first tombstone or empty
 * slot of its probe sequence; SLOTS when there is none). */
static uint32_t find(uintptr_t code, uint64_t where, uint64_t key, uint32_t *free_slot)
{
    uint32_t reuse = SLOTS;
    for (uint32_t i = slot_of(code, where, key), n = 0; n < SLOTS; i = (i + 1) & (SLOTS - 1), n++) {
        uint32_t id = atomic_load_explicit(&g_slots[i], memory_order_acquire);
        if (id == SLOT_EMPTY) {
            *free_slot = reuse != SLOTS ? reuse : i;
            return 0;
        }
        if (id == SLOT_TOMB || id >= MS_MAX_IDS) {
            if (reuse == SLOTS)
                reuse = i;
            continue;
        }
        if (matches(id, code, where, key))
            return id;
    }
    *free_slot = reuse;
    return 0;
}

/* Ids only leaves and types may take: callers' nodes stop short of them, so that a program with
 * more distinct stacks than the table holds keeps its sites (each stack cut to its innermost
 * frame under MS_ID_STACK_OVERFLOW) instead of losing them to <overflow>. */
#define LEAF_RESERVE (MS_MAX_IDS / 4)

/* Under g_lock: the ids that can still be handed out. */
static uint32_t ids_left(void)
{
    return MS_MAX_IDS - atomic_load_explicit(&g_next_id, memory_order_relaxed) + g_free_count;
}

/* Under g_lock: an id for a new key, from the reclaimed ones first (their summary rows are
 * zero and likely still in cache), else the next never used; 0 when all are taken. */
static uint32_t take_id(void)
{
    if (g_free_count > 0)
        return g_free[--g_free_count];
    uint32_t next = atomic_load_explicit(&g_next_id, memory_order_relaxed);
    if (next >= MS_MAX_IDS)
        return 0;
    atomic_store_explicit(&g_next_id, next + 1, memory_order_release);
    return next;
}

static inline bool is_live(int state)
{
    return state == ID_HELD || state == ID_WATCHED;
}

/* The caller's node that a stack node names in its key, or 0 (a type, an outermost frame, or
 * a fixed id such as MS_ID_STACK_OVERFLOW). */
static inline uint32_t caller_of(uintptr_t code, uint64_t key)
{
    return code != 0 && key >= MS_FIRST_DYNAMIC_ID && key < MS_MAX_IDS ? (uint32_t)key : 0;
}

/* The id of a key, interned if new; 0 when no id is free (or the caller's node named in the key
 * is no longer live: it cannot be, its frame runs, but a node must never hang from a dead one).
 * Callers naming a code object hold the GIL (it is what makes the incref safe). */
static uint32_t intern_key(void *code, int32_t offset, int domain, uint64_t key)
{
    uintptr_t c = (uintptr_t)code;
    uint64_t where = where_of(offset, domain);
    uint32_t free_slot, held = 0;
    uint32_t id = find(c, where, key, &free_slot);
    if (MS_LIKELY(id != 0))
        return id;
    ms_spin_lock(&g_lock);
    id = find(c, where, key, &free_slot); /* someone may have won the race */
    uint32_t caller = caller_of(c, key);
    if (id == 0 && (caller == 0 || is_live(atomic_load_explicit(&g_state[caller], memory_order_relaxed))) &&
        (domain != MS_FRAME_DOMAIN || ids_left() > LEAF_RESERVE)) {
        id = free_slot == SLOTS ? 0 : take_id();
        if (id != 0) {
            g_callees[id] = 0;
            if (caller != 0)
                g_callees[caller]++;
            write_entry(id, c, where, key);
            if (code) {
                Py_INCREF((PyObject *)code);
                held = atomic_fetch_add_explicit(&g_held, 1, memory_order_relaxed) + 1;
            }
            atomic_store_explicit(&g_state[id], code ? ID_HELD : ID_FIXED, memory_order_release);
            if (atomic_load_explicit(&g_slots[free_slot], memory_order_relaxed) == SLOT_TOMB)
                g_tombs--;
            atomic_store_explicit(&g_slots[free_slot], id, memory_order_release);
        }
    }
    ms_spin_unlock(&g_lock);
    if (MS_UNLIKELY(held == HELD_WAKE))
        ms_wake_drainer();
    return id;
}

uint32_t ms_site_intern(void *code, int32_t offset, int domain, uint64_t key)
{
    uint32_t id = intern_key(code, offset, domain, key);
    return id != 0 ? id : MS_ID_OVERFLOW + (uint32_t)domain;
}

_Static_assert(MS_MAX_IDS <= 1u << 16, "a stack memo holds node ids in 16 bits");

/* How many outer frames of a stack the memo holds (frames[n - 1] down to frames[n - k]). Their
 * ids are what intern_key returned for the same keys, and no id has changed its key since (the
 * epoch: an entry is rewritten only once its id has been forgotten and reclaimed). Every caller
 * holds the GIL, as ms_site_forget's callers do, so the epoch cannot move meanwhile. */
static int memo_matches(const ms_stack_memo_t *memo, const ms_frame_t *frames, int n)
{
    int limit = (int)memo->n < n - 1 ? (int)memo->n : n - 1, k = 0;
    while (k < limit && memo->code[k] == frames[n - 1 - k].code && memo->offset[k] == frames[n - 1 - k].offset)
        k++;
    return k;
}

uint32_t ms_stack_intern(const ms_frame_t *frames, int n, int domain, ms_stack_memo_t *memo)
{
    /* From the outermost frame in: each node's key is its caller's id. A hot stack costs one
     * lock-free lookup per frame the thread's memo does not hold; only new nodes take the lock. */
    uint64_t epoch = atomic_load_explicit(&g_epoch, memory_order_relaxed);
    if (memo->epoch != epoch) {
        memo->epoch = epoch;
        memo->n = 0;
        memo->leaf_id = 0;
    }
    int k = memo_matches(memo, frames, n);
    uint64_t caller = k > 0 ? memo->id[k - 1] : 0;
    for (int i = n - 1 - k; i > 0; i--) {
        uint32_t id = intern_key(frames[i].code, frames[i].offset, MS_FRAME_DOMAIN, caller);
        if (MS_UNLIKELY(id == 0)) {
            caller = MS_ID_STACK_OVERFLOW;
            break;
        }
        caller = id;
        /* the memo's chain now follows this stack: what it held past here was another's */
        int at = n - 1 - i;
        if (at < MS_STACK_MEMO) {
            memo->code[at] = frames[i].code;
            memo->offset[at] = frames[i].offset;
            memo->id[at] = (uint16_t)id;
            memo->n = (uint16_t)(at + 1);
        }
    }
    if (memo->leaf_id != 0 && memo->leaf_code == frames[0].code && memo->leaf_offset == frames[0].offset &&
        memo->leaf_domain == (uint16_t)domain && memo->leaf_caller == caller)
        return memo->leaf_id;
    uint32_t leaf = intern_key(frames[0].code, frames[0].offset, domain, caller);
    if (MS_UNLIKELY(leaf == 0 && caller != MS_ID_STACK_OVERFLOW)) {
        caller = MS_ID_STACK_OVERFLOW; /* the stack's own leaf found no room: keep the site at least */
        leaf = intern_key(frames[0].code, frames[0].offset, domain, caller);
    }
    if (MS_UNLIKELY(caller == MS_ID_STACK_OVERFLOW || leaf == 0)) {
        atomic_fetch_add_explicit(&g_stack_overflows, 1, memory_order_relaxed);
        memo->leaf_id = 0; /* a cut stack is counted each time: not held */
    } else {
        memo->leaf_code = frames[0].code;
        memo->leaf_offset = frames[0].offset;
        memo->leaf_domain = (uint16_t)domain;
        memo->leaf_caller = (uint32_t)caller; /* a node id, below MS_MAX_IDS */
        memo->leaf_id = leaf;
    }
    return leaf != 0 ? leaf : MS_ID_OVERFLOW + (uint32_t)domain;
}

uint64_t ms_sites_stack_overflows(void)
{
    return atomic_load_explicit(&g_stack_overflows, memory_order_relaxed);
}

uint32_t ms_sites_used(void)
{
    return atomic_load_explicit(&g_next_id, memory_order_acquire);
}

static void info_of(uint32_t id, int state, ms_site_t *out)
{
    ms_site_entry_t *e = &g_ids[id];
    uint64_t where = atomic_load_explicit(&e->where, memory_order_relaxed);
    bool held = state == ID_HELD || state == ID_HELD_DEAD;
    out->code = held ? (void *)atomic_load_explicit(&e->code, memory_order_relaxed) : NULL;
    out->dead = state == ID_HELD_DEAD;
    out->offset = (int32_t)(uint32_t)(where & 0xFFFFFFFFu);
    out->domain = (int32_t)(where >> 32);
    out->key = atomic_load_explicit(&e->key, memory_order_relaxed);
}

_Static_assert(MS_ID_NATIVE + MS_DOMAINS <= MS_ID_OVERFLOW && MS_ID_OVERFLOW + MS_DOMAINS <= MS_FIRST_DYNAMIC_ID,
               "a fixed id per domain for <native> and <overflow>");

int ms_site_info(uint32_t id, ms_site_t *out)
{
    if (id < MS_FIRST_DYNAMIC_ID) {
        /* MS_ID_NATIVE + domain, or MS_ID_OVERFLOW + domain; the ids in between name no domain
         * (MS_ID_STACK_OVERFLOW only ever stands as a caller) and are not sites */
        uint32_t domain = id >= MS_ID_OVERFLOW ? id - MS_ID_OVERFLOW : id - MS_ID_NATIVE;
        if (domain >= MS_DOMAINS)
            return -1;
        *out = (ms_site_t){NULL, 0, (int32_t)domain, 0, 0};
        return 0;
    }
    if (id >= ms_sites_used())
        return -1;
    int state = atomic_load_explicit(&g_state[id], memory_order_acquire);
    if (state == ID_FREE)
        return -1;
    info_of(id, state, out);
    return 0;
}

uint32_t ms_sites_take_held(uint32_t *ids, ms_site_t *out, uint32_t capacity)
{
    uint32_t n = 0;
    if (atomic_load_explicit(&g_held, memory_order_acquire) == 0)
        return 0;
    ms_spin_lock(&g_lock);
    uint32_t used = ms_sites_used();
    for (uint32_t id = MS_FIRST_DYNAMIC_ID; id < used && n < capacity; id++) {
        int state = atomic_load_explicit(&g_state[id], memory_order_relaxed);
        if (state != ID_HELD && state != ID_HELD_DEAD)
            continue;
        ids[n] = id;
        info_of(id, state, &out[n]); /* the reference goes with it */
        atomic_store_explicit(&g_state[id], state == ID_HELD ? ID_WATCHED : ID_DEAD, memory_order_release);
        atomic_fetch_sub_explicit(&g_held, 1, memory_order_relaxed);
        n++;
    }
    ms_spin_unlock(&g_lock);
    return n;
}

void *ms_sites_code_list(const ms_site_t *sites, uint32_t n)
{
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (list == NULL)
        return NULL;
    for (uint32_t k = 0; k < n; k++)
        PyList_SET_ITEM(list, (Py_ssize_t)k, (PyObject *)sites[k].code); /* steals the reference */
    return list;
}

const uint32_t *ms_sites_held_count(void)
{
    /* Read by Python through a numpy view, without a call (and so without giving the GIL up):
     * a hint that says whether ms_sites_take_held has anything to do. */
    return (const uint32_t *)(const void *)&g_held;
}

/* Under g_lock: an empty lookup table, then every key still in it inserted again. Lock-free
 * readers meanwhile may miss (and take the lock, and wait for this to end), never match wrong. */
static void rebuild(void)
{
    for (uint32_t i = 0; i < SLOTS; i++)
        atomic_store_explicit(&g_slots[i], SLOT_EMPTY, memory_order_relaxed);
    uint32_t used = ms_sites_used();
    for (uint32_t id = MS_FIRST_DYNAMIC_ID; id < used; id++) {
        int state = atomic_load_explicit(&g_state[id], memory_order_relaxed);
        if (state != ID_HELD && state != ID_WATCHED && state != ID_FIXED)
            continue;
        ms_site_entry_t *e = &g_ids[id];
        uint32_t i = slot_of(atomic_load_explicit(&e->code, memory_order_relaxed),
                             atomic_load_explicit(&e->where, memory_order_relaxed),
                             atomic_load_explicit(&e->key, memory_order_relaxed));
        while (atomic_load_explicit(&g_slots[i], memory_order_relaxed) != SLOT_EMPTY)
            i = (i + 1) & (SLOTS - 1);
        atomic_store_explicit(&g_slots[i], id, memory_order_release);
    }
    g_tombs = 0;
}

/* Under g_lock: a live node leaves the lookup table (HELD -> HELD_DEAD, WATCHED -> DEAD). */
static void forget_node(uint32_t id)
{
    ms_site_entry_t *e = &g_ids[id];
    uintptr_t code = atomic_load_explicit(&e->code, memory_order_relaxed);
    uint64_t where = atomic_load_explicit(&e->where, memory_order_relaxed);
    uint64_t key = atomic_load_explicit(&e->key, memory_order_relaxed);
    uint32_t i = slot_of(code, where, key);
    for (uint32_t n = 0; n < SLOTS; i = (i + 1) & (SLOTS - 1), n++) {
        uint32_t at = atomic_load_explicit(&g_slots[i], memory_order_relaxed);
        if (at == id) {
            atomic_store_explicit(&g_slots[i], SLOT_TOMB, memory_order_release);
            g_tombs++;
            break;
        }
        if (at == SLOT_EMPTY)
            break; /* not reachable: live ids are in the table */
    }
    int state = atomic_load_explicit(&g_state[id], memory_order_relaxed);
    atomic_store_explicit(&g_state[id], state == ID_HELD ? ID_HELD_DEAD : ID_DEAD, memory_order_release);
    atomic_fetch_add_explicit(&g_epoch, 1, memory_order_relaxed);
    /* Its caller is live (a live node's callers all are) or is being forgotten in this same
     * call: either way the count is the caller's own, not a reused id's. */
    uint32_t caller = caller_of(code, key);
    if (caller != 0 && g_callees[caller] > 0)
        g_callees[caller]--;
}

/* Under g_lock: forgets every live node under caller (queued in g_forgotten). */
static void forget_callees(uint32_t caller)
{
    uint32_t used = ms_sites_used();
    for (uint32_t id = MS_FIRST_DYNAMIC_ID; id < used && g_callees[caller] > 0; id++) {
        ms_site_entry_t *e = &g_ids[id];
        if (!is_live(atomic_load_explicit(&g_state[id], memory_order_relaxed)) ||
            caller_of(atomic_load_explicit(&e->code, memory_order_relaxed),
                      atomic_load_explicit(&e->key, memory_order_relaxed)) != caller)
            continue;
        forget_node(id);
        g_forgotten[g_forgotten_count++] = id;
    }
}

int ms_site_forget(uint32_t id)
{
    if (id < MS_FIRST_DYNAMIC_ID || id >= MS_MAX_IDS)
        return -1;
    int rc = -1;
    ms_spin_lock(&g_lock);
    if (atomic_load_explicit(&g_state[id], memory_order_relaxed) == ID_WATCHED) {
        forget_node(id);
        /* The nodes under it, breadth first: g_forgotten is also the work list (each id enters
         * it once, on leaving the live states, so it cannot overflow). A scan of the table per
         * node that has callees; leaves, most of the nodes whose code dies, need none. */
        uint32_t next = g_forgotten_count;
        forget_callees(id);
        while (next < g_forgotten_count)
            forget_callees(g_forgotten[next++]);
        if (g_tombs > TOMB_LIMIT)
            rebuild();
        rc = 0;
    }
    ms_spin_unlock(&g_lock);
    return rc;
}

uint32_t ms_sites_take_forgotten(uint32_t *ids, uint32_t capacity)
{
    uint32_t n = 0;
    ms_spin_lock(&g_lock);
    while (n < capacity && g_forgotten_count > 0)
        ids[n++] = g_forgotten[--g_forgotten_count];
    ms_spin_unlock(&g_lock);
    return n;
}

uint32_t ms_sites_reclaim(const uint32_t *ids, uint32_t n, uint8_t *in_use)
{
    uint32_t reclaimed = 0;
    ms_spin_lock(&g_lock);
    for (uint32_t k = 0; k < n; k++) {
        uint32_t id = ids[k];
        if (id < MS_FIRST_DYNAMIC_ID || id >= MS_MAX_IDS ||
            atomic_load_explicit(&g_state[id], memory_order_relaxed) != ID_DEAD)
            continue;
        atomic_store_explicit(&g_state[id], ID_FREE, memory_order_release);
        g_free[g_free_count++] = id;
        reclaimed++;
    }
    ms_spin_unlock(&g_lock);
    if (in_use) {
        memset(in_use, 0, MS_MAX_IDS);
        ms_live_sites_in_use(in_use);
    }
    return reclaimed;
}

void ms_sites_fork_child(void)
{
    /* The ids stay valid in the child (same code objects, same addresses, the same references
     * held); only the lock may have been held by a thread that no longer exists. */
    atomic_store(&g_lock, 0);
}
