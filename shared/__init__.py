"""What the submitter, the workers and the aggregator all import: settings, the run file,
the resolved plan, samples, the database, and the task result log."""
