"""course_utils: the library behind the Superposition course.

One module per idea (see DESIGN.md): ``device``, ``training``, ``toy_models``,
``geometry``, ``dynamics``, ``scaling``, ``polysemanticity``, ``computation``, ``sae``,
``sae_io``, ``language``, ``lm``, ``universality``, ``facts``, ``editing``, ``rome``,
``plots``, ``widgets``, ``checks``, ``colab``; the speed code behind the explicit fast
switches lives apart in ``_fast``.
Chapters import the library; the library never imports a chapter.  The course's tools
(build, workspace, doctor, grade) are the package ``course_tools`` beside it, so a learner's
install needs only the science, its plots and widgets.
"""

__version__ = "0.1.0"

# Chapter files are named NN_name or NNx_name (01_toy_models, 05a_sparse_autoencoders): the
# glob that finds them, without the extension.
CHAPTER_GLOB = "[0-9][0-9]*_*"
