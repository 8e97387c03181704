# pAirZero testbed image: Debian bookworm + GNU Radio 3.10.5 + UHD 4.3 + the project venv.
# Built and run by docker-compose.yml (profiles: loopback, radio).
FROM debian:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends \
        gnuradio python3-uhd uhd-host python3-venv python3-pip git make ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/pairzero
COPY . .
RUN bash scripts/setup.sh
ENV PATH=/opt/pairzero/.venv/bin:$PATH
ENTRYPOINT ["pairzero"]
CMD ["--help"]
