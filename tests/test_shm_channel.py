"""The shared-memory channel, between real processes (no mocks).

The server runs as `python -m msdbench.transports.shm serve --handler test_shm_channel:handler`,
so `handler` below is what answers. It never plain-echoes: a reply that merely read back the
request still lying in the shared slot would pass an echo test.
"""

from __future__ import annotations

import glob
import hashlib
import multiprocessing
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

import pytest

from msdbench.transports.shm import PeerDied, RemoteError, ShmClient, ShmServer

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CMD = b"\x00cmd:"
INC = bytes((i + 1) % 256 for i in range(256))
MiB = 1 << 20
HANG_GUARD = 30.0  # seconds: only so that a broken build fails instead of hanging the suite


def transform(payload: bytes) -> bytes:
    return payload.translate(INC)


def pattern(n: int) -> bytes:
    return (b"0123456789abcdef" * (n // 16 + 1))[:n]


def handler(req: bytes) -> bytes:
    """Every byte + 1, or a command: gen N, digest, raise MSG, sleep S, pid, badtype."""
    if not req.startswith(CMD):
        return transform(req)
    cmd, _, arg = req[len(CMD):].partition(b" ")
    if cmd == b"gen":
        return pattern(int(arg))
    if cmd == b"digest":
        return b"%d:%s" % (len(arg), hashlib.sha256(arg).hexdigest().encode())
    if cmd == b"raise":
        raise ValueError(arg.decode())
    if cmd == b"sleep":
        time.sleep(float(arg))
        return b"slept"
    if cmd == b"pid":
        return str(os.getpid()).encode()
    if cmd == b"badtype":
        return "a str, not bytes"
    raise KeyError(cmd)


def prefix() -> str:
    return f"msdbench-test-{os.getpid()}-{secrets.token_hex(3)}"


def shm_names(pfx: str) -> list[str]:
    return glob.glob(f"/dev/shm/*{pfx}*")


def memfds() -> int:
    """Shared-memory descriptors this process holds or maps (memfds show as /memfd:NAME)."""
    n = 0
    with open("/proc/self/maps") as f:
        n += sum("/memfd:msdbench" in line for line in f)
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += "/memfd:msdbench" in os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return n


class ServerProc:
    """A ShmServer in its own process, serving `handler`."""

    def __init__(self, slot_size: int = 64 * 1024, max_clients: int = 64, spin_us: float = 0.0):
        self.prefix = prefix()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([HERE, ROOT, env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "msdbench.transports.shm", "serve", "--handler",
             "test_shm_channel:handler", "--prefix", self.prefix, "--slot-size", str(slot_size),
             "--max-clients", str(max_clients), "--spin-us", str(spin_us)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, text=True)
        self.address = self.proc.stdout.readline().strip()
        assert self.address, f"server did not start (exit {self.proc.poll()})"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc.stdin.close()

    def stop(self) -> None:
        self.proc.stdin.close()  # the server closes itself at stdin EOF
        if self.proc.poll() is None:
            try:
                self.proc.wait(HANG_GUARD)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        self.proc.stdout.close()


@pytest.fixture(scope="module", params=[4096, 64 * 1024], ids=["slot4k", "slot64k"])
def server(request):
    s = ServerProc(slot_size=request.param)
    s.slot_size = request.param
    yield s
    s.stop()
    assert not os.path.exists(s.address), "socket file left after close"
    assert shm_names(s.prefix) == []


@pytest.fixture
def killable():
    s = ServerProc()
    yield s
    if s.proc.poll() is None:
        s.kill()
    s.proc.stdin.close()
    s.proc.stdout.close()
    if os.path.exists(s.address):  # a SIGKILLed server can't remove its socket file
        os.unlink(s.address)


def in_thread(fn, *args):
    """Run fn in a thread; return a function that joins it (bounded) and gives its outcome."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()

    def result():
        t.join(HANG_GUARD)
        assert not t.is_alive(), "call still blocked"
        return box

    return result


# ------------------------------------------------------------------------------ round trips

SIZES = ["0", "1", "8192", "slot-1", "slot", "slot+1", "1MiB"]


def size_of(name: str, slot: int) -> int:
    return {"0": 0, "1": 1, "8192": 8192, "slot-1": slot - 1, "slot": slot, "slot+1": slot + 1,
            "1MiB": MiB}[name]


@pytest.mark.parametrize("size", SIZES)
def test_round_trip_same_size_both_ways(server, size):
    n = size_of(size, server.slot_size)
    payload = os.urandom(n)
    with ShmClient(server.address) as c:
        assert c.slot_size == server.slot_size
        assert c.call(payload) == transform(payload)
        assert c.call(payload) == transform(payload)  # the slot is reusable after any size


@pytest.mark.parametrize("size", SIZES)
def test_small_request_large_reply(server, size):
    n = size_of(size, server.slot_size)
    with ShmClient(server.address) as c:
        assert c.call(CMD + b"gen %d" % n) == pattern(n)


@pytest.mark.parametrize("size", SIZES)
def test_large_request_small_reply(server, size):
    n = size_of(size, server.slot_size)
    payload = CMD + b"digest " + os.urandom(n)
    arg = payload[len(CMD) + 7:]
    with ShmClient(server.address) as c:
        assert c.call(payload) == b"%d:%s" % (n, hashlib.sha256(arg).hexdigest().encode())


def test_accepts_any_bytes_like(server):
    with ShmClient(server.address) as c:
        assert c.call(bytearray(b"ab")) == b"bc"
        assert c.call(memoryview(b"xyz")[1:]) == b"z{"
        import array

        a = array.array("I", [1, 2])
        assert c.call(a) == transform(a.tobytes())
        with pytest.raises(TypeError):
            c.call("a str")
        assert c.call(b"ok") == b"pl"  # a refused argument leaves the link usable


def test_spinning_both_sides():
    """Spinning changes only how a side waits: the same traffic gives the same replies."""
    s = ServerProc(slot_size=4096, spin_us=50.0)
    try:
        clients = [ShmClient(s.address, spin_us=50.0) for _ in range(2)]
        results = [in_thread(tagged_calls, c, f"s{k}", 60, 4096) for k, c in enumerate(clients)]
        results.append(in_thread(tagged_calls, clients[0], "shared", 60, 4096))
        for r in results:
            assert r() == {"value": []}
        payload = os.urandom(MiB)
        assert clients[1].call(payload) == transform(payload)
        with pytest.raises(RemoteError):
            clients[1].call(CMD + b"raise x")
        for c in clients:
            c.close()
    finally:
        s.stop()


def test_sequence_numbers_wrap():
    with ShmServer(handler, prefix(), slot_size=1024).start() as srv:
        with ShmClient(srv.address) as c:
            assert c.call(b"a") == b"b"
            (conn,) = srv._clients.values()
            for link in (c._link, conn.link):
                link.tx_seq = link.rx_seq = 0xFFFFFFFF - 3
            for i in range(8):
                payload = os.urandom(i * 700)  # some chunked: acks use sequence numbers too
                assert c.call(payload) == transform(payload)
            assert 0 < c._link.tx_seq < 100


# ------------------------------------------------------------------------------ concurrency


def tagged_calls(c: ShmClient, tag: str, rounds: int, slot: int) -> list[str]:
    """Calls with payloads unique to (tag, round), some bigger than the slot; the mismatches."""
    bad = []
    for i in range(rounds):
        n = (i * 977) % (3 * slot)
        payload = f"{tag}:{i}:".encode() + pattern(n)
        if c.call(payload) != transform(payload):
            bad.append(f"{tag}:{i}")
    return bad


def test_threads_sharing_one_client(server):
    with ShmClient(server.address) as c:
        results = [in_thread(tagged_calls, c, f"t{k}", 40, server.slot_size) for k in range(6)]
        for r in results:
            assert r() == {"value": []}


def test_threads_with_own_clients(server):
    clients = [ShmClient(server.address) for _ in range(6)]
    try:
        results = [in_thread(tagged_calls, c, f"c{k}", 40, server.slot_size)
                   for k, c in enumerate(clients)]
        for r in results:
            assert r() == {"value": []}
    finally:
        for c in clients:
            c.close()


def process_client(args) -> tuple[int, list[str]]:
    address, tag, slot = args
    with ShmClient(address) as c:
        return int(c.call(CMD + b"pid")), tagged_calls(c, tag, 40, slot)


def test_processes_each_with_a_client(server):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        out = pool.map_async(process_client,
                             [(server.address, f"p{k}", server.slot_size) for k in range(4)])
        results = out.get(HANG_GUARD * 2)
    assert {pid for pid, _ in results} == {server.proc.pid}
    assert [bad for _, bad in results] == [[], [], [], []]


# ------------------------------------------------------------------------------ errors


def test_handler_exception_reaches_caller_and_next_call_works(server):
    with ShmClient(server.address) as c:
        with pytest.raises(RemoteError) as e:
            c.call(CMD + b"raise no such poll")
        assert e.value.remote_type == "ValueError"
        assert e.value.remote_message == "no such poll"
        assert "ValueError" in e.value.remote_traceback
        assert c.call(b"next") == transform(b"next")
        with pytest.raises(RemoteError, match="TypeError"):
            c.call(CMD + b"badtype")
        with pytest.raises(RemoteError, match="KeyError"):
            c.call(CMD + b"nonsense")
        assert c.call(b"") == b""


def test_server_killed_mid_call_raises_peer_died(killable):
    c = ShmClient(killable.address)
    assert int(c.call(CMD + b"pid")) == killable.proc.pid
    result = in_thread(c.call, CMD + b"sleep 600")
    time.sleep(0.3)  # let the request reach the handler
    killable.kill()
    box = result()
    assert isinstance(box.get("error"), PeerDied), box
    with pytest.raises(PeerDied):  # and it stays dead
        c.call(b"again")
    assert not c.alive
    c.close()  # must not raise
    c.close()


def test_server_killed_while_idle(killable):
    c = ShmClient(killable.address)
    assert c.call(b"a") == b"b"
    killable.kill()
    box = in_thread(c.call, b"a" * MiB)()  # a chunked call to a dead server must not hang
    assert isinstance(box.get("error"), PeerDied), box
    c.close()
    assert shm_names(killable.prefix) == []


def test_server_closed_cleanly_while_client_connected(killable):
    c = ShmClient(killable.address)
    assert c.call(b"x") == b"y"
    killable.stop()
    assert not os.path.exists(killable.address)
    box = in_thread(c.call, b"x")()
    assert isinstance(box.get("error"), PeerDied), box
    c.close()


def idle_client(address: str, ready) -> None:
    c = ShmClient(address)
    c.call(b"hello")
    ready.set()
    time.sleep(600)


def test_server_drops_a_client_whose_process_died():
    ctx = multiprocessing.get_context("spawn")
    with ShmServer(handler, prefix()).start() as srv:
        ready = ctx.Event()
        p = ctx.Process(target=idle_client, args=(srv.address, ready), daemon=True)
        p.start()
        try:
            assert ready.wait(HANG_GUARD)
            assert srv.n_clients == 1
        finally:
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        end = time.monotonic() + HANG_GUARD
        while srv.n_clients and time.monotonic() < end:
            time.sleep(0.01)
        assert srv.n_clients == 0
        with ShmClient(srv.address) as c:  # and the server still serves others
            assert c.call(b"a") == b"b"


def test_close_from_another_thread_wakes_a_blocked_call(killable):
    c = ShmClient(killable.address)
    result = in_thread(c.call, CMD + b"sleep 600")
    time.sleep(0.2)
    c.close()
    box = result()
    assert isinstance(box.get("error"), ConnectionError), box
    with pytest.raises(ConnectionError):
        c.call(b"x")


def test_shutting_down_the_setup_socket_bounds_a_call(killable):
    """What thrift_tcp.Deadline does to a stuck run."""
    c = ShmClient(killable.address)
    result = in_thread(c.call, CMD + b"sleep 600")
    time.sleep(0.2)
    import socket

    c.sock.shutdown(socket.SHUT_RDWR)
    assert isinstance(result().get("error"), PeerDied)
    c.close()


def test_max_clients():
    with ShmServer(handler, prefix(), max_clients=2).start() as srv:
        a, b = ShmClient(srv.address), ShmClient(srv.address)
        with pytest.raises(ConnectionError, match="full"):
            ShmClient(srv.address)
        a.close()
        end = time.monotonic() + HANG_GUARD
        while srv.n_clients > 1 and time.monotonic() < end:
            time.sleep(0.01)
        with ShmClient(srv.address) as c:
            assert c.call(b"1") == b"2"
        assert b.call(b"2") == b"3"
        b.close()


def test_connect_to_nothing_fails_in_bounded_time(tmp_path):
    with pytest.raises(ConnectionError):
        ShmClient(str(tmp_path / "nobody.sock"), connect_timeout=0.2)


def test_client_waits_for_a_server_that_binds_late(tmp_path):
    path = str(tmp_path / "late.sock")
    box = in_thread(ShmClient, path, 10.0)
    time.sleep(0.2)
    with ShmServer(handler, prefix(), path=path).start():
        c = box()["value"]
        assert c.call(b"a") == b"b"
        c.close()
    assert not os.path.exists(path)


def test_forked_child_refuses_the_parents_client(server):
    c = ShmClient(server.address)
    pid = os.fork()
    if pid == 0:  # child: must refuse, and its close must not cut the parent's link
        code = 1
        try:
            c.call(b"x")
        except ConnectionError:
            code = 0
        except BaseException:
            code = 2
        c.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert c.call(b"x") == b"y"
    c.close()


# ------------------------------------------------------------------------------ clean-up


def test_nothing_left_behind():
    before = memfds()
    threads_before = set(threading.enumerate())
    s = ServerProc(slot_size=4096)
    try:
        clients = [ShmClient(s.address) for _ in range(3)]
        assert [c.call(b"a" * 10000) for c in clients] == [b"b" * 10000] * 3
        assert shm_names(s.prefix) == []  # nothing is ever named in /dev/shm
        assert memfds() > before
        for c in clients:
            c.close()
        assert memfds() == before
    finally:
        s.stop()
    assert not os.path.exists(s.address)
    assert shm_names(s.prefix) == []
    end = time.monotonic() + HANG_GUARD
    while set(threading.enumerate()) - threads_before and time.monotonic() < end:
        time.sleep(0.01)
    assert set(threading.enumerate()) - threads_before == set()


def test_in_process_server_close_frees_everything():
    before = memfds()
    threads_before = set(threading.enumerate())
    srv = ShmServer(handler, prefix(), slot_size=1024).start()
    c = ShmClient(srv.address)
    req = os.urandom(5000)
    assert c.call(req) == transform(req)
    srv.close()
    with pytest.raises(PeerDied):
        c.call(b"x")
    c.close()
    assert not os.path.exists(srv.address)
    assert memfds() == before
    end = time.monotonic() + HANG_GUARD
    while set(threading.enumerate()) - threads_before and time.monotonic() < end:
        time.sleep(0.01)
    assert set(threading.enumerate()) - threads_before == set()
