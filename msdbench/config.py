"""The configuration: validated against the schema, then expanded into the matrix of cells.

Errors name the field, the value and what is allowed, and are raised before anything runs.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from msdbench import suites
from msdbench.axes import PlanError
from msdbench.planning import check_cell, client_host
from msdbench.suites import Job
from msdbench.suites.base import host_settings, keys_as_text

__all__ = ["ConfigError", "Job", "cell_settings", "load", "matrix", "schema", "suite_settings",
           "validate"]


class ConfigError(ValueError):
    pass


def schema() -> dict:
    return yaml.safe_load(resources.files("msdbench").joinpath("schemas/config.schema.yaml").read_text())


def _where(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def validate(config: dict) -> dict:
    """Raise ConfigError for the first problems found (all of them, up to a few)."""
    from msdbench.hosts import HostError, check_hosts

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(keys_as_text(config)), key=lambda e: list(e.path))
    if errors:
        lines = []
        for e in errors[:5]:
            msg = e.message
            if e.validator == "enum":
                msg = f"{e.instance!r} is not allowed; allowed values: {e.validator_value}"
            elif e.validator == "pattern":
                msg = f"{e.instance!r} is not allowed; {e.schema.get('description', e.message)}"
            elif e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                msg += f"; allowed keys: {allowed}"
            lines.append(f"config field '{_where(e.path)}': {msg}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    try:
        check_hosts(config.get("hosts"))
        jobs = matrix(config)
    except (HostError, PlanError) as e:
        raise ConfigError(f"invalid configuration: config field {e}") from None
    for job in jobs:  # every cell must be plannable
        try:
            check_cell(job.cell)
            client_host(job.cell, job.settings)
        except PlanError as e:
            raise ConfigError(f"invalid configuration: {job.suite_key} cell {job.label}: {e}") from None
    t = config.get("throughput") or {}
    if t.get("isolations") and "open" in t.get("modes", []) and not t.get("open"):
        raise ConfigError("invalid configuration: config field 'throughput.modes' holds 'open', "
                          "which needs a 'throughput.open' section with its offered 'rates'")
    return config


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return validate(config)


def suite_settings(config: dict, suite: str, **axes) -> dict:
    """The settings that shape a cell of `suite` (e.g. for a cell run by hand)."""
    return suites.get(suite).settings(config, **axes)


def cell_settings(config: dict, suite: str, deployment: int) -> dict:
    """One cell's settings: its suite's, and where its client goes."""
    return suite_settings(config, suite) | host_settings(config, deployment)


def matrix(config: dict) -> list[Job]:
    """Every cell the config asks for, suite by suite (a throughput cell is one sweep)."""
    return [job for suite in suites.SUITES.values() for job in suite.jobs(config)]


def throughput_matrix(config: dict) -> list[Job]:
    return suites.get("throughput").jobs(config)


def throughput_settings(config: dict, mode: str) -> dict:
    return suite_settings(config, "throughput", mode=mode)
