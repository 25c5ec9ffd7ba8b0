"""Autograded exercise checks: ``checks.check_<exercise>(your_function)`` prints one line.

    from course_utils import checks
    checks.check_toy_forward(toy_forward)     # [passed] toy_forward: 8/8 cases match the reference.
    checks.hint("toy_forward")                # the first hint; checks.hint("toy_forward", 2) the next

Where the rest of the chapter runs the exercise, the check also returns what it should run:
the learner's function when it passed, else the course's reference (said on a second line)::

    forward = checks.check_toy_forward(toy_forward)
    print(checks.made_with(forward))          # [made with] your toy_forward.

Outcomes are "passed", "failed" (with what is wrong, never the expected values) and
"not attempted" (the stub still raises NotImplementedError).  Graders use
``checks.evaluate(name, fn, seeds=[...])`` -> Outcome, ``checks.EXERCISES`` (name -> check)
and the JSON lines appended to $SUPERPOSITION_CHECK_LOG.

A chapter can also declare **result checks**: what several exercises' definitions make
together (chapter 01: the learner's ``ToyModel`` trained by their ``train_model`` is a
pentagon).  ``checks.RESULT_CHECKS`` (id -> ResultCheck), ``checks.result_checks_for(names)``
and ``checks.evaluate_result("pentagon", {"ToyModel": ..., "train_model": ...})``; the
grader runs them after the exercises (see ``ResultCheck``).
"""

from ._framework import (
    EXERCISES,
    FAILED,
    NOT_ATTEMPTED,
    PASSED,
    RESULT_CHECKS,
    Case,
    CheckFailed,
    Exercise,
    Outcome,
    ResultCheck,
    clear_results,
    evaluate,
    evaluate_result,
    exercise,
    hint,
    is_reference,
    made_with,
    result_check,
    result_checks_for,
    results,
)
from .computation import (
    check_abs_batch,
    check_abs_loss,
    check_abs_model,
    check_naive_loss,
    check_neuron_forward,
    check_predicted_u_and_readoffs,
    check_u_and,
    check_u_and_layer,
    check_u_and_readoff,
    check_u_and_wiring,
)
from .correlated import check_anticorrelated_batch, check_correlated_batch
from .editing import (
    check_counterfact_scores,
    check_indirect_effect,
    check_interference_coefficients,
    check_key_covariance,
    check_rome_key,
    check_rome_update,
    check_rome_value,
    check_whitened_cosine,
)
from .geometry import (
    check_dimensions_per_feature,
    check_feature_dimensionality,
    check_recognise_polytope,
)
from .interventions import check_ablate_latent, check_spliced_ce_losses, check_steer_logits
from .memorization import check_data_point_dimensionality, check_train_finite_model, check_warmup_cosine
from .orthogonality import check_coherence, check_ista, check_one_step_decode, check_soft_threshold
from .polysemanticity import (
    check_autoencoder_loss,
    check_ce_lower_bound,
    check_count_polysemantic_neurons,
    check_initial_argmax_win_rate,
    check_predicted_polysemantic,
    check_train_autoencoder,
)
from .sae import (
    check_batch_topk_activation,
    check_jumprelu_grads,
    check_l1_sae_loss,
    check_mmcs,
    check_normalise_decoder,
    check_precision_recall,
    check_project_decoder_grad,
    check_resample_dead,
    check_resample_latents,
    check_sae_decode,
    check_sae_encode,
    check_sae_metrics,
    check_sparse_autoencoder,
    check_topk_activation,
    check_train_sparse_autoencoder,
)
from .scaling import check_signed_weight_decay_, check_train_scaling_model
from .toy_models import (
    check_feature_norms,
    check_generate_batch,
    check_importance_weighted_loss,
    check_one_sparse_terms,
    check_phase_losses,
    check_superposition_interference,
    check_toy_forward,
    check_toy_model,
    check_train_model,
)

__all__ = [
    "EXERCISES", "PASSED", "FAILED", "NOT_ATTEMPTED", "Case", "CheckFailed", "Exercise", "Outcome",
    "clear_results", "evaluate", "exercise", "hint", "results", "made_with", "is_reference",
    "RESULT_CHECKS", "ResultCheck", "result_check", "result_checks_for", "evaluate_result",
    "check_toy_forward", "check_generate_batch", "check_importance_weighted_loss",
    "check_feature_norms", "check_superposition_interference", "check_toy_model", "check_train_model",
    "check_phase_losses", "check_one_sparse_terms",
    "check_feature_dimensionality", "check_dimensions_per_feature", "check_recognise_polytope",
    "check_correlated_batch", "check_anticorrelated_batch", "check_signed_weight_decay_",
    "check_train_scaling_model",
    "check_autoencoder_loss", "check_count_polysemantic_neurons", "check_predicted_polysemantic",
    "check_initial_argmax_win_rate", "check_train_autoencoder", "check_ce_lower_bound",
    "check_neuron_forward", "check_abs_batch", "check_abs_loss", "check_u_and_layer",
    "check_u_and_readoff", "check_predicted_u_and_readoffs", "check_naive_loss",
    "check_abs_model", "check_u_and_wiring", "check_u_and",
    "check_sae_encode", "check_sae_decode", "check_l1_sae_loss", "check_project_decoder_grad",
    "check_normalise_decoder", "check_topk_activation", "check_batch_topk_activation",
    "check_jumprelu_grads", "check_resample_dead", "check_mmcs", "check_sae_metrics", "check_precision_recall",
    "check_sparse_autoencoder", "check_train_sparse_autoencoder", "check_resample_latents",
    "check_rome_update", "check_key_covariance", "check_interference_coefficients", "check_whitened_cosine",
    "check_indirect_effect", "check_counterfact_scores", "check_rome_key", "check_rome_value",
    "check_spliced_ce_losses", "check_steer_logits", "check_ablate_latent",
    "check_warmup_cosine", "check_data_point_dimensionality", "check_train_finite_model",
    "check_coherence", "check_soft_threshold", "check_one_step_decode", "check_ista",
]
