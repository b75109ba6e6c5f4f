# msdbench: the whole matrix, from config to figures.  `snakemake --cores 4 results/figures/`
# One measurement at a time (resource `testbed`, limited to 1 in profiles/default/config.yaml);
# planning, aggregation and plotting run beside it. Every rule runs one `msdbench` step; what a
# step does for a suite, and where a cell's files are, the suite registry says (msdbench/suites/).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/images.smk"
include: "workflow/rules/deploy.smk"
include: "workflow/rules/run.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"


rule all:
    input:
        all_targets(),
    default_target: True
