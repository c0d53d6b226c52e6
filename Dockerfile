# Image for `docker compose` workers and the dashboard (see docker-compose.yml).
# Installs the same pinned versions as the development setup (constraints.txt); on a GPU host
# torch's PyPI wheel for Linux brings CUDA.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY trainer ./trainer
COPY storage ./storage
COPY sweeps ./sweeps
COPY lrsweep ./lrsweep
RUN pip install --no-cache-dir -c constraints.txt .
ENTRYPOINT ["sweeps"]
