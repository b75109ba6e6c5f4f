"""The configuration: validated against the schema, then expanded into the matrix of cells.

Errors name the field, the value and what is allowed, and are raised before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources
from pathlib import Path

import jsonschema
import yaml

from msdbench import suites
from msdbench.axes import PlanError
from msdbench.planning import check_cell, client_host, server_host
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


def allowed(sub: dict) -> str | None:
    """What a schema node allows, in words ("an integer >= 1", "one of [...]")."""
    if "enum" in sub:
        return f"one of {sub['enum']}"
    if "const" in sub:
        return repr(sub["const"])
    if "oneOf" in sub:
        return " or ".join(a for a in map(allowed, sub["oneOf"]) if a)
    kinds = sub.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    words = {"integer": "an integer", "number": "a number", "string": "a string", "null": "null",
             "array": "a list", "object": "a mapping", "boolean": "true or false"}
    bounds = [f"{op} {sub[k]}" for k, op in (("minimum", ">="), ("exclusiveMinimum", ">"),
                                             ("maximum", "<="), ("exclusiveMaximum", "<"))
              if k in sub]
    text = " or ".join(words.get(k, k) for k in kinds)
    if bounds:
        text = f"{text or 'a value'} {' and '.join(bounds)}"
    return text or None


def _message(e: jsonschema.ValidationError) -> str:
    if e.validator == "enum":
        return f"{e.instance!r} is not allowed; allowed values: {e.validator_value}"
    if e.validator == "pattern":
        return f"{e.instance!r} is not allowed; {e.schema.get('description', e.message)}"
    msg = e.message
    if e.validator == "additionalProperties":
        msg += f"; allowed keys: {sorted(e.schema.get('properties', {}))}"
    elif e.validator in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum", "type",
                         "oneOf", "const") and allowed(e.schema):
        msg += f"; allowed: {allowed(e.schema)}"
    return msg


def validate(config: dict) -> dict:
    """Raise ConfigError for the first problems found (all of them, up to a few)."""
    from msdbench.hosts import HostError, check_hosts

    validator = jsonschema.Draft202012Validator(schema())
    errors = sorted(validator.iter_errors(keys_as_text(config)), key=lambda e: list(e.path))
    if errors:
        lines = [f"config field '{_where(e.path)}': {_message(e)}" for e in errors[:5]]
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
            if job.cell.backend != "device":
                server_host(job.cell, job.settings)
        except PlanError as e:
            raise ConfigError(f"invalid configuration: {job.suite_key} cell {job.label}: {e}") from None
    t = config.get("throughput") or {}
    if t.get("isolations") and "open" in t.get("modes", []) and not t.get("open"):
        raise ConfigError("invalid configuration: config field 'throughput.modes' holds 'open', "
                          "which needs a 'throughput.open' section with its offered 'rates'")
    return config


DEFAULT_CONFIG = "config/config.yaml"


def default_config_path(name: str | None = None) -> Path:
    """config/config.yaml (or `name`) here, else the one of the repository this package runs from."""
    here = Path(name or DEFAULT_CONFIG)
    if here.is_file():
        return here
    beside = Path(__file__).resolve().parents[1] / here
    if beside.is_file():
        return beside
    raise ConfigError(f"no config file: {here} is neither in {Path.cwd()} nor beside the "
                      "msdbench package; pass --config FILE (the repository has one to start from)")


def load(path: str | Path | None = None) -> dict:
    """The config at `path` (default: `default_config_path()`), validated."""
    path = default_config_path() if path is None else Path(path)
    try:
        config = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} not found (in {Path.cwd()}); pass --config "
                          "FILE, e.g. the repository's config/config.yaml") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level")
    return validate(config)


def suite_settings(config: dict, suite: str, **axes) -> dict:
    """The settings that shape a cell of `suite` (e.g. for a cell run by hand)."""
    return suites.get(suite).settings(config, **axes)


DOCKER_MEMORY = "1g"  # per container: far above a domain's need (~30-60 MB), far below the host's


def backend_settings(config: dict, backend: str) -> dict:
    """What a backend adds to its cells' settings (so to their record and config hash: a change
    reruns that backend's cells only)."""
    if backend == "docker":
        return {"docker": {"memory": (config.get("docker") or {}).get("memory", DOCKER_MEMORY)}}
    return {}


def _with_backend(config: dict, job: Job) -> Job:
    extra = backend_settings(config, job.cell.backend)
    return replace(job, settings_json=json.dumps(job.settings | extra, sort_keys=True)) if extra \
        else job


def cell_settings(config: dict, suite: str, deployment: int, backend: str = "process") -> dict:
    """One cell's settings: its suite's, where its client goes, what its backend adds."""
    return (suite_settings(config, suite) | host_settings(config, deployment)
            | backend_settings(config, backend))


def matrix(config: dict) -> list[Job]:
    """Every cell the config asks for, suite by suite (a throughput cell is one sweep)."""
    return [_with_backend(config, job) for suite in suites.SUITES.values()
            for job in suite.jobs(config)]


def throughput_matrix(config: dict) -> list[Job]:
    return [_with_backend(config, job) for job in suites.get("throughput").jobs(config)]


def throughput_settings(config: dict, mode: str) -> dict:
    return suite_settings(config, "throughput", mode=mode)


# -- one cell by hand: command-line settings checked against the same schema --------------------

# A setting of a cell (manifest.settings, or a command-line flag) -> where the config holds it.
SETTING_FIELDS = {
    "micro": {"pinning": "pinning", "deadline_s": "deadline_s", "docker": "docker", "wire": "wire",
              "payload": "micro.payloads[]", "payload_mode": "micro.payload_mode",
              "requests": "micro.requests", "warmup": "micro.warmup", "repeats": "repeats"},
    "beps": {"pinning": "pinning", "deadline_s": "deadline_s", "docker": "docker", "wire": "wire",
             "workers": "beps.workers", "workload": "beps.workload", "repeats": "repeats"},
    # a sweep: its `throughput` part is checked by throughput.SweepSettings
    "throughput": {"pinning": "pinning", "docker": "docker", "wire": "wire",
                   "workers": "throughput.workers"},
}


def _node(field: str) -> dict:
    """The schema of one config field, e.g. "micro.requests" or "micro.payloads[]" (an item)."""
    node = schema()
    for part in field.split("."):
        item = part.endswith("[]")
        node = node["properties"][part.removesuffix("[]")]
        if item:
            node = node["items"]
    return node


def check_setting(suite: str, key: str, value, name: str | None = None) -> None:
    """Raise ConfigError (one line: the name, the value, what is allowed) unless `value` is what
    the config schema allows for this setting of a `suite` cell. `name`: how the user gave it
    (e.g. "--requests"); default the config field."""
    fields = SETTING_FIELDS[suite]
    field = fields.get(key)
    if field is None:
        flag = name or key
        takes = [s for s, f in SETTING_FIELDS.items() if key in f]
        raise ConfigError(f"{flag}: not a setting of a {suite} cell"
                          + (f" (only of: {', '.join(takes)})" if takes else "")
                          + f"; its settings: {', '.join(sorted(fields))}")
    node = _node(field)
    errors = sorted(jsonschema.Draft202012Validator(node).iter_errors(value),
                    key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = field.replace("[]", "[*]") + (f" {_where(e.path)}" if e.path else "")
        raise ConfigError(f"{name or 'setting ' + repr(key)}: {_message(e)} (config field {where})")


def check_settings(suite: str, settings: dict) -> None:
    """A manifest's settings, checked as `check_setting` does each (unknown keys are the
    planner's own, e.g. a sweep's `throughput`)."""
    for key, value in settings.items():
        if key in SETTING_FIELDS.get(suite, {}):
            check_setting(suite, key, value)
