/*
 * The hot path of MemoryStorage in C: the commonest hits, decided without a
 * Python frame.
 *
 * It repeats `MemoryStorage._hit_one_at` (memory.py) for the cases that make
 * up nearly all traffic on one throttle: a known, unblocked pair whose window
 * is full (refused) or has room (admitted and recorded), and the first hit of
 * a pair while there is room. Every other case calls the Python methods
 * (`_reclaim_due`, `_decide_one`, `_record`, `_hit_one_at`)
 * under the same lock, so the algorithm has one full copy, in Python, and
 * this file repeats only its fast cases. The tests run both against the
 * reference model. `plain_hit` is the body of Throttler.hit in C: its plain
 * call goes to this path over a bare MemoryStorage, else straight to the
 * storage's own hit().
 *
 * State is not copied either: the C code reads and writes the `__slots__` of
 * the Python objects (the storage, its pairs, the throttle, the decision) at
 * the offsets their member descriptors give. `bind()` finds those offsets
 * when memory.py is imported and refuses a class whose layout is not as
 * expected; objects of any other class than the bound ones (a subclass, or a
 * class from before a reload) are left to Python.
 *
 * Units: times are integer microseconds, as in memory.py. Every time a
 * storage keeps is within MAX_CLOCK_US (2**62) of 0, which the entry point
 * checks (memory.checked_time says what is wrong with any other), so the
 * arithmetic below stays within 64 bits. Python ints beyond 64 bits (the
 * storage's "never" sentinels, -2**63 and 2**63) read as LLONG_MIN or
 * LLONG_MAX.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifdef Py_GIL_DISABLED
#error "not written for the free-threaded build: memory.py uses its Python path"
#endif

#define SLOT(obj, offset) (*(PyObject **)((char *)(obj) + (offset)))

/* The longest window or block a throttle may have: 366 days, with room. */
#define MAX_SPAN_US (1LL << 50)

/*
 * What the module found when imported (the lock's methods, the clock) and
 * what bind() found (the classes, their slot offsets, the shared objects).
 */
struct hot_state {
    int bound;
    PyTypeObject *storage_type;
    PyTypeObject *pair_type;
    PyTypeObject *throttle_type;
    PyTypeObject *decision_type;
    PyObject *admitted;
    PyObject *limit_reached;
    PyObject *checked_time; /* memory.checked_time */
    PyObject *hit_one;      /* MemoryStorage.hit_one, as bound */
    long long max_cost;
    long long max_time_us;
    Py_ssize_t max_identifier_length;
    /* MemoryStorage */
    Py_ssize_t s_lock, s_clock, s_monotonic, s_high_water, s_next_due,
        s_clients, s_lru, s_pairs, s_max_pairs;
    /* _Pair */
    Py_ssize_t p_head, p_blocked_until, p_ttl_us;
    /* Throttle */
    Py_ssize_t t_name, t_limit, t_ttl_us, t_block_duration_us;
    /* Decision */
    Py_ssize_t d_allowed, d_retry_after, d_raw;
    /* found at import */
    PyTypeObject *lock_type;
    PyObject *lock_acquire; /* method descriptors of the lock's type */
    PyObject *lock_release;
    PyObject *monotonic_ns;
};

static struct hot_state hot;

static PyObject *str_record, *str_reclaim_due, *str_decide_one, *str_hit_one_at,
    *str_hit, *str_hit_one, *str_hit_checked, *str_now_us,
    *str_clock, *one;

/* ---- reading and writing slots ---------------------------------------- */

static Py_ssize_t
slot_offset(PyTypeObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)type, name);
    if (descr == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Format(PyExc_TypeError, "%s has no slot %s", type->tp_name,
                         name);
        }
        return -1;
    }

    Py_ssize_t offset = -1;
    if (!Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyErr_Format(PyExc_TypeError, "%s.%s is not a __slots__ member",
                     type->tp_name, name);
    }
    else {
        PyMemberDef *member = ((PyMemberDescrObject *)descr)->d_member;
        if (member->type != T_OBJECT_EX || (member->flags & READONLY)) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a writable object slot",
                         type->tp_name, name);
        }
        else {
            offset = member->offset;
        }
    }

    Py_DECREF(descr);
    return offset;
}

/* The slot's value (borrowed), or NULL with AttributeError when unset. */
static inline PyObject *
slot_get(PyObject *obj, Py_ssize_t offset, const char *name)
{
    PyObject *value = SLOT(obj, offset);
    if (value == NULL) {
        PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute '%s'",
                     Py_TYPE(obj)->tp_name, name);
    }
    return value;
}

/* Store a new reference (stolen) in the slot. */
static inline void
slot_put(PyObject *obj, Py_ssize_t offset, PyObject *value)
{
    PyObject *old = SLOT(obj, offset);
    SLOT(obj, offset) = value;
    Py_XDECREF(old);
}

/*
 * An int as a C long long; beyond 64 bits, LLONG_MIN or LLONG_MAX. -1 with
 * an error set for anything but an int.
 */
static inline int
as_i64(PyObject *value, long long *out)
{
    if (!PyLong_Check(value)) {
        PyErr_Format(PyExc_TypeError, "expected an int, got %.100s",
                     Py_TYPE(value)->tp_name);
        return -1;
    }

    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (overflow) {
        v = overflow > 0 ? LLONG_MAX : LLONG_MIN;
    }
    else if (v == -1 && PyErr_Occurred()) {
        return -1;
    }

    *out = v;
    return 0;
}

static inline int
slot_i64(PyObject *obj, Py_ssize_t offset, const char *name, long long *out)
{
    PyObject *value = slot_get(obj, offset, name);
    return value == NULL ? -1 : as_i64(value, out);
}

/* ---- the ring (see core/sliding_window.py) ----------------------------- */

static inline int
item_i64(PyObject *times, Py_ssize_t index, long long *out)
{
    return as_i64(PyList_GET_ITEM(times, index), out);
}

/* bisect_right(times, left, lo, hi); -1 with an error set on a bad item. */
static Py_ssize_t
bisect_right(PyObject *times, long long left, Py_ssize_t lo, Py_ssize_t hi)
{
    while (lo < hi) {
        Py_ssize_t mid = lo + (hi - lo) / 2;
        long long t;
        if (item_i64(times, mid, &t) < 0) {
            return -1;
        }
        if (left < t) {
            hi = mid;
        }
        else {
            lo = mid + 1;
        }
    }
    return lo;
}

/* count_left: how many times of the ring (oldest at head) are <= left. */
static Py_ssize_t
count_left(PyObject *times, Py_ssize_t head, long long left)
{
    Py_ssize_t size = PyList_GET_SIZE(times);
    if (!head) {
        return bisect_right(times, left, 0, size);
    }

    long long first;
    if (item_i64(times, 0, &first) < 0) {
        return -1;
    }

    Py_ssize_t found;
    if (left < first) { /* times[:head] are the newest: all of them later */
        found = bisect_right(times, left, head, size);
        return found < 0 ? -1 : found - head;
    }

    found = bisect_right(times, left, 0, head);
    return found < 0 ? -1 : size - head + found;
}

/* The time at ring position `index` from the start, wrapped once. */
static inline int
ring_at(PyObject *times, Py_ssize_t index, long long *out)
{
    Py_ssize_t size = PyList_GET_SIZE(times);
    return item_i64(times, index >= size ? index - size : index, out);
}

/* ---- the decision ------------------------------------------------------- */

/* make_decision(((name, limit, outcome, ...),), allowed, retry_after) */
static PyObject *
make_decision(PyObject *throttle, PyObject *outcome, long long in_window,
              long long wait, long long expires_in, int admitted)
{
    PyObject *name = slot_get(throttle, hot.t_name, "name");
    PyObject *limit = name ? slot_get(throttle, hot.t_limit, "limit") : NULL;
    if (limit == NULL) {
        return NULL;
    }

    PyObject *raw = PyTuple_New(9);
    if (raw == NULL) {
        return NULL;
    }

    PyObject *recorded = admitted ? Py_True : Py_False;
    PyObject *items[9] = {
        Py_NewRef(name),
        Py_NewRef(limit),
        Py_NewRef(outcome),
        PyLong_FromLongLong(in_window),
        Py_NewRef(one),
        PyLong_FromLongLong(wait),
        PyLong_FromLongLong(expires_in),
        Py_NewRef(recorded),
        Py_NewRef(Py_False),
    };
    int failed = 0;
    for (int i = 0; i < 9; i++) {
        if (items[i] == NULL) {
            failed = 1;
            items[i] = Py_NewRef(Py_None);
        }
        PyTuple_SET_ITEM(raw, i, items[i]);
    }

    PyObject *raws = failed ? NULL : PyTuple_Pack(1, raw);
    Py_DECREF(raw);
    if (raws == NULL) {
        return NULL;
    }

    /* wait < 2**53: exact as a double, then one correctly rounded division,
     * as Python's wait / US_PER_S */
    PyObject *retry_after =
        PyFloat_FromDouble(admitted ? 0.0 : (double)wait / 1e6);
    PyObject *decision =
        retry_after ? hot.decision_type->tp_alloc(hot.decision_type, 0) : NULL;
    if (decision == NULL) {
        Py_XDECREF(retry_after);
        Py_DECREF(raws);
        return NULL;
    }

    slot_put(decision, hot.d_allowed, Py_NewRef(recorded));
    slot_put(decision, hot.d_retry_after, retry_after);
    slot_put(decision, hot.d_raw, raws);
    return decision;
}

/* ---- the storage's lock and clock ------------------------------------- */

static PyObject *
call_lock(PyObject *lock, PyObject *method, const char *name)
{
    if (Py_IS_TYPE(lock, hot.lock_type)) {
        return PyObject_Vectorcall(method, &lock, 1, NULL);
    }
    return PyObject_CallMethod(lock, name, NULL);
}

static int
acquire(PyObject *lock)
{
    PyObject *done = call_lock(lock, hot.lock_acquire, "acquire");
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

static int
release(PyObject *lock)
{
    PyObject *done = call_lock(lock, hot.lock_release, "release");
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/*
 * The time of the hit, as memory.py's _now takes it: `now_us` when given,
 * else the storage's clock; checked by memory.checked_time unless it is an
 * int within max_time_us. A new reference, with its value in *now; NULL
 * with an error set.
 */
static PyObject *
time_of_hit(PyObject *storage, PyObject *now_us, long long *now)
{
    PyObject *reading, *source = str_now_us;
    if (now_us != NULL) {
        reading = Py_NewRef(now_us);
    }
    else {
        PyObject *monotonic = slot_get(storage, hot.s_monotonic, "_monotonic");
        if (monotonic == NULL) {
            return NULL;
        }

        if (monotonic == Py_True) {
            PyObject *ns = PyObject_CallNoArgs(hot.monotonic_ns);
            long long value;
            int failed = ns == NULL || as_i64(ns, &value) < 0;
            Py_XDECREF(ns);
            if (failed) {
                return NULL;
            }
            /* monotonic_ns() // 1000, floor division as Python's */
            *now = value / 1000 - (value % 1000 < 0);
            return PyLong_FromLongLong(*now);
        }

        PyObject *clock = slot_get(storage, hot.s_clock, "_clock");
        reading = clock ? PyObject_CallMethodNoArgs(clock, str_now_us) : NULL;
        source = str_clock;
        if (reading == NULL) {
            return NULL;
        }
    }

    if (PyLong_CheckExact(reading) && as_i64(reading, now) == 0 &&
        *now >= -hot.max_time_us && *now <= hot.max_time_us) {
        return reading;
    }

    PyErr_Clear();
    PyObject *args[2] = {reading, source};
    PyObject *checked = PyObject_Vectorcall(hot.checked_time, args, 2, NULL);
    Py_DECREF(reading);
    if (checked == NULL) {
        return NULL;
    }

    if (!PyLong_CheckExact(checked) || as_i64(checked, now) < 0 ||
        *now < -hot.max_time_us || *now > hot.max_time_us) {
        Py_DECREF(checked);
        PyErr_SetString(PyExc_SystemError, "checked_time gave an unchecked time");
        return NULL;
    }

    return checked;
}

/* ---- the decision of one hit ------------------------------------------ */

static PyObject *
call_method(PyObject *storage, PyObject *name, PyObject *const *args,
            size_t nargs)
{
    PyObject *stack[6];
    stack[0] = storage;
    for (size_t i = 0; i < nargs; i++) {
        stack[i + 1] = args[i];
    }
    return PyObject_VectorcallMethod(name, stack, nargs + 1, NULL);
}

/* storage._decide_one(identifier, throttle, cost, now, True) */
static PyObject *
decide_in_python(PyObject *storage, PyObject *identifier, PyObject *throttle,
                 PyObject *cost, long long now)
{
    PyObject *now_obj = PyLong_FromLongLong(now);
    if (now_obj == NULL) {
        return NULL;
    }

    PyObject *args[5] = {identifier, throttle, cost, now_obj, Py_True};
    PyObject *decision = call_method(storage, str_decide_one, args, 5);
    Py_DECREF(now_obj);
    return decision;
}

/*
 * storage._hit_one_at(identifier, throttle, cost, now) for a storage whose
 * times are out of the shape the fast cases read (a float kept from a
 * throttle forced to a float window): the Python twin decides, as it would
 * have alone, rather than every client's hit failing.
 */
static PyObject *
odd_in_python(PyObject *storage, PyObject *identifier, PyObject *throttle,
              PyObject *cost, PyObject *now)
{
    PyErr_Clear();
    PyObject *args[4] = {identifier, throttle, cost, now};
    return call_method(storage, str_hit_one_at, args, 4);
}

/* A throttle read at its slots: its numbers, or 0 when one is out of shape. */
static int
read_throttle(PyObject *throttle, long long *limit, long long *ttl,
              long long *block)
{
    if (slot_i64(throttle, hot.t_limit, "limit", limit) < 0 ||
        slot_i64(throttle, hot.t_ttl_us, "ttl_us", ttl) < 0 ||
        slot_i64(throttle, hot.t_block_duration_us, "block_duration_us", block) <
            0) {
        PyErr_Clear();
        return 0;
    }

    return *limit >= 1 && *limit <= PY_SSIZE_T_MAX && *ttl >= 1 &&
           *ttl <= MAX_SPAN_US && *block >= 0 && *block <= MAX_SPAN_US;
}

/* The first hit of a pair, with room for it: recorded by storage._record. */
static PyObject *
hit_new_pair(PyObject *storage, PyObject *identifier, PyObject *throttle,
             PyObject *cost_obj, long long now, long long ttl)
{
    long long pairs, max_pairs;
    if (slot_i64(storage, hot.s_pairs, "_pairs", &pairs) < 0 ||
        slot_i64(storage, hot.s_max_pairs, "_max_pairs", &max_pairs) < 0) {
        return NULL;
    }

    if (pairs >= max_pairs) { /* the overflow policy decides */
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    PyObject *now_obj = PyLong_FromLongLong(now);
    if (now_obj == NULL) {
        return NULL;
    }

    PyObject *args[5] = {identifier, throttle, Py_None, cost_obj, now_obj};
    PyObject *pair = call_method(storage, str_record, args, 5);
    Py_DECREF(now_obj);
    if (pair == NULL) {
        return NULL;
    }

    Py_DECREF(pair);
    /* the hit recorded now is the oldest: it expires in a whole window */
    return make_decision(throttle, hot.admitted, 0, 0, ttl, 1);
}

/* A known, unblocked pair's hit of cost 1 (the ring `times`). */
static PyObject *
hit_known_pair(PyObject *storage, PyObject *identifier, PyObject *throttle,
               PyObject *cost_obj, long long now, PyObject *times)
{
    long long head, pair_ttl, limit, ttl, block;
    if (slot_i64(times, hot.p_head, "head", &head) < 0 ||
        slot_i64(times, hot.p_ttl_us, "ttl_us", &pair_ttl) < 0) {
        PyErr_Clear(); /* a pair out of shape: Python says what is wrong */
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    Py_ssize_t size = PyList_GET_SIZE(times);
    if (!read_throttle(throttle, &limit, &ttl, &block) || head < 0 ||
        (size && head >= size)) {
        /* out of shape: Python says what is wrong */
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    if (size >= limit) {
        /* The oldest of the newest `limit` hits: while it is in the window,
         * the window is full and the hit waits for it to leave. */
        long long oldest;
        if (ring_at(times, (Py_ssize_t)(head + size - limit), &oldest) < 0) {
            return NULL;
        }

        long long wait = oldest - now + ttl;
        if (wait > 0) {
            if (block) {
                return decide_in_python(storage, identifier, throttle, cost_obj,
                                        now);
            }
            return make_decision(throttle, hot.limit_reached, limit, wait, wait,
                                 0);
        }
    }

    if (size > limit || (head && size < limit) || pair_ttl != ttl) {
        /* A changed limit or window: _record rebuilds the ring or notes the
         * pair's new expiry. */
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    /* Admitted: the limit-th newest time has left the window. */
    Py_ssize_t left = count_left(times, (Py_ssize_t)head, now - ttl);
    if (left < 0) {
        return NULL;
    }

    long long in_window = size - left;
    long long expires_in = ttl; /* the hit recorded now is the oldest */
    if (in_window) {
        long long oldest;
        if (ring_at(times, (Py_ssize_t)(head + size - in_window), &oldest) < 0) {
            return NULL;
        }
        expires_in = oldest - now + ttl;
    }

    PyObject *stamp = PyLong_FromLongLong(now);
    if (stamp == NULL) {
        return NULL;
    }

    if (size < limit) { /* not wrapped yet: the head is 0 */
        int failed = PyList_Append(times, stamp);
        Py_DECREF(stamp);
        if (failed) {
            return NULL;
        }
    }
    else {
        PyObject *next = PyLong_FromLongLong(head + 1 < limit ? head + 1 : 0);
        if (next == NULL) {
            Py_DECREF(stamp);
            return NULL;
        }
        PyList_SetItem(times, (Py_ssize_t)head, stamp); /* steals stamp */
        slot_put(times, hot.p_head, next);
    }

    return make_decision(throttle, hot.admitted, in_window, 0, expires_in, 1);
}

/*
 * _hit_one_at, with the lock held and the time checked (`now_obj`, `now`):
 * the fast cases here, the rest through the Python methods. A new
 * reference, or NULL.
 */
static PyObject *
hit_one_at(PyObject *storage, PyObject *identifier, PyObject *throttle,
           PyObject *cost_obj, long long cost, PyObject *now_obj, long long now)
{
    long long high_water, next_due;
    if (slot_i64(storage, hot.s_high_water, "_high_water", &high_water) < 0 ||
        slot_i64(storage, hot.s_next_due, "_next_due", &next_due) < 0) {
        return odd_in_python(storage, identifier, throttle, cost_obj, now_obj);
    }

    if (now < high_water) {
        now = high_water;
    }
    else {
        slot_put(storage, hot.s_high_water, Py_NewRef(now_obj));
    }

    if (now >= next_due) {
        PyObject *at = PyLong_FromLongLong(now);
        PyObject *done = at ? call_method(storage, str_reclaim_due, &at, 1) : NULL;
        Py_XDECREF(at);
        if (done == NULL) {
            return NULL;
        }
        Py_DECREF(done);
    }

    PyObject *clients = slot_get(storage, hot.s_clients, "_clients");
    PyObject *lru = clients ? slot_get(storage, hot.s_lru, "_lru") : NULL;
    PyObject *name = lru ? slot_get(throttle, hot.t_name, "name") : NULL;
    if (name == NULL) {
        return NULL;
    }

    /* evict-lru renews the client (in Python); its clients are no plain dict */
    if (cost != 1 || !PyDict_CheckExact(clients) || lru != Py_False) {
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    PyObject *client = PyDict_GetItemWithError(clients, identifier);
    if (client != NULL && !PyDict_CheckExact(client)) {
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    PyObject *times = client ? PyDict_GetItemWithError(client, name) : NULL;
    if (PyErr_Occurred()) {
        return NULL;
    }

    if (times == NULL) {
        long long limit, ttl, block;
        if (!read_throttle(throttle, &limit, &ttl, &block)) {
            return decide_in_python(storage, identifier, throttle, cost_obj, now);
        }
        return hit_new_pair(storage, identifier, throttle, cost_obj, now, ttl);
    }

    long long blocked_until;
    if (!Py_IS_TYPE(times, hot.pair_type) ||
        slot_i64(times, hot.p_blocked_until, "blocked_until", &blocked_until) <
            0 ||
        blocked_until > now) {
        PyErr_Clear(); /* blocked, or a pair out of shape: Python decides */
        return decide_in_python(storage, identifier, throttle, cost_obj, now);
    }

    Py_INCREF(times); /* held across the slot and list calls below */
    PyObject *decision =
        hit_known_pair(storage, identifier, throttle, cost_obj, now, times);
    Py_DECREF(times);
    return decision;
}

/*
 * hit_one: the lock, the time, then hit_one_at, or storage._hit_one_at for
 * arguments off the plain path (a cost of -1). The lock is released on
 * every path.
 */
static PyObject *
hit_one_locked(PyObject *storage, PyObject *identifier, PyObject *throttle,
               PyObject *cost_obj, long long cost, PyObject *now_us)
{
    PyObject *lock = slot_get(storage, hot.s_lock, "_lock");
    if (lock == NULL) {
        return NULL;
    }

    Py_INCREF(lock);
    if (acquire(lock) < 0) {
        Py_DECREF(lock);
        return NULL;
    }

    long long now;
    PyObject *decision = NULL;
    PyObject *now_obj = time_of_hit(storage, now_us, &now);
    if (now_obj != NULL && cost < 0) {
        PyObject *args[4] = {identifier, throttle, cost_obj, now_obj};
        decision = call_method(storage, str_hit_one_at, args, 4);
    }
    else if (now_obj != NULL) {
        decision =
            hit_one_at(storage, identifier, throttle, cost_obj, cost, now_obj, now);
    }
    Py_XDECREF(now_obj);

    /* Keep the decision's error (if any) across the release. */
#if PY_VERSION_HEX >= 0x030C0000
    PyObject *raised = PyErr_GetRaisedException();
    if (release(lock) < 0) {
        Py_CLEAR(decision);
        Py_XDECREF(raised); /* the lock's own error wins: it is worse */
    }
    else {
        PyErr_SetRaisedException(raised);
    }
#else
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (release(lock) < 0) {
        Py_CLEAR(decision);
        Py_XDECREF(type); /* the lock's own error wins: it is worse */
        Py_XDECREF(value);
        Py_XDECREF(traceback);
    }
    else {
        PyErr_Restore(type, value, traceback);
    }
#endif

    Py_DECREF(lock);
    return decision;
}

/* 0 when bind() was called and `name` got `low` or `high` arguments. */
static int
check_call(const char *name, Py_ssize_t nargs, Py_ssize_t low, Py_ssize_t high)
{
    if (!hot.bound) {
        PyErr_SetString(PyExc_RuntimeError, "_hot_path.bind() was not called");
        return -1;
    }

    if (nargs >= low && nargs <= high) {
        return 0;
    }

    if (low == high) {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd arguments (%zd given)", name,
                     low, nargs);
    }
    else {
        PyErr_Format(PyExc_TypeError, "%s() takes %zd or %zd arguments (%zd given)",
                     name, low, high, nargs);
    }
    return -1;
}

/* The plain call of Throttler.hit: a str, an exact Throttle, an int cost. */
static int
is_plain(PyObject *identifier, PyObject *throttle, PyObject *cost_obj,
         long long *cost)
{
    if (!PyUnicode_CheckExact(identifier) ||
        !Py_IS_TYPE(throttle, hot.throttle_type) || !PyLong_CheckExact(cost_obj)) {
        return 0;
    }

    Py_ssize_t length = PyUnicode_GET_LENGTH(identifier);
    if (length < 1 || length > hot.max_identifier_length) {
        return 0;
    }

    int overflow;
    *cost = PyLong_AsLongLongAndOverflow(cost_obj, &overflow);
    return !overflow && *cost >= 0 && *cost <= hot.max_cost;
}

PyDoc_STRVAR(hit_one_doc,
"hit_one(storage, identifier, throttle, cost, now_us=None, /)\n--\n\n"
"MemoryStorage.hit_one in C: one hit on one throttle, on the storage's clock\n"
"unless now_us is given. Arguments off the plain path (not a str of 1 to\n"
"65,536 characters, an exact Throttle and an int cost from 0 to 2**52) go to\n"
"storage._hit_one_at under the same lock. The storage must be of the bound\n"
"MemoryStorage class itself, not a subclass.");

static PyObject *
hot_hit_one(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_call("hit_one", nargs, 4, 5) < 0) {
        return NULL;
    }

    if (!Py_IS_TYPE(args[0], hot.storage_type)) {
        /* a subclass's slots may lie elsewhere: MemoryStorage.hit_one keeps
         * them in Python */
        PyErr_Format(PyExc_TypeError, "hit_one() needs a %s, got %.100s",
                     hot.storage_type->tp_name, Py_TYPE(args[0])->tp_name);
        return NULL;
    }

    PyObject *now_us = nargs == 5 && args[4] != Py_None ? args[4] : NULL;

    long long cost;
    if (!is_plain(args[1], args[2], args[3], &cost)) {
        cost = -1;
    }

    return hit_one_locked(args[0], args[1], args[2], args[3], cost, now_us);
}

/* ---- Throttler.hit ------------------------------------------------------ */

PyDoc_STRVAR(plain_hit_doc,
"plain_hit(throttler, storage, identifier, throttles, cost, now_ms, /)\n--\n\n"
"The body of Throttler.hit in C, as throttler.hit_in_python: the plain call\n"
"(a str, one Throttle, an int cost, the storage's clock) goes to the hot\n"
"path over a bare MemoryStorage whose hit_one is its own, to\n"
"storage.hit_one over one whose hit_one was replaced, and to\n"
"storage.hit(identifier, throttles, cost, None) over any other storage;\n"
"every other call to throttler._hit_checked.");

static PyObject *
hot_plain_hit(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (check_call("plain_hit", nargs, 6, 6) < 0) {
        return NULL;
    }

    PyObject *throttler = args[0], *storage = args[1], *identifier = args[2];
    PyObject *throttles = args[3], *cost_obj = args[4], *now_ms = args[5];
    long long cost;
    if (now_ms != Py_None || !PyTuple_CheckExact(throttles) ||
        PyTuple_GET_SIZE(throttles) != 1 ||
        !is_plain(identifier, PyTuple_GET_ITEM(throttles, 0), cost_obj, &cost)) {
        /* the checks of Throttler.hit say what is wrong */
        PyObject *rest[4] = {identifier, throttles, cost_obj, now_ms};
        return call_method(throttler, str_hit_checked, rest, 4);
    }

    PyObject *throttle = PyTuple_GET_ITEM(throttles, 0);
    if (!Py_IS_TYPE(storage, hot.storage_type)) {
        PyObject *rest[4] = {identifier, throttles, cost_obj, Py_None};
        return call_method(storage, str_hit, rest, 4);
    }

    if (_PyType_Lookup(hot.storage_type, str_hit_one) != hot.hit_one) {
        /* MemoryStorage.hit_one replaced (a spy, a patch): it decides */
        PyObject *rest[3] = {identifier, throttle, cost_obj};
        return call_method(storage, str_hit_one, rest, 3);
    }

    return hit_one_locked(storage, identifier, throttle, cost_obj, cost, NULL);
}

/* ---- bind() ------------------------------------------------------------ */

static int
bind_offsets(PyTypeObject *type, const char *const *names, Py_ssize_t *const *outs)
{
    for (int i = 0; names[i] != NULL; i++) {
        Py_ssize_t offset = slot_offset(type, names[i]);
        if (offset < 0) {
            return -1;
        }
        *outs[i] = offset;
    }
    return 0;
}

#define BOUND_OBJECTS 7 /* the classes, the outcomes and checked_time */

PyDoc_STRVAR(bind_doc,
"bind(storage_type, pair_type, throttle_type, decision_type, admitted,\n"
"     limit_reached, checked_time, max_cost, max_time_us,\n"
"     max_identifier_length, /)\n--\n\n"
"Find the slots of memory.py's classes. TypeError if a layout is not as\n"
"expected; the binding in force, if any, then stays as it was.");

static PyObject *
hot_bind(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 10) {
        PyErr_Format(PyExc_TypeError, "bind() takes 10 arguments (%zd given)",
                     nargs);
        return NULL;
    }

    for (int i = 0; i < 4; i++) {
        if (!PyType_Check(args[i])) {
            PyErr_Format(PyExc_TypeError,
                         "bind(): argument %d must be a class, got %.100s", i + 1,
                         Py_TYPE(args[i])->tp_name);
            return NULL;
        }
    }

    if (!PyType_IsSubtype((PyTypeObject *)args[1], &PyList_Type)) {
        PyErr_SetString(PyExc_TypeError, "bind(): pair_type must subclass list");
        return NULL;
    }

    if (!PyCallable_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError, "bind(): checked_time must be callable");
        return NULL;
    }

    /* Worked out in a copy: `hot` changes only once all of it is found. */
    struct hot_state next = hot;
    next.storage_type = (PyTypeObject *)args[0];
    next.pair_type = (PyTypeObject *)args[1];
    next.throttle_type = (PyTypeObject *)args[2];
    next.decision_type = (PyTypeObject *)args[3];
    static const char *const storage_names[] = {
        "_lock", "_clock", "_monotonic", "_high_water", "_next_due", "_clients",
        "_lru", "_pairs", "_max_pairs", NULL};
    Py_ssize_t *const storage_outs[] = {
        &next.s_lock, &next.s_clock, &next.s_monotonic, &next.s_high_water,
        &next.s_next_due, &next.s_clients, &next.s_lru, &next.s_pairs,
        &next.s_max_pairs};
    static const char *const pair_names[] = {"head", "blocked_until", "ttl_us",
                                             NULL};
    Py_ssize_t *const pair_outs[] = {&next.p_head, &next.p_blocked_until,
                                     &next.p_ttl_us};
    static const char *const throttle_names[] = {
        "name", "limit", "ttl_us", "block_duration_us", NULL};
    Py_ssize_t *const throttle_outs[] = {&next.t_name, &next.t_limit,
                                         &next.t_ttl_us, &next.t_block_duration_us};
    static const char *const decision_names[] = {"allowed", "retry_after", "_raw",
                                                 NULL};
    Py_ssize_t *const decision_outs[] = {&next.d_allowed, &next.d_retry_after,
                                         &next.d_raw};
    if (bind_offsets(next.storage_type, storage_names, storage_outs) < 0 ||
        bind_offsets(next.pair_type, pair_names, pair_outs) < 0 ||
        bind_offsets(next.throttle_type, throttle_names, throttle_outs) < 0 ||
        bind_offsets(next.decision_type, decision_names, decision_outs) < 0) {
        return NULL;
    }

    next.max_cost = PyLong_AsLongLong(args[7]);
    next.max_time_us = PyLong_AsLongLong(args[8]);
    next.max_identifier_length = PyLong_AsSsize_t(args[9]);
    if (PyErr_Occurred()) {
        return NULL;
    }

    if (next.max_time_us < 0 || next.max_time_us > (1LL << 62)) {
        PyErr_SetString(PyExc_ValueError, "bind(): max_time_us must be 0 to 2**62");
        return NULL;
    }

    /* The class's own hit_one: plain_hit compares it with what the class
     * holds at each call, to see a patched one. */
    next.hit_one = _PyType_Lookup(next.storage_type, str_hit_one);
    if (next.hit_one == NULL) {
        PyErr_SetString(PyExc_TypeError, "bind(): storage_type has no hit_one");
        return NULL;
    }

    next.admitted = args[4];
    next.limit_reached = args[5];
    next.checked_time = args[6];
    for (int i = 0; i < BOUND_OBJECTS; i++) {
        Py_INCREF(args[i]);
    }
    Py_INCREF(next.hit_one);
    if (hot.bound) {
        PyObject *old[BOUND_OBJECTS + 1] = {
            (PyObject *)hot.storage_type, (PyObject *)hot.pair_type,
            (PyObject *)hot.throttle_type, (PyObject *)hot.decision_type,
            hot.admitted, hot.limit_reached, hot.checked_time, hot.hit_one};
        for (int i = 0; i < BOUND_OBJECTS + 1; i++) {
            Py_DECREF(old[i]);
        }
    }

    next.bound = 1;
    hot = next;
    Py_RETURN_NONE;
}

static PyMethodDef hot_methods[] = {
    {"bind", (PyCFunction)(void (*)(void))hot_bind, METH_FASTCALL, bind_doc},
    {"hit_one", (PyCFunction)(void (*)(void))hot_hit_one, METH_FASTCALL,
     hit_one_doc},
    {"plain_hit", (PyCFunction)(void (*)(void))hot_plain_hit, METH_FASTCALL,
     plain_hit_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef hot_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "sliding_window_throttler.storage._hot_path",
    .m_doc = "The hot path of MemoryStorage in C (see memory.py).",
    .m_size = -1,
    .m_methods = hot_methods,
};

static int
init_lock_methods(void)
{
    PyObject *thread = PyImport_ImportModule("_thread");
    PyObject *lock =
        thread ? PyObject_CallMethod(thread, "allocate_lock", NULL) : NULL;
    Py_XDECREF(thread);
    if (lock == NULL) {
        return -1;
    }

    hot.lock_type = (PyTypeObject *)Py_NewRef(Py_TYPE(lock));
    Py_DECREF(lock);
    hot.lock_acquire = PyObject_GetAttrString((PyObject *)hot.lock_type, "acquire");
    hot.lock_release = PyObject_GetAttrString((PyObject *)hot.lock_type, "release");
    return hot.lock_acquire && hot.lock_release ? 0 : -1;
}

static int
init_strings(void)
{
    struct {
        PyObject **out;
        const char *text;
    } strings[] = {
        {&str_record, "_record"},         {&str_reclaim_due, "_reclaim_due"},
        {&str_decide_one, "_decide_one"}, {&str_hit_one_at, "_hit_one_at"},
        {&str_hit, "hit"},
        {&str_hit_one, "hit_one"},        {&str_hit_checked, "_hit_checked"},
        {&str_now_us, "now_us"},
        {&str_clock, "clock"},
    };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        *strings[i].out = PyUnicode_InternFromString(strings[i].text);
        if (*strings[i].out == NULL) {
            return -1;
        }
    }

    one = PyLong_FromLong(1);
    return one ? 0 : -1;
}

PyMODINIT_FUNC
PyInit__hot_path(void)
{
    if (init_strings() < 0 ||
        init_lock_methods() < 0) {
        return NULL;
    }

    PyObject *time = PyImport_ImportModule("time");
    hot.monotonic_ns = time ? PyObject_GetAttrString(time, "monotonic_ns") : NULL;
    Py_XDECREF(time);
    if (hot.monotonic_ns == NULL) {
        return NULL;
    }

    PyObject *module = PyModule_Create(&hot_module);
    if (module == NULL) {
        return NULL;
    }

    return module;
}
