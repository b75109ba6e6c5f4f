# Measuring: bring the manifest up, drive it, tear it down. `testbed=1` keeps measurements from
# overlapping (parallel jobs would corrupt each other's latencies); outputs are written atomically
# and only on success.


rule run_micro:
    input:
        manifest="results/manifests/micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}.yaml",
        image="results/images/{backend}.json",
    output:
        raw="results/raw/micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}.parquet",
        meta="results/raw/micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}.json",
    params:
        host=f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else "",
    resources:
        testbed=1,
    log:
        "results/logs/run/micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench measure {input.manifest} --raw {output.raw} --meta {output.meta} {params.host}"
        " > {log} 2>&1"


rule run_beps:
    input:
        manifest="results/manifests/beps/{platform}/{backend}/{isolation}/d{deployment}.yaml",
        image="results/images/{backend}.json",
    output:
        raw="results/raw/beps/{platform}/{backend}/{isolation}/d{deployment}.parquet",
        meta="results/raw/beps/{platform}/{backend}/{isolation}/d{deployment}.json",
    params:
        host=f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else "",
    resources:
        testbed=1,
    log:
        "results/logs/run/beps/{platform}/{backend}/{isolation}/d{deployment}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench measure {input.manifest} --raw {output.raw} --meta {output.meta} {params.host}"
        " > {log} 2>&1"
