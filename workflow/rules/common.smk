# Validate the config (the error names the field and the allowed values) and turn it into targets.
import json

from msdbench.config import ConfigError, backend_options, load, matrix, validate

try:
    validate(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

JOBS = {job.stem: job for job in matrix(config)}
SUITES = sorted({job.cell.suite for job in JOBS.values()})
DOCKER_HOST = config.get("docker_host") or ""


wildcard_constraints:
    suite="micro|beps",
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
    return [f"results/raw/{stem}.json" for stem, j in JOBS.items() if j.cell.suite == suite]


def figure_files(suite):
    return expand("results/plots/{suite}.{ext}", suite=suite, ext=["png", "pdf"])


def all_targets():
    return (["results/figures"] + expand("results/tables/{suite}.csv", suite=SUITES)
            + ["results/tables/ratios.csv"]
            + THROUGHPUT_TARGETS)  # workflow/rules/throughput.smk
