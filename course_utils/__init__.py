"""course_utils: the library behind the Superposition course.

One module per idea (see DESIGN.md): ``device``, ``toy_models``, ``geometry``,
``dynamics``, ``scaling``, ``polysemanticity``, ``computation``, ``sae``, ``lm``, ``facts``,
``editing``, ``plots``, ``widgets``, ``checks``, ``grade``, ``build``, ``doctor``, ``colab``,
``workspace``.
Chapters import the library; the library never imports a chapter.
"""

__version__ = "0.1.0"

# Chapter files are named NN_name or NNx_name (01_toy_models, 05a_sparse_autoencoders): the
# glob that finds them, without the extension.
CHAPTER_GLOB = "[0-9][0-9]*_*"
