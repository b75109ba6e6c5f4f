# What the cells run in. The process backend's "image" is a stamp of the environment and of the
# measured code: a change to either reruns the cells, and nothing else does.
from msdbench.stamp import measured_files


rule build_image_process:
    input:
        "pyproject.toml",
        [str(p) for p in measured_files()],
    output:
        "results/images/process.json",
    log:
        "results/logs/images/process.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench stamp --out {output} > {log} 2>&1"


rule build_image_docker:
    input:
        "pyproject.toml",
        [str(p) for p in measured_files()],
    output:
        "results/images/docker.json",
    params:
        host=f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else "",
    log:
        "results/logs/images/docker.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "python -m msdbench.backends.docker_image {params.host} --stamp {output} > {log} 2>&1"
