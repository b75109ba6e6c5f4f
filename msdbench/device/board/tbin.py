# Thrift binary protocol, small enough for a microcontroller: runs on MicroPython and CPython.
#
# The board's files are concatenated into one script (msdbench/device/bundle.py: this file first,
# then the spec generated from msdbench/idl/*.thrift, then the rest), so names defined in an
# earlier file are plain globals in a later one.
#
# A struct class carries its fields as `_f`: ((id, type, name, sub), ...), where sub is the
# struct class (STRUCT), (element type, element sub) (LIST), or None. Type 18 is thriftpy2's
# BINARY: a STRING on the wire, bytes instead of str in Python.
import struct

T_STOP, T_BOOL, T_BYTE, T_DOUBLE, T_I16, T_I32, T_I64 = 0, 2, 3, 4, 6, 8, 10
T_STRING, T_STRUCT, T_MAP, T_SET, T_LIST, T_BINARY = 11, 12, 13, 14, 15, 18
M_CALL, M_REPLY, M_EXCEPTION = 1, 2, 3
VERSION_1 = -2147418112  # 0x80010000 as a signed i32
_WIRE = {T_BINARY: T_STRING}
_FMT = {T_BYTE: ">b", T_I16: ">h", T_I32: ">i", T_I64: ">q", T_DOUBLE: ">d"}
_SIZE = {T_BYTE: 1, T_I16: 2, T_I32: 4, T_I64: 8, T_DOUBLE: 8}


class ProtocolError(Exception):
    pass


class TStruct:
    _f = ()

    def __init__(self, **kw):
        for f in self._f:
            setattr(self, f[2], kw.get(f[2]))

    def __eq__(self, other):
        return type(self) is type(other) and all(
            getattr(self, f[2]) == getattr(other, f[2]) for f in self._f)

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (f[2], getattr(self, f[2])) for f in self._f))


class TError(Exception):
    """An IDL exception: raised by a handler, marshalled into the result's field."""
    _f = ()

    def __init__(self, **kw):
        super().__init__()
        for f in self._f:
            setattr(self, f[2], kw.get(f[2]))

    def __repr__(self):
        return "%s(%s)" % (type(self).__name__, ", ".join(
            "%s=%r" % (f[2], getattr(self, f[2])) for f in self._f))


class AppError(Exception):
    """A TApplicationException: the callee failed in a way its IDL does not declare."""
    _f = ((1, T_STRING, "message", None), (2, T_I32, "type", None))

    def __init__(self, message="", type=6):  # 6: INTERNAL_ERROR
        super().__init__(message)
        self.message = message
        self.type = type


# -- writing -------------------------------------------------------------------------------------

def _w_value(out, t, sub, v):
    if t == T_STRING or t == T_BINARY:
        if isinstance(v, str):
            v = v.encode()
        out += struct.pack(">i", len(v))
        out += v
    elif t == T_I64 or t == T_I32 or t == T_I16 or t == T_BYTE or t == T_DOUBLE:
        out += struct.pack(_FMT[t], v)
    elif t == T_BOOL:
        out.append(1 if v else 0)
    elif t == T_STRUCT:
        w_struct(out, v)
    elif t == T_LIST or t == T_SET:
        et, esub = sub
        out.append(_WIRE.get(et, et))
        out += struct.pack(">i", len(v))
        for x in v:
            _w_value(out, et, esub, x)
    else:
        raise ProtocolError("type %d not supported" % t)


def w_fields(out, fields, obj):
    for fid, t, name, sub in fields:
        v = getattr(obj, name)
        if v is None:
            continue
        out.append(_WIRE.get(t, t))
        out += struct.pack(">h", fid)
        _w_value(out, t, sub, v)
    out.append(T_STOP)


def w_struct(out, obj):
    w_fields(out, obj._f, obj)


def w_message(out, name, mtype, seqid):
    out += struct.pack(">ii", VERSION_1 | mtype, len(name))
    out += name.encode()
    out += struct.pack(">i", seqid)


# -- reading -------------------------------------------------------------------------------------

def _r_value(buf, pos, t, sub):
    """(value, next position)."""
    if t == T_STRING or t == T_BINARY:
        n = struct.unpack_from(">i", buf, pos)[0]
        pos += 4
        v = bytes(buf[pos:pos + n])
        return (v if t == T_BINARY else v.decode()), pos + n
    if t in _FMT:
        return struct.unpack_from(_FMT[t], buf, pos)[0], pos + _SIZE[t]
    if t == T_BOOL:
        return buf[pos] != 0, pos + 1
    if t == T_STRUCT:
        obj = sub()
        return obj, r_fields_into(buf, pos, sub._f, obj)
    if t == T_LIST or t == T_SET:
        et, esub = sub
        n = struct.unpack_from(">i", buf, pos + 1)[0]
        pos += 5
        out = []
        for _ in range(n):
            v, pos = _r_value(buf, pos, et, esub)
            out.append(v)
        return out, pos
    raise ProtocolError("type %d not supported" % t)


def _skip(buf, pos, t):
    if t == T_STRING:
        return pos + 4 + struct.unpack_from(">i", buf, pos)[0]
    if t in _SIZE:
        return pos + _SIZE[t]
    if t == T_BOOL:
        return pos + 1
    if t == T_STRUCT:
        while True:
            ft = buf[pos]
            if ft == T_STOP:
                return pos + 1
            pos = _skip(buf, pos + 3, ft)
    if t == T_LIST or t == T_SET:
        et = buf[pos]
        n = struct.unpack_from(">i", buf, pos + 1)[0]
        pos += 5
        for _ in range(n):
            pos = _skip(buf, pos, et)
        return pos
    if t == T_MAP:
        kt, vt = buf[pos], buf[pos + 1]
        n = struct.unpack_from(">i", buf, pos + 2)[0]
        pos += 6
        for _ in range(n):
            pos = _skip(buf, _skip(buf, pos, kt), vt)
        return pos
    raise ProtocolError("type %d not supported" % t)


def r_fields_into(buf, pos, fields, obj):
    """Read a struct's fields into obj (unset fields None); returns the next position."""
    by_id = {}
    for f in fields:
        by_id[f[0]] = f
        setattr(obj, f[2], None)
    while True:
        ft = buf[pos]
        if ft == T_STOP:
            return pos + 1
        fid = struct.unpack_from(">h", buf, pos + 1)[0]
        pos += 3
        f = by_id.get(fid)
        if f is None or _WIRE.get(f[1], f[1]) != ft:
            pos = _skip(buf, pos, ft)
        else:
            v, pos = _r_value(buf, pos, f[1], f[3])
            setattr(obj, f[2], v)


def r_message(buf):
    """(name, message type, seqid, position of the body)."""
    head, n = struct.unpack_from(">ii", buf, 0)
    if head & -65536 != VERSION_1:
        raise ProtocolError("not a strict Thrift binary message")
    name = bytes(buf[8:8 + n]).decode()
    return name, head & 0xFF, struct.unpack_from(">i", buf, 8 + n)[0], 12 + n


class Fields:
    """A bag of attributes read by a field list (a method's arguments or result)."""
    pass


def r_fields(buf, pos, fields):
    obj = Fields()
    return obj, r_fields_into(buf, pos, fields, obj)
