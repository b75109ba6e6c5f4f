# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled twin of codec.py's generated functions: the same signatures, results, errors and
limits, driven by per-struct plans that codec.py builds once from the IDL (field ids, wire types,
argument slots). Optional: without a C compiler codec.py's generated Python runs instead, and
MSDBENCH_PURE_PYTHON=1 forces that (CI runs the wire tests both ways)."""

from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_GET_SIZE, PyByteArray_Resize
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.string cimport memcpy
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL

# Set by codec.py (its exception classes and message helpers), so both paths say the same.
cdef object Incomplete, WireError, too_long, limit_error, missing_result


def init(incomplete, wire_error, too_long_fn, limit_fn, missing_result_fn):
    global Incomplete, WireError, too_long, limit_error, missing_result
    Incomplete, WireError, too_long = incomplete, wire_error, too_long_fn
    limit_error, missing_result = limit_fn, missing_result_fn


cdef bint CHECKS = True  # the limit checks; off only in `msdbench bench`'s "unchecked" server


def set_checks(bint on):
    """Turn the limit checks off (or on again): for measuring what they cost, nothing else."""
    global CHECKS
    CHECKS = on


cdef inline uint32_t u32(const uint8_t* s) noexcept nogil:
    return (<uint32_t>s[0] << 24) | (<uint32_t>s[1] << 16) | (<uint32_t>s[2] << 8) | s[3]


cdef inline int32_t i32(const uint8_t* s) noexcept nogil:
    return <int32_t>u32(s)


cdef inline int64_t i64(const uint8_t* s) noexcept nogil:
    return <int64_t>((<uint64_t>u32(s) << 32) | u32(s + 4))


cdef inline int16_t i16(const uint8_t* s) noexcept nogil:
    return <int16_t>((<uint16_t>s[0] << 8) | s[1])


cdef inline char* grow(bytearray o, Py_ssize_t k) except NULL:
    cdef Py_ssize_t n = PyByteArray_GET_SIZE(o)
    PyByteArray_Resize(o, n + k)
    return PyByteArray_AS_STRING(o) + n


cdef inline void put32(char* d, uint32_t v) noexcept nogil:
    d[0] = <char>(v >> 24); d[1] = <char>(v >> 16); d[2] = <char>(v >> 8); d[3] = <char>v


cdef inline void put64(char* d, uint64_t v) noexcept nogil:
    put32(d, <uint32_t>(v >> 32)); put32(d + 4, <uint32_t>v)


cdef inline int w_raw(bytearray o, const char* s, Py_ssize_t n) except -1:
    memcpy(grow(o, n), s, n)
    return 0


cdef int _FIXED[19]
for _t in range(19):
    _FIXED[_t] = 0
_FIXED[2] = 1; _FIXED[3] = 1; _FIXED[4] = 8; _FIXED[6] = 2; _FIXED[8] = 4; _FIXED[10] = 8


cdef class TPlan:
    """One value's type: spec type t (18 = binary), wire type w, its smallest size, and what it
    holds (a struct's plan, a container's element (and value) plans)."""
    cdef public int t, w, minsize
    cdef public SPlan st
    cdef public TPlan e, v
    cdef public Py_ssize_t maxc, maxd

    def __init__(self, int t, int w, int minsize, st, e, v, Py_ssize_t maxc, Py_ssize_t maxd):
        self.t, self.w, self.minsize, self.st, self.e, self.v = t, w, minsize, st, e, v
        self.maxc, self.maxd = maxc, maxd


cdef class SPlan:
    """One struct: its fields (id, wire type, plan, output slot, name) and what decoding makes:
    mode 0 a tuple (a method's arguments), 1 an instance of cls, 2 a result (value or raise)."""
    cdef public int mode, n, has_success
    cdef public object cls, new, name
    cdef public tuple fids, wts, types, slots, names, defaults
    cdef public Py_ssize_t maxd, maxc

    def setup(self, int mode, cls, new, tuple fids, tuple wts, tuple types, tuple slots,
              tuple names, tuple defaults, Py_ssize_t maxd, Py_ssize_t maxc, int has_success,
              name):
        self.mode, self.cls, self.new = mode, cls, new
        self.fids, self.wts, self.types, self.slots = fids, wts, types, slots
        self.names, self.defaults, self.n = names, defaults, len(fids)
        self.maxd, self.maxc, self.has_success, self.name = maxd, maxc, has_success, name


# ------------------------------------------------------------------------------------ reading

cdef Py_ssize_t skip(const uint8_t* b, Py_ssize_t p, Py_ssize_t end, Py_ssize_t lim, int t,
                     int depth, Py_ssize_t maxd, Py_ssize_t maxc) except -1:
    cdef Py_ssize_t n, i, e, size, fk, fv
    cdef int kt, vt, ft
    if CHECKS and depth > maxd:
        raise limit_error("nesting depth", depth, "max_depth", maxd)
    if t < 19 and _FIXED[t]:
        if p + _FIXED[t] > end:
            raise Incomplete(p + _FIXED[t])
        return p + _FIXED[t]
    if t == 11:
        if p + 4 > end:
            raise Incomplete(p + 4)
        n = i32(b + p)
        e = p + 4 + n
        if n < 0:
            raise WireError(f"negative string length {n} at byte {p}")
        if CHECKS and e > lim:
            raise too_long(p, n, lim)
        if e > end:
            raise Incomplete(e)
        return e
    if t == 12:
        while True:
            if p >= end:
                raise Incomplete(p + 1)
            ft = b[p]
            if ft == 0:
                return p + 1
            if p + 3 > end:
                raise Incomplete(p + 3)
            p = skip(b, p + 3, end, lim, ft, depth + 1, maxd, maxc)
    if t == 13 or t == 14 or t == 15:
        size = 6 if t == 13 else 5
        if p + size > end:
            raise Incomplete(p + size)
        kt = b[p]
        vt = b[p + 1] if t == 13 else -1
        n = i32(b + p + size - 4)
        p += size
        fk = _min_size(kt)
        fv = _min_size(vt) if t == 13 else 0
        check_container(p, n, fk + fv, lim, maxc)
        if _fixed(kt) and (t != 13 or _fixed(vt)):
            e = p + n * (_fixed(kt) + (_fixed(vt) if t == 13 else 0))
            if e > end:
                raise Incomplete(e)
            return e
        for i in range(n):
            p = skip(b, p, end, lim, kt, depth + 1, maxd, maxc)
            if t == 13:
                p = skip(b, p, end, lim, vt, depth + 1, maxd, maxc)
        return p
    raise WireError(f"unknown Thrift type {t} at byte {p}")


cdef inline int _fixed(int t) noexcept:
    return _FIXED[t] if 0 <= t < 19 else 0


cdef inline int _min_size(int t) noexcept:
    if t == 11:
        return 4
    if t == 12:
        return 1
    if t == 14 or t == 15:
        return 5
    if t == 13:
        return 6
    return _fixed(t) or 1


cdef int check_container(Py_ssize_t p, Py_ssize_t n, Py_ssize_t min_elem, Py_ssize_t lim,
                         Py_ssize_t maxc) except -1:
    """codec._check_container: before anything is allocated or waited for."""
    if not CHECKS:
        return 0
    if n < 0:
        raise WireError(f"negative container size {n} at byte {p}")
    if n > maxc:
        raise limit_error("container size", n, "max_container_len", maxc)
    if p + n * min_elem > lim:
        raise WireError(f"container of {n} elements at byte {p} cannot fit in max_message_bytes "
                        f"(message may end at byte {lim})", limit=True)
    return 0


cdef object read_val(TPlan tp, const uint8_t* b, Py_ssize_t* pp, Py_ssize_t end, Py_ssize_t lim,
                     int depth):
    cdef Py_ssize_t p = pp[0], n, i
    cdef int t = tp.t, et
    cdef double d
    cdef uint64_t u
    cdef list out
    cdef object v
    if t == 10:
        if p + 8 > end:
            raise Incomplete(p + 8)
        pp[0] = p + 8
        return i64(b + p)
    if t == 11 or t == 18:
        if p + 4 > end:
            raise Incomplete(p + 4)
        n = i32(b + p)
        p += 4
        if n < 0:
            raise WireError("negative string length at byte %d" % p)
        if CHECKS and p + n > lim:
            raise too_long(p, n, lim)
        if p + n > end:
            raise Incomplete(p + n)
        pp[0] = p + n
        if t == 18:
            return PyBytes_FromStringAndSize(<const char*>b + p, n)
        try:
            return PyUnicode_DecodeUTF8(<const char*>b + p, n, NULL)
        except UnicodeDecodeError:
            return PyBytes_FromStringAndSize(<const char*>b + p, n)
    if t == 8:
        if p + 4 > end:
            raise Incomplete(p + 4)
        pp[0] = p + 4
        return i32(b + p)
    if t == 12:
        return read_struct(tp.st, b, pp, end, lim, depth + 1)
    if t == 2 or t == 3:
        if p + 1 > end:
            raise Incomplete(p + 1)
        pp[0] = p + 1
        return (b[p] != 0) if t == 2 else <int8_t>b[p]
    if t == 6:
        if p + 2 > end:
            raise Incomplete(p + 2)
        pp[0] = p + 2
        return i16(b + p)
    if t == 4:
        if p + 8 > end:
            raise Incomplete(p + 8)
        u = <uint64_t>i64(b + p)
        memcpy(&d, &u, 8)
        pp[0] = p + 8
        return d
    if t == 14 or t == 15:
        if p + 5 > end:
            raise Incomplete(p + 5)
        et = b[p]
        n = i32(b + p + 1)
        p += 5
        if et != tp.e.w:
            pp[0] = skip(b, p - 5, end, lim, t, depth + 1, tp.maxd, tp.maxc)
            return None
        check_container(p, n, tp.e.minsize, lim, tp.maxc)
        out = []
        if tp.e.t == 10:
            if p + 8 * n > end:
                raise Incomplete(p + 8 * n)
            for i in range(n):
                out.append(i64(b + p + 8 * i))
            p += 8 * n
        else:
            for i in range(n):
                out.append(read_val(tp.e, b, &p, end, lim, depth + 1))
        pp[0] = p
        return set(out) if t == 14 else out
    if t == 13:
        if p + 6 > end:
            raise Incomplete(p + 6)
        n = i32(b + p + 2)
        if n and (b[p] != tp.e.w or b[p + 1] != tp.v.w):
            pp[0] = skip(b, p, end, lim, 13, depth + 1, tp.maxd, tp.maxc)
            return None
        p += 6
        check_container(p, n, tp.e.minsize + tp.v.minsize, lim, tp.maxc)
        m = {}
        for i in range(n):
            v = read_val(tp.e, b, &p, end, lim, depth + 1)
            m[v] = read_val(tp.v, b, &p, end, lim, depth + 1)
        pp[0] = p
        return m
    raise TypeError(f"Thrift type {t} is not supported by the codec")


cdef object read_struct(SPlan sp, const uint8_t* b, Py_ssize_t* pp, Py_ssize_t end, Py_ssize_t lim,
                        int depth):
    cdef Py_ssize_t p = pp[0], i
    cdef int t, fid, n = sp.n
    cdef list vals = list(sp.defaults)
    cdef tuple fids = sp.fids, wts = sp.wts, types = sp.types, slots = sp.slots
    cdef bint hit
    if CHECKS and depth > sp.maxd:
        raise limit_error("nesting depth", depth, "max_depth", sp.maxd)
    while True:
        if p >= end:
            raise Incomplete(p + 1)
        t = b[p]
        if t == 0:
            p += 1
            break
        if p + 3 > end:
            raise Incomplete(p + 3)
        fid = i16(b + p + 1)
        p += 3
        hit = False
        for i in range(n):
            if <int>fids[i] == fid and <int>wts[i] == t:
                vals[<Py_ssize_t>slots[i]] = read_val(<TPlan>types[i], b, &p, end, lim, depth)
                hit = True
                break
        if not hit:
            p = skip(b, p, end, lim, t, depth + 1, sp.maxd, sp.maxc)
    pp[0] = p
    if sp.mode == 0:
        return tuple(vals)
    if sp.mode == 1:
        obj = sp.new(sp.cls)
        d = obj.__dict__
        for i in range(len(vals)):
            d[sp.names[i]] = vals[i]
        return obj
    # a result: slot 0 is success when the method returns something, the rest its throws
    for i in range(sp.has_success, len(vals)):
        if vals[i] is not None:
            raise vals[i]
    if sp.has_success:
        if vals[0] is None:
            raise missing_result(sp.name)
        return vals[0]
    return None


cdef class StructDecoder:
    """`(b, p, end, lim, depth=0) -> (decoded, p)` as codec's generated decode functions."""
    cdef SPlan sp

    def __init__(self, SPlan sp):
        self.sp = sp

    def __call__(self, b, Py_ssize_t p, Py_ssize_t end, Py_ssize_t lim, int depth=0):
        cdef Py_buffer view
        PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
        try:
            if end > view.len:
                end = view.len
            v = read_struct(self.sp, <const uint8_t*>view.buf, &p, end, lim, depth)
        finally:
            PyBuffer_Release(&view)
        return v, p


def read_header(b, Py_ssize_t p, Py_ssize_t end, Py_ssize_t lim):
    """codec.read_header, compiled."""
    cdef Py_buffer view
    cdef const uint8_t* s
    cdef int32_t w, n, mtype
    cdef Py_ssize_t q, e
    PyObject_GetBuffer(b, &view, PyBUF_SIMPLE)
    try:
        if end > view.len:
            end = view.len
        s = <const uint8_t*>view.buf
        if p + 4 > end:
            raise Incomplete(p + 4)
        w = i32(s + p)
        if w < 0:
            if (<uint32_t>w & 0xFFFF0000u) != 0x80010000u:
                raise WireError(f"bad Thrift binary version word {<uint32_t>w:#010x}")
            mtype = w & 0xFF
            if p + 8 > end:
                raise Incomplete(p + 8)
            n = i32(s + p + 4)
            q = p + 8
        else:
            n, mtype, q = w, -1, p + 4
        if n < 0 or n > 1024:
            raise WireError(f"method name length {n} (at most 1024)")
        e = q + n + (4 if mtype >= 0 else 5)
        if CHECKS and e > lim:
            raise too_long(p, n, lim)
        if e > end:
            raise Incomplete(e)
        name = PyBytes_FromStringAndSize(<const char*>s + q, n)
        if mtype < 0:
            mtype = s[q + n]
            q += 1
        return name, mtype, i32(s + q + n), e
    finally:
        PyBuffer_Release(&view)


# ------------------------------------------------------------------------------------ writing

cdef int write_val(TPlan tp, bytearray o, object v) except -1:
    cdef int t = tp.t
    cdef Py_ssize_t i
    cdef char* d
    cdef const char* s
    cdef Py_ssize_t n
    cdef double x
    cdef uint64_t u
    if t == 10:
        put64(grow(o, 8), <uint64_t><int64_t>v)
    elif t == 11 or t == 18:
        if type(v) is str:
            s = PyUnicode_AsUTF8AndSize(v, &n)
        elif type(v) is bytes:
            s, n = PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)
        else:
            v = bytes(v)
            s, n = PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v)
        d = grow(o, 4 + n)
        put32(d, <uint32_t>n)
        memcpy(d + 4, s, n)
    elif t == 8:
        put32(grow(o, 4), <uint32_t><int32_t>v)
    elif t == 12:
        write_struct(tp.st, o, v)
    elif t == 2 or t == 3:
        d = grow(o, 1)
        d[0] = <char>(1 if v else 0) if t == 2 else <char><int8_t>v
    elif t == 6:
        d = grow(o, 2)
        n = <int16_t>v
        d[0] = <char>(n >> 8); d[1] = <char>n
    elif t == 4:
        x = v
        memcpy(&u, &x, 8)
        put64(grow(o, 8), u)
    elif t == 14 or t == 15:
        d = grow(o, 5)
        d[0] = <char>tp.e.w
        put32(d + 1, <uint32_t>len(v))
        if tp.e.t == 10:
            n = len(v)
            d = grow(o, 8 * n)
            i = 0
            for x_ in v:
                put64(d + 8 * i, <uint64_t><int64_t>x_)
                i += 1
        else:
            for x_ in v:
                write_val(tp.e, o, x_)
    elif t == 13:
        d = grow(o, 6)
        d[0] = <char>tp.e.w
        d[1] = <char>tp.v.w
        put32(d + 2, <uint32_t>len(v))
        for k_, x_ in v.items():
            write_val(tp.e, o, k_)
            write_val(tp.v, o, x_)
    else:
        raise TypeError(f"Thrift type {t} is not supported by the codec")
    return 0


cdef inline int field_header(bytearray o, int w, int fid) except -1:
    cdef char* d = grow(o, 3)
    d[0] = <char>w
    d[1] = <char>(fid >> 8)
    d[2] = <char>fid
    return 0


cdef int write_struct(SPlan sp, bytearray o, obj) except -1:
    cdef Py_ssize_t i
    for i in range(sp.n):
        v = getattr(obj, sp.names[i])
        if v is not None:
            field_header(o, <int>sp.wts[i], <int>sp.fids[i])
            write_val(<TPlan>sp.types[i], o, v)
    grow(o, 1)[0] = 0
    return 0


cdef class CallEncoder:
    """`(o, *args)`: a CALL (or ONEWAY) message with the arguments, in the IDL's order."""
    cdef bytes header
    cdef SPlan sp

    def __init__(self, bytes header, SPlan sp):
        self.header, self.sp = header, sp

    def __call__(self, bytearray o, *args):
        self.encode(o, args)

    cdef int encode(self, bytearray o, tuple args) except -1:
        cdef Py_ssize_t i
        cdef SPlan sp = self.sp
        w_raw(o, PyBytes_AS_STRING(self.header), PyBytes_GET_SIZE(self.header))
        for i in range(sp.n):
            v = args[<Py_ssize_t>sp.slots[i]]
            if v is not None:
                field_header(o, <int>sp.wts[i], <int>sp.fids[i])
                write_val(<TPlan>sp.types[i], o, v)
        grow(o, 1)[0] = 0
        return 0


cdef class ReplyEncoder:
    """`(o, seqid, value)`: a REPLY message with the success field (none for void)."""
    cdef bytes prefix
    cdef TPlan success

    def __init__(self, bytes prefix, success):
        self.prefix, self.success = prefix, success

    def __call__(self, bytearray o, int32_t seqid, value):
        self.encode(o, seqid, value)

    cdef int encode(self, bytearray o, int32_t seqid, value) except -1:
        w_raw(o, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix))
        put32(grow(o, 4), <uint32_t>seqid)
        if value is not None and self.success is not None:
            field_header(o, self.success.w, 0)
            write_val(self.success, o, value)
        grow(o, 1)[0] = 0
        return 0


cdef class ThrowEncoder:
    """`(o, seqid, exc) -> bool`: a REPLY carrying a declared exception; False if undeclared."""
    cdef bytes prefix
    cdef tuple throws  # (fid, class, TPlan)

    def __init__(self, bytes prefix, tuple throws):
        self.prefix, self.throws = prefix, throws

    def __call__(self, bytearray o, int32_t seqid, exc):
        for fid, cls, tp in self.throws:
            if isinstance(exc, cls):
                w_raw(o, PyBytes_AS_STRING(self.prefix), PyBytes_GET_SIZE(self.prefix))
                put32(grow(o, 4), <uint32_t>seqid)
                field_header(o, 12, fid)
                write_val(<TPlan>tp, o, exc)
                grow(o, 1)[0] = 0
                return True
        return False


cdef class StructEncoder:
    """`(o, obj)`: one struct's fields (codec's enc_ functions)."""
    cdef SPlan sp

    def __init__(self, SPlan sp):
        self.sp = sp

    def __call__(self, bytearray o, obj):
        write_struct(self.sp, o, obj)


# ------------------------------------------------------------- the TCP loop and client, compiled

cdef extern from "sys/epoll.h" nogil:
    ctypedef union epoll_data_t:
        int fd
    struct epoll_event:
        uint32_t events
        epoll_data_t data
    int epoll_wait(int epfd, epoll_event* events, int maxevents, int timeout)
    int epoll_ctl(int epfd, int op, int fd, epoll_event* event)
    enum: EPOLLOUT
    enum: EPOLL_CTL_MOD

cdef extern from "sys/socket.h" nogil:
    ssize_t recv(int fd, void* buf, size_t n, int flags)
    ssize_t send(int fd, const void* buf, size_t n, int flags)
    enum: MSG_DONTWAIT
    enum: MSG_NOSIGNAL

from libc.errno cimport errno, EINTR, EAGAIN
from libc.string cimport memcmp
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno


def serve_loop(srv, int epfd, int lfd, int wake, int maxevents, dict table, uint32_t rearm):
    """thrift_tcp.ThriftServer._loop, compiled: epoll_wait without the GIL, then each ready
    connection through `readable` (the common call in C) or the server's Python methods. A reply
    made by `readable` is sent in the same GIL-free stretch as the next epoll_wait (and, with
    one-shot readiness, the re-arm): a caller in this process (a co-located service) waiting for
    it gets the GIL at once instead of waiting for this thread to let go."""
    cdef epoll_event evs[64]
    cdef epoll_event ev
    cdef int n, i, fd, out_fd = -1
    cdef dict conns = srv._conns
    cdef object out = None, out_conn = None
    cdef const char* op
    cdef Py_ssize_t ol = 0
    cdef ssize_t r = 0
    if maxevents > 64:
        maxevents = 64
    while True:
        if out is None:
            with nogil:
                n = epoll_wait(epfd, evs, maxevents, -1)
        else:
            op, ol = PyByteArray_AS_STRING(out), PyByteArray_GET_SIZE(out)
            ev.events, ev.data.fd = rearm, out_fd
            with nogil:
                r = send(out_fd, op, ol, MSG_DONTWAIT | MSG_NOSIGNAL)
                if r == ol:
                    if rearm:
                        epoll_ctl(epfd, EPOLL_CTL_MOD, out_fd, &ev)
                    n = epoll_wait(epfd, evs, maxevents, -1)
            if r != ol:  # the socket took part of it (or failed): the Python side goes on
                srv._sent_partly(out_conn, out, r)
                out = out_conn = None
                continue
            out = out_conn = None
        if n < 0:
            if errno == EINTR:
                PyErr_CheckSignals()
                continue
            return
        for i in range(n):
            fd = evs[i].data.fd
            if fd == wake:
                return
            if fd == lfd:
                srv._accept()
                continue
            c = conns.get(fd)
            if c is None:
                continue
            if out is not None:  # a second reply in this batch: send the first one now
                srv._send(out_conn, out)
                srv._after_read(out_conn, False)
                out = out_conn = None
            try:
                if evs[i].events & EPOLLOUT:
                    srv._writable(c)
                else:
                    out = readable(srv, c, fd, table)
                    if out is not None:
                        out_conn, out_fd = c, fd
            except Exception as e:  # a bug here must not end the loop for everyone
                out = out_conn = None
                srv._drop(c, f"internal error: {type(e).__name__}: {e}")


cdef object readable(srv, c, int fd, dict table):
    """One readable connection: recv; a whole strict unframed call of a known method with nothing
    after it is served here (decode, handler, encode: the reply is returned for the loop to
    send); anything else goes to the server's Python `_after_read` (framing detection, partial
    and pipelined messages, errors), and None is returned."""
    cdef bytearray buf = c.buf
    cdef Py_ssize_t have = c.have, cap = PyByteArray_GET_SIZE(buf), p, q, plen
    cdef ssize_t r
    cdef const uint8_t* s
    cdef int32_t n, seqid
    cdef StructDecoder dec
    cdef ReplyEncoder enc
    # non-blocking, and the data is there: no point in releasing the GIL
    r = recv(fd, PyByteArray_AS_STRING(buf) + have, cap - have, MSG_DONTWAIT)
    if r == 0:
        srv._drop(c)
        return None
    if r < 0:
        if errno == EAGAIN or errno == EINTR:
            srv._after_read(c, False)
        else:
            srv._drop(c)
        return None
    have += r
    c.have = have
    s = <const uint8_t*>PyByteArray_AS_STRING(buf)
    if c.framed is not False or c.pending or have < 12 or s[0] != 0x80 or s[1] != 1 \
            or (s[3] != 1 and s[3] != 4):
        srv._after_read(c, True)
        return None
    n = i32(s + 4)
    if n < 0 or n > 1024 or 12 + n > have:
        srv._after_read(c, True)
        return None
    entry = table.get(PyBytes_FromStringAndSize(<const char*>s + 8, n))
    if entry is None or not isinstance(entry[0].decode_args, StructDecoder):
        srv._after_read(c, True)
        return None
    m, fn = entry
    seqid = i32(s + 8 + n)
    p = 12 + n
    dec = <StructDecoder>m.decode_args
    try:
        args = read_struct(dec.sp, s, &p, have, srv.limits.max_message_bytes, 0)
    except Exception:  # incomplete, or a violation: the Python path says and does the rest
        srv._after_read(c, True)
        return None
    if p != have:  # more after this call (pipelined): the Python path serves them in order
        srv._after_read(c, True)
        return None
    c.have = 0
    if cap > 1048576:  # thrift_tcp.KEEP_SIZE: a large buffer shrinks back after use
        srv._make_room(c, 0, 0)
    try:
        value = fn(*args)
    except Exception as e:
        srv._handler_failed(c, m, seqid, e)
        return None
    if m.oneway:
        srv._after_read(c, False)
        return None
    out = bytearray()
    enc = <ReplyEncoder>m.encode_reply
    enc.encode(out, seqid, value)
    return out


cdef class TcpMethod:
    """One IDL method of thrift_tcp.ThriftClient on a blocking socket without a timeout: encode,
    send, recv and decode in C, the GIL released while the kernel works."""
    cdef int fd
    cdef object sock, codec, name, m, state, positional
    cdef CallEncoder enc
    cdef SPlan rsp
    cdef bytes prefix
    cdef Py_ssize_t nargs, lim
    cdef bint oneway

    def __init__(self, codec, m, sock, list state, positional):
        self.sock, self.fd, self.codec, self.m, self.name = sock, sock.fileno(), codec, m, m.name
        self.enc, self.rsp = m.encode_call, (<StructDecoder>m.decode_result).sp
        self.prefix, self.nargs, self.oneway = m.reply_prefix, m.nargs, m.oneway
        self.lim, self.state, self.positional = codec.limits.max_message_bytes, state, positional

    def __call__(self, *args, **kw):
        cdef bytearray o = bytearray(), buf
        cdef Py_ssize_t have = 0, cap, plen = PyBytes_GET_SIZE(self.prefix), p, need, k
        cdef ssize_t r
        cdef const char* d
        cdef char* bp
        cdef int fd = self.fd
        cdef bint oneway = self.oneway
        if kw or len(args) != self.nargs:
            args = self.positional(self.m, args, kw)
        self.enc.encode(o, args)
        d, k = PyByteArray_AS_STRING(o), PyByteArray_GET_SIZE(o)
        buf = self.state[0]
        cap = PyByteArray_GET_SIZE(buf)
        bp = PyByteArray_AS_STRING(buf)
        # Send, then wait for the reply, without taking the GIL in between: a callee in this
        # process (a co-located service) gets the GIL at once instead of waiting for us.
        with nogil:
            while k:
                r = send(fd, d, k, MSG_NOSIGNAL)
                if r < 0:
                    if errno == EINTR:
                        continue
                    break
                d += r
                k -= r
            if not k and not oneway:
                r = recv(fd, bp, cap, 0)
        if k:
            PyErr_SetFromErrno(OSError)
        if self.oneway:
            return None
        while True:
            if r < 0:
                if errno == EINTR:
                    PyErr_CheckSignals()
                    cap = PyByteArray_GET_SIZE(buf)
                    bp = PyByteArray_AS_STRING(buf) + have
                    with nogil:
                        r = recv(fd, bp, cap - have, 0)
                    continue
                PyErr_SetFromErrno(OSError)
            if r == 0:
                from thriftpy2.transport import TTransportException
                raise TTransportException(TTransportException.END_OF_FILE,
                                          "peer closed the connection")
            have += r
            try:
                if have >= plen + 4 and memcmp(PyByteArray_AS_STRING(buf),
                                               PyBytes_AS_STRING(self.prefix), plen) == 0:
                    p = plen + 4
                    return read_struct(self.rsp, <const uint8_t*>PyByteArray_AS_STRING(buf), &p,
                                       have, self.lim, 0)
                return self.codec.unusual_reply(self.name, buf, have, self.lim)
            except Incomplete as e:
                need = e.need
                if need > self.lim + 4:
                    raise
                if have == cap:  # full: grow with what arrives, at most twice
                    nb = bytearray(min(need, 2 * cap))
                    nb[:have] = buf[:have]
                    buf = nb
                    self.state[0] = buf
            cap = PyByteArray_GET_SIZE(buf)
            bp = PyByteArray_AS_STRING(buf) + have
            with nogil:
                r = recv(fd, bp, cap - have, 0)
