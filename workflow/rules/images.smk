# What the cells run in: results/images/{backend}.json, on which every cell of that backend
# depends. process: a stamp of the environment; docker: the image built without a registry (its
# tag is a content hash) or, where the engine is unreachable, a stamp saying why (those cells are
# then recorded as skipped). A change to the measured code or the dependencies reruns the cells.
from msdbench.stamp import measured_files


rule build_image:
    input:
        "pyproject.toml",
        [str(p) for p in measured_files()],
    output:
        "results/images/{backend}.json",
    params:
        host=f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else "",
    log:
        "results/logs/images/{backend}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench image {wildcards.backend} --out {output} {params.host} > {log} 2>&1"
