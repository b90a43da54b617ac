# edgesec developer tasks. `make dev` installs, `make test` runs the test suite (what CI runs),
# `make test-fast` the edit loop (no end-to-end tests, nothing marked slow).
PYTHON ?= python3
WHEELHOUSE ?= wheelhouse

.PHONY: dev lint test test-fast bench wheelhouse demo clean

dev:
	$(PYTHON) -m pip install -e '.[dev]'

lint:
	ruff check edgesec tests bench
	ruff format --check edgesec tests bench
	mypy

test:
	$(PYTHON) -m pytest -q

# The edit loop: everything but the end-to-end tests (tests/e2e, real proxies, syslog-ng to Elasticsearch)
# and the tests marked slow. `make test` before a commit that others rely on.
test-fast:
	$(PYTHON) -m pytest -q -m "not slow" --ignore=tests/e2e \
		--ignore=tests/auditing/test_pipeline_e2e.py --ignore=tests/authz/test_e2e_proxies.py

bench:
	@for b in bench/*.py; do echo "== $$b"; $(PYTHON) $$b || exit 1; done

# Every wheel edgesec needs, plus a SHA-256 manifest, for air-gapped installs:
#   pip install --no-index --find-links wheelhouse edgesec
wheelhouse:
	rm -rf $(WHEELHOUSE).tmp && mkdir -p $(WHEELHOUSE).tmp
	$(PYTHON) -m pip wheel --quiet --wheel-dir $(WHEELHOUSE).tmp .
	cd $(WHEELHOUSE).tmp && sha256sum *.whl > SHA256SUMS
	rm -rf $(WHEELHOUSE) && mv $(WHEELHOUSE).tmp $(WHEELHOUSE)
	@echo "wheelhouse: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels in $(WHEELHOUSE)/ (manifest: $(WHEELHOUSE)/SHA256SUMS)"

demo:
	$(PYTHON) -m edgesec demo --dir $${DEMO_DIR:-$$(mktemp -d)}

clean:
	rm -rf build dist $(WHEELHOUSE) .pytest_cache .mypy_cache .ruff_cache
