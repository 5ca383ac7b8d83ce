FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY fhir_server ./fhir_server
COPY smart_auth ./smart_auth
COPY profiles ./profiles
COPY mappers ./mappers
RUN pip install --no-cache-dir .
EXPOSE 8080
ENTRYPOINT ["python", "-m", "fhir_server"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--database", "sqlite:////data/fhir.db"]
