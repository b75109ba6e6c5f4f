"""BEPS ("Best Effort Pub/Sub"), the paper's end-to-end suite: its five server-side services as plain classes.

    client -> LoadBalancer -> Worker x N -> UserDB, PayloadDB, ReadEndpoint

Each handler implements the IDL methods of its service in msdbench/idl/beps.thrift and knows nothing of
transports: a callee is any object with the callee's IDL methods (another handler, a thriftpy2 client, a
shared-memory stub). Client errors are the IDL exceptions (UnknownUser, DuplicateUser, InvalidRequest); a
handler raises nothing else on a client's account, because thriftpy2's server drops the connection on an
undeclared exception. Every handler keeps serving after raising one.

Thread safety:
  UserDB, PayloadDB, ReadEndpoint: one lock each around all state; any number of threads may call them
    (thread-per-connection servers, several workers sharing one DB).
  Worker: stateless apart from counters, but its callee connections (thriftpy2 clients) are not thread-safe:
    call a worker from one thread at a time. The load balancer guarantees this with one lock per worker.
  LoadBalancer: safe for any number of concurrent callers (round-robin index from itertools.count, whose
    next() is atomic under the GIL; one lock per worker held for the whole forwarded call).

Besides the IDL methods every handler has the optional control methods (services/__init__.py):
  set_fault(fault, count)  test-only switches; ValueError for an unknown name, listing the allowed ones.
                           UserDB: "drop_create" (acknowledge the next `count` creates without storing them);
                           ReadEndpoint: "drop_feed_update" (silently drop the next `count` feed updates).
  counters() -> dict       {"calls": {method: n}, "faults": {name: remaining}}; the load balancer adds
                           "per_worker": [measured calls forwarded to worker i] and "helper_per_worker".
"""

from __future__ import annotations

import itertools
import threading
import time

from msdbench import idl

beps = idl.load("beps")

UnknownUser = beps.UnknownUser
DuplicateUser = beps.DuplicateUser
InvalidRequest = beps.InvalidRequest
# The IDL exceptions a client may see; the load balancer passes them through unchanged.
IDL_ERRORS = (UnknownUser, DuplicateUser, InvalidRequest)

perf_ns = time.perf_counter_ns


class _Handler:
    """Call counters and fault switches shared by every BEPS handler."""

    METHODS: tuple[str, ...] = ()
    FAULTS: tuple[str, ...] = ()

    def __init__(self):
        self._lock = threading.Lock()
        self._calls = dict.fromkeys(self.METHODS, 0)
        self._faults = dict.fromkeys(self.FAULTS, 0)

    def set_fault(self, fault: str, count: int) -> None:
        if fault not in self._faults:
            allowed = ", ".join(self.FAULTS) or "none"
            raise ValueError(f"{type(self).__name__}: unknown fault {fault!r}; allowed: {allowed}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise ValueError(f"{type(self).__name__}: fault count must be an int >= 0, got {count!r}")
        with self._lock:
            self._faults[fault] = count

    def counters(self) -> dict:
        with self._lock:
            return {"calls": dict(self._calls), "faults": dict(self._faults)}

    def _take_fault(self, fault: str) -> bool:
        """True (and one fewer pending) when the fault is armed. Call with the lock held."""
        if self._faults[fault]:
            self._faults[fault] -= 1
            return True
        return False


class _UserRecord:
    __slots__ = ("subscribers", "subscriptions")

    def __init__(self):
        # dicts used as insertion-ordered sets
        self.subscribers: dict[str, None] = {}
        self.subscriptions: dict[str, None] = {}


class UserDB(_Handler):
    """Users with their subscribers and subscriptions."""

    METHODS = ("create_user", "delete_user", "get_user", "subscribe", "unsubscribe", "census")
    FAULTS = ("drop_create",)

    def __init__(self):
        super().__init__()
        self._users: dict[str, _UserRecord] = {}

    def create_user(self, name):
        with self._lock:
            self._calls["create_user"] += 1
            if not name:
                raise InvalidRequest(why="empty user name")
            if name in self._users:
                raise DuplicateUser(name=name)
            if self._take_fault("drop_create"):
                return
            self._users[name] = _UserRecord()

    def delete_user(self, name):
        with self._lock:
            self._calls["delete_user"] += 1
            rec = self._users.pop(name, None)
            if rec is None:
                raise UnknownUser(name=name)
            for follower in rec.subscribers:
                other = self._users.get(follower)
                if other is not None:
                    other.subscriptions.pop(name, None)
            for followee in rec.subscriptions:
                other = self._users.get(followee)
                if other is not None:
                    other.subscribers.pop(name, None)

    def get_user(self, name):
        with self._lock:
            self._calls["get_user"] += 1
            rec = self._users.get(name)
            if rec is None:
                raise UnknownUser(name=name)
            return beps.User(name=name, subscribers=list(rec.subscribers),
                             subscriptions=list(rec.subscriptions))

    def _pair(self, follower, followee):
        """Both records, or the IDL exception. Call with the lock held."""
        a = self._users.get(follower)
        if a is None:
            raise UnknownUser(name=follower)
        b = self._users.get(followee)
        if b is None:
            raise UnknownUser(name=followee)
        if follower == followee:
            raise InvalidRequest(why=f"{follower!r} cannot subscribe to itself")
        return a, b

    def subscribe(self, follower, followee):
        with self._lock:
            self._calls["subscribe"] += 1
            a, b = self._pair(follower, followee)
            if followee in a.subscriptions:
                raise InvalidRequest(why=f"{follower!r} already subscribes to {followee!r}")
            a.subscriptions[followee] = None
            b.subscribers[follower] = None

    def unsubscribe(self, follower, followee):
        with self._lock:
            self._calls["unsubscribe"] += 1
            a, b = self._pair(follower, followee)
            if followee not in a.subscriptions:
                raise InvalidRequest(why=f"{follower!r} does not subscribe to {followee!r}")
            del a.subscriptions[followee]
            b.subscribers.pop(follower, None)

    def census(self):
        with self._lock:
            self._calls["census"] += 1
            return len(self._users)


class PayloadDB(_Handler):
    """Messages per user. Ids are unique per payload DB, starting at 1."""

    METHODS = ("store", "list_messages", "drop_user", "census")

    def __init__(self):
        super().__init__()
        self._messages: dict[str, list] = {}
        self._held = 0
        self._next_id = 1

    def store(self, user, text):
        with self._lock:
            self._calls["store"] += 1
            msg = beps.Message(id=self._next_id, user=user, text=text, ts_ns=time.time_ns())
            self._next_id += 1
            self._messages.setdefault(user, []).append(msg)
            self._held += 1
            return msg

    def list_messages(self, user):
        with self._lock:
            self._calls["list_messages"] += 1
            return list(self._messages.get(user, ()))

    def drop_user(self, user):
        with self._lock:
            self._calls["drop_user"] += 1
            dropped = len(self._messages.pop(user, ()))
            self._held -= dropped
            return dropped

    def census(self):
        with self._lock:
            self._calls["census"] += 1
            return self._held


class ReadEndpoint(_Handler):
    """A feed per user: the messages of the users it follows, in arrival order.

    Over RPC every update_feed brings its own copy of the message; copies of one message id are shared (with a
    reference count), so that a paper-scale run (10,000 messages, ~200,000 feed entries) holds each text once.
    """

    METHODS = ("update_feed", "get_feed", "drop_feed", "census")
    FAULTS = ("drop_feed_update",)

    def __init__(self):
        super().__init__()
        self._feeds: dict[str, list] = {}
        self._shared: dict[int, list] = {}  # message id -> [message, number of feed entries holding it]
        self._entries = 0

    def update_feed(self, user, msg):
        with self._lock:
            self._calls["update_feed"] += 1
            if self._take_fault("drop_feed_update"):
                return
            slot = self._shared.get(msg.id)
            if slot is None:
                slot = self._shared[msg.id] = [msg, 0]
            slot[1] += 1
            self._feeds.setdefault(user, []).append(slot[0])
            self._entries += 1

    def get_feed(self, user):
        with self._lock:
            self._calls["get_feed"] += 1
            return list(self._feeds.get(user, ()))

    def drop_feed(self, user):
        with self._lock:
            self._calls["drop_feed"] += 1
            feed = self._feeds.pop(user, ())
            self._entries -= len(feed)
            shared = self._shared
            for msg in feed:
                slot = shared[msg.id]
                slot[1] -= 1
                if not slot[1]:
                    del shared[msg.id]

    def census(self):
        with self._lock:
            self._calls["census"] += 1
            return self._entries


class Worker(_Handler):
    """An aggregator: serves the Frontend interface from the user DB, the payload DB and the read endpoint.

    Call it from one thread at a time (its callee connections are not thread-safe); the load balancer does.
    server_ns in its replies is its own time for the call.
    """

    METHODS = ("create_user", "delete_user", "subscribe", "unsubscribe", "publish", "get_feed", "census")

    def __init__(self, userdb, payloaddb, reader):
        super().__init__()
        self.userdb = userdb
        self.payloaddb = payloaddb
        self.reader = reader

    def _count(self, method):
        with self._lock:
            self._calls[method] += 1

    def create_user(self, name):
        t0 = perf_ns()
        self._count("create_user")
        self.userdb.create_user(name)
        return beps.Reply(server_ns=perf_ns() - t0)

    def delete_user(self, name):
        t0 = perf_ns()
        self._count("delete_user")
        self.userdb.delete_user(name)  # UnknownUser leaves the other stores alone
        self.payloaddb.drop_user(name)
        self.reader.drop_feed(name)
        return beps.Reply(server_ns=perf_ns() - t0)

    def subscribe(self, follower, followee):
        t0 = perf_ns()
        self._count("subscribe")
        self.userdb.subscribe(follower, followee)
        return beps.Reply(server_ns=perf_ns() - t0)

    def unsubscribe(self, follower, followee):
        t0 = perf_ns()
        self._count("unsubscribe")
        self.userdb.unsubscribe(follower, followee)
        return beps.Reply(server_ns=perf_ns() - t0)

    def publish(self, user, text):
        """Store the message, read the publisher, update each subscriber's feed with one call each."""
        t0 = perf_ns()
        self._count("publish")
        msg = self.payloaddb.store(user, text)
        try:
            publisher = self.userdb.get_user(user)
        except UnknownUser:
            # Off the measured path: do not leave the orphan message behind.
            self.payloaddb.drop_user(user)
            raise
        update = self.reader.update_feed
        for follower in publisher.subscribers:
            update(follower, msg)
        return beps.Reply(server_ns=perf_ns() - t0, id=msg.id)

    def get_feed(self, user):
        self._count("get_feed")
        return self.reader.get_feed(user)

    def census(self):
        self._count("census")
        return beps.Census(users=self.userdb.census(), messages=self.payloaddb.census(),
                           feed_entries=self.reader.census())


class LoadBalancer(_Handler):
    """The API gateway: forwards each Frontend call round robin to one worker, one lock per worker.

    server_ns in a reply is the load balancer's own time from entry to exit (lock wait included). A worker's
    IDL exception reaches the caller unchanged. The unmeasured helpers (get_feed, census) rotate on their own
    index, so they do not shift which worker serves the measured calls.
    """

    METHODS = ("create_user", "delete_user", "subscribe", "unsubscribe", "publish", "get_feed", "census")

    def __init__(self, workers):
        super().__init__()
        self.workers = list(workers)
        if not self.workers:
            raise ValueError("LoadBalancer needs at least one worker")
        n = len(self.workers)
        self._worker_locks = [threading.Lock() for _ in range(n)]
        self._rr = itertools.count()
        self._helper_rr = itertools.count()
        # Per worker, updated under that worker's lock: measured calls, helper calls, calls per method.
        self._per_worker = [0] * n
        self._helper_per_worker = [0] * n
        self._per_worker_calls = [dict.fromkeys(self.METHODS, 0) for _ in range(n)]

    def _forward(self, method, *args):
        t0 = perf_ns()
        i = next(self._rr) % len(self.workers)
        with self._worker_locks[i]:
            self._per_worker[i] += 1
            self._per_worker_calls[i][method] += 1
            try:
                reply = getattr(self.workers[i], method)(*args)
            except IDL_ERRORS:
                raise  # passed through to the client unchanged
        reply.server_ns = perf_ns() - t0
        return reply

    def _helper(self, method, *args):
        i = next(self._helper_rr) % len(self.workers)
        with self._worker_locks[i]:
            self._helper_per_worker[i] += 1
            self._per_worker_calls[i][method] += 1
            return getattr(self.workers[i], method)(*args)

    def create_user(self, name):
        return self._forward("create_user", name)

    def delete_user(self, name):
        return self._forward("delete_user", name)

    def subscribe(self, follower, followee):
        return self._forward("subscribe", follower, followee)

    def unsubscribe(self, follower, followee):
        return self._forward("unsubscribe", follower, followee)

    def publish(self, user, text):
        return self._forward("publish", user, text)

    def get_feed(self, user):
        return self._helper("get_feed", user)

    def census(self):
        return self._helper("census")

    def counters(self) -> dict:
        calls = dict.fromkeys(self.METHODS, 0)
        per_worker, helper_per_worker = [], []
        for i, lock in enumerate(self._worker_locks):
            with lock:
                per_worker.append(self._per_worker[i])
                helper_per_worker.append(self._helper_per_worker[i])
                for method, n in self._per_worker_calls[i].items():
                    calls[method] += n
        with self._lock:
            faults = dict(self._faults)
        return {"calls": calls, "faults": faults, "per_worker": per_worker,
                "helper_per_worker": helper_per_worker}
