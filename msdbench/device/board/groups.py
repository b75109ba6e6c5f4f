# Isolation domains on a board: groups of services in one MicroPython program. MicroPython has
# no memory protection, so a group boundary is what a protected call pays without the hardware:
# a call inside a group is a direct call; a call across groups marshals the arguments into a
# buffer (Thrift binary, the IDL's encoding), copies it, unmarshals it on the other side, and
# the result comes back the same way. The link (main.py) reaches an entry service through the
# same Endpoint with a message that came off the wire.

class Endpoint:
    """A service's receiving side: one Thrift binary call message in, its reply message out."""

    def __init__(self, handler, service):
        self.handler = handler
        self.methods = SERVICES[service]
        self.replies = {}   # method -> its reply header for seqid 0 (every call inside a board)

    def handle(self, msg):
        name, mtype, seqid, pos = r_message(msg)
        method = name[name.find(":") + 1:]   # "lb:create_user" off the link, "create_user" inside
        out = bytearray()
        spec = self.methods.get(method)
        if spec is None or mtype != M_CALL:
            return _app_error(out, method, seqid, "unknown method %r" % name)
        args_spec, result_spec = spec
        args, _ = r_values(msg, pos, args_spec)
        result = [None] * len(result_spec)
        try:
            value = getattr(self.handler, method)(*args)
            if result_spec and result_spec[0][0] == 0:
                result[0] = value
        except TError as e:
            for i in range(len(result_spec)):
                f = result_spec[i]
                if f[0] and isinstance(e, f[3]):
                    result[i] = e
                    break
            else:
                return _app_error(out, method, seqid, repr(e))
        except Exception as e:
            return _app_error(out, method, seqid, "%s: %s" % (type(e).__name__, e))
        if seqid:
            w_message(out, method, M_REPLY, seqid)
        else:
            head = self.replies.get(method)
            if head is None:
                head = self.replies[method] = message_prefix(method, M_REPLY, 0)
            out += head
        w_values(out, result_spec, result)
        return bytes(out)


def _app_error(out, method, seqid, text):
    w_message(out, method, M_EXCEPTION, seqid)
    w_struct(out, AppError(text))
    return bytes(out)


def read_reply(reply, result_spec):
    """A reply message -> the call's value, or raise what the callee raised."""
    mtype, pos = r_body(reply)
    if mtype == M_EXCEPTION:
        err, _ = r_values(reply, pos, AppError._f)
        raise AppError(err[0] or "", err[1] or 6)
    result, _ = r_values(reply, pos, result_spec)
    for i in range(len(result_spec)):
        if result_spec[i][0] and result[i] is not None:
            raise result[i]
    if result_spec and result_spec[0][0] == 0:
        return result[0]
    return None


class Remote:
    """The calling side of a group boundary: the callee's IDL methods, each call marshalled,
    copied and unmarshalled both ways. `crossings` counts the calls that paid for it."""

    def __init__(self, endpoint, service):
        self.endpoint = endpoint
        self.crossings = 0
        for method, spec in SERVICES[service].items():
            setattr(self, method, self._method(method, spec))

    def _method(self, method, spec):
        args_spec, result_spec = spec
        prefix = message_prefix(method, M_CALL, 0)

        def call(*args):
            out = bytearray(prefix)
            w_values(out, args_spec, args)
            self.crossings += 1
            reply = self.endpoint.handle(bytes(out))     # the copy into the callee's group
            return read_reply(bytes(reply), result_spec)  # and back into the caller's
        return call


class Board:
    """The services of one plan, wired group by group; the link's dispatch table."""

    def __init__(self, plan):
        self.plan = plan
        self.group = {}      # service name -> group
        self.kind = {}
        for s in plan["services"]:
            self.group[s["name"]] = s["group"]
            self.kind[s["name"]] = s["kind"]
        self.handlers = {}
        self.endpoints = {}
        self.remotes = []
        pending = list(self.group)
        while pending:       # callees first
            for name in pending:
                deps = KINDS[self.kind[name]][2]
                if all(n in self.handlers for _, kind in deps for n in self.of_kind(kind)):
                    self.handlers[name] = self._build(name, deps)
                    pending.remove(name)
                    break
            else:
                raise ValueError("cyclic dependencies among %r" % pending)

    def of_kind(self, kind):
        return [n for n in self.group if self.kind[n] == kind]

    def endpoint(self, name):
        ep = self.endpoints.get(name)
        if ep is None:
            ep = self.endpoints[name] = Endpoint(self.handlers[name], KINDS[self.kind[name]][0])
        return ep

    def stub(self, callee, caller_group):
        """How code in caller_group reaches callee: its handler, or across the boundary."""
        if self.group[callee] == caller_group:
            return self.handlers[callee]
        r = Remote(self.endpoint(callee), KINDS[self.kind[callee]][0])
        self.remotes.append(r)
        return r

    def _build(self, name, deps):
        kw = {}
        for arg, kind in deps:
            stubs = [self.stub(n, self.group[name]) for n in self.of_kind(kind)]
            kw[arg] = stubs if arg.endswith("s") else stubs[0]
        return KINDS[self.kind[name]][1](**kw)

    def crossings(self):
        return sum(r.crossings for r in self.remotes)

