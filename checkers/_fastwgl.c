/* checkers._fastwgl: the Wing-Gong-Lowe search loop of checkers.wgl in C (optional, issue 17).
 *
 * Search(m, order, typ, match, cid, pbit, guard, waits_for, waits_for_done, code, arg_a,
 *        arg_b, inputs, outputs, step, state, has_reads, max_cache, check_every)
 *
 * takes a partition as checkers.wgl._layout lays it out (the same parallel lists; ``order``
 * is the entries in time order, from which the linked list is built here) and runs exactly
 * the search of checkers.wgl._search_python: the same moves in the same order, the same
 * memo (a set of (k, window, pending, state) tuples, filled from the first backtrack on and
 * dropped past max_cache), the same step count and pauses.  Only the representation differs:
 * the linked list, the stack and the two bitsets are C arrays and 64-bit words, and the
 * shipped models' inlined steps compare with PyObject_RichCompare (Python's ``==``/``!=``,
 * no identity shortcut) as the Python loop does; any other step is called as
 * ``step(state, input, output)``.
 *
 * Raises OverflowError when the partition does not fit those words (more than 64 pending
 * ops, or a completed op overlapping more than 63 later-called ones, so that the window
 * could need more bits): the caller then runs the Python loop, which uses Python ints.
 *
 * run() -> None when it paused (every check_every steps, as the Python generator yields),
 *          else (result, entries, blocked, steps, cache_size): result 0 = ok, 1 = illegal;
 *          entries is the longest linearizable prefix (call entries, bottom first) and
 *          blocked the return entry that stopped it (-1 none); for ok both are empty.
 * best()  -> (entries, blocked, steps, cache_size) so far, for an abandoned search.
 *
 * fields(ops, Operation) -> (inputs, outputs, calls, return_times) | None
 *   the four fields of every op, read in one pass from the slots of checkers.model.Operation
 *   (as ``op.input`` etc. would); None when an item is not exactly an Operation or a slot is
 *   unset, and the caller reads them in Python.
 * read_fields(ops, Operation, kind_read, unknown)
 *   -> (kept, inputs, outputs, calls, return_times, reads) | None
 *   the same for a model whose reads are the ops with ``input[0] == kind_read`` (the shipped
 *   models' is_read), leaving out the reads whose output is ``unknown`` as _layout does:
 *   ``kept`` is the positions of the ops kept, or None when all are; ``reads`` the truth of
 *   ``input[0] == kind_read`` per op kept.
 *
 * Plain CPython C API, no other dependency.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif

/* Inline step codes: must match checkers.wgl (_GENERIC, _READ_EQ, ...). */
enum { C_GENERIC, C_READ_EQ, C_SET_A, C_CAS_TRUE, C_CAS_FALSE, C_APPEND_A, C_SET_NONE };

typedef struct {
    int32_t entry;
    Py_ssize_t k;
    uint64_t window;
    uint64_t pending;
    PyObject *state; /* owned */
} Frame;

typedef struct {
    PyObject_HEAD
    Py_ssize_t m;
    int32_t *nxt, *prv, *typ, *match, *cid, *code, *waits_for_done;
    int8_t *pidx;      /* pending op's bit index, -1 for a completed op */
    int8_t *waits_idx; /* bit index of the pending op that must go first, -1 none */
    uint8_t *guard;
    PyObject *arg_a, *arg_b, *inputs, *outputs, *step, *cache; /* lists, callable, set */
    /* search state */
    PyObject *state; /* owned */
    Py_ssize_t k;
    uint64_t window, pending;
    Frame *stack;
    Py_ssize_t depth, capacity;
    int32_t *best;      /* entries of the longest prefix seen */
    Py_ssize_t best_len, agree; /* best_len = -1 before any; agree: stack[:agree] == best[:agree] */
    int32_t best_blocked;
    int remembering, want, start_want, resuming, finished;
    int32_t entry, first_update;
    uint64_t steps, mask;
    Py_ssize_t max_cache;
} SearchObject;

static void
search_dealloc(SearchObject *self)
{
    for (Py_ssize_t i = 0; i < self->depth; i++)
        Py_XDECREF(self->stack[i].state);
    PyMem_Free(self->stack);
    PyMem_Free(self->best);
    PyMem_Free(self->nxt);
    PyMem_Free(self->prv);
    PyMem_Free(self->typ);
    PyMem_Free(self->match);
    PyMem_Free(self->cid);
    PyMem_Free(self->code);
    PyMem_Free(self->waits_for_done);
    PyMem_Free(self->pidx);
    PyMem_Free(self->waits_idx);
    PyMem_Free(self->guard);
    Py_XDECREF(self->arg_a);
    Py_XDECREF(self->arg_b);
    Py_XDECREF(self->inputs);
    Py_XDECREF(self->outputs);
    Py_XDECREF(self->step);
    Py_XDECREF(self->cache);
    Py_XDECREF(self->state);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A list of ints into a new int32 array of exactly ``n`` items. */
static int32_t *
int_array(PyObject *list, Py_ssize_t n, const char *name)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) {
        PyErr_Format(PyExc_ValueError, "%s: a list of %zd ints expected", name, n);
        return NULL;
    }
    int32_t *out = PyMem_Malloc(sizeof(int32_t) * (size_t)(n ? n : 1));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PyList_GET_ITEM(list, i));
        if (v == -1 && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
        if (v < INT32_MIN || v > INT32_MAX) {
            PyMem_Free(out);
            PyErr_Format(PyExc_OverflowError, "%s: value out of range", name);
            return NULL;
        }
        out[i] = (int32_t)v;
    }
    return out;
}

/* A list of single-bit ints (or 0) into bit indices (-1 for 0); OverflowError past bit 63. */
static int8_t *
bit_array(PyObject *list, Py_ssize_t n, const char *name)
{
    if (!PyList_Check(list) || PyList_GET_SIZE(list) != n) {
        PyErr_Format(PyExc_ValueError, "%s: a list of %zd ints expected", name, n);
        return NULL;
    }
    int8_t *out = PyMem_Malloc((size_t)(n ? n : 1));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned long long v = PyLong_AsUnsignedLongLong(PyList_GET_ITEM(list, i));
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            PyMem_Free(out);
            return NULL;
        }
        if (v & (v - 1)) {
            PyMem_Free(out);
            PyErr_Format(PyExc_ValueError, "%s: not a single bit", name);
            return NULL;
        }
        out[i] = v ? (int8_t)__builtin_ctzll(v) : -1;
    }
    return out;
}

static PyObject *
search_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Py_ssize_t m, max_cache, check_every;
    PyObject *order, *typ, *match, *cid, *pbit, *guard, *waits_for, *waits_for_done, *code;
    PyObject *arg_a, *arg_b, *inputs, *outputs, *step, *state;
    int has_reads;
    if (kwds != NULL && PyDict_GET_SIZE(kwds)) {
        PyErr_SetString(PyExc_TypeError, "Search() takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "nO!O!O!O!O!O!O!O!O!O!O!O!O!OOpnn:Search", &m, &PyList_Type, &order,
                          &PyList_Type, &typ, &PyList_Type, &match, &PyList_Type, &cid, &PyList_Type,
                          &pbit, &PyList_Type, &guard, &PyList_Type, &waits_for, &PyList_Type,
                          &waits_for_done, &PyList_Type, &code, &PyList_Type, &arg_a, &PyList_Type,
                          &arg_b, &PyList_Type, &inputs, &PyList_Type, &outputs, &step, &state,
                          &has_reads, &max_cache, &check_every))
        return NULL;
    if (m <= 0 || m > (INT32_MAX - 2) / 2) {
        PyErr_SetString(PyExc_OverflowError, "partition size out of range");
        return NULL;
    }
    if (check_every <= 0 || (check_every & (check_every - 1))) {
        PyErr_SetString(PyExc_ValueError, "check_every must be a power of two");
        return NULL;
    }
    if (PyList_GET_SIZE(arg_a) != m || PyList_GET_SIZE(arg_b) != m || PyList_GET_SIZE(inputs) != m ||
        PyList_GET_SIZE(outputs) != m) {
        PyErr_SetString(PyExc_ValueError, "per-op lists must have m items");
        return NULL;
    }
    SearchObject *self = (SearchObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->m = m;
    self->best_len = -1;
    self->best_blocked = -1;
    Py_ssize_t n_entries = 2 * m + 2, head = 2 * m, tail = 2 * m + 1;
    if ((self->typ = int_array(typ, n_entries, "typ")) == NULL ||
        (self->match = int_array(match, m, "match")) == NULL ||
        (self->cid = int_array(cid, m, "cid")) == NULL ||
        (self->code = int_array(code, m, "code")) == NULL ||
        (self->waits_for_done = int_array(waits_for_done, m, "waits_for_done")) == NULL ||
        (self->pidx = bit_array(pbit, m, "pbit")) == NULL ||
        (self->waits_idx = bit_array(waits_for, m, "waits_for")) == NULL)
        goto fail;
    if (PyList_GET_SIZE(guard) != m) {
        PyErr_SetString(PyExc_ValueError, "guard must have m items");
        goto fail;
    }
    self->guard = PyMem_Malloc((size_t)m);
    self->nxt = PyMem_Malloc(sizeof(int32_t) * (size_t)n_entries);
    self->prv = PyMem_Malloc(sizeof(int32_t) * (size_t)n_entries);
    self->capacity = 64;
    self->stack = PyMem_Malloc(sizeof(Frame) * (size_t)self->capacity);
    self->best = PyMem_Malloc(sizeof(int32_t) * (size_t)m);
    if (!self->guard || !self->nxt || !self->prv || !self->stack || !self->best) {
        PyErr_NoMemory();
        goto fail;
    }
    for (Py_ssize_t i = 0; i < m; i++) {
        int g = PyObject_IsTrue(PyList_GET_ITEM(guard, i));
        if (g < 0)
            goto fail;
        self->guard[i] = (uint8_t)g;
    }
    /* The linked list, as _links builds it from the entries in time order; on the way, the
     * widest window the search can need: an op is linearized only ahead of every return left
     * in the list, so while op k (completed id) is the lowest not linearized, only ops called
     * before k's return can be, and their window bit is below (completed calls before k's
     * return) - k. */
    Py_ssize_t n_order = PyList_GET_SIZE(order), before = head, seen = 0, widest = 0;
    for (Py_ssize_t j = 0; j < n_order; j++) {
        long e = PyLong_AsLong(PyList_GET_ITEM(order, j));
        if (e == -1 && PyErr_Occurred())
            goto fail;
        if (e < 0 || e >= 2 * m) {
            PyErr_SetString(PyExc_ValueError, "order: entry out of range");
            goto fail;
        }
        self->nxt[before] = (int32_t)e;
        self->prv[e] = (int32_t)before;
        before = e;
        if (e < m) {
            if (self->cid[e] >= 0)
                seen++;
        } else {
            Py_ssize_t span = seen - 1 - self->cid[e - m];
            if (span > widest)
                widest = span;
        }
    }
    self->nxt[before] = (int32_t)tail;
    self->prv[tail] = (int32_t)before;
    self->nxt[tail] = (int32_t)tail;
    self->prv[head] = -1;
    if (widest > 63) {
        PyErr_SetString(PyExc_OverflowError, "window wider than 64 bits");
        goto fail;
    }
    Py_INCREF(arg_a);
    self->arg_a = arg_a;
    Py_INCREF(arg_b);
    self->arg_b = arg_b;
    Py_INCREF(inputs);
    self->inputs = inputs;
    Py_INCREF(outputs);
    self->outputs = outputs;
    Py_INCREF(step);
    self->step = step;
    Py_INCREF(state);
    self->state = state;
    if ((self->cache = PySet_New(NULL)) == NULL)
        goto fail;
    self->max_cache = max_cache;
    self->mask = (uint64_t)check_every - 1;
    self->start_want = self->want = has_reads ? 1 : 2;
    self->first_update = -1;
    self->entry = self->nxt[head];
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

/* The memo entry (k, window, pending, state), as the Python loop builds it. */
static PyObject *
memo_key(Py_ssize_t k, uint64_t window, uint64_t pending, PyObject *state)
{
    PyObject *key = PyTuple_New(4);
    if (key == NULL)
        return NULL;
    PyObject *a = PyLong_FromSsize_t(k), *b = PyLong_FromUnsignedLongLong(window),
             *c = PyLong_FromUnsignedLongLong(pending);
    if (a == NULL || b == NULL || c == NULL) {
        Py_XDECREF(a);
        Py_XDECREF(b);
        Py_XDECREF(c);
        Py_DECREF(key);
        return NULL;
    }
    Py_INCREF(state);
    PyTuple_SET_ITEM(key, 0, a);
    PyTuple_SET_ITEM(key, 1, b);
    PyTuple_SET_ITEM(key, 2, c);
    PyTuple_SET_ITEM(key, 3, state);
    return key;
}

/* Add to the memo; 1 if it was new, 0 if not, -1 on error. */
static int
memo_add(SearchObject *self, Py_ssize_t k, uint64_t window, uint64_t pending, PyObject *state)
{
    PyObject *key = memo_key(k, window, pending, state);
    if (key == NULL)
        return -1;
    Py_ssize_t size = PySet_GET_SIZE(self->cache);
    int rc = PySet_Add(self->cache, key);
    Py_DECREF(key);
    if (rc < 0)
        return -1;
    return PySet_GET_SIZE(self->cache) != size;
}

static PyObject *
entries_list(SearchObject *self)
{
    Py_ssize_t n = self->best_len < 0 ? 0 : self->best_len;
    PyObject *list = PyList_New(n);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(self->best[i]);
        if (v == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, v);
    }
    return list;
}

static PyObject *
finish(SearchObject *self, int illegal)
{
    self->finished = 1;
    if (!illegal)
        return Py_BuildValue("(i[]inn)", 0, -1, (Py_ssize_t)self->steps, PySet_GET_SIZE(self->cache));
    PyObject *entries = entries_list(self);
    if (entries == NULL)
        return NULL;
    return Py_BuildValue("(iNinn)", 1, entries, self->best_len < 0 ? -1 : (int)self->best_blocked,
                         (Py_ssize_t)self->steps, PySet_GET_SIZE(self->cache));
}

/* ``a OP b`` as Python evaluates it, then its truth: 1, 0 or -1 on error. */
static int
compare(PyObject *a, PyObject *b, int op)
{
    PyObject *r = PyObject_RichCompare(a, b, op);
    if (r == NULL)
        return -1;
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

static PyObject *
search_run(SearchObject *self, PyObject *Py_UNUSED(ignored))
{
    if (self->finished) {
        PyErr_SetString(PyExc_RuntimeError, "the search has finished");
        return NULL;
    }
    const Py_ssize_t m = self->m;
    const int32_t head = (int32_t)(2 * m);
    int32_t *nxt = self->nxt, *prv = self->prv, *typ = self->typ, *match = self->match, *cid = self->cid;
    int32_t entry = self->entry;
    Py_ssize_t k = self->k;
    uint64_t window = self->window, pending = self->pending;
    int want = self->want;
    int32_t first_update = self->first_update;
    uint64_t steps = self->steps;
    PyObject *result = NULL;

#define SAVE()                                                                                      \
    do {                                                                                            \
        self->entry = entry;                                                                        \
        self->k = k;                                                                                \
        self->window = window;                                                                      \
        self->pending = pending;                                                                    \
        self->want = want;                                                                          \
        self->first_update = first_update;                                                          \
        self->steps = steps;                                                                        \
    } while (0)

    for (;;) {
        if (self->resuming) {
            /* what the Python loop does right after its yield returns */
            self->resuming = 0;
            if (PySet_GET_SIZE(self->cache) > self->max_cache)
                PySet_Clear(self->cache);
        } else {
            steps++;
            if (!(steps & self->mask)) {
                self->resuming = 1;
                SAVE();
                Py_RETURN_NONE;
            }
        }
        int t = typ[entry];
        if (t == want) {
            if (self->guard[entry]) {
                int w = self->waits_idx[entry];
                if (w >= 0 && !((pending >> w) & 1)) {
                    entry = nxt[entry];
                    continue;
                }
                Py_ssize_t d = self->waits_for_done[entry];
                if (d >= k && !(d - k < 64 && ((window >> (d - k)) & 1))) {
                    entry = nxt[entry];
                    continue;
                }
            }
            PyObject *state = self->state, *new_state;
            int legal;
            switch (self->code[entry]) {
            case C_READ_EQ:
                legal = compare(PyList_GET_ITEM(self->outputs, entry), state, Py_EQ);
                new_state = state;
                Py_INCREF(new_state);
                break;
            case C_SET_A:
                legal = 1;
                new_state = PyList_GET_ITEM(self->arg_a, entry);
                Py_INCREF(new_state);
                break;
            case C_CAS_TRUE:
                legal = compare(state, PyList_GET_ITEM(self->arg_a, entry), Py_EQ);
                new_state = PyList_GET_ITEM(self->arg_b, entry);
                Py_INCREF(new_state);
                break;
            case C_CAS_FALSE:
                legal = compare(state, PyList_GET_ITEM(self->arg_a, entry), Py_NE);
                new_state = state;
                Py_INCREF(new_state);
                break;
            case C_APPEND_A:
                new_state = PyNumber_Add(state, PyList_GET_ITEM(self->arg_a, entry));
                legal = new_state == NULL ? -1 : 1;
                break;
            case C_SET_NONE:
                legal = 1;
                new_state = Py_None;
                Py_INCREF(new_state);
                break;
            default: {
                PyObject *res = PyObject_CallFunctionObjArgs(self->step, state,
                                                             PyList_GET_ITEM(self->inputs, entry),
                                                             PyList_GET_ITEM(self->outputs, entry), NULL);
                if (res == NULL) {
                    legal = -1;
                    new_state = NULL;
                    break;
                }
                PyObject *pair = PySequence_Tuple(res);
                Py_DECREF(res);
                if (pair == NULL) {
                    legal = -1;
                    new_state = NULL;
                    break;
                }
                if (PyTuple_GET_SIZE(pair) != 2) {
                    PyErr_Format(PyExc_ValueError, "a model's step must return (legal, new_state), got %zd values",
                                 PyTuple_GET_SIZE(pair));
                    Py_DECREF(pair);
                    legal = -1;
                    new_state = NULL;
                    break;
                }
                legal = PyObject_IsTrue(PyTuple_GET_ITEM(pair, 0));
                new_state = PyTuple_GET_ITEM(pair, 1);
                Py_INCREF(new_state);
                Py_DECREF(pair);
            }
            }
            if (legal < 0) {
                Py_XDECREF(new_state);
                goto error;
            }
            if (legal) {
                Py_ssize_t i = cid[entry], nk = k;
                uint64_t nw = window, npend = pending;
                if (i < 0) {
                    npend = pending | ((uint64_t)1 << self->pidx[entry]);
                } else if (i == k) {
                    uint64_t x = window | 1;
                    int ones = ~x ? __builtin_ctzll(~x) : 64; /* trailing ones of x */
                    nk = k + ones;
                    nw = ones == 64 ? 0 : x >> ones;
                } else {
                    if (i - k > 63) { /* ruled out by the width check in Search() */
                        Py_DECREF(new_state);
                        PyErr_SetString(PyExc_RuntimeError, "window overflow");
                        goto error;
                    }
                    nw = window | ((uint64_t)1 << (i - k));
                }
                int fresh = 1;
                if (self->remembering) {
                    fresh = memo_add(self, nk, nw, npend, new_state);
                    if (fresh < 0) {
                        Py_DECREF(new_state);
                        goto error;
                    }
                }
                if (fresh) {
                    if (self->depth == self->capacity) {
                        Py_ssize_t cap = self->capacity * 2;
                        Frame *grown = PyMem_Realloc(self->stack, sizeof(Frame) * (size_t)cap);
                        if (grown == NULL) {
                            Py_DECREF(new_state);
                            PyErr_NoMemory();
                            goto error;
                        }
                        self->stack = grown;
                        self->capacity = cap;
                    }
                    Frame *f = &self->stack[self->depth++];
                    f->entry = entry;
                    f->state = state; /* the frame takes over the reference */
                    f->k = k;
                    f->window = window;
                    f->pending = pending;
                    self->state = new_state;
                    k = nk;
                    window = nw;
                    pending = npend;
                    /* lift: unlink the call, then its return */
                    int32_t p = prv[entry], q = nxt[entry];
                    nxt[p] = q;
                    prv[q] = p;
                    int32_t r = match[entry];
                    if (r >= 0) {
                        p = prv[r];
                        q = nxt[r];
                        nxt[p] = q;
                        prv[q] = p;
                    }
                    entry = nxt[head];
                    want = self->start_want;
                    first_update = -1;
                    continue;
                }
            }
            Py_DECREF(new_state);
            entry = nxt[entry];
        } else if (t == 0) {
            if (want == 1) {
                if (first_update >= 0)
                    entry = first_update;
                want = 2;
                continue;
            }
            /* A return whose operation is not linearized yet: a dead end. */
            Py_ssize_t depth = self->depth;
            if (depth > self->best_len) {
                /* the longest prefix so far: copy only where it differs from the last one */
                Py_ssize_t from = self->best_len < 0 ? 0 : self->agree;
                for (Py_ssize_t j = from; j < depth; j++)
                    self->best[j] = self->stack[j].entry;
                self->best_len = depth;
                self->agree = depth;
                self->best_blocked = entry;
            }
            if (!self->remembering && depth > 0) {
                /* The first backtrack: the memo gets this configuration and every one on the
                 * stack but the initial one, as if each had gone in when it was reached. */
                self->remembering = 1;
                if (memo_add(self, k, window, pending, self->state) < 0)
                    goto error;
                for (Py_ssize_t j = depth - 1; j >= 1; j--) {
                    Frame *f = &self->stack[j];
                    if (memo_add(self, f->k, f->window, f->pending, f->state) < 0)
                        goto error;
                }
            }
            if (depth == 0) {
                SAVE();
                return finish(self, 1);
            }
            for (;;) {
                Frame *f = &self->stack[--self->depth];
                if (self->agree > self->depth)
                    self->agree = self->depth;
                entry = f->entry;
                Py_DECREF(self->state);
                self->state = f->state;
                f->state = NULL;
                k = f->k;
                window = f->window;
                pending = f->pending;
                /* unlift in reverse order: the return, then the call */
                int32_t r = match[entry];
                if (r >= 0) {
                    nxt[prv[r]] = r;
                    prv[nxt[r]] = r;
                }
                nxt[prv[entry]] = entry;
                prv[nxt[entry]] = entry;
                /* a read that fitted where it was need not be tried later (see wgl.py) */
                if (typ[entry] != 1)
                    break;
                if (self->depth == 0) {
                    SAVE();
                    return finish(self, 1);
                }
            }
            entry = nxt[entry];
            want = 2;
        } else if (t == 3) {
            SAVE();
            return finish(self, 0);
        } else {
            if (first_update < 0)
                first_update = entry;
            entry = nxt[entry];
        }
    }
error:
    SAVE();
    self->finished = 1;
    return result;
#undef SAVE
}

static PyObject *
search_best(SearchObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *entries = entries_list(self);
    if (entries == NULL)
        return NULL;
    return Py_BuildValue("(Ninn)", entries, self->best_len < 0 ? -1 : (int)self->best_blocked,
                         (Py_ssize_t)self->steps, PySet_GET_SIZE(self->cache));
}

/* The byte offset of the slot ``name`` of ``type`` (a member descriptor), or -1. */
static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (descr == NULL || !Py_IS_TYPE(descr, &PyMemberDescr_Type))
        return -1;
    PyMemberDef *def = ((PyMemberDescrObject *)descr)->d_member;
    if (def->type != Py_T_OBJECT_EX)
        return -1;
    return def->offset;
}

/* One pass over OPS (exactly op_type objects) reading the four fields of each from its slots.
 * KIND_READ NULL: every op is kept, lists[0..3] filled, *kept stays NULL.  Otherwise also
 * lists[4] = the truth of ``input[0] == kind_read`` per op kept, the reads whose output is
 * UNKNOWN are left out, and *kept is the positions kept (NULL when all are).
 * Returns 1 done (lists owned by the caller, sized to the ops kept), 0 not ours (an item is
 * not exactly op_type, a slot is unset, op_type has no such slots), -1 error; on 0 and -1
 * nothing is left to free. */
static int
take_fields(PyObject *ops, PyTypeObject *op_type, PyObject *kind_read, PyObject *unknown,
            PyObject *lists[5], PyObject **kept, const char *what)
{
    static const char *names[4] = {"input", "output", "call", "return_time"};
    Py_ssize_t offsets[4];
    const int n_lists = kind_read == NULL ? 4 : 5;
    *kept = NULL;
    for (int f = 0; f < 5; f++)
        lists[f] = NULL;
    for (int f = 0; f < 4; f++)
        if ((offsets[f] = slot_offset(op_type, names[f])) < 0)
            return 0;
    PyObject *seq = PySequence_Fast(ops, what);
    if (seq == NULL)
        return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), kept_n = 0;
    PyObject **items = PySequence_Fast_ITEMS(seq);
    PyObject *zero = NULL;
    int rc = -1;
    for (int f = 0; f < n_lists; f++)
        if ((lists[f] = PyList_New(n)) == NULL)
            goto out;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *op = items[i];
        if (Py_TYPE(op) != op_type) {
            rc = 0;
            goto out;
        }
        PyObject *v[4];
        for (int f = 0; f < 4; f++)
            if ((v[f] = *(PyObject **)((char *)op + offsets[f])) == NULL) {
                rc = 0;
                goto out;
            }
        int read = 0;
        if (kind_read != NULL) {
            /* input[0] == kind_read, as _read_flags evaluates it */
            PyObject *first;
            if (PyTuple_CheckExact(v[0]) && PyTuple_GET_SIZE(v[0]) > 0) {
                first = PyTuple_GET_ITEM(v[0], 0);
                Py_INCREF(first);
            } else {
                if (zero == NULL && (zero = PyLong_FromLong(0)) == NULL)
                    goto out;
                if ((first = PyObject_GetItem(v[0], zero)) == NULL)
                    goto out;
            }
            read = compare(first, kind_read, Py_EQ);
            Py_DECREF(first);
            if (read < 0)
                goto out;
            if (read && v[1] == unknown) { /* a read of unknown value: left out */
                if (*kept == NULL) {
                    if ((*kept = PyList_New(0)) == NULL)
                        goto out;
                    for (Py_ssize_t j = 0; j < i; j++) {
                        PyObject *pos = PyLong_FromSsize_t(j);
                        if (pos == NULL || PyList_Append(*kept, pos) < 0) {
                            Py_XDECREF(pos);
                            goto out;
                        }
                        Py_DECREF(pos);
                    }
                }
                continue;
            }
            if (*kept != NULL) {
                PyObject *pos = PyLong_FromSsize_t(i);
                if (pos == NULL || PyList_Append(*kept, pos) < 0) {
                    Py_XDECREF(pos);
                    goto out;
                }
                Py_DECREF(pos);
            }
            PyObject *flag = read ? Py_True : Py_False;
            Py_INCREF(flag);
            PyList_SET_ITEM(lists[4], kept_n, flag);
        }
        for (int f = 0; f < 4; f++) {
            Py_INCREF(v[f]);
            PyList_SET_ITEM(lists[f], kept_n, v[f]);
        }
        kept_n++;
    }
    rc = 1;
out:
    Py_XDECREF(zero);
    Py_DECREF(seq);
    if (rc == 1) {
        for (int f = 0; f < n_lists; f++)
            Py_SET_SIZE(lists[f], kept_n); /* the slots past kept_n were never filled */
        return 1;
    }
    Py_CLEAR(*kept);
    for (int f = 0; f < 5; f++)
        Py_CLEAR(lists[f]);
    return rc;
}

static PyObject *
fields(PyObject *module, PyObject *args)
{
    PyObject *ops, *lists[5], *kept;
    PyTypeObject *op_type;
    if (!PyArg_ParseTuple(args, "OO!:fields", &ops, &PyType_Type, &op_type))
        return NULL;
    int rc = take_fields(ops, op_type, NULL, NULL, lists, &kept, "fields: a sequence of operations expected");
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    return Py_BuildValue("(NNNN)", lists[0], lists[1], lists[2], lists[3]);
}

static PyObject *
read_fields(PyObject *module, PyObject *args)
{
    PyObject *ops, *kind_read, *unknown, *lists[5], *kept;
    PyTypeObject *op_type;
    if (!PyArg_ParseTuple(args, "OO!OO:read_fields", &ops, &PyType_Type, &op_type, &kind_read, &unknown))
        return NULL;
    int rc = take_fields(ops, op_type, kind_read, unknown, lists, &kept,
                         "read_fields: a sequence of operations expected");
    if (rc < 0)
        return NULL;
    if (rc == 0)
        Py_RETURN_NONE;
    if (kept == NULL) {
        Py_INCREF(Py_None);
        kept = Py_None;
    }
    return Py_BuildValue("(NNNNNN)", kept, lists[0], lists[1], lists[2], lists[3], lists[4]);
}

static PyMethodDef module_methods[] = {
    {"fields", fields, METH_VARARGS, "(inputs, outputs, calls, return_times) of Operations, or None."},
    {"read_fields", read_fields, METH_VARARGS,
     "(kept, inputs, outputs, calls, return_times, reads) of Operations, reads of unknown value left out."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef search_methods[] = {
    {"run", (PyCFunction)search_run, METH_NOARGS,
     "Search on; None at a pause, else (result, entries, blocked, steps, cache_size)."},
    {"best", (PyCFunction)search_best, METH_NOARGS,
     "(entries, blocked, steps, cache_size) of the longest prefix so far."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject SearchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "checkers._fastwgl.Search",
    .tp_basicsize = sizeof(SearchObject),
    .tp_dealloc = (destructor)search_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One partition's Wing-Gong-Lowe search (see the module's documentation).",
    .tp_methods = search_methods,
    .tp_new = search_new,
};

static struct PyModuleDef fastwgl_module = {
    PyModuleDef_HEAD_INIT, "checkers._fastwgl",
    "The Wing-Gong-Lowe search loop of checkers.wgl in C (optional).", -1, module_methods,
};

PyMODINIT_FUNC
PyInit__fastwgl(void)
{
    if (PyType_Ready(&SearchType) < 0)
        return NULL;
    PyObject *mod = PyModule_Create(&fastwgl_module);
    if (mod == NULL)
        return NULL;
    Py_INCREF(&SearchType);
    if (PyModule_AddObject(mod, "Search", (PyObject *)&SearchType) < 0) {
        Py_DECREF(&SearchType);
        Py_DECREF(mod);
        return NULL;
    }
    return mod;
}
