# asset-sync service image: build wheels in one stage, run them in a slim one as non-root.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
COPY schemas ./schemas
COPY deploy/local-kafka/pom.xml ./deploy/local-kafka/pom.xml
RUN pip install --no-cache-dir --upgrade pip==25.3 \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 asset-sync \
 && useradd --system --uid 10001 --gid asset-sync --no-create-home --shell /usr/sbin/nologin asset-sync
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels asset-sync==0.1.0 \
 && rm -rf /wheels
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["asset-sync"]
CMD ["run", "--config", "/etc/asset-sync/config.yaml"]
