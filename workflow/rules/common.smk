# Validate the config (the error names the field and the allowed values) and turn it into targets.
# Every cell's path comes from the suite registry (msdbench/suites/): a cell is `{cell}` below,
# e.g. micro/linux/process/isolated/d2/p0 or throughput/closed/linux/process/tiered.
from pathlib import Path

from msdbench import suites
from msdbench.config import ConfigError, matrix, validate

try:
    validate(config)
except ConfigError as e:
    raise WorkflowError(str(e)) from None

JOBS = {job.stem: job for job in matrix(config)}
SUITES = [name for name in suites.SUITES if any(j.suite_key == name for j in JOBS.values())]
FIGURES = {fig: s.name for fig, s in suites.figures().items() if s.name in SUITES}
DOCKER_HOST = config.get("docker_host") or ""
HOST_FLAG = f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else ""


wildcard_constraints:
    suite="|".join(suites.SUITES),
    figure="|".join(suites.figures()),
    backend="[a-z]+",


def job_of(wildcards):
    if wildcards.cell not in JOBS:
        raise WorkflowError(f"{wildcards.cell} is not a cell of the configured matrix")
    return JOBS[wildcards.cell]


def image_of(wildcards):
    """What a cell runs in: its backend's image, and the guest image (and snapshot) of a VM host."""
    from msdbench.hosts import host_entry

    job = job_of(wildcards)
    settings = job.settings
    entry = host_entry((settings.get("hosts") or {}).get(settings.get("client_host")) or {})
    return [f"results/images/{job.cell.backend}.json"] + (
        ["results/images/vm.json"] if entry.get("kind") == "vm" else [])


def cell_records(suite):
    return [f"results/raw/{stem}.json" for stem, j in JOBS.items() if j.suite_key == suite]


def caption_of(wildcards):
    """The figure's caption (workflow/report/{figure}.rst), shown by `snakemake --report`."""
    path = Path(workflow.basedir) / "workflow/report" / f"{wildcards.figure}.rst"
    if not path.exists():
        raise WorkflowError(f"figure {wildcards.figure} has no caption: write {path}")
    return path.read_text()


def figure_files():
    return expand("results/plots/{figure}.{ext}", figure=FIGURES, ext=["png", "pdf"])


# What results/figures/ holds beside the figures: the ratio and claims tables, the claims' figure
# and the run's table (the README's one command makes them all).
TABLES_WITH_FIGURES = ["results/tables/ratios.csv", "results/tables/claims.csv",
                       "results/plots/claims.png", "results/plots/claims.pdf",
                       "results/tables/run.csv"]


def all_targets():
    return (["results/figures"] + expand("results/tables/{suite}.csv", suite=SUITES)
            + ["results/tables/ratios.csv"])
