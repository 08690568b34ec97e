# `make test` and `make demo` work on a fresh clone: each creates .venv when needed and
# installs exactly requirements.lock (every package pinned with hashes), never what the
# registry serves that morning. `make lock` refreshes the lock, then runs the tests.
# CUDA users: make TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# Where `make lock` finds the CPU torch wheel named in tools/lock-constraints.txt.
TORCH_LOCK_SOURCE ?= --find-links /opt/wheels --extra-index-url https://download.pytorch.org/whl/cpu
LOCK := requirements.lock
BIN := $(VENV)/bin
STAMP := $(VENV)/.lorakit-installed

.PHONY: setup check-lock browser test lint demo lock clean

setup: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --no-deps --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e ".[ui,dev]"
	touch $(STAMP)

check-lock: $(STAMP)
	$(BIN)/python tools/check_lock.py $(LOCK)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The UI's browser tests drive Debian's chromium; as root we install it when missing, elsewhere
# those tests skip with a line saying why (under CI=true they fail instead).
browser:
	@if ! command -v chromium >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
				>/dev/null || echo "make: apt-get could not install chromium" >&2; \
		else \
			echo "make: no chromium (Debian: apt-get install chromium); browser tests skip" >&2; \
		fi; \
	fi

test: check-lock lint browser
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m lorakit.demo

lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --all-extras --python-version 3.11 --upgrade \
		--generate-hashes --no-emit-package torch -c tools/lock-constraints.txt \
		$(TORCH_LOCK_SOURCE) --custom-compile-command "make lock" -q -o $(LOCK)
	$(MAKE) test

clean:
	rm -rf $(VENV) demo-output
