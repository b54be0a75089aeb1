/* fastcall.c: fastnn._fastcall, the CPython entry point of ops.matmul's plain calls.
 *
 * Everything else in the C backend is bound with cffi (fastnn._cfastnn). A cffi call pays
 * for each argument's conversion and each array's ffi.from_buffer, and the Python checks
 * before it: on a 2 x 2 x 2 float product, 1.6 us of fixed cost against 0.9 for
 * torch.mm (the Xeon, 2026-12-04), and a third of a 128 x 128 x 10 product. This module
 * takes the same plain calls (gemm below) through the buffer protocol in one C function.
 * It holds no kernels: bind() is given the addresses of _cfastnn's fnn_gemm_lwork_f32/_f64
 * (one copy of the code, of the ISA and of the thread count), so it cannot run before the
 * C backend has loaded, and it computes with them exactly what the cffi path computes.
 *
 * Each OS thread's workspace is a capsule in its thread-state dictionary (freed with the
 * thread), grown as fnn_gemm_lwork asks; it is this module's own, apart from the Python
 * side's. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

typedef int64_t (*gemm_f32_t)(int, int, int64_t, int64_t, int64_t, float, const float *,
                              int64_t, const float *, int64_t, float, float *, int64_t, float *,
                              int64_t);
typedef int64_t (*gemm_f64_t)(int, int, int64_t, int64_t, int64_t, double, const double *,
                              int64_t, const double *, int64_t, double, double *, int64_t,
                              double *, int64_t);

static gemm_f32_t gemm_f32;
static gemm_f64_t gemm_f64;
_Static_assert(sizeof(gemm_f32_t) == sizeof(void *) && sizeof(gemm_f64_t) == sizeof(void *),
               "function and object pointers of one size (bind passes addresses as ints)");
static PyTypeObject *ndarray_type; /* numpy.ndarray: the exact type, no subclass */
static PyObject *np_empty, *dtype_f32, *dtype_f64;
static PyObject *ws_key;

/* Products of at least this many multiply-adds release the GIL while they run (below it,
 * releasing and taking it back costs more than the product's share of a switch). */
#define GIL_FREE_MIN (1 << 18)

typedef struct {
    void *p;
    size_t nbytes;
} workspace;

static void ws_free(PyObject *cap)
{
    workspace *w = PyCapsule_GetPointer(cap, "fastnn._fastcall.ws");
    if (w) {
        PyMem_RawFree(w->p);
        PyMem_RawFree(w);
    }
}

/* This thread's workspace, at least nbytes long (grown, never shrunk; contents not kept);
 * NULL with an exception set if memory runs out. */
static workspace *thread_ws(size_t nbytes)
{
    PyObject *dict = PyThreadState_GetDict();
    if (!dict) {
        PyErr_SetString(PyExc_RuntimeError, "no thread state dictionary");
        return NULL;
    }
    PyObject *cap = PyDict_GetItemWithError(dict, ws_key); /* borrowed */
    workspace *w;
    if (cap) {
        w = PyCapsule_GetPointer(cap, "fastnn._fastcall.ws");
        if (!w)
            return NULL;
    } else {
        if (PyErr_Occurred())
            return NULL;
        w = PyMem_RawCalloc(1, sizeof *w);
        if (!w) {
            PyErr_NoMemory();
            return NULL;
        }
        cap = PyCapsule_New(w, "fastnn._fastcall.ws", ws_free);
        if (!cap) {
            PyMem_RawFree(w);
            return NULL;
        }
        const int rc = PyDict_SetItem(dict, ws_key, cap);
        Py_DECREF(cap); /* the dictionary holds it */
        if (rc < 0)
            return NULL;
    }
    if (w->nbytes < nbytes) {
        void *p = PyMem_RawMalloc(nbytes);
        if (!p) {
            PyErr_NoMemory();
            return NULL;
        }
        PyMem_RawFree(w->p);
        w->p = p;
        w->nbytes = nbytes;
    }
    return w;
}

/* 1 float32, 2 float64 (native byte order), 0 anything else: a buffer's format. */
static int float_kind(const Py_buffer *v)
{
    const char *f = v->format;
    if (!f)
        return 0;
    if (*f == '@' || *f == '=' || (PY_LITTLE_ENDIAN ? *f == '<' : *f == '>'))
        f++; /* native byte order, said or not */
    if (f[0] && !f[1]) {
        if (f[0] == 'f' && v->itemsize == 4)
            return 1;
        if (f[0] == 'd' && v->itemsize == 8)
            return 2;
    }
    return 0;
}

/* A C-contiguous 2-D float buffer of x (writable if asked): its float_kind, 1 or 2; 0 and
 * no exception if x has none (the caller declines), -1 only for a real error. */
static int get_matrix(PyObject *x, Py_buffer *v, int writable)
{
    if (Py_TYPE(x) != ndarray_type)
        return 0;
    if (PyObject_GetBuffer(x, v, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT |
                                     (writable ? PyBUF_WRITABLE : 0)) < 0) {
        if (!PyErr_ExceptionMatches(PyExc_BufferError) &&
            !PyErr_ExceptionMatches(PyExc_ValueError))
            return -1;
        PyErr_Clear(); /* not C-contiguous, or read-only */
        return 0;
    }
    const int kind = v->ndim == 2 ? float_kind(v) : 0;
    if (!kind)
        PyBuffer_Release(v);
    return kind;
}

PyDoc_STRVAR(gemm_doc,
"gemm(trans_a, trans_b, alpha, a, b, out) -> ndarray or None\n\n"
"``alpha * op(a) @ op(b)`` into ``out`` (or a new array when ``out`` is None), or None,\n"
"computing nothing and touching nothing, when the call is not a plain one: ``a`` and ``b``\n"
"C-contiguous 2-D numpy.ndarray (exact type) of one float dtype, inner dimensions equal,\n"
"no dimension 0; ``out`` None or such an array of the product's shape, writeable, aligned\n"
"and not overlapping ``a`` or ``b``; ``trans_a``, ``trans_b`` True or False; ``alpha`` a\n"
"float. ops.matmul makes every other call the long way.");

static PyObject *fc_gemm(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "gemm takes 6 arguments (trans_a, trans_b, alpha, a, b, "
                                      "out), received %zd", nargs);
        return NULL;
    }
    if (!gemm_f32 || !gemm_f64) {
        PyErr_SetString(PyExc_RuntimeError, "fastnn._fastcall is not bound (fastnn's C "
                                            "backend binds it when it loads)");
        return NULL;
    }
    PyObject *const fa = args[0], *const fb = args[1], *const al = args[2];
    PyObject *const a = args[3], *const b = args[4], *const out = args[5];
    if ((fa != Py_True && fa != Py_False) || (fb != Py_True && fb != Py_False) ||
        !PyFloat_CheckExact(al))
        Py_RETURN_NONE;
    const int ta = fa == Py_True, tb = fb == Py_True;
    Py_buffer va, vb, vc;
    const int kind = get_matrix(a, &va, 0);
    if (kind <= 0)
        return kind < 0 ? NULL : Py_NewRef(Py_None);
    int got = get_matrix(b, &vb, 0);
    if (got <= 0) {
        PyBuffer_Release(&va);
        return got < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *result = NULL, *made = NULL;
    const int64_t m = ta ? va.shape[1] : va.shape[0], k = ta ? va.shape[0] : va.shape[1];
    const int64_t k2 = tb ? vb.shape[1] : vb.shape[0], n = tb ? vb.shape[0] : vb.shape[1];
    if (got != kind || k != k2 || !m || !n || !k) {
        result = Py_NewRef(Py_None);
        goto release_ab;
    }
    const size_t item = kind == 1 ? sizeof(float) : sizeof(double);
    if ((uint64_t)m > (uint64_t)PY_SSIZE_T_MAX / item / (uint64_t)n) {
        result = Py_NewRef(Py_None); /* beyond any array: the general path explains */
        goto release_ab;
    }
    PyObject *c = out;
    if (out == Py_None) {
        PyObject *shape = Py_BuildValue("(LL)", (long long)m, (long long)n);
        if (!shape)
            goto release_ab;
        PyObject *call_args[2] = {shape, kind == 1 ? dtype_f32 : dtype_f64};
        made = PyObject_Vectorcall(np_empty, call_args, 2, NULL);
        Py_DECREF(shape);
        if (!made)
            goto release_ab;
        c = made;
    }
    got = get_matrix(c, &vc, 1);
    if (got <= 0) {
        if (got == 0)
            result = Py_NewRef(Py_None);
        goto release_ab;
    }
    if (got != kind || vc.shape[0] != m || vc.shape[1] != n) {
        result = Py_NewRef(Py_None);
        goto release_abc;
    }
    const double alpha = PyFloat_AS_DOUBLE(al); /* (read with the GIL held) */
    for (;;) {
        workspace *w = thread_ws(0);
        if (!w)
            goto release_abc;
        int64_t need;
        PyThreadState *ts = (double)m * (double)n * (double)k >= GIL_FREE_MIN
                                ? PyEval_SaveThread()
                                : NULL;
        if (kind == 1)
            need = gemm_f32(ta, tb, m, n, k, (float)alpha, va.buf,
                            va.shape[1], vb.buf, vb.shape[1], 0.0f, w->p,
                            (int64_t)(w->nbytes / item), vc.buf, n);
        else
            need = gemm_f64(ta, tb, m, n, k, alpha, va.buf, va.shape[1],
                            vb.buf, vb.shape[1], 0.0, w->p, (int64_t)(w->nbytes / item),
                            vc.buf, n);
        if (ts)
            PyEval_RestoreThread(ts);
        if (need < 0) { /* misaligned or overlapping: refused, nothing written */
            result = Py_NewRef(Py_None);
            break;
        }
        if (need == 0) {
            result = Py_NewRef(c);
            break;
        }
        if ((uint64_t)need > SIZE_MAX / item) {
            PyErr_NoMemory();
            break;
        }
        if (!thread_ws((size_t)need * item))
            break;
    }
release_abc:
    PyBuffer_Release(&vc);
release_ab:
    PyBuffer_Release(&vb);
    PyBuffer_Release(&va);
    Py_XDECREF(made);
    return result;
}

PyDoc_STRVAR(bind_doc,
"bind(gemm_f32, gemm_f64, ndarray, empty, float32, float64) -> None\n\n"
"Called once by fastnn's C backend as it loads: the addresses of fastnn._cfastnn's\n"
"fnn_gemm_lwork_f32 and fnn_gemm_lwork_f64 (ints), numpy.ndarray, numpy.empty and the two\n"
"dtypes. Binding again to the same addresses (a re-import) does nothing; to others raises\n"
"RuntimeError.");

static PyObject *fc_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 6) {
        PyErr_Format(PyExc_TypeError, "bind takes 6 arguments, received %zd", nargs);
        return NULL;
    }
    if (!PyLong_Check(args[0]) || !PyLong_Check(args[1]) || !PyType_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "bind expects two int addresses and a type");
        return NULL;
    }
    void *p32 = PyLong_AsVoidPtr(args[0]), *p64 = PyLong_AsVoidPtr(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (!p32 || !p64) {
        PyErr_SetString(PyExc_ValueError, "bind received a null address");
        return NULL;
    }
    if (gemm_f32) { /* a re-import of the C backend (sys.modules cleared) binds again */
        void *o32, *o64;
        memcpy(&o32, &gemm_f32, sizeof o32);
        memcpy(&o64, &gemm_f64, sizeof o64);
        if (o32 == p32 && o64 == p64)
            Py_RETURN_NONE;
        PyErr_SetString(PyExc_RuntimeError, "fastnn._fastcall is already bound to other "
                                            "addresses");
        return NULL;
    }
    ndarray_type = (PyTypeObject *)Py_NewRef(args[2]);
    np_empty = Py_NewRef(args[3]);
    dtype_f32 = Py_NewRef(args[4]);
    dtype_f64 = Py_NewRef(args[5]);
    /* (function pointers from object pointers: POSIX guarantees the round trip, and
     * fastnn's platforms have one pointer size) */
    memcpy(&gemm_f64, &p64, sizeof p64);
    memcpy(&gemm_f32, &p32, sizeof p32);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(ws_doc,
"workspace_nbytes() -> int\n\n"
"The bytes of this thread's workspace (0 before its first product): for tests.");

static PyObject *fc_workspace_nbytes(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    const workspace *w = thread_ws(0);
    return w ? PyLong_FromSize_t(w->nbytes) : NULL;
}

static PyMethodDef methods[] = {
    {"gemm", (PyCFunction)(void (*)(void))fc_gemm, METH_FASTCALL, gemm_doc},
    {"bind", (PyCFunction)(void (*)(void))fc_bind, METH_FASTCALL, bind_doc},
    {"workspace_nbytes", fc_workspace_nbytes, METH_NOARGS, ws_doc},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fastnn._fastcall",
                                    "ops.matmul's plain calls through the buffer protocol "
                                    "(see csrc/fastcall.c).", -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastcall(void)
{
    ws_key = PyUnicode_InternFromString("fastnn._fastcall.ws");
    if (!ws_key)
        return NULL;
    return PyModule_Create(&module);
}
