"""Benchmarks of the service on one machine, against real PostgreSQL and RabbitMQ: `python -m bench`."""
