# The microcontroller tier (config `device`): its cells run through the rules of deploy.smk and
# run.smk (backend wildcard "device"); results/tables/device.csv comes from rule aggregate. Here:
# paper figs 7 (poll on the board) and 10 (BEPS on the board), from that table only.

DEVICE_FIGURES = ["fig7-device-micro", "fig10-device-beps"]


rule plot_device:
    input:
        "results/tables/device.parquet",
    output:
        expand("results/plots/{name}.{ext}", name=DEVICE_FIGURES, ext=["png", "pdf"]),
    resources:
        testbed=1,
    log:
        "results/logs/figures/device.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "python scripts/plot_device.py {input} results/plots > {log} 2>&1"
