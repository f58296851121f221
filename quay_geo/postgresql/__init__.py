"""PostgreSQL for quay-geo: Django's backend, with health checks that a far region can afford."""
