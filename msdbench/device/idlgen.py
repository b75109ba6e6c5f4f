"""The board's view of the IDL: msdbench/idl/*.thrift -> MicroPython source of struct classes and
method field lists, so the board speaks the same contract as every other backend (one IDL).

The board has no thrift parser: thriftpy2 parses the files here, and this writes its specs out as
plain Python for board/tbin.py to interpret (see its header for the field format).
"""

from __future__ import annotations

from msdbench import idl

DEVICE_IDLS = ("poll", "beps", "board")
BINARY = 18  # thriftpy2's TType.BINARY


def _sub(spec_tail) -> str:
    """thriftpy2's per-field extra (struct class, element type or (type, class)) -> source."""
    if isinstance(spec_tail, type):
        return spec_tail.__name__
    if isinstance(spec_tail, int):
        return f"({spec_tail}, None)"
    t, inner = spec_tail
    return f"({t}, {_sub(inner)})"


def _fields(thrift_spec: dict) -> str:
    parts = []
    for fid in sorted(thrift_spec):
        f = thrift_spec[fid]
        ttype, name = f[0], f[1]
        sub = "None" if len(f) == 3 else _sub(f[2])
        parts.append(f"({fid}, {ttype}, {name!r}, {sub})")
    return "(" + "".join(p + ", " for p in parts) + ")"


def device_spec_source(names=DEVICE_IDLS) -> str:
    classes, fields, services = [], [], []
    for name in names:
        module = idl.load(name)
        for attr in sorted(vars(module)):
            obj = getattr(module, attr)
            if not isinstance(obj, type):
                continue
            if hasattr(obj, "thrift_services"):
                methods = []
                for m in obj.thrift_services:
                    args = getattr(obj, f"{m}_args").thrift_spec
                    result = getattr(obj, f"{m}_result").thrift_spec
                    methods.append(f"    {m!r}: ({_fields(args)}, {_fields(result)}),")
                services.append(f"SERVICES[{attr!r}] = {{\n" + "\n".join(methods) + "\n}")
            elif hasattr(obj, "thrift_spec"):
                base = "TError" if issubclass(obj, Exception) else "TStruct"
                classes.append(f"class {attr}({base}):\n    pass\n")
                fields.append(f"{attr}._f = {_fields(obj.thrift_spec)}")
    head = f"# Generated from msdbench/idl/{{{','.join(names)}}}.thrift by msdbench.device.idlgen.\n"
    return "\n".join([head, *classes, *fields, "SERVICES = {}", *services]) + "\n"
