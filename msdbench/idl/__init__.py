"""The wire contracts, loaded once per process from the .thrift files beside this module."""

from functools import cache
from pathlib import Path

import thriftpy2

IDL_DIR = Path(__file__).resolve().parent
# Bring-up's first phase: a domain prints this, a space and its control service's host:port on
# stdout (control.thrift is the service); every backend reads it from the domain's output.
CONTROL_LINE = "MSDBENCH-CONTROL"


@cache
def load(name: str):
    """The thriftpy2 module of `<name>.thrift` (e.g. "poll", "beps", "control").

    module_name makes the generated types picklable and keeps one identity per process.
    """
    return thriftpy2.load(str(IDL_DIR / f"{name}.thrift"), module_name=f"{name}_thrift")
