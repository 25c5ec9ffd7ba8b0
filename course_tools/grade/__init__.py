"""The instructor's command: grade a batch of submitted chapter notebooks.

    python -m course_tools.grade submissions/ --out grades.csv --jobs 2 --hidden-seeds 1001,1002

Each submission runs in its own kernel, in a temporary copy, under time and memory limits
(``execute.py``, ``kernel.py``, ``limits.py``); the definitions it makes are collected
after every cell (``harvest.py``) and judged by the exercises' checks in the grader's own
process, which calls the learner's functions in a separate sandbox process
(``sandbox.py``), so nothing the notebook prints or patches decides a grade.  One worker
process per submission (``worker.py``), ``--jobs`` at a time (``cli.py``); results go to a
CSV and a JSON report (``report.py``).  Student and chapter come from the file names
(``submissions.py``); hidden seeds, points and limits from the command line or a config
file (``config.py``).  docs/grading.md is the manual.

This package imports nothing heavy on import: ``harvest`` runs inside learners' kernels.
"""


def main(argv=None) -> int:
    from .cli import main as cli_main

    return cli_main(argv)
