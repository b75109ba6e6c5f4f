// Every isolation domain serves this beside its services: the harness's way in, the same for every
// backend (process, docker, ...). JSON strings keep the control plane free of schema churn; it is
// never on a measured path.
namespace py msdbench.control

exception ControlError {
  1: string why,
}

service Control {
  // {"domain", "pid", "affinity", "services": {name: port}}
  string hello(),
  // Phase two of bring-up: every service's address is known, connect the outgoing edges.
  void connect(1: string endpoints_json) throws (1: ControlError err),
  // Run a client driver inside this domain; returns its result (samples included) as JSON.
  string run_driver(1: string spec_json) throws (1: ControlError err),
  // Test-only fault switches and per-service counters.
  void set_fault(1: string target, 2: string fault, 3: i64 count) throws (1: ControlError err),
  string counters(1: string target) throws (1: ControlError err),
  // CPU time and RSS of this domain's process.
  string stats(),
  oneway void shutdown(),
}
