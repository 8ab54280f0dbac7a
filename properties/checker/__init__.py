"""The checker: attention-check (CLI), grading, verdicts, reports, diagnosis and notebook extraction."""
