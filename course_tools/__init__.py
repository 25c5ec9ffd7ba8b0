"""course_tools: the course's own tools, beside the learner's library ``course_utils``.

``build`` (solutions → chapters, the drift check, notebook execution), ``workspace`` (the
learner's working copies in ``my_work/``), ``doctor`` (is this machine ready?) and ``grade``
(the instructor's command).  Each runs as ``python -m course_tools.<name>``.

A chapter never imports this package, so its dependencies (jupytext, jupyterlab, nbclient,
cloudpickle, ...) are the ``tools`` extra of ``pyproject.toml``, not the learner's install.
This package imports nothing on import: ``grade.harvest`` runs inside learners' kernels.
"""
