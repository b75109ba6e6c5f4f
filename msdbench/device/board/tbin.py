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
# A strict message starts 0x80 0x01 0x00 <type>. Built and read byte by byte: as an i32 it is
# beyond MicroPython's small ints on a 32-bit board, and every call would allocate a long int.
_VERSION = (b"\x80\x01\x00\x01", b"\x80\x01\x00\x02", b"\x80\x01\x00\x03")
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

_HEADS = {}   # id(field list) -> each field's header bytes (type, id), built once per list
_BY_ID = {}   # id(field list) -> {field id: (index, type, sub, wire type)}


def _heads(fields):
    h = _HEADS.get(id(fields))
    if h is None:
        h = _HEADS[id(fields)] = tuple(struct.pack(">bh", _WIRE.get(f[1], f[1]), f[0])
                                       for f in fields)
    return h


def _w_value(out, t, sub, v):
    if t == T_STRING or t == T_BINARY:
        if isinstance(v, str):
            v = v.encode()
        out += struct.pack(">i", len(v))
        out += v
    elif t in _FMT:
        out += struct.pack(_FMT[t], v)
    elif t == T_STRUCT:
        w_fields(out, v._f, v)
    elif t == T_LIST or t == T_SET:
        et, esub = sub
        out += struct.pack(">bi", _WIRE.get(et, et), len(v))
        for x in v:
            _w_value(out, et, esub, x)
    elif t == T_BOOL:
        out.append(1 if v else 0)
    else:
        raise ProtocolError("type %d not supported" % t)


def w_values(out, fields, values):
    """The fields of a struct, values given in the order of `fields` (None: left out)."""
    heads = _heads(fields)
    for i in range(len(fields)):
        v = values[i]
        if v is not None:
            out += heads[i]
            f = fields[i]
            t = f[1]
            if t == T_STRING or t == T_BINARY:   # the common case, without a call
                if isinstance(v, str):
                    v = v.encode()
                out += struct.pack(">i", len(v))
                out += v
            else:
                _w_value(out, t, f[3], v)
    out.append(T_STOP)


def w_fields(out, fields, obj):
    w_values(out, fields, [getattr(obj, f[2]) for f in fields])


def w_struct(out, obj):
    w_fields(out, obj._f, obj)


def w_message(out, name, mtype, seqid):
    out += _VERSION[mtype - 1]
    out += struct.pack(">i", len(name))
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
    if t == T_BOOL:
        return buf[pos] != 0, pos + 1
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


def r_values(buf, pos, fields):
    """A struct's fields as a list in the order of `fields` (unset: None), and the next position.
    Unknown fields and fields of an unexpected type are skipped."""
    by_id = _BY_ID.get(id(fields))
    if by_id is None:
        by_id = _BY_ID[id(fields)] = {f[0]: (i, f[1], f[3], _WIRE.get(f[1], f[1]))
                                      for i, f in enumerate(fields)}
    values = [None] * len(fields)
    while True:
        ft = buf[pos]
        if ft == T_STOP:
            return values, pos + 1
        f = by_id.get(struct.unpack_from(">h", buf, pos + 1)[0])
        pos += 3
        if f is None or f[3] != ft:
            pos = _skip(buf, pos, ft)
        elif ft == T_STRING:                    # the common case, without a call
            n = struct.unpack_from(">i", buf, pos)[0]
            v = bytes(buf[pos + 4:pos + 4 + n])
            values[f[0]] = v if f[1] == T_BINARY else v.decode()
            pos += 4 + n
        else:
            values[f[0]], pos = _r_value(buf, pos, f[1], f[2])


def r_fields_into(buf, pos, fields, obj):
    """Read a struct's fields into obj (unset fields None); returns the next position."""
    values, pos = r_values(buf, pos, fields)
    for i in range(len(fields)):
        setattr(obj, fields[i][2], values[i])
    return pos


def message_prefix(name, mtype, seqid):
    """A message's header, to build once and reuse for every call of one method."""
    out = bytearray()
    w_message(out, name, mtype, seqid)
    return bytes(out)


def r_body(buf):
    """(message type, position of the body): a reply's header, without decoding its name."""
    if buf[0] != 0x80 or buf[1] != 0x01:
        raise ProtocolError("not a strict Thrift binary message")
    return buf[3], 12 + struct.unpack_from(">i", buf, 4)[0]


def r_message(buf):
    """(name, message type, seqid, position of the body)."""
    if buf[0] != 0x80 or buf[1] != 0x01:
        raise ProtocolError("not a strict Thrift binary message")
    n = struct.unpack_from(">i", buf, 4)[0]
    name = bytes(buf[8:8 + n]).decode()
    return name, buf[3], struct.unpack_from(">i", buf, 8 + n)[0], 12 + n
