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

Semantics, as over TCP:
* an IDL exception raised by the handler reaches the caller as the same exception type;
* an unknown method gives `TApplicationException(UNKNOWN_METHOD)`;
* a handler's undeclared exception fails the call (over TCP the server drops the connection; here
  the caller gets `shm.RemoteError` with the remote traceback and the link stays usable);
* a dead server makes a pending or later call raise `shm.PeerDied` (a ConnectionError);
* `client.sock` is the channel's setup socket: `thrift_tcp.Deadline.watch(client.sock)` bounds a
  stuck run (shutting it down makes a blocked call raise PeerDied).

The hot path is lean on purpose (measured with py-spy; see scripts/bench_platforms.py): each IDL
method is a closure over its precomputed args/result classes, one reusable memory buffer per
direction and per stub, and no TClient __getattr__/functools.partial per call. On the server, a
per-method dispatch table replaces TProcessor.process_in's per-call getattr and closure; the
buffers are per serving thread (the channel runs one thread per client).

A client is for one thread at a time (like a thriftpy2 TClient): its buffers are shared by its
calls. The LB holds one lock per worker, the drivers are single-threaded.
"""

from __future__ import annotations

import threading

from thriftpy2.protocol.cybin import TCyBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType, TProcessor
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


class _Method:
    __slots__ = ("name", "args_cls", "result_cls", "arg_names", "fn", "throws", "exc_types",
                 "oneway")

    def __init__(self, service, name: str, handler):
        self.name = name
        self.args_cls = getattr(service, name + "_args")
        self.result_cls = getattr(service, name + "_result")
        self.arg_names = tuple(_arg_names(self.args_cls))
        self.fn = getattr(handler, name)
        self.throws = _exceptions(self.result_cls)
        self.exc_types = tuple(cls for _, cls in self.throws)
        self.oneway = bool(getattr(self.result_cls, "oneway", False))


class ShmThriftServer:
    """A Thrift service over a `ShmServer`: bound in the constructor, served after `.start`.

    The channel accepts clients from the constructor on (two-phase bring-up: a peer domain may
    connect its stubs before this domain has built its handler; a shm client's handshake needs the
    server's answer, unlike a TCP connect, which the kernel's backlog completes). A call that
    arrives before `start(handler)` waits for it.
    """

    def __init__(self, thrift_service, *, slot_size: int = SLOT_SIZE, socket_dir: str | None = None,
                 spin_us: float = 0.0, name_prefix: str | None = None):
        self.thrift_service = thrift_service
        self.processor: TProcessor | None = None
        self._methods: dict[str, _Method] = {}
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
        # the dispatch table: what TProcessor.process_in looks up on every call, once
        self._methods = {name: _Method(service, name, handler) for name in service.thrift_services}
        self._started.set()
        return self

    def _buffers(self):
        local = self._local
        try:
            return local.bufs
        except AttributeError:
            ib, ob = TCyMemoryBuffer(buf_size=_BUF), TCyMemoryBuffer(buf_size=_BUF)
            local.bufs = (ib, TCyBinaryProtocol(ib), ob, TCyBinaryProtocol(ob))
            return local.bufs

    def _handle(self, request: bytes) -> bytes:
        """The channel's handler: one Thrift message in, one out (TProcessor.process, leaner)."""
        ib, ip, ob, op = self._buffers()
        ib.setvalue(request)
        name, _mtype, seqid = ip.read_message_begin()
        ob.clean()
        m = self._methods.get(name)
        if m is None and not self._started.is_set():
            self._started.wait()  # a call before start(handler): bring-up is still going on
            m = self._methods.get(name)
        if m is None:
            ib.clean()
            op.write_message_begin(name, _EXCEPTION, seqid)
            op.write_struct(TApplicationException(
                TApplicationException.UNKNOWN_METHOD,
                f"{self.thrift_service.__name__} has no method {name!r}"))
            return ob.getvalue()
        args = m.args_cls()
        ip.read_struct(args)
        d = args.__dict__
        result = m.result_cls()
        try:
            result.success = m.fn(*[d[k] for k in m.arg_names])
        except TApplicationException as e:
            op.write_message_begin(name, _EXCEPTION, seqid)
            op.write_struct(e)
            return ob.getvalue()
        except m.exc_types as e:
            for field, cls in m.throws:
                if isinstance(e, cls):
                    setattr(result, field, e)
                    break
        if m.oneway:
            return b""
        op.write_message_begin(name, _REPLY, seqid)
        op.write_struct(result)
        return ob.getvalue()

    def close(self) -> None:
        """Stop serving; connected clients' calls raise PeerDied. Idempotent."""
        self._started.set()  # a call parked before start() answers UNKNOWN_METHOD and ends
        self._server.close()

    def __enter__(self) -> "ShmThriftServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------- client


def _make_method(name: str, service, call, wbuf, wprot, rbuf, rprot):
    """One IDL method of a stub: a closure with everything a call needs already looked up."""
    args_cls = getattr(service, name + "_args")
    result_cls = getattr(service, name + "_result")
    names = _arg_names(args_cls)
    # The generated __init__ takes the fields in declaration order; positional arguments map to
    # the IDL's argument order (what TClient's args_to_kwargs does) only if the two agree.
    init_order = list(args_cls.__init__.__code__.co_varnames[1:len(names) + 1])
    positional_ok = init_order == names
    has_success = "success" in {s[1] for s in result_cls.thrift_spec.values()}
    throws = tuple(field for field, _ in _exceptions(result_cls))
    oneway = bool(getattr(result_cls, "oneway", False))
    clean, getvalue, setvalue = wbuf.clean, wbuf.getvalue, rbuf.setvalue
    write_begin, write_struct = wprot.write_message_begin, wprot.write_struct
    read_begin, read_struct = rprot.read_message_begin, rprot.read_struct

    def method(*args, **kwargs):
        if args and not positional_ok:
            kwargs.update(zip(names, args))
            args = ()
        clean()
        write_begin(name, _CALL, 0)
        write_struct(args_cls(*args, **kwargs))
        reply = call(getvalue())
        if oneway:
            return None
        setvalue(reply)
        _fname, mtype, _seqid = read_begin()
        if mtype == _EXCEPTION:
            x = TApplicationException()
            read_struct(x)
            raise x
        result = result_cls()
        read_struct(result)
        if has_success:
            value = result.success
            if value is not None:
                return value
        for field in throws:
            exc = getattr(result, field)
            if exc is not None:
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

    def __init__(self, thrift_service, address: str, connect_timeout: float = 10.0, *,
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
