# The tracking server: `mlflow server` with the PostgreSQL driver, basic auth and the S3 client
# for MinIO. Versions match the project's (pyproject: mlflow>=3.7, the `server` extra).
#   docker build -f docker/mlflow.Dockerfile -t proxysweep-mlflow .
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install "mlflow[auth]==3.17.2" "psycopg[binary]==3.3.9" "boto3==1.40.*" \
    && useradd --create-home --uid 1000 mlflow \
    && install -d -o 1000 -g 1000 /home/mlflow/auth
# The basic-auth user store lives in /home/mlflow/auth (a volume in compose.yaml).
USER 1000:1000
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
