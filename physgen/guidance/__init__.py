"""Conditional generation and guidance, split by concern.

* :mod:`physgen.guidance.wrappers`: field -> field wrappers for every process, classifier-free
  guidance (arXiv 2207.12598) and classifier guidance (arXiv 2105.05233), with the maths of
  the exact Gaussian shift and the aligned approximation for non-Gaussian kernels;
* :mod:`physgen.guidance.bayes`: the Bayes-optimal classifiers of point sets and mixtures;
* :mod:`physgen.guidance.classifier`: trained noise-conditional classifiers and their
  checkpoints (the network itself is :mod:`physgen.nets.classifier`; its training objective
  is :class:`physgen.training.ClassifierObjective`).

The CLI glue lives in :mod:`physgen.cli.toy` (``--guidance``/``--w``/...), the toy glue in
:mod:`physgen.toy`.
"""
from .bayes import BayesClassifier, MixtureBayesClassifier, bayes_classifier, classifier_gradient
from .classifier import NoiseClassifier, load_classifier, make_classifier, save_classifier
from .wrappers import (
    GUIDANCE_KINDS,
    ClassifierFreeGuidance,
    ClassifierGuidance,
    GuidanceTransform,
    check_classifier_process,
    conditioning_sigma,
    guidance_variance,
    make_guided_field,
    parse_interval,
    sample_guided,
    to_denoiser,
)

__all__ = ["GUIDANCE_KINDS", "ClassifierFreeGuidance", "ClassifierGuidance", "GuidanceTransform", "BayesClassifier",
           "MixtureBayesClassifier", "NoiseClassifier", "bayes_classifier", "classifier_gradient", "make_classifier",
           "save_classifier", "load_classifier", "check_classifier_process", "conditioning_sigma", "guidance_variance",
           "make_guided_field", "parse_interval", "sample_guided", "to_denoiser"]
