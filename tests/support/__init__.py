"""Real services that tests start, stop and break on purpose: a private PostgreSQL and Redis, a TCP
proxy that can cut a link, the moto S3 server, and hosts as network namespaces whose links can be
cut."""
