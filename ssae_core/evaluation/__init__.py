"""Evaluations of trained runs: identifiability (MCC, UDR), steering accuracy on embeddings, and
behavioural steering of the language model itself."""
