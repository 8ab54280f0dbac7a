"""The catalogues: the registry of laws, the known mistakes and the correct implementations no law may fail."""
