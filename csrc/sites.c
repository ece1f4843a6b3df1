/*
 * sites.c: dense ids for allocation sites and manual-API types.
 *
 * A site is (code object, bytecode offset, domain); a type is (64-bit key of its name, manual
 * domain). Ids index plain arrays downstream (the reducer's per-id sums), so they are handed out
 * densely and never reused. Lookups are lock-free (hot on the sampled path); inserts take a spin
 * lock. The table holds a strong reference to each code object it names, so an address can
 * never come back as a different code object; the number of such references is bounded by
 * MS_MAX_IDS, and they live as long as the process (code objects usually do anyway).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "internal.h"

#define SLOT_BITS 16 /* twice MS_MAX_IDS: probes stay short */
#define SLOTS (1u << SLOT_BITS)

static ms_site_t g_ids[MS_MAX_IDS] = {
    [MS_ID_NATIVE + 0] = {NULL, 0, 0, 0},   [MS_ID_NATIVE + 1] = {NULL, 0, 1, 0},
    [MS_ID_NATIVE + 2] = {NULL, 0, 2, 0},   [MS_ID_NATIVE + 3] = {NULL, 0, 3, 0},
    [MS_ID_OVERFLOW + 0] = {NULL, 0, 0, 0}, [MS_ID_OVERFLOW + 1] = {NULL, 0, 1, 0},
    [MS_ID_OVERFLOW + 2] = {NULL, 0, 2, 0}, [MS_ID_OVERFLOW + 3] = {NULL, 0, 3, 0},
};
static _Atomic uint32_t g_slots[SLOTS]; /* 0: empty, else an id */
static _Atomic uint32_t g_next_id = MS_FIRST_DYNAMIC_ID;
static ms_spin_t g_lock;

static uint32_t slot_of(void *code, int32_t offset, int domain, uint64_t key)
{
    uint64_t h = (uint64_t)(uintptr_t)code * 0x9E3779B97F4A7C15ull;
    h ^= ((uint64_t)(uint32_t)offset << 2 | (uint64_t)domain) * 0xC2B2AE3D27D4EB4Full;
    h ^= key * 0x165667B19E3779F9ull;
    h ^= h >> 29;
    return (uint32_t)(h >> (64 - SLOT_BITS));
}

static bool same(const ms_site_t *e, void *code, int32_t offset, int domain, uint64_t key)
{
    return e->code == code && e->offset == offset && e->domain == domain && e->key == key;
}

/* The id of key, or 0 with *free_slot set to where it would go. */
static uint32_t find(void *code, int32_t offset, int domain, uint64_t key, uint32_t *free_slot)
{
    for (uint32_t i = slot_of(code, offset, domain, key), n = 0; n < SLOTS; i = (i + 1) & (SLOTS - 1), n++) {
        uint32_t id = atomic_load_explicit(&g_slots[i], memory_order_acquire);
        if (id == 0) {
            *free_slot = i;
            return 0;
        }
        if (same(&g_ids[id], code, offset, domain, key))
            return id;
    }
    *free_slot = SLOTS;
    return 0;
}

/* Callers naming a code object hold the GIL (it is what makes the incref safe). */
uint32_t ms_site_intern(void *code, int32_t offset, int domain, uint64_t key)
{
    uint32_t free_slot;
    uint32_t id = find(code, offset, domain, key, &free_slot);
    if (MS_LIKELY(id != 0))
        return id;
    ms_spin_lock(&g_lock);
    id = find(code, offset, domain, key, &free_slot); /* someone may have won the race */
    if (id == 0) {
        uint32_t next = atomic_load_explicit(&g_next_id, memory_order_relaxed);
        if (next >= MS_MAX_IDS || free_slot == SLOTS) {
            id = MS_ID_OVERFLOW + (uint32_t)domain;
        } else {
            id = next;
            g_ids[id] = (ms_site_t){code, offset, domain, key};
            if (code)
                Py_INCREF((PyObject *)code);
            atomic_store_explicit(&g_next_id, next + 1, memory_order_release);
            atomic_store_explicit(&g_slots[free_slot], id, memory_order_release);
        }
    }
    ms_spin_unlock(&g_lock);
    return id;
}

uint32_t ms_sites_used(void)
{
    return atomic_load_explicit(&g_next_id, memory_order_acquire);
}

int ms_site_info(uint32_t id, ms_site_t *out)
{
    if (id >= ms_sites_used())
        return -1;
    *out = g_ids[id];
    return 0;
}

void ms_sites_fork_child(void)
{
    /* The ids stay valid in the child (same code objects, same addresses); only the lock may
     * have been held by a thread that no longer exists. */
    atomic_store(&g_lock, 0);
}
