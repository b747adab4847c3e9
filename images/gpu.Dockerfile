# odpipe GPU trainer image: the train component (TF Model Garden on CUDA; MirroredStrategy over
# every visible GPU, mixed_float16). Based on the TensorFlow GPU image of the exact TensorFlow
# version of requirements.txt (CUDA/cuDNN matching that TensorFlow, Python 3.11).
#
# Build from the repository root:  docker build -f images/gpu.Dockerfile -t REGISTRY/odpipe-gpu:VERSION .
FROM tensorflow/tensorflow:2.20.0-gpu

ARG VERSION=0.2.0
LABEL org.opencontainers.image.title="odpipe-gpu" \
      org.opencontainers.image.description="odpipe trainer component (GPU): TF Model Garden object detection training" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/tensorflow/tensorflow:2.20.0-gpu"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2

WORKDIR /opt/odpipe

# Dependencies first, from the project's pins; the base image's tensorflow==2.20.0 already
# satisfies the pin, so its CUDA build is kept.
COPY requirements.txt requirements.lock ./
RUN python3 -m pip install --no-cache-dir -r requirements.txt -c requirements.lock

COPY pyproject.toml README.md ./
COPY odpipe ./odpipe
RUN python3 -m pip install --no-cache-dir --no-deps . \
    && python3 -c "import odpipe, odpipe.tasks, official.vision, tensorflow as tf; assert tf.__version__ == '2.20.0', tf.__version__; print('odpipe', odpipe.__version__)"
