"""Log-likelihood multiple-choice scoring with LM-Evaluation-Harness semantics.

Three pieces, as in lm-eval: ``prompts`` turns questions into requests, ``loglikelihood``
answers them with a model, ``metrics`` reduces the answers.
"""
