/*
 * frames.c: the innermost Python frame of the calling thread, read without running Python.
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

static bool innermost(PyThreadState *tstate, PyObject **code, int32_t *offset)
{
#if PY_VERSION_HEX >= 0x030D0000
    for (_PyInterpreterFrame *f = tstate->current_frame; f; f = f->previous) {
        if (f->owner == FRAME_OWNED_BY_CSTACK || !PyCode_Check(f->f_executable))
            continue;
        PyCodeObject *co = (PyCodeObject *)f->f_executable;
        if (_PyFrame_IsIncomplete(f))
            continue;
        *code = (PyObject *)co;
        *offset = (int32_t)((f->instr_ptr - _PyCode_CODE(co)) * (Py_ssize_t)sizeof(_Py_CODEUNIT));
        return true;
    }
#elif PY_VERSION_HEX >= 0x030B0000
    for (_PyInterpreterFrame *f = tstate->cframe ? tstate->cframe->current_frame : NULL; f; f = f->previous) {
#if PY_VERSION_HEX >= 0x030C0000
        if (f->owner == FRAME_OWNED_BY_CSTACK)
            continue;
#endif
        if (f->f_code == NULL || _PyFrame_IsIncomplete(f))
            continue;
        *code = (PyObject *)f->f_code;
        *offset = (int32_t)((f->prev_instr - _PyCode_CODE(f->f_code)) * (Py_ssize_t)sizeof(_Py_CODEUNIT));
        return true;
    }
#else
    PyFrameObject *f = tstate->frame;
    if (f && f->f_code) {
        *code = (PyObject *)f->f_code;
        *offset = f->f_lasti * (int32_t)sizeof(_Py_CODEUNIT);
        return true;
    }
#endif
    return false;
}

uint32_t ms_frame_site(int domain)
{
    PyThreadState *tstate = gil_holder_self();
    PyObject *code;
    int32_t offset;
    if (tstate == NULL || !innermost(tstate, &code, &offset))
        return MS_ID_NATIVE + (uint32_t)domain;
    if (offset < 0) /* a frame that has not run its first instruction yet */
        offset = 0;
    return ms_site_intern(code, offset, domain, 0);
}
