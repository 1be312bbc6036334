# Two entry points for a fresh machine: `make demo` and `make test`.
# Each creates .venv, installs torch==2.13.0 (CPU wheel) only when no torch is importable
# (a CUDA torch already installed for python3 is kept: the venv then sees the system packages),
# installs the package, and runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.trianflow-installed

.PHONY: demo test install clean bench gpu-check

$(STAMP): pyproject.toml
	@if $(PYTHON) -c "import torch" >/dev/null 2>&1; then \
		echo "torch found for $(PYTHON): keeping it (venv with system site packages)"; \
		$(PYTHON) -m venv --system-site-packages $(VENV); \
	else \
		$(PYTHON) -m venv $(VENV); \
	fi
	$(PY) -m pip install -q --upgrade pip
	@$(PY) -c "import torch" >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/trianflow demo --out runs/demo

test: $(STAMP)
	@HOME=$$(mktemp -d) MPLBACKEND=Agg $(PY) -m pytest tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

# Every GPU number in one JSON (tools/gpu_check.py): cuda tests, training images/s, 200 steps of the real
# recipe, network VO frames/s, DDP with 2+ GPUs. Uses the venv when there is one, else python3 as it is
# (a GPU machine's CUDA torch; kornia, pycolmap and evo must be importable).
gpu-check:
	@py=$(PYTHON); [ -x $(PY) ] && py=$(PY); HOME=$${HOME:-/tmp} MPLBACKEND=Agg PYTHONUNBUFFERED=1 $$py tools/gpu_check.py

bench: $(STAMP)
	$(PY) tools/bench_vo.py

clean:
	rm -rf $(VENV) runs .pytest_cache
