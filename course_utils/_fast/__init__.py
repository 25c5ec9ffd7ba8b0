"""The course's speed code, kept apart from the paper's code it computes the same thing as.

Each module here is the fast path of one science module, used only when a caller asks for it
with an explicit switch (``train(..., fast=True)`` and the like) and tested equal to the plain
path: fused steps with hand-derived gradients, NumPy batch samplers, sparse decodes, and the
foreach Adam below.  A learner reading ``course_utils`` can skip this package.
"""
