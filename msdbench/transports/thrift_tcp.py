"""Thrift RPC over TCP: the `linux` platform's transport for every edge.

thriftpy2's Cython protocol and buffered transport, with two fixes measured on these machines
(see MACHINE-NOTES): a transport buffer larger than the biggest message (the stock 4 KiB buffer
splits a >= 4 KiB request into three send() calls), and no socket timeout on the measured path
(a timeout makes CPython poll() before every recv). Nothing may still hang forever: callers
bound a whole run with `Deadline`, which shuts the sockets down when it expires.
"""

from __future__ import annotations

import socket
import threading

from thriftpy2.protocol.cybin import TCyBinaryProtocol
from thriftpy2.thrift import TApplicationException, TMessageType
from thriftpy2.transport import TTransportException
from thriftpy2.transport.buffered.cybuffered import TCyBufferedTransport

# Larger than any request of the paper's matrix (8192 x i64 = 64 KiB in list mode), so that one
# message is one send(): the buffer grows past this when it must, it never splits below it.
BUF_SIZE = 128 * 1024
# The most one read asks the kernel for (into a preallocated buffer: see _SocketTransport).
READ_CHUNK = 64 * 1024


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(None)


class _SocketTransport:
    """The raw transport under TCyBufferedTransport: a connected socket, nothing more.

    Reads go into one preallocated buffer: sock.recv(n) allocates n bytes on every call and shrinks
    them after (at n >= 128 KiB glibc does it with mmap/munmap: measured +35 us a round trip); the
    copy out is only as long as what arrived."""

    __slots__ = ("sock", "_recv_into", "_sendall", "_view")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._recv_into = sock.recv_into
        self._sendall = sock.sendall
        self._view = memoryview(bytearray(READ_CHUNK))

    def read(self, sz: int) -> bytes:
        view = self._view
        n = self._recv_into(view, sz if sz < READ_CHUNK else READ_CHUNK)
        if not n:
            raise TTransportException(TTransportException.END_OF_FILE, "peer closed the connection")
        return view[:n].tobytes()

    def write(self, data: bytes) -> None:
        self._sendall(data)

    def flush(self) -> None:
        pass

    def is_open(self) -> bool:
        return True

    def close(self) -> None:
        self.sock.close()


def _protocol(sock: socket.socket) -> TCyBinaryProtocol:
    return TCyBinaryProtocol(TCyBufferedTransport(_SocketTransport(sock), buf_size=BUF_SIZE))


class Processor:
    """Serves one handler: thriftpy2's TProcessor, less its per-call lookups and closures.

    Each method's args/result classes, argument names and declared exceptions are resolved once.
    A handler exception the IDL does not declare becomes a TApplicationException for the caller
    (thriftpy2 would drop the connection), so one bad call never takes the service down; a
    broken connection to a callee does drop it, so that a dead peer is never mistaken for a
    service's answer.
    """

    def __init__(self, thrift_service, handler):
        # One instance per connection: the args/result structs are reused call after call
        # (reset to their blank state first), which saves two object constructions a call.
        self.methods = {}
        for name in thrift_service.thrift_services:
            args_cls = getattr(thrift_service, name + "_args")
            result_cls = getattr(thrift_service, name + "_result")
            arg_names = [spec[1] for _, spec in sorted(args_cls.thrift_spec.items())]
            throws = tuple((spec[2], spec[1]) for spec in result_cls.thrift_spec.values()
                           if spec[1] != "success")
            args, result = args_cls(), result_cls()
            self.methods[name] = (args, dict(args.__dict__), result, dict(result.__dict__),
                                  arg_names, throws, getattr(handler, name), result_cls.oneway)

    def process(self, prot) -> None:
        name, _, seqid = prot.read_message_begin()
        method = self.methods.get(name)
        if method is None:
            prot.skip(12)  # TType.STRUCT
            prot.read_message_end()
            return self._fail(prot, name, seqid, TApplicationException(
                TApplicationException.UNKNOWN_METHOD, f"unknown method {name!r}"))
        args, blank_args, result, blank_result, arg_names, throws, fn, oneway = method
        args.__dict__.update(blank_args)
        prot.read_struct(args)
        prot.read_message_end()
        result.__dict__.update(blank_result)
        try:
            result.success = fn(*[getattr(args, a) for a in arg_names])
        except (OSError, TTransportException):
            # A callee's connection broke (a peer died): close ours too, so the failure travels
            # up to the client as a broken call and ends the cell, as on every platform.
            raise
        except Exception as e:
            for cls, field in throws:
                if isinstance(e, cls):
                    setattr(result, field, e)
                    break
            else:
                if oneway:
                    return
                return self._fail(prot, name, seqid, TApplicationException(
                    TApplicationException.INTERNAL_ERROR, f"{type(e).__name__}: {e}"))
        if oneway:
            return
        prot.write_message_begin(name, TMessageType.REPLY, seqid)
        prot.write_struct(result)
        prot.write_message_end()
        prot.trans.flush()

    @staticmethod
    def _fail(prot, name, seqid, exc) -> None:
        prot.write_message_begin(name, TMessageType.EXCEPTION, seqid)
        prot.write_struct(exc)
        prot.write_message_end()
        prot.trans.flush()


def _client_method(thrift_service, name: str, prot):
    """One IDL method as a plain function over `prot`: what TClient does, resolved once."""
    args_cls = getattr(thrift_service, name + "_args")
    result_cls = getattr(thrift_service, name + "_result")
    throws = [spec[1] for spec in result_cls.thrift_spec.values() if spec[1] != "success"]
    returns = any(spec[1] == "success" for spec in result_cls.thrift_spec.values())
    # Reused structs (a client is used by one caller at a time), reset before each use.
    arg_names = [spec[1] for _, spec in sorted(args_cls.thrift_spec.items())]
    args, result = args_cls(), result_cls()
    blank_args, blank_result = dict(args.__dict__), dict(result.__dict__)
    set_args, reset_result = args.__dict__.update, result.__dict__.update
    oneway = result_cls.oneway
    mtype = TMessageType.ONEWAY if oneway else TMessageType.CALL
    write_begin, write_struct, write_end = (prot.write_message_begin, prot.write_struct,
                                            prot.write_message_end)
    read_begin, read_struct, read_end = (prot.read_message_begin, prot.read_struct,
                                         prot.read_message_end)
    flush = prot.trans.flush

    def call(*a):
        set_args(blank_args)
        set_args(zip(arg_names, a))
        write_begin(name, mtype, 0)
        write_struct(args)
        write_end()
        flush()
        if oneway:
            return None
        _, rtype, _ = read_begin()
        if rtype == TMessageType.EXCEPTION:
            exc = TApplicationException()
            read_struct(exc)
            read_end()
            raise exc
        reset_result(blank_result)
        read_struct(result)
        read_end()
        if returns and result.success is not None:
            return result.success
        for field in throws:
            exc = getattr(result, field)
            if exc is not None:
                raise exc
        if returns:
            raise TApplicationException(TApplicationException.MISSING_RESULT, name)
        return None

    call.__name__ = name
    return call


class ThriftServer:
    """Thread-per-connection server for one service handler on one listening socket.

    Each connection gets its own thread: a benchmark client holds one persistent connection,
    and the load balancer one per worker, so the connection count stays small.
    """

    def __init__(self, thrift_service, host: str = "127.0.0.1", port: int = 0):
        # Bound and listening from here on; connections wait in the backlog until start(), so
        # peers may connect before this side's handler exists (two-phase bring-up).
        self.thrift_service = thrift_service
        self.handler = None
        self.listener = socket.create_server((host, port), backlog=128, reuse_port=False)
        self.address = self.listener.getsockname()[:2]
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False

    def start(self, handler) -> "ThriftServer":
        self.handler = handler
        threading.Thread(target=self._accept_loop, name=f"accept:{self.address[1]}",
                         daemon=True).start()
        return self

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            _tune(conn)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        prot = _protocol(conn)
        process = Processor(self.thrift_service, self.handler).process
        try:
            while True:
                process(prot)
        except (TTransportException, OSError, EOFError):
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


class ThriftClient:
    """The IDL methods of one service over one persistent TCP connection (not thread-safe: one
    caller at a time). `sock` is kept so a Deadline can cut a blocked call."""

    def __init__(self, thrift_service, host: str, port: int, connect_timeout: float = 10.0,
                 timeout: float | None = None):
        raw = socket.create_connection((host, port), timeout=connect_timeout)
        _tune(raw)
        raw.settimeout(timeout)  # None on measured paths; the control plane sets one
        self.sock = raw
        prot = _protocol(raw)
        for name in thrift_service.thrift_services:
            setattr(self, name, _client_method(thrift_service, name, prot))

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Deadline:
    """Ends a stuck run: after `seconds`, shut down every registered socket (the blocked recv
    then fails at once) and remember that it fired, so the caller reports a timeout."""

    def __init__(self, seconds: float | None):
        self.seconds = seconds
        self.fired = False
        self._socks: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire) if seconds else None
        if self._timer:
            self._timer.daemon = True

    def watch(self, sock: socket.socket) -> None:
        self._socks.append(sock)

    def _fire(self) -> None:
        self.fired = True
        for s in self._socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self) -> "Deadline":
        if self._timer:
            self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._timer:
            self._timer.cancel()
