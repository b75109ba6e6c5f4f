// The harness's way into a MicroPython board (the device backend), over the serial link. JSON
// strings keep this control plane free of schema churn, as control.thrift does for the other
// backends; it is never on a measured path. The measured calls use poll.thrift and beps.thrift.
namespace py msdbench.board

exception BoardError {
  1: string why,
}

service Board {
  // {"platform", "machine", "version", "mem_free", "clock": "ticks_us"}
  string hello(),
  // {"suite", "workers", "groups": {group: [service, ...]}, "client_group": group or ""}:
  // build the services, direct calls inside a group, marshalled calls across groups.
  void setup(1: string plan_json) throws (1: BoardError err),
  // Run the on-board client driver; returns its samples (microseconds) and check as JSON.
  string run_driver(1: string spec_json) throws (1: BoardError err),
  void set_fault(1: string target, 2: string fault, 3: i64 count) throws (1: BoardError err),
  string counters(1: string target) throws (1: BoardError err),
  // {"frames_in", "bad_frames", "duplicates", "mem_free", ...}
  string link_stats(),
  // End the program after this reply, so the board's REPL is back (for the next deploy).
  void quit(),
}
