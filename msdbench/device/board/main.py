# The board's program: serve framed Thrift calls on the serial line until it closes. Started by
# `mpremote run` on a board (real or emulated), or as a file by the unix port on a pty.
import json
import sys


class BoardControl:
    """The Board service of msdbench/idl/board.thrift."""

    def __init__(self, stats):
        self.stats = stats
        self.board = None

    def hello(self):
        impl = sys.implementation
        return json.dumps({"platform": sys.platform, "machine": getattr(impl, "_machine", ""),
                           "version": ".".join(str(v) for v in impl.version[:3]),
                           "mem_free": _mem_free(), "clock": "ticks_us"})

    def setup(self, plan_json):
        try:
            self.board = Board(json.loads(plan_json))
        except Exception as e:
            raise BoardError(why="setup: %s: %s" % (type(e).__name__, e))

    def _need_board(self):
        if self.board is None:
            raise BoardError(why="no setup yet")
        return self.board

    def run_driver(self, spec_json):
        b = self._need_board()
        spec = json.loads(spec_json)
        group = b.plan.get("client_group")
        if not group:
            raise BoardError(why="this plan has no client on the board")
        entry = b.stub(spec["entry"], group)
        crossings = b.crossings()
        run = run_micro if spec["driver"] == "micro" else run_beps
        _collect()
        result = run(entry, spec)
        result["crossings"] = b.crossings() - crossings
        result["mem_free"] = _mem_free()
        return json.dumps(result)

    def set_fault(self, target, fault, count):
        b = self._need_board()
        try:
            b.handlers[target].set_fault(fault, count)
        except (KeyError, ValueError) as e:
            raise BoardError(why="%s: %s" % (target, e))

    def counters(self, target):
        b = self._need_board()
        if target not in b.handlers:
            raise BoardError(why="no service %r on the board" % target)
        return json.dumps(b.handlers[target].counters())

    def quit(self):
        self.stats["quit"] = True

    def link_stats(self):
        self.stats["mem_free"] = _mem_free()
        return json.dumps(self.stats)


def _mem_free():
    try:
        import gc
        return gc.mem_free()
    except (ImportError, AttributeError):
        return -1


def _collect():
    try:
        import gc
        gc.collect()
    except ImportError:
        pass


def serve(read, write):
    """The link loop: frames in, calls dispatched by "service:method", frames out."""
    parser = FrameParser()
    stats = {"frames_in": 0, "bad_frames": 0, "junk_bytes": 0, "duplicates": 0, "replies": 0}
    control = BoardControl(stats)
    board_ep = Endpoint(control, "Board")
    last_seq, last_reply = -1, b""
    while True:
        frame = parser.next()
        if frame is None:
            data = read(parser.need())
            if not data:
                return
            parser.feed(data)
            stats["bad_frames"], stats["junk_bytes"] = parser.bad, parser.junk
            continue
        seq, kind, payload = frame
        stats["frames_in"] += 1
        if kind != K_REQUEST:
            continue
        if seq == last_seq:           # a repeated request: its reply was lost, or it was doubled
            stats["duplicates"] += 1
            write(last_reply)
            continue
        try:
            target = r_message(payload)[0].split(":")[0]
            if target == "board":
                reply = board_ep.handle(payload)
            else:
                reply = control._need_board().endpoint(target).handle(payload)
        except Exception as e:
            out = bytearray()
            reply = _app_error(out, "?", 0, "%s: %s" % (type(e).__name__, e))
        last_seq, last_reply = seq, encode_frame(seq, K_REPLY, reply)
        stats["replies"] += 1
        write(last_reply)
        if stats.get("quit"):
            return


def main():
    try:
        import micropython
        micropython.kbd_intr(-1)      # a 0x03 byte in a frame is data, not Ctrl-C
    except (ImportError, AttributeError):
        pass
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer

    def read(n):
        data = stdin.read(n)
        while data and len(data) < n:
            more = stdin.read(n - len(data))
            if not more:
                break
            data += more
        return data

    def write(frame):
        stdout.write(frame)
        if hasattr(stdout, "flush"):
            stdout.flush()

    serve(read, write)


if __name__ == "__main__":
    main()
