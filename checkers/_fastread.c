/* checkers._fastread: the compiled reader of JSONL histories (optional, issue 17).
 *
 * read(text, Op, line_op) -> list[Op] | None
 *
 * Reads every line of ``text`` (split at "\n") that has the shape our HistoryWriter writes:
 *
 *   {"index":INT,"time":INT,"process":INT|STR,"type":"invoke|ok|fail|info","f":STR
 *    [,"key":V][,"value":V][,"error":V][,STR:V]...}
 *
 * with no white space, where V is null, true, false, an integer, a string without escapes
 * or control characters, or an array or object of such values; and builds its Op directly
 * (the type's tp_alloc, then the nine slots stored), exactly as checkers.history._op_of
 * builds it from json.loads of the line: key and value frozen (arrays become tuples, not
 * inside objects), error and extra fields as JSON reads them, extra a new dict per op.
 *
 * Any other line (spaces, floats, escapes, another field order, a known field twice, a
 * bad type, blank or cut-off lines, nesting deeper than MAX_DEPTH, huge integers...) is
 * handed to ``line_op(line, number)``, which reads it as the general Python path does and
 * returns its Op, or None when the general path must decide (an error, a blank or torn
 * line): then read returns None and the caller reads the whole text in Python, so errors
 * and odd lines keep exactly one implementation.  Text that is not encodable as UTF-8
 * (lone surrogates) also returns None.
 *
 * Plain CPython C API, no other dependency.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>

#define N_FIELDS 9
#define MAX_DEPTH 64
#define CACHE_SLOTS 4096 /* power of two */
#define CACHE_MAX_FILL 3072
#define CACHE_MAX_LEN 48
#define SMALL_ARRAY 16

#ifndef Py_T_OBJECT_EX
#define Py_T_OBJECT_EX T_OBJECT_EX
#endif
#ifndef Py_READONLY
#define Py_READONLY READONLY
#endif

typedef unsigned char uchar;

static const char *const FIELD_NAMES[N_FIELDS] = {"index", "time", "process", "type", "f",
                                                   "key",   "value", "error", "extra"};
enum { F_INDEX, F_TIME, F_PROCESS, F_TYPE, F_F, F_KEY, F_VALUE, F_ERROR, F_EXTRA };

/* The four op types, interned once (the same objects as the Python literals). */
static PyObject *s_invoke, *s_ok, *s_fail, *s_info;

typedef struct {
    const uchar *s;
    Py_ssize_t n;
    size_t h;
    PyObject *obj;
} Slot;

typedef struct {
    const uchar *end; /* end of the line being read */
    Slot *cache;      /* short strings seen in this text: raw bytes -> str */
    Py_ssize_t fill;
    int depth;
} Reader;

/* ---- strings ---------------------------------------------------------------------- */

static PyObject *
new_str(const uchar *s, Py_ssize_t n, int ascii)
{
    if (ascii) {
        PyObject *o = PyUnicode_New(n, 127);
        if (o != NULL && n > 0) {
            memcpy(PyUnicode_1BYTE_DATA(o), s, (size_t)n);
        }
        return o;
    }
    return PyUnicode_DecodeUTF8((const char *)s, n, "strict");
}

static PyObject *
make_str(Reader *r, const uchar *s, Py_ssize_t n, int ascii)
{
    if (n > CACHE_MAX_LEN) {
        return new_str(s, n, ascii);
    }
    size_t h = 1469598103934665603ULL; /* FNV-1a */
    for (Py_ssize_t i = 0; i < n; i++) {
        h = (h ^ s[i]) * 1099511628211ULL;
    }
    size_t mask = CACHE_SLOTS - 1, i = h & mask;
    for (;;) {
        Slot *slot = &r->cache[i];
        if (slot->obj == NULL) {
            PyObject *o = new_str(s, n, ascii);
            if (o != NULL && r->fill < CACHE_MAX_FILL) {
                slot->s = s;
                slot->n = n;
                slot->h = h;
                slot->obj = o;
                Py_INCREF(o);
                r->fill++;
            }
            return o;
        }
        if (slot->h == h && slot->n == n && memcmp(slot->s, s, (size_t)n) == 0) {
            Py_INCREF(slot->obj);
            return slot->obj;
        }
        i = (i + 1) & mask;
    }
}

/* A JSON string without escapes or control characters at *pp (which is '"'); NULL
 * without an exception set when the string is not of that kind. */
static PyObject *
parse_str(Reader *r, const uchar **pp)
{
    const uchar *s = *pp + 1, *q = s, *e = r->end;
    int ascii = 1;
    for (; q < e; q++) {
        uchar c = *q;
        if (c == '"') {
            break;
        }
        if (c == '\\' || c < 0x20) {
            return NULL;
        }
        if (c >= 0x80) {
            ascii = 0;
        }
    }
    if (q >= e) {
        return NULL;
    }
    *pp = q + 1;
    return make_str(r, s, q - s, ascii);
}

/* ---- numbers ---------------------------------------------------------------------- */

/* A JSON integer at *pp: -?(0|[1-9][0-9]*).  What may follow it is the caller's to check
 * (a '.', 'e' or another digit is not one of the separators it accepts). */
static PyObject *
parse_int(const uchar **pp, const uchar *e)
{
    const uchar *s = *pp, *q = s;
    int neg = 0;
    if (q < e && *q == '-') {
        neg = 1;
        q++;
    }
    if (q >= e || *q < '0' || *q > '9') {
        return NULL;
    }
    if (*q == '0') {
        q++;
    }
    else {
        while (q < e && *q >= '0' && *q <= '9') {
            q++;
        }
    }
    Py_ssize_t digits = q - s - neg;
    if (digits <= 18) {
        long long v = 0;
        for (const uchar *d = s + neg; d < q; d++) {
            v = v * 10 + (*d - '0');
        }
        *pp = q;
        return PyLong_FromLongLong(neg ? -v : v);
    }
    /* Long integers through int()'s own conversion (and its digit limit: past it, the
     * line goes to json.loads, which refuses it the same way). */
    Py_ssize_t len = q - s;
    char small[64];
    char *buf = len < (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc((size_t)len + 1);
    if (buf == NULL) {
        return PyErr_NoMemory();
    }
    memcpy(buf, s, (size_t)len);
    buf[len] = '\0';
    PyObject *o = PyLong_FromString(buf, NULL, 10);
    if (buf != small) {
        PyMem_Free(buf);
    }
    if (o == NULL) {
        if (PyErr_ExceptionMatches(PyExc_ValueError)) {
            PyErr_Clear();
        }
        return NULL;
    }
    *pp = q;
    return o;
}

/* ---- values ----------------------------------------------------------------------- */

static PyObject *parse_value(Reader *r, const uchar **pp, int frozen);

/* An array; a tuple of frozen values when ``frozen`` (as checkers.history._freeze makes
 * it), else a list (as json.loads makes it). */
static PyObject *
parse_array(Reader *r, const uchar **pp, int frozen)
{
    const uchar *p = *pp + 1, *e = r->end;
    PyObject *small[SMALL_ARRAY];
    PyObject **items = small;
    Py_ssize_t n = 0, cap = SMALL_ARRAY;
    PyObject *result = NULL;
    if (++r->depth > MAX_DEPTH) {
        goto done;
    }
    if (p < e && *p == ']') {
        p++;
    }
    else {
        for (;;) {
            PyObject *v = parse_value(r, &p, frozen);
            if (v == NULL) {
                goto done;
            }
            if (n == cap) {
                PyObject **bigger = PyMem_Malloc(sizeof(PyObject *) * (size_t)cap * 2);
                if (bigger == NULL) {
                    Py_DECREF(v);
                    PyErr_NoMemory();
                    goto done;
                }
                memcpy(bigger, items, sizeof(PyObject *) * (size_t)n);
                if (items != small) {
                    PyMem_Free(items);
                }
                items = bigger;
                cap *= 2;
            }
            items[n++] = v;
            if (p >= e) {
                goto done;
            }
            if (*p == ',') {
                p++;
                continue;
            }
            if (*p == ']') {
                p++;
                break;
            }
            goto done;
        }
    }
    result = frozen ? PyTuple_New(n) : PyList_New(n);
    if (result != NULL) {
        for (Py_ssize_t i = 0; i < n; i++) {
            if (frozen) {
                PyTuple_SET_ITEM(result, i, items[i]);
            }
            else {
                PyList_SET_ITEM(result, i, items[i]);
            }
        }
        n = 0; /* the container owns them now */
        *pp = p;
    }
done:
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_DECREF(items[i]);
    }
    if (items != small) {
        PyMem_Free(items);
    }
    r->depth--;
    return result;
}

/* An object: a dict as json.loads makes it (its values never frozen: _freeze stops at
 * objects; a key given twice keeps its first place and its last value). */
static PyObject *
parse_object(Reader *r, const uchar **pp)
{
    const uchar *p = *pp + 1, *e = r->end;
    PyObject *d = NULL;
    if (++r->depth > MAX_DEPTH) {
        goto fail;
    }
    d = PyDict_New();
    if (d == NULL) {
        goto fail;
    }
    if (p < e && *p == '}') {
        p++;
        goto ok;
    }
    for (;;) {
        if (p >= e || *p != '"') {
            goto fail;
        }
        PyObject *k = parse_str(r, &p);
        if (k == NULL) {
            goto fail;
        }
        if (p >= e || *p != ':') {
            Py_DECREF(k);
            goto fail;
        }
        p++;
        PyObject *v = parse_value(r, &p, 0);
        if (v == NULL) {
            Py_DECREF(k);
            goto fail;
        }
        int rc = PyDict_SetItem(d, k, v);
        Py_DECREF(k);
        Py_DECREF(v);
        if (rc < 0 || p >= e) {
            goto fail;
        }
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p == '}') {
            p++;
            break;
        }
        goto fail;
    }
ok:
    r->depth--;
    *pp = p;
    return d;
fail:
    r->depth--;
    Py_XDECREF(d);
    return NULL;
}

static PyObject *
parse_value(Reader *r, const uchar **pp, int frozen)
{
    const uchar *p = *pp, *e = r->end;
    if (p >= e) {
        return NULL;
    }
    switch (*p) {
    case '"':
        return parse_str(r, pp);
    case '[':
        return parse_array(r, pp, frozen);
    case '{':
        return parse_object(r, pp);
    case 'n':
        if (e - p >= 4 && memcmp(p, "null", 4) == 0) {
            *pp = p + 4;
            Py_RETURN_NONE;
        }
        return NULL;
    case 't':
        if (e - p >= 4 && memcmp(p, "true", 4) == 0) {
            *pp = p + 4;
            Py_RETURN_TRUE;
        }
        return NULL;
    case 'f':
        if (e - p >= 5 && memcmp(p, "false", 5) == 0) {
            *pp = p + 5;
            Py_RETURN_FALSE;
        }
        return NULL;
    default:
        return parse_int(pp, e);
    }
}

/* ---- lines ------------------------------------------------------------------------ */

typedef struct {
    PyTypeObject *type;
    Py_ssize_t offset[N_FIELDS];
} Layout;

/* Where Op keeps each field: its slots' member descriptors, checked to be plain object
 * slots inside the instance, in the order of FIELD_NAMES. */
static int
layout_of(PyObject *optype, Layout *lay)
{
    if (!PyType_Check(optype)) {
        PyErr_SetString(PyExc_TypeError, "read: the second argument must be the Op class");
        return -1;
    }
    PyTypeObject *tp = (PyTypeObject *)optype;
    lay->type = tp;
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *d = PyObject_GetAttrString(optype, FIELD_NAMES[i]);
        if (d == NULL) {
            return -1;
        }
        int good = 0;
        if (Py_IS_TYPE(d, &PyMemberDescr_Type)) {
            PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
            if (m->type == Py_T_OBJECT_EX && !(m->flags & Py_READONLY)
                && m->offset >= (Py_ssize_t)sizeof(PyObject)
                && m->offset + (Py_ssize_t)sizeof(PyObject *) <= tp->tp_basicsize) {
                lay->offset[i] = m->offset;
                good = 1;
            }
        }
        Py_DECREF(d);
        if (!good) {
            PyErr_Format(PyExc_TypeError, "read: %s.%s is not an object slot", tp->tp_name,
                         FIELD_NAMES[i]);
            return -1;
        }
    }
    if (tp->tp_alloc == NULL) {
        PyErr_SetString(PyExc_TypeError, "read: the Op class has no tp_alloc");
        return -1;
    }
    return 0;
}

static int
is_known_field(const uchar *s, Py_ssize_t n)
{
    for (int i = 0; i < F_EXTRA; i++) {
        if ((Py_ssize_t)strlen(FIELD_NAMES[i]) == n && memcmp(FIELD_NAMES[i], s, (size_t)n) == 0) {
            return 1;
        }
    }
    return 0;
}

#define STARTS(lit) ((size_t)(e - p) >= sizeof(lit) - 1 && memcmp(p, lit, sizeof(lit) - 1) == 0)
#define EXPECT(lit)                 \
    do {                            \
        if (!STARTS(lit)) {         \
            goto unrecognized;      \
        }                           \
        p += sizeof(lit) - 1;       \
    } while (0)

/* The Op of one line [p, e); NULL without an exception set when the line is not of the
 * shape this reader takes. */
static PyObject *
parse_line(Reader *r, const Layout *lay, const uchar *p, const uchar *e)
{
    PyObject *v[N_FIELDS] = {NULL};
    r->end = e;
    r->depth = 0;

    EXPECT("{\"index\":");
    if ((v[F_INDEX] = parse_int(&p, e)) == NULL) {
        goto unrecognized;
    }
    EXPECT(",\"time\":");
    if ((v[F_TIME] = parse_int(&p, e)) == NULL) {
        goto unrecognized;
    }
    EXPECT(",\"process\":");
    v[F_PROCESS] = (p < e && *p == '"') ? parse_str(r, &p) : parse_int(&p, e);
    if (v[F_PROCESS] == NULL) {
        goto unrecognized;
    }
    EXPECT(",\"type\":\"");
    if (STARTS("invoke\"")) {
        v[F_TYPE] = s_invoke;
        p += 7;
    }
    else if (STARTS("ok\"")) {
        v[F_TYPE] = s_ok;
        p += 3;
    }
    else if (STARTS("fail\"")) {
        v[F_TYPE] = s_fail;
        p += 5;
    }
    else if (STARTS("info\"")) {
        v[F_TYPE] = s_info;
        p += 5;
    }
    else {
        goto unrecognized;
    }
    Py_INCREF(v[F_TYPE]);
    EXPECT(",\"f\":");
    if (p >= e || *p != '"' || (v[F_F] = parse_str(r, &p)) == NULL) {
        goto unrecognized;
    }
    if (STARTS(",\"key\":")) {
        p += 7;
        if ((v[F_KEY] = parse_value(r, &p, 1)) == NULL) {
            goto unrecognized;
        }
    }
    if (STARTS(",\"value\":")) {
        p += 9;
        if ((v[F_VALUE] = parse_value(r, &p, 1)) == NULL) {
            goto unrecognized;
        }
    }
    if (STARTS(",\"error\":")) {
        p += 9;
        if ((v[F_ERROR] = parse_value(r, &p, 0)) == NULL) {
            goto unrecognized;
        }
    }
    if ((v[F_EXTRA] = PyDict_New()) == NULL) {
        goto unrecognized;
    }
    while (p < e && *p == ',') {
        p++;
        if (p >= e || *p != '"') {
            goto unrecognized;
        }
        const uchar *name = p + 1;
        PyObject *k = parse_str(r, &p);
        if (k == NULL) {
            goto unrecognized;
        }
        /* a known field here is out of order or given twice: json.loads decides */
        if (is_known_field(name, p - 1 - name) || p >= e || *p != ':') {
            Py_DECREF(k);
            goto unrecognized;
        }
        p++;
        PyObject *x = parse_value(r, &p, 0);
        if (x == NULL) {
            Py_DECREF(k);
            goto unrecognized;
        }
        int rc = PyDict_SetItem(v[F_EXTRA], k, x);
        Py_DECREF(k);
        Py_DECREF(x);
        if (rc < 0) {
            goto unrecognized;
        }
    }
    if (p >= e || *p != '}' || p + 1 != e) {
        goto unrecognized;
    }
    for (int i = F_KEY; i <= F_ERROR; i++) {
        if (v[i] == NULL) {
            v[i] = Py_None;
            Py_INCREF(Py_None);
        }
    }
    PyObject *op = lay->type->tp_alloc(lay->type, 0);
    if (op == NULL) {
        goto unrecognized;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        *(PyObject **)((char *)op + lay->offset[i]) = v[i]; /* the op owns them now */
    }
    return op;

unrecognized:
    for (int i = 0; i < N_FIELDS; i++) {
        Py_XDECREF(v[i]);
    }
    return NULL;
}

static PyObject *
fastread_read(PyObject *module, PyObject *args)
{
    PyObject *text, *optype, *line_op;
    if (!PyArg_ParseTuple(args, "UOO:read", &text, &optype, &line_op)) {
        return NULL;
    }
    Layout lay;
    if (layout_of(optype, &lay) < 0) {
        return NULL;
    }
#if PY_VERSION_HEX < 0x030C0000
    if (PyUnicode_READY(text) < 0) {
        return NULL;
    }
#endif
    const uchar *buf;
    Py_ssize_t len;
    PyObject *utf8 = NULL;
    if (PyUnicode_IS_ASCII(text)) {
        buf = (const uchar *)PyUnicode_DATA(text);
        len = PyUnicode_GET_LENGTH(text);
    }
    else {
        utf8 = PyUnicode_AsUTF8String(text);
        if (utf8 == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
                PyErr_Clear(); /* lone surrogates: the Python paths read it */
                Py_RETURN_NONE;
            }
            return NULL;
        }
        buf = (const uchar *)PyBytes_AS_STRING(utf8);
        len = PyBytes_GET_SIZE(utf8);
    }

    Reader r;
    r.fill = 0;
    r.depth = 0;
    r.end = buf;
    r.cache = PyMem_Calloc(CACHE_SLOTS, sizeof(Slot));
    PyObject *ops = NULL;
    if (r.cache == NULL) {
        PyErr_NoMemory();
        goto finish;
    }
    ops = PyList_New(0);
    if (ops == NULL) {
        goto finish;
    }
    const uchar *p = buf, *end = buf + len;
    Py_ssize_t number = 0;
    while (p < end) {
        number++;
        const uchar *nl = memchr(p, '\n', (size_t)(end - p));
        const uchar *line_end = nl != NULL ? nl : end;
        PyObject *op = parse_line(&r, &lay, p, line_end);
        if (op == NULL) {
            if (PyErr_Occurred()) {
                Py_CLEAR(ops);
                goto finish;
            }
            const uchar *next = nl != NULL ? nl + 1 : end;
            PyObject *line = PyUnicode_DecodeUTF8((const char *)p, next - p, "strict");
            if (line == NULL) {
                Py_CLEAR(ops);
                goto finish;
            }
            op = PyObject_CallFunction(line_op, "On", line, number);
            Py_DECREF(line);
            if (op == NULL) {
                Py_CLEAR(ops);
                goto finish;
            }
            if (op == Py_None) { /* the general path decides about the whole text */
                Py_DECREF(ops);
                ops = op;
                goto finish;
            }
        }
        int rc = PyList_Append(ops, op);
        Py_DECREF(op);
        if (rc < 0) {
            Py_CLEAR(ops);
            goto finish;
        }
        p = nl != NULL ? nl + 1 : end;
    }

finish:
    if (r.cache != NULL) {
        for (Py_ssize_t i = 0; i < CACHE_SLOTS; i++) {
            Py_XDECREF(r.cache[i].obj);
        }
        PyMem_Free(r.cache);
    }
    Py_XDECREF(utf8);
    return ops;
}

static PyMethodDef fastread_methods[] = {
    {"read", fastread_read, METH_VARARGS,
     "read(text, Op, line_op) -> list of Op, or None when the Python reader must read the "
     "text (see checkers/_fastread.c)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastread_module = {
    PyModuleDef_HEAD_INIT, "checkers._fastread",
    "The compiled reader of JSONL histories (optional; checkers.history falls back to Python).",
    -1, fastread_methods,
};

PyMODINIT_FUNC
PyInit__fastread(void)
{
    if (s_invoke == NULL) {
        s_invoke = PyUnicode_InternFromString("invoke");
        s_ok = PyUnicode_InternFromString("ok");
        s_fail = PyUnicode_InternFromString("fail");
        s_info = PyUnicode_InternFromString("info");
        if (s_invoke == NULL || s_ok == NULL || s_fail == NULL || s_info == NULL) {
            return NULL;
        }
    }
    return PyModule_Create(&fastread_module);
}
