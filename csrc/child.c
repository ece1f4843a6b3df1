/*
 * child.c: the deferred start of a forked child.
 *
 * A forked child gets no thread or file of ours until it needs one: a child that only execs or
 * exits must find its own thread alone. Its records wait in the rings (or the spill) meanwhile.
 * Besides the Python side's own safe points (a collection, snapshot(), stop(), the exit path),
 * a sampled allocation of the child at least a delay after its first one asks CPython to call
 * the Python side's starter in the main thread at its next safe point: Py_AddPendingCall
 * runs it between bytecodes, with the GIL, outside any allocator hook. The hook only schedules:
 * Py_AddPendingCall takes one of CPython's locks and allocates nothing, from any thread, with or
 * without a thread state.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "internal.h"

_Atomic int ms_child_start_armed;
static _Atomic uint64_t g_delay_ns;
static _Atomic uint64_t g_due_ns; /* 0 until the child's first sampled allocation */
static _Atomic uintptr_t g_starter; /* a PyObject * that the Python side keeps alive for good */

static int run_starter(void *arg)
{
    (void)arg;
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        atomic_store(&ms_child_start_armed, 1); /* (3.10, 3.11: a subinterpreter's thread asked) */
        return 0;
    }
    PyObject *starter = (PyObject *)atomic_load(&g_starter);
    if (starter == NULL) /* disarmed after it was scheduled */
        return 0;
    PyObject *result = PyObject_CallNoArgs(starter);
    /* A pending call that fails raises in whatever the main thread runs: never. The starter
     * logs its own failures. */
    if (result == NULL)
        PyErr_Clear();
    else
        Py_DECREF(result);
    return 0;
}

void ms_child_start_arm(uintptr_t starter, uint64_t delay_ns)
{
    atomic_store(&ms_child_start_armed, 0);
    atomic_store(&g_starter, starter);
    atomic_store(&g_delay_ns, delay_ns);
    atomic_store(&g_due_ns, 0);
    atomic_store(&ms_child_start_armed, starter != 0);
}

void ms_child_start_poll(uint64_t now_ns)
{
    uint64_t due = atomic_load_explicit(&g_due_ns, memory_order_relaxed);
    if (due == 0) { /* the first one starts the clock */
        uint64_t unset = 0;
        due = now_ns + atomic_load_explicit(&g_delay_ns, memory_order_relaxed);
        atomic_compare_exchange_strong(&g_due_ns, &unset, due);
        return;
    }
    if (now_ns < due)
        return;
    int armed = 1;
    if (!atomic_compare_exchange_strong(&ms_child_start_armed, &armed, 0))
        return; /* another thread scheduled it */
    if (Py_AddPendingCall(run_starter, NULL) != 0)
        atomic_store(&ms_child_start_armed, 1); /* CPython's queue was full: the next sample asks again */
}

void ms_child_fork_reset(void)
{
    /* In the pthread_atfork child handler: a grandchild is armed anew by the Python side. */
    atomic_store_explicit(&ms_child_start_armed, 0, memory_order_relaxed);
}
