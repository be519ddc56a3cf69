/* prctl(2) and capset(2) for engine.runtime.privcalls: the two Linux calls the standard
 * library does not wrap.  engine/runtime/privcalls.py keeps a ctypes version of both as the
 * reference for a tree built without a compiler; this one exists because ctypes (with libffi)
 * is about 2 ms of every instance's start before its fork and 0.3 MiB of its memory
 * (docs/performance.md, "Without ctypes").  Both raise OSError with the call's errno. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <linux/capability.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static PyObject *pc_prctl(PyObject *self, PyObject *args)
{
    int option;
    unsigned long arg2;
    (void)self;
    if (!PyArg_ParseTuple(args, "ik", &option, &arg2))
        return NULL;
    int r = prctl(option, arg2, 0UL, 0UL, 0UL);
    if (r == -1)
        return PyErr_SetFromErrno(PyExc_OSError);
    return PyLong_FromLong(r);
}

static PyObject *pc_capset(PyObject *self, PyObject *args)
{
    unsigned long long sets[3]; /* effective, permitted, inheritable: 64-bit masks */
    (void)self;
    if (!PyArg_ParseTuple(args, "KKK", &sets[0], &sets[1], &sets[2]))
        return NULL;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[2]; /* version 3: two 32-bit words per set */
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)(sets[0] >> (32 * i));
        data[i].permitted = (uint32_t)(sets[1] >> (32 * i));
        data[i].inheritable = (uint32_t)(sets[2] >> (32 * i));
    }
    if (syscall(SYS_capset, &header, data) != 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    Py_RETURN_NONE;
}

static PyMethodDef pc_methods[] = {
    {"prctl", pc_prctl, METH_VARARGS,
     "prctl(option, arg2) -> int: prctl(2) with arguments 3 to 5 zero; OSError on failure."},
    {"capset", pc_capset, METH_VARARGS,
     "capset(effective, permitted, inheritable): this thread's capability sets (64-bit "
     "masks); OSError on failure."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef pc_module = {
    PyModuleDef_HEAD_INIT, "_privcalls",
    "prctl(2) and capset(2) (engine.runtime.privcalls).", -1, pc_methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__privcalls(void)
{
    return PyModule_Create(&pc_module);
}
