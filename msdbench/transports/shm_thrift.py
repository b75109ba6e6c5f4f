"""Thrift over the shared-memory channel: the `specialized` platform's binding between two
isolation domains of one host.

Same IDL, same wire encoding as `thrift_tcp` (thriftpy2's Cython binary protocol, a standard
Thrift message: name, type, seqid, struct), only the carrier differs: each call's message is one
`ShmClient.call` (msdbench/transports/shm.py) instead of bytes through a TCP socket.

    server = ShmThriftServer(thrift_service)      # bound now: .address is valid at once
    server.start(handler)                         # serve `handler`'s IDL methods
    client = ShmThriftClient(thrift_service, server.address)
    client.poll(b"...")                           # any IDL method, as on a thriftpy2 TClient
    client.close(); server.close()

Semantics, as over TCP (thrift_tcp.Processor):
* an IDL exception raised by the handler reaches the caller as the same exception type;
* an unknown method gives `TApplicationException(UNKNOWN_METHOD)`;
* a handler's undeclared exception gives `TApplicationException(INTERNAL_ERROR, "Type: message")`
  and the service keeps serving;
* except a transport failure the handler met further down (OSError such as `shm.PeerDied`,
  `shm.RemoteError`, TTransportException: its own callee died): that fails the caller's call as
  `shm.RemoteError` (remote type and traceback inside), which the drivers raise; a dead callee
  thus ends a cell with an error all the way up the chain instead of a column of wrong answers;
* a dead server makes a pending or later call raise `shm.PeerDied` (a ConnectionError);
* `client.sock` is the channel's setup socket: `thrift_tcp.Deadline.watch(client.sock)` bounds a
  stuck run (shutting it down makes a blocked call raise PeerDied).

The hot path is lean on purpose (profiled with py-spy; measured by `msdbench bench`).
Client: each IDL method is a closure over what it needs, looked up once; the call header is
precomputed bytes, the args and result structs are reused (reset with one dict update), the reply
header is checked by prefix and skipped instead of parsed; no TClient __getattr__ or
functools.partial. Server: a per-method dispatch table instead of TProcessor.process_in's per-call
lookups and closure; the header parsed with one struct.unpack; buffers and structs per serving
thread (the channel runs one thread per client). About 1 us less per round trip than the stock
code paths; what is left is the Cython protocol itself and the channel's two wake-ups.

A client is for one thread at a time (like a thriftpy2 TClient): its buffers and structs are
shared by its calls. The LB holds one lock per worker; the drivers call from one thread.
"""

from __future__ import annotations

import operator
import struct
import threading

from thriftpy2.protocol.cybin import TCyBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor
from thriftpy2.transport import TTransportException
from thriftpy2.transport.memory import TCyMemoryBuffer

from msdbench.transports.shm import PeerDied, RemoteError, ShmClient, ShmServer

__all__ = ["ShmThriftServer", "ShmThriftClient", "PeerDied", "RemoteError", "SLOT_SIZE"]

# One message travels in one piece up to this size (the micro suite's largest request, 8192 i64 in
# list mode, is ~72 KiB with its envelope); larger ones are chunked by the channel.
SLOT_SIZE = 256 * 1024
_BUF = 16 * 1024  # initial size of a memory buffer; it grows to the largest message and stays
_CALL, _REPLY, _EXCEPTION = TMessageType.CALL, TMessageType.REPLY, TMessageType.EXCEPTION
_RESERVED = ("close", "sock")  # stub attributes an IDL method may not shadow (thriftpy2: "tclose")


def _arg_names(args_cls) -> list[str]:
    """The argument names in the order a handler receives them (as TProcessor does)."""
    return [spec[1] for spec in args_cls.thrift_spec.values()]


def _exceptions(result_cls) -> list[tuple[str, type]]:
    """(field name, exception class) of the declared throws, in field-id order."""
    spec = result_cls.thrift_spec
    return [(spec[k][1], spec[k][2]) for k in sorted(spec) if spec[k][1] != "success"]


# ------------------------------------------------------------------------------------- server


def _header(name: str, mtype: int, seqid: int = 0) -> bytes:
    """A message header as TCyBinaryProtocol writes it (strict: version | type, name, seqid)."""
    buf = TCyMemoryBuffer()
    TCyBinaryProtocol(buf).write_message_begin(name, mtype, seqid)
    return buf.getvalue()


_VERSION_TYPE_LEN = struct.Struct("!iI")
# Failures of a call this handler made further down (its callee died, its link broke): they are not
# the handler's answer, so they fail the caller's call as a transport failure too (RemoteError at
# the caller, which the drivers raise) instead of becoming a TApplicationException (an answer).
_TRANSPORT_FAILURES = (OSError, RemoteError, TTransportException)
_VERSION_MASK, _VERSION_1 = -65536, -2147418112  # 0xffff0000, 0x80010000 as int32 (strict binary)


class _Method:
    """One IDL method as the server dispatches it: everything TProcessor.process_in looks up on
    every call, looked up once."""

    __slots__ = ("name", "args_cls", "result_cls", "blank_args", "fn", "get_args", "nargs",
                 "throws", "exc_types", "oneway", "hlen", "reply_prefix")

    def __init__(self, service, name: str, handler):
        self.name = name
        self.args_cls = getattr(service, name + "_args")
        self.result_cls = getattr(service, name + "_result")
        names = _arg_names(self.args_cls)
        self.blank_args = self.args_cls().__dict__.copy()  # the defaults of every argument
        self.fn = getattr(handler, name)
        self.nargs = len(names)
        self.get_args = operator.attrgetter(*names) if names else None
        self.throws = _exceptions(self.result_cls)
        self.exc_types = tuple(cls for _, cls in self.throws)
        self.oneway = bool(getattr(self.result_cls, "oneway", False))
        self.hlen = len(_header(name, _CALL))
        self.reply_prefix = _header(name, _REPLY)[:-4]  # without the seqid


class _ThreadState:
    """A serving thread's buffers, and its dispatch table: per method, a closure over this
    thread's buffers and reusable structs (the channel runs one thread per client)."""

    __slots__ = ("ib", "ip", "ob", "op", "table")

    def __init__(self, methods: dict[bytes, _Method], fail):
        self.ib, self.ob = TCyMemoryBuffer(buf_size=_BUF), TCyMemoryBuffer(buf_size=_BUF)
        self.ip, self.op = TCyBinaryProtocol(self.ib), TCyBinaryProtocol(self.ob)
        self.table = {name: _serve_method(m, self, fail) for name, m in methods.items()}


def _serve_method(m: _Method, st: _ThreadState, fail):
    """`serve(request, seqid_bytes) -> reply` for one method on one thread: the common path with
    every lookup done once; an exception from the handler goes to `fail`."""
    args, result = m.args_cls(), m.result_cls()
    reset, blank = args.__dict__.update, m.blank_args
    setvalue, skip, read_struct = st.ib.setvalue, st.ib.read, st.ip.read_struct
    out, write_struct, getvalue = st.ob.setvalue, st.op.write_struct, st.ob.getvalue
    fn, get, hlen, prefix, nargs, oneway = m.fn, m.get_args, m.hlen, m.reply_prefix, m.nargs, m.oneway

    def serve(request, seq):
        reset(blank)  # read_struct sets only the fields the message has
        setvalue(request)
        skip(hlen)  # the header, parsed by the caller
        read_struct(args)
        try:
            if nargs == 1:
                result.success = fn(get(args))
            elif nargs:
                result.success = fn(*get(args))
            else:
                result.success = fn()
        except Exception as e:
            return fail(m, st, result, seq, e)
        if oneway:
            return b""
        out(prefix + seq)
        write_struct(result)
        return getvalue()

    return serve


class ShmThriftServer:
    """A Thrift service over a `ShmServer`: bound in the constructor, served after `.start`.

    The channel accepts clients from the constructor on (two-phase bring-up: a peer domain may
    connect its stubs before this domain has built its handler; a shm client's handshake needs the
    server's answer, unlike a TCP connect, which the kernel's backlog completes). A call that
    arrives before `start(handler)` waits for it.

    `processor` is the TProcessor of the handler (for reference and for tools); calls go through
    an equivalent per-method dispatch table (declared exceptions into the result struct; a
    TApplicationException, or an undeclared exception as INTERNAL_ERROR, as an EXCEPTION message;
    a transport failure further down fails the call: see the module's docstring), which saves
    about a microsecond a call.
    """

    def __init__(self, thrift_service, *, slot_size: int = SLOT_SIZE, socket_dir: str | None = None,
                 spin_us: float = 0.0, name_prefix: str | None = None):
        self.thrift_service = thrift_service
        self.processor: TProcessor | None = None
        self._methods: dict[bytes, _Method] = {}
        self._local = threading.local()
        self._started = threading.Event()
        self._server = ShmServer(self._handle, name_prefix or thrift_service.__name__.lower(),
                                 slot_size, socket_dir=socket_dir, spin_us=spin_us)
        self._server.start()

    @property
    def address(self) -> str:
        """The channel's address (a Unix socket path) for `ShmThriftClient`."""
        return self._server.address

    def start(self, handler) -> "ShmThriftServer":
        service = self.thrift_service
        self.processor = TProcessor(service, handler)
        self._methods = {name.encode(): _Method(service, name, handler)
                         for name in service.thrift_services}
        self._started.set()
        return self

    def _table(self) -> dict:
        st = self._local.state = _ThreadState(self._methods, self._fail)
        self._local.table = st.table
        return st.table

    def _handle(self, request: bytes) -> bytes:
        """The channel's handler: one Thrift message in, one out (TProcessor.process, leaner)."""
        try:
            table = self._local.table
        except AttributeError:
            table = self._table()
        vt, n = _VERSION_TYPE_LEN.unpack_from(request)
        if vt & _VERSION_MASK != _VERSION_1:
            raise ValueError(f"not a strict Thrift binary message (version word {vt:#x})")
        serve = table.get(request[8:8 + n])
        if serve is None:
            return self._not_in_table(request, n)
        return serve(request, request[8 + n:12 + n])

    def _not_in_table(self, request: bytes, n: int) -> bytes:
        if not self._started.is_set():
            self._started.wait()  # a call before start(handler): bring-up is still going on
        name, seq = request[8:8 + n], request[8 + n:12 + n]
        if name in self._methods:  # this thread's table was made before start()
            return self._table()[name](request, seq)
        st = self._local.state
        st.ob.setvalue(_header(name.decode(errors="replace"), _EXCEPTION,
                               int.from_bytes(seq, "big", signed=True)))
        st.op.write_struct(TApplicationException(
            TApplicationException.UNKNOWN_METHOD,
            f"{self.thrift_service.__name__} has no method {name.decode(errors='replace')!r}"))
        return st.ob.getvalue()

    @staticmethod
    def _fail(m: _Method, st: _ThreadState, result, seq: bytes, e: Exception) -> bytes:
        """The handler raised `e`: the reply that says so, as TProcessor would (or re-raise a
        transport failure, which fails the caller's call: see the module's docstring)."""
        if isinstance(e, _TRANSPORT_FAILURES):
            raise e
        if m.oneway:
            return b""
        ob, op = st.ob, st.op
        if isinstance(e, m.exc_types):
            result.success = None
            for field, cls in m.throws:
                if isinstance(e, cls):
                    setattr(result, field, e)
                    break
            ob.setvalue(m.reply_prefix + seq)
            try:
                op.write_struct(result)
            finally:
                for field, _ in m.throws:  # the reused result is clean again for the next call
                    setattr(result, field, None)
            return ob.getvalue()
        if not isinstance(e, TApplicationException):  # a handler bug: the service keeps serving
            e = TApplicationException(TApplicationException.INTERNAL_ERROR,
                                      f"{type(e).__name__}: {e}")
        ob.setvalue(_header(m.name, _EXCEPTION, int.from_bytes(seq, "big", signed=True)))
        op.write_struct(e)
        return ob.getvalue()

    def close(self, timeout: float = 1.0) -> None:
        """Stop serving; connected clients' calls raise PeerDied. Waits up to `timeout` for the
        serving threads (a handler still running, e.g. stuck, is left to its daemon thread).
        Idempotent."""
        self._started.set()  # a call parked before start() answers UNKNOWN_METHOD and ends
        self._server.close(timeout)

    def __enter__(self) -> "ShmThriftServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------- client


def _make_method(name: str, service, call, wbuf, wprot, rbuf, rprot):
    """One IDL method of a stub: a closure with everything a call needs already looked up.

    Per call: the precomputed header into the write buffer, the reused args struct filled in and
    written, one channel call, the reply's header checked by prefix and skipped, the reused result
    struct read. (thriftpy2's TClient looks the classes up by name, builds both structs and
    parses both headers on every call: ~1.3 us more here.)
    """
    args_cls = getattr(service, name + "_args")
    result_cls = getattr(service, name + "_result")
    names = _arg_names(args_cls)
    nargs = len(names)
    first = names[0] if names else None
    # The generated __init__ takes the fields in declaration order; the slow path maps positional
    # arguments to the IDL's argument order itself (what TClient's args_to_kwargs does).
    init_order = list(args_cls.__init__.__code__.co_varnames[1:nargs + 1])
    positional_ok = init_order == names
    has_success = "success" in {s[1] for s in result_cls.thrift_spec.values()}
    throws = tuple(field for field, _ in _exceptions(result_cls))
    oneway = bool(getattr(result_cls, "oneway", False))
    call_header = _header(name, TMessageType.ONEWAY if oneway else _CALL)
    reply_header = _header(name, _REPLY)
    hlen = len(reply_header)
    args_obj = args_cls()
    adict = args_obj.__dict__
    result = result_cls()
    blank_result = result.__dict__.copy()
    rdict = result.__dict__
    getvalue, setvalue, read, wset = wbuf.getvalue, rbuf.setvalue, rbuf.read, wbuf.setvalue
    write_struct, read_struct = wprot.write_struct, rprot.read_struct

    def slow_args(args, kwargs):
        if args and not positional_ok:
            kwargs = dict(kwargs)
            kwargs.update(zip(names, args))
            args = ()
        return args_cls(*args, **kwargs)

    def decode_other(reply):
        """A reply that is not a plain REPLY of this method: an exception, or a broken peer."""
        setvalue(reply)
        fname, mtype, _seqid = rprot.read_message_begin()
        if mtype == _EXCEPTION:
            x = TApplicationException()
            read_struct(x)
            raise x
        raise TApplicationException(TApplicationException.INVALID_MESSAGE_TYPE,
                                    f"{name}: unexpected reply {fname!r} of type {mtype}")

    def method(*args, **kwargs):
        wset(call_header)
        if kwargs or len(args) != nargs:
            write_struct(slow_args(args, kwargs))
        else:
            if nargs == 1:
                adict[first] = args[0]
            elif nargs:
                adict.update(zip(names, args))
            write_struct(args_obj)
        reply = call(getvalue())
        if oneway:
            return None
        if not reply.startswith(reply_header):
            decode_other(reply)
        setvalue(reply)
        read(hlen)
        rdict.update(blank_result)  # read_struct sets only the fields the reply has
        read_struct(result)
        if has_success:
            value = rdict["success"]
            if value is not None:
                rdict["success"] = None  # hold no reference to the caller's data
                return value
        for field in throws:
            exc = rdict[field]
            if exc is not None:
                rdict[field] = None
                raise exc
        if has_success:
            raise TApplicationException(TApplicationException.MISSING_RESULT,
                                        f"{name} returned no result")
        return None

    method.__name__ = method.__qualname__ = name
    return method


class ShmThriftClient:
    """A stub with the IDL methods of `thrift_service`, reaching a `ShmThriftServer` at `address`.

    An IDL method named like a reserved attribute (close, sock) is reachable as `t<name>`, as on a
    thriftpy2 TClient.
    """

    def __init__(self, thrift_service, address: str, connect_timeout: float = 5.0, *,
                 spin_us: float = 0.0):
        self.thrift_service = thrift_service
        self.address = address
        self._channel = ShmClient(address, connect_timeout, spin_us=spin_us)
        self.sock = self._channel.sock
        wbuf, rbuf = TCyMemoryBuffer(buf_size=_BUF), TCyMemoryBuffer(buf_size=_BUF)
        wprot, rprot = TCyBinaryProtocol(wbuf), TCyBinaryProtocol(rbuf)
        call = self._channel.call
        for name in thrift_service.thrift_services:
            attr = "t" + name if name in _RESERVED else name
            setattr(self, attr, _make_method(name, thrift_service, call, wbuf, wprot, rbuf, rprot))

    @property
    def alive(self) -> bool:
        return self._channel.alive

    def close(self) -> None:
        """End the link; never raises."""
        self._channel.close()

    def __enter__(self) -> "ShmThriftClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
