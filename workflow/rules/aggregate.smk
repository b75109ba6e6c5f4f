# Cells -> one summary table per suite (latency: a row per cell x request type; throughput: a
# row per point of every sweep).


rule aggregate:
    input:
        lambda wc: cell_records(wc.suite),
    output:
        csv="results/tables/{suite}.csv",
        parquet="results/tables/{suite}.parquet",
    resources:
        testbed=1,  # a few seconds of CPU: on 2 cores it would disturb a measurement beside it
    log:
        "results/logs/aggregate/{suite}.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench aggregate {wildcards.suite} --csv {output.csv} --parquet {output.parquet}"
        " {input} > {log} 2>&1"


# The paper's headline ratios (isolated/co-located per platform, specialized/linux per cell),
# from the summary tables of the latency suites in the matrix.
rule ratios:
    input:
        expand("results/tables/{suite}.parquet", suite=[s for s in SUITES if suites.get(s).latency]),
    output:
        "results/tables/ratios.csv",
    resources:
        testbed=1,  # a second of CPU, but keep it off a measurement's cores all the same
    log:
        "results/logs/aggregate/ratios.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench ratios {output} {input} > {log} 2>&1"
