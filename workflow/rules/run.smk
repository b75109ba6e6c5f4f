# Measuring: bring the manifest up, drive it, tear it down; the suite (from the manifest) says
# how (a latency cell, or a throughput sweep). `testbed=1` keeps measurements from overlapping
# (parallel jobs would corrupt each other's latencies); outputs are written atomically and only
# on success.


rule run:
    input:
        manifest="results/manifests/{cell}.yaml",
        image=image_of,
    output:
        raw="results/raw/{cell}.parquet",
        meta="results/raw/{cell}.json",
    params:
        host=HOST_FLAG,
    resources:
        testbed=1,
    log:
        "results/logs/run/{cell}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench measure {input.manifest} --raw {output.raw} --meta {output.meta} {params.host}"
        " > {log} 2>&1"
