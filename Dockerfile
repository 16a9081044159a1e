# burstpilot operator image: `docker build -t burstpilot .`
# Stage 1 builds the wheel; stage 2 installs it into a virtual environment; the final stage copies that
# environment onto a slim Python base and runs as an unprivileged user (works with a read-only root filesystem).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS wheel
WORKDIR /src
RUN pip install --no-cache-dir build==1.3.0
COPY pyproject.toml README.md ./
COPY src ./src
COPY traces ./traces
COPY loadtest ./loadtest
COPY sim ./sim
COPY forecasting ./forecasting
COPY policy ./policy
COPY operator ./operator
COPY evaluation ./evaluation
# -P: the working directory holds our operator/ folder, which must not shadow the stdlib module.
RUN python -P -m build --wheel --outdir /dist

FROM ${PYTHON_IMAGE} AS venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=wheel /dist /dist
RUN python -m venv /opt/burstpilot \
    && /opt/burstpilot/bin/pip install --no-cache-dir /dist/*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="burstpilot" \
      org.opencontainers.image.description="ServingPool operator: GPU LLM serving inside its SLO through bursts" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 burstpilot \
    && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin burstpilot
COPY --from=venv /opt/burstpilot /opt/burstpilot
ENV PATH=/opt/burstpilot/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TMPDIR=/tmp
USER 10001:10001
EXPOSE 8000 8080
ENTRYPOINT ["burstpilot"]
CMD ["operator", "run", "--all-namespaces"]
