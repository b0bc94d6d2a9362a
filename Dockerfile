# portctl agent in a container. Run it with host networking: UPnP needs the LAN itself (SSDP
# multicast to find the router, and the router's GENA events must reach the agent's listener).
#
#   docker build -t portctl .
#   docker run -d --name portctl --network host --restart unless-stopped \
#     -v portctl-state:/var/lib/portctl \
#     -v "$PWD/examples/agent.yaml:/etc/portctl/agent.yaml:ro" portctl
#   docker exec portctl portctl agent status
#
# The listener stays on 127.0.0.1:9477 of the host (host networking): scrape /metrics from there.
FROM python:3.11-slim

# git fetches the manifest; openssh-client verifies SSH-signed commits and fetches over SSH.
RUN apt-get update \
    && apt-get install -y --no-install-recommends git openssh-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY reconciler ./reconciler
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --system --home-dir /var/lib/portctl --create-home portctl
USER portctl
ENV STATE_DIRECTORY=/var/lib/portctl PORTCTL_CACHE_DIR=/var/lib/portctl/cache
VOLUME /var/lib/portctl

# SIGTERM lets the apply in progress finish: give `docker stop` time (docker stop -t 120).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9477/healthz', timeout=3)"
ENTRYPOINT ["portctl", "agent"]
CMD ["--config", "/etc/portctl/agent.yaml"]
