/*
 * frames.c: the Python stack of the calling thread, innermost first, read without running Python.
 *
 * The only file that reads CPython internals, one block per supported version. Inside an
 * allocator hook nothing may allocate, free or run code, so this never creates frame objects or
 * computes line numbers: it takes the code object and the bytecode offset as borrowed pointers
 * and leaves the offset-to-line mapping to the Python side, later, with the GIL.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000
#define Py_BUILD_CORE 1
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#include <internal/pycore_frame.h>
#pragma GCC diagnostic pop
#undef Py_BUILD_CORE
#else
#include <frameobject.h> /* 3.10: PyFrameObject's fields */
#endif

#if PY_VERSION_HEX < 0x030A0000 || PY_VERSION_HEX >= 0x030E0000
#error "memscope-otel reads frames of CPython 3.10 to 3.13 only"
#endif

#include "internal.h"

/* The thread state of the calling thread if, and only if, it holds the GIL and runs in the main
 * interpreter. Before 3.12 the "current" thread state is the GIL holder's, which may be another
 * thread when a RAW hook runs without the GIL, so it is compared with this thread's own. Only the
 * main interpreter's frames are read: a subinterpreter's code objects would go into the
 * process-wide site table, their reference counts touched under another interpreter's GIL
 * (3.12+), and their addresses left dangling when that interpreter is destroyed. No call here
 * allocates. */
static PyThreadState *gil_holder_self(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    PyThreadState *current = PyThreadState_GetUnchecked();
#else
    PyThreadState *current = _PyThreadState_UncheckedGet();
#endif
    if (current == NULL || current != PyGILState_GetThisThreadState() || current->interp != PyInterpreterState_Main())
        return NULL;
    return current;
}

/* Up to max frames of the thread's Python stack, innermost first, as borrowed (code, byte
 * offset) pairs: the code objects are alive while their frames run, and the caller holds the GIL,
 * so none can die before it is interned (which takes a reference). Frames that have not started
 * (incomplete) and the interpreter's C-stack shims are skipped, as the frame objects that
 * traceback walks skip them. Returns the number of frames written. */
static int walk(PyThreadState *tstate, ms_frame_t *out, int max)
{
    int n = 0;
#if PY_VERSION_HEX >= 0x030D0000
    for (_PyInterpreterFrame *f = tstate->current_frame; f && n < max; f = f->previous) {
        if (f->owner == FRAME_OWNED_BY_CSTACK || !PyCode_Check(f->f_executable))
            continue;
        PyCodeObject *co = (PyCodeObject *)f->f_executable;
        if (_PyFrame_IsIncomplete(f))
            continue;
        out[n].code = co;
        out[n].offset = (int32_t)((f->instr_ptr - _PyCode_CODE(co)) * (Py_ssize_t)sizeof(_Py_CODEUNIT));
        n++;
    }
#elif PY_VERSION_HEX >= 0x030B0000
    for (_PyInterpreterFrame *f = tstate->cframe ? tstate->cframe->current_frame : NULL; f && n < max; f = f->previous) {
#if PY_VERSION_HEX >= 0x030C0000
        if (f->owner == FRAME_OWNED_BY_CSTACK)
            continue;
#endif
        if (f->f_code == NULL || _PyFrame_IsIncomplete(f))
            continue;
        out[n].code = f->f_code;
        out[n].offset = (int32_t)((f->prev_instr - _PyCode_CODE(f->f_code)) * (Py_ssize_t)sizeof(_Py_CODEUNIT));
        n++;
    }
#else
    for (PyFrameObject *f = tstate->frame; f && n < max; f = f->f_back) {
        if (f->f_code == NULL)
            continue;
        out[n].code = f->f_code;
        out[n].offset = f->f_lasti * (int32_t)sizeof(_Py_CODEUNIT);
        n++;
    }
#endif
    for (int i = 0; i < n; i++)
        if (out[i].offset < 0) /* a frame that has not run its first instruction yet */
            out[i].offset = 0;
    return n;
}

/* MAX_STACK_DEPTH, set by ms_start (1 .. MS_MAX_STACK_DEPTH). */
static _Atomic int g_max_depth = 1;

void ms_frames_configure(int max_depth)
{
    if (max_depth < 1)
        max_depth = 1;
    if (max_depth > MS_MAX_STACK_DEPTH)
        max_depth = MS_MAX_STACK_DEPTH;
    atomic_store_explicit(&g_max_depth, max_depth, memory_order_relaxed);
}

/* Out of line, so that its 2 KiB frame is only taken on a thread that runs Python code (a thread
 * of a C library, which may have a small stack, calls the native domain's hooks too). */
__attribute__((noinline)) static uint32_t capture(PyThreadState *tstate, int domain, ms_stack_memo_t *memo)
{
    /* On this thread's C stack: 16 bytes a frame, 2 KiB at the most (MS_MAX_STACK_DEPTH). */
    ms_frame_t frames[MS_MAX_STACK_DEPTH];
    int n = walk(tstate, frames, atomic_load_explicit(&g_max_depth, memory_order_relaxed));
    if (n == 0)
        return MS_ID_NATIVE + (uint32_t)domain;
    return ms_stack_intern(frames, n, domain, memo);
}

uint32_t ms_frame_site(int domain, ms_stack_memo_t *memo)
{
    PyThreadState *tstate = gil_holder_self();
    if (tstate == NULL)
        return MS_ID_NATIVE + (uint32_t)domain;
    return capture(tstate, domain, memo);
}
