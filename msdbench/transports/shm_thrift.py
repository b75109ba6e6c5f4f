"""Thrift over the shared-memory channel: the `specialized` platform's binding between two
isolation domains of one host.

Same IDL, same codec and wire encoding as `thrift_tcp` (codec.py: a standard Thrift binary
message, name, type, seqid, struct), only the carrier differs: each call's message is one
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
* `client.sock` is the channel's setup socket: `deadline.Deadline.watch(client.sock)` bounds a
  stuck run (shutting it down makes a blocked call raise PeerDied).

The hot path is the codec's (precomputed headers, generated per-method decoders and encoders, no
struct objects); the limits are the codec's too (codec.Limits), and the channel refuses a message
declared larger than max_message_bytes before allocating it. A malformed or oversized request
fails that call (RemoteError at the caller) and the service logs one line saying why.

A client is for one thread at a time (like a thriftpy2 TClient). The LB holds one lock per worker; the drivers call from one thread.
"""

from __future__ import annotations

import sys
import threading

from thriftpy2.thrift import TApplicationException
from thriftpy2.transport import TTransportException

from msdbench.transports.codec import (DEFAULT_LIMITS, Incomplete, Limits, WireError, positional,
                                       read_header, service_codec, skip)
from msdbench.transports.shm import PeerDied, RemoteError, ShmClient, ShmServer

__all__ = ["ShmThriftServer", "ShmThriftClient", "PeerDied", "RemoteError", "SLOT_SIZE"]

# One message travels in one piece up to this size (the micro suite's largest request, 8192 i64 in
# list mode, is ~72 KiB with its envelope); larger ones are chunked by the channel.
SLOT_SIZE = 256 * 1024
_RESERVED = ("close", "sock")  # stub attributes an IDL method may not shadow (thriftpy2: "tclose")
# Failures of a call this handler made further down (its callee died, its link broke): they are not
# the handler's answer, so they fail the caller's call as a transport failure too (RemoteError at
# the caller, which the drivers raise) instead of becoming a TApplicationException (an answer).
_TRANSPORT_FAILURES = (OSError, RemoteError, TTransportException)
_STRUCT = 12


class ShmThriftServer:
    """A Thrift service over a `ShmServer`: bound in the constructor, served after `.start`.

    The channel accepts clients from the constructor on (two-phase bring-up: a peer domain may
    connect its stubs before this domain has built its handler; a shm client's handshake needs the
    server's answer, unlike a TCP connect, which the kernel's backlog completes). A call that
    arrives before `start(handler)` waits for it.
    """

    def __init__(self, thrift_service, *, slot_size: int = SLOT_SIZE, socket_dir: str | None = None,
                 spin_us: float = 0.0, name_prefix: str | None = None,
                 limits: Limits = DEFAULT_LIMITS):
        self.thrift_service = thrift_service
        self.name = thrift_service.__name__
        self.codec = service_codec(thrift_service, limits)
        self.limits = limits
        self.handler = None
        self._table: dict[bytes, tuple] = {}
        self._started = threading.Event()
        self._server = ShmServer(self._handle, name_prefix or thrift_service.__name__.lower(),
                                 slot_size, socket_dir=socket_dir, spin_us=spin_us,
                                 max_message=limits.max_message_bytes)
        self._server.start()

    @property
    def address(self) -> str:
        """The channel's address (a Unix socket path) for `ShmThriftClient`."""
        return self._server.address

    def start(self, handler) -> "ShmThriftServer":
        self.handler = handler
        self._table = {wire: (m, getattr(handler, m.name))
                       for wire, m in self.codec.by_wire.items()}
        self._started.set()
        return self

    def _handle(self, request: bytes) -> bytearray:
        """The channel's handler: one Thrift message in, one out."""
        end = len(request)
        try:
            name, _mtype, seqid, p = read_header(request, 0, end, end)
            entry = self._table.get(name)
            if entry is None:
                entry = self._not_in_table(name)
                if entry is None:
                    skip(request, p, end, end, _STRUCT, 0, self.limits)
                    o = bytearray()
                    self.codec.encode_app_exception(o, name, seqid, TApplicationException(
                        TApplicationException.UNKNOWN_METHOD,
                        f"{self.name} has no method {name.decode('utf-8', 'replace')!r}"))
                    return o
            m, fn = entry
            args, p = m.decode_args(request, p, end, end)
        except Incomplete:
            self._refuse("truncated message")
        except WireError as e:
            self._refuse(e.reason)
        try:
            value = fn(*args)
        except _TRANSPORT_FAILURES:
            raise
        except Exception as e:
            return self.codec.error_reply(m, seqid, e)
        o = bytearray()
        if not m.oneway:
            m.encode_reply(o, seqid, value)
        return o

    def _not_in_table(self, name: bytes):
        if not self._started.is_set():
            self._started.wait()  # a call before start(handler): bring-up is still going on
        return self._table.get(name)

    def _refuse(self, reason: str):
        print(f"msdbench wire: {self.name}: shm peer: {reason}; call refused", file=sys.stderr,
              flush=True)
        raise ValueError(f"{self.name}: {reason}")

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


def _make_method(codec, m, call):
    """One IDL method of a stub: encode, one channel call, decode (codec.Method)."""
    encode_call, decode_result = m.encode_call, m.decode_result
    prefix = m.reply_prefix
    plen = len(prefix) + 4
    nargs, oneway, name = m.nargs, m.oneway, m.name
    lim = codec.limits.max_message_bytes

    def method(*args, **kw):
        if kw or len(args) != nargs:
            args = positional(m, args, kw)
        o = bytearray()
        encode_call(o, *args)
        reply = call(o)
        if oneway:
            return None
        try:
            if reply.startswith(prefix):
                return decode_result(reply, plen, len(reply), lim)[0]
            return codec.unusual_reply(name, reply, len(reply), lim)
        except Incomplete:
            raise TApplicationException(TApplicationException.PROTOCOL_ERROR,
                                        f"{name}: truncated reply") from None

    method.__name__ = method.__qualname__ = name
    return method


class ShmThriftClient:
    """A stub with the IDL methods of `thrift_service`, reaching a `ShmThriftServer` at `address`.

    An IDL method named like a reserved attribute (close, sock) is reachable as `t<name>`, as on a
    thriftpy2 TClient.
    """

    def __init__(self, thrift_service, address: str, connect_timeout: float = 5.0, *,
                 spin_us: float = 0.0, limits: Limits = DEFAULT_LIMITS):
        self.thrift_service = thrift_service
        self.address = address
        self._channel = ShmClient(address, connect_timeout, spin_us=spin_us)
        self.sock = self._channel.sock
        codec = service_codec(thrift_service, limits)
        call = self._channel.call
        for name, m in codec.methods.items():
            attr = "t" + name if name in _RESERVED else name
            setattr(self, attr, _make_method(codec, m, call))

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
