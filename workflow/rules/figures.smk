# The paper's figures, from the summary tables only. Each suite's figure is drawn on its own (so a
# change redraws only the figures that read it) under results/plots/, then gathered into
# results/figures/, the directory users ask for: `snakemake --cores 4 results/figures/`.
# (The throughput figures come from workflow/rules/throughput.smk, included before this file.)


rule plot:
    input:
        "results/tables/{suite}.parquet",
    output:
        png=report("results/plots/{suite}.png", caption="../report/figure.rst", category="Figures"),
        pdf="results/plots/{suite}.pdf",
    resources:
        testbed=1,  # a few seconds of CPU: on 2 cores it would disturb a measurement beside it
    log:
        "results/logs/figures/{suite}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "python scripts/plot_{wildcards.suite}.py {input} {output.png} {output.pdf} > {log} 2>&1"


rule figures:
    input:
        [f for s in SUITES for f in figure_files(s)] + THROUGHPUT_FIGURES,
    output:
        directory("results/figures"),
    log:
        "results/logs/figures/gather.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "python scripts/gather.py {output} {input} > {log} 2>&1"
