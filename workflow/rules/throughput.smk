# The throughput study (paper 4.3, fig 11): one job per sweep (mode x platform x backend x
# isolation). A sweep brings its manifest up once and runs its points one after the other (an
# auto sweep decides its next point from the last), so the sweep, not the point, is the job.
from msdbench.config import throughput_matrix

THROUGHPUT_JOBS = {job.stem: job for job in throughput_matrix(config)}
THROUGHPUT_FIGURES = (
    expand("results/plots/{name}.{ext}", name=["throughput", "throughput-latency"],
           ext=["png", "pdf"]) if THROUGHPUT_JOBS else [])


THROUGHPUT_TARGETS = ["results/tables/throughput.csv"] if THROUGHPUT_JOBS else []


rule deploy_throughput:
    output:
        "results/manifests/throughput/{mode}/{platform}/{backend}/{isolation}.yaml",
    params:
        settings=lambda wc: THROUGHPUT_JOBS[
            f"throughput/{wc.mode}/{wc.platform}/{wc.backend}/{wc.isolation}"].settings_json,
    wildcard_constraints:
        mode="closed|open",
    priority: 50
    log:
        "results/logs/deploy/throughput/{mode}/{platform}/{backend}/{isolation}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench plan beps --platform {wildcards.platform} --backend {wildcards.backend}"
        " --isolation {wildcards.isolation} --deployment 2 --settings {params.settings:q}"
        " --out {output} > {log} 2>&1"


rule run_throughput:
    input:
        manifest="results/manifests/throughput/{mode}/{platform}/{backend}/{isolation}.yaml",
        image="results/images/{backend}.json",
    output:
        raw="results/raw/throughput/{mode}/{platform}/{backend}/{isolation}.parquet",
        meta="results/raw/throughput/{mode}/{platform}/{backend}/{isolation}.json",
    params:
        host=f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else "",
    wildcard_constraints:
        mode="closed|open",
    resources:
        testbed=1,
    log:
        "results/logs/run/throughput/{mode}/{platform}/{backend}/{isolation}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench throughput measure {input.manifest} --raw {output.raw} --meta {output.meta}"
        " {params.host} > {log} 2>&1"


rule aggregate_throughput:
    input:
        [f"results/raw/{stem}.json" for stem in THROUGHPUT_JOBS],
    output:
        csv="results/tables/throughput.csv",
        parquet="results/tables/throughput.parquet",
    resources:
        testbed=1,  # a few seconds of CPU: on 2 cores it would disturb a measurement beside it
    log:
        "results/logs/aggregate/throughput.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench throughput aggregate --csv {output.csv} --parquet {output.parquet} {input}"
        " > {log} 2>&1"


rule plot_throughput:
    input:
        "results/tables/throughput.parquet",
    output:
        png=report("results/plots/throughput.png", category="Figures"),
        pdf="results/plots/throughput.pdf",
        latency_png=report("results/plots/throughput-latency.png", category="Figures"),
        latency_pdf="results/plots/throughput-latency.pdf",
    resources:
        testbed=1,
    log:
        "results/logs/figures/throughput.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "python scripts/plot_throughput.py {input} {output.png} {output.pdf}"
        " {output.latency_png} {output.latency_pdf} > {log} 2>&1"
