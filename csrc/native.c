/*
 * native.c: the native domain's plumbing. Calls that other shared objects make to the C
 * library's allocator go through their GOT (the global offset table: one pointer per imported
 * function, filled in by the dynamic loader); pointing those entries at memscope's wrappers
 * (hooks.c) makes numpy's array data, C++ containers and every extension's own heap visible.
 * The only file that reads ELF structures or changes page protections. It knows nothing of
 * Python (ms_with_gil is its one contact), so that tests/native/elf_check.c can run it alone,
 * natively and under qemu-user for AArch64.
 *
 * Which objects: every loaded one but the interpreter (the executable and libpython, whose
 * allocations the CPython domains already count: a block libpython takes from malloc is a RAW
 * allocation only), the C library and the dynamic loader (their internal calls do not use the
 * GOT anyway), sanitizer runtimes, and memscope itself. Which entries: JUMP_SLOT and GLOB_DAT
 * relocations (calls through the PLT, and -fno-plt calls or address-taken functions) of an
 * imported symbol, never a function the object defines itself (an allocator library's own).
 *
 * Objects loaded later: dlopen entries of every object (the interpreter's too: imports of
 * extension modules) point at memscope's, which patches new objects before returning. The
 * loader searches a bare library name along the caller's RPATH/RUNPATH chain, and it takes the
 * caller from the return address: a wrapper that called dlopen itself would search memscope's
 * paths instead. So a bare name is handed to the real dlopen by a jump, the caller's return
 * address untouched (the entry trampoline below), and the objects it loads are patched by the
 * drainer's next poll; names with a slash (every Python import, ctypes with a path) do not
 * depend on the caller and are patched before dlopen returns.
 *
 * Safety: a pass runs with the GIL (Python's imports call dlopen holding it, so no import is
 * half-loaded meanwhile) and under g_lock, inside dl_iterate_phdr, which holds the loader's
 * list lock: an object listed there is not unmapped before the callback returns (dlclose takes
 * it off the list under that lock before unmapping), so no pointer into an object is kept
 * between passes, and dlclose needs no wrapper. An object that another thread is loading at
 * that moment (listed before its relocation ends) is recognised by an entry not yet relocated
 * and left to a later pass. Entries inside the RELRO range are written between two mprotect
 * calls; every write is one aligned pointer store. The wrappers are never unloaded, so a
 * thread holding an old entry value still reaches a valid function after stop().
 */
#include <string.h>

#include "internal.h"

#if defined(__linux__) && defined(__GLIBC__) && (defined(__x86_64__) || defined(__aarch64__))
#define MS_NATIVE_ELF 1
#endif

#ifdef MS_NATIVE_ELF

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__x86_64__)
#define MS_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#define MS_R_GLOB_DAT R_X86_64_GLOB_DAT
#else
#define MS_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#define MS_R_GLOB_DAT R_AARCH64_GLOB_DAT
#endif

/* The names patched: the allocator functions (MS_FN_* order), then dlopen. */
#define MS_FN_DLOPEN MS_NATIVE_FNS
static const char *const g_names[MS_NATIVE_FNS + 1] = {
    [MS_FN_MALLOC] = "malloc",
    [MS_FN_CALLOC] = "calloc",
    [MS_FN_REALLOC] = "realloc",
    [MS_FN_FREE] = "free",
    [MS_FN_POSIX_MEMALIGN] = "posix_memalign",
    [MS_FN_ALIGNED_ALLOC] = "aligned_alloc",
    [MS_FN_MEMALIGN] = "memalign",
    [MS_FN_VALLOC] = "valloc",
    [MS_FN_PVALLOC] = "pvalloc",
    [MS_FN_DLOPEN] = "dlopen",
};

/* What each name resolves to in the global scope: the target of an entry that lazy binding has
 * not resolved yet (it still points at the object's own PLT). Looked up before a pass, since
 * dlsym must not run inside dl_iterate_phdr's callback (it takes the loader's other lock). */
static void *g_global[MS_NATIVE_FNS + 1];

/* The real dlopen, for the wrapper and the trampoline (hidden: the trampoline reads it
 * PC-relative). */
__attribute__((visibility("hidden"))) void *(*ms_native_real_dlopen)(const char *, int);

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic int g_installed;      /* between ms_native_install and ms_native_uninstall */
static uintptr_t g_self_base;        /* memscope's own load address */
static size_t g_page;

/* Objects already patched, so that a pass after each dlopen looks only at new ones. An object
 * unloaded since (dlpi_subs moved) may have left its address to another: then everything is
 * looked at again. Past MS_MEMO_MAX objects, passes simply look at the rest every time. */
#define MS_MEMO_MAX 2048
typedef struct {
    uintptr_t base;
    uint32_t entries, skipped;
} memo_t;
static memo_t g_memo[MS_MEMO_MAX];
static size_t g_memo_n;
static _Atomic unsigned long long g_seen_adds, g_seen_subs; /* read by the poll without g_lock */
static _Atomic uint64_t g_objects, g_entries, g_skipped; /* figures, for ms_read_counters */

/* ---- the dlopen wrapper and its trampoline ---- */

void *ms_native_dlopen_path(const char *file, int mode);
int ms_native_dlopen_bare(const char *file);
static void patch_new_objects(void);

/* Names with a slash (and NULL, the program itself) are found the same from any caller. */
__attribute__((visibility("hidden"))) int ms_native_dlopen_bare(const char *file)
{
    return file != NULL && strchr(file, '/') == NULL;
}

__attribute__((visibility("hidden"))) void *ms_native_dlopen_path(const char *file, int mode)
{
    void *handle = ms_native_real_dlopen(file, mode);
    if (handle != NULL && atomic_load(&g_installed))
        patch_new_objects();
    return handle;
}

/* The entry that dlopen GOT entries point at: asks ms_native_dlopen_bare, then jumps (the
 * caller's return address still on the stack) to the real dlopen for a bare name, or to
 * ms_native_dlopen_path. */
void ms_native_dlopen_entry(const char *file, int mode);
#if defined(__x86_64__)
__asm__(".text\n"
        ".p2align 4\n"
        ".globl ms_native_dlopen_entry\n"
        ".hidden ms_native_dlopen_entry\n"
        ".type ms_native_dlopen_entry, @function\n"
        "ms_native_dlopen_entry:\n"
        "  .byte 0xf3, 0x0f, 0x1e, 0xfa\n" /* endbr64 (a no-op where IBT is off or absent) */
        "  push %rdi\n"
        "  push %rsi\n"
        "  sub $8, %rsp\n" /* 16-byte alignment at the call */
        "  call ms_native_dlopen_bare\n"
        "  add $8, %rsp\n"
        "  pop %rsi\n"
        "  pop %rdi\n"
        "  test %eax, %eax\n"
        "  jnz 1f\n"
        "  jmp ms_native_dlopen_path\n"
        "1:\n"
        "  jmp *ms_native_real_dlopen(%rip)\n"
        ".size ms_native_dlopen_entry, .-ms_native_dlopen_entry\n");
#else
__asm__(".text\n"
        ".p2align 4\n"
        ".globl ms_native_dlopen_entry\n"
        ".hidden ms_native_dlopen_entry\n"
        ".type ms_native_dlopen_entry, %function\n"
        "ms_native_dlopen_entry:\n"
        "  stp x29, x30, [sp, #-32]!\n"
        "  mov x29, sp\n"
        "  stp x0, x1, [sp, #16]\n"
        "  bl ms_native_dlopen_bare\n"
        "  mov w9, w0\n"
        "  ldp x0, x1, [sp, #16]\n"
        "  ldp x29, x30, [sp], #32\n"
        "  cbnz w9, 1f\n"
        "  b ms_native_dlopen_path\n"
        "1:\n"
        "  adrp x16, ms_native_real_dlopen\n"
        "  ldr x16, [x16, #:lo12:ms_native_real_dlopen]\n"
        "  br x16\n"
        ".size ms_native_dlopen_entry, .-ms_native_dlopen_entry\n");
#endif

/* ---- reading one object ---- */

enum role { ROLE_SKIP, ROLE_DLOPEN_ONLY, ROLE_ALL };

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static enum role role_of(const struct dl_phdr_info *info, bool first)
{
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    if (info->dlpi_addr == g_self_base)
        return ROLE_SKIP;
    if (first || name[0] == '\0')
        return ROLE_DLOPEN_ONLY; /* the executable */
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    static const char *const skipped[] = {"linux-vdso", "linux-gate", "ld-linux", "ld64.so", "libc.so",
                                          "libdl.so", "libpthread.so", "librt.so", "libasan", "libubsan",
                                          "libtsan", "liblsan", "libhwasan"};
    for (size_t i = 0; i < sizeof skipped / sizeof skipped[0]; i++)
        if (starts_with(base, skipped[i]))
            return ROLE_SKIP;
    if (starts_with(base, "libpython"))
        return ROLE_DLOPEN_ONLY;
    return ROLE_ALL;
}

typedef struct {
    uintptr_t base, lo, hi;     /* load address; lowest and highest mapped address */
    uintptr_t relro_lo, relro_hi; /* the pages the loader made read-only (whole pages only) */
    const ElfW(Phdr) *phdr;
    size_t phnum;
    const ElfW(Sym) *symtab;
    const char *strtab;
    size_t strsz;
    const ElfW(Rela) *rela, *jmprel;
    size_t rela_n, jmprel_n;
} object_t;

/* The loader adjusts the dynamic section's addresses in place on these platforms; a value below
 * the load address was left as written by the linker. */
static uintptr_t dyn_addr(const object_t *o, ElfW(Addr) value)
{
    return value < o->base ? o->base + value : value;
}

static bool read_object(const struct dl_phdr_info *info, object_t *o)
{
    memset(o, 0, sizeof *o);
    o->base = info->dlpi_addr;
    o->phdr = info->dlpi_phdr;
    o->phnum = info->dlpi_phnum;
    o->lo = UINTPTR_MAX;
    const ElfW(Dyn) *dyn = NULL;
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        uintptr_t start = o->base + ph->p_vaddr, end = start + ph->p_memsz;
        if (ph->p_type == PT_LOAD) {
            o->lo = start < o->lo ? start : o->lo;
            o->hi = end > o->hi ? end : o->hi;
        } else if (ph->p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *)start;
        } else if (ph->p_type == PT_GNU_RELRO) {
            o->relro_lo = start & ~(uintptr_t)(g_page - 1);
            o->relro_hi = end & ~(uintptr_t)(g_page - 1);
        }
    }
    if (dyn == NULL || o->lo >= o->hi)
        return false;
    size_t relasz = 0, pltrelsz = 0;
    ElfW(Sxword) pltrel = DT_RELA;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB: o->symtab = (const ElfW(Sym) *)dyn_addr(o, dyn->d_un.d_ptr); break;
        case DT_STRTAB: o->strtab = (const char *)dyn_addr(o, dyn->d_un.d_ptr); break;
        case DT_STRSZ: o->strsz = dyn->d_un.d_val; break;
        case DT_RELA: o->rela = (const ElfW(Rela) *)dyn_addr(o, dyn->d_un.d_ptr); break;
        case DT_RELASZ: relasz = dyn->d_un.d_val; break;
        case DT_JMPREL: o->jmprel = (const ElfW(Rela) *)dyn_addr(o, dyn->d_un.d_ptr); break;
        case DT_PLTRELSZ: pltrelsz = dyn->d_un.d_val; break;
        case DT_PLTREL: pltrel = (ElfW(Sxword))dyn->d_un.d_val; break;
        default: break;
        }
    }
    if (o->symtab == NULL || o->strtab == NULL || pltrel != DT_RELA)
        return false;
    o->rela_n = o->rela ? relasz / sizeof(ElfW(Rela)) : 0;
    o->jmprel_n = o->jmprel ? pltrelsz / sizeof(ElfW(Rela)) : 0;
    return true;
}

/* The GOT slot of a relocation, if it lies inside the object's mapped range and is aligned. */
static void **slot_of(const object_t *o, const ElfW(Rela) *r)
{
    uintptr_t at = o->base + r->r_offset;
    if (at < o->lo || at + sizeof(void *) > o->hi || at % sizeof(void *) != 0)
        return NULL;
    return (void **)at;
}

/* A value the loader has not relocated yet: zero, or a link-time address (below the object's
 * size, where the loaded object's addresses start at its base). */
static bool unrelocated(const object_t *o, uintptr_t value)
{
    return value == 0 || (o->base != 0 && value < o->hi - o->base);
}

/* Whether the loader is done with the object: its last PLT entry is relocated (relocation
 * processing does those last). Objects without PLT entries are taken as done. */
static bool relocated(const object_t *o)
{
    if (o->jmprel_n == 0)
        return true;
    void **slot = slot_of(o, &o->jmprel[o->jmprel_n - 1]);
    return slot != NULL && !unrelocated(o, (uintptr_t)__atomic_load_n(slot, __ATOMIC_RELAXED));
}

/* Which patched name a relocation names (-1: none): an imported symbol, by name. */
static int name_of(const object_t *o, const ElfW(Rela) *r, enum role role)
{
    unsigned long type = ELF64_R_TYPE(r->r_info);
    if (type != MS_R_JUMP_SLOT && type != MS_R_GLOB_DAT)
        return -1;
    const ElfW(Sym) *sym = &o->symtab[ELF64_R_SYM(r->r_info)];
    if (sym->st_shndx != SHN_UNDEF || (o->strsz && sym->st_name >= o->strsz))
        return -1;
    const char *name = o->strtab + sym->st_name;
    int first = role == ROLE_ALL ? 0 : MS_FN_DLOPEN;
    for (int fn = first; fn <= MS_FN_DLOPEN; fn++)
        if (strcmp(name, g_names[fn]) == 0)
            return fn;
    return -1;
}

/* Writes one GOT slot, making its page writable for the moment if the loader protected it. */
static bool write_slot(const object_t *o, void **slot, void *value)
{
    uintptr_t at = (uintptr_t)slot;
    bool protected = at >= o->relro_lo && at < o->relro_hi;
    void *page = (void *)(at & ~(uintptr_t)(g_page - 1));
    if (protected && mprotect(page, g_page, PROT_READ | PROT_WRITE) != 0)
        return false;
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (protected)
        mprotect(page, g_page, PROT_READ);
    return true;
}

/* The wrapper (or trampoline) of fn that value is, as (fn, variant); -1 if value is none. */
static int wrapper_variant(int fn, void *value)
{
    if (fn == MS_FN_DLOPEN)
        return value == (void *)ms_native_dlopen_entry ? 0 : -1;
    for (int v = 0; v < MS_NATIVE_VARIANTS; v++)
        if (ms_native_wrapper[fn][v] == value)
            return v;
    return -1;
}

/* The variant whose next function is target, taking a free one if none is yet; -1 if all four
 * are taken by other implementations. */
static int variant_for(int fn, void *target)
{
    for (int v = 0; v < MS_NATIVE_VARIANTS; v++) {
        void *next = atomic_load(&ms_native_next[fn][v]);
        if (next == target)
            return v;
        if (next == NULL) {
            atomic_store_explicit(&ms_native_next[fn][v], target, memory_order_release);
            return v;
        }
    }
    return -1;
}

/* ---- passes ---- */

typedef struct {
    bool restore;
    bool first;
} pass_t;

static void *replacement(int fn, void *current, const object_t *o)
{
    void *target = current;
    if ((uintptr_t)current >= o->lo && (uintptr_t)current < o->hi)
        target = g_global[fn]; /* lazy binding: still the object's own PLT stub */
    if (target == NULL)
        return NULL;
    if (fn == MS_FN_DLOPEN)
        return target == (void *)ms_native_real_dlopen ? (void *)ms_native_dlopen_entry : NULL;
    int v = variant_for(fn, target);
    return v < 0 ? NULL : ms_native_wrapper[fn][v];
}

static void *original(int fn, int v)
{
    return fn == MS_FN_DLOPEN ? (void *)ms_native_real_dlopen : atomic_load(&ms_native_next[fn][v]);
}

static bool memoized(uintptr_t base)
{
    for (size_t i = 0; i < g_memo_n; i++)
        if (g_memo[i].base == base)
            return true;
    return false;
}

static void patch_relocations(const object_t *o, const ElfW(Rela) *rels, size_t n, enum role role, bool restore,
                              uint32_t *entries, uint32_t *skipped)
{
    for (size_t i = 0; i < n; i++) {
        int fn = name_of(o, &rels[i], role);
        if (fn < 0)
            continue;
        void **slot = slot_of(o, &rels[i]);
        if (slot == NULL)
            continue;
        void *current = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
        int v = wrapper_variant(fn, current);
        if (restore) {
            if (v >= 0)
                write_slot(o, slot, original(fn, v));
            continue;
        }
        if (v >= 0) {
            *entries += 1;
            continue;
        }
        void *ours = replacement(fn, current, o);
        if (ours != NULL && write_slot(o, slot, ours))
            *entries += 1;
        else if (fn != MS_FN_DLOPEN)
            *skipped += 1;
    }
}

static int visit(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    pass_t *pass = data;
    bool first = pass->first;
    pass->first = false;
    enum role role = role_of(info, first);
    if (role == ROLE_SKIP || (!pass->restore && memoized(info->dlpi_addr)))
        return 0;
    object_t o;
    if (!read_object(info, &o) || (!pass->restore && !relocated(&o)))
        return 0;
    uint32_t entries = 0, skipped = 0;
    patch_relocations(&o, o.rela, o.rela_n, role, pass->restore, &entries, &skipped);
    patch_relocations(&o, o.jmprel, o.jmprel_n, role, pass->restore, &entries, &skipped);
    if (!pass->restore && g_memo_n < MS_MEMO_MAX)
        g_memo[g_memo_n++] = (memo_t){info->dlpi_addr, entries, skipped};
    return 0;
}

/* The loader's counts of objects ever added and removed. */
static int read_counts(struct dl_phdr_info *info, size_t size, void *data)
{
    unsigned long long *counts = data;
    if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof info->dlpi_subs) {
        counts[0] = info->dlpi_adds;
        counts[1] = info->dlpi_subs;
    }
    return 1; /* the first object is enough */
}

static void recount(void)
{
    uint64_t objects = 0, entries = 0, skipped = 0;
    for (size_t i = 0; i < g_memo_n; i++) {
        objects += g_memo[i].entries > 0;
        entries += g_memo[i].entries;
        skipped += g_memo[i].skipped;
    }
    atomic_store(&g_objects, objects);
    atomic_store(&g_entries, entries);
    atomic_store(&g_skipped, skipped);
}

/* One patching pass over the objects not seen yet; call under g_lock. */
static void pass_locked(void)
{
    unsigned long long counts[2] = {0, 0};
    dl_iterate_phdr(read_counts, counts);
    if (counts[1] != atomic_load(&g_seen_subs))
        g_memo_n = 0; /* something was unloaded: its address may now be another object's */
    atomic_store(&g_seen_adds, counts[0]);
    atomic_store(&g_seen_subs, counts[1]);
    pass_t pass = {.restore = false, .first = true};
    dl_iterate_phdr(visit, &pass);
    recount();
}

static void resolve_globals(void)
{
    for (int fn = 0; fn <= MS_FN_DLOPEN; fn++)
        g_global[fn] = dlsym(RTLD_DEFAULT, g_names[fn]);
    if (ms_native_real_dlopen == NULL)
        ms_native_real_dlopen = (void *(*)(const char *, int))g_global[MS_FN_DLOPEN];
}

static void pass_if_installed(void)
{
    unsigned guard = ms_tls_guard();
    ms_tls_set_guard(MS_GUARD_IGNORED);
    pthread_mutex_lock(&g_lock);
    if (atomic_load(&g_installed))
        pass_locked();
    pthread_mutex_unlock(&g_lock);
    ms_tls_set_guard(guard);
}

/* After a dlopen that found a new object. A Python thread (one that took the GIL, or released
 * it around dlopen) patches at once, holding the GIL; any other thread leaves it to the
 * drainer's poll rather than take the GIL inside a foreign library's call. */
static void patch_new_objects(void)
{
    if (!ms_with_gil(pass_if_installed, true))
        ms_wake_drainer();
}

int ms_native_supported(void)
{
    return 1;
}

void ms_native_install(void)
{
    pthread_mutex_lock(&g_lock);
    if (g_page == 0) {
        long page = sysconf(_SC_PAGESIZE);
        g_page = page > 0 ? (size_t)page : 4096;
        Dl_info self;
        if (dladdr((void *)ms_native_install, &self) != 0)
            g_self_base = (uintptr_t)self.dli_fbase;
    }
    resolve_globals();
    g_memo_n = 0;
    atomic_store(&g_installed, 1);
    pass_locked();
    pthread_mutex_unlock(&g_lock);
}

void ms_native_uninstall(void)
{
    pthread_mutex_lock(&g_lock);
    if (atomic_exchange(&g_installed, 0)) {
        pass_t pass = {.restore = true, .first = true};
        dl_iterate_phdr(visit, &pass);
        g_memo_n = 0;
        recount();
    }
    pthread_mutex_unlock(&g_lock);
}

void ms_native_poll(void)
{
    if (!atomic_load(&g_installed))
        return;
    unsigned long long counts[2] = {0, 0};
    dl_iterate_phdr(read_counts, counts);
    if (counts[0] == atomic_load(&g_seen_adds) && counts[1] == atomic_load(&g_seen_subs))
        return; /* (a pass racing these reads only costs one more pass) */
    ms_with_gil(pass_if_installed, false);
}

void ms_native_stats(uint64_t *objects, uint64_t *entries, uint64_t *skipped)
{
    *objects = atomic_load(&g_objects);
    *entries = atomic_load(&g_entries);
    *skipped = atomic_load(&g_skipped);
}

void ms_native_fork_child(void)
{
    /* Only this thread survives: a pass another thread was running cannot finish. */
    pthread_mutex_init(&g_lock, NULL);
}

#else /* no GOT patching on this platform: the native domain stays empty */

int ms_native_supported(void)
{
    return 0;
}

void ms_native_install(void)
{
}

void ms_native_uninstall(void)
{
}

void ms_native_poll(void)
{
}

void ms_native_stats(uint64_t *objects, uint64_t *entries, uint64_t *skipped)
{
    *objects = *entries = *skipped = 0;
}

void ms_native_fork_child(void)
{
}

#endif
