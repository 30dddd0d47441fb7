"""polyhead's report stage: renders the paper-style comparison from the JSON the stages wrote.

Also home of the orchestration (``report.pipeline``, ``make all``), the performance suite
(``report.bench_suite``, ``make bench``) and the paper's three-backbone run (``report.paper``).
Importing it does no work.
"""
