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
# Plain HTTP on 0.0.0.0 needs --insecure-http (the server refuses it otherwise): this image expects
# a TLS-terminating proxy (ingress, load balancer) in front, and only that proxy may reach port 8080.
# To terminate TLS in the container instead, mount the certificate and key and set
# FHIR_TLS_CERT=/certs/server.pem FHIR_TLS_KEY=/certs/server-key.pem: TLS then wins over --insecure-http.
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--database", "sqlite:////data/fhir.db", "--insecure-http"]
