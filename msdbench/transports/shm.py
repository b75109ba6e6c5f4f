"""A request/response channel between two processes of one host, through shared memory.

The `specialized` platform's binding between isolation domains on one host (the idea of Ambience's
lidl: a protected copy through shared memory instead of a TCP socket). It carries opaque bytes: the
caller sends request bytes and gets reply bytes; serialization is the layer above's job.

How it works
------------
* `ShmServer` listens on a Unix stream socket: its path is the channel's **address** (a plain str,
  e.g. ``/tmp/msdbench-12345-1f2e3d4c.sock``). The socket is used to set a client up and then only
  as a liveness link; no request ever goes through it.
* On connect the server makes, for that client alone, one shared-memory segment (a sealed memfd
  named ``msdbench-...``: a 128-byte header and a ``slot_size`` data area) and two eventfds
  (request-ready, reply-ready), and passes the three descriptors over the socket (SCM_RIGHTS).
  Each client thus has its own slot: concurrent clients never share memory.
* A call: the client copies the request into the slot, writes a header (length, kind, sequence
  number; `struct.pack_into`), and writes the request eventfd; a server thread blocked in a read of
  that eventfd (one thread per client) copies the request out (the protected copy: the handler
  never sees memory the peer can still change), runs the handler, and answers the same way. A
  round trip is two eventfd writes and two blocking eventfd reads, no socket and no poll().
* A message larger than the slot is carried whole in slot-sized chunks, each acknowledged by the
  receiver before the next is written.
* Optional bounded spinning (`spin_us`): before blocking, the waiting side polls the sequence
  number in shared memory. It pays off only when the two ends run on different CPUs; with both ends
  on one CPU it only delays the peer, so the default is off. (Relies on x86-64 store ordering.)

Dead peers: both sides keep the setup socket open. The kernel closes it when a process dies, so a
client-side watchdog thread blocked in ``recv`` sees EOF, marks the link dead and writes the reply
eventfd: a caller blocked in a call wakes at once and gets `PeerDied`. On the server, a selector
over all setup sockets does the same for each client, and the client's thread ends and frees its
slot. (EOF comes when the last copy of the socket closes: a child forked by the dying process and
still alive keeps the link up.)
A peer that is alive but stuck (SIGSTOP, an endless handler) is not detected: bound a whole run by
shutting down `ShmClient.sock` (what `deadline.Deadline.watch` does); the caller then gets `PeerDied`.

Why memfds and not `multiprocessing.shared_memory`: the descriptor has to cross the setup socket
anyway (with the eventfds), and a memfd needs no name that a killed process could leave in
/dev/shm, no resource-tracker process, and no shared IPC namespace or /dev/shm between
containers. It is the same kind of memory (shmem pages, mapped MAP_SHARED by both).

Clean-up: nothing is ever named in /dev/shm. The segments are memfds, which exist only as long as
a process maps them or holds their descriptor, so even a SIGKILLed server leaves no shared memory
behind. Only the socket file of a killed server stays (``<socket_dir>/msdbench-*.sock``);
`close()` removes it.

What the environment must give
------------------------------
* Linux (memfd_create, eventfd, SCM_RIGHTS), Python >= 3.10.
* Both processes must reach the socket path: across Docker containers, put the socket in a volume
  mounted in both (``socket_dir=``/``path=``; the address is the path as the *server* sees it,
  so mount it at the same path in both, or translate). No shared IPC namespace and no shared
  /dev/shm are needed: the memory travels as a descriptor, which works across mount, IPC and PID
  namespaces. Docker's default seccomp profile allows memfd_create and eventfd2.
* The client's user must be allowed to connect to the socket (same uid, or loosen its mode).
* Unix socket paths are limited to 107 bytes.
* A `ShmClient` belongs to the process that made it: in a child forked afterwards it refuses to
  call (make a new one there); `close()` in the child does not disturb the parent's link.

Modules: shm_link.py (the slot's layout, one side of a slot, errors), shm_server.py,
shm_client.py; this module names the channel's public parts and serves a handler in a process
of its own (`python -m msdbench.transports.shm serve [--handler module:function]`: prints the
address, serves until its stdin closes; the tests' server). What the channel costs against a raw
TCP echo: `msdbench bench`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from msdbench.transports.shm_client import ShmClient
from msdbench.transports.shm_link import PeerDied, RemoteError
from msdbench.transports.shm_server import ShmServer

__all__ = ["ShmServer", "ShmClient", "PeerDied", "RemoteError"]


def _load_handler(spec: str) -> Callable[[bytes], bytes]:
    if spec == "echo":
        return lambda request: request
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "handler")


def serve(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m msdbench.transports.shm")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a handler; print the address; stop at stdin EOF")
    s.add_argument("--handler", default="echo", help="'echo' or module:function")
    s.add_argument("--prefix", default=None)
    s.add_argument("--slot-size", type=int, default=64 * 1024)
    s.add_argument("--max-clients", type=int, default=64)
    s.add_argument("--path", default=None)
    s.add_argument("--socket-dir", default=None)
    s.add_argument("--spin-us", type=float, default=0.0)
    s.add_argument("--cpu", type=int, default=None)
    args = ap.parse_args(argv)
    if args.cpu is not None:  # before any thread exists, so that every thread inherits it
        os.sched_setaffinity(0, {args.cpu})
    server = ShmServer(_load_handler(args.handler), args.prefix, args.slot_size,
                       args.max_clients, path=args.path, socket_dir=args.socket_dir,
                       spin_us=args.spin_us)
    server.start()
    print(server.address, flush=True)
    try:
        sys.stdin.read()  # serve until the parent closes our stdin (or kills us)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


if __name__ == "__main__":
    serve()
