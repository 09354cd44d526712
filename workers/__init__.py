"""What runs on the cluster: the Celery app, the per-sample task, model providers, tasks and scorers."""
