"""The Thrift binary codec of one IDL service, generated once from its thriftpy2 module.

Per struct type (the args and result of every method, and every user struct and exception) this
writes Python source for one decoder and one encoder, compiles it once and keeps it: field headers
are precomputed bytes, fixed-size values go through prebuilt `struct` layouts, an argument list is
decoded straight into the tuple the handler is called with and a result straight into the value or
exception the caller gets (no args/result struct objects on the hot path). Message headers are
precomputed per method. `thrift_tcp` and `shm_thrift` both use it: one codec, two carriers.

Decoding is incremental and bounded. A decoder reads `buf[pos:end]` and either returns, raises
`Incomplete(need)` (the buffer must hold at least `need` bytes before a retry: the caller reads
more, never byte by byte), or raises `WireError` for a malformed or oversized message. Every
declared length is checked against the limits *before* anything is allocated or waited for: a
string or container must fit in what may still arrive within `Limits.max_message_bytes`
(a container counts each element at its smallest wire size), a container may not declare more
than `Limits.max_container_len` elements, nesting is bounded. So a 25-byte message declaring
2^31 empty structs, or a 100 MiB string, is refused after its first bytes, at no cost to anyone.

With the optional extension `_fastwire` built (setup.py), each of these functions is replaced by
its compiled twin, driven by per-struct plans built here (`_Plans`): same signatures, bytes, errors
and limits (tests/test_codec_paths.py holds one against the other); MSDBENCH_PURE_PYTHON=1 keeps
the generated Python.

Wire format: Thrift binary protocol. Requests may be strict (version word 0x8001) or non-strict
(Apache Thrift's strict_write=False); replies are always strict, which every Apache Thrift
reader accepts. Framing is the carrier's business (thrift_tcp detects it per connection).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from thriftpy2.thrift import TApplicationException, TType

__all__ = ["Limits", "Incomplete", "WireError", "ServiceCodec", "service_codec", "read_header",
           "positional", "CALL", "REPLY", "EXCEPTION", "ONEWAY"]

CALL, REPLY, EXCEPTION, ONEWAY = 1, 2, 3, 4
_VERSION_1 = 0x80010000
MAX_NAME = 1024  # a method name longer than this is not a call of any service


@dataclass(frozen=True)
class Limits:
    """What one message may declare. The defaults are far above any legitimate message of either
    suite (the largest, poll_list with 8192 i64, is ~64 KiB; a BEPS feed is well under 1 MiB)."""

    max_message_bytes: int = 16 << 20
    max_container_len: int = 1 << 20
    max_depth: int = 64

    @classmethod
    def from_settings(cls, wire: dict | None) -> "Limits":
        wire = wire or {}
        return cls(**{k: int(wire[k]) for k in ("max_message_bytes", "max_container_len")
                      if k in wire})


DEFAULT_LIMITS = Limits()


class Incomplete(Exception):
    """The message continues past the bytes at hand: retry once the buffer holds `need` bytes."""

    __slots__ = ("need",)

    def __init__(self, need: int):
        self.need = need


class WireError(Exception):
    """A message that is malformed or breaks a limit. `limit` says it was a limit (the reason
    names the limit and its value); `header` is (name, seqid) once those were read, so that the
    peer can be told with a TApplicationException."""

    def __init__(self, reason: str, limit: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.limit = limit
        self.header: tuple[str, int] | None = None


_i8, _i16, _i32, _i64, _dbl = (struct.Struct(f) for f in (">b", ">h", ">i", ">q", ">d"))
_u8i32 = struct.Struct(">bi")       # list/set header: element type, size
_u8u8i32 = struct.Struct(">bbi")    # map header: key type, value type, size
_hdr = struct.Struct(">bh")         # field header: type, id
_FIXED = {TType.BOOL: 1, TType.BYTE: 1, TType.I16: 2, TType.I32: 4, TType.I64: 8, TType.DOUBLE: 8}
_FMT = {TType.BOOL: "?", TType.BYTE: "b", TType.I16: "h", TType.I32: "i", TType.I64: "q",
        TType.DOUBLE: "d"}
_BINARY = 18  # thriftpy2's spec type for `binary` (STRING on the wire, bytes in Python)


def _wire(t: int) -> int:
    return TType.STRING if t == _BINARY else t


def _min_size(t: int) -> int:
    """The fewest bytes one value of wire type `t` takes (a struct: its stop byte)."""
    return {TType.STRING: 4, TType.STRUCT: 1, TType.LIST: 5, TType.SET: 5, TType.MAP: 6}.get(
        _wire(t), _FIXED.get(t, 1))


def _limit(what: str, n: int, limits_name: str, value: int) -> WireError:
    return WireError(f"{what} of {n} exceeds {limits_name}={value}", limit=True)


def _too_long(p: int, n: int, lim: int) -> WireError:
    return WireError(f"declared length {n} at byte {p} runs past max_message_bytes "
                     f"(message may end at byte {lim})", limit=True)


def _text(b, p: int, e: int):
    """A Thrift string as thriftpy2 decodes it: str, or bytes when it is not UTF-8."""
    raw = bytes(b[p:e])
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw


# ------------------------------------------------------------------------- generic skipping


def skip(b, p: int, end: int, lim: int, t: int, depth: int, limits: Limits) -> int:
    """Skip one value of wire type `t` at `p` (an unknown field, an unknown method's args): the
    same limits as decoding, and every byte counted must really be there."""
    if depth > limits.max_depth:
        raise _limit("nesting depth", depth, "max_depth", limits.max_depth)
    size = _FIXED.get(t)
    if size is not None:
        if p + size > end:
            raise Incomplete(p + size)
        return p + size
    if t == TType.STRING:
        if p + 4 > end:
            raise Incomplete(p + 4)
        n = _i32.unpack_from(b, p)[0]
        e = p + 4 + n
        if n < 0:
            raise WireError(f"negative string length {n} at byte {p}")
        if e > lim:
            raise _too_long(p, n, lim)
        if e > end:
            raise Incomplete(e)
        return e
    if t == TType.STRUCT:
        while True:
            if p >= end:
                raise Incomplete(p + 1)
            ft = b[p]
            if ft == TType.STOP:
                return p + 1
            p = skip(b, p + 3, end, lim, ft, depth + 1, limits) if p + 3 <= end else _more(p + 3)
    if t in (TType.LIST, TType.SET, TType.MAP):
        hsize = 6 if t == TType.MAP else 5
        if p + hsize > end:
            raise Incomplete(p + hsize)
        if t == TType.MAP:
            kt, vt, n = _u8u8i32.unpack_from(b, p)
            types = (kt, vt)
        else:
            et, n = _u8i32.unpack_from(b, p)
            types = (et,)
        p = _check_container(p + hsize, n, sum(_min_size(x) for x in types), lim, limits)
        fixed = [_FIXED.get(x) for x in types]
        if None not in fixed:
            e = p + n * sum(fixed)
            if e > end:
                raise Incomplete(e)
            return e
        for _ in range(n):
            for x in types:
                p = skip(b, p, end, lim, x, depth + 1, limits)
        return p
    raise WireError(f"unknown Thrift type {t} at byte {p}")


def _more(need: int):
    raise Incomplete(need)


def _check_container(p: int, n: int, min_elem: int, lim: int, limits: Limits) -> int:
    if n < 0:
        raise WireError(f"negative container size {n} at byte {p}")
    if n > limits.max_container_len:
        raise _limit("container size", n, "max_container_len", limits.max_container_len)
    if p + n * min_elem > lim:
        raise WireError(f"container of {n} elements at byte {p} cannot fit in max_message_bytes "
                        f"(message may end at byte {lim})", limit=True)
    return p


# ------------------------------------------------------------------------------ message header


def read_header(b, p: int, end: int, lim: int):
    """(name bytes, message type, seqid, position after the header), strict or non-strict."""
    if p + 4 > end:
        raise Incomplete(p + 4)
    w = _i32.unpack_from(b, p)[0]
    if w < 0:  # strict: version | type, then the name
        if (w & 0xFFFF0000) != _VERSION_1:
            raise WireError(f"bad Thrift binary version word {w & 0xFFFFFFFF:#010x}")
        mtype = w & 0xFF
        if p + 8 > end:
            raise Incomplete(p + 8)
        n = _i32.unpack_from(b, p + 4)[0]
        q = p + 8
    else:  # non-strict: the name's length first, the type after the name
        n, mtype, q = w, None, p + 4
    if n < 0 or n > MAX_NAME:
        raise WireError(f"method name length {n} (at most {MAX_NAME})")
    e = q + n + (4 if mtype is not None else 5)
    if e > lim:
        raise _too_long(p, n, lim)
    if e > end:
        raise Incomplete(e)
    name = bytes(b[q:q + n])
    if mtype is None:
        mtype = b[q + n]
        q += 1
    return name, mtype, _i32.unpack_from(b, q + n)[0], e


def message_header(name: str, mtype: int, seqid: int = 0) -> bytes:
    n = name.encode()
    return _i32.pack(_VERSION_1 - (1 << 32) | mtype) + _i32.pack(len(n)) + n + _i32.pack(seqid)


# ---------------------------------------------------------------------------- code generation


class _Gen:
    """Writes the decoder and encoder source of every struct class one service reaches."""

    def __init__(self, limits: Limits):
        self.limits = limits
        self.env = {
            "Incomplete": Incomplete, "WireError": WireError, "skip": skip, "text": _text,
            "i8": _i8, "i16": _i16, "i32": _i32, "i64": _i64, "dbl": _dbl, "hdr": _hdr,
            "u8i32": _u8i32, "u8u8i32": _u8u8i32, "check_container": _check_container,
            "too_long": _too_long, "limits": limits, "pack": struct.pack,
            "unpack_from": struct.unpack_from, "max_depth": limits.max_depth, "limit": _limit,
        }
        self.structs: dict[type, str] = {}  # class -> suffix of its dec_/enc_ functions
        self.sources: list[str] = []
        self._n = 0

    def _name(self, cls) -> str:
        if cls not in self.structs:
            self._n += 1
            key = f"{cls.__name__}_{self._n}"
            self.structs[cls] = key
            self.env["cls_" + key] = cls
            # exceptions must be made by BaseException.__new__ (it sets up .args)
            self.env["new_" + key] = (BaseException.__new__ if issubclass(cls, BaseException)
                                      else object.__new__)
            self.sources.append(self.struct_source(cls, key))
        return self.structs[cls]

    def _var(self, stem: str) -> str:
        self._n += 1
        return f"{stem}{self._n}"

    # -- reading -----------------------------------------------------------------------------
    def read(self, out: list, ind: str, t: int, extra, target: str) -> None:
        """Lines that read one value of spec (t, extra) at `p` into `target`, advancing p."""
        w = _wire(t)
        if t in _FIXED:
            s = _FIXED[t]
            fmt = {1: "i8", 2: "i16", 4: "i32", 8: "i64"}[s] if t != TType.DOUBLE else "dbl"
            out.append(f"{ind}if p + {s} > end: raise Incomplete(p + {s})")
            expr = f"b[p] != 0" if t == TType.BOOL else f"{fmt}.unpack_from(b, p)[0]"
            out.append(f"{ind}{target} = {expr}; p += {s}")
        elif w == TType.STRING:
            n = self._var("n")
            out += [f"{ind}if p + 4 > end: raise Incomplete(p + 4)",
                    f"{ind}{n} = i32.unpack_from(b, p)[0]; p += 4",
                    f"{ind}if {n} < 0: raise WireError('negative string length at byte %d' % p)",
                    f"{ind}if p + {n} > lim: raise too_long(p, {n}, lim)",
                    f"{ind}if p + {n} > end: raise Incomplete(p + {n})"]
            expr = f"bytes(b[p:p + {n}])" if t == _BINARY else f"text(b, p, p + {n})"
            out.append(f"{ind}{target} = {expr}; p += {n}")
        elif w == TType.STRUCT:
            key = self._name(extra)
            out.append(f"{ind}{target}, p = dec_{key}(b, p, end, lim, depth + 1)")
        elif w in (TType.LIST, TType.SET):
            et, ex = (extra, None) if isinstance(extra, int) else extra
            n, v = self._var("n"), self._var("v")
            out += [f"{ind}if p + 5 > end: raise Incomplete(p + 5)",
                    f"{ind}et, {n} = u8i32.unpack_from(b, p); p += 5",
                    f"{ind}if et != {_wire(et)}:",
                    f"{ind}    p = skip(b, p - 5, end, lim, {w}, depth + 1, limits); {target} = None",
                    f"{ind}else:",
                    f"{ind}    check_container(p, {n}, {_min_size(et)}, lim, limits)"]
            if et in _FIXED and et != TType.BOOL:
                s = _FIXED[et]
                out += [f"{ind}    if p + {s} * {n} > end: raise Incomplete(p + {s} * {n})",
                        f"{ind}    {target} = list(unpack_from('>%d{_FMT[et]}' % {n}, b, p)); "
                        f"p += {s} * {n}"]
            else:
                out += [f"{ind}    {target} = []",
                        f"{ind}    for _ in range({n}):"]
                self.read(out, ind + "        ", et, ex, v)
                out.append(f"{ind}        {target}.append({v})")
            if w == TType.SET:
                out.append(f"{ind}    {target} = set({target})")
        elif w == TType.MAP:
            (kt, kx), (vt, vx) = [(s, None) if isinstance(s, int) else s for s in extra]
            n, k, v = self._var("n"), self._var("k"), self._var("v")
            out += [f"{ind}if p + 6 > end: raise Incomplete(p + 6)",
                    f"{ind}kt, vt, {n} = u8u8i32.unpack_from(b, p); p += 6",
                    f"{ind}if {n} and (kt != {_wire(kt)} or vt != {_wire(vt)}):",
                    f"{ind}    p = skip(b, p - 6, end, lim, {w}, depth + 1, limits); {target} = None",
                    f"{ind}else:",
                    f"{ind}    check_container(p, {n}, {_min_size(kt) + _min_size(vt)}, lim, limits)",
                    f"{ind}    {target} = {{}}",
                    f"{ind}    for _ in range({n}):"]
            self.read(out, ind + "        ", kt, kx, k)
            self.read(out, ind + "        ", vt, vx, v)
            out.append(f"{ind}        {target}[{k}] = {v}")
        else:
            raise TypeError(f"Thrift type {t} is not supported by the codec")

    def read_fields(self, cls, out: list, ind: str, names: list[str]) -> None:
        """The field loop of a struct: fields by id into local variables f_<name>."""
        spec = cls.thrift_spec
        out += [f"{ind}if depth > max_depth: raise limit('nesting depth', depth, 'max_depth', max_depth)",
                f"{ind}while True:",
                f"{ind}    if p >= end: raise Incomplete(p + 1)",
                f"{ind}    t = b[p]",
                f"{ind}    if t == 0: p += 1; break",
                f"{ind}    if p + 3 > end: raise Incomplete(p + 3)",
                f"{ind}    fid = i16.unpack_from(b, p + 1)[0]; p += 3"]
        kw = "if"
        for fid, s in spec.items():
            t, extra = s[0], (s[2] if len(s) > 3 else None)
            out.append(f"{ind}    {kw} fid == {fid} and t == {_wire(t)}:")
            self.read(out, ind + "        ", t, extra, f"f_{s[1]}")
            kw = "elif"
        out.append(f"{ind}    {kw + ' True' if kw == 'elif' else 'if True'}:")
        out.append(f"{ind}        p = skip(b, p, end, lim, t, depth + 1, limits)")

    # -- writing -----------------------------------------------------------------------------
    def write(self, out: list, ind: str, t: int, extra, v: str) -> None:
        """Lines that append value `v` of spec (t, extra) to bytearray `o`."""
        w = _wire(t)
        if t in _FIXED:
            fmt = {TType.BOOL: "i8", TType.BYTE: "i8", TType.I16: "i16", TType.I32: "i32",
                   TType.I64: "i64", TType.DOUBLE: "dbl"}[t]
            val = f"1 if {v} else 0" if t == TType.BOOL else v
            out.append(f"{ind}o += {fmt}.pack({val})")
        elif w == TType.STRING:
            s = self._var("s")
            out += [f"{ind}{s} = {v}.encode() if {v}.__class__ is str else {v}",
                    f"{ind}o += i32.pack(len({s})); o += {s}"]
        elif w == TType.STRUCT:
            out.append(f"{ind}enc_{self._name(extra)}(o, {v})")
        elif w in (TType.LIST, TType.SET):
            et, ex = (extra, None) if isinstance(extra, int) else extra
            out.append(f"{ind}o += u8i32.pack({_wire(et)}, len({v}))")
            if et in _FIXED and et != TType.BOOL:
                out.append(f"{ind}o += pack('>%d{_FMT[et]}' % len({v}), *{v})")
            else:
                e = self._var("e")
                out.append(f"{ind}for {e} in {v}:")
                self.write(out, ind + "    ", et, ex, e)
        elif w == TType.MAP:
            (kt, kx), (vt, vx) = [(s, None) if isinstance(s, int) else s for s in extra]
            k, x = self._var("k"), self._var("x")
            out += [f"{ind}o += u8u8i32.pack({_wire(kt)}, {_wire(vt)}, len({v}))",
                    f"{ind}for {k}, {x} in {v}.items():"]
            self.write(out, ind + "    ", kt, kx, k)
            self.write(out, ind + "    ", vt, vx, x)
        else:
            raise TypeError(f"Thrift type {t} is not supported by the codec")

    def write_field(self, out: list, ind: str, fid: int, s, v: str) -> None:
        t, extra = s[0], (s[2] if len(s) > 3 else None)
        out.append(f"{ind}o += {_hdr.pack(_wire(t), fid)!r}")
        self.write(out, ind, t, extra, v)

    def struct_source(self, cls, key: str) -> str:
        """dec_<key>(b, p, end, lim, depth) -> (instance, p) and enc_<key>(o, instance)."""
        spec = cls.thrift_spec
        names = [s[1] for s in spec.values()]
        defaults = dict(getattr(cls, "default_spec", []))
        out = [f"def dec_{key}(b, p, end, lim, depth):"]
        out += [f"    f_{n} = {defaults.get(n)!r}" for n in names]
        self.read_fields(cls, out, "    ", names)
        out += [f"    obj = new_{key}(cls_{key})",
                f"    obj.__dict__.update({{{', '.join(f'{n!r}: f_{n}' for n in names)}}})",
                "    return obj, p",
                f"def enc_{key}(o, obj):"]
        for fid, s in spec.items():
            v = self._var("v")
            out.append(f"    {v} = obj.{s[1]}")
            out.append(f"    if {v} is not None:")
            self.write_field(out, "        ", fid, s, v)
        out.append("    o += b'\\x00'")
        return "\n".join(out)

    def compile(self, source: str, label: str) -> dict:
        code = "\n\n".join(self.sources + [source])
        self.sources = []
        exec(compile(code, f"<msdbench codec {label}>", "exec"), self.env)
        return self.env


# ------------------------------------------------------------------------ the compiled twin


class _Plans:
    """The plans `_fastwire` runs on (per struct: field ids, wire types, slots), built once."""

    def __init__(self, limits: Limits):
        self.maxc, self.maxd = limits.max_container_len, limits.max_depth
        self.structs: dict[type, object] = {}

    def value(self, t: int, extra):
        w = _wire(t)
        st = e = v = None
        if w == TType.STRUCT:
            st = self.struct(extra)
        elif w in (TType.LIST, TType.SET):
            e = self.value(*((extra, None) if isinstance(extra, int) else extra))
        elif w == TType.MAP:
            (kt, kx), (vt, vx) = [(x, None) if isinstance(x, int) else x for x in extra]
            e, v = self.value(kt, kx), self.value(vt, vx)
        return _fast.TPlan(t, w, _min_size(t), st, e, v, self.maxc, self.maxd)

    def _fields(self, sp, mode, cls, items, slots, names, defaults, has_success=0, name=""):
        """items: (fid, spec) in output order."""
        new = BaseException.__new__ if isinstance(cls, type) and issubclass(
            cls, BaseException) else object.__new__
        sp.setup(mode, cls, new, tuple(f for f, _ in items),
                 tuple(_wire(s[0]) for _, s in items),
                 tuple(self.value(s[0], s[2] if len(s) > 3 else None) for _, s in items),
                 tuple(slots), tuple(names), tuple(defaults), self.maxd, self.maxc, has_success,
                 name)
        return sp

    def struct(self, cls):
        sp = self.structs.get(cls)
        if sp is None:
            sp = self.structs[cls] = _fast.SPlan()
            items = list(cls.thrift_spec.items())
            names = [s[1] for _, s in items]
            defaults = dict(getattr(cls, "default_spec", []) or [])
            self._fields(sp, 1, cls, items, range(len(items)), names,
                         [defaults.get(n) for n in names], name=cls.__name__)
        return sp

    def args(self, args_cls, arg_names: list[str]):
        items = list(args_cls.thrift_spec.items())
        slots = [arg_names.index(s[1]) for _, s in items]
        return self._fields(_fast.SPlan(), 0, None, items, slots, arg_names,
                            [None] * len(arg_names))

    def result(self, result_cls, name: str):
        spec = result_cls.thrift_spec
        items = ([(0, spec[0])] if 0 in spec else []) + sorted(
            (f, s) for f, s in spec.items() if f != 0)
        return self._fields(_fast.SPlan(), 2, None, items, range(len(items)),
                            [s[1] for _, s in items], [None] * len(items),
                            has_success=int(0 in spec), name=name)


def _load_compiled():
    """The compiled codec, unless MSDBENCH_PURE_PYTHON is set or it was not built."""
    if os.environ.get("MSDBENCH_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from msdbench.transports import _fastwire
    except ImportError:
        return None
    return _fastwire


# ------------------------------------------------------------------------------- per method


class Method:
    """One IDL method's precomputed wire pieces and generated functions.

    Server side: `decode_args(b, p, end, lim) -> (args tuple, p)` in the handler's argument order;
    `encode_reply(o, seqid, value)`; `encode_throw(o, seqid, exc)` for a declared exception (returns
    False when `exc` is not declared). Client side: `encode_call(o, *args)` (seqid 0) and
    `decode_result(b, p, end, lim)` -> the value, or raises the declared exception.
    """

    __slots__ = ("name", "oneway", "nargs", "arg_names", "throws", "decode_args", "encode_reply",
                 "encode_throw", "encode_call", "decode_result", "reply_prefix", "call_header",
                 "pure")

    def __init__(self, service, name: str, gen: _Gen):
        self.name = name
        args_cls = getattr(service, name + "_args")
        result_cls = getattr(service, name + "_result")
        self.oneway = bool(getattr(result_cls, "oneway", False))
        aspec = args_cls.thrift_spec
        # The handler's argument order is the generated __init__'s (declaration order).
        self.arg_names = [n for n, _ in getattr(args_cls, "default_spec", [])] or \
            [s[1] for s in aspec.values()]
        by_name = {s[1]: (fid, s) for fid, s in aspec.items()}
        rspec = result_cls.thrift_spec
        success = rspec.get(0)
        self.throws = [(fid, s[1], s[2]) for fid, s in sorted(rspec.items()) if fid != 0]
        self.nargs = len(self.arg_names)
        ident = "".join(c if c.isalnum() else "_" for c in f"{service.__name__}_{name}")
        self.call_header = message_header(name, ONEWAY if self.oneway else CALL)
        self.reply_prefix = message_header(name, REPLY)[:-4]
        L: list[str] = []
        # server: args -> tuple
        L.append(f"def decode_args_{ident}(b, p, end, lim, depth=0):")
        L += [f"    f_{n} = None" for n in self.arg_names]
        gen.read_fields(args_cls, L, "    ", self.arg_names)
        tup = ", ".join(f"f_{n}" for n in self.arg_names)
        L.append(f"    return ({tup}{',' if self.nargs == 1 else ''}), p")
        # server: reply
        prefix = self.reply_prefix
        L.append(f"def encode_reply_{ident}(o, seqid, value):")
        L.append(f"    o += {prefix!r}; o += i32.pack(seqid)")
        if success is not None:
            L.append("    if value is not None:")
            gen.write_field(L, "        ", 0, success, "value")
        L.append("    o += b'\\x00'")
        L.append(f"def encode_throw_{ident}(o, seqid, exc):")
        for fid, fname, cls in self.throws:
            L.append(f"    if isinstance(exc, cls_{gen._name(cls)}):")
            L.append(f"        o += {prefix!r}; o += i32.pack(seqid)")
            gen.write_field(L, "        ", fid, (TType.STRUCT, fname, cls, False), "exc")
            L.append("        o += b'\\x00'; return True")
        L.append("    return False")
        # client: call
        params = ", ".join(f"a_{n}" for n in self.arg_names)
        L.append(f"def encode_call_{ident}(o{', ' if params else ''}{params}):")
        L.append(f"    o += {self.call_header!r}")
        for n in self.arg_names:
            fid, s = by_name[n]
            L.append(f"    if a_{n} is not None:")
            gen.write_field(L, "        ", fid, s, f"a_{n}")
        L.append("    o += b'\\x00'")
        # client: result -> value or raise
        L.append(f"def decode_result_{ident}(b, p, end, lim, depth=0):")
        rnames = [s[1] for s in rspec.values()]
        L += [f"    f_{n} = None" for n in rnames]
        gen.read_fields(result_cls, L, "    ", rnames)
        for _, fname, _ in self.throws:
            L.append(f"    if f_{fname} is not None: raise f_{fname}")
        if success is not None:
            L.append("    if f_success is None: raise MissingResult(%r)" % name)
            L.append("    return f_success, p")
        else:
            L.append("    return None, p")
        env = gen.compile("\n".join(L), f"{service.__name__}.{name}")
        # the generated Python, kept beside the compiled twins (tests hold one against the other)
        self.pure = {part: env[f"{part}_{ident}"] for part in (
            "decode_args", "encode_reply", "encode_throw", "encode_call", "decode_result")}
        for part, fn in self.pure.items():
            setattr(self, part, fn)
        if _fast is not None:  # the compiled twins, same signatures
            plans = gen.plans
            args_plan = plans.args(args_cls, self.arg_names)
            self.decode_args = _fast.StructDecoder(args_plan)
            self.encode_call = _fast.CallEncoder(self.call_header, args_plan)
            self.decode_result = _fast.StructDecoder(plans.result(result_cls, name))
            self.encode_reply = _fast.ReplyEncoder(
                prefix, None if success is None else plans.value(success[0], (
                    success[2] if len(success) > 3 else None)))
            self.encode_throw = _fast.ThrowEncoder(prefix, tuple(
                (fid, cls, plans.value(TType.STRUCT, cls)) for fid, _, cls in self.throws))


def _missing_result(name: str) -> TApplicationException:
    return TApplicationException(TApplicationException.MISSING_RESULT, f"{name} returned no result")


_fast = _load_compiled()
if _fast is not None:
    _fast.init(Incomplete, WireError, _too_long, _limit, _missing_result)
    read_header = _fast.read_header  # noqa: F811 (the compiled twin, same signature)
COMPILED = _fast is not None  # which path this process runs (tests and `msdbench bench` say)
compiled = _fast  # the compiled module (thrift_tcp also runs its loop and client from it), or None


def set_checks(on: bool) -> None:
    """Compiled codec only: turn the limit checks off, to measure their cost (`msdbench bench`'s
    "unchecked" server). Never for serving anything else."""
    _fast.set_checks(on)


class ServiceCodec:
    """Every method of one IDL service, by name (str) and by wire name (bytes)."""

    def __init__(self, service, limits: Limits = DEFAULT_LIMITS):
        self.service = service
        self.limits = limits
        gen = _Gen(limits)
        gen.env["MissingResult"] = _missing_result
        gen.plans = _Plans(limits) if _fast is not None else None
        self.methods = {name: Method(service, name, gen) for name in service.thrift_services}
        self.by_wire = {name.encode(): m for name, m in self.methods.items()}
        self._app_exc = gen._name(TApplicationException)
        gen.compile("", "TApplicationException")
        self.encode_app_exc_struct = gen.env[f"enc_{self._app_exc}"]
        self.decode_app_exc_struct = gen.env[f"dec_{self._app_exc}"]
        if _fast is not None:
            plan = gen.plans.struct(TApplicationException)
            self.encode_app_exc_struct = _fast.StructEncoder(plan)
            self.decode_app_exc_struct = _fast.StructDecoder(plan)

    def encode_app_exception(self, o: bytearray, name, seqid: int, exc) -> None:
        """An EXCEPTION message carrying a TApplicationException."""
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        o += message_header(name, EXCEPTION, seqid)
        self.encode_app_exc_struct(o, exc)

    def error_reply(self, m: Method, seqid: int, e: Exception) -> bytearray:
        """The reply to a call whose handler raised `e`: the declared exception in the result, or
        a TApplicationException (an undeclared one becomes INTERNAL_ERROR "Type: message", so a
        handler bug fails one call, not the service); empty for a oneway call."""
        o = bytearray()
        if m.oneway or m.encode_throw(o, seqid, e):
            return o
        if not isinstance(e, TApplicationException):
            e = TApplicationException(TApplicationException.INTERNAL_ERROR,
                                      f"{type(e).__name__}: {e}")
        self.encode_app_exception(o, m.name, seqid, e)
        return o

    def decode_app_exception(self, b, p: int, end: int, lim: int):
        return self.decode_app_exc_struct(b, p, end, lim, 0)[0]

    def unusual_reply(self, name: str, b, end: int, lim: int):
        """A reply that is not method `name`'s plain REPLY (the fast path checks that by prefix):
        an EXCEPTION message (raised), or a REPLY another way (decoded), or a wrong message."""
        rname, mtype, _seqid, p = read_header(b, 0, end, lim)
        if mtype == EXCEPTION:
            raise self.decode_app_exception(b, p, end, lim)
        if rname != name.encode() or mtype != REPLY:
            raise TApplicationException(TApplicationException.WRONG_METHOD_NAME,
                                        f"{name}: got message {rname!r} of type {mtype}")
        return self.methods[name].decode_result(b, p, end, lim)[0]


def positional(m: Method, a: tuple, kw: dict) -> tuple:
    """A call's arguments in the IDL's order, from positional and keyword arguments."""
    names = m.arg_names
    if len(a) + len(kw) > len(names) or set(kw) - set(names[len(a):]):
        raise TypeError(f"{m.name}() takes the arguments {names}")
    return tuple(a) + tuple(kw.get(n) for n in names[len(a):])


_CODECS: dict[tuple[int, Limits], ServiceCodec] = {}


def service_codec(service, limits: Limits = DEFAULT_LIMITS) -> ServiceCodec:
    """The codec of `service` under `limits`, generated on first use and kept."""
    key = (id(service), limits)
    codec = _CODECS.get(key)
    if codec is None or codec.service is not service:
        codec = _CODECS[key] = ServiceCodec(service, limits)
    return codec
