# Planning: each cell's manifest (pure; cheap; runs in parallel). The cell's settings are a
# param, so changing one setting replans (and so remeasures) exactly the cells it shapes.


rule deploy_micro:
    output:
        "results/manifests/micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}.yaml",
    params:
        settings=lambda wc: job_of(wc, "micro").settings_json,
    priority: 50  # plan every cell first, so planning never runs beside a measurement
    log:
        "results/logs/deploy/micro/{platform}/{backend}/{isolation}/d{deployment}/p{payload}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench plan micro --platform {wildcards.platform} --backend {wildcards.backend}"
        " --isolation {wildcards.isolation} --deployment {wildcards.deployment}"
        " --payload {wildcards.payload} --settings {params.settings:q} --out {output} > {log} 2>&1"


rule deploy_beps:
    output:
        "results/manifests/beps/{platform}/{backend}/{isolation}/d{deployment}.yaml",
    params:
        settings=lambda wc: job_of(wc, "beps").settings_json,
    priority: 50
    log:
        "results/logs/deploy/beps/{platform}/{backend}/{isolation}/d{deployment}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench plan beps --platform {wildcards.platform} --backend {wildcards.backend}"
        " --isolation {wildcards.isolation} --deployment {wildcards.deployment}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"
