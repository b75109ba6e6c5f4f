# The services on the board: poll and the BEPS server side, with the behaviour of
# msdbench/services/{poll,beps}.py (their docstrings hold the contract) in what MicroPython
# offers: no threads, no locks, no dataclasses. Times are the board's microsecond clock.
import time

try:
    ticks_us, ticks_diff = time.ticks_us, time.ticks_diff
except AttributeError:  # CPython: the host loads these files too (framing, codec tests)
    def ticks_us():
        return time.perf_counter_ns() // 1000

    def ticks_diff(a, b):
        return a - b


class _Handler:
    FAULTS = ()

    def __init__(self):
        self.calls = {}
        self.faults = {}
        for f in self.FAULTS:
            self.faults[f] = 0

    def count(self, method):
        self.calls[method] = self.calls.get(method, 0) + 1

    def set_fault(self, fault, count):
        if fault not in self.faults:
            raise ValueError("%s: unknown fault %r; allowed: %s" % (
                type(self).__name__, fault, ", ".join(self.FAULTS) or "none"))
        self.faults[fault] = count

    def take_fault(self, fault):
        if self.faults[fault]:
            self.faults[fault] -= 1
            return True
        return False

    def counters(self):
        return {"calls": self.calls, "faults": self.faults}


class Poll(_Handler):
    def poll(self, payload):
        self.count("poll")
        return ticks_us()

    poll_list = poll


class UserDB(_Handler):
    FAULTS = ("drop_create",)

    def __init__(self):
        _Handler.__init__(self)
        self.users = {}   # name -> [subscribers {name: None}, subscriptions {name: None}]

    def create_user(self, name):
        self.count("create_user")
        if not name:
            raise InvalidRequest(why="empty user name")
        if name in self.users:
            raise DuplicateUser(name=name)
        if self.take_fault("drop_create"):
            return
        self.users[name] = [{}, {}]

    def delete_user(self, name):
        self.count("delete_user")
        rec = self.users.pop(name, None)
        if rec is None:
            raise UnknownUser(name=name)
        for follower in rec[0]:
            other = self.users.get(follower)
            if other is not None:
                other[1].pop(name, None)
        for followee in rec[1]:
            other = self.users.get(followee)
            if other is not None:
                other[0].pop(name, None)

    def get_user(self, name):
        self.count("get_user")
        rec = self.users.get(name)
        if rec is None:
            raise UnknownUser(name=name)
        return User(name=name, subscribers=list(rec[0]), subscriptions=list(rec[1]))

    def _pair(self, follower, followee):
        a = self.users.get(follower)
        if a is None:
            raise UnknownUser(name=follower)
        b = self.users.get(followee)
        if b is None:
            raise UnknownUser(name=followee)
        if follower == followee:
            raise InvalidRequest(why="%r cannot subscribe to itself" % follower)
        return a, b

    def subscribe(self, follower, followee):
        self.count("subscribe")
        a, b = self._pair(follower, followee)
        if followee in a[1]:
            raise InvalidRequest(why="%r already subscribes to %r" % (follower, followee))
        a[1][followee] = None
        b[0][follower] = None

    def unsubscribe(self, follower, followee):
        self.count("unsubscribe")
        a, b = self._pair(follower, followee)
        if followee not in a[1]:
            raise InvalidRequest(why="%r does not subscribe to %r" % (follower, followee))
        del a[1][followee]
        b[0].pop(follower, None)

    def census(self):
        self.count("census")
        return len(self.users)


class PayloadDB(_Handler):
    def __init__(self):
        _Handler.__init__(self)
        self.messages = {}
        self.held = 0
        self.next_id = 1

    def store(self, user, text):
        self.count("store")
        msg = Message(id=self.next_id, user=user, text=text, ts_ns=ticks_us() * 1000)
        self.next_id += 1
        self.messages.setdefault(user, []).append(msg)
        self.held += 1
        return msg

    def list_messages(self, user):
        self.count("list_messages")
        return list(self.messages.get(user, ()))

    def drop_user(self, user):
        self.count("drop_user")
        dropped = len(self.messages.pop(user, ()))
        self.held -= dropped
        return dropped

    def census(self):
        self.count("census")
        return self.held


class ReadEndpoint(_Handler):
    FAULTS = ("drop_feed_update",)

    def __init__(self):
        _Handler.__init__(self)
        self.feeds = {}
        self.entries = 0

    def update_feed(self, user, msg):
        self.count("update_feed")
        if self.take_fault("drop_feed_update"):
            return
        self.feeds.setdefault(user, []).append(msg)
        self.entries += 1

    def get_feed(self, user):
        self.count("get_feed")
        return list(self.feeds.get(user, ()))

    def drop_feed(self, user):
        self.count("drop_feed")
        self.entries -= len(self.feeds.pop(user, ()))

    def census(self):
        self.count("census")
        return self.entries


class Worker(_Handler):
    def __init__(self, userdb, payloaddb, reader):
        _Handler.__init__(self)
        self.userdb = userdb
        self.payloaddb = payloaddb
        self.reader = reader

    def create_user(self, name):
        t0 = ticks_us()
        self.count("create_user")
        self.userdb.create_user(name)
        return Reply(server_ns=ticks_diff(ticks_us(), t0) * 1000)

    def delete_user(self, name):
        t0 = ticks_us()
        self.count("delete_user")
        self.userdb.delete_user(name)
        self.payloaddb.drop_user(name)
        self.reader.drop_feed(name)
        return Reply(server_ns=ticks_diff(ticks_us(), t0) * 1000)

    def subscribe(self, follower, followee):
        t0 = ticks_us()
        self.count("subscribe")
        self.userdb.subscribe(follower, followee)
        return Reply(server_ns=ticks_diff(ticks_us(), t0) * 1000)

    def unsubscribe(self, follower, followee):
        t0 = ticks_us()
        self.count("unsubscribe")
        self.userdb.unsubscribe(follower, followee)
        return Reply(server_ns=ticks_diff(ticks_us(), t0) * 1000)

    def publish(self, user, text):
        t0 = ticks_us()
        self.count("publish")
        msg = self.payloaddb.store(user, text)
        try:
            publisher = self.userdb.get_user(user)
        except UnknownUser:
            self.payloaddb.drop_user(user)
            raise
        update = self.reader.update_feed
        for follower in publisher.subscribers:
            update(follower, msg)
        return Reply(server_ns=ticks_diff(ticks_us(), t0) * 1000, id=msg.id)

    def get_feed(self, user):
        self.count("get_feed")
        return self.reader.get_feed(user)

    def census(self):
        self.count("census")
        return Census(users=self.userdb.census(), messages=self.payloaddb.census(),
                      feed_entries=self.reader.census())


class LoadBalancer(_Handler):
    """Round robin over the workers; the helpers (get_feed, census) on their own index."""

    def __init__(self, workers):
        _Handler.__init__(self)
        self.workers = workers
        self.rr = 0
        self.helper_rr = 0
        self.per_worker = [0] * len(workers)

    def _forward(self, method, *args):
        t0 = ticks_us()
        i = self.rr % len(self.workers)
        self.rr += 1
        self.per_worker[i] += 1
        self.count(method)
        reply = getattr(self.workers[i], method)(*args)
        reply.server_ns = ticks_diff(ticks_us(), t0) * 1000
        return reply

    def _helper(self, method, *args):
        i = self.helper_rr % len(self.workers)
        self.helper_rr += 1
        self.count(method)
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

    def counters(self):
        c = _Handler.counters(self)
        c["per_worker"] = self.per_worker
        return c


# service kind -> (IDL service, handler class, dependencies as (argument, callee kind))
KINDS = {
    "poll": ("Poll", Poll, ()),
    "userdb": ("UserDB", UserDB, ()),
    "payloaddb": ("PayloadDB", PayloadDB, ()),
    "reader": ("ReadEndpoint", ReadEndpoint, ()),
    "worker": ("Frontend", Worker, (("userdb", "userdb"), ("payloaddb", "payloaddb"),
                                    ("reader", "reader"))),
    "lb": ("Frontend", LoadBalancer, (("workers", "worker"),)),
}
