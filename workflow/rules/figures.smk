# The figures, from the summary tables only: each suite declares its figures (msdbench/suites/),
# each figure is drawn on its own under results/plots/ (so a change redraws only the figures that
# read it) with its caption from workflow/report/{figure}.rst, then all are gathered into
# results/figures/, the directory users ask for: `snakemake --cores 4 results/figures/`.


rule plot:
    input:
        lambda wc: f"results/tables/{FIGURES[wc.figure]}.parquet",
    output:
        png=report("results/plots/{figure}.png", caption="../report/caption.rst", category="Figures"),
        pdf="results/plots/{figure}.pdf",
    params:
        caption=caption_of,  # rendered by caption.rst (a caption's path cannot hold a wildcard)
    resources:
        testbed=1,  # a few seconds of CPU: on 2 cores it would disturb a measurement beside it
    log:
        "results/logs/figures/{figure}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench plot {wildcards.figure} {input} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


rule figures:
    input:
        figure_files() + TABLES_WITH_FIGURES,
    output:
        directory("results/figures"),
    log:
        "results/logs/figures/gather.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench gather {output} {input} > {log} 2>&1"
