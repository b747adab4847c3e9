# odpipe CPU image: the data stages (annotations, split, label map, TFRecords), evaluation,
# export and publish components -- and the SDK container of Dataflow workers for the TFRecord
# stage (pass it as --sdk_container_image; the pipeline does so itself for DataflowRunner).
#
# Based on Apache Beam's own Python 3.11 SDK image at the exact Beam version of
# requirements.txt, so the Beam worker boot (/opt/apache/beam/boot, the ENTRYPOINT) matches the
# SDK. KFP overrides the entrypoint with its own command, so the same image serves both.
#
# The same image serves a model over HTTP (`odpipe serve`: Vertex AI custom container, KServe V1).
# The ENTRYPOINT stays Beam's boot, so name odpipe as the entrypoint / container command:
#   docker run --entrypoint odpipe -p 8080:8080 -v $PWD/export:/model:ro REGISTRY/odpipe:VERSION serve /model
#   Vertex AI: serving_container_command ["odpipe", "serve"] (EXPORT from AIP_STORAGE_URI, port AIP_HTTP_PORT)
#   KServe:    command: ["odpipe", "serve", "/mnt/models", "--model-name", NAME]
#
# Build from the repository root:  docker build -f images/cpu.Dockerfile -t REGISTRY/odpipe:VERSION .
FROM apache/beam_python3.11_sdk:2.77.0

ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="odpipe" \
      org.opencontainers.image.description="odpipe pipeline components (CPU): labelImg annotations to TFRecords, evaluation, export; Dataflow SDK container" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/apache/beam_python3.11_sdk:2.77.0"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/odpipe

# Dependencies first (this layer is cached until the pins change), from the project's pins.
COPY requirements.txt requirements.lock ./
RUN pip install --no-cache-dir -r requirements.txt -c requirements.lock

# Then the code, without re-resolving dependencies.
COPY pyproject.toml README.md ./
COPY odpipe ./odpipe
EXPOSE 8080
RUN pip install --no-cache-dir --no-deps . \
    && python -c "import odpipe, odpipe.tasks, apache_beam, tensorflow, kfp, fastapi, uvicorn; print('odpipe', odpipe.__version__)"
