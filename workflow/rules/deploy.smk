# Planning: each cell's manifest (pure; cheap; runs in parallel). The cell's settings are a
# param, so changing one setting replans (and so remeasures) exactly the cells it shapes.


rule deploy:
    output:
        "results/manifests/{cell}.yaml",
    params:
        settings=lambda wc: job_of(wc).settings_json,
    priority: 50  # plan every cell first, so planning never runs beside a measurement
    log:
        "results/logs/deploy/{cell}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench plan --cell {wildcards.cell} --settings {params.settings:q} --out {output}"
        " > {log} 2>&1"
