"""Jobs: work that runs to an end on instances of its own (batch transform)."""
