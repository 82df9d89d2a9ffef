# The two commands of the README: `make run` (the whole pipeline) and `make test`.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: run test lint format benchmark

run: $(STAMP)
	. $(VENV)/bin/activate && dvc repro && dvc push

test: $(STAMP)
	bash scripts/install-test-deps.sh
	$(VENV)/bin/python -m pytest

# ruff's linter and formatter, configured in pyproject.toml; .ci/run runs `make lint` before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/prepare_throughput.py --photos 2000

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh
	touch $(STAMP)

# The container image (infra/Dockerfile), tagged IMAGE: default ghcr.io/facectx/facectx:<version>-<git short sha>.
# `make image IMAGE=registry/facectx:tag`; fails with the reason when Docker is missing.
.PHONY: image
image:
	IMAGE='$(IMAGE)' bash scripts/build-image.sh
