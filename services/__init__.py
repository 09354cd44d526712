"""Entry points a person or a machine talks to: the CLI, the submitter, the aggregator, run reports."""
