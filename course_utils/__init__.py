"""course_utils: the library behind the Superposition course.

One module per idea (see DESIGN.md): ``device``, ``toy_models``, ``geometry``,
``dynamics``, ``scaling``, ``polysemanticity``, ``computation``, ``sae``, ``plots``,
``widgets``, ``checks``, ``grade``, ``build``, ``doctor``, ``colab``, ``workspace``.
Chapters import the library; the library never imports a chapter.
"""

__version__ = "0.1.0"
