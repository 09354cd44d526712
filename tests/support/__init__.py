"""Real services that tests start, stop and break on purpose: a private PostgreSQL, a TCP proxy
that can cut a link, the moto S3 server."""
