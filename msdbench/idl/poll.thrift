// The microbenchmark's one service. The reply is the server's CLOCK_MONOTONIC in ns, so that a
// client on the same host can split the round trip into call and return.
namespace py msdbench.poll

service Poll {
  // payload_mode "binary": exactly N bytes on the wire (the paper's stated sizes).
  i64 poll(1: binary payload),
  // payload_mode "list": N int64 values, as the original C++ code sent (its "8192" is 64 KiB).
  i64 poll_list(1: list<i64> payload),
}
