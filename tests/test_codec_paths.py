"""The codec's two paths (codec.py's generated Python, _fastwire's compiled twin) and thriftpy2:
byte-identical encodings, equal decodings, the same errors at the same limits. CI runs the whole
wire suite once compiled (MSDBENCH_REQUIRE_COMPILED=1 makes a missing build a failure) and once
with MSDBENCH_PURE_PYTHON=1."""

from __future__ import annotations

import os
import random
import struct

import pytest
from thriftpy2.protocol.cybin import TCyBinaryProtocol
from thriftpy2.transport.memory import TCyMemoryBuffer

from msdbench import idl
from msdbench.transports import codec
from msdbench.transports.codec import Incomplete, Limits, WireError, read_header, service_codec

beps, Poll = idl.load("beps"), idl.load("poll").Poll
LIM = 1 << 24


def test_the_compiled_path_is_there_when_required():
    if os.environ.get("MSDBENCH_REQUIRE_COMPILED"):
        assert codec.COMPILED, "the compiled codec was not built (setup.py, Cython, a C compiler)"
    if os.environ.get("MSDBENCH_PURE_PYTHON"):
        assert not codec.COMPILED


def _thriftpy2_call(service, name, args) -> bytes:
    buf = TCyMemoryBuffer()
    prot = TCyBinaryProtocol(buf)
    prot.write_message_begin(name, 1, 0)
    prot.write_struct(getattr(service, name + "_args")(*args))
    prot.write_message_end()
    return buf.getvalue()


def _calls():
    rnd = random.Random(15)
    msg = beps.Message(id=7, user="\u00e9mile", text="x" * 280, ts_ns=-3)
    yield Poll, "poll", (b"",)
    yield Poll, "poll", (bytes(rnd.randrange(256) for _ in range(9000)),)
    yield Poll, "poll_list", ([rnd.randrange(-2**63, 2**63) for _ in range(64)],)
    yield Poll, "poll_list", ([],)
    yield beps.Frontend, "create_user", ("n" * 10,)
    yield beps.Frontend, "subscribe", ("a", "b")
    yield beps.Frontend, "census", ()
    yield beps.ReadEndpoint, "update_feed", ("bob", msg)
    yield beps.PayloadDB, "store", ("u", "")


def _paths(m):
    compiled = {k: getattr(m, k) for k in m.pure}
    return [m.pure, compiled] if compiled != m.pure else [m.pure]


@pytest.mark.parametrize("service,name,args", list(_calls()))
def test_calls_encode_like_thriftpy2_and_decode_back(service, name, args):
    m = service_codec(service).methods[name]
    ref = _thriftpy2_call(service, name, args)
    for path in _paths(m):
        o = bytearray()
        path["encode_call"](o, *args)
        assert bytes(o) == ref
        _, mtype, _, p = read_header(o, 0, len(o), LIM)
        got, q = path["decode_args"](o, p, len(o), LIM)
        assert got == args and q == len(o) and mtype == 1
        for cut in range(p, len(o), max(1, len(o) // 40)):  # every prefix is "incomplete"
            with pytest.raises(Incomplete) as e:
                path["decode_args"](o, p, cut, LIM)
            assert e.value.need > cut


def _replies():
    yield Poll, "poll", 2**62
    yield beps.Frontend, "create_user", beps.Reply(server_ns=5)
    yield beps.Frontend, "publish", beps.Reply(server_ns=5, id=9)
    yield beps.UserDB, "get_user", beps.User(name="n", subscribers=["a", "b"], subscriptions=[])
    yield beps.ReadEndpoint, "get_feed", [beps.Message(id=i, user="u", text="t" * i, ts_ns=i)
                                          for i in range(5)]
    yield beps.Frontend, "census", beps.Census(users=1, messages=2, feed_entries=3)


@pytest.mark.parametrize("service,name,value", list(_replies()))
def test_replies_and_declared_exceptions_agree(service, name, value):
    m = service_codec(service).methods[name]
    outs = []
    for path in _paths(m):
        o = bytearray()
        path["encode_reply"](o, 3, value)
        outs.append(bytes(o))
        _, mtype, seqid, p = read_header(o, 0, len(o), LIM)
        assert (mtype, seqid) == (2, 3)
        assert path["decode_result"](o, p, len(o), LIM)[0] == value
        # the same bytes through thriftpy2
        prot = TCyBinaryProtocol(TCyMemoryBuffer(bytes(o)))
        prot.read_message_begin()
        res = getattr(service, name + "_result")()
        prot.read_struct(res)
        assert res.success == value
    assert len(set(outs)) == 1
    if m.throws:
        _, _, cls = m.throws[0]
        exc = cls(**{k: "why" for k, _ in cls.default_spec})
        for path in _paths(m):
            o = bytearray()
            assert path["encode_throw"](o, 1, exc)
            _, _, _, p = read_header(o, 0, len(o), LIM)
            with pytest.raises(cls) as e:
                path["decode_result"](o, p, len(o), LIM)
            assert type(e.value) is cls and vars(e.value) == vars(exc)
            assert not path["encode_throw"](bytearray(), 1, ValueError("undeclared"))


def _i32(n):
    return struct.pack(">i", n)


HOSTILE = {
    "string past max_message_bytes": (b"\x0b\x00\x01" + _i32(LIM), "max_message_bytes"),
    "negative string": (b"\x0b\x00\x01" + _i32(-1), "negative string length"),
    "2^31 empty structs": (b"\x0f\x00\x09\x0c" + _i32(2**31 - 1), "max_container_len"),
    "list that cannot fit": (b"\x0f\x00\x09\x0a" + _i32(400) + b"\x00" * 16, "cannot fit"),
    "map bomb": (b"\x0d\x00\x09\x0b\x0b" + _i32(2**31 - 1), "max_container_len"),
    "deep nesting": (b"\x0c\x00\x09" * 100, "max_depth"),
    "unknown type": (b"\x63\x00\x09", "unknown Thrift type"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_both_paths_refuse_hostile_input_alike(case):
    body, why = HOSTILE[case]
    m = service_codec(Poll, Limits(max_message_bytes=4096, max_container_len=500)).methods["poll"]
    errors = []
    for path in _paths(m):
        with pytest.raises(WireError) as e:
            path["decode_args"](body, 0, len(body), 1024)  # the message may end at byte 1024
        assert why in e.value.reason
        errors.append((e.value.reason, e.value.limit))
    assert len(set(errors)) == 1


def test_headers_strict_and_non_strict():
    strict = codec.message_header("poll", 1, 42)
    non_strict = _i32(4) + b"poll" + b"\x01" + _i32(42)
    for raw in (strict, non_strict):
        assert read_header(raw, 0, len(raw), LIM) == (b"poll", 1, 42, len(raw))
    for bad, why in ((b"\x80\x02\x00\x01" + _i32(0) + _i32(0), "version"),
                     (_i32(-(2**31) + 5), "version"), (_i32(5000), "name length")):
        with pytest.raises(WireError, match=why):
            read_header(bad, 0, len(bad), LIM)
