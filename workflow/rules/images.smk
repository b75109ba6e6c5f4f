# What the cells run in: results/images/{backend}.json, on which every cell of that backend
# depends; and results/images/vm.json, the guest image and snapshot of the vm host kind, on which
# every cell whose client runs in a VM (deployments 3, 4) depends. process: a stamp of the environment; docker: the image built without a registry (its
# tag is a content hash) or, where the engine is unreachable, a stamp saying why (those cells are
# then recorded as skipped). A change to the measured code or the dependencies reruns the cells.
from msdbench.device.image import device_files
from msdbench.stamp import measured_files

DEVICE = config.get("device") or {}


rule build_image:
    input:
        "pyproject.toml",
        [str(p) for p in measured_files()],
        lambda wc: [str(p) for p in device_files()] if wc.backend == "device" else [],
    output:
        "results/images/{backend}.json",
    params:
        host=f"--docker-host {DOCKER_HOST}" if DOCKER_HOST else "",
        device=lambda wc: (f"--board {DEVICE.get('board', 'emulated')}"
                           + (f" --micropython {DEVICE['source']}" if DEVICE.get("source") else "")
                           if wc.backend == "device" else ""),
    log:
        "results/logs/images/{backend}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench image {wildcards.backend} --out {output} {params.host} {params.device} > {log} 2>&1"
