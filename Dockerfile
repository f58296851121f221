# The quay-geo image: one image for every role (web, worker, beat, migrate), chosen by the command.
#
# The build performs the steps `make run` performs, so that what CI proves about one holds for
# the other (tests/deploy/test_compose.py compares them):
#   scripts/install-deps.sh --run-only   the same script, into /opt/venv (Debian part below)
#   manage.py collectstatic              at build time here; WhiteNoise serves the result
# The default command is the production server `make run` starts: gunicorn, threaded workers.
#
# Build arguments, for machines without the public registries (tests/deploy/test_image.py):
#   BASE_IMAGE  a Debian bookworm image with python3, python3-venv and curl in place of the default
#   PIP_CERT    a CA bundle for pip inside the build (a TLS-inspecting proxy), at a path mounted
#               for the build only (`podman build -v HOST_BUNDLE:PATH:ro --build-arg PIP_CERT=PATH`)
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}
ARG PIP_CERT=

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QUAY_GEO_VENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    WEB_CONCURRENCY=2

# The Debian packages of `install-deps.sh --run-only` (python3-venv: this image's Python has venv).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 quaygeo \
    && useradd --system --uid 10001 --gid quaygeo --home-dir /app --shell /usr/sbin/nologin quaygeo

WORKDIR /app
COPY . /app

# Editable, like `make run`: templates/ and the panel's static files live beside the packages.
RUN PYTHON=python3 scripts/install-deps.sh --run-only --no-apt

# A throw-away key: collectstatic needs settings, not the deployment's secret.
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --noinput \
    && mkdir -p /app/var/run \
    && chown quaygeo:quaygeo /app/var /app/var/run

USER quaygeo:quaygeo
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD curl -fsS -o /dev/null --max-time 8 http://127.0.0.1:8000/health/instance || exit 1

# Workers: WEB_CONCURRENCY (gunicorn reads it); more options: GUNICORN_CMD_ARGS.
CMD ["gunicorn", "quay_geo.wsgi:application", "-c", "python:quay_geo.gunicorn_config", \
     "--bind", "0.0.0.0:8000", \
     "--worker-class", "gthread", "--threads", "8", \
     "--timeout", "600", "--graceful-timeout", "30", \
     "--logger-class", "quay_geo.gunicorn_logging.AccessLogger", \
     "--worker-tmp-dir", "/dev/shm"]
