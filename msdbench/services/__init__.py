"""Service kinds: which IDL service each implements and which handler class holds its logic.

Handlers are plain classes that know nothing of transports. A handler's callees arrive as keyword
arguments named in `deps`: each is an object with the callee's IDL methods (a thriftpy2 client, a
direct reference to the callee's handler, or a shared-memory stub: the handler cannot tell).
A dep whose name ends in "s" (e.g. "workers") receives a list: every instance of that kind.

Optional handler methods, reached through the domain's control service:
  set_fault(fault: str, count: int)  test-only fault switches
  counters() -> dict                 per-service counters (e.g. calls served)
"""

from dataclasses import dataclass, field
from importlib import import_module


@dataclass(frozen=True)
class ServiceKind:
    name: str
    idl: str            # thrift file under msdbench/idl/, without .thrift
    service: str        # service name inside that file
    handler: str        # "module:Class"
    deps: dict[str, str] = field(default_factory=dict)  # constructor arg -> callee kind

    def thrift_service(self):
        from msdbench import idl

        return getattr(idl.load(self.idl), self.service)

    def handler_class(self):
        module, cls = self.handler.split(":")
        return getattr(import_module(module), cls)


KINDS: dict[str, ServiceKind] = {
    k.name: k
    for k in [
        ServiceKind("poll", "poll", "Poll", "msdbench.services.poll:PollHandler"),
        ServiceKind("userdb", "beps", "UserDB", "msdbench.services.beps:UserDB"),
        ServiceKind("payloaddb", "beps", "PayloadDB", "msdbench.services.beps:PayloadDB"),
        ServiceKind("reader", "beps", "ReadEndpoint", "msdbench.services.beps:ReadEndpoint"),
        ServiceKind(
            "worker", "beps", "Frontend", "msdbench.services.beps:Worker",
            deps={"userdb": "userdb", "payloaddb": "payloaddb", "reader": "reader"},
        ),
        ServiceKind("lb", "beps", "Frontend", "msdbench.services.beps:LoadBalancer",
                    deps={"workers": "worker"}),
    ]
}
