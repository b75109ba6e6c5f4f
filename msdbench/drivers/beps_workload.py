"""The BEPS client's workload: the paper's request sequence, every call timed on its own, then checked.

`run_workload(frontend, w)` drives any object with the Frontend methods of msdbench/idl/beps.thrift (the load
balancer's handler, a thriftpy2 client to it, a shared-memory stub) with one request in flight at a time:

  1. (optional) `warmup` create_user/delete_user pairs on names of their own: timed, kept apart as "warmup";
  2. create_user for U users with unique, seeded, `name_len`-character names;
  3. subscribe: each of A active users follows k others (S = A*k calls);
  4. publish: each active user publishes p texts of exactly `message_len` bytes (P = A*p calls);
  5. unsubscribe: the matching unsubscribes, one per acknowledged subscribe, in the same order;
  6. delete_user for every user.

The paper's scale is U=10,000, A=500, k=20, p=20 (10,000 calls of each type); 10-character names and 280-byte
messages. The followees of an active user are drawn (seeded) among the other active users when there are at
least k of them, else among all other users: at paper scale every publish then fans out to ~k feeds (one
update_feed call each), which is what makes publish the most expensive request, as in the paper (11-15x
create_user on one VM).

Faithfulness note: the original C++ client built its user names from the microsecond clock mod 62 in a tight
loop, so only ~620 of its 10,000 names were distinct: ~94% of its create/delete calls were duplicates or
no-ops and only ~200 users were active (see reference/original-code-facts.md). The paper describes unique
10-character names, and this port uses unique names: a heavier workload than the code behind the paper's
figures. Say so wherever results are compared with the paper's.

Each call is bracketed by `clock()` (int ns, perf_counter_ns by default: CLOCK_MONOTONIC on Linux) into
preallocated int64 arrays; the reply's server_ns (the load balancer's own time) is kept beside it. Argument
generation happens before the timed loops. An IDL exception (or TApplicationException) from a call is not
raised: the call is left out of the samples and reported as a problem. A transport failure
(TTransportException, OSError) does raise: the measurement is broken, not the service.

The correctness check runs in every run and is never timed: the census (users, messages, feed_entries) before
the workload, after the creates, after the publishes and after the deletes (all zero); after the publishes and
before the unsubscribes every follower's feed, read with get_feed, must hold exactly the messages its followees
published (compared by id; user and text checked too). A failed check never raises: it sets `correct` False
and adds human-readable `problems` (the first PROBLEM_LIMIT kept, `problem_count` counts them all).
"""

from __future__ import annotations

import random
import string
import time
from collections import Counter
from dataclasses import asdict, dataclass

import numpy as np
from thriftpy2.thrift import TException
from thriftpy2.transport import TTransportException

REQUEST_TYPES = ("create_user", "subscribe", "publish", "unsubscribe", "delete_user")
ALPHABET = string.ascii_letters + string.digits  # 62 symbols, as the original's names
PROBLEM_LIMIT = 20


@dataclass
class BepsWorkload:
    users: int = 200            # U users created
    active_users: int = 20      # A active users
    follows_per_user: int = 5   # each active user subscribes to k others (so S = A*k subscribes)
    publishes_per_user: int = 5 # each active user publishes this many (P = A*p publishes)
    name_len: int = 10
    message_len: int = 280
    warmup: int = 0             # optional warm-up create/delete pairs on separate names, marked, not in samples
    seed: int = 1


@dataclass
class WorkloadPlan:
    """Every argument of every call, generated before anything is timed."""

    names: list[str]                    # the U users, in creation (and deletion) order
    active: list[str]                   # the A active users
    follows: list[tuple[str, str]]      # (follower, followee), in call order
    publishes: list[tuple[str, str]]    # (user, text), in call order
    warmup_names: list[str]


def _validate(w: BepsWorkload) -> None:
    def bad(why):
        raise ValueError(f"BepsWorkload: {why}")

    for field in ("users", "active_users", "follows_per_user", "publishes_per_user", "message_len", "warmup"):
        if getattr(w, field) < 0:
            bad(f"{field} must be >= 0")
    if w.active_users > w.users:
        bad(f"active_users ({w.active_users}) exceeds users ({w.users})")
    if w.active_users and w.follows_per_user > w.users - 1:
        bad(f"follows_per_user ({w.follows_per_user}) exceeds the {w.users - 1} other users")
    if w.name_len < 1:
        bad("name_len must be >= 1")
    if len(ALPHABET) ** w.name_len < 2 * (w.users + w.warmup):
        bad(f"name_len {w.name_len} is too short for {w.users + w.warmup} unique names")


def make_plan(w: BepsWorkload) -> WorkloadPlan:
    """The deterministic (seeded) arguments of the workload. The users' part does not depend on `warmup`."""
    _validate(w)
    rng = random.Random(w.seed)

    def fresh_names(n, taken):
        out = []
        while len(out) < n:
            name = "".join(rng.choices(ALPHABET, k=w.name_len))
            if name not in taken:
                taken.add(name)
                out.append(name)
        return out

    taken: set[str] = set()
    names = fresh_names(w.users, taken)
    active = rng.sample(names, w.active_users)

    k = w.follows_per_user
    pool = active if len(active) - 1 >= k else names
    follows = []
    for a in active:
        others = [u for u in pool if u != a]
        follows.extend((a, b) for b in rng.sample(others, k))

    filler = "".join(rng.choices(ALPHABET + " ", k=w.message_len))
    publishes = []
    for a in active:
        for j in range(w.publishes_per_user):
            publishes.append((a, (f"{a}#{j} " + filler)[: w.message_len]))

    warmup_names = fresh_names(w.warmup, taken)
    return WorkloadPlan(names, active, follows, publishes, warmup_names)


class _Problems:
    def __init__(self, limit=PROBLEM_LIMIT):
        self.limit = limit
        self.items: list[str] = []
        self.count = 0

    def add(self, text: str) -> None:
        self.count += 1
        if len(self.items) < self.limit:
            self.items.append(text)


def _call_repr(kind, args):
    if kind == "publish":
        user, text = args
        return f"publish({user!r}, <{len(text.encode())} bytes>)"
    return f"{kind}({', '.join(repr(a) for a in args)})"


def _ids(ids, show=8):
    ids = sorted(ids)
    more = f" ... +{len(ids) - show}" if len(ids) > show else ""
    return ", ".join(str(i) for i in ids[:show]) + more


def _timed(method, kind, calls, clock, problems, want_ids=False):
    """Call method(*args) for each args, one at a time, each bracketed by clock().

    Returns (e2e_ns, server_ns, ok, ids): the arrays hold the acknowledged calls only; ok marks which calls
    were acknowledged; ids are the replies' ids (publish) or None.
    """
    n = len(calls)
    e2e = np.empty(n, dtype=np.int64)
    srv = np.empty(n, dtype=np.int64)
    ok = np.zeros(n, dtype=bool)
    ids = [None] * n if want_ids else None
    for i, args in enumerate(calls):
        try:
            t0 = clock()
            reply = method(*args)
            t1 = clock()
        except TTransportException:
            raise
        except TException as e:
            problems.add(f"{_call_repr(kind, args)} raised {e!r}")
            continue
        e2e[i] = t1 - t0
        s = reply.server_ns
        srv[i] = -1 if s is None else s
        ok[i] = True
        if want_ids:
            ids[i] = reply.id
    if not ok.all():
        e2e, srv = e2e[ok], srv[ok]
    return e2e, srv, ok, ids


def _census(frontend, when, expected, problems):
    try:
        c = frontend.census()
    except TTransportException:
        raise
    except TException as e:
        problems.add(f"{when}: census() raised {e!r}")
        return
    got = (c.users, c.messages, c.feed_entries)
    if got != tuple(expected):
        problems.add(f"{when}: users={c.users} messages={c.messages} feed_entries={c.feed_entries} "
                     f"(expected users={expected[0]} messages={expected[1]} feed_entries={expected[2]})")


def _check_feeds(frontend, plan, follow_ok, publish_ok, publish_ids, problems):
    """Every follower's feed against what its acknowledged followees published. Returns the expected total."""
    published: dict[int, tuple[str, str]] = {}  # id -> (user, text)
    by_user: dict[str, list[int]] = {}
    for (user, text), ok, mid in zip(plan.publishes, publish_ok, publish_ids):
        if not ok:
            continue
        if mid is None:
            problems.add(f"publish({user!r}) was acknowledged without a message id")
            continue
        if mid in published:
            problems.add(f"message id {mid} was returned by two publishes")
        published[mid] = (user, text)
        by_user.setdefault(user, []).append(mid)

    expected: dict[str, set[int]] = {}
    for (follower, followee), ok in zip(plan.follows, follow_ok):
        feed = expected.setdefault(follower, set())
        if ok:
            feed.update(by_user.get(followee, ()))

    total = 0
    for follower, want in expected.items():
        total += len(want)
        try:
            feed = frontend.get_feed(follower)
        except TTransportException:
            raise
        except TException as e:
            problems.add(f"get_feed({follower!r}) raised {e!r}")
            continue
        got = Counter(m.id for m in feed)
        missing = want - got.keys()
        extra = got.keys() - want
        dups = [i for i, n in got.items() if n > 1]
        if missing:
            problems.add(f"feed of user {follower!r} lacks {len(missing)} of {len(want)} messages "
                         f"(ids {_ids(missing)})")
        if extra:
            problems.add(f"feed of user {follower!r} holds {len(extra)} messages of users it does not follow "
                         f"(ids {_ids(extra)})")
        if dups:
            problems.add(f"feed of user {follower!r} holds {len(dups)} messages more than once (ids {_ids(dups)})")
        altered = [m.id for m in feed if m.id in published and (m.user, m.text) != published[m.id]]
        if altered:
            problems.add(f"feed of user {follower!r}: {len(altered)} messages differ from what was published "
                         f"(ids {_ids(altered)})")
    return total


def run_workload(frontend, w: BepsWorkload, clock=time.perf_counter_ns) -> dict:
    """Run the BEPS sequence against `frontend` and check the outcome. See the module docstring.

    Returns {"samples": {type: {"e2e_ns": int64 array, "server_ns": int64 array}} for the five REQUEST_TYPES,
    "warmup": {"create_user": {...}, "delete_user": {...}}, "correct": bool, "problems": [str] (at most
    PROBLEM_LIMIT), "problem_count": int, "counts": {type: acknowledged calls (= samples)}, "errors": {type:
    failed calls}, "planned": {type: calls planned}, "feed_updates_expected": int, "workload": dict}.
    server_ns is -1 where a reply carried none.
    """
    plan = make_plan(w)
    problems = _Problems()
    samples, counts, errors, planned = {}, {}, {}, {}

    def record(kind, calls, e2e, srv, ok, into=samples):
        into[kind] = {"e2e_ns": e2e, "server_ns": srv}
        if into is samples:
            counts[kind] = int(ok.sum())
            errors[kind] = len(calls) - counts[kind]
            planned[kind] = len(calls)

    _census(frontend, "before the workload", (0, 0, 0), problems)

    warmup = {}
    if plan.warmup_names:
        # interleaved pairs: create one name, delete it, next name
        wc = np.empty(len(plan.warmup_names), dtype=np.int64)
        ws, dc, ds = wc.copy(), wc.copy(), wc.copy()
        cok = np.zeros(len(wc), dtype=bool)
        dok = cok.copy()
        for i, name in enumerate(plan.warmup_names):
            e, s, ok, _ = _timed(frontend.create_user, "create_user", [(name,)], clock, problems)
            if ok[0]:
                wc[i], ws[i], cok[i] = e[0], s[0], True
            e, s, ok, _ = _timed(frontend.delete_user, "delete_user", [(name,)], clock, problems)
            if ok[0]:
                dc[i], ds[i], dok[i] = e[0], s[0], True
        warmup = {"create_user": {"e2e_ns": wc[cok], "server_ns": ws[cok]},
                  "delete_user": {"e2e_ns": dc[dok], "server_ns": ds[dok]}}

    calls = [(n,) for n in plan.names]
    e2e, srv, create_ok, _ = _timed(frontend.create_user, "create_user", calls, clock, problems)
    record("create_user", calls, e2e, srv, create_ok)
    users_acked = int(create_ok.sum())
    _census(frontend, "after creates", (users_acked, 0, 0), problems)

    e2e, srv, follow_ok, _ = _timed(frontend.subscribe, "subscribe", plan.follows, clock, problems)
    record("subscribe", plan.follows, e2e, srv, follow_ok)

    e2e, srv, publish_ok, ids = _timed(frontend.publish, "publish", plan.publishes, clock, problems,
                                       want_ids=True)
    record("publish", plan.publishes, e2e, srv, publish_ok)

    feed_total = _check_feeds(frontend, plan, follow_ok, publish_ok, ids, problems)
    _census(frontend, "after publishes", (users_acked, int(publish_ok.sum()), feed_total), problems)

    calls = [f for f, ok in zip(plan.follows, follow_ok) if ok]
    e2e, srv, ok, _ = _timed(frontend.unsubscribe, "unsubscribe", calls, clock, problems)
    record("unsubscribe", calls, e2e, srv, ok)

    calls = [(n,) for n in plan.names]
    e2e, srv, ok, _ = _timed(frontend.delete_user, "delete_user", calls, clock, problems)
    record("delete_user", calls, e2e, srv, ok)
    _census(frontend, "after deletes", (0, 0, 0), problems)

    return {
        "samples": {kind: samples[kind] for kind in REQUEST_TYPES},
        "warmup": warmup,
        "correct": problems.count == 0,
        "problems": problems.items,
        "problem_count": problems.count,
        "counts": {kind: counts[kind] for kind in REQUEST_TYPES},
        "errors": {kind: errors[kind] for kind in REQUEST_TYPES},
        "planned": {kind: planned[kind] for kind in REQUEST_TYPES},
        "feed_updates_expected": feed_total,
        "workload": asdict(w),
    }
