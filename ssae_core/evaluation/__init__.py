"""Evaluations of trained runs: identifiability (MCC, UDR), steering accuracy on embeddings, the
supervised mean-difference vector, and behavioural steering of the language model itself."""
