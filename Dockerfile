# agentgw as a container: slim, non-root, the gateway only (the two set-up commands, `make run` and `make test`,
# do not need it). Build: docker build -t agentgw . ; run: docker run -p 8080:8080 -v $PWD/conf:/etc/agentgw agentgw
# The config is mounted at /etc/agentgw/agentgw.yaml (deploy/kubernetes/ mounts it from a ConfigMap and a Secret).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agentgw ./agentgw
# The optional extras (Bedrock, the semantic cache); `--build-arg EXTRAS=` leaves them out (~120 MB less).
ARG EXTRAS=bedrock,semantic-cache
RUN pip install --no-cache-dir --prefix=/install ".[${EXTRAS}]"

FROM python:3.11-slim
RUN groupadd --system --gid 10001 agentgw \
    && useradd --system --uid 10001 --gid agentgw --home-dir /var/lib/agentgw --create-home agentgw
COPY --from=build /install /usr/local
COPY policies /etc/agentgw/policies
USER 10001:10001
WORKDIR /var/lib/agentgw
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
EXPOSE 8080
# liveness without curl in the image: /healthz answers 200 while the process serves
HEALTHCHECK --interval=15s --timeout=3s CMD ["python", "-c", "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["agentgw"]
CMD ["serve", "--config", "/etc/agentgw/agentgw.yaml"]
