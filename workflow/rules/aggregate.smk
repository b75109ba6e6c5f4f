# Cells -> one summary table per suite (latency: a row per cell x request type; throughput: a
# row per point of every sweep).


rule aggregate:
    input:
        lambda wc: cell_records(wc.suite),
    output:
        csv=report("results/tables/{suite}.csv", caption="../report/tables.rst", category="Tables"),
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
        report("results/tables/ratios.csv", caption="../report/ratios.rst", category="Tables"),
    resources:
        testbed=1,  # a second of CPU, but keep it off a measurement's cores all the same
    log:
        "results/logs/aggregate/ratios.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench ratios {output} {input} > {log} 2>&1"


# The paper's claims against this run's tables (msdbench/claims.py): a row per claim with a
# verdict, and a figure. Claims about what the matrix did not measure say "not measured".
rule claims:
    input:
        expand("results/tables/{suite}.parquet", suite=SUITES),
    output:
        csv=report("results/tables/claims.csv", caption="../report/claims.rst", category="Claims"),
        png=report("results/plots/claims.png", caption="../report/claims.rst", category="Claims"),
        pdf="results/plots/claims.pdf",
    resources:
        testbed=1,
    log:
        "results/logs/aggregate/claims.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench claims {output.csv} {input} --png {output.png} --pdf {output.pdf} > {log} 2>&1"


# The run at a glance: machine, versions, pinning, noise, and how much steadier the latencies are
# as multiples of the TCP echo than in microseconds.
rule run_info:
    input:
        records=[f"results/raw/{stem}.json" for stem in JOBS],
        tables=expand("results/tables/{suite}.parquet",
                      suite=[s for s in SUITES if suites.get(s).latency]),
    output:
        report("results/tables/run.csv", caption="../report/run.rst", category="Run"),
    resources:
        testbed=1,
    log:
        "results/logs/aggregate/run.log",
    conda:
        "../../envs/msdbench.yaml"
    shell:
        "msdbench runinfo {output} --records {input.records} --tables {input.tables} > {log} 2>&1"
