# Validate the config (the error names the field and the allowed values) and turn it into targets.
import json

from msdbench.config import ConfigError, backend_options, device_matrix, load, matrix, validate

try:
    validate(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

# Device cells (config `device`) share the stems' shape and rules; their tables and figures are
# their own (suite key "device": workflow/rules/device.smk).
JOBS = {job.stem: job for job in matrix(config) + device_matrix(config)}
SUITES = sorted({job.suite_key for job in JOBS.values()})
DOCKER_HOST = config.get("docker_host") or ""


wildcard_constraints:
    suite="micro|beps|device",
    platform="[a-z]+",
    backend="[a-z]+",
    isolation="[a-z-]+",
    deployment="[0-9]+",
    payload="[0-9]+",


def job_of(wildcards, suite):
    parts = [suite, wildcards.platform, wildcards.backend, wildcards.isolation,
             "d" + wildcards.deployment]
    if "payload" in wildcards.keys():
        parts.append("p" + wildcards.payload)
    stem = "/".join(parts)
    if stem not in JOBS:
        raise WorkflowError(f"{stem} is not a cell of the configured matrix")
    return JOBS[stem]


def cell_metas(suite):
    return [f"results/raw/{stem}.json" for stem, j in JOBS.items() if j.suite_key == suite]


def figure_files(suite):
    if suite == "device":  # paper figs 7 (poll) and 10 (BEPS) on the board
        return expand("results/plots/{name}.{ext}", name=DEVICE_FIGURES, ext=["png", "pdf"])
    return expand("results/plots/{suite}.{ext}", suite=suite, ext=["png", "pdf"])


def all_targets():
    return (["results/figures"] + expand("results/tables/{suite}.csv", suite=SUITES)
            + ["results/tables/ratios.csv"]
            + THROUGHPUT_TARGETS)  # workflow/rules/throughput.smk
