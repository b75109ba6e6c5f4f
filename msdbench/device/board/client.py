# The on-board client (deployments 1 and 2): the same closed loops as msdbench/drivers/, timed
# with the board's own microsecond clock. The BEPS arguments come from the host
# (drivers/beps_workload.make_plan), so board and host run the very same request sequence, and
# the correctness check runs here too: every feed exact, nothing left after the deletes.

PROBLEM_LIMIT = 20


class Problems:
    def __init__(self):
        self.items = []
        self.count = 0

    def add(self, text):
        self.count += 1
        if len(self.items) < PROBLEM_LIMIT:
            self.items.append(text)


def run_micro(entry, spec):
    size = spec["payload"]
    binary = spec.get("payload_mode", "binary") == "binary"
    payload = b"\xa5" * size if binary else list(range(size))
    call = entry.poll if binary else entry.poll_list
    warmup = spec.get("warmup", 0)
    total = warmup + spec["requests"]
    e2e = [0] * total
    for i in range(total):
        t0 = ticks_us()
        call(payload)
        e2e[i] = ticks_diff(ticks_us(), t0)
    return {"samples": {"poll": {"warmup": [int(i < warmup) for i in range(total)], "e2e_us": e2e}},
            "correct": True}


def _timed(entry, op, calls, problems, warm=0):
    method = getattr(entry, op)
    e2e, srv, ids = [], [], []
    for args in calls:
        try:
            t0 = ticks_us()
            reply = method(*args)
            t1 = ticks_us()
        except (TError, AppError) as e:
            problems.add("%s%r raised %r" % (op, tuple(args), e))
            ids.append(None)
            continue
        e2e.append(ticks_diff(t1, t0))
        srv.append(-1 if reply.server_ns is None else reply.server_ns)
        ids.append(reply.id)
    return {"warmup": [warm] * len(e2e), "e2e_us": e2e, "server_ns": srv}, ids


def _census(entry, when, want, problems):
    c = entry.census()
    got = [c.users, c.messages, c.feed_entries]
    if got != list(want):
        problems.add("%s: users=%d messages=%d feed_entries=%d (expected %d %d %d)" % (
            when, got[0], got[1], got[2], want[0], want[1], want[2]))


def run_beps(entry, spec):
    p = Problems()
    names, follows, publishes = spec["names"], spec["follows"], spec["publishes"]
    samples = {}
    warm = [[n] for n in spec.get("warmup_names", ())]
    warm_create, _ = _timed(entry, "create_user", warm, p, 1)
    warm_delete, _ = _timed(entry, "delete_user", warm, p, 1)
    _census(entry, "before", (0, 0, 0), p)
    samples["create_user"], _ = _timed(entry, "create_user", [[n] for n in names], p)
    _census(entry, "after the creates", (len(names), 0, 0), p)
    samples["subscribe"], _ = _timed(entry, "subscribe", follows, p)
    samples["publish"], ids = _timed(entry, "publish", publishes, p)
    followers = {}
    for a, b in follows:
        followers.setdefault(b, []).append(a)
    want = {}
    for (user, text), mid in zip(publishes, ids):
        if mid is not None:
            for f in followers.get(user, ()):
                want.setdefault(f, []).append((mid, user, text))
    entries = sum(len(v) for v in want.values())
    _census(entry, "after the publishes", (len(names), len([i for i in ids if i]), entries), p)
    for f in sorted(set(a for a, _ in follows)):
        got = [(m.id, m.user, m.text) for m in entry.get_feed(f)]
        if got != want.get(f, []):
            p.add("feed of %r: %d entries, expected %d (ids %r, expected %r)" % (
                f, len(got), len(want.get(f, [])), [g[0] for g in got][:8],
                [w[0] for w in want.get(f, [])][:8]))
    samples["unsubscribe"], _ = _timed(entry, "unsubscribe", follows, p)
    samples["delete_user"], _ = _timed(entry, "delete_user", [[n] for n in names], p)
    _census(entry, "after the deletes", (0, 0, 0), p)
    for op, warm_rows in (("create_user", warm_create), ("delete_user", warm_delete)):
        for col in warm_rows:  # warm-up rows first, marked, as the host driver keeps them
            samples[op][col] = warm_rows[col] + samples[op][col]
    return {"samples": samples, "correct": p.count == 0, "problems": p.items,
            "problem_count": p.count}
