"""What the laws are built from: problems, strategies, tolerances, checks, the implementation wrappers and the row
convention."""
