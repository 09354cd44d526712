"""The results HTTP API (`evalfleet serve`): DigitalOcean GenAI's evaluation-run shapes over the
same database and logs as the CLI. `app` builds the ASGI application, `routes` holds the
endpoints (thin, over services.results and the submitter), `schemas` the shapes, `present` the
mapping from evalfleet's results to them, `auth` the tokens, scopes and request budgets."""
