"""Behavioural steering of the LM: vectors, log-probabilities, TruthfulQA MC1, language."""
