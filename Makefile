# skiff: `make up` runs a local cluster; `make test` runs the whole suite.
# Both create .venv, install skiff into it and, when run as root, the Debian packages the tests need.

VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
APT_PKGS := etcd-server etcd-client iproute2 nftables iptables runc containerd containernetworking-plugins busybox-static docker-registry skopeo
PYTEST_ARGS ?=

.PHONY: up test protos system-deps clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# Debian packages the tests use (etcdctl and etcd for wire compatibility, iproute2/nftables for
# the lab, runc/busybox for real containers, docker-registry/skopeo to serve locally built images,
# containerd and the CNI plugins for the CRI compatibility test). Only attempted as root; without root the tests that need them skip and say why.
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  fi; \
	else echo "not root: skipping apt-get install of $(APT_PKGS)"; fi

up: $(STAMP)
	$(VENV)/bin/skiff up

test: $(STAMP) system-deps
	$(PY) -m pytest -q $(PYTEST_ARGS)

protos: $(STAMP)
	$(PY) protos/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
