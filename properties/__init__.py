"""The property battery: strategies, tolerances, laws and meta-tests for self-attention implementations."""
