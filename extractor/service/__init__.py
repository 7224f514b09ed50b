"""The only I/O to the service: rate limiter, retries, HTTP transport, session, health."""
