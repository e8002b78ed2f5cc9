# The ECS task's image: `ops-pipeline run` for the account named by ACCOUNT_TIER (docs/deploy-aws.md).
# Build from the checkout:  docker build -t ops-pipeline:$(git rev-parse --short HEAD) .
# Nothing secret is baked in: keys come from Secrets Manager and the database URL from the task
# definition's `secrets` when the task starts.

FROM python:3.11.7-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/ops-pipeline \
    && /opt/ops-pipeline/bin/pip install . \
    && /opt/ops-pipeline/bin/ops-pipeline --help > /dev/null

FROM python:3.11.7-slim-bookworm
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app
COPY --from=build /opt/ops-pipeline /opt/ops-pipeline
ENV PATH=/opt/ops-pipeline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    OPS_PIPELINE_HOME=/home/app/.ops-pipeline
USER 10001:10001
WORKDIR /home/app
ENTRYPOINT ["ops-pipeline"]
CMD ["run"]
